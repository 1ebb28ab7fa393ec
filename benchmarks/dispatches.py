"""Array operations per training batch and per epoch, counted on the CPU: on a GPU each is at least one kernel
launch and a trip through Python, which is where a GPU epoch of this small network spends its time.

    python benchmarks/dispatches.py [--book]

1000 images trained and 10000 evaluated on array-api-strict (its namespace is the module itself, so every call the
package makes goes through it) with a GPU's settings: whole batches, the evaluation in ``EVAL_BATCH["gpu"]`` chunks.
Every public function of the module and every operator of its array type is counted, a call inside a counted call
not again; indexing (a view: no kernel on most libraries) apart. JAX compiles the step into one call, so these are
cupy's and torch's counts; ``benchmarks/gpu_bench.py`` prints them beside the GPU timings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from portable_cnn import Callback, Config, load_mnist, train  # noqa: E402 (after the sys.path line)
from portable_cnn.backends import EVAL_BATCH  # noqa: E402

INDEXING = ("__getitem__", "__setitem__")
NOT_OPERATIONS = {"__init__", "__new__", "__getattribute__", "__setattr__", "__repr__", "__str__", "__format__"}


class Counter:
    """The outermost calls of the wrapped functions: (operations, indexing)."""

    def __init__(self):
        self._counts, self._depth = [0, 0], 0

    def wrap(self, name: str, function):
        def counted(*args, **kwargs):
            if self._depth == 0:
                self._counts[name in INDEXING] += 1
            self._depth += 1
            try:
                return function(*args, **kwargs)
            finally:
                self._depth -= 1

        return counted

    def snapshot(self) -> tuple[int, int]:
        return tuple(self._counts)


@contextlib.contextmanager
def counting(counter: Counter):
    """array-api-strict's functions and its array's operators counted by ``counter`` while inside."""
    import array_api_strict as strict

    array = type(strict.asarray(0.0))
    saved = []
    for owner, names in (
        (strict, [name for name in dir(strict) if not name.startswith("_")]),
        (array, [name for name in vars(array) if name.startswith("__") and name not in NOT_OPERATIONS]),
    ):
        for name in names:
            value = getattr(owner, name)
            if callable(value) and not isinstance(value, type):
                saved.append((owner, name, value))
                setattr(owner, name, counter.wrap(name, value))
    try:
        yield counter
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


class Marks(Callback):
    """The counter's readings of the last epoch: at its start, before and after each batch, at its end."""

    def __init__(self, counter: Counter):
        self.counter, self.marks = counter, []

    def on_epoch_begin(self, state):
        self.marks = [self.counter.snapshot()]

    def on_batch_begin(self, state):
        self.marks.append(self.counter.snapshot())

    def on_batch_end(self, state, images):
        self.marks.append(self.counter.snapshot())

    def on_epoch_end(self, state, record):
        self.marks.append(self.counter.snapshot())


def count(book: bool, train_size: int = 1000, test_size: int = 10000) -> dict:
    """The second epoch's counts: per batch (the median batch), the masks (before the first batch), the evaluation
    and the epoch's one stacked read (after the last batch), the whole epoch."""
    config = Config(
        epochs=2,
        train_size=train_size,
        test_size=test_size,
        book=book,
        dtype="float64" if book else "float32",
        backend="array-api-strict",
        threads=1,
        block_size=128,  # a GPU's whole batch (the default batch size), not a CPU's row blocks
        eval_batch_size=EVAL_BATCH["gpu"],
        quiet=True,
    )
    counter = Counter()
    marks = Marks(counter)
    with counting(counter):
        train(config, load_mnist(None), callbacks=(marks,))
    begin, *batches, end = marks.marks

    def between(first, last):
        return {"operations": last[0] - first[0], "indexing": last[1] - first[1]}

    steps = sorted((between(*pair) for pair in zip(batches[::2], batches[1::2])), key=lambda step: step["operations"])
    return {
        "recipe": "book" if book else "default",
        "batches_per_epoch": len(steps),
        "per_batch": steps[len(steps) // 2],
        "masks": between(begin, batches[0]),
        "evaluation_and_read": between(batches[-1], end),
        "per_epoch": between(begin, end),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="benchmarks/dispatches.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--book", action="store_true", help="the --book recipe (float64, masks from the host)")
    print(json.dumps(count(parser.parse_args().book), indent=1))
