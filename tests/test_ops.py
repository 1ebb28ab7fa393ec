"""The array-API math against plain-loop references, and finite-difference gradient checks."""

import numpy as np
import pytest

from portable_cnn import book, ops
from portable_cnn.backends import to_host
from portable_cnn.model import KEEP_PROB, NUM_CLASSES, ConvNet
from portable_cnn.optim import SGD


def reference_windows(images, k, positions):
    """One window per output position, in (image, row, column) order: the notebook's loops."""
    return np.array(
        [
            images[b, r : r + k, c : c + k].ravel()
            for b in range(len(images))
            for r in range(positions)
            for c in range(positions)
        ]
    )


@pytest.fixture
def tiny(backend):
    """A tiny float64 problem: 3 images 7x7 (as if 28x28 were that small), kernel 3, 2 kernels."""
    rng = np.random.default_rng(0)
    host = {
        "images": rng.random((3, 7, 7)),
        "kernels": rng.normal(0, 0.5, (9, 2)),
        "weights": rng.normal(0, 0.5, (5 * 5 * 2, NUM_CLASSES)),
        "labels": np.array([3, 0, 9]),
        "keep": rng.random((3, 5 * 5 * 2)) < KEEP_PROB,
    }
    on_device = {name: backend.asarray(value) for name, value in host.items()}
    return backend, host, on_device


def test_patches_match_the_notebooks_loops(tiny):
    backend, host, dev = tiny
    windows = ops.patches(dev["images"], 3, 5)
    np.testing.assert_array_equal(to_host(windows), reference_windows(host["images"], 3, 5))
    np.testing.assert_array_equal(to_host(ops.patch_planes(dev["images"], 3, 5)), to_host(windows).T)


def test_book_positions_visit_one_fewer_row_and_column(tiny):
    backend, host, dev = tiny
    windows = ops.patches(dev["images"], 3, 4)
    np.testing.assert_array_equal(to_host(windows), reference_windows(host["images"], 3, 4))


def test_conv_is_a_valid_cross_correlation(tiny):
    backend, host, dev = tiny
    out = to_host(ops.conv(ops.patches(dev["images"], 3, 5), dev["kernels"], 3)).reshape(3, 5, 5, 2)
    image, kernel = host["images"][1], host["kernels"][:, 1].reshape(3, 3)
    direct = sum(image[dr : dr + 5, dc : dc + 5] * kernel[dr, dc] for dr in range(3) for dc in range(3))
    np.testing.assert_allclose(out[1, :, :, 1], direct, rtol=1e-12)


def test_softmax_is_stable_and_normalised(backend):
    logits = backend.asarray(np.array([[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0]]))
    probabilities = to_host(ops.softmax(logits))
    assert np.all(np.isfinite(probabilities))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    np.testing.assert_allclose(probabilities[1], np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum())
    np.testing.assert_allclose(to_host(ops.book_softmax(logits[1:, ...]))[0], probabilities[1])


def test_one_hot_counts_and_loss(backend):
    labels = backend.asarray(np.array([2, 0, 1]))
    targets = ops.one_hot(labels, 3, backend.dtype("float64"))
    np.testing.assert_array_equal(to_host(targets), np.eye(3)[[2, 0, 1]])
    scores = backend.asarray(np.array([[0.1, 0.2, 0.7], [0.5, 0.4, 0.1], [0.9, 0.05, 0.05]]))
    assert int(ops.count_correct(scores, labels)) == 2
    floor = ops.probability_floor(scores)
    assert float(ops.cross_entropy_sum(scores, targets, floor)) == pytest.approx(-np.log([0.7, 0.5, 0.05]).sum())
    certain = backend.asarray(np.array([[0.0, 1.0, 0.0]]))  # a zero probability on the label: large, not infinite
    assert float(ops.cross_entropy_sum(certain, targets[:1, ...], floor)) == pytest.approx(
        -np.log(np.finfo(np.float64).tiny)
    )


