"""Facts of the training math that the mutation check (benchmarks/mutants.py) found no other fast test stating:
each test here kills mutants of ops.py, model.py, rng.py or philox.py that survived the rest of the suite."""

import dataclasses

import numpy as np
import pytest

from portable_cnn import UserError, get_backend, philox
from portable_cnn.backends import NativeGenerator, to_host
from portable_cnn.model import ConvNet, valid_positions
from portable_cnn.rng import BookRandom, NativeRandom, PortableRandom

from .conftest import backend_or_skip


def test_a_valid_convolution_of_28x28_has_28_minus_k_plus_1_positions_a_side():
    assert [valid_positions(k) for k in (1, 3, 5, 28)] == [28, 26, 24, 1]


@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_predict_in_batches_is_the_argmax_of_every_images_scores(library):
    """40 images in batches of 16 (the last one short): one prediction each, the arg-max of its scores, from 0-255
    integers or from floats already scaled."""
    backend = backend_or_skip(library)
    rng = np.random.default_rng(1)
    kernels, weights = rng.normal(0, 0.3, (9, 4)), rng.normal(0, 0.3, (26 * 26 * 4, 10))
    model = ConvNet({"kernels": backend.asarray(kernels), "weights": backend.asarray(weights)}, 3, 26)
    images = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8)
    expected = np.argmax(to_host(model.logits(backend.asarray(images / 255))), axis=-1)
    assert expected.shape == (40,) and len(set(expected.tolist())) > 1
    np.testing.assert_array_equal(to_host(model.predict(images, batch_size=16)), expected)
    np.testing.assert_array_equal(to_host(model.predict(images / 255, batch_size=16)), expected)


def test_initialisation_draws_take_philox_streams_1_then_2():
    """Stream 0 is the dropout masks'; the kernels' draw is stream 1 and the weights' stream 2, at step 0."""
    backend = get_backend("numpy")
    source = PortableRandom(backend, 7)
    for stream, shape in ((1, (9, 4)), (2, (5, 10))):
        drawn = to_host(source.uniform(shape, "float32"))
        expected = philox.uniform(backend.xp, shape, seed=7, stream=stream, step=0, dtype=backend.xp.float32)
        np.testing.assert_array_equal(drawn, to_host(expected))


@pytest.mark.parametrize("source", [BookRandom, PortableRandom, NativeRandom])
def test_a_random_state_of_another_kind_is_refused_in_one_line(source):
    backend = get_backend("numpy")
    others = [kind(backend, 1).state() for kind in (BookRandom, PortableRandom, NativeRandom) if kind is not source]
    for state in (*others, ["not", "a", "state"]):
        with pytest.raises(UserError, match="^the checkpoint's random state is of kind '(book|portable|native|list)'"):
            source(backend, 1).restore(state)


def test_a_native_mask_keeps_the_draws_below_keep_prob_only():
    """Uniform draws in [0, 1) kept where < keep_prob: P(keep) is keep_prob exactly (a draw equal to it drops)."""
    backend = get_backend("numpy")
    draws = np.array([[0.0, 0.4999999, 0.5, 0.75]], dtype=np.float32)
    fixed = NativeGenerator("fixed", lambda shape, dtype, to_device: to_device(draws), lambda: None, lambda state: None)
    library = dataclasses.replace(backend.library, native=lambda module, device, seed: fixed)
    [mask] = NativeRandom(dataclasses.replace(backend, library=library), 1).keep_masks([(1, 4)], 0.5)
    np.testing.assert_array_equal(to_host(mask), [[True, True, False, False]])


def test_a_runs_first_masks_are_philox_stream_0_from_step_0():
    """The default recipe's dropout: stream 0 of the run's seed, the first batch at counter step 0."""
    backend = get_backend("numpy")
    shapes = [(2, 40), (2, 40)]
    drawn = PortableRandom(backend, 5).keep_masks(shapes, 0.5)
    expected = philox.bernoulli_steps(backend.xp, shapes, 0.5, seed=5, stream=0, first_step=0)
    for mask, wanted in zip(drawn, expected, strict=True):
        np.testing.assert_array_equal(to_host(mask), to_host(wanted))
