"""Where the time goes: one training batch and one evaluation batch, stage by stage.

Each stage is one call of the package's own functions (the masks, ``ConvNet.forward``, ``ConvNet.backward``,
``SGD.step``; ``ConvNet.logits``'s parts) on numpy float32, with its FLOPs, timed in interleaved rounds; the whole step
is timed as one call too, to show what the stages leave out (Python, allocation, caches between stages).
"""

from __future__ import annotations

import numpy as np
from array_api_compat import numpy as xp

from portable_cnn import ops
from portable_cnn.backends import get_backend
from portable_cnn.config import Config
from portable_cnn.model import KEEP_PROB, NUM_CLASSES, ConvNet
from portable_cnn.optim import SGD
from portable_cnn.pool import one_blas_thread
from portable_cnn.rng import PortableRandom

from .timing import interleaved, summary, timed

SIDE, KERNEL_SIZE = 28, 3


def _stage(name, fn, flops=0):
    return {"stage": name, "fn": fn, "flops": flops}


def _model(recipe: Config, rng) -> ConvNet:
    """A float32 model initialised like the default recipe (with numpy's generator: values, not streams, matter)."""
    positions = SIDE - KERNEL_SIZE + 1

    def symmetric(shape, half_width):
        return (half_width * (2 * rng.random(shape) - 1)).astype(np.float32)

    kernels = symmetric((KERNEL_SIZE**2, recipe.kernels), recipe.kernel_init)
    weights = symmetric((positions * positions * recipe.kernels, NUM_CLASSES), recipe.weight_init)
    return ConvNet({"kernels": kernels, "weights": weights}, KERNEL_SIZE, positions)


def train_stages(batch: int = 128, kernels: int = 16, seed: int = 0):
    """The stages of one default-recipe training step, the step as one call, and their description."""
    recipe = Config(batch_size=batch, kernels=kernels).validated()
    rng = np.random.default_rng(seed)
    model = _model(recipe, rng)
    images = rng.random((batch, SIDE, SIDE), dtype=np.float32)
    targets = ops.one_hot(rng.integers(0, NUM_CLASSES, batch), NUM_CLASSES, xp.float32)
    random = PortableRandom(get_backend("numpy"), seed)
    hidden = model.hidden_size
    divisor = batch * batch
    optimiser = SGD.of(model.learning_rates(recipe))

    def mask():
        return next(iter(random.keep_masks([(batch, hidden)], KEEP_PROB)))

    keep = mask()
    probabilities, cache = model.forward(images, keep)
    gradients = model.backward(cache, probabilities, targets, divisor)
    conv_flops = 2 * cache.windows.shape[0] * KERNEL_SIZE**2 * kernels
    dense_flops = 2 * batch * hidden * NUM_CLASSES

    def update():
        optimiser.step(model.params, gradients)  # new arrays: the model keeps the same parameters every round

    stages = [
        _stage("dropout mask (Philox)", mask),
        _stage(
            "forward (im2col, conv, tanh, dropout, dense, softmax)",
            lambda: model.forward(images, keep),
            conv_flops + dense_flops,
        ),
        _stage(
            "backward (deltas, weight and kernel gradients)",
            lambda: model.backward(cache, probabilities, targets, divisor),
            conv_flops + 2 * dense_flops,
        ),
        _stage("SGD update", update),
    ]

    def whole():
        step_probabilities, step_cache = model.forward(images, mask())
        optimiser.step(model.params, model.backward(step_cache, step_probabilities, targets, divisor))

    return stages, whole, f"default recipe, batch {batch}, {kernels} kernels"


def eval_stages(batch: int = 128, kernels: int = 16, seed: int = 0):
    """The stages of ``ConvNet.logits`` (feature maps, then scores) and the accuracy count for one evaluation batch."""
    rng = np.random.default_rng(seed)
    model = _model(Config(kernels=kernels).validated(), rng)
    images = rng.random((batch, SIDE, SIDE), dtype=np.float32)
    labels = rng.integers(0, NUM_CLASSES, batch)
    planes = ops.patch_planes(images, KERNEL_SIZE, model.positions)
    maps = model.feature_maps(images)
    logits = model.scores(maps)
    conv_flops = 2 * planes.shape[1] * KERNEL_SIZE**2 * kernels
    dense_flops = 2 * batch * maps.shape[2] * kernels * NUM_CLASSES

    stages = [
        _stage("patch planes (im2col, transposed)", lambda: ops.patch_planes(images, KERNEL_SIZE, model.positions)),
        _stage("feature maps (im2col, conv, tanh)", lambda: model.feature_maps(images), conv_flops),
        _stage("scores (per-kernel products, summed)", lambda: model.scores(maps), dense_flops),
        _stage("arg-max + count", lambda: ops.count_correct(logits, labels)),
    ]
    return stages, lambda: ops.count_correct(model.logits(images), labels), f"batch {batch}, {kernels} kernels"


def profile(stages, whole, description: str, reps: int) -> dict:
    """Time the stages and the whole step in interleaved rounds."""
    calls = {stage["stage"]: stage["fn"] for stage in stages} | {"whole": whole}
    samples = interleaved({name: reps for name in calls}, lambda name: {"ms": 1e3 * timed(calls[name], lambda: None)})
    rows = [
        {"stage": stage["stage"], "ms": summary([s["ms"] for s in samples[stage["stage"]]]), "flops": stage["flops"]}
        for stage in stages
    ]
    return {"description": description, "stages": rows, "whole_ms": summary([s["ms"] for s in samples["whole"]])}


def run(reps: int, recipe: Config) -> dict:
    """Both profiles for a validated ``recipe``, with the batches of an epoch; BLAS on one thread, as portable-cnn
    runs it."""
    with one_blas_thread():
        training = profile(*train_stages(recipe.batch_size, recipe.kernels), reps)
        evaluation = profile(*eval_stages(recipe.eval_batch_size, recipe.kernels), reps)
    training["batches_per_epoch"] = recipe.train_size / recipe.batch_size
    evaluation["batches_per_epoch"] = recipe.test_size / recipe.eval_batch_size
    return {"training batch": training, "evaluation batch": evaluation}
