"""On each GPU library (cupy, torch CUDA, jax GPU; marked ``gpu``): no host sync inside the batch loop, Philox equal
to numpy's, float32 and float64 epochs against numpy's, a stop and resume, ``predict`` outside the run, and the
command line's refusals in one line. The GPU check's dry run (``PORTABLE_CNN_GPU_STAND_INS=1``) runs them on the CPU
stand-ins at small sizes; tests/test_syncs.py counts the host reads there."""

import contextlib
import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

from portable_cnn import Callback, Config, ConvNet, get_backend, graphs, philox, train
from portable_cnn.backends import to_host
from portable_cnn.runs import Interrupted

from .conftest import STAND_INS, StopAt, absent_gpu, backend_or_skip, gpu_target

LIBRARIES = ("cupy", "torch", "jax")
# The book's protocol and five float32 epochs on a GPU; a small slice on the stand-ins.
TRAIN_SIZE, TEST_SIZE, FLOAT32_EPOCHS = (256, 200, 1) if STAND_INS else (1000, 10000, 5)
FLOAT32_TOLERANCE = 0.005  # test accuracy, against numpy's, per epoch
FLOAT64_TOLERANCE = 1e-10  # parameters, against numpy's, after one epoch


def config(**settings) -> Config:
    return Config(train_size=TRAIN_SIZE, test_size=TEST_SIZE, quiet=True, **settings)


@pytest.fixture(params=[pytest.param(name, marks=pytest.mark.gpu) for name in LIBRARIES])
def gpu(request):
    """(backend, device) of a GPU library (or its stand-in), activated for the test."""
    name, device = gpu_target(request.param, "cuda:0")
    backend_or_skip(name, device)
    return {"backend": name, "device": device}


@pytest.fixture(scope="module")
def numpy_float32(mnist):
    return train(config(epochs=FLOAT32_EPOCHS), mnist)


@pytest.fixture(scope="module")
def numpy_float64(mnist):
    return train(config(epochs=1, dtype="float64"), mnist)


@contextlib.contextmanager
def no_host_sync(backend: str):
    """Inside, a host synchronisation on the device raises: cupy's batches are captured as a CUDA graph (CUDA refuses
    any sync while a stream is captured) and then launched; torch's sync debug mode is "error"; jax's device-to-host
    transfers are disallowed. A CPU stand-in other than jax is not guarded."""
    if backend == "cupy":
        import cupy

        stream = cupy.cuda.Stream(non_blocking=True)
        with stream:
            stream.begin_capture()
            try:
                yield
            finally:
                graph = stream.end_capture()
            graph.launch(stream)
        stream.synchronize()
    elif backend == "torch" and not STAND_INS:
        import torch

        torch.cuda.set_sync_debug_mode("error")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")
    elif backend == "jax":
        import jax

        with jax.transfer_guard_device_to_host("disallow"):  # a scalar operand's upload is no sync; a read is
            yield
    else:
        yield


class GuardTheBatchLoop(Callback):
    """The batch loop inside :func:`no_host_sync`: from the epoch's start (its masks drawn on the device) to its last
    batch's end, or each batch alone for ``--book`` (its masks come from the host once an epoch)."""

    def __init__(self, backend: str, book: bool):
        self.backend, self.book, self.calls, self.images, self._guard = backend, book, 0, 0, None

    def _open(self):
        if self._guard is None:
            self._guard = contextlib.ExitStack()
            self._guard.enter_context(no_host_sync(self.backend))

    def _close(self):
        if self._guard is not None:
            guard, self._guard = self._guard, None
            guard.close()

    def on_epoch_begin(self, state):
        if not self.book:
            self._open()

    def on_batch_begin(self, state):
        self._open()

    def on_batch_end(self, state, images):
        self.calls += 1
        self.images += images
        if self.book or self.images % state.batches[-1][1] == 0:  # the epoch's last batch (or its one call) ended
            self._close()

    def on_train_end(self, state):
        self._close()


