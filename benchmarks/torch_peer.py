"""The same network written the way a PyTorch user would write it: the tool one would pick instead.

Its step equals portable-cnn's default recipe (read from ``Config``): the recipe's output delta
``(target - p) / (batch_size * B)`` applied with ``alpha`` (dense) or ``kernel_alpha`` (kernels) is the gradient of
the batch-mean cross-entropy applied with ``alpha / batch_size`` and ``kernel_alpha / batch_size``, one SGD parameter
group each; the initialisation is the recipe's, only the random streams differ. Counts and losses are read once an
epoch, as portable-cnn does.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from portable_cnn.config import Config

IMAGE_SIDE = 28


class PeerNet(nn.Module):
    def __init__(self, recipe: Config):
        super().__init__()
        side = IMAGE_SIDE - recipe.kernel_size + 1
        self.conv = nn.Conv2d(1, recipe.kernels, recipe.kernel_size, bias=False)
        self.dropout = nn.Dropout(0.5)
        self.dense = nn.Linear(side * side * recipe.kernels, 10, bias=False)
        nn.init.uniform_(self.conv.weight, -recipe.kernel_init, recipe.kernel_init)
        nn.init.uniform_(self.dense.weight, -recipe.weight_init, recipe.weight_init)

    def forward(self, images):
        return self.dense(self.dropout(torch.tanh(self.conv(images)).flatten(1)))


class TorchPeer:
    """Data on the device once, then ``train_epoch()`` and ``evaluate()`` as separately timed calls."""

    def __init__(self, mnist, *, device="cpu", **settings):
        recipe = Config(backend="torch", device=device, **settings).validated()
        if recipe.book:
            raise ValueError("the PyTorch peer implements the default recipe, not --book")
        torch.manual_seed(recipe.seed)
        self.device = torch.device(device)
        self.dtype = getattr(torch, recipe.dtype)
        self.batch_size, self.eval_batch_size = recipe.batch_size, recipe.eval_batch_size
        self.train_images = self._images(mnist.train_images[: recipe.train_size])
        self.train_labels = self._labels(mnist.train_labels[: recipe.train_size])
        self.test_images = self._images(mnist.test_images[: recipe.test_size])
        self.test_labels = self._labels(mnist.test_labels[: recipe.test_size])
        self.net = PeerNet(recipe).to(self.device, self.dtype)
        self.optimiser = torch.optim.SGD(
            [
                {"params": self.net.conv.parameters(), "lr": recipe.kernel_alpha / recipe.batch_size},
                {"params": self.net.dense.parameters(), "lr": recipe.alpha / recipe.batch_size},
            ]
        )

    def _images(self, host):
        return torch.from_numpy(np.ascontiguousarray(host)).to(self.device).to(self.dtype).div_(255).unsqueeze(1)

    def _labels(self, host):
        return torch.from_numpy(host.astype(np.int64)).to(self.device)

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def train_epoch(self) -> tuple[int, float]:
        """One pass over the training images in batches; returns (correct, summed loss)."""
        self.net.train()
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        loss_sum = torch.zeros((), dtype=self.dtype, device=self.device)
        for start in range(0, self.train_images.shape[0], self.batch_size):
            images = self.train_images[start : start + self.batch_size]
            labels = self.train_labels[start : start + self.batch_size]
            logits = self.net(images)
            loss = F.cross_entropy(logits, labels)
            self.optimiser.zero_grad(set_to_none=True)
            loss.backward()
            self.optimiser.step()
            correct += (logits.argmax(1) == labels).sum()
            loss_sum += loss.detach() * labels.shape[0]
        return int(correct), float(loss_sum)

    @torch.inference_mode()
    def evaluate(self) -> int:
        """Correct predictions on the test set, without dropout, in batches of ``eval_batch_size``."""
        self.net.eval()
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        for start in range(0, self.test_images.shape[0], self.eval_batch_size):
            logits = self.net(self.test_images[start : start + self.eval_batch_size])
            correct += (logits.argmax(1) == self.test_labels[start : start + self.eval_batch_size]).sum()
        return int(correct)
