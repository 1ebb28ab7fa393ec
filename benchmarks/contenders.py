"""The contenders, each built ready to time behind ``train_epoch()``, ``evaluate()`` and ``sync()`` (portable-cnn
through its own ``trainer.fit``, one epoch a call), their FLOPs (2 per multiply-add of the network's five products:
tanh, dropout and softmax left out) and their figures side by side, with the targets.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from portable_cnn.backends import get_backend, workers
from portable_cnn.callbacks import Callback
from portable_cnn.config import Config, output_side
from portable_cnn.rng import make_random
from portable_cnn.trainer import Position, RunSteps, batches, correct_predictions, fit, init_model, to_device

from .floor import Floor, epoch_work, work_flops
from .timing import interleaved, paired_ratios, summary, timed

NUM_CLASSES = 10
BASELINE = "numpy-f32"  # portable-cnn's default, the row every other row is compared with
NOTEBOOK = "notebook"


def train_flops_per_image(positions: int, kernel_size: int = 3, kernels: int = 16) -> int:
    """Conv forward and kernel gradient (``2·P·P·k·k·K`` each), dense forward, back-propagation and weight gradient
    (``2·H·10`` each, ``H = P·P·K``)."""
    conv, dense = 2 * positions**2 * kernel_size**2 * kernels, 2 * positions**2 * kernels * NUM_CLASSES
    return 2 * conv + 3 * dense


def eval_flops_per_image(positions: int, kernel_size: int = 3, kernels: int = 16) -> int:
    """Conv forward + dense forward."""
    return positions**2 * kernels * (2 * kernel_size**2 + 2 * NUM_CLASSES)


@dataclass
class Contender:
    key: str
    label: str
    dtype: str
    images_trained: int  # per epoch (the book drops the last partial batch)
    images_tested: int
    train_flops: int  # per epoch
    eval_flops: int
    train_epoch: Callable[[], object]
    evaluate: Callable[[], object]
    sync: Callable[[], None]
    floor: str | None = None  # the key of the floor row this contender's epoch is measured against
    callbacks: list | None = None  # portable-cnn's: more callbacks of its training epoch (gpu_bench's phase timer)


def _no_sync():
    pass


class _StopAfterAnEpoch(Callback):
    """Ends fit() after one epoch (before the next one draws its masks)."""

    def on_epoch_end(self, state, record):
        state.stop_training = True


def notebook(mnist, key: str, label: str) -> Contender:
    """The seed notebook's own code (benchmarks/reference/notebook_cnn.py)."""
    from .reference.notebook_cnn import Notebook

    book = Notebook(mnist.train_images, mnist.train_labels, mnist.test_images, mnist.test_labels)
    positions = book.input_rows - book.kernel_rows
    trained, tested = len(book.images) // book.batch_size * book.batch_size, len(book.test_images)
    train_flops, eval_flops = trained * train_flops_per_image(positions), tested * eval_flops_per_image(positions)
    return Contender(
        key, label, "float64", trained, tested, train_flops, eval_flops, book.train_epoch, book.evaluate, _no_sync
    )


def floor(mnist, key: str, label: str, **settings) -> Contender:
    """The unavoidable work (:mod:`benchmarks.floor`) of an epoch of the default recipe and ``settings``."""
    config = Config(**settings).validated()
    sizes = min(config.train_size, len(mnist.train_images)), min(config.test_size, len(mnist.test_images))
    units = epoch_work(
        *sizes, config.batch_size, config.block_size, config.eval_batch_size, config.kernel_size, config.kernels
    )
    work = Floor(units, config.threads, config.dtype)
    work.warm()
    trained, tested = (sum(unit.images for unit in units if unit.phase == phase) for phase in ("train", "eval"))
    train_flops, eval_flops = work_flops(units, "train"), work_flops(units, "eval")
    train, test = (lambda: work.run("train")), (lambda: work.run("eval"))
    return Contender(key, label, config.dtype, trained, tested, train_flops, eval_flops, train, test, _no_sync)


