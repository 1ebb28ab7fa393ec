"""The training loop: epochs of batches, each a forward pass, gradients and an SGD update, then an
evaluation when due, reported to callbacks (see :mod:`callbacks`). No files, no printing: the
callbacks do that. Device scalars come to the host once per epoch, never inside the batch loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from array_api_compat import array_namespace
from array_api_compat import device as device_of

from . import backends, book, ops
from .config import Config, output_side
from .errors import UserError
from .model import KEEP_PROB, NUM_CLASSES, ConvNet
from .optim import SGD


@dataclass
class EpochRecord:
    """What one epoch measured; ``test_acc`` is None for epochs that were not evaluated."""

    epoch: int
    train_acc: float
    test_acc: float | None
    loss: float
    seconds: float
    images_per_second: float

    def line(self) -> str:
        """The notebook's progress line, formatted exactly as the notebook formats it."""
        return f"I:{self.epoch} Test-Acc:{self.test_acc} Train-Acc:{self.train_acc}"


@dataclass
class Position:
    """Where a run stands: ``epoch`` epochs done and ``batch`` batches of the next, with that epoch's counts so far."""

    epoch: int
    batch: int = 0
    correct: int = 0
    loss: float = 0.0
    seconds: float = 0.0


@dataclass
class Snapshot:
    """The run at the start of an epoch: parameters, random state, position and the epochs done before it."""

    kernels: Any
    weights: Any
    random_state: dict
    position: Position
    epochs_done: int


@dataclass
class TrainState:
    """What callbacks see: the model, the run's settings and random source, the history, and
    ``stop_training``, which any callback may set to end the run before the next batch."""

    model: ConvNet
    config: Config
    random_source: Any
    history: list[EpochRecord]
    batches: list[tuple[int, int]]
    start: Position
    epoch_start: Snapshot | None = None
    stop_training: bool = False


@dataclass
class DeviceData:
    """A run's images, labels and one-hot targets, moved to the device once."""

    train_images: Any
    train_labels: Any
    train_targets: Any
    test_images: Any
    test_labels: Any
    train_size: int = field(init=False)

    def __post_init__(self):
        self.train_size = self.train_images.shape[0]


def to_device(mnist, config: Config, backend) -> DeviceData:
    """Take the first ``train_size``/``test_size`` images, scale pixels to [0, 1] and move them to the device."""
    wanted = (("train", config.train_size, len(mnist.train_images)), ("test", config.test_size, len(mnist.test_images)))
    for split, count, have in wanted:
        if count > have:
            raise UserError(f"--{split}-size {count} asks for more images than the data has ({have} in {mnist.source})")
    xp, dtype = backend.xp, backend.dtype(config.dtype)

    def images(host):
        return xp.astype(backend.asarray(host), dtype) / 255

    train_labels = xp.astype(backend.asarray(mnist.train_labels[: config.train_size]), xp.int64)
    return DeviceData(
        train_images=images(mnist.train_images[: config.train_size]),
        train_labels=train_labels,
        train_targets=ops.one_hot(train_labels, NUM_CLASSES, dtype),
        test_images=images(mnist.test_images[: config.test_size]),
        test_labels=xp.astype(backend.asarray(mnist.test_labels[: config.test_size]), xp.int64),
    )


def init_model(config: Config, random_source) -> ConvNet:
    """Kernels ``U(-kernel_init, kernel_init)``, then weights ``U(-weight_init, weight_init)``, in the book's order.

    Computed as the notebook does, ``2h * U - h`` (``0.02 * U - 0.01`` for the book's kernels).
    """
    side = output_side(config.kernel_size, config.book)

    def symmetric(shape, half_width):
        return 2 * half_width * random_source.uniform(shape, config.dtype) - half_width

    kernels = symmetric((config.kernel_size**2, config.kernels), config.kernel_init)
    weights = symmetric((side * side * config.kernels, NUM_CLASSES), config.weight_init)
    return ConvNet(kernels, weights, config.kernel_size, side)