def parameter_gap(first, second) -> float:
    """The largest absolute difference between two models' parameters."""
    return max(
        float(np.max(np.abs(to_host(array).astype(np.float64) - to_host(second.params[name]))))
        for name, array in first.params.items()
    )


def accuracies(history) -> list[float]:
    return [record.test_acc for record in history]


@pytest.mark.parametrize("book", [False, True], ids=["default", "book"])
def test_no_host_sync_in_the_batch_loop(mnist, gpu, book):
    guard = GuardTheBatchLoop(gpu["backend"], book)
    train(config(epochs=2, book=book, **gpu), mnist, callbacks=(guard,))
    assert guard.calls > 0, "no batch ran"


DRAWS = {
    "words": lambda xp, device: philox.random_bits(xp, 1001, seed=2**40 + 7, stream=3, step=5, device=device),
    "float32": lambda xp, device: philox.uniform(
        xp, (13, 77), seed=1, stream=1, step=0, dtype=xp.float32, device=device
    ),
    "float64": lambda xp, device: philox.uniform(
        xp, (13, 77), seed=1, stream=2, step=0, dtype=xp.float64, device=device
    ),
    "mask p=0.5": lambda xp, device: philox.bernoulli_steps(
        xp, [(128, 10816)], 0.5, seed=1, stream=0, first_step=9, device=device
    )[0],
    "mask p=3/8": lambda xp, device: philox.bernoulli_steps(
        xp, [(7, 129)], 3 / 8, seed=1, stream=0, first_step=9, device=device
    )[0],
}


@pytest.mark.parametrize("draw", DRAWS)
def test_philox_bits_equal_numpys(gpu, draw):
    from array_api_compat import numpy as np_xp

    backend = get_backend(gpu["backend"], gpu["device"])  # activated by the fixture
    got, wanted = to_host(DRAWS[draw](backend.xp, backend.device)), to_host(DRAWS[draw](np_xp, "cpu"))
    assert got.dtype == wanted.dtype and np.array_equal(got, wanted)


def test_float32_test_accuracy_is_numpys_within_tolerance(mnist, gpu, numpy_float32):
    run = train(config(epochs=FLOAT32_EPOCHS, **gpu), mnist)
    gaps = [abs(a - b) for a, b in zip(accuracies(run.history), accuracies(numpy_float32.history))]
    assert len(gaps) == FLOAT32_EPOCHS and max(gaps) <= FLOAT32_TOLERANCE, gaps


def test_a_float64_epoch_has_numpys_parameters(mnist, gpu, numpy_float64):
    run = train(config(epochs=1, dtype="float64", **gpu), mnist)
    assert parameter_gap(run.model, numpy_float64.model) <= FLOAT64_TOLERANCE


def test_a_run_stopped_in_mid_epoch_resumes_to_the_straight_run(mnist, gpu, tmp_path):
    settings = config(epochs=2, dtype="float64", **gpu)
    straight = train(settings, mnist)
    path = str(tmp_path / "stopped.npz")
    with pytest.raises(Interrupted) as stopped:
        train(dataclasses.replace(settings, save=path), mnist, callbacks=(StopAt(epoch=1, batch=1),))
    assert (stopped.value.epoch, stopped.value.batch) == (1, 1)
    resumed = train(dataclasses.replace(settings, resume=path, save=path), mnist)
    assert accuracies(resumed.history) == accuracies(straight.history)
    assert parameter_gap(resumed.model, straight.model) <= FLOAT64_TOLERANCE


