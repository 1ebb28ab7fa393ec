"""The training loop: epochs of batches, each a forward pass, gradients and an SGD update, then an
evaluation when due, reported to callbacks (see :mod:`callbacks`). No files, no printing: the
callbacks do that. Device scalars come to the host once per epoch, never inside the batch loop.
"""

from __future__ import annotations

import functools
import operator
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from array_api_compat import array_namespace
from array_api_compat import device as device_of

from . import backends, book, ops
from .config import Config
from .errors import UserError
from .model import KEEP_PROB, NUM_CLASSES, ConvNet, Network
from .optim import SGD
from .pool import Workers


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

    params: dict[str, Any]
    random_state: dict
    position: Position
    epochs_done: int


@dataclass
class TrainState:
    """What callbacks see: the model, the run's settings and random source, the history, and
    ``stop_training``, which any callback may set to end the run before the next batch."""

    model: Network
    config: Config
    random_source: Any
    history: list[EpochRecord]
    batches: list[tuple[int, int]]
    start: Position
    epoch_start: Snapshot | None = None
    stop_training: bool = False
    parameters_finite: bool = True  # after the last epoch, read with its figures (the divergence check's)


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


def init_model(config: Config, random_source, network: type[Network] = ConvNet) -> Network:
    """A new ``network`` whose parameters start ``U(-h, h)``, drawn in the network's order.

    Computed as the notebook does, ``2h * U - h`` (``0.02 * U - 0.01`` for the book's kernels).
    """

    def symmetric(shape, half_width):
        return 2 * half_width * random_source.uniform(shape, config.dtype) - half_width

    return network.initial(config, symmetric)


def batches(config: Config, train_size: int) -> list[tuple[int, int]]:
    """(start, stop) of each training batch; the book drops the last partial batch (erratum 4)."""
    trained = book.erratum_4_trained(train_size, config.batch_size) if config.book else train_size
    return ops.slices(trained, config.batch_size)


def batch_count(architecture: tuple):
    """``count(params, images, labels)``: one batch's correct predictions."""

    def count(params, images, labels):
        return ops.count_correct(Network.build(architecture, params).logits(images), labels)

    return count


def correct_predictions(
    model: Network, images, labels, batch_size: int, workers: Workers | None = None, *, steps: RunSteps | None = None
):
    """Correct predictions over a labelled set (a device scalar), in batches of ``batch_size`` shared by ``workers``;
    given a run's ``steps`` (built with the same ``batch_size``), their count, all batches as one call where they
    hold one."""
    xp = array_namespace(model.like)
    correct = xp.asarray(0, dtype=labels.dtype, device=device_of(labels))
    if steps is not None and steps.count_all is not None:
        return steps.count_all(model.params, correct, images, labels)
    if steps is None:
        count_batch = backends.compiled(batch_count(model.architecture), backends.library_name(model.like))
    else:
        count_batch = steps.count

    def count(span):
        start, stop = span
        return count_batch(model.params, images[start:stop, ...], labels[start:stop, ...])

    for counted in (workers or Workers(1, limit_blas=False)).map(count, ops.slices(images.shape[0], batch_size)):
        correct = correct + counted
    return correct


def train_step(book_recipe: bool, batch_size: int, block_size, optimiser: SGD, architecture: tuple, workers):
    """``step(floor, (params, correct, loss), images, targets, labels, keep_mask) -> (params, correct, loss)``: one
    batch's forward pass, gradients and SGD update, and its counts added on the device; pure (new arrays in, new
    arrays out, the parameters one pytree), so that a library that compiles (``jax.jit``) runs it as one call and
    a library that compiles loops runs a whole epoch of them as one (:func:`over_batches`). The math is the
    network's (and book's)."""

    def step(floor, counted, images, targets, labels, keep_mask):
        params, correct, loss = counted
        model = Network.build(architecture, params)
        divisor = batch_size * images.shape[0]
        if book_recipe:
            probabilities, cache = book.forward(model, images, keep_mask)
            gradients = book.backward(model, cache, probabilities, targets, divisor)
        else:
            probabilities, gradients = model.gradients(images, keep_mask, targets, divisor, block_size, workers.map)
        correct = correct + ops.count_correct(probabilities, labels)
        loss = loss + ops.cross_entropy_sum(probabilities, targets, floor)
        return optimiser.step(params, gradients), correct, loss

    return step


