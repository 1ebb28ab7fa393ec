"""Device placement proven without a GPU: every array of a run on array-api-strict's emulated "device1".

array-api-strict refuses to combine arrays of different devices, and here its creation functions also
refuse to be called without ``device=`` (the CuPy bug class: array-api-compat's CuPy creation functions
other than asarray ignore ``device=``, so an array made without it lands on whichever GPU is current).
Training (default recipe and --book), a resume, evaluation and prediction run this way through the
library API, and through the command line with ``--backend array-api-strict --device device1``.
"""

import contextlib
import dataclasses
import json
import subprocess
import sys

import array_api_strict as strict
import numpy as np
import pytest

from portable_cnn import Config, UserError, backends, checkpoint, get_backend, train
from portable_cnn.backends import to_host
from portable_cnn.evaluation import confusion_of, probabilities
from portable_cnn.runs import Interrupted

from .conftest import REPO, StopAt

DEVICE1 = strict.Device("device1")
CREATORS = ("asarray", "arange", "empty", "eye", "full", "linspace", "ones", "zeros", "from_dlpack")
SMALL = Config(
    epochs=2, train_size=256, test_size=300, batch_size=128, quiet=True, backend="array-api-strict", device="device1"
)


@pytest.fixture
def device_required(monkeypatch):
    """array-api-strict's creation functions fail the test when called without ``device=`` (a stack of calls)."""
    calls = []

    def guarded(name, create):
        def create_on_a_device(*args, **kwargs):
            if kwargs.get("device") is None:
                raise AssertionError(f"array_api_strict.{name} called without device=")
            calls.append(name)
            return create(*args, **kwargs)

        return create_on_a_device

    for name in CREATORS:
        if hasattr(strict, name):
            monkeypatch.setattr(strict, name, guarded(name, getattr(strict, name)))
    return calls


def assert_on_device1(*arrays):
    for array in arrays:
        assert array.device == DEVICE1, f"an array of shape {array.shape} is on {array.device}"


def test_the_guard_catches_an_array_made_without_a_device(device_required):
    xp = get_backend("array-api-strict", "device1").xp
    with pytest.raises(AssertionError, match="zeros called without device="):
        xp.zeros((2,))
    with pytest.raises(ValueError):  # and strict refuses to mix devices
        xp.ones((2,), device=DEVICE1) + xp.asarray([1.0, 2.0], device=strict.Device("CPU_DEVICE"))


@pytest.mark.parametrize("book", [False, True], ids=["default", "book"])
def test_training_keeps_every_array_on_device1(mnist, device_required, book):
    config = dataclasses.replace(SMALL, book=book)
    result = train(config, mnist)
    assert_on_device1(result.model.kernels, result.model.weights)
    on_numpy = train(dataclasses.replace(config, backend="numpy", device=None), mnist)
    assert [r.line() for r in result.history] == [r.line() for r in on_numpy.history]
    assert "asarray" in device_required and (book or "arange" in device_required)  # the guard saw the creations


def test_a_run_stopped_mid_epoch_resumes_on_device1(mnist, device_required, tmp_path):
    path = str(tmp_path / "stopped.npz")
    with pytest.raises(Interrupted):
        train(dataclasses.replace(SMALL, save=path), mnist, callbacks=(StopAt(1, 1),))
    resumed = train(dataclasses.replace(SMALL, resume=path, save=path), mnist)
    straight = train(dataclasses.replace(SMALL, backend="numpy", device=None), mnist)
    assert_on_device1(resumed.model.kernels, resumed.model.weights)
    np.testing.assert_array_equal(to_host(resumed.model.weights), to_host(straight.model.weights))


def test_evaluation_and_prediction_stay_on_device1(mnist, device_required, tmp_path):
    path = str(tmp_path / "model.npz")
    train(dataclasses.replace(SMALL, epochs=1, save=path, backend="numpy", device=None), mnist)
    backend = get_backend("array-api-strict", "device1")
    with backend.activated():
        model = checkpoint.load(path).to_model(backend)
        assert_on_device1(model.kernels, model.weights)
        predicted = model.predict(mnist.test_images[:50])
        assert_on_device1(predicted)
        evaluation = confusion_of(model, mnist.test_images[:300], mnist.test_labels[:300])
        assert evaluation.total == 300
        assert probabilities(model, mnist.test_images[:5]).shape == (5, 10)