def test_slices_cover_every_item_once():
    assert ops.slices(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert ops.slices(8, 4) == [(0, 4), (4, 8)] and ops.slices(0, 4) == []


def model_of(dev, positions=5):
    return ConvNet({"kernels": dev["kernels"], "weights": dev["weights"]}, kernel_size=3, positions=positions)


def test_kernel_major_logits_equal_the_notebooks_layout(tiny):
    backend, host, dev = tiny
    model = model_of(dev)
    direct = model.features(dev["images"])[1] @ dev["weights"]
    np.testing.assert_allclose(to_host(model.logits(dev["images"])), to_host(direct), rtol=1e-12, atol=1e-12)


def summed_loss(host, kernels, weights):
    """The training loss with the same dropout mask, in plain numpy float64."""
    windows = reference_windows(host["images"], 3, 5)
    hidden = np.tanh((windows @ kernels).reshape(3, -1)) * host["keep"] / KEEP_PROB
    logits = hidden @ weights
    logits -= logits.max(axis=1, keepdims=True)
    log_probabilities = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -log_probabilities[np.arange(3), host["labels"]].sum()


def numerical_gradient(f, x, h=1e-6):
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[index] += h
        down[index] -= h
        grad[index] = (f(up) - f(down)) / (2 * h)
    return grad


def test_backward_matches_finite_differences(tiny):
    """backward() gives the gradients of the summed loss (divided by ``divisor``), checked in float64."""
    backend, host, dev = tiny
    model = model_of(dev)
    targets = ops.one_hot(dev["labels"], NUM_CLASSES, backend.dtype("float64"))
    probabilities, cache = model.forward(dev["images"], dev["keep"])
    gradients = model.backward(cache, probabilities, targets)
    expected_kernels = numerical_gradient(lambda k: summed_loss(host, k, host["weights"]), host["kernels"])
    expected_weights = numerical_gradient(lambda w: summed_loss(host, host["kernels"], w), host["weights"])
    np.testing.assert_allclose(to_host(gradients["kernels"]), expected_kernels, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(to_host(gradients["weights"]), expected_weights, rtol=1e-6, atol=1e-8)
    halved = model.backward(cache, probabilities, targets, divisor=2)
    np.testing.assert_allclose(to_host(halved["weights"]), expected_weights / 2, rtol=1e-6, atol=1e-8)


def test_products_by_image_and_by_slice_equal_the_single_products(tiny):
    """The forms that let numpy release the GIL compute the same sums as the single products."""
    backend, host, dev = tiny
    windows = ops.patches(dev["images"], 3, 5)
    hidden_delta = backend.asarray(np.random.default_rng(1).normal(size=(3, 5 * 5 * 2)))
    np.testing.assert_allclose(
        to_host(ops.conv_kernel_gradient_by_image(windows, hidden_delta, 2)),
        to_host(ops.conv_kernel_gradient(windows, hidden_delta, 2)),
        rtol=1e-12,
        atol=1e-14,
    )
    hidden = backend.asarray(np.random.default_rng(2).normal(size=(3, 50)))
    for slices in (1, 2, 5):
        np.testing.assert_allclose(
            to_host(ops.dense_in_slices(hidden, dev["weights"], slices)),
            to_host(hidden) @ host["weights"],
            rtol=1e-12,
            atol=1e-14,
        )


@pytest.mark.parametrize("block_size", [1, 2, 3])
def test_blocked_gradients_are_the_batchs_gradients(tiny, block_size):
    backend, host, dev = tiny
    model = model_of(dev)
    targets = ops.one_hot(dev["labels"], NUM_CLASSES, backend.dtype("float64"))
    probabilities, cache = model.forward(dev["images"], dev["keep"])
    whole = model.backward(cache, probabilities, targets, divisor=6)
    blocked_probabilities, blocked = model.gradients(dev["images"], dev["keep"], targets, 6, block_size)
    np.testing.assert_allclose(to_host(blocked_probabilities), to_host(probabilities), rtol=1e-12, atol=1e-15)
    for name in ("kernels", "weights"):
        np.testing.assert_allclose(to_host(blocked[name]), to_host(whole[name]), rtol=1e-12, atol=1e-15)


def test_sgd_steps_each_layer_down_its_gradient_at_its_rate(tiny):
    backend, host, dev = tiny
    model = model_of(dev)
    ones = {"kernels": backend.asarray(np.ones((9, 2))), "weights": backend.asarray(np.ones((50, NUM_CLASSES)))}
    model.params = SGD.of({"kernels": 0.25, "weights": 0.5}).step(model.params, ones)
    np.testing.assert_array_equal(to_host(model.kernels), host["kernels"] - 0.25)
    np.testing.assert_array_equal(to_host(model.weights), host["weights"] - 0.5)


def test_book_step_keeps_the_notebooks_errata(tiny):
    """The --book step: kernels move the other way (erratum 2), tanh' is taken after dropout's x2 (erratum 3)."""
    backend, host, dev = tiny
    model = model_of(dev)
    targets = ops.one_hot(dev["labels"], NUM_CLASSES, backend.dtype("float64"))
    probabilities, cache = book.forward(model, dev["images"], dev["keep"])
    gradients = book.backward(model, cache, probabilities, targets)
    model.params = SGD.of({"kernels": 1.0, "weights": 1.0}).step(model.params, gradients)

    windows = reference_windows(host["images"], 3, 5)
    layer_1 = np.tanh((windows @ host["kernels"]).reshape(3, -1)) * (host["keep"] * 2)
    layer_2 = np.exp(layer_1 @ host["weights"])
    layer_2 /= layer_2.sum(axis=1, keepdims=True)
    layer_2_delta = np.eye(NUM_CLASSES)[host["labels"]] - layer_2
    layer_1_delta = layer_2_delta @ host["weights"].T * (1 - layer_1**2) * host["keep"]
    kernels = host["kernels"] - windows.T @ layer_1_delta.reshape(-1, 2)
    np.testing.assert_allclose(to_host(model.kernels), kernels, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        to_host(model.weights), host["weights"] + layer_1.T @ layer_2_delta, rtol=1e-12, atol=1e-12
    )
