"""Shared fixtures: the real MNIST files and every backend of the registry (GPU ones marked ``gpu``,
skipped without one). With ``PORTABLE_CNN_GPU_STAND_INS=1`` (the GPU check's dry run) the gpu-marked tests run
on CPU stand-ins instead: array-api-strict's emulated "device1" for cupy, torch and jax on the CPU."""

import collections
import contextlib
import importlib
import importlib.util
import os
import pathlib

import pytest

from portable_cnn import Callback, get_backend, load_mnist
from portable_cnn.backends import LIBRARIES
from portable_cnn.datasets import EMBEDDED_DIR, ENV_VAR

REPO = pathlib.Path(__file__).resolve().parents[1]
STAND_INS = os.environ.get("PORTABLE_CNN_GPU_STAND_INS") == "1"
GPU_STAND_INS = {"cupy": ("array-api-strict", "device1"), "torch": ("torch", "cpu"), "jax": ("jax", "cpu")}
# The notebook's own saved output for all 300 epochs (a copy of ../shared/seed/book_output_300_epochs.txt).
SEED_OUTPUT = REPO / "tests" / "data" / "book_output_300_epochs.txt"


def gpu_target(name: str, device: str | None = None) -> tuple[str, str | None]:
    """(backend, device) of a gpu-marked test of ``name``: its GPU, or its CPU stand-in in the GPU check's dry run."""
    return GPU_STAND_INS[name] if STAND_INS else (name, device)


def _backend_params():
    """(name, device) of each library on the CPU, and on its GPU (marked ``gpu``) where it has one."""
    params = []
    for name, library in LIBRARIES.items():
        if library.cpu:
            params.append(pytest.param((name, None), id=name))
        if library.gpu is not None:
            params.append(
                pytest.param(
                    gpu_target(name, library.gpu),
                    id=f"{name}-{library.gpu}" if library.cpu else name,
                    marks=pytest.mark.gpu,
                )
            )
    return params


BACKENDS = _backend_params()


_ACTIVATED = contextlib.ExitStack()  # the backends the running test works with, activated until it ends


@pytest.fixture(autouse=True)
def _deactivate_backends():
    yield
    _ACTIVATED.close()


def backend_or_skip(name, device=None):
    """The backend, activated for the rest of the test as train() and the command line activate theirs (jax's
    64-bit integers for Philox, the device). Skipped only for what a CPU machine cannot have: cupy (a GPU-only
    library) or the GPU ``device`` names; any other fault, a missing CPU library included (the test extra
    installs them), fails the test."""
    missing = absent_gpu(name, device)
    if missing:
        pytest.skip(missing)
    backend = get_backend(name, device)
    _ACTIVATED.enter_context(backend.activated())
    return backend


def absent_gpu(name, device=None) -> str | None:
    """Why this machine cannot run ``name`` on ``device`` for want of a GPU or of cupy, or None when it can."""
    entry = LIBRARIES[name]
    if not entry.on_gpu(device):
        return None
    if importlib.util.find_spec(entry.module) is None:
        return f"needs a GPU: {entry.module} is not installed (pip install {entry.extra})"
    wanted = str(device or entry.gpu)
    seen = [listed.split()[0] for listed in entry.devices(importlib.import_module(entry.module))]
    if not any(found == wanted or found.startswith(f"{wanted}:") for found in seen):
        return f"needs a GPU: {name} sees no {wanted} on this machine (it sees: {', '.join(seen) or 'nothing'})"
    return None


@pytest.fixture(params=BACKENDS)
def backend(request):
    return backend_or_skip(*request.param)


@pytest.fixture(scope="session")
def mnist_dir():
    """The real MNIST the book's protocol needs, embedded in the package (1000 training, 10000 test images)."""
    return EMBEDDED_DIR


@pytest.fixture(scope="session")
def full_mnist_dir():
    """MNIST with more than the embedded 1000 training images: $PORTABLE_CNN_DATA_DIR, or a skip saying so."""
    if not os.environ.get(ENV_VAR):
        pytest.skip(f"needs more than 1000 training images: set {ENV_VAR} to a folder with the MNIST files")
    path = pathlib.Path(os.environ[ENV_VAR]).expanduser().resolve()
    if not path.is_dir():
        pytest.skip(f"{ENV_VAR}={path} is not a folder")
    return path


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    return load_mnist(mnist_dir)


@pytest.fixture(scope="session")
def book_lines():
    if not SEED_OUTPUT.is_file():
        pytest.skip(f"the notebook's saved output is not at {SEED_OUTPUT}")
    return SEED_OUTPUT.read_text().splitlines()


class FakeClock:
    """Stands in for `timing.clock`: time moves only when a fake stage says it took so long."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def takes(self, seconds):
        """A call that takes `seconds` on this clock."""
        return lambda: setattr(self, "now", self.now + seconds)


@pytest.fixture
def clock(monkeypatch):
    """`benchmarks.timing`'s clock replaced by a FakeClock: timings checked as arithmetic, never as speed."""
    from benchmarks import timing

    fake_clock = FakeClock()
    monkeypatch.setattr(timing, "clock", fake_clock)
    return fake_clock


@pytest.fixture(scope="session")
def small_run(tmp_path_factory, mnist):
    """A checkpoint of a short real run (3 epochs on 256 images), for the page's tests."""
    from portable_cnn import Config, train

    path = tmp_path_factory.mktemp("small_run") / "run.npz"
    train(Config(epochs=3, train_size=256, test_size=300, quiet=True, save=str(path)), mnist)
    return path


@pytest.fixture(scope="module")
def served(small_run):
    """``portable-cnn serve`` on the small run's checkpoint (a free port); after the module, Ctrl-C must end it
    with status 0 and no traceback."""
    from .serving import Served

    server = Served("serve", "--checkpoint", str(small_run), "--port", "0")
    yield server
    status, _, stderr = server.interrupt()
    assert status == 0 and "Traceback" not in stderr, stderr


def pytest_terminal_summary(terminalreporter):
    """One line saying how many tests ran in a real browser (marked ``browser``), so that CI shows they ran."""
    outcomes = {}
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            if "browser" in getattr(report, "keywords", ()):  # a collection report has none
                outcomes.setdefault(report.nodeid, outcome)
    if outcomes:
        counts = collections.Counter(outcomes.values())
        summary = ", ".join(
            f"{counts[outcome]} {outcome}" for outcome in ("passed", "failed", "error", "skipped") if counts[outcome]
        )
        terminalreporter.write_line(f"browser tests (headless Chromium): {summary}")


class StopAt(Callback):
    """Asks the run to stop when it reaches batch ``batch`` of epoch ``epoch`` (counting from its start)."""

    every_batch = True  # where an epoch is otherwise one call (JAX; torch on a GPU)

    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch, self._looks = epoch, batch, 0

    def on_batch_begin(self, state):
        if self._looks == self.epoch * len(state.batches) + self.batch:
            state.stop_training = True
        self._looks += 1
