"""The one place that knows array libraries: names -> namespaces, devices, transfers, random numbers.

Everything else receives an array namespace ``xp`` (array-api-compat) and stays on the standard.
"""

from __future__ import annotations

import base64
import importlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import array_namespace, is_cupy_namespace, is_torch_namespace

from . import philox
from .errors import UserError

BACKENDS = ("numpy", "cupy", "torch", "array-api-strict")

# What to install for each backend: the module to import and the pip extra that brings it.
_MODULES = {"numpy": "numpy", "cupy": "cupy", "torch": "torch", "array-api-strict": "array_api_strict"}
_EXTRAS = {
    "numpy": "numpy",
    "cupy": "'portable-cnn[cuda12]' or 'portable-cnn[cuda13]'",
    "torch": "'portable-cnn[torch]'",
    "array-api-strict": "'portable-cnn[test]'",
}


@dataclass(frozen=True)
class Backend:
    """An array namespace and the device that arrays of this run live on."""

    name: str
    xp: Any
    device: Any

    def asarray(self, host_array, dtype=None):
        """Copy a host (numpy) array to this backend's device."""
        return self.xp.asarray(host_array, dtype=dtype, device=self.device)

    def sync(self):
        """Wait for queued device work (for honest timers); a no-op on the CPU."""
        if is_cupy_namespace(self.xp):
            import cupy

            cupy.cuda.Device().synchronize()
        elif is_torch_namespace(self.xp) and str(self.device).startswith("cuda"):
            import torch

            torch.cuda.synchronize(self.device)

    def dtype(self, name: str):
        """The namespace's dtype object for a standard name such as 'float32'."""
        return getattr(self.xp, name)


def float_warnings_off():
    """A context in which numpy's overflow and invalid-value warnings stay silent.

    A diverging run would warn on every batch; the trainer reports divergence once, in one line.
    """
    return np.errstate(over="ignore", invalid="ignore", divide="ignore")


def to_host(array) -> np.ndarray:
    """A numpy copy of ``array`` from numpy, cupy, torch or array-api-strict (for saving and printing)."""
    if isinstance(array, np.ndarray):
        return array
    module = type(array).__module__
    if module.startswith("cupy"):
        return array.get()
    if module.startswith("torch"):
        return array.detach().cpu().numpy()
    return np.asarray(array)  # array_api_strict and other buffer/DLPack-capable arrays


def _import(name: str):
    try:
        return importlib.import_module(_MODULES[name])
    except ImportError as error:
        raise UserError(
            f"backend '{name}' needs {_MODULES[name]}, which is not installed ({error}); "
            f"install it with: pip install {_EXTRAS[name]}"
        ) from None


def get_backend(name: str = "numpy", device: str | None = None) -> Backend:
    """Resolve a backend name (and an optional device such as ``cuda:0``) to a ready Backend."""
    if name not in BACKENDS:
        raise UserError(f"unknown backend '{name}'; choose one of: {', '.join(BACKENDS)}")
    module = _import(name)
    if name == "numpy":
        _require_cpu(name, device)
        return Backend(name, array_namespace(np.empty(0)), "cpu")
    if name == "array-api-strict":
        _require_cpu(name, device)
        return Backend(name, module, module.Device("CPU_DEVICE"))
    if name == "torch":
        return Backend(name, array_namespace(module.empty(0)), _torch_device(module, device or "cpu"))
    return Backend(name, array_namespace(module.empty(0)), _cupy_device(module, device))


def _require_cpu(name, device):
    if device not in (None, "cpu"):
        raise UserError(f"backend '{name}' runs on the CPU only, not on '{device}'; use --backend cupy or torch for a GPU")


def _torch_device(torch, device: str):
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown torch device '{device}'; use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"torch sees no CUDA GPU for device '{device}'; use --device cpu, or install a CUDA build of torch"
            )
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise UserError(f"torch sees {torch.cuda.device_count()} CUDA device(s); '{device}' does not exist")
    elif parsed.type != "cpu":
        raise UserError(f"unsupported torch device '{device}'; use cpu, cuda or cuda:N")
    return parsed


