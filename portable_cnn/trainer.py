"""Epochs and batches: both recipes (``--book`` and the corrected default), metrics and progress."""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from tqdm import tqdm

from . import ops
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
    alpha: float = 2.0
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

    def validated(self) -> Config:
        """A copy with defaults filled in; raises UserError naming the first impossible value."""
        positive = ("batch_size", "kernels", "kernel_size", "train_size", "test_size", "eval_batch_size", "test_every")
        if self.epochs < 0:
            raise UserError(f"--epochs must be 0 or more, not {self.epochs}")
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")
        if output_side(self.kernel_size, self.book) < 1:
            raise UserError(f"--kernel-size {self.kernel_size} does not fit in a {IMAGE_SIDE}x{IMAGE_SIDE} image")
        if not math.isfinite(self.alpha) or self.alpha <= 0:
            raise UserError(f"--alpha must be a positive number, not {self.alpha}")
        dtype = self.dtype or ("float64" if self.book else "float32")
        if dtype not in DTYPES:
            raise UserError(f"unknown --dtype '{dtype}'; choose one of: {', '.join(DTYPES)}")
        if self.book and dtype != "float64":
            raise UserError("--book reproduces the notebook in float64; drop --dtype or use --dtype float64")
        if self.book and self.batch_size > self.train_size:
            raise UserError("--book drops the last partial batch, so --batch-size must not exceed --train-size")
        if self.rng not in RNGS:
            raise UserError(f"unknown --rng '{self.rng}'; choose one of: {', '.join(RNGS)}")
        return dataclasses.replace(self, dtype=dtype)


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
    """The book's initialisation: kernels ``0.02*U - 0.01``, then weights ``0.2*U - 0.1`` (in that draw order)."""
    side = output_side(config.kernel_size, config.book)
    kernels = 0.02 * random.uniform((config.kernel_size**2, config.kernels), config.dtype) - 0.01
    weights = 0.2 * random.uniform((side * side * config.kernels, NUM_CLASSES), config.dtype) - 0.1
    return ConvNet(kernels, weights, config.kernel_size, side)


def batches(config: Config, train_size: int) -> list[tuple[int, int]]:
    """(start, stop) of each training batch; the book drops the last partial batch (erratum 4)."""
    stop = (train_size // config.batch_size) * config.batch_size if config.book else train_size
    return [(start, min(start + config.batch_size, stop)) for start in range(0, stop, config.batch_size)]


def evaluate(model: ConvNet, images, labels, batch_size: int):
    """Correct predictions over a labelled set, in bounded-memory batches (a device scalar)."""
    return sum(
        ops.count_correct(model.logits(images[i : i + batch_size, ...]), labels[i : i + batch_size, ...])
        for i in range(0, images.shape[0], batch_size)
    )


def make_random(config: Config, backend):
    """The random source of a run: the notebook's host stream for --book, else Philox or the backend's own."""
    if config.book:
        return BookRandom(backend, config.seed)
    return (PortableRandom if config.rng == "portable" else NativeRandom)(backend, config.seed)


def train(config: Config, data=None, on_epoch: Callable[[EpochRecord], None] | None = None) -> TrainResult:
    """Train the network as ``config`` says; returns the model and one EpochRecord per epoch.

    ``data`` is an :class:`~portable_cnn.datasets.Mnist` (read with ``load_mnist(config.data_dir)`` when
    omitted). Unless ``config.quiet``, each evaluated epoch prints the notebook's line to stdout and a
    progress bar runs on stderr when it is a terminal.
    """
    config = config.validated()
    backend = get_backend(config.backend, config.device)
    if data is None:
        from .datasets import load_mnist

        data = load_mnist(config.data_dir)
    device_data = to_device(data, config, backend)
    random = make_random(config, backend)
    model = init_model(config, random)

    history = []
    spans = batches(config, device_data.train_size)
    progress = tqdm(
        total=config.epochs * spans[-1][1] if spans else 0,
        unit="img",
        unit_scale=True,
        file=sys.stderr,
        disable=config.quiet or not sys.stderr.isatty(),
        dynamic_ncols=True,
    )
    with progress:
        for epoch in range(config.epochs):
            record = run_epoch(model, device_data, config, random, spans, epoch, progress)
            history.append(record)
            if record.test_acc is not None and not config.quiet:
                tqdm.write(record.line(), file=sys.stdout)
            if on_epoch is not None:
                on_epoch(record)
    return TrainResult(model, history)


def run_epoch(model, data: DeviceData, config: Config, random, spans, epoch: int, progress) -> EpochRecord:
    """Train one pass over ``spans`` and evaluate if due; host scalars are read once, at the end."""
    started = time.perf_counter()
    hidden = model.positions**2 * model.num_kernels
    masks = random.keep_masks([(stop - start, hidden) for start, stop in spans], KEEP_PROB)
    correct = loss = 0
    for (start, stop), keep_mask in zip(spans, masks):
        targets = data.train_targets[start:stop, ...]
        probabilities = model.sgd_step(
            data.train_images[start:stop, ...],
            targets,
            keep_mask,
            alpha=config.alpha,
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
    seconds = time.perf_counter() - started
    if evaluated:
        progress.set_postfix_str(f"epoch {epoch} test {test_acc:.4f}", refresh=False)
    return EpochRecord(epoch, train_acc, test_acc, float(loss) / max(trained, 1), seconds, trained / seconds)
