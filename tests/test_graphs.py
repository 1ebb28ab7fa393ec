"""CUDA graphs, their bookkeeping checked on the CPU: a stand-in capture that behaves as a graph does (a launch reads
the static inputs as they are then and overwrites the static outputs) drives :class:`graphs.Replayed` and a whole
training run; the real capture (torch on a GPU) runs in tests/test_gpu.py."""

import dataclasses

import numpy as np
import pytest

from portable_cnn import Config, backends, graphs, train
from portable_cnn.backends import to_host

SMALL = Config(epochs=3, train_size=300, test_size=500, dtype="float64", quiet=True)


class StandIn:
    """``capture`` as a CUDA graph behaves, counting captures and launches; ``fails`` makes capturing raise."""

    def __init__(self, fails: bool = False):
        self.fails, self.captures, self.launches = fails, 0, 0

    def __call__(self, module, device, function, static_args):
        self.captures += 1
        if self.fails:
            raise RuntimeError("operation not permitted when stream is capturing")
        leaves, layout = graphs._flatten(function(*static_args))
        arrays = (np.asarray(leaf) if isinstance(leaf, np.generic) else leaf for leaf in leaves)  # numpy's scalars
        outputs = graphs._unflatten(layout, arrays)

        def launch():
            self.launches += 1
            for output, fresh in zip(graphs._flatten(outputs)[0], graphs._flatten(function(*static_args))[0]):
                output[...] = fresh

        return launch, outputs


def replayed(function, capture: StandIn) -> graphs.Replayed:
    return graphs.Replayed(function, lambda function, args: capture(None, "cpu", function, args))


def affine(weights: dict, x):
    return {"y": weights["a"] * x + weights["b"]}, x.sum()


def test_each_call_computes_on_its_own_arguments_and_keeps_its_results():
    capture = StandIn()
    call = replayed(affine, capture)
    weights = {"a": np.float64(2.0) * np.ones(3), "b": np.arange(3.0)}
    first = call(weights, np.array([1.0, 2.0, 3.0]))
    second = call({"a": np.ones(3), "b": np.zeros(3)}, np.array([5.0, 6.0, 7.0]))
    assert (capture.captures, capture.launches) == (1, 2)
    np.testing.assert_array_equal(first[0]["y"], [2.0, 5.0, 8.0])  # not overwritten by the second launch
    np.testing.assert_array_equal(second[0]["y"], [5.0, 6.0, 7.0])
    assert (float(first[1]), float(second[1])) == (6.0, 18.0)


def test_other_shapes_get_a_graph_of_their_own():
    capture = StandIn()
    call = replayed(affine, capture)
    for size in (3, 4, 3):
        call({"a": np.ones(size), "b": np.zeros(size)}, np.ones(size))
    assert (capture.captures, capture.launches) == (2, 3)


def test_a_function_that_cannot_be_captured_runs_as_it_is_and_capturing_is_not_tried_again():
    capture = StandIn(fails=True)
    call = replayed(affine, capture)
    results = [call({"a": np.ones(2), "b": np.ones(2)}, np.array([float(n), 1.0]))[0]["y"] for n in range(3)]
    assert [list(y) for y in results] == [[1.0, 2.0], [2.0, 2.0], [3.0, 2.0]]
    assert capture.captures == 1 and "not permitted" in call.failure


@pytest.mark.parametrize("recipe", [{}, {"book": True, "train_size": 256}], ids=["default", "book"])
def test_a_run_of_captured_epochs_is_the_run_of_batches(mnist, monkeypatch, recipe):
    """numpy made a library that captures graphs: an epoch's batches one launch and each evaluation another (two
    graphs, captured once), numpy's lines and its float64 parameters to 1e-12."""
    config = dataclasses.replace(SMALL, **recipe)
    plain = train(config, mnist)
    capture = StandIn()
    numpy_with_graphs = dataclasses.replace(backends.LIBRARIES["numpy"], gpu="cpu", graph=capture)
    monkeypatch.setitem(backends.LIBRARIES, "numpy", numpy_with_graphs)
    run = train(config, mnist)
    assert (capture.captures, capture.launches) == (2, 2 * config.epochs)
    assert [r.line() for r in run.history] == [r.line() for r in plain.history]
    for name, array in run.model.params.items():
        np.testing.assert_allclose(to_host(array), to_host(plain.model.params[name]), rtol=0, atol=1e-12)
