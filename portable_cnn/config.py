"""What a run is: the Config, each setting declared once with its help, choices, bounds and kind; its
validation; and the two recipes' defaults. The command line's flags (:mod:`flags`), a sweep's ``--set``
values, the checkpoint's recipe check and the README's flag table are all read from these declarations.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from . import backends, book
from .errors import UserError
from .model import IMAGE_SIDE, valid_positions

DTYPES = ("float32", "float64")
RNGS = ("portable", "native")
KINDS = {
    "recipe": "defines the run: a resumed run keeps its checkpoint's value",
    "run": "how and where it runs: a resumed run may change it",
    "files": "what it writes and reads: a resumed run may change it",
}
SWEEP_ROLES = ("knob", "flag", "none")  # in a sweep: a --set knob, a flag only, or neither (the sweep sets it)


def setting(
    default, help: str, kind: str = "run", *, choices=(), minimum=None, positive=False, sweep="knob", metavar=None
):
    """A Config field and its declaration: ``help`` (the flag's), ``kind`` (one of :data:`KINDS`), the values
    it takes (``choices``; ``minimum`` for whole numbers; ``positive`` for numbers), its role in a sweep
    (one of :data:`SWEEP_ROLES`) and the flag's ``metavar``."""
    assert kind in KINDS and sweep in SWEEP_ROLES
    metadata = {"help": help, "kind": kind, "choices": tuple(choices), "minimum": minimum, "positive": positive}
    return dataclasses.field(default=default, metadata={**metadata, "sweep": sweep, "metavar": metavar})


@dataclass
class Config:
    """Everything a run depends on, one field per command-line flag (the book's values by default)."""

    book: bool = setting(False, "reproduce the notebook bit for bit, errata included", "recipe")
    epochs: int = setting(300, "epochs in all, a resumed checkpoint's included", minimum=0)
    batch_size: int = setting(128, "images per training batch", "recipe", minimum=1)
    alpha: float = setting(2.0, "the dense layer's learning rate", "recipe", positive=True)
    kernel_alpha: float | None = setting(
        None,
        "the kernels' learning rate (default: alpha with --book, else 32 * alpha * batch size)",
        "recipe",
        positive=True,
    )
    kernel_init: float | None = setting(
        None, "kernels start U(-x, x) (default: 0.01 with --book, else 1)", "recipe", positive=True
    )
    weight_init: float | None = setting(
        None, "dense weights start U(-x, x) (default: 0.1 with --book, else 0.01)", "recipe", positive=True
    )
    kernels: int = setting(16, "number of conv kernels", "recipe", minimum=1)
    kernel_size: int = setting(3, "kernel side in pixels", "recipe", minimum=1)
    train_size: int = setting(1000, "first N training images", "recipe", minimum=1)
    test_size: int = setting(10000, "first N test images", minimum=1)
    seed: int = setting(1, "the random numbers' seed", "recipe", minimum=0, sweep="none")
    eval_batch_size: int | None = setting(
        None, "test images per evaluation batch (default 64 on a CPU, 10000 on a GPU)", minimum=1
    )
    block_size: int | None = setting(
        None,
        "images per row block of a training batch (default 32 on a CPU, the whole batch on a GPU and with --book)",
        minimum=1,
    )
    threads: int | None = setting(
        None, "worker threads on a CPU (default: the cores this process may use; 1: none)", minimum=1
    )
    dtype: str | None = setting(None, "float32 by default, float64 with --book", "recipe", choices=DTYPES)
    test_every: int = setting(1, "evaluate every N epochs (and after the last)", minimum=1)
    quiet: bool = setting(False, "print nothing while training", sweep="flag")
    backend: str = setting("numpy", "the array library", choices=backends.BACKENDS)
    device: str | None = setting(
        None,
        "cpu (the default), cuda or cuda:N (torch and cupy), device1 (array-api-strict)",
        sweep="flag",
        metavar="DEV",
    )
    data_dir: str | None = setting(
        None, "folder with the MNIST IDX files or mnist.npz", "files", sweep="flag", metavar="DIR"
    )
    rng: str = setting(
        "portable", "random numbers of the default recipe (--book: numpy's legacy stream)", "recipe", choices=RNGS
    )
    save: str | None = setting(
        None,
        "write a checkpoint (.npz) every --checkpoint-every epochs and at the end",
        "files",
        sweep="none",
        metavar="PATH",
    )
    resume: str | None = setting(
        None,
        "continue the run saved in PATH with its recipe and settings (flags given here override the settings; "
        "the recipe must match); it saves back to PATH unless --save is given",
        "files",
        sweep="none",
        metavar="PATH",
    )
    checkpoint_every: int = setting(10, "epochs between checkpoints", "files", minimum=1, sweep="flag")
    metrics: str | None = setting(
        None, "one row per epoch: CSV if PATH ends in .csv, JSON lines if .jsonl", "files", sweep="none", metavar="PATH"
    )
    progress: bool | None = setting(
        None, "a progress bar on stderr (default: when stderr is a terminal and not --quiet)", sweep="flag"
    )

    def validated(self) -> Config:
        """A copy with defaults filled in; raises UserError naming the first impossible value."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None and field.name != "dtype":
                check(field, value)
        if self.book and self.block_size not in (None, self.batch_size):
            raise UserError("--book computes whole batches, as the notebook does; drop --block-size")
        if output_side(self.kernel_size, self.book) < 1:
            raise UserError(f"--kernel-size {self.kernel_size} does not fit in a {IMAGE_SIDE}x{IMAGE_SIDE} image")
        dtype = self.dtype or ("float64" if self.book else "float32")
        check(FIELDS["dtype"], dtype)
        if self.book and dtype != "float64":
            raise UserError("--book reproduces the notebook in float64; drop --dtype or use --dtype float64")
        if self.book and self.batch_size > self.train_size:
            raise UserError("--book drops the last partial batch, so --batch-size must not exceed --train-size")
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

    @property
    def positions(self) -> int:
        """Positions per side of the convolution's output (see :func:`output_side`)."""
        return output_side(self.kernel_size, self.book)

    def random_kind(self) -> str:
        """The run's random source (see :mod:`rng`): the notebook's stream with --book, else --rng."""
        return "book" if self.book else self.rng

    def recipe(self) -> dict:
        """The fields that define the run (a resumed run must keep them), and the recipe's name."""
        return {"name": "book" if self.book else "default", **{name: getattr(self, name) for name in RECIPE_FIELDS}}


FIELDS = {field.name: field for field in dataclasses.fields(Config)}
# What a run is: a resumed run must have the same values (epochs, evaluation and output may change).
RECIPE_FIELDS = tuple(name for name, field in FIELDS.items() if field.metadata["kind"] == "recipe")
# What a sweep's --set may vary.
KNOBS = tuple(name for name, field in FIELDS.items() if field.metadata["sweep"] == "knob")

# What each recipe fills in where the config leaves a field unset (None).
BOOK_RECIPE = {"kernel_init": 0.01, "weight_init": 0.1}
DEFAULT_RECIPE = {"kernel_init": 1.0, "weight_init": 0.01}
# The kernels' rate is KERNEL_RATE_FACTOR * alpha per image: the best of 256x-16384x alpha over seeds 1-10 (README).
KERNEL_RATE_FACTOR = 32


def flag(name: str) -> str:
    """A field's command-line flag: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def value_type(field: dataclasses.Field) -> str:
    """``bool``, ``int``, ``float`` or ``str``: the field's type without its ``| None``."""
    return str(field.type).split("|")[0].strip()


def problem(field: dataclasses.Field, value) -> str | None:
    """What is wrong with ``value`` by the field's declared choices and bounds, or None."""
    meta = field.metadata
    if meta["choices"] and value not in meta["choices"]:
        return f"'{value}' is not one of: {', '.join(meta['choices'])}"
    if meta["minimum"] is not None and value < meta["minimum"]:
        bound = "0 or more" if meta["minimum"] == 0 else f"at least {meta['minimum']}"
        return f"must be {bound}, not {value}"
    if meta["positive"] and not (math.isfinite(value) and value > 0):
        return f"must be a positive number, not {value}"
    return None


def check(field: dataclasses.Field, value) -> None:
    """Raise UserError naming the flag if ``value`` is outside the field's declared choices or bounds."""
    wrong = problem(field, value)
    if wrong:
        raise UserError(f"{flag(field.name)} {wrong}")


BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def parse(name: str, text: str):
    """The value of field ``name`` written as ``text`` (a flag's argument, a sweep's ``--set`` value), checked
    against its declaration; ValueError says what is wrong with it."""
    field = FIELDS[name]
    kind = value_type(field)
    if kind == "bool":
        if text.lower() not in BOOLEANS:
            raise ValueError(f"'{text}' is not true or false")
        return BOOLEANS[text.lower()]
    readers = {"int": (int, "a whole number"), "float": (float, "a number"), "str": (str, "text")}
    reader, what = readers[kind]
    try:
        value = reader(text)
    except ValueError:
        raise ValueError(f"'{text}' is not {what}") from None
    wrong = problem(field, value)
    if wrong:
        raise ValueError(wrong)
    return value


def output_side(kernel_size: int, book_recipe: bool) -> int:
    """Positions per side of the convolution: a valid one's, or the notebook's one fewer (erratum 1)."""
    return book.erratum_1_positions(kernel_size) if book_recipe else valid_positions(kernel_size)
