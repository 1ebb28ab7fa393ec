"""Epochs and batches: both recipes (``--book`` and the corrected default), progress and evaluation."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from array_api_compat import array_namespace
from array_api_compat import device as device_of

from . import checkpoint, metrics, ops, progress
from .backends import BookRandom, NativeRandom, PortableRandom, float_warnings_off, get_backend
from .config import Config, output_side
from .datasets import EMBEDDED_SOURCE, fingerprint, load_mnist
from .errors import UserError
from .metrics import EpochRecord
from .model import KEEP_PROB, NUM_CLASSES, ConvNet
from .runs import Position, Saver, check_resumable, divergence

class TrainResult(NamedTuple):
    model: ConvNet
    history: list[EpochRecord]


@dataclass
class DeviceData:
    """A run's images, labels and one-hot targets, moved to the device once."""

    train_images: object
    train_labels: object
    train_targets: object
    test_images: object
    test_labels: object
    train_size: int = field(init=False)

    def __post_init__(self):
        self.train_size = self.train_images.shape[0]


def to_device(mnist, config: Config, backend) -> DeviceData:
    """Take the first ``train_size``/``test_size`` images, scale pixels to [0, 1] and move them to the device."""
    for split, wanted, have in (("train", config.train_size, len(mnist.train_images)), ("test", config.test_size, len(mnist.test_images))):
        if wanted > have:
            raise UserError(f"--{split}-size {wanted} asks for more images than the data has ({have} in {mnist.source})")
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


def init_model(config: Config, random) -> ConvNet:
    """Kernels ``U(-kernel_init, kernel_init)``, then weights ``U(-weight_init, weight_init)``, in the book's order.

    Computed as the notebook does, ``2h * U - h`` (``0.02 * U - 0.01`` for the book's kernels).
    """
    side = output_side(config.kernel_size, config.book)

    def symmetric(shape, half_width):
        return 2 * half_width * random.uniform(shape, config.dtype) - half_width

    kernels = symmetric((config.kernel_size**2, config.kernels), config.kernel_init)
    weights = symmetric((side * side * config.kernels, NUM_CLASSES), config.weight_init)
    return ConvNet(kernels, weights, config.kernel_size, side)