def portable(mnist, key: str, label: str, floor_key: str | None = None, **settings) -> Contender:
    """portable-cnn through its library API; ``settings`` are :class:`~portable_cnn.config.Config` fields."""
    # Never the last epoch and never due for a test (epochs from 1): fit() then trains only; evaluate() is apart.
    config = Config(epochs=2**62, test_every=2**62, quiet=True, **settings).validated()
    backend = get_backend(config.backend, config.device)
    with backend.activated():
        data = to_device(mnist, config, backend)
        random_source = make_random(config.random_kind(), backend, config.seed)
        model = init_model(config, random_source)
    steps = RunSteps.build(config, model)  # one run, an epoch a fit() call: compiled (jax) once, not every epoch
    epochs, callbacks = itertools.count(1), []
    positions = output_side(config.kernel_size, config.book)
    trained, tested = batches(config, data.train_size)[-1][1], data.test_images.shape[0]
    pool = workers(config.backend, config.device, config.threads)

    def train_epoch():
        with backend.activated():
            stop = [_StopAfterAnEpoch(), *callbacks]
            return fit(model, data, config, random_source, stop, [], Position(next(epochs)), steps)

    def test():
        with backend.activated():
            images, labels = data.test_images, data.test_labels
            return int(correct_predictions(model, images, labels, config.eval_batch_size, pool, steps=steps))

    train_flops = trained * train_flops_per_image(positions, config.kernel_size, config.kernels)
    eval_flops = tested * eval_flops_per_image(positions, config.kernel_size, config.kernels)
    return Contender(
        key,
        label,
        config.dtype,
        trained,
        tested,
        train_flops,
        eval_flops,
        train_epoch,
        test,
        backend.sync,
        floor_key,
        callbacks,
    )


def pytorch(mnist, key: str, label: str, device: str, **settings) -> Contender:
    """The idiomatic PyTorch peer (benchmarks/torch_peer.py) on portable-cnn's default recipe and ``settings``."""
    from .torch_peer import TorchPeer

    peer = TorchPeer(mnist, device=device, **settings)
    recipe = Config(backend="torch", device=device, **settings).validated()
    positions = output_side(recipe.kernel_size, book_recipe=False)
    trained, tested = peer.train_images.shape[0], peer.test_images.shape[0]
    train_flops = trained * train_flops_per_image(positions, recipe.kernel_size, recipe.kernels)
    eval_flops = tested * eval_flops_per_image(positions, recipe.kernel_size, recipe.kernels)
    return Contender(
        key, label, recipe.dtype, trained, tested, train_flops, eval_flops, peer.train_epoch, peer.evaluate, peer.sync
    )


# The table's rows, in its order: (label, factory, settings). GPU runs are benchmarks/gpu_bench.py's.
CONTENDERS = {
    "notebook": ("notebook (seed code) float64", notebook, {}),
    "numpy-f32": ("portable-cnn numpy float32", portable, {"floor_key": "floor"}),
    "numpy-f32-threads1": (
        "portable-cnn numpy float32 --threads 1",
        portable,
        {"threads": 1, "floor_key": "floor-threads1"},
    ),
    "numpy-f32-native": ("portable-cnn numpy float32 --rng native", portable, {"rng": "native"}),
    "numpy-f64": ("portable-cnn numpy float64", portable, {"dtype": "float64"}),
    "numpy-book": ("portable-cnn numpy --book", portable, {"book": True}),
    "torch-f32": ("portable-cnn torch CPU float32", portable, {"backend": "torch", "device": "cpu"}),
    "strict-f32": ("portable-cnn array-api-strict float32", portable, {"backend": "array-api-strict"}),
    "jax-f32": ("portable-cnn jax CPU float32 (jit step)", portable, {"backend": "jax", "device": "cpu"}),
    "pytorch": ("PyTorch idiomatic CPU float32", pytorch, {"device": "cpu"}),
    "floor": ("floor: the epoch's matmuls and tanh alone, float32", floor, {}),
    "floor-threads1": ("floor on one thread", floor, {"threads": 1}),
}


