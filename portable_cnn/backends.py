"""The one place that knows array libraries: one :class:`Library` entry per backend in :data:`LIBRARIES`.

An entry says which module to import and which pip extra brings it, how to parse and list its devices,
how to copy an array to the host, how to wait for its device, whether that device is a GPU, how
to make the library's own random generator, how it compiles a function and a loop over batches or captures a
CUDA graph, and whether its CPU work gains from a pool of threads.
:func:`get_backend` turns a name and a device into a :class:`Backend`, the array namespace ``xp``
(resolved here and nowhere else) with the device the run's arrays live on; :func:`workers` gives
the threads that share a batch's blocks and an evaluation's chunks (a :class:`pool.Workers`). Adding a
backend is adding one entry.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import importlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import device as device_of

from .errors import UserError
from .graphs import Replayed
from .pool import Workers, one_blas_thread

# Test images per evaluation batch on each kind of device: small enough on a CPU for the hidden layer
# to stay in cache (measured fastest with blocks and threads, benchmarks/README.md); on a GPU MNIST's whole
# test set in one chunk (a few kernels, not a few per chunk; about 0.9 GB of feature maps in float64).
EVAL_BATCH = {"cpu": 64, "gpu": 10000}
# Images per row block of a training batch: on a CPU few enough for a block's hidden-layer arrays to stay
# in the caches (measured fastest, benchmarks/README.md); on a GPU the whole batch (None), few large kernels.
BLOCK_SIZE = {"cpu": 32, "gpu": None}


@dataclass(frozen=True)
class Library:
    """What the package needs to know about one array library (see the module doc)."""

    name: str
    module: str  # the module to import
    extra: str  # what to pip install for it
    namespace: Callable[[Any], Any]  # the imported module -> its array-API namespace
    device: Callable[[Any, str | None], Any]  # (module, --device) -> a checked device; allocates nothing
    devices: Callable[[Any], list[str]]  # the devices it sees, for `info`
    to_host: Callable[[Any], np.ndarray]
    cpu: bool = True  # runs on the CPU
    gpu: str | None = None  # the --device prefix of its GPUs, if it has any
    gpu_aliases: tuple[str, ...] = ()  # other --device prefixes that name its GPUs (jax's and cupy's "gpu")
    activate: Callable[[Any, Any], Any] = lambda module, device: contextlib.nullcontext()
    sync: Callable[[Any, Any], None] = lambda module, device: None
    native: Callable[[Any, Any, int], NativeGenerator] | None = None  # (module, device, seed) -> its own generator
    compile: Callable[[Any, Callable], Callable] | None = None  # (module, pure function) -> one compiled call
    scan: Callable[[Any], Callable] | None = None  # module -> its compiled loop, scan(body, carry, xs) -> (carry, ys)
    # (module, device, function, static args) -> (launch, static outputs): one call captured as a CUDA graph
    graph: Callable[[Any, Any, Callable, Any], tuple[Callable, Any]] | None = None
    array_module: str | None = None  # the top module of its array type, where it is not ``module`` (jax: jaxlib)
    pool: bool = False  # its CPU work gains from a pool of threads (it releases the GIL in loops and BLAS calls)
    set_threads: Callable[[Any, int], None] | None = None  # caps a CPU thread pool of its own, apart from BLAS's

    def on_gpu(self, device: str | None) -> bool:
        """Whether ``--device`` names one of its GPUs (read from the text alone: nothing is imported)."""
        prefix = str(device or "").partition(":")[0]
        return not self.cpu or (self.gpu is not None and prefix in (self.gpu, *self.gpu_aliases))


@dataclass(frozen=True)
class Backend:
    """An array namespace and the device that arrays of this run live on."""

    name: str
    xp: Any
    device: Any
    library: Library
    module: Any

    def asarray(self, host_array, dtype=None):
        """Copy a host (numpy) array to this backend's device."""
        return self.xp.asarray(host_array, dtype=dtype, device=self.device)

    def dtype(self, name: str):
        """The namespace's dtype object for a standard name such as 'float32'."""
        return getattr(self.xp, name)

    @contextlib.contextmanager
    def activated(self):
        """A context in which the library works on this backend's device (CuPy creates arrays on the current
        device whatever ``device=`` says), numpy's overflow warnings stay silent (a diverging run would warn
        on every batch; the trainer reports divergence once, in one line) and, for a library that uses
        :class:`Workers`, BLAS runs on one thread (also for ``--book``'s whole batches: on a busy machine a
        second BLAS thread stalls these small products)."""
        blas = one_blas_thread() if self.library.pool else contextlib.nullcontext()
        with (
            self.library.activate(self.module, self.device),
            np.errstate(over="ignore", invalid="ignore", divide="ignore"),
            blas,
        ):
            yield self

    def sync(self):
        """Wait for the work queued on this backend's device (for honest timers); a no-op on the CPU."""
        self.library.sync(self.module, self.device)


