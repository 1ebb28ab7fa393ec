"""Epochs and batches: both recipes (``--book`` and the corrected default), metrics and progress."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np
from array_api_compat import array_namespace
from array_api_compat import device as device_of
from tqdm import tqdm

from . import checkpoint, metrics, ops
from .backends import BookRandom, NativeRandom, PortableRandom, get_backend
from .errors import UserError
from .model import IMAGE_SIDE, KEEP_PROB, NUM_CLASSES, ConvNet

DTYPES = ("float32", "float64")
RNGS = ("portable", "native")


@dataclass
class Config:
    """Everything a run depends on; the fields mirror the command-line flags (book values by default)."""

    epochs: int = 300
    batch_size: int = 128
    alpha: float = 2.0  # the dense layer's learning rate
    kernel_alpha: float | None = None  # the kernels': alpha with --book, else alpha * batch_size
    kernel_init: float | None = None  # kernels start U(-kernel_init, kernel_init): 0.01 with --book, else 1
    weight_init: float | None = None  # dense weights start U(-weight_init, weight_init): 0.1 with --book, else 0.01
    kernels: int = 16
    kernel_size: int = 3
    train_size: int = 1000
    test_size: int = 10000
    seed: int = 1
    eval_batch_size: int = 1000
    dtype: str | None = None  # float32, or float64 with --book
    test_every: int = 1
    quiet: bool = False
    book: bool = False
    backend: str = "numpy"
    device: str | None = None
    data_dir: str | None = None
    rng: str = "portable"  # the default recipe's random numbers; --book always uses numpy's legacy stream
    save: str | None = None  # checkpoint file, written every checkpoint_every epochs and at the end
    resume: str | None = None  # checkpoint to continue from; its recipe (RECIPE_FIELDS) must match this one
    checkpoint_every: int = 10
    metrics: str | None = None  # one row per epoch, .csv or .jsonl
    progress: bool | None = None  # progress bar on stderr; None: when stderr is a terminal and not quiet

    def validated(self) -> Config:
        """A copy with defaults filled in; raises UserError naming the first impossible value."""
        positive = (
            "batch_size", "kernels", "kernel_size", "train_size", "test_size", "eval_batch_size", "test_every", "checkpoint_every"
        )
        if self.epochs < 0:
            raise UserError(f"--epochs must be 0 or more, not {self.epochs}")
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")
        if output_side(self.kernel_size, self.book) < 1:
            raise UserError(f"--kernel-size {self.kernel_size} does not fit in a {IMAGE_SIDE}x{IMAGE_SIDE} image")
        for name in ("alpha", "kernel_alpha", "kernel_init", "weight_init"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise UserError(f"--{name.replace('_', '-')} must be a positive number, not {value}")
        dtype = self.dtype or ("float64" if self.book else "float32")
        if dtype not in DTYPES:
            raise UserError(f"unknown --dtype '{dtype}'; choose one of: {', '.join(DTYPES)}")
        if self.book and dtype != "float64":
            raise UserError("--book reproduces the notebook in float64; drop --dtype or use --dtype float64")
        if self.book and self.batch_size > self.train_size:
            raise UserError("--book drops the last partial batch, so --batch-size must not exceed --train-size")
        if self.rng not in RNGS:
            raise UserError(f"unknown --rng '{self.rng}'; choose one of: {', '.join(RNGS)}")
        if self.save is not None:
            checkpoint.check_writable(self.save)
        if self.metrics is not None:
            metrics.check_path(self.metrics)
        kernel_alpha = self.alpha if self.book else self.alpha * self.batch_size
        recipe = {**(BOOK_RECIPE if self.book else DEFAULT_RECIPE), "kernel_alpha": kernel_alpha}
        chosen = {name: value for name, value in recipe.items() if getattr(self, name) is None}
        return dataclasses.replace(self, dtype=dtype, **chosen)

    def recipe(self) -> dict:
        """The fields that define the run (a resumed run must keep them), and the recipe's name."""
        return {"name": "book" if self.book else "default", **{name: getattr(self, name) for name in RECIPE_FIELDS}}


# What a run is: a resumed run must have the same values (epochs, evaluation and output may change).
RECIPE_FIELDS = ("book", "dtype", "rng", "seed", "alpha", "kernel_alpha", "kernel_init", "weight_init", "batch_size", "kernels", "kernel_size", "train_size")
DEFAULT_INTERRUPT_PATH = "portable-cnn-interrupted.npz"


class Interrupted(Exception):
    """Training stopped on request after a batch (Ctrl-C, SIGTERM, ``stop``); the run was saved to ``path``."""

    def __init__(self, path: str, epoch: int, batch: int, batches: int, defaulted: bool):
        self.path, self.epoch, self.batch, self.batches, self.defaulted = path, epoch, batch, batches, defaulted
        where = f"epoch {epoch}" + (f", batch {batch} of {batches}" if batch else "")
        note = " (no --save was given)" if defaulted else ""
        super().__init__(f"stopped at {where}; saved {path}{note}")


class Diverged(UserError):
    """The loss or the parameters became NaN or infinite; the last good state was kept, never the bad one."""


