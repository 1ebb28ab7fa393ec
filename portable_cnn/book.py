"""The notebook's training step, kept for ``--book``: its errata in one place, each named as in DESIGN.md.

The corrected network is :mod:`model`'s. Here are the notebook's deviations from it: erratum 1
(the convolution visits one position fewer per side), erratum 2 (the kernels climb the gradient),
erratum 3 (tanh's derivative taken after dropout's x2), erratum 4 (the last partial batch is
dropped), and its unshifted softmax. With numpy's legacy stream drawn in the notebook's order and
the notebook's matmul orientations, ``--book`` reproduces its 300 lines bit for bit.
"""

from __future__ import annotations

from array_api_compat import array_namespace

from . import ops
from .model import IMAGE_SIDE, KEEP_PROB, Cache, ConvNet


def erratum_1_positions(kernel_size: int) -> int:
    """The notebook's ``range(28 - 3)``: 25 positions per side, not the 26 of a valid convolution."""
    return IMAGE_SIDE - kernel_size


def erratum_4_trained(train_size: int, batch_size: int) -> int:
    """The notebook's ``int(len(images) / batch_size)`` batches: the last partial batch is never trained."""
    return train_size // batch_size * batch_size


def erratum_2_kernels_ascend(kernel_gradient):
    """``kernels -= alpha * k_update`` with ``k_update`` made of negative-gradient deltas: the kernels step
    up the gradient. As a gradient for a descending optimiser, that is the true gradient negated."""
    return -kernel_gradient


def erratum_3_hidden_delta(backprop, dropped, keep_mask):
    """``tanh2deriv(layer_1)`` of the dropout-scaled output: ``1 - (2t)**2`` for a kept unit, not ``2(1 - t**2)``."""
    xp = array_namespace(dropped)
    return backprop * ops.tanh_derivative(dropped) * xp.astype(keep_mask, dropped.dtype)


def forward(model: ConvNet, images, keep_mask):
    """The notebook's forward pass: dropout x2, then its softmax ``exp(x) / sum(exp(x))`` (no shift)."""
    windows, active = model.features(images)
    scale = ops.dropout_scale(keep_mask, KEEP_PROB, active.dtype)
    dropped = active * scale
    return ops.book_softmax(dropped @ model.weights), Cache(windows, active, scale, dropped, keep_mask)


def backward(model: ConvNet, cache: Cache, probabilities, targets, divisor: float = 1) -> dict:
    """The notebook's deltas as gradients for SGD: errata 2 and 3 included, the same matmul orientations."""
    output_delta = (probabilities - targets) / divisor
    hidden_delta = erratum_3_hidden_delta(output_delta @ model.weights.T, cache.dropped, cache.keep_mask)
    kernel_gradient = ops.conv_kernel_gradient(cache.windows, hidden_delta, model.num_kernels)
    return {"kernels": erratum_2_kernels_ascend(kernel_gradient), "weights": cache.dropped.T @ output_delta}