class NativeGenerator:
    """A library's own generator: uniform draws on the device, and its state as JSON-able values."""

    def __init__(self, label: str, draw, save, load):
        self.label, self.draw, self.save, self.load = label, draw, save, load


# --- numpy and array-api-strict (host arrays) ----------------------------------------------------------


def _cpu_only(name: str):
    def device(module, device: str | None):
        if device not in (None, "cpu"):
            raise UserError(
                f"backend '{name}' runs on the CPU only, not on '{device}'; use --backend cupy or torch for a GPU"
            )
        return "cpu"

    return device


def _numpy_native(module, device, seed: int) -> NativeGenerator:
    generator = np.random.default_rng(seed)

    def load(state):
        generator.bit_generator.state = state

    return NativeGenerator(
        "numpy",
        lambda shape, dtype, to_device: to_device(generator.random(shape, dtype=dtype)),
        lambda: generator.bit_generator.state,
        load,
    )


def _strict_device(module, device: str | None):
    """array-api-strict's devices by name: CPU_DEVICE (also 'cpu'), or an emulated one such as 'device1'."""
    names = {_strict_name(found): found for found in module.__array_namespace_info__().devices()}
    if device in (None, "cpu"):
        return module.Device("CPU_DEVICE")
    if device not in names:
        raise UserError(f"unknown array-api-strict device '{device}'; use one of: cpu, {', '.join(names)}")
    return names[device]


def _strict_devices(module) -> list[str]:
    return [_strict_name(found) for found in module.__array_namespace_info__().devices()]


def _strict_name(device) -> str:
    """'device1' from array_api_strict.Device('device1') (the class has no public name attribute)."""
    return repr(device).split("'")[1]


# --- torch ---------------------------------------------------------------------------------------------


def _torch_device(torch, device: str | None):
    text = device or "cpu"
    try:
        parsed = torch.device(text)
    except RuntimeError:
        raise UserError(f"unknown torch device '{text}'; use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"torch sees no CUDA GPU for device '{text}'; use --device cpu, or install a CUDA build of torch"
            )
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise UserError(f"torch sees {count} CUDA device(s); '{text}' does not exist")
        parsed = torch.device("cuda", parsed.index if parsed.index is not None else torch.cuda.current_device())
    elif parsed.type != "cpu":
        raise UserError(f"unsupported torch device '{text}'; use cpu, cuda or cuda:N")
    return parsed


def _torch_devices(torch) -> list[str]:
    names = ["cpu"]
    try:
        count = torch.cuda.device_count()
        names += [f"cuda:{index} ({torch.cuda.get_device_name(index)})" for index in range(count)]
    except Exception as error:  # a CUDA build without a working driver
        names.append(f"no usable GPU ({type(error).__name__})")
    return names