def batches(config: Config, train_size: int) -> list[tuple[int, int]]:
    """(start, stop) of each training batch; the book drops the last partial batch (erratum 4)."""
    stop = (train_size // config.batch_size) * config.batch_size if config.book else train_size
    return [(start, min(start + config.batch_size, stop)) for start in range(0, stop, config.batch_size)]


def evaluate(model: ConvNet, images, labels, batch_size: int):
    """Correct predictions over a labelled set, in bounded-memory batches (a device scalar)."""
    return sum(
        ops.count_correct(model.logits(images[i:j, ...]), labels[i:j, ...])
        for i in range(0, images.shape[0], batch_size)
        for j in [min(i + batch_size, images.shape[0])]  # the standard leaves out-of-range slice ends undefined
    )


def make_random(config: Config, backend):
    """The random source of a run: the notebook's host stream for --book, else Philox or the backend's own."""
    if config.book:
        return BookRandom(backend, config.seed)
    return (PortableRandom if config.rng == "portable" else NativeRandom)(backend, config.seed)


def train(
    config: Config,
    data=None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    stop=None,
) -> TrainResult:
    """Train the network as ``config`` says; returns the model and one EpochRecord per epoch.

    ``data`` is an :class:`~portable_cnn.datasets.Mnist` (read with ``load_mnist(config.data_dir, ...)`` when
    omitted). Unless ``config.quiet``, each evaluated epoch prints the notebook's line to stdout and a
    progress bar runs on stderr (``config.progress``; by default when stderr is a terminal).

    ``config.save`` is written every ``config.checkpoint_every`` epochs and at the end. ``config.resume``
    continues a saved run where it stopped, with the same weights, random numbers and lines as a run
    that never stopped; the returned history then starts with the checkpoint's epochs. ``stop``
    (anything with ``is_set()``, such as a ``threading.Event`` set by a signal handler) is looked at
    before each batch: once set, the run is saved to ``config.save`` (or ``DEFAULT_INTERRUPT_PATH``) and
    :class:`Interrupted` is raised. A NaN or infinite loss or parameter raises :class:`Diverged`; the
    checkpoint file then holds the last good state, never the bad one. ``config.metrics`` gets a row
    per epoch. ``on_epoch`` is called with each new EpochRecord.
    """
    config = config.validated()
    resumed = checkpoint.load(config.resume) if config.resume else None
    if resumed is not None:
        check_resumable(config, resumed)
    backend = get_backend(config.backend, config.device)
    if data is None:
        data = load_mnist(config.data_dir, train_size=config.train_size, test_size=config.test_size)
    if data.source == EMBEDDED_SOURCE and not config.quiet:
        print(f"portable-cnn: training on {EMBEDDED_SOURCE} of MNIST ({len(data.train_images)} training, "
              f"{len(data.test_images)} test images)", file=sys.stderr)
    device_data = to_device(data, config, backend)
    spans = batches(config, device_data.train_size)
    saver = Saver(config, backend, fingerprint(data, config.train_size))
    random = make_random(config, backend)
    if resumed is None:
        model, history, position = init_model(config, random), [], Position(0)
    else:
        model, history, position = saver.restore(resumed, random, len(spans))

    per_epoch = spans[-1][1] if spans else 0
    images_left = (config.epochs - position.epoch) * per_epoch - (spans[position.batch][0] if spans else 0)
    bar = progress.bar(images_left, show_progress(config))
    writer = metrics.MetricsWriter(config.metrics, keep_before=position.epoch if resumed else None) if config.metrics else None
    last_saved = None  # the epoch of the last checkpoint this run wrote to config.save
    try:
        # numpy's overflow warnings would repeat on every batch of a diverging run; divergence() reports it once
        with bar, float_warnings_off():
            for epoch in range(position.epoch, config.epochs):
                start = position if epoch == position.epoch else Position(epoch)
                good = (model.kernels, model.weights, random.state(), start, len(history))
                outcome = run_epoch(model, device_data, config, random, spans, epoch, bar, start=start, stop=stop)
                if isinstance(outcome, Position):  # stopped before a batch
                    raise saver.interrupted(model, good[2], outcome, history, len(spans))
                record = outcome
                problem = divergence(record, model)
                if problem:
                    raise saver.diverged(problem, epoch, model, good, history, last_saved)
                history.append(record)
                if record.test_acc is not None and not config.quiet:
                    progress.print_line(record.line())
                if writer is not None:
                    writer.write(record)
                if on_epoch is not None:
                    on_epoch(record)
                done = epoch + 1
                if config.save and (done % config.checkpoint_every == 0 or done == config.epochs):
                    saver.write(config.save, model, random.state(), Position(done), history)
                    last_saved = done
                if stop is not None and stop.is_set() and done < config.epochs:
                    raise saver.interrupted(model, random.state(), Position(done), history, len(spans), last_saved)
        if config.save and last_saved is None and config.epochs == position.epoch:  # --epochs 0: the initial model
            saver.write(config.save, model, random.state(), position, history)
    finally:
        if writer is not None:
            writer.close()
    return TrainResult(model, history)


def show_progress(config: Config) -> bool:
    """The progress bar's switch: ``config.progress`` if given, else on when stderr is a terminal and not quiet."""
    if config.progress is not None:
        return config.progress
    return not config.quiet and sys.stderr.isatty()


def run_epoch(model, data: DeviceData, config: Config, random, spans, epoch: int, bar, *, start=None, stop=None):
    """Train one pass over ``spans`` and evaluate if due; host scalars are read once, at the end.

    ``start`` continues an epoch part-way (a :class:`Position` with ``batch > 0``): the epoch's masks are
    drawn again from the epoch's random state and the first ``start.batch`` are skipped, so the run
    goes on exactly as if it had never stopped. ``stop`` is looked at before each batch (a host flag,
    no device sync); once set, the epoch ends there and the :class:`Position` reached is returned
    instead of an :class:`EpochRecord`.
    """
    started = time.perf_counter()
    hidden = model.positions**2 * model.num_kernels
    masks = random.keep_masks([(stop - start, hidden) for start, stop in spans], KEEP_PROB)
    first = start.batch if start is not None else 0
    earlier = start.seconds if start is not None and first else 0.0
    correct = loss = 0
    if first:
        xp, where = array_namespace(model.weights), device_of(model.weights)
        correct = xp.asarray(start.correct, dtype=xp.int64, device=where)
        loss = xp.asarray(start.loss, dtype=model.weights.dtype, device=where)
    halt = stop
    for index, ((start, stop), keep_mask) in enumerate(zip(spans, masks)):
        if index < first:
            continue  # its mask was drawn (the stream stays in step) but the batch was trained before
        if halt is not None and halt.is_set():
            return Position(epoch, index, int(correct), float(loss), earlier + time.perf_counter() - started)
        targets = data.train_targets[start:stop, ...]
        probabilities = model.sgd_step(
            data.train_images[start:stop, ...],
            targets,
            keep_mask,
            alpha=config.alpha,
            kernel_alpha=config.kernel_alpha,
            normaliser=config.batch_size * (stop - start),
            book=config.book,
        )
        correct = correct + ops.count_correct(probabilities, data.train_labels[start:stop, ...])
        loss = loss + ops.cross_entropy_sum(probabilities, targets)
        bar.update(stop - start)

    evaluated = epoch % config.test_every == 0 or epoch + 1 == config.epochs
    test_correct = evaluate(model, data.test_images, data.test_labels, config.eval_batch_size) if evaluated else None
    trained = spans[-1][1] if spans else 0
    train_acc = int(correct) / float(data.train_size)  # the book divides by every image, trained or not
    test_acc = int(test_correct) / float(data.test_images.shape[0]) if evaluated else None
    seconds = earlier + time.perf_counter() - started
    if evaluated:
        bar.set_postfix_str(f"epoch {epoch} test {test_acc:.4f}", refresh=False)
    return EpochRecord(epoch, train_acc, test_acc, float(loss) / max(trained, 1), seconds, trained / seconds if seconds > 0 else 0.0)
