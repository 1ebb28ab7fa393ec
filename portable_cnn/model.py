"""The networks: what the trainer needs of one (:class:`Network`) and the chapter-10 network, corrected
(:class:`ConvNet`): parameters, forward, backward (gradients) and predict.

Pure array-API code on the parameters' own namespace; the update is :mod:`optim`'s, batches and
randomness are the trainer's, and the notebook's own step (errata included) is :mod:`book`'s.
A new network is a :class:`Network` subclass in one module, registered with :func:`network`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar, NamedTuple

from array_api_compat import array_namespace
from array_api_compat import device as device_of

from . import backends, ops

IMAGE_SIDE = 28
NUM_CLASSES = 10
KEEP_PROB = 0.5  # dropout keeps half of the hidden units, as in the book


class Cache(NamedTuple):
    """What a training forward pass keeps for the backward pass."""

    windows: Any  # im2col windows (B * positions**2, kernel_size**2)
    active: Any  # tanh activations (B, hidden)
    scale: Any  # dropout's factor per unit: 1 / KEEP_PROB where kept, 0 where dropped
    dropped: Any  # active * scale, the dense layer's input
    keep_mask: Any


def valid_positions(kernel_size: int) -> int:
    """Positions per side of a valid convolution of a 28x28 image."""
    return IMAGE_SIDE - kernel_size + 1


NETWORKS: dict[str, type[Network]] = {}


def network(cls):
    """Class decorator: make a :class:`Network` known by its ``name``, so that its checkpoints load."""
    NETWORKS[cls.name] = cls
    return cls


@dataclass
class Network:
    """What the trainer, the update, checkpoints and evaluation know of a network.

    ``params`` is ONE mapping name -> array (a pytree for ``jax.jit``); the other fields describe
    the architecture and never change. A subclass draws its parameters (:meth:`initial`), says
    their shapes and learning rates, and computes a training ``forward`` / ``backward`` and
    evaluation ``logits``; batching by row blocks and ``predict`` are shared.
    """

    name: ClassVar[str]
    params: dict[str, Any]

    @property
    def architecture(self) -> tuple:
        """Hashable: the class and every field but ``params`` (the key of a compiled step)."""
        return (type(self), *((f.name, getattr(self, f.name)) for f in fields(self) if f.name != "params"))

    @staticmethod
    def build(architecture: tuple, params: dict) -> Network:
        """The network of an :attr:`architecture` with these parameters."""
        cls, *settings = architecture
        return cls(params, **dict(settings))

    @property
    def like(self):
        """A parameter array: its namespace, dtype and device are the network's."""
        return next(iter(self.params.values()))

    @property
    def hidden_size(self) -> int:
        """Units per image that dropout's keep-mask covers."""
        raise NotImplementedError

    @classmethod
    def initial(cls, config, uniform) -> Network:
        """A new network for ``config`` (a :class:`~portable_cnn.config.Config`), drawing its parameters
        in a fixed order with ``uniform(shape, half_width)`` (``U(-half_width, half_width)`` arrays)."""
        raise NotImplementedError

    def describe(self) -> dict:
        """The architecture as JSON values, for a checkpoint's metadata (:meth:`shapes` reads it back)."""
        raise NotImplementedError

    @classmethod
    def from_description(cls, description: dict, params: dict) -> Network:
        raise NotImplementedError

    @classmethod
    def shapes(cls, description: dict) -> dict[str, tuple]:
        """Each parameter's shape, from :meth:`describe`'s record."""
        raise NotImplementedError

    def learning_rates(self, config) -> dict[str, float]:
        """Each parameter's SGD rate under ``config``."""
        raise NotImplementedError

    def gradients(self, images, keep_mask, targets, divisor: float, block_size: int, run=None):
        """A batch's softmax probabilities and the gradients :meth:`backward` gives, computed in row blocks.

        Each block of ``block_size`` images takes its forward and backward pass alone, so that its
        hidden-layer arrays stay in the caches; ``run(fn, blocks)`` computes them (in order by
        default, or on a pool of threads, see ``pool.Workers``). The blocks' gradients are summed
        in block order, so the result does not depend on how many threads ran them.
        """
        xp = array_namespace(images)

        def block(span):
            start, stop = span
            probabilities, cache = self.forward(images[start:stop, ...], keep_mask[start:stop, ...])
            return probabilities, self.backward(cache, probabilities, targets[start:stop, ...], divisor)

        blocks = (run or _in_order)(block, ops.slices(images.shape[0], block_size))
        total = dict(blocks[0][1])
        for _, gradients in blocks[1:]:
            total = {name: total[name] + gradient for name, gradient in gradients.items()}
        if len(blocks) == 1:
            return blocks[0][0], total
        return xp.concat([probabilities for probabilities, _ in blocks]), total

    def predict(self, images, batch_size: int = 1000):
        """Class indices for ``(N, 28, 28)``, ``(N, 784)`` or one ``(28, 28)`` image, host or device.

        Integer images are read as 0-255 pixels, floating ones as already scaled to [0, 1]. Returns
        an integer array in the model's namespace and on its device, wherever it is called from: the work
        runs on the parameters' device (on CuPy, not on whatever device is current).
        """
        xp = array_namespace(self.like)
        with backends.on_device_of(self.like):
            images = as_model_images(images, self.like)
            scores = [
                xp.argmax(self.logits(images[start:stop, ...]), axis=-1)
                for start, stop in ops.slices(images.shape[0], batch_size)
            ]
            return xp.concat(scores) if scores else xp.zeros((0,), dtype=xp.int64, device=device_of(self.like))