def build(key: str, mnist, threads: int | None = None, **overrides) -> Contender:
    """The contender ``key`` of :data:`CONTENDERS`; ``overrides`` are Config fields (batch_size, kernels, ...);
    ``threads`` (run.py --threads) sets portable-cnn's workers where the row does not fix them."""
    label, factory, settings = CONTENDERS[key]
    settings = {**settings, **overrides}
    if threads and factory in (portable, floor):
        settings.setdefault("threads", threads)
    if factory is notebook and settings:
        raise ValueError(f"the notebook's code has fixed settings; cannot change {sorted(settings)}")
    return factory(mnist, key, label, **settings)


def measure(contenders: dict, rounds: dict[str, int], peaks: dict[str, float], warmup: int = 1, log=print) -> dict:
    """Every contender timed in interleaved rounds (``rounds``: how many each takes part in), and its figures
    (``peaks``: the GEMM peak in GFLOP/s per dtype)."""

    def run_once(key):
        contender = contenders[key]
        train = timed(contender.train_epoch, contender.sync)
        test = timed(contender.evaluate, contender.sync)
        log(f"  {key:>12}: train {train:8.3f} s   eval {test:8.3f} s")
        return {"train": train, "eval": test, "epoch": train + test}

    samples = interleaved(rounds, run_once, warmup)
    return {key: figures(contenders[key], samples, key, peaks) for key in contenders}


def figures(contender: Contender, samples: dict[str, list[dict]], key: str, peaks: dict[str, float]) -> dict:
    """A contender's row: times (median, min, max), images/s, GFLOP/s, share of peak, ratios."""
    own = samples[key]
    train, test, epoch = (summary([s[phase] for s in own]) for phase in ("train", "eval", "epoch"))
    gflops = (contender.train_flops + contender.eval_flops) / epoch["median"] / 1e9
    row = {
        "label": contender.label,
        "dtype": contender.dtype,
        "images_trained": contender.images_trained,
        "images_tested": contender.images_tested,
        "train_flops": contender.train_flops,
        "eval_flops": contender.eval_flops,
        "samples": own,
        "train_s": train,
        "eval_s": test,
        "epoch_s": epoch,
        "train_images_per_s": contender.images_trained / train["median"],
        "eval_images_per_s": contender.images_tested / test["median"],
        "gflops": gflops,
        "share_of_gemm_peak": gflops / peaks[contender.dtype],
    }
    if NOTEBOOK in samples and key != NOTEBOOK:
        row["speedup_vs_notebook"] = summary(paired_ratios(samples[NOTEBOOK], own, "epoch"))
    if BASELINE in samples and key != BASELINE:
        row["time_vs_baseline"] = summary(paired_ratios(own, samples[BASELINE], "epoch"))
    if contender.floor in samples:
        row["time_vs_floor"] = summary(paired_ratios(own, samples[contender.floor], "epoch"))
    return row


def targets(rows: dict) -> list[dict]:
    """The CPU targets, judged on the medians of the pairwise ratios of this one run (``at_most``: lower is better)."""
    checks = [
        ("numpy float32 epoch >= 50x faster than the notebook", BASELINE, "speedup_vs_notebook", 50.0, False),
        ("numpy float32 epoch >= 2.5x faster than idiomatic PyTorch CPU", "pytorch", "time_vs_baseline", 2.5, False),
        ("numpy float32 epoch <= 1.5x the unavoidable-work floor", BASELINE, "time_vs_floor", 1.5, True),
    ]
    out = []
    for name, key, field_name, goal, at_most in checks:
        ratio = rows.get(key, {}).get(field_name)
        if ratio is not None:
            met = ratio["median"] <= goal if at_most else ratio["median"] >= goal
            out.append({"target": name, "goal": goal, "ratio": ratio, "met": met})
    return out
