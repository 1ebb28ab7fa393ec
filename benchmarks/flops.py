"""Floating-point operations of the network, counted as 2 per multiply-add of its five products.

Per image, with ``P`` output positions, ``k*k`` pixels per window, ``K`` kernels and ``H = P*K``:

- conv forward ``(P, k*k) @ (k*k, K)`` and kernel gradient ``(k*k, P) @ (P, K)``: ``2*P*k*k*K`` each;
- dense forward ``(H) @ (H, 10)``, back-propagation ``(10) @ (10, H)`` and weight gradient
  ``(H, 1) @ (1, 10)``: ``2*H*10`` each.

Training counts all five, evaluation the two forward ones. Elementwise work (tanh, dropout,
softmax) is left out, as usual for GFLOP/s figures: it is what makes them fall short of GEMM.
"""

NUM_CLASSES = 10


def conv_flops(positions: int, kernel_size: int, kernels: int) -> int:
    return 2 * positions * positions * kernel_size * kernel_size * kernels


def dense_flops(positions: int, kernels: int) -> int:
    return 2 * positions * positions * kernels * NUM_CLASSES


def train_flops_per_image(positions: int, kernel_size: int = 3, kernels: int = 16) -> int:
    """Conv forward + kernel gradient + the three dense products."""
    return 2 * conv_flops(positions, kernel_size, kernels) + 3 * dense_flops(positions, kernels)


def eval_flops_per_image(positions: int, kernel_size: int = 3, kernels: int = 16) -> int:
    """Conv forward + dense forward."""
    return conv_flops(positions, kernel_size, kernels) + dense_flops(positions, kernels)