def over_batches(body: Callable, size: int, scan: Callable) -> Callable:
    """``run(fixed, carry, *arrays)``: ``carry = body(fixed, carry, *batch)`` over ``arrays``' rows in consecutive
    batches of ``size`` (the last may be shorter), the full ones as one ``scan`` (:func:`backends.scan`) and the
    short one after it, so that compiled whole it is one call."""

    def run(fixed, carry, *arrays):
        xp = array_namespace(arrays[0])
        full = arrays[0].shape[0] // size * size
        stacked = [xp.reshape(array[:full, ...], (-1, size, *array.shape[1:])) for array in arrays]
        if full:  # (a scan over no batches would still compile its body)
            carry, _ = scan(lambda carry, batch: (body(fixed, carry, *batch), None), carry, stacked)
        if arrays[0].shape[0] > full:
            carry = body(fixed, carry, *(array[full:, ...] for array in arrays))
        return carry

    return run


def in_order(body: Callable, carry, xs):
    """``scan`` as a Python loop over ``xs``' first axis, for a library that captures the whole loop as one graph."""
    for index in range(xs[0].shape[0]):
        carry, _ = body(carry, [x[index, ...] for x in xs])
    return carry, None


@dataclass(frozen=True)
class RunSteps:
    """A run's compiled calls: ``train`` one batch (:func:`train_step`), ``count`` one evaluation batch
    (:func:`batch_count`) and, where the library compiles loops (JAX) or captures CUDA graphs (torch on a GPU),
    ``epoch`` all of an epoch's batches (their masks a list) and ``count_all`` a whole evaluation, each one call
    (else None). Built once per run, never cached for the process: a run whose registry entry compiles nothing is
    eager all through, and a compiled one is traced by its own run."""

    train: Callable
    count: Callable
    epoch: Callable | None = None
    count_all: Callable | None = None

    @classmethod
    def build(cls, config: Config, model: Network) -> RunSteps:
        library = backends.library_name(model.like)
        workers = backends.workers(config.backend, config.device, config.threads)
        rates = SGD.of(model.learning_rates(config))
        step = train_step(config.book, config.batch_size, config.block_size, rates, model.architecture, workers)
        count = batch_count(model.architecture)
        compiled = functools.partial(backends.compiled, library=library)
        scan, device = backends.scan(library), device_of(model.like)
        if scan is not None:  # JAX: a loop compiled into one call
            whole = compiled
        elif backends.captures_graphs(library, device):  # torch on a GPU: the loop in Python, captured as one graph
            scan, whole = in_order, functools.partial(backends.graphed, library=library, device=device)
        else:
            return cls(compiled(step), compiled(count))
        batches = over_batches(step, config.batch_size, scan)

        def epoch(floor, counted, images, targets, labels, masks):
            return batches(floor, counted, images, targets, labels, array_namespace(images).concat(masks))

        def add(params, correct, images, labels):
            return correct + count(params, images, labels)

        count_all = over_batches(add, config.eval_batch_size, scan)
        return cls(compiled(step), compiled(count), whole(epoch), whole(count_all))