def _torch_activate(torch, device):
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _torch_sync(torch, device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _torch_graph(torch, device, function, static_args):
    """One call of ``function`` captured as a CUDA graph (warmed up first on a side stream, as torch asks: the
    allocator and cuBLAS set up outside the capture); its intermediates live in the graph's private memory pool."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        function(*static_args)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = function(*static_args)
    return graph.replay, outputs


def _torch_native(torch, device, seed: int) -> NativeGenerator:
    generator = torch.Generator(device=device).manual_seed(seed)

    def save():
        return base64.b64encode(generator.get_state().numpy().tobytes()).decode("ascii")

    def load(state):
        saved = np.frombuffer(base64.b64decode(state), dtype=np.uint8).copy()
        generator.set_state(torch.from_numpy(saved))

    return NativeGenerator(
        f"torch-{device.type}",  # CPU and CUDA generators keep different states
        lambda shape, dtype, to_device: torch.rand(
            shape, generator=generator, dtype=getattr(torch, dtype), device=device
        ),
        save,
        load,
    )


# --- cupy ----------------------------------------------------------------------------------------------


def _cupy_device(cupy, device: str | None):
    """The GPU named by --device, checked before anything is allocated (so no context opens on GPU 0 first)."""
    index = 0
    if device not in (None, "cuda", "gpu"):
        prefix, _, number = str(device).partition(":")
        if prefix not in ("cuda", "gpu") or not number.isdigit():
            raise UserError(f"unknown cupy device '{device}'; use cuda or cuda:N")
        index = int(number)
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CUDA driver or runtime missing: cupy imports but cannot run
        raise UserError(
            f"cupy is installed but no usable NVIDIA GPU was found ({type(error).__name__}); use --backend numpy"
        ) from None
    if index >= count:
        raise UserError(f"cupy sees {count} GPU(s); device cuda:{index} does not exist")
    return cupy.cuda.Device(index)


def _cupy_devices(cupy) -> list[str]:
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:
        return [f"no usable GPU ({type(error).__name__})"]
    return [f"cuda:{index}" for index in range(count)]


def _cupy_native(cupy, device, seed: int) -> NativeGenerator:
    generator = cupy.random.default_rng(seed)

    def load(state):
        raise AssertionError("cupy's generator state is never saved")  # NativeRandom refuses before this

    return NativeGenerator(
        "cupy", lambda shape, dtype, to_device: generator.random(shape, dtype=dtype), lambda: None, load
    )


# --- jax ------------------------------------------------------------------------------------------------

JAX_PLATFORMS = {"cpu": "cpu", "cuda": "gpu", "gpu": "gpu", "tpu": "tpu"}  # --device prefix -> JAX's platform


def _jax_device(jax, device: str | None):
    """cpu, cuda[:N] / gpu[:N] (NVIDIA or AMD) or tpu[:N], checked against the devices JAX sees."""
    prefix, _, number = str(device or "cpu").partition(":")
    if prefix not in JAX_PLATFORMS or not (number.isdigit() or number == ""):
        raise UserError(f"unknown jax device '{device}'; use cpu, cuda:N, gpu:N or tpu:N")
    try:
        found = jax.devices(JAX_PLATFORMS[prefix])
    except RuntimeError as error:  # JAX has no such platform here (no CUDA plugin, no TPU)
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(
            f"jax sees no {prefix} device for '{device}' ({reason}); use --device cpu, or install "
            "'portable-cnn[jax-cuda13]' for NVIDIA GPUs"
        ) from None
    index = int(number or 0)
    if index >= len(found):
        raise UserError(f"jax sees {len(found)} {prefix} device(s); '{device}' does not exist")
    return found[index]


def _jax_devices(jax) -> list[str]:
    names = []
    for platform in ("cpu", "gpu", "tpu"):
        try:
            names += [
                f"{'cuda' if device.platform == 'gpu' else device.platform}:{device.id}"
                for device in jax.devices(platform)
            ]
        except RuntimeError:
            continue
    return names


@contextlib.contextmanager
def _jax_activate(jax, device):
    """64-bit integers and floats (Philox's int64 words, --dtype float64), the run's device and full float32 matrix
    products (on an NVIDIA GPU JAX's default is TF32, whose float32 results drift from numpy's), for this run only:
    JAX's global defaults are left as they were."""
    with jax.enable_x64(True), jax.default_device(device), jax.default_matmul_precision("highest"):
        yield


def _jax_sync(jax, device):
    """Wait for the device: a trivial computation queued after the run's work is ready only when that work is."""
    jax.block_until_ready(jax.device_put(0, device) + 0)


def _jax_native(jax, device, seed: int) -> NativeGenerator:
    """JAX's own threefry keys: draw ``i`` uses ``fold_in(key(seed), i)``, so the state is a count."""
    state = {"draws": 0}

    def draw(shape, dtype, to_device):
        key = jax.random.fold_in(jax.random.key(seed), state["draws"])
        state["draws"] += 1
        return jax.device_put(jax.random.uniform(key, shape, dtype=getattr(jax.numpy, dtype)), device)

    return NativeGenerator("jax", draw, lambda: dict(state), lambda saved: state.update(draws=int(saved["draws"])))


def _compat(name: str):
    return lambda module: importlib.import_module(f"array_api_compat.{name}")


LIBRARIES = {
    library.name: library
    for library in (
        Library(
            "numpy",
            "numpy",
            "numpy",
            _compat("numpy"),
            _cpu_only("numpy"),
            lambda module: ["cpu"],
            np.asarray,
            native=_numpy_native,
            pool=True,
        ),
        Library(
            "cupy",
            "cupy",
            "'portable-cnn[cuda12]' or 'portable-cnn[cuda13]'",
            _compat("cupy"),
            _cupy_device,
            _cupy_devices,
            lambda array: array.get(),
            cpu=False,
            gpu="cuda",
            gpu_aliases=("gpu",),
            activate=lambda cupy, device: device,
            sync=lambda cupy, device: device.synchronize(),
            native=_cupy_native,
        ),
        Library(
            "torch",
            "torch",
            "'portable-cnn[torch]'",
            _compat("torch"),
            _torch_device,
            _torch_devices,
            lambda array: array.detach().cpu().numpy(),
            gpu="cuda",
            activate=_torch_activate,
            sync=_torch_sync,
            native=_torch_native,
            graph=_torch_graph,
            set_threads=lambda torch, count: torch.set_num_threads(count),
        ),
        Library(
            "jax",
            "jax",
            "'portable-cnn[jax]' (CPU) or 'portable-cnn[jax-cuda13]' (NVIDIA GPU)",
            lambda jax: importlib.import_module("jax.numpy"),
            _jax_device,
            _jax_devices,
            np.asarray,
            gpu="cuda",
            gpu_aliases=("gpu",),
            activate=_jax_activate,
            sync=_jax_sync,
            native=_jax_native,
            compile=lambda jax, function: jax.jit(function),
            scan=lambda jax: jax.lax.scan,
            array_module="jaxlib",
        ),
        Library(
            "array-api-strict",
            "array_api_strict",
            "'portable-cnn[test]'",
            lambda module: module,
            _strict_device,
            _strict_devices,
            lambda array: np.asarray(array.to_device(array.__array_namespace__().Device("CPU_DEVICE"))),
            native=_numpy_native,
            pool=True,
        ),
    )
}
BACKENDS = tuple(LIBRARIES)


def library(name: str) -> Library:
    """The registry entry of a backend name; a UserError listing the choices for any other name."""
    if name not in LIBRARIES:
        raise UserError(f"unknown backend '{name}'; choose one of: {', '.join(BACKENDS)}")
    return LIBRARIES[name]


def _import(entry: Library):
    try:
        return importlib.import_module(entry.module)
    except ImportError as error:
        raise UserError(_not_installed(entry, str(error))) from None


def _not_installed(entry: Library, detail: str) -> str:
    return (
        f"backend '{entry.name}' needs {entry.module}, which is not installed ({detail}); "
        f"install it with: pip install {entry.extra}"
    )


def check_usable(name: str, device: str | None) -> None:
    """Refuse, as --backend does, a backend whose library is not installed or whose GPU is not there; only a
    GPU device imports the library (to find the GPU), a CPU one just looks for it."""
    entry = library(name)
    if entry.on_gpu(device):
        gpu_devices(name, device)
    elif importlib.util.find_spec(entry.module.partition(".")[0]) is None:
        raise UserError(_not_installed(entry, f"no module named '{entry.module}'"))


def get_backend(name: str = "numpy", device: str | None = None) -> Backend:
    """Resolve a backend name (and an optional device such as ``cuda:0``) to a Backend; allocates nothing."""
    entry = library(name)
    module = _import(entry)
    resolved = entry.device(module, device)
    return Backend(name, entry.namespace(module), resolved, entry, module)


def gpu_devices(name: str, device: str | None) -> list[str] | None:
    """The GPUs a run may use as --device names: the one ``device`` names, else every visible one; None on a CPU.

    A missing library or GPU is a UserError that says what to install."""
    entry = library(name)
    if not entry.on_gpu(device):
        return None
    module = _import(entry)
    entry.device(module, device)
    if device and ":" in device:
        return [device]
    return [listed.split()[0] for listed in entry.devices(module) if listed.startswith(f"{entry.gpu}:")]


def limit_threads(name: str, threads: int) -> None:
    """Cap a library's own CPU thread pool at ``threads`` (BLAS and OpenMP are threadpoolctl's)."""
    entry = library(name)
    if entry.set_threads is not None:
        entry.set_threads(_import(entry), threads)


def default_eval_batch(name: str, device: str | None) -> int:
    """Test images per evaluation batch when none is given: by the kind of device --device names."""
    return EVAL_BATCH["gpu" if library(name).on_gpu(device) else "cpu"]


def library_of(array) -> Library | None:
    """The registry entry of an array's library, found by the module of its type (None for other arrays)."""
    root = type(array).__module__.partition(".")[0]
    return next((entry for entry in LIBRARIES.values() if root in (entry.module, entry.array_module)), None)


def default_block_size(name: str, device: str | None) -> int | None:
    """Images per row block of a training batch when none is given (None: the whole batch)."""
    return BLOCK_SIZE["gpu" if library(name).on_gpu(device) else "cpu"]


def default_threads(name: str, device: str | None) -> int:
    """Worker threads when none are given: the cores this process may run on, for a library that gains from them."""
    entry = library(name)
    if not entry.pool or entry.on_gpu(device):
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@functools.cache
def workers(name: str, device: str | None, threads: int) -> Workers:
    """The workers of a run (one set per process and setting): ``threads`` of them for a library whose CPU
    work gains from a pool, else the calling thread alone with the library's own threads (GPUs, torch)."""
    entry = library(name)
    if not entry.pool or entry.on_gpu(device):
        return Workers(1, limit_blas=False)
    return Workers(threads)


def to_host(array) -> np.ndarray:
    """A numpy copy of an array of any backend (for saving and printing), found by the array's module."""
    if isinstance(array, np.ndarray):
        return array
    entry = library_of(array)
    return np.asarray(array) if entry is None else entry.to_host(array)  # others: buffer- or DLPack-capable


def compiled(function: Callable, library: str) -> Callable:
    """``function`` compiled whole by the named library where it offers that (``jax.jit``), else itself:
    the same math, one call instead of one dispatch per operation."""
    entry = LIBRARIES.get(library)
    if entry is None or entry.compile is None:
        return function
    return entry.compile(importlib.import_module(entry.module), function)


def scan(library: str) -> Callable | None:
    """The named library's loop that compiles into one call, ``scan(body, carry, xs) -> (carry, ys)`` with
    ``carry, y = body(carry, x)`` over ``xs``' first axis (``jax.lax.scan``); None where it has none."""
    entry = LIBRARIES.get(library)
    if entry is None or entry.scan is None:
        return None
    return entry.scan(importlib.import_module(entry.module))


def captures_graphs(library: str, device) -> bool:
    """Whether the named library captures CUDA graphs (torch) and ``device`` is one of its GPUs."""
    entry = LIBRARIES.get(library)
    return entry is not None and entry.graph is not None and entry.on_gpu(str(device))


def graphed(function: Callable, library: str, device) -> Replayed:
    """``function`` replayed as a CUDA graph on ``device`` (see :func:`captures_graphs`)."""
    entry = LIBRARIES[library]
    module = importlib.import_module(entry.module)
    return Replayed(function, lambda function, args: entry.graph(module, device, function, args))


def on_device_of(array):
    """A context in which the library of ``array`` works on the array's device (CuPy creates arrays on its current
    device, whatever ``device=`` says): what :meth:`Backend.activated` gives a run, for work on an array alone."""
    entry = library_of(array)
    if entry is None:
        return contextlib.nullcontext()
    return entry.activate(importlib.import_module(entry.module), device_of(array))


def library_name(array) -> str:
    """The backend name of an array's library ('' for an array of no registered library)."""
    entry = library_of(array)
    return "" if entry is None else entry.name


def describe_backends() -> list[dict]:
    """For ``portable-cnn info``: each backend, whether it is installed, its version and the devices it sees."""
    rows = []
    for entry in LIBRARIES.values():
        row = {
            "backend": entry.name,
            "installed": False,
            "version": "",
            "devices": "",
            "install": f"pip install {entry.extra}",
        }
        try:
            module = importlib.import_module(entry.module)
        except ImportError:
            rows.append(row)
            continue
        row.update(
            installed=True, version=getattr(module, "__version__", "?"), devices=", ".join(entry.devices(module))
        )
        rows.append(row)
    return rows
