"""Array operations dispatched per training batch and per epoch, counted on the CPU: on a GPU each is (at least) one
kernel launch and a trip through Python, which is where a GPU epoch of this small network spends its time.

    python benchmarks/dispatches.py [--book] [--train-size 1000] [--test-size 10000]

The run trains on array-api-strict (whose namespace is the module itself, so every call the package makes goes
through it) with every public function of the module and every operator of its array type wrapped in a counter
(a call made inside another counted call is not counted again). Indexing (``x[a:b]``, a view, no kernel on most
libraries) is counted apart. The evaluation uses the GPU's chunk size (:data:`portable_cnn.backends.EVAL_BATCH`).
JAX compiles the step (and the evaluation's chunk) into one call each, so these counts are the eager libraries'
(cupy, torch); ``benchmarks/gpu_bench.py`` reports them beside the GPU timings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from portable_cnn import Callback, Config, load_mnist, train  # noqa: E402 (after the sys.path line)
from portable_cnn.backends import EVAL_BATCH  # noqa: E402

INDEXING = ("__getitem__", "__setitem__")
NOT_OPERATIONS = {"__init__", "__new__", "__getattribute__", "__setattr__", "__repr__", "__str__", "__format__"}


class Counter:
    """Counts the outermost calls of the wrapped functions: operations and indexing apart."""

    def __init__(self):
        self.operations, self.indexing, self._depth = 0, 0, 0

    def wrap(self, name: str, function):
        def counted(*args, **kwargs):
            if self._depth == 0:
                if name in INDEXING:
                    self.indexing += 1
                else:
                    self.operations += 1
            self._depth += 1
            try:
                return function(*args, **kwargs)
            finally:
                self._depth -= 1

        return counted

    def snapshot(self) -> tuple[int, int]:
        return self.operations, self.indexing


@contextlib.contextmanager
def counting(counter: Counter):
    """array-api-strict's functions and its array's operators wrapped in ``counter`` while inside."""
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


class PerPhase(Callback):
    """The counter's readings at the epoch's start, around each batch, and at its end (after the evaluation)."""

    def __init__(self, counter: Counter):
        self.counter, self.epochs, self._epoch = counter, [], None

    def on_epoch_begin(self, state):
        self._epoch = {"begin": self.counter.snapshot(), "batches": []}

    def on_batch_begin(self, state):
        self._batch = self.counter.snapshot()

    def on_batch_end(self, state, images):
        self._epoch["batches"].append((self._batch, self.counter.snapshot()))

    def on_epoch_end(self, state, record):
        self._epoch["end"] = self.counter.snapshot()
        self.epochs.append(self._epoch)


def count(book: bool, train_size: int, test_size: int, epochs: int = 2) -> dict:
    """Per batch (the median batch), per epoch, and the epoch's other parts: masks before the first batch, and the
    evaluation with the epoch's one stacked read after the last; from the last of ``epochs`` epochs."""
    config = Config(
        epochs=epochs,
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
    phases = PerPhase(counter)
    mnist = load_mnist(None)
    with counting(counter):
        train(config, mnist, callbacks=(phases,))
    epoch = phases.epochs[-1]

    def between(first, last):
        return {"operations": last[0] - first[0], "indexing": last[1] - first[1]}

    batches = sorted((between(*batch) for batch in epoch["batches"]), key=lambda found: found["operations"])
    return {
        "recipe": "book" if book else "default",
        "batches_per_epoch": len(batches),
        "per_batch": batches[len(batches) // 2],
        "masks": between(epoch["begin"], epoch["batches"][0][0]),
        "evaluation_and_read": between(epoch["batches"][-1][1], epoch["end"]),
        "per_epoch": between(epoch["begin"], epoch["end"]),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/dispatches.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--book", action="store_true")
    parser.add_argument("--train-size", type=int, default=1000)
    parser.add_argument("--test-size", type=int, default=10000)
    args = parser.parse_args(argv)
    print(json.dumps(count(args.book, args.train_size, args.test_size), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
