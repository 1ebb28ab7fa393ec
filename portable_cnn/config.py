"""What a run is: the Config (one field per command-line flag), its validation and the two recipes' defaults."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from . import backends, book
from .errors import UserError
from .model import IMAGE_SIDE, valid_positions

DTYPES = ("float32", "float64")
RNGS = ("portable", "native")


@dataclass
class Config:
    """Everything a run depends on; the fields mirror the command-line flags (book values by default)."""

    epochs: int = 300
    batch_size: int = 128
    alpha: float = 2.0  # the dense layer's learning rate
    kernel_alpha: float | None = None  # the kernels': alpha with --book, else 32 * alpha * batch_size
    kernel_init: float | None = None  # kernels start U(-kernel_init, kernel_init): 0.01 with --book, else 1
    weight_init: float | None = None  # dense weights start U(-weight_init, weight_init): 0.1 with --book, else 0.01
    kernels: int = 16
    kernel_size: int = 3
    train_size: int = 1000
    test_size: int = 10000
    seed: int = 1
    eval_batch_size: int | None = None  # test images per evaluation batch: 64 on a CPU, 10000 on a GPU
    block_size: int | None = (
        None  # images per row block of a training batch: 32 on a CPU, the whole batch on a GPU and with --book
    )
    threads: int | None = None  # worker threads on a CPU: the cores this process may use (1: no pool); GPUs use none
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
        positive = ("batch_size", "kernels", "kernel_size", "train_size", "test_size", "test_every", "checkpoint_every")
        if self.epochs < 0:
            raise UserError(f"--epochs must be 0 or more, not {self.epochs}")
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")
        for name in ("eval_batch_size", "block_size", "threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")
        if self.book and self.block_size not in (None, self.batch_size):
            raise UserError("--book computes whole batches, as the notebook does; drop --block-size")
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
        kernel_alpha = self.alpha if self.book else KERNEL_RATE_FACTOR * self.alpha * self.batch_size
        recipe = {**(BOOK_RECIPE if self.book else DEFAULT_RECIPE), "kernel_alpha": kernel_alpha}
        chosen = {name: value for name, value in recipe.items() if getattr(self, name) is None}
        eval_batch_size = self.eval_batch_size or backends.default_eval_batch(self.backend, self.device)
        whole_batch = self.book or not backends.default_block_size(self.backend, self.device)
        block_size = self.block_size or (
            self.batch_size if whole_batch else backends.default_block_size(self.backend, self.device)
        )
        threads = self.threads or backends.default_threads(self.backend, self.device)
        return dataclasses.replace(
            self, dtype=dtype, eval_batch_size=eval_batch_size, block_size=block_size, threads=threads, **chosen
        )

    def random_kind(self) -> str:
        """The run's random source (see :mod:`rng`): the notebook's stream with --book, else --rng."""
        return "book" if self.book else self.rng

    def recipe(self) -> dict:
        """The fields that define the run (a resumed run must keep them), and the recipe's name."""
        return {"name": "book" if self.book else "default", **{name: getattr(self, name) for name in RECIPE_FIELDS}}


# What a run is: a resumed run must have the same values (epochs, evaluation and output may change).
RECIPE_FIELDS = (
    "book",
    "dtype",
    "rng",
    "seed",
    "alpha",
    "kernel_alpha",
    "kernel_init",
    "weight_init",
    "batch_size",
    "kernels",
    "kernel_size",
    "train_size",
)

# What each recipe fills in where the config leaves a field unset (None).
BOOK_RECIPE = {"kernel_init": 0.01, "weight_init": 0.1}
DEFAULT_RECIPE = {"kernel_init": 1.0, "weight_init": 0.01}
# The kernels' rate is KERNEL_RATE_FACTOR * alpha per image: the best of 256x-16384x alpha over seeds 1-10 (README).
KERNEL_RATE_FACTOR = 32


def output_side(kernel_size: int, book_recipe: bool) -> int:
    """Positions per side of the convolution: a valid one's, or the notebook's one fewer (erratum 1)."""
    return book.erratum_1_positions(kernel_size) if book_recipe else valid_positions(kernel_size)