def fit(
    model: Network,
    data: DeviceData,
    config: Config,
    random_source,
    callbacks,
    history: list[EpochRecord],
    start: Position,
    steps: RunSteps | None = None,
):
    """Train ``model`` from ``start`` to ``config.epochs``, appending to ``history`` and reporting to ``callbacks``.

    ``steps`` are the run's compiled calls (built here when not given: a caller that runs one run as several
    calls, as the benchmarks do an epoch a call, builds them once with :meth:`RunSteps.build`). Where they hold an
    ``epoch`` call, an epoch's batches are one call, unless a callback wants ``every_batch``.

    Returns None when every epoch ran, or the :class:`Position` reached when a callback set
    ``stop_training`` (looked at before each epoch and each call; the callbacks' ``on_stop`` then ran).
    """
    workers = backends.workers(config.backend, config.device, config.threads)
    steps = steps or RunSteps.build(config, model)
    epoch_calls = steps.epoch is not None and not any(callback.every_batch for callback in callbacks)
    spans = batches(config, data.train_size)
    state = TrainState(model, config, random_source, history, spans, start)
    xp, where = array_namespace(model.like), device_of(model.like)
    floor = ops.probability_floor(model.like)
    stopped = None
    try:
        _notify(callbacks, "on_train_begin", state)
        for epoch in range(start.epoch, config.epochs):
            resumed = start if epoch == start.epoch else Position(epoch)
            state.epoch_start = Snapshot(model.params, random_source.state(), resumed, len(history))
            if state.stop_training:  # asked for at the end of the last epoch: stop before drawing this one's masks
                stopped = resumed
                break
            started = time.perf_counter()
            correct = xp.asarray(resumed.correct, dtype=xp.int64, device=where)
            loss = xp.asarray(resumed.loss, dtype=model.like.dtype, device=where)
            _notify(callbacks, "on_epoch_begin", state)  # from here to the last batch's end: no host sync
            masks = random_source.keep_masks([(stop - begin, model.hidden_size) for begin, stop in spans], KEEP_PROB)
            if epoch_calls and resumed.batch == 0:  # all of its batches as one call
                calls, step = [(0, spans[0][0], spans[-1][1], list(masks))], steps.epoch
            else:  # a call a batch, each mask unpacked when its batch comes (one alive at a time)
                calls = ((index, *span, mask) for index, (span, mask) in enumerate(zip(spans, masks)))
                step = steps.train
            for index, begin, end, keep_mask in calls:
                if index < resumed.batch:
                    continue  # its mask was drawn (the stream stays in step) but the batch was trained before
                _notify(callbacks, "on_batch_begin", state)
                if state.stop_training:
                    seconds = resumed.seconds + time.perf_counter() - started
                    stopped = Position(epoch, index, int(correct), float(loss), seconds)
                    break
                model.params, correct, loss = step(
                    floor,
                    (model.params, correct, loss),
                    data.train_images[begin:end, ...],
                    data.train_targets[begin:end, ...],
                    data.train_labels[begin:end, ...],
                    keep_mask,
                )
                _notify(callbacks, "on_batch_end", state, end - begin)
            if stopped is not None:
                break
            record, state.parameters_finite = _epoch_record(
                model, data, config, workers, steps, epoch, correct, loss, resumed.seconds - started
            )
            history.append(record)
            _notify(callbacks, "on_epoch_end", state, record)
        if stopped is not None:
            _notify(callbacks, "on_stop", state, stopped)
    finally:
        _notify(callbacks, "on_train_end", state)
    return stopped


def _epoch_record(
    model, data: DeviceData, config: Config, workers, steps: RunSteps, epoch: int, correct, loss, clock_offset: float
) -> tuple[EpochRecord, bool]:
    """The epoch's figures on the host, evaluating the test set if this epoch is due, and whether every parameter is
    finite, all brought over in one transfer; its seconds are ``time.perf_counter() + clock_offset`` once they are on
    the host."""
    evaluated = epoch % config.test_every == 0 or epoch + 1 == config.epochs
    trained = batches(config, data.train_size)[-1][1]
    xp = array_namespace(loss)
    finite = functools.reduce(operator.and_, [xp.all(xp.isfinite(array)) for array in model.params.values()])
    counts = [correct, loss, finite]
    if evaluated:
        counts.append(
            correct_predictions(model, data.test_images, data.test_labels, config.eval_batch_size, workers, steps=steps)
        )
    # One stacked read in the loss's dtype: counts up to 2**24 (MNIST has 70000 images) are exact in float32.
    figures = backends.to_host(xp.stack([xp.astype(count, loss.dtype) for count in counts])).tolist()
    train_acc = int(figures[0]) / float(data.train_size)  # the book divides by every image, trained or not
    test_acc = int(figures[3]) / float(data.test_images.shape[0]) if evaluated else None
    seconds = time.perf_counter() + clock_offset
    speed = trained / seconds if seconds > 0 else 0.0
    record = EpochRecord(epoch, train_acc, test_acc, figures[1] / max(trained, 1), seconds, speed)
    return record, figures[2] == 1


def _notify(callbacks, hook: str, *arguments) -> None:
    for callback in callbacks:
        getattr(callback, hook)(*arguments)