def batches(config: Config, train_size: int) -> list[tuple[int, int]]:
    """(start, stop) of each training batch; the book drops the last partial batch (erratum 4)."""
    trained = book.erratum_4_trained(train_size, config.batch_size) if config.book else train_size
    return ops.slices(trained, config.batch_size)


def batch_correct(library: str, kernel_size: int, positions: int):
    """``count(kernels, weights, images, labels)``: one batch's correct predictions, compiled where the
    library compiles (one of a run's :class:`RunSteps`)."""

    def count(kernels, weights, images, labels):
        return ops.count_correct(ConvNet(kernels, weights, kernel_size, positions).logits(images), labels)

    return backends.compiled(count, library)


def correct_predictions(
    model: ConvNet, images, labels, batch_size: int, workers: backends.Workers | None = None, count_batch=None
):
    """Correct predictions over a labelled set, in bounded-memory batches shared by ``workers`` (a device scalar);
    ``count_batch`` is the run's :func:`batch_correct` (built here when not given)."""
    xp = array_namespace(model.weights)
    if count_batch is None:
        count_batch = batch_correct(backends.library_name(model.weights), model.kernel_size, model.positions)
    correct = xp.asarray(0, dtype=labels.dtype, device=device_of(labels))

    def count(span):
        start, stop = span
        return count_batch(model.kernels, model.weights, images[start:stop, ...], labels[start:stop, ...])

    for counted in (workers or backends.Workers(1, limit_blas=False)).map(
        count, ops.slices(images.shape[0], batch_size)
    ):
        correct = correct + counted
    return correct


def train_step(
    library: str,
    book_recipe: bool,
    batch_size: int,
    block_size,
    optimiser: SGD,
    kernel_size: int,
    positions: int,
    workers,
):
    """``step(kernels, weights, images, targets, labels, keep_mask, correct, loss, floor)``: one batch's forward
    pass, gradients and SGD update, and its counts added on the device; pure (new arrays in, new arrays out),
    so that a library that compiles (``jax.jit``) runs the whole step as one call (one of a run's :class:`RunSteps`).
    The math is model's and book's."""

    def step(kernels, weights, images, targets, labels, keep_mask, correct, loss, floor):
        model = ConvNet(kernels, weights, kernel_size, positions)
        divisor = batch_size * images.shape[0]
        if book_recipe:
            probabilities, cache = book.forward(model, images, keep_mask)
            gradients = book.backward(model, cache, probabilities, targets, divisor)
        else:
            probabilities, gradients = model.gradients(images, keep_mask, targets, divisor, block_size, workers.map)
        optimiser.step(model, gradients)
        correct = correct + ops.count_correct(probabilities, labels)
        loss = loss + ops.cross_entropy_sum(probabilities, targets, floor)
        return model.kernels, model.weights, correct, loss

    return backends.compiled(step, library)


@dataclass(frozen=True)
class RunSteps:
    """A run's step (:func:`train_step`) and evaluation count (:func:`batch_correct`), compiled where the library
    compiles. Built once per run, never cached for the process: a run whose registry entry compiles nothing
    (``compile=None``) is eager all through, and a compiled one is traced by its own run."""

    train: Callable
    count: Callable

    @classmethod
    def build(cls, config: Config, model: ConvNet) -> RunSteps:
        library = backends.library_name(model.weights)
        train = train_step(
            library,
            config.book,
            config.batch_size,
            config.block_size,
            SGD(weight_rate=config.alpha, kernel_rate=config.kernel_alpha),
            model.kernel_size,
            model.positions,
            backends.workers(config.backend, config.device, config.threads),
        )
        return cls(train, batch_correct(library, model.kernel_size, model.positions))


