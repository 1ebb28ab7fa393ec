"""The network's math, written once on the Python array API standard.

Every function takes arrays and works in their own namespace, so the same code runs on
numpy, cupy, torch or array-api-strict. Nothing here imports an array library.
"""

from array_api_compat import array_namespace


def _shifted(images, kernel_size: int, positions: int):
    """The ``kernel_size**2`` views of ``(B, H, W)`` images shifted by each kernel offset, row-major."""
    return [images[:, r : r + positions, c : c + positions] for r in range(kernel_size) for c in range(kernel_size)]


def patch_planes(images, kernel_size: int, positions: int):
    """im2col, kernel-major: ``(B, H, W)`` images -> ``(kernel_size**2, B * positions**2)``, contiguous.

    Plane ``i`` holds pixel ``i`` (row-major within the window) of every window; column ``(b, r, c)``
    is the window whose top-left pixel is ``(r, c)`` of image ``b``. ``kernels.T @ planes`` gives
    kernel-major feature maps, the faster layout for evaluation.
    """
    xp = array_namespace(images)
    planes = xp.stack(_shifted(images, kernel_size, positions), axis=0)
    return xp.reshape(planes, (kernel_size * kernel_size, -1))


def patches(images, kernel_size: int, positions: int):
    """im2col: ``(B, H, W)`` images -> ``(B * positions**2, kernel_size**2)`` windows.

    Row ``(b, r, c)`` holds the window whose top-left pixel is ``(r, c)`` of image ``b``, flattened
    row-major: the notebook's ``flattened_input``. It is the transposed view of :func:`patch_planes`:
    stacking the shifted slices on a new first axis writes contiguous memory, about 4x faster than
    stacking them on a last one, and a matmul reads the transposed view at no extra cost.
    """
    xp = array_namespace(images)
    return xp.permute_dims(patch_planes(images, kernel_size, positions), (1, 0))


def conv(windows, kernels, batch: int):
    """Valid convolution (cross-correlation) as one matmul: ``(B*P, k*k) @ (k*k, K)`` -> ``(B, P*K)``."""
    xp = array_namespace(windows, kernels)
    return xp.reshape(windows @ kernels, (batch, -1))


def conv_kernel_gradient(windows, hidden_delta, num_kernels: int):
    """Backward of :func:`conv` with respect to the kernels: ``windows.T @ delta`` -> ``(k*k, K)``."""
    xp = array_namespace(windows, hidden_delta)
    return windows.T @ xp.reshape(hidden_delta, (-1, num_kernels))


def conv_kernel_gradient_by_image(windows, hidden_delta, num_kernels: int):
    """:func:`conv_kernel_gradient` as one product per image, summed: ``(B, k*k, P) @ (B, P, K)`` -> ``(k*k, K)``.

    The same sums in another order. numpy releases the GIL only for products with more than a few
    hundred outputs: the single product has ``k*k*K`` (144), the stack ``B`` times that, so blocks
    of a batch compute it on several threads at once.
    """
    xp = array_namespace(windows, hidden_delta)
    batch = hidden_delta.shape[0]
    per_image = xp.permute_dims(xp.reshape(xp.permute_dims(windows, (1, 0)), (windows.shape[1], batch, -1)), (1, 0, 2))
    return xp.sum(per_image @ xp.reshape(hidden_delta, (batch, -1, num_kernels)), axis=0)


def dense_in_slices(hidden, weights, slices: int):
    """``hidden @ weights`` as the sum of ``slices`` partial products over equal runs of hidden units:
    ``(S, B, H/S) @ (S, H/S, C)`` summed over ``S``. The same sums in another order; for a small block
    ``B * C`` outputs are too few for numpy to release the GIL, ``S * B * C`` are not (see
    :func:`conv_kernel_gradient_by_image`)."""
    xp = array_namespace(hidden, weights)
    parts = xp.permute_dims(xp.reshape(hidden, (hidden.shape[0], slices, -1)), (1, 0, 2))
    return xp.sum(parts @ xp.reshape(weights, (slices, -1, weights.shape[1])), axis=0)


def tanh_derivative(activation):
    """d tanh(z) / dz expressed through the activation ``t = tanh(z)``: ``1 - t**2``."""
    return 1 - activation**2


def dropout_scale(keep_mask, keep_prob: float, dtype):
    """Inverted dropout's factor per unit: ``1 / keep_prob`` where kept, 0 where dropped."""
    xp = array_namespace(keep_mask)
    return xp.astype(keep_mask, dtype) * (1 / keep_prob)


def dropped_tanh_derivative(scale, dropped, activation):
    """d(scale * tanh(z)) / dz = ``scale * (1 - t**2)``, computed as ``scale - dropped * t``.

    Reusing the forward pass's ``scale`` and ``dropped = scale * t`` takes three passes over the hidden
    layer instead of six (converting and scaling the mask again, squaring, subtracting, two products).
    With ``scale`` a power of two (p = 0.5) both forms are equal to the last bit.
    """
    return scale - dropped * activation


def softmax(logits):
    """Numerically stable softmax over the last axis."""
    xp = array_namespace(logits)
    exponentials = xp.exp(logits - xp.max(logits, axis=-1, keepdims=True))
    return exponentials / xp.sum(exponentials, axis=-1, keepdims=True)


def book_softmax(logits):
    """The notebook's softmax, ``exp(x) / sum(exp(x))``: overflows for large logits, kept for ``--book``."""
    xp = array_namespace(logits)
    exponentials = xp.exp(logits)
    return exponentials / xp.sum(exponentials, axis=-1, keepdims=True)


def one_hot(labels, num_classes: int, dtype):
    """``(N,)`` integer labels -> ``(N, num_classes)`` indicator rows of ``dtype``."""
    xp = array_namespace(labels)
    classes = xp.asarray(list(range(num_classes)), dtype=labels.dtype, device=labels.device)
    return xp.astype(labels[:, None] == classes, dtype)


def probability_floor(like):
    """The smallest normal number of ``like``'s dtype as a 0-d array on its device, made once per run:
    :func:`cross_entropy_sum` raises probabilities to it (``clip`` would sync the host on CuPy)."""
    xp = array_namespace(like)
    return xp.asarray(xp.finfo(like.dtype).smallest_normal, dtype=like.dtype, device=like.device)


def cross_entropy_sum(probabilities, targets, floor):
    """Summed negative log-likelihood of one-hot ``targets``, probabilities raised to the 0-d ``floor``
    (:func:`probability_floor`) so that a zero gives a large finite loss; a device scalar, no host sync."""
    xp = array_namespace(probabilities, targets)
    return -xp.sum(targets * xp.log(xp.maximum(probabilities, floor)))


def count_correct(scores, labels):
    """How many rows' arg-max equals the label (a device scalar, no host sync)."""
    xp = array_namespace(scores, labels)
    return xp.sum(xp.astype(xp.argmax(scores, axis=-1) == labels, labels.dtype))


def slices(count: int, size: int) -> list[tuple[int, int]]:
    """(start, stop) of consecutive batches of ``size`` covering ``count`` items, the last one shorter.

    The stops never pass ``count``: the standard leaves out-of-range slice ends undefined.
    """
    return [(start, min(start + size, count)) for start in range(0, count, size)]