def _cupy_device(cupy, device: str | None):
    index = 0
    if device not in (None, "cuda", "gpu"):
        prefix, _, number = str(device).partition(":")
        if prefix != "cuda" or not number.isdigit():
            raise UserError(f"unknown cupy device '{device}'; use cuda or cuda:N")
        index = int(number)
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CUDA driver or runtime missing: cupy imports but cannot run
        raise UserError(f"cupy is installed but no usable NVIDIA GPU was found ({error}); use --backend numpy") from None
    if index >= count:
        raise UserError(f"cupy sees {count} GPU(s); device cuda:{index} does not exist")
    gpu = cupy.cuda.Device(index)
    gpu.use()
    return gpu


def describe_backends() -> list[dict]:
    """For ``portable-cnn info``: each backend, whether it is installed, its version and the devices it sees."""
    rows = []
    for name in BACKENDS:
        row = {"backend": name, "installed": False, "version": "", "devices": "", "install": f"pip install {_EXTRAS[name]}"}
        try:
            module = importlib.import_module(_MODULES[name])
        except ImportError:
            rows.append(row)
            continue
        row.update(installed=True, version=getattr(module, "__version__", "?"), devices=", ".join(_devices(name, module)))
        rows.append(row)
    return rows


def _devices(name, module) -> list[str]:
    if name == "torch":
        return ["cpu"] + [f"cuda:{i} ({module.cuda.get_device_name(i)})" for i in range(module.cuda.device_count())]
    if name == "cupy":
        try:
            count = module.cuda.runtime.getDeviceCount()
        except Exception as error:
            return [f"no usable GPU ({type(error).__name__})"]
        return [f"cuda:{i}" for i in range(count)]
    return ["cpu"]


