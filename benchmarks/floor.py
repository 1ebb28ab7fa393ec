"""The unavoidable work of one epoch, timed alone: its matmuls at the shapes portable-cnn computes them and its tanh
evaluations, on preallocated arrays with ``out=`` and nothing else (no im2col, mask, softmax, elementwise
back-propagation, allocation or bookkeeping), spread over the workers as the contender spreads them: the blocks of a
batch over the threads with a barrier per batch (SGD), the evaluation chunks all at once, BLAS on one thread each.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from threadpoolctl import ThreadpoolController

from portable_cnn import ops

NUM_CLASSES = 10
IMAGE_SIDE = 28


@dataclass(frozen=True)
class Product:
    """``stack`` independent ``(m, k) @ (k, n)`` products, one batched matmul."""

    name: str
    stack: int
    m: int
    k: int
    n: int

    @property
    def flops(self) -> int:
        return 2 * self.stack * self.m * self.k * self.n


@dataclass(frozen=True)
class Tanh:
    name: str
    count: int
    flops = 0


@dataclass(frozen=True)
class Unit:
    """A training block or an evaluation chunk; the units of a ``group`` (a batch) wait for the group before."""

    phase: str  # "train" or "eval"
    group: int
    images: int
    steps: tuple


def training_block(images: int, positions: int, kernel_size: int, kernels: int) -> tuple:
    """As ``ConvNet.block_gradients`` computes it."""
    area, pixels = positions * positions, kernel_size * kernel_size
    hidden = area * kernels
    return (
        Product("conv forward", 1, images * area, pixels, kernels),
        Tanh("tanh", images * hidden),
        Product("dense forward (one slice of the hidden layer per kernel)", kernels, images, area, NUM_CLASSES),
        Product("back-propagation to the hidden layer", 1, images, NUM_CLASSES, hidden),
        Product("dense weight gradient", 1, hidden, images, NUM_CLASSES),
        Product("kernel gradient (per image)", images, pixels, area, kernels),
    )


def evaluation_chunk(images: int, positions: int, kernel_size: int, kernels: int) -> tuple:
    """As ``ConvNet.logits`` computes it (kernel-major maps)."""
    area, pixels = positions * positions, kernel_size * kernel_size
    return (
        Product("conv forward (kernel-major)", 1, kernels, pixels, images * area),
        Tanh("tanh", images * area * kernels),
        Product("dense forward (per kernel)", kernels, images, area, NUM_CLASSES),
    )


def epoch_work(train_size, test_size, batch_size, block_size, eval_chunk, kernel_size=3, kernels=16) -> list[Unit]:
    """Each training batch in blocks of ``block_size`` rows (None: whole), then the test set in chunks."""
    shape = (IMAGE_SIDE - kernel_size + 1, kernel_size, kernels)
    units = [
        Unit("train", group, stop - start, training_block(stop - start, *shape))
        for group, (begin, end) in enumerate(ops.slices(train_size, batch_size))
        for start, stop in ops.slices(end - begin, block_size or batch_size)
    ]
    evaluation = len(units) and units[-1].group + 1
    chunks = ops.slices(test_size, eval_chunk)
    return units + [
        Unit("eval", evaluation, stop - start, evaluation_chunk(stop - start, *shape)) for start, stop in chunks
    ]


def work_flops(units: list[Unit], phase: str) -> int:
    return sum(step.flops for unit in units if unit.phase == phase for step in unit.steps)


def tanh_count(units: list[Unit], phase: str) -> int:
    return sum(step.count for unit in units if unit.phase == phase for step in unit.steps if isinstance(step, Tanh))


def contiguous_groups(count: int, workers: int) -> list[tuple[int, int]]:
    """(start, stop) of at most ``workers`` contiguous runs of ``count`` items, as even as can be."""
    return ops.slices(count, math.ceil(count / workers) if count else 1)


class Floor:
    """The units on ``workers`` threads (1: the calling thread), each with its own arrays and one BLAS thread."""

    def __init__(self, units: list[Unit], workers: int, dtype: str = "float32", seed: int = 0):
        self.units, self.workers = units, workers
        self._rng, self._dtype, self._arrays = np.random.default_rng(seed), np.dtype(dtype), {}
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="floor") if workers > 1 else None
        self._blas = ThreadpoolController()

    def _array(self, key, shape):
        if (key, shape) not in self._arrays:
            self._arrays[key, shape] = self._rng.random(shape, dtype=np.float64).astype(self._dtype)
        return self._arrays[key, shape]

    def _run_units(self, units: list[Unit], slot: int) -> None:
        for step in (step for unit in units for step in unit.steps):
            if isinstance(step, Tanh):
                shape = (step.count,)
                np.tanh(self._array((slot, "tanh in"), shape), out=self._array((slot, "tanh out"), shape))
            else:
                left = self._array((slot, step.name, "left"), (step.stack, step.m, step.k))
                right = self._array((slot, step.name, "right"), (step.stack, step.k, step.n))
                np.matmul(left, right, out=self._array((slot, step.name, "out"), (step.stack, step.m, step.n)))

    def run(self, phase: str) -> None:
        """The units of ``phase``, group after group."""
        groups: dict[int, list[Unit]] = {}
        for unit in self.units:
            if unit.phase == phase:
                groups.setdefault(unit.group, []).append(unit)
        with self._blas.limit(limits=1, user_api="blas"):
            for units in groups.values():
                if self._pool is None:
                    self._run_units(units, 0)
                    continue
                runs = contiguous_groups(len(units), self.workers)
                futures = [self._pool.submit(self._run_units, units[a:b], slot) for slot, (a, b) in enumerate(runs)]
                for future in futures:
                    future.result()

    def warm(self) -> None:
        """Every array allocated once, outside any timer."""
        self.run("train")
        self.run("eval")
