"""The contenders, each built ready to time: data on its device, model initialised.

Every contender exposes the same two calls, ``train_epoch()`` (1000 images in batches of 128)
and ``evaluate()`` (all 10000 test images), plus ``sync()`` for honest timers on a GPU.
portable-cnn is driven through its own training loop (``portable_cnn.trainer.fit``, one epoch a call).
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

from . import flops
from .floor import Floor, epoch_work, work_flops


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


def _no_sync():
    pass


class _StopAfterAnEpoch(Callback):
    """Ends fit() after one epoch (before the next one draws its masks)."""

    def on_epoch_end(self, state, record):
        state.stop_training = True


def notebook(mnist, key: str, label: str, **overrides) -> Contender:
    """The seed notebook's own code (benchmarks/reference/notebook_cnn.py)."""
    if overrides:
        raise ValueError(f"the notebook's code has fixed settings; cannot change {sorted(overrides)}")
    from .reference.notebook_cnn import Notebook

    book = Notebook(mnist.train_images, mnist.train_labels, mnist.test_images, mnist.test_labels)
    positions = book.input_rows - book.kernel_rows
    trained = len(book.images) // book.batch_size * book.batch_size
    tested = len(book.test_images)
    return Contender(
        key,
        label,
        "float64",
        trained,
        tested,
        trained * flops.train_flops_per_image(positions),
        tested * flops.eval_flops_per_image(positions),
        book.train_epoch,
        book.evaluate,
        _no_sync,
    )


def floor(mnist, key: str, label: str, **settings) -> Contender:
    """The unavoidable work of an epoch of the default recipe and ``settings`` (:mod:`benchmarks.floor`): its
    blocks, evaluation chunks and threads."""
    config = Config(**settings).validated()
    units = epoch_work(
        min(config.train_size, len(mnist.train_images)),
        min(config.test_size, len(mnist.test_images)),
        config.batch_size,
        config.block_size,
        config.eval_batch_size,
        config.kernel_size,
        config.kernels,
    )
    work = Floor(units, config.threads, config.dtype)
    work.warm()
    trained, tested = (sum(unit.images for unit in units if unit.phase == phase) for phase in ("train", "eval"))
    return Contender(
        key,
        label,
        config.dtype,
        trained,
        tested,
        work_flops(units, "train"),
        work_flops(units, "eval"),
        lambda: work.run("train"),
        lambda: work.run("eval"),
        _no_sync,
    )


def portable(mnist, key: str, label: str, floor_key: str | None = None, **settings) -> Contender:
    """portable-cnn through its library API; ``settings`` are :class:`~portable_cnn.config.Config` fields."""
    # Never the last epoch and never due for a test (epochs from 1): fit() then trains only;
    # evaluate() is timed apart.
    config = Config(epochs=2**62, test_every=2**62, quiet=True, **settings).validated()
    backend = get_backend(config.backend, config.device)
    with backend.activated():
        data = to_device(mnist, config, backend)
        random_source = make_random(config.random_kind(), backend, config.seed)
        model = init_model(config, random_source)
    steps = RunSteps.build(config, model)  # one run, an epoch a fit() call: compiled (jax) once, not every epoch
    epochs = itertools.count(1)
    positions = output_side(config.kernel_size, config.book)
    trained, tested = batches(config, data.train_size)[-1][1], data.test_images.shape[0]
    one_epoch = [_StopAfterAnEpoch()]
    pool = workers(config.backend, config.device, config.threads)

    def train_epoch():
        with backend.activated():
            return fit(model, data, config, random_source, one_epoch, [], Position(next(epochs)), steps)

    def test():
        with backend.activated():
            return int(
                correct_predictions(model, data.test_images, data.test_labels, config.eval_batch_size, pool, steps)
            )

    return Contender(
        key,
        label,
        config.dtype,
        trained,
        tested,
        trained * flops.train_flops_per_image(positions, config.kernel_size, config.kernels),
        tested * flops.eval_flops_per_image(positions, config.kernel_size, config.kernels),
        train_epoch,
        test,
        backend.sync,
        floor_key,
    )


def pytorch(mnist, key: str, label: str, device: str, **settings) -> Contender:
    """The idiomatic PyTorch peer (benchmarks/torch_peer.py) on portable-cnn's default recipe and ``settings``."""
    from .torch_peer import TorchPeer

    peer = TorchPeer(mnist, device=device, **settings)
    recipe = Config(backend="torch", device=device, **settings).validated()
    positions = output_side(recipe.kernel_size, book_recipe=False)
    trained, tested = peer.train_images.shape[0], peer.test_images.shape[0]
    return Contender(
        key,
        label,
        recipe.dtype,
        trained,
        tested,
        trained * flops.train_flops_per_image(positions, recipe.kernel_size, recipe.kernels),
        tested * flops.eval_flops_per_image(positions, recipe.kernel_size, recipe.kernels),
        peer.train_epoch,
        peer.evaluate,
        peer.sync,
    )


@dataclass(frozen=True)
class Spec:
    label: str
    factory: Callable[..., Contender]
    settings: dict


# The table's rows, in its order (GPU runs are benchmarks/gpu_bench.py's).
CONTENDERS = {
    "notebook": Spec("notebook (seed code) float64", notebook, {}),
    "numpy-f32": Spec("portable-cnn numpy float32", portable, {"floor_key": "floor"}),
    "numpy-f32-threads1": Spec(
        "portable-cnn numpy float32 --threads 1", portable, {"threads": 1, "floor_key": "floor-threads1"}
    ),
    "numpy-f32-native": Spec("portable-cnn numpy float32 --rng native", portable, {"rng": "native"}),
    "numpy-f64": Spec("portable-cnn numpy float64", portable, {"dtype": "float64"}),
    "numpy-book": Spec("portable-cnn numpy --book", portable, {"book": True}),
    "torch-f32": Spec("portable-cnn torch CPU float32", portable, {"backend": "torch", "device": "cpu"}),
    "strict-f32": Spec("portable-cnn array-api-strict float32", portable, {"backend": "array-api-strict"}),
    "jax-f32": Spec("portable-cnn jax CPU float32 (jit step)", portable, {"backend": "jax", "device": "cpu"}),
    "pytorch": Spec("PyTorch idiomatic CPU float32", pytorch, {"device": "cpu"}),
    "floor": Spec("floor: the epoch's matmuls and tanh alone, float32", floor, {}),
    "floor-threads1": Spec("floor on one thread", floor, {"threads": 1}),
}


def build(key: str, mnist, threads: int | None = None, **overrides) -> Contender:
    """The contender ``key`` of :data:`CONTENDERS`; ``overrides`` are Config fields (batch_size, kernels, ...);
    ``threads`` (run.py --threads) sets portable-cnn's workers where the row does not fix them."""
    spec = CONTENDERS[key]
    settings = {**spec.settings, **overrides}
    if threads and spec.factory in (portable, floor):
        settings.setdefault("threads", threads)
    return spec.factory(mnist, key, spec.label, **settings)