class BookRandom:
    """The notebook's stream: numpy's legacy ``RandomState(seed)`` on the host, in the notebook's order.

    Every backend gets the very same numbers, so ``--book`` reproduces the notebook anywhere.
    """

    def __init__(self, backend: Backend, seed: int):
        self._backend = backend
        self._state = np.random.RandomState(seed)

    def uniform(self, shape, dtype: str):
        return self._backend.asarray(self._state.random_sample(shape), self._backend.dtype(dtype))

    def keep_masks(self, shapes, keep_prob: float):
        """One ``randint(2)`` draw per batch, as the notebook does, moved to the device once per epoch."""
        if keep_prob != 0.5:
            raise ValueError("the notebook's stream draws dropout masks with keep probability 0.5 only")
        host = np.concatenate([self._state.randint(2, size=shape).ravel() for shape in shapes]).astype(bool)
        return _split(self._backend.xp, self._backend.asarray(host), shapes)

    def state(self) -> dict:
        """The stream's position as JSON-able values (numpy's MT19937 state): the same on every backend."""
        _, keys, pos, has_gauss, cached_gaussian = self._state.get_state()
        return {"kind": "book", "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}

    def restore(self, state: dict) -> None:
        """Continue the stream from a :meth:`state` (taken on any backend)."""
        _expect_kind(state, "book")
        keys = np.asarray(state["keys"], dtype=np.uint32)
        self._state.set_state(("MT19937", keys, int(state["pos"]), int(state["has_gauss"]), float(state["cached_gaussian"])))


class NativeRandom:
    """The backend's own generator, drawing on the device (numpy's, torch's or cupy's ``Generator``)."""

    def __init__(self, backend: Backend, seed: int):
        self._backend = backend
        if backend.name == "torch":
            import torch

            generator = torch.Generator(device=backend.device).manual_seed(seed)
            self._draw = lambda shape, dtype: torch.rand(
                shape, generator=generator, dtype=backend.dtype(dtype), device=backend.device
            )
            self._library = f"torch-{backend.device.type}"  # CPU and CUDA generators keep different states
        elif backend.name == "cupy":
            import cupy

            generator = cupy.random.default_rng(seed)
            self._draw = lambda shape, dtype: generator.random(shape, dtype=dtype)
            self._library = "cupy"
        else:  # numpy and array-api-strict, whose device is the host
            generator = np.random.default_rng(seed)
            self._draw = lambda shape, dtype: backend.asarray(generator.random(shape, dtype=dtype))
            self._library = "numpy"
        self._generator = generator

    def uniform(self, shape, dtype: str):
        return self._draw(tuple(shape), dtype)

    def keep_masks(self, shapes, keep_prob: float):
        return (self._draw(tuple(shape), "float32") < keep_prob for shape in shapes)

    def state(self) -> dict:
        """The generator's state as JSON-able values; it restores only on the same library (and device type)."""
        if self._library == "numpy":
            saved = self._generator.bit_generator.state
        elif self._library.startswith("torch"):
            saved = base64.b64encode(self._generator.get_state().numpy().tobytes()).decode("ascii")
        else:
            saved = None  # cupy keeps its generator's state on the device, with no public way to read it
        return {"kind": "native", "library": self._library, "state": saved}

    def restore(self, state: dict) -> None:
        _expect_kind(state, "native")
        library = state.get("library")
        if state.get("state") is None:
            raise UserError(
                f"the checkpoint's --rng native state ({library}) was not saved, as cupy does not expose it, so the run "
                "cannot continue exactly; use --rng portable (the default) for runs you want to resume"
            )
        if library != self._library:
            raise UserError(
                f"the checkpoint's --rng native random state belongs to {library} and cannot continue on {self._library}; "
                f"resume on the same library (a --rng portable run, the default, resumes on any backend)"
            )
        if library == "numpy":
            self._generator.bit_generator.state = state["state"]
        else:
            import torch

            saved = np.frombuffer(base64.b64decode(state["state"]), dtype=np.uint8).copy()
            self._generator.set_state(torch.from_numpy(saved))


def _split(xp, flat, shapes):
    """Cut a flat device array into consecutive pieces of the given shapes."""
    pieces, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        pieces.append(xp.reshape(flat[start : start + size], shape))
        start += size
    return pieces


class PortableRandom:
    """Philox-4x32-10 evaluated on the device: the same seed gives the same numbers on every backend.

    Dropout masks come from stream 0, one counter step per batch; initialisation draws take streams
    1, 2, ... in order. Each draw is a pure function of (seed, stream, step): no state on the device.
    """

    def __init__(self, backend: Backend, seed: int):
        self._backend = backend
        self._seed = seed
        self._draws = 0
        self.step = 0

    def uniform(self, shape, dtype: str):
        self._draws += 1
        backend = self._backend
        return philox.uniform(
            backend.xp, shape, seed=self._seed, stream=self._draws, step=0, dtype=backend.dtype(dtype), device=backend.device
        )

    def keep_masks(self, shapes, keep_prob: float):
        backend = self._backend
        for shape in shapes:
            yield philox.bernoulli(
                backend.xp, shape, keep_prob, seed=self._seed, stream=0, step=self.step, device=backend.device
            )
            self.step += 1

    def state(self) -> dict:
        """Counters only (Philox keeps no other state): the run continues identically on any backend."""
        return {"kind": "portable", "seed": self._seed, "step": self.step, "draws": self._draws}

    def restore(self, state: dict) -> None:
        _expect_kind(state, "portable")
        if int(state["seed"]) != self._seed:
            raise UserError(f"the checkpoint's random numbers come from seed {state['seed']}, not {self._seed}")
        self.step, self._draws = int(state["step"]), int(state["draws"])


def _expect_kind(state, kind: str) -> None:
    if not isinstance(state, dict) or state.get("kind") != kind:
        found = state.get("kind") if isinstance(state, dict) else type(state).__name__
        raise UserError(f"the checkpoint's random state is of kind '{found}', this run needs '{kind}'")