@network
@dataclass
class ConvNet(Network):
    """Convolution (no bias) -> tanh -> dropout -> dense -> softmax.

    ``params["kernels"]`` is ``(kernel_size**2, num_kernels)``; ``params["weights"]`` is
    ``(positions**2 * num_kernels, 10)``, its rows ordered (row, column, kernel) like the notebook's ``layer_1``.
    """

    name = "convnet"
    kernel_size: int
    positions: int  # side of the output map: valid_positions(kernel_size) (the book visits one fewer)

    @property
    def kernels(self):
        return self.params["kernels"]

    @property
    def weights(self):
        return self.params["weights"]

    @property
    def num_kernels(self) -> int:
        return self.kernels.shape[1]

    @property
    def hidden_size(self) -> int:
        return self.positions**2 * self.num_kernels

    @classmethod
    def initial(cls, config, uniform) -> ConvNet:
        """Kernels ``U(-kernel_init, kernel_init)``, then weights ``U(-weight_init, weight_init)``: the book's order."""
        kernels = uniform((config.kernel_size**2, config.kernels), config.kernel_init)
        weights = uniform((config.positions**2 * config.kernels, NUM_CLASSES), config.weight_init)
        return cls({"kernels": kernels, "weights": weights}, config.kernel_size, config.positions)

    def describe(self) -> dict:
        return {"kernel_size": self.kernel_size, "positions": self.positions, "num_kernels": self.num_kernels}

    @classmethod
    def from_description(cls, description: dict, params: dict) -> ConvNet:
        return cls(params, int(description["kernel_size"]), int(description["positions"]))

    @classmethod
    def shapes(cls, description: dict) -> dict[str, tuple]:
        size, positions, count = (int(description[key]) for key in ("kernel_size", "positions", "num_kernels"))
        return {"kernels": (size**2, count), "weights": (positions**2 * count, NUM_CLASSES)}

    def learning_rates(self, config) -> dict[str, float]:
        return {"kernels": config.kernel_alpha, "weights": config.alpha}

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
        """Class scores of a batch without dropout (evaluation): :meth:`scores` of its :meth:`feature_maps`."""
        return self.scores(self.feature_maps(images))

    def scores(self, maps):
        """Class scores from kernel-major feature maps: the kernels' :meth:`contributions`, summed.

        The same function as ``features(images)[1] @ weights`` with the sums in another order, and faster.
        """
        xp = array_namespace(maps)
        return xp.sum(self.contributions(maps), axis=0)

    def contributions(self, maps):
        """Each kernel's exact share of the class scores, ``(num_kernels, B, 10)``: its map times its rows of the
        dense weights, summed over positions (one ``(B, P) @ (P, 10)`` product per kernel)."""
        xp = array_namespace(maps)
        per_kernel = xp.permute_dims(xp.reshape(self.weights, (-1, self.num_kernels, NUM_CLASSES)), (1, 0, 2))
        return maps @ per_kernel

    def forward(self, images, keep_mask):
        """Training forward pass with dropout: softmax probabilities of a batch, and what :meth:`backward` needs."""
        windows, active = self.features(images)
        scale = ops.dropout_scale(keep_mask, KEEP_PROB, active.dtype)
        dropped = active * scale
        return ops.softmax(self.dense(dropped)), Cache(windows, active, scale, dropped, keep_mask)

    def dense(self, hidden):
        """The dense layer of a training batch's ``(B, hidden)`` units: class scores ``(B, 10)``."""
        return ops.dense_in_slices(hidden, self.weights, self.num_kernels)

    def backward(self, cache: Cache, probabilities, targets, divisor: float = 1) -> dict:
        """Gradients of the batch's summed cross-entropy against one-hot ``targets``, divided by ``divisor``.

        For softmax with cross-entropy the output delta is ``probabilities - targets``; the hidden
        delta goes back through the weights, dropout's scale and tanh.
        """
        output_delta = (probabilities - targets) / divisor
        backprop = output_delta @ self.weights.T
        hidden_delta = backprop * ops.dropped_tanh_derivative(cache.scale, cache.dropped, cache.active)
        kernel_gradient = ops.conv_kernel_gradient_by_image(cache.windows, hidden_delta, self.num_kernels)
        return {"kernels": kernel_gradient, "weights": cache.dropped.T @ output_delta}


def _in_order(fn, items) -> list:
    return [fn(item) for item in items]


def as_model_images(images, like):
    """Images from any library (or nested lists) as ``(N, 28, 28)`` floats in [0, 1] beside ``like``."""
    xp = array_namespace(like)
    images = xp.asarray(images, device=device_of(like))
    scale = 255 if xp.isdtype(images.dtype, "integral") else 1
    return xp.reshape(xp.astype(images, like.dtype) / scale, (-1, IMAGE_SIDE, IMAGE_SIDE))