# What each recipe fills in where the config leaves a field unset (None).
BOOK_RECIPE = {"kernel_init": 0.01, "weight_init": 0.1}
DEFAULT_RECIPE = {"kernel_init": 1.0, "weight_init": 0.01}


def output_side(kernel_size: int, book: bool) -> int:
    """Positions per side of a valid convolution; the notebook's ``range(28 - 3)`` visits one fewer."""
    return IMAGE_SIDE - kernel_size + (0 if book else 1)


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


@dataclass
class Position:
    """Where a run stands: ``epoch`` epochs done and ``batch`` batches of the next, with that epoch's counts so far."""

    epoch: int
    batch: int = 0
    correct: int = 0
    loss: float = 0.0
    seconds: float = 0.0

    def partial(self) -> dict | None:
        return {"correct": self.correct, "loss": self.loss, "seconds": self.seconds} if self.batch else None


def train(
    config: Config,
    data=None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    stop=None,
) -> TrainResult:
    """Train the network as ``config`` says; returns the model and one EpochRecord per epoch.

    ``data`` is an :class:`~portable_cnn.datasets.Mnist` (read with ``load_mnist(config.data_dir)`` when
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
        from .datasets import load_mnist

        data = load_mnist(config.data_dir)
    device_data = to_device(data, config, backend)
    spans = batches(config, device_data.train_size)
    saver = _Saver(config, backend, data_fingerprint(data, config.train_size))
    random = make_random(config, backend)
    if resumed is None:
        model, history, position = init_model(config, random), [], Position(0)
    else:
        model, history, position = saver.restore(resumed, random, len(spans))

    per_epoch = spans[-1][1] if spans else 0
    progress = tqdm(
        total=(config.epochs - position.epoch) * per_epoch - (spans[position.batch][0] if spans else 0),
        unit="img",
        unit_scale=True,
        file=sys.stderr,
        disable=not show_progress(config),
        dynamic_ncols=True,
    )
    writer = metrics.MetricsWriter(config.metrics, keep_before=position.epoch if resumed else None) if config.metrics else None
    last_saved = None  # the epoch of the last checkpoint this run wrote to config.save
    try:
        # numpy's overflow warnings would repeat on every batch of a diverging run; divergence() reports it once
        with progress, np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for epoch in range(position.epoch, config.epochs):
                start = position if epoch == position.epoch else Position(epoch)
                good = (model.kernels, model.weights, random.state(), start, len(history))
                outcome = run_epoch(model, device_data, config, random, spans, epoch, progress, start=start, stop=stop)
                if isinstance(outcome, Position):  # stopped before a batch
                    raise saver.interrupted(model, good[2], outcome, history, len(spans))
                record = outcome
                problem = divergence(record, model)
                if problem:
                    raise saver.diverged(problem, epoch, model, good, history, last_saved)
                history.append(record)
                if record.test_acc is not None and not config.quiet:
                    tqdm.write(record.line(), file=sys.stdout)
                    sys.stdout.flush()
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


def divergence(record: EpochRecord, model: ConvNet) -> str | None:
    """What went non-finite in an epoch, or None: the loss (already on the host), then the parameters.

    Called once per epoch; the parameter check is one device reduction read as one host boolean.
    """
    if not math.isfinite(record.loss):
        return f"the loss became {record.loss}"
    xp = array_namespace(model.weights)
    if not bool(xp.all(xp.isfinite(model.kernels)) & xp.all(xp.isfinite(model.weights))):
        return "the weights became NaN or infinite"
    return None


def check_resumable(config: Config, saved: checkpoint.Checkpoint) -> None:
    """Refuse to resume a checkpoint with another recipe (naming the field) or with no epochs left."""
    recipe = saved.meta["recipe"]
    for name in RECIPE_FIELDS:
        if name in recipe and recipe[name] != getattr(config, name):
            raise UserError(
                f"the checkpoint {saved.path} was trained with {_flag(name, recipe[name])}, but this run has "
                f"{_flag(name, getattr(config, name))}; a resumed run keeps its checkpoint's {name.replace('_', '-')}"
            )
    if config.epochs <= saved.epoch:
        raise UserError(
            f"the checkpoint {saved.path} has {saved.epoch} epochs done and --epochs is {config.epochs}; "
            f"--epochs counts all epochs, so ask for more than {saved.epoch}"
        )


def _flag(name: str, value) -> str:
    if isinstance(value, bool):
        return f"--{name}" if value else f"no --{name}"
    return f"--{name.replace('_', '-')} {value}"


def config_from_checkpoint(saved: checkpoint.Checkpoint, **changes) -> Config:
    """The Config to resume ``saved``: its recipe and run settings, ``resume`` set to its path, then ``changes``.

    Display settings (quiet, progress) are not inherited; ``save`` defaults to the checkpoint's own path.
    """
    known = {field.name for field in dataclasses.fields(Config)} - {"quiet", "progress", "resume", "save"}
    base = {name: value for name, value in saved.config.items() if name in known}
    try:
        config = Config(**{**base, "resume": saved.path, "save": saved.path})
    except TypeError as error:
        raise UserError(f"the checkpoint {saved.path} is corrupt: its config is not valid ({error})") from None
    return dataclasses.replace(config, **changes)


def data_fingerprint(mnist, train_size: int) -> dict:
    """Where the training images came from and the SHA-256 of the ones a run uses (stored in checkpoints)."""
    digest = hashlib.sha256()
    for array in (mnist.train_images[:train_size], mnist.train_labels[:train_size]):
        digest.update(np.ascontiguousarray(array).tobytes())
    return {"source": str(getattr(mnist, "source", "")), "train_sha256": digest.hexdigest()}


class _Saver:
    """Writes this run's checkpoints and restores a saved one: the link between the trainer and its files."""

    def __init__(self, config: Config, backend, data: dict):
        self.config, self.backend, self.data = config, backend, data

    def write(self, path, model: ConvNet, rng: dict, position: Position, history: list[EpochRecord]):
        meta = checkpoint.metadata(
            config=dataclasses.asdict(self.config),
            recipe=self.config.recipe(),
            model=model,
            dtype=self.config.dtype,
            epoch=position.epoch,
            batch=position.batch,
            partial=position.partial(),
            rng=rng,
            history=[dataclasses.asdict(record) for record in history],
            data=self.data,
            backend={"name": self.backend.name, "device": str(self.backend.device)},
        )
        kernels, weights = self.backend.to_host(model.kernels), self.backend.to_host(model.weights)
        return checkpoint.save(path, checkpoint.Checkpoint(kernels, weights, meta))

    def restore(self, saved: checkpoint.Checkpoint, random, num_batches: int):
        """The model, history and position of a checkpoint, with ``random`` set to continue its stream."""
        wanted = saved.meta.get("data", {}).get("train_sha256")
        if wanted is not None and wanted != self.data["train_sha256"]:
            raise UserError(
                f"the training images differ from those the checkpoint {saved.path} was trained on "
                f"({saved.meta['data'].get('source')}); resume with the same data (--data-dir)"
            )
        try:
            random.restore(saved.rng)
            history = [EpochRecord(**{field.name: row[field.name] for field in dataclasses.fields(EpochRecord)}) for row in saved.history]
            partial = saved.meta.get("partial") or {}
            position = Position(saved.epoch, saved.batch, int(partial.get("correct", 0)), float(partial.get("loss", 0.0)),
                                float(partial.get("seconds", 0.0)))
        except UserError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise UserError(f"the checkpoint {saved.path} is corrupt: its training state cannot be read ({error})") from None
        if not 0 <= position.batch < num_batches or len(history) != position.epoch:
            raise UserError(f"the checkpoint {saved.path} is corrupt: it stops at batch {position.batch} of epoch {position.epoch}, "
                            f"with {len(history)} epochs of history")
        return saved.to_model(self.backend), history, position

    def interrupted(self, model, rng, position: Position, history, num_batches: int, last_saved=None) -> Interrupted:
        path = self.config.save or DEFAULT_INTERRUPT_PATH
        if not (path == self.config.save and position.batch == 0 and last_saved == position.epoch):
            self.write(path, model, rng, position, history)
        return Interrupted(str(path), position.epoch, position.batch, num_batches, defaulted=self.config.save is None)

    def diverged(self, problem: str, epoch: int, model, good, history, last_saved) -> Diverged:
        kernels, weights, rng, position, count = good
        advice = " (try a smaller --alpha)"
        if not self.config.save:
            return Diverged(f"training diverged in epoch {epoch}: {problem}{advice}; nothing was saved (no --save)")
        if count == 0 and position.batch == 0:
            return Diverged(f"training diverged in epoch {epoch}: {problem}{advice}; no epoch had finished, so nothing was saved")
        if last_saved != position.epoch or position.batch:
            good_model = dataclasses.replace(model, kernels=kernels, weights=weights)
            self.write(self.config.save, good_model, rng, position, history[:count])
        done = f"{position.epoch} epoch{'' if position.epoch == 1 else 's'}" + (f" and {position.batch} batches" if position.batch else "")
        return Diverged(f"training diverged in epoch {epoch}: {problem}{advice}; {self.config.save} keeps the last good state ({done})")


def run_epoch(model, data: DeviceData, config: Config, random, spans, epoch: int, progress, *, start=None, stop=None):
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
        progress.update(stop - start)

    evaluated = epoch % config.test_every == 0 or epoch + 1 == config.epochs
    test_correct = evaluate(model, data.test_images, data.test_labels, config.eval_batch_size) if evaluated else None
    trained = spans[-1][1] if spans else 0
    train_acc = int(correct) / float(data.train_size)  # the book divides by every image, trained or not
    test_acc = int(test_correct) / float(data.test_images.shape[0]) if evaluated else None
    seconds = earlier + time.perf_counter() - started
    if evaluated:
        progress.set_postfix_str(f"epoch {epoch} test {test_acc:.4f}", refresh=False)
    return EpochRecord(epoch, train_acc, test_acc, float(loss) / max(trained, 1), seconds, trained / seconds if seconds > 0 else 0.0)