@pytest.mark.gpu
def test_a_torch_epoch_and_its_evaluation_are_replayed_cuda_graphs(mnist, numpy_float64, monkeypatch):
    """torch on a GPU captures an epoch's batches as one CUDA graph and each evaluation as another, and replays
    them (the dry run: a stand-in capture on torch's CPU tensors); the epoch is numpy's to 1e-10 in float64."""
    from portable_cnn import backends, trainer

    from .test_graphs import StandIn

    name, device = gpu_target("torch", "cuda:0")
    backend_or_skip(name, device)
    if STAND_INS:
        monkeypatch.setitem(
            backends.LIBRARIES, "torch", dataclasses.replace(backends.LIBRARIES["torch"], gpu="cpu", graph=StandIn())
        )
    built, build = [], trainer.RunSteps.build
    monkeypatch.setattr(
        trainer.RunSteps, "build", lambda config, model: built.append(build(config, model)) or built[-1]
    )
    run = train(config(epochs=1, dtype="float64", backend=name, device=device), mnist)
    [steps] = built
    assert isinstance(steps.epoch, graphs.Replayed) and (steps.epoch.failure, steps.count_all.failure) == (None, None)
    assert accuracies(run.history) == accuracies(numpy_float64.history)
    assert parameter_gap(run.model, numpy_float64.model) <= FLOAT64_TOLERANCE


def test_predict_outside_the_run_is_numpys_on_the_models_device(mnist, gpu):
    """A model trained on the device, asked from the library after the run (no device made current by it)."""
    model = train(config(epochs=1, **gpu), mnist).model
    images = mnist.test_images[:500]
    params = {name: to_host(array) for name, array in model.params.items()}
    on_host = ConvNet(params, model.kernel_size, model.positions)
    agree = int(np.sum(to_host(model.predict(images)) == to_host(on_host.predict(images))))
    assert agree >= len(images) - 2, f"{agree} of {len(images)} predictions equal to numpy's"


def package_lines(stderr: str) -> list[str]:
    """The lines the package wrote (``portable-cnn: ...``), not the libraries' own logs (XLA's cuInit warning)."""
    return [line for line in stderr.splitlines() if line.startswith("portable-cnn")]


def ends_cleanly(arguments: list[str], environment: dict, may_succeed: bool) -> None:
    """``portable-cnn ARGUMENTS`` ends with no traceback, and a refusal says why in one line of the package's."""
    command = [sys.executable, "-m", "portable_cnn", *arguments]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **environment}, timeout=120)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    if done.returncode == 0:
        assert may_succeed, "it succeeded where it should have refused"
    else:
        assert len(package_lines(done.stderr)) == 1, done.stderr


def test_a_librarys_own_log_line_is_not_counted_as_the_packages():
    stderr = "E0000 cuda_executor.cc:1 failed call to cuInit: UNKNOWN ERROR (303)\nportable-cnn: error: no GPU\n"
    assert package_lines(stderr) == ["portable-cnn: error: no GPU"]


# The command line's targets: the GPU libraries; in the dry run, libraries here that must refuse a GPU.
CLI_TARGETS = {"cupy": "numpy", "torch": "torch", "jax": "jax"} if STAND_INS else {name: name for name in LIBRARIES}
SMALL = ["--epochs", "1", "--train-size", str(TRAIN_SIZE), "--test-size", str(TEST_SIZE)]


@pytest.fixture(params=[pytest.param(name, marks=pytest.mark.gpu) for name in LIBRARIES])
def cli_library(request):
    if not STAND_INS:
        backend_or_skip(request.param, "cuda:0")
    return CLI_TARGETS[request.param]


@pytest.mark.gpu
@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
def test_info_runs(hidden):
    if not STAND_INS and all(absent_gpu(name, "cuda:0") for name in LIBRARIES):
        pytest.skip("needs a GPU: no GPU library sees one on this machine")
    ends_cleanly(["info"], {"CUDA_VISIBLE_DEVICES": ""} if hidden else {}, may_succeed=True)


def test_a_second_gpu_that_is_not_there_is_refused_in_one_line(cli_library):
    ends_cleanly(["train", "--backend", cli_library, "--device", "cuda:1", *SMALL], {}, may_succeed=True)


def test_a_hidden_gpu_is_refused_in_one_line(cli_library):
    hidden = {"CUDA_VISIBLE_DEVICES": ""}
    ends_cleanly(["train", "--backend", cli_library, "--device", "cuda", *SMALL], hidden, may_succeed=False)