def fit(
    model: ConvNet,
    data: DeviceData,
    config: Config,
    random_source,
    callbacks,
    history: list[EpochRecord],
    start: Position,
    steps: RunSteps | None = None,
):
    """Train ``model`` from ``start`` to ``config.epochs``, appending to ``history`` and reporting to ``callbacks``.

    ``steps`` are the run's step and count (built here when not given: a caller that runs one run as several
    calls, as the benchmarks do an epoch a call, builds them once with :meth:`RunSteps.build`).

    Returns None when every epoch ran, or the :class:`Position` reached when a callback set
    ``stop_training`` (looked at before each epoch and each batch; the callbacks' ``on_stop`` then ran).
    """
    workers = backends.workers(config.backend, config.device, config.threads)
    steps = steps or RunSteps.build(config, model)
    step, count_batch = steps.train, steps.count
    spans = batches(config, data.train_size)
    state = TrainState(model, config, random_source, history, spans, start)
    xp, where = array_namespace(model.weights), device_of(model.weights)
    floor = ops.probability_floor(model.weights)
    hidden = model.positions**2 * model.num_kernels
    stopped = None
    try:
        _notify(callbacks, "on_train_begin", state)
        for epoch in range(start.epoch, config.epochs):
            resumed = start if epoch == start.epoch else Position(epoch)
            if state.stop_training:  # asked for at the end of the last epoch: stop before drawing this one's masks
                stopped = resumed
                break
            state.epoch_start = Snapshot(model.kernels, model.weights, random_source.state(), resumed, len(history))
            started = time.perf_counter()
            masks = random_source.keep_masks([(stop - begin, hidden) for begin, stop in spans], KEEP_PROB)
            correct = xp.asarray(resumed.correct, dtype=xp.int64, device=where)
            loss = xp.asarray(resumed.loss, dtype=model.weights.dtype, device=where)
            for index, ((begin, end), keep_mask) in enumerate(zip(spans, masks)):
                if index < resumed.batch:
                    continue  # its mask was drawn (the stream stays in step) but the batch was trained before
                _notify(callbacks, "on_batch_begin", state)
                if state.stop_training:
                    seconds = resumed.seconds + time.perf_counter() - started
                    stopped = Position(epoch, index, int(correct), float(loss), seconds)
                    break
                model.kernels, model.weights, correct, loss = step(
                    model.kernels,
                    model.weights,
                    data.train_images[begin:end, ...],
                    data.train_targets[begin:end, ...],
                    data.train_labels[begin:end, ...],
                    keep_mask,
                    correct,
                    loss,
                    floor,
                )
                _notify(callbacks, "on_batch_end", state, end - begin)
            if stopped is not None:
                break
            record = _epoch_record(
                model, data, config, workers, count_batch, epoch, correct, loss, resumed.seconds - started
            )
            history.append(record)
            _notify(callbacks, "on_epoch_end", state, record)
        if stopped is not None:
            _notify(callbacks, "on_stop", state, stopped)
    finally:
        _notify(callbacks, "on_train_end", state)
    return stopped


def _epoch_record(
    model, data: DeviceData, config: Config, workers, count_batch, epoch: int, correct, loss, clock_offset: float
) -> EpochRecord:
    """The epoch's figures on the host, evaluating the test set if this epoch is due, brought over in one transfer;
    its seconds are ``time.perf_counter() + clock_offset`` once they are on the host."""
    evaluated = epoch % config.test_every == 0 or epoch + 1 == config.epochs
    trained = batches(config, data.train_size)[-1][1]
    counts = [correct, loss]
    if evaluated:
        counts.append(
            correct_predictions(model, data.test_images, data.test_labels, config.eval_batch_size, workers, count_batch)
        )
    xp = array_namespace(loss)
    # One stacked read in the loss's dtype: counts up to 2**24 (MNIST has 70000 images) are exact in float32.
    figures = backends.to_host(xp.stack([xp.astype(count, loss.dtype) for count in counts])).tolist()
    train_acc = int(figures[0]) / float(data.train_size)  # the book divides by every image, trained or not
    test_acc = int(figures[2]) / float(data.test_images.shape[0]) if evaluated else None
    seconds = time.perf_counter() + clock_offset
    speed = trained / seconds if seconds > 0 else 0.0
    return EpochRecord(epoch, train_acc, test_acc, figures[1] / max(trained, 1), seconds, speed)


def _notify(callbacks, hook: str, *arguments) -> None:
    for callback in callbacks:
        getattr(callback, hook)(*arguments)
