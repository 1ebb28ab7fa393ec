"""This machine: what it is (CPU, BLAS, threads, load), what it can do (GEMM peak, copy bandwidth), and the libraries'
thread settings, pinned before numpy loads (so numpy is imported inside the functions only)."""

from __future__ import annotations

import os
import platform
import re
import sys
import time

THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def pin_threads(threads: int | None) -> None:
    """Use ``threads`` threads in every library (None: leave the libraries' defaults)."""
    if threads is None:
        return
    if "numpy" in sys.modules or "torch" in sys.modules:
        raise RuntimeError("threads must be pinned before numpy or torch is imported")
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> dict:
    """Hardware, versions, thread settings ('default' when unset; torch's pool if loaded) and load."""
    import numpy as np

    blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": f"{blas.get('name', 'unknown BLAS')} {blas.get('version', '')}".strip(),
        "load_average": os.getloadavg(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    info["threads"] = {name: os.environ.get(name, "default") for name in THREAD_VARIABLES}
    if "torch" in sys.modules:
        info["threads"]["torch.get_num_threads()"] = sys.modules["torch"].get_num_threads()
    return info


def slug(info: dict) -> str:
    """A file name for this machine's results, e.g. ``cpu2-scipy-openblas``."""
    blas_name = re.sub(r"[^a-z0-9]+", "-", info["blas"].split(" ")[0].lower()).strip("-")
    return f"cpu{info['cores']}-{blas_name}"


def best_seconds(fn, repeats: int) -> float:
    """The fastest of ``repeats`` calls after one warm-up: a capability, so the best run is the answer."""
    fn()
    fastest = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        fastest = min(fastest, time.perf_counter() - started)
    return fastest


def gemm_peak(dtype: str, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of numpy's ``(n, n) @ (n, n)`` in ``dtype``: the practical matmul peak of this machine."""
    import numpy as np

    a = np.random.default_rng(0).random((n, n)).astype(dtype)
    return 2 * n**3 / best_seconds(lambda: a @ a, repeats) / 1e9


def copy_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """GB/s of ``np.copyto`` between two arrays far larger than cache, counting bytes read plus written."""
    import numpy as np

    source = np.ones(megabytes * 2**20 // 8)
    target = np.empty_like(source)
    return 2 * source.nbytes / best_seconds(lambda: np.copyto(target, source), repeats) / 1e9
