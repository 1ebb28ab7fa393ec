"""The unavoidable work of one epoch, timed alone: its matmuls at their shapes and its tanh evaluations.

Whatever the code around them, an epoch of the default recipe must compute the network's products
for every training block (convolution, dense layer, back-propagation, weight and kernel gradients)
and every evaluation chunk (convolution, dense layer), and one tanh per hidden unit of every image
it trains on or tests. This module lists that work at the shapes portable-cnn computes it
(:func:`epoch_work`), then runs it on preallocated contiguous arrays with ``out=`` (nothing else:
no im2col, mask, softmax, elementwise back-propagation, allocation or bookkeeping), with the same
workers the contender uses: one thread with one BLAS thread, or a pool of threads, each with one
BLAS thread, taking the blocks of a batch (a barrier per batch, as SGD needs) and the evaluation
chunks in contiguous groups. The epoch as a multiple of this floor says how much of its time goes
to everything else.
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
    """``stack`` independent ``(m, k) @ (k, n)`` products computed as one (batched) matmul."""

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
    """``count`` tanh evaluations in one call."""

    name: str
    count: int

    flops = 0


@dataclass(frozen=True)
class Unit:
    """The work of one training block or one evaluation chunk; ``group`` numbers the barrier it waits for
    (a training batch: its blocks are spread over the workers, the next batch starts when all are done)."""

    phase: str  # "train" or "eval"
    group: int
    images: int
    steps: tuple


def training_block(images: int, positions: int, kernel_size: int, kernels: int) -> tuple:
    """A training block's products and tanh, as the model computes them (see ``ConvNet.block_gradients``)."""
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
    """An evaluation chunk's products and tanh, as ``ConvNet.logits`` computes them (kernel-major maps)."""
    area, pixels = positions * positions, kernel_size * kernel_size
    return (
        Product("conv forward (kernel-major)", 1, kernels, pixels, images * area),
        Tanh("tanh", images * area * kernels),
        Product("dense forward (per kernel)", kernels, images, area, NUM_CLASSES),
    )


def epoch_work(
    train_size: int,
    test_size: int,
    batch_size: int,
    block_size: int | None,
    eval_chunk: int,
    kernel_size: int = 3,
    kernels: int = 16,
) -> list[Unit]:
    """The units of one epoch: each training batch cut into blocks of ``block_size`` rows (None: whole
    batches), then the test set in chunks of ``eval_chunk`` images."""
    positions = IMAGE_SIDE - kernel_size + 1
    units = []
    for group, (begin, end) in enumerate(ops.slices(train_size, batch_size)):
        for start, stop in ops.slices(end - begin, block_size or batch_size):
            units.append(
                Unit("train", group, stop - start, training_block(stop - start, positions, kernel_size, kernels))
            )
    evaluation = len(units) and units[-1].group + 1
    for start, stop in ops.slices(test_size, eval_chunk):
        units.append(
            Unit("eval", evaluation, stop - start, evaluation_chunk(stop - start, positions, kernel_size, kernels))
        )
    return units


def work_flops(units: list[Unit], phase: str) -> int:
    """The FLOPs of a phase's products (2 per multiply-add)."""
    return sum(step.flops for unit in units if unit.phase == phase for step in unit.steps)


def tanh_count(units: list[Unit], phase: str) -> int:
    return sum(step.count for unit in units if unit.phase == phase for step in unit.steps if isinstance(step, Tanh))


def contiguous_groups(count: int, workers: int) -> list[tuple[int, int]]:
    """(start, stop) of ``workers`` contiguous runs of ``count`` items, as even as can be (empty runs left out)."""
    size = math.ceil(count / workers) if count else 1
    return ops.slices(count, size)


class Floor:
    """The epoch's unavoidable work on preallocated float arrays, run as the contender runs: ``workers``
    threads (1: the calling thread), each with one BLAS thread."""

    def __init__(self, units: list[Unit], workers: int, dtype: str = "float32", seed: int = 0):
        self.units, self.workers = units, workers
        self._rng = np.random.default_rng(seed)
        self._dtype = np.dtype(dtype)
        self._arrays: dict = {}
        self._calls = {id(unit): [self._call(step) for step in unit.steps] for unit in units}
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="floor") if workers > 1 else None
        self._blas = ThreadpoolController()

    def _array(self, key, shape):
        """One array per worker thread and shape, so that workers never write the same memory."""
        if (key, shape) not in self._arrays:
            self._arrays[key, shape] = self._rng.random(shape, dtype=np.float64).astype(self._dtype)
        return self._arrays[key, shape]

    def _call(self, step):
        def run(slot):
            if isinstance(step, Tanh):
                values = self._array((slot, "tanh in"), (step.count,))
                np.tanh(values, out=self._array((slot, "tanh out"), (step.count,)))
            else:
                left = self._array((slot, step.name, "left"), (step.stack, step.m, step.k))
                right = self._array((slot, step.name, "right"), (step.stack, step.k, step.n))
                np.matmul(left, right, out=self._array((slot, step.name, "out"), (step.stack, step.m, step.n)))

        return run

    def _run_units(self, units: list[Unit], slot: int) -> None:
        for unit in units:
            for call in self._calls[id(unit)]:
                call(slot)

    def _run_group(self, units: list[Unit]) -> None:
        if self._pool is None:
            self._run_units(units, 0)
            return
        runs = contiguous_groups(len(units), self.workers)
        futures = [
            self._pool.submit(self._run_units, units[start:stop], slot) for slot, (start, stop) in enumerate(runs)
        ]
        for future in futures:
            future.result()

    def run(self, phase: str) -> None:
        """All units of ``phase``, group after group, with BLAS on one thread."""
        with self._blas.limit(limits=1, user_api="blas"):
            groups: dict[int, list[Unit]] = {}
            for unit in self.units:
                if unit.phase == phase:
                    groups.setdefault(unit.group, []).append(unit)
            for group in groups.values():
                self._run_group(group)

    def warm(self) -> None:
        """Allocate every array once (outside any timer)."""
        self.run("train")
        self.run("eval")
