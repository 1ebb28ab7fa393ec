"""The chapter-10 network: parameters, forward, backward (one SGD step) and predict.

Pure array-API code on the parameters' own namespace; the trainer owns batches and randomness.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from array_api_compat import array_namespace, device as device_of

from . import ops

IMAGE_SIDE = 28
NUM_CLASSES = 10
KEEP_PROB = 0.5  # dropout keeps half of the hidden units, as in the book


@dataclass
class ConvNet:
    """Convolution (no bias) -> tanh -> dropout -> dense -> softmax.

    ``kernels`` is ``(kernel_size**2, num_kernels)``; ``weights`` is ``(positions**2 * num_kernels, 10)``,
    its rows ordered (row, column, kernel) like the notebook's ``layer_1``.
    """

    kernels: Any
    weights: Any
    kernel_size: int
    positions: int  # side of the output map: 28 - kernel_size + 1 (the book visits one fewer)

    @property
    def num_kernels(self) -> int:
        return self.kernels.shape[1]

    def features(self, images):
        """``(B, 28, 28)`` images -> (im2col windows, tanh activations ``(B, positions**2 * K)``)."""
        windows = ops.patches(images, self.kernel_size, self.positions)
        xp = array_namespace(windows)
        return windows, xp.tanh(ops.conv(windows, self.kernels, images.shape[0]))

    def feature_maps(self, images):
        """tanh feature maps of a batch, kernel-major: ``(num_kernels, B, positions**2)``."""
        xp = array_namespace(images)
        planes = ops.patch_planes(images, self.kernel_size, self.positions)
        return xp.reshape(xp.tanh(self.kernels.T @ planes), (self.num_kernels, images.shape[0], -1))

    def logits(self, images):
        """Class scores of a batch without dropout (evaluation).

        Works kernel-major (one ``(B, P) @ (P, 10)`` product per kernel, summed): the same function as
        ``features(images)[1] @ weights`` with the sums in another order, and faster.
        """
        xp = array_namespace(images)
        per_kernel = xp.permute_dims(xp.reshape(self.weights, (-1, self.num_kernels, NUM_CLASSES)), (1, 0, 2))
        return xp.sum(self.feature_maps(images) @ per_kernel, axis=0)

    def sgd_step(self, images, targets, keep_mask, *, alpha: float, kernel_alpha: float, normaliser: float, book=False):
        """One step of plain SGD on a batch; returns the batch's softmax probabilities (with dropout).

        ``targets`` are one-hot rows; the output delta ``(targets - p) / normaliser`` is the negative
        gradient of the summed cross-entropy, scaled. The dense weights step by ``alpha`` times their
        delta, the kernels by ``kernel_alpha`` times theirs. ``book=True`` keeps the notebook's errata 2 and 3:
        the kernels step up the gradient, and the tanh derivative is taken of the dropout-scaled output.
        """
        windows, active = self.features(images)
        scale = ops.dropout_scale(keep_mask, KEEP_PROB, active.dtype)
        dropped = active * scale
        logits = dropped @ self.weights
        probabilities = ops.book_softmax(logits) if book else ops.softmax(logits)

        output_delta = (targets - probabilities) / normaliser
        backprop = output_delta @ self.weights.T
        if book:
            xp = array_namespace(keep_mask)
            hidden_delta = backprop * ops.tanh_derivative(dropped) * xp.astype(keep_mask, dropped.dtype)
        else:
            hidden_delta = backprop * ops.dropped_tanh_derivative(scale, dropped, active)

        self.weights = self.weights + alpha * (dropped.T @ output_delta)
        kernel_step = kernel_alpha * ops.conv_kernel_gradient(windows, hidden_delta, self.num_kernels)
        self.kernels = self.kernels - kernel_step if book else self.kernels + kernel_step
        return probabilities

    def predict(self, images, batch_size: int = 1000):
        """Class indices for ``(N, 28, 28)``, ``(N, 784)`` or one ``(28, 28)`` image, host or device.

        Integer images are read as 0-255 pixels, floating ones as already scaled to [0, 1]. Returns
        an integer array in the model's namespace and on its device.
        """
        xp = array_namespace(self.weights)
        images = as_model_images(images, self.weights)
        count = images.shape[0]
        scores = [
            xp.argmax(self.logits(images[i : min(i + batch_size, count), ...]), axis=-1) for i in range(0, count, batch_size)
        ]
        return xp.concat(scores) if scores else xp.zeros((0,), dtype=xp.int64, device=device_of(self.weights))


def as_model_images(images, like):
    """Images from any library (or nested lists) as ``(N, 28, 28)`` floats in [0, 1] beside ``like``."""
    xp = array_namespace(like)
    images = xp.asarray(images, device=device_of(like))
    scale = 255 if xp.isdtype(images.dtype, "integral") else 1
    return xp.reshape(xp.astype(images, like.dtype) / scale, (-1, IMAGE_SIDE, IMAGE_SIDE))