@pytest.fixture
def current_device(monkeypatch):
    """CuPy's way emulated on array-api-strict: device1 takes new arrays only while its library's ``activate`` has
    made it current (array-api-compat's CuPy creation functions other than asarray ignore ``device=``)."""
    current = []

    @contextlib.contextmanager
    def activate(module, device):
        current.append(device)
        try:
            yield
        finally:
            current.pop()

    def current_only(name, create):
        def create_on_the_current_device(*args, **kwargs):
            if kwargs.get("device") == DEVICE1 and current[-1:] != [DEVICE1]:
                raise AssertionError(f"array_api_strict.{name} on device1 while device1 is not current")
            return create(*args, **kwargs)

        return create_on_the_current_device

    entry = backends.LIBRARIES["array-api-strict"]
    monkeypatch.setitem(backends.LIBRARIES, "array-api-strict", dataclasses.replace(entry, activate=activate))
    for name in CREATORS:
        if hasattr(strict, name):
            monkeypatch.setattr(strict, name, current_only(name, getattr(strict, name)))
    return current


def test_predict_outside_a_run_works_on_the_models_device(mnist, current_device):
    """A model trained on a second device, then asked from the library (no run active): it carries its device."""
    model = train(dataclasses.replace(SMALL, epochs=1), mnist).model
    assert current_device == []  # the run is over: no device is current
    predicted = model.predict(mnist.test_images[:20])
    assert_on_device1(predicted)
    assert predicted.shape == (20,)


GPU_NAMES = [("jax", "gpu:1"), ("jax", "cuda"), ("cupy", "gpu:0"), ("torch", "cuda:1")]


@pytest.mark.parametrize(("name", "device"), GPU_NAMES)
def test_every_name_of_a_gpu_gets_the_gpu_defaults(name, device):
    """Read from --device's text alone (nothing imported): whole batches, big evaluation chunks, no worker pool."""
    assert backends.default_block_size(name, device) is None
    assert backends.default_eval_batch(name, device) >= 10000  # MNIST's test set in one chunk
    assert backends.default_threads(name, device) == 1


def test_an_unknown_strict_device_is_one_line():
    with pytest.raises(UserError, match="unknown array-api-strict device 'device9'"):
        get_backend("array-api-strict", "device9")


def run_cli(*arguments, cwd):
    command = [sys.executable, "-m", "portable_cnn", *arguments]
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env, timeout=600, check=False)


@pytest.mark.slow
def test_the_command_line_runs_on_device1(mnist, tmp_path):
    """train (default, --book), resume, evaluate and predict with --backend array-api-strict --device device1:
    strict refuses to combine device1's arrays with any made elsewhere, so each run finishing proves the placement."""
    on_device1 = ["--backend", "array-api-strict", "--device", "device1"]
    sizes = ["--train-size", "256", "--test-size", "300"]
    for recipe in ([], ["--book"]):
        done = run_cli("train", *recipe, "--epochs", "1", *sizes, *on_device1, "--save", "m.npz", cwd=tmp_path)
        assert done.returncode == 0 and done.stdout.startswith("I:0 Test-Acc:"), done.stderr
        resumed = run_cli("train", *recipe, "--epochs", "2", *sizes, *on_device1, "--resume", "m.npz", cwd=tmp_path)
        assert resumed.returncode == 0 and resumed.stdout.startswith("I:1 Test-Acc:"), resumed.stderr
    evaluated = run_cli("evaluate", "--checkpoint", "m.npz", "--json", *on_device1, cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["total"] == 10000
    np.save(tmp_path / "digits.npy", mnist.test_images[:3])
    predicted = run_cli("predict", "--checkpoint", "m.npz", *on_device1, "digits.npy", cwd=tmp_path)
    assert predicted.returncode == 0 and len(predicted.stdout.splitlines()) == 3, predicted.stderr
