"""Thread settings of the array libraries: pinned before they load, reported with every result.

OpenBLAS, OpenMP and MKL read these variables once, when numpy or torch is first imported, so
:func:`pin` must run before that; torch's intra-op pool is set through its own call.
"""

from __future__ import annotations

import os
import sys

VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def pin(threads: int | None) -> None:
    """Use ``threads`` threads in every library (None: leave the libraries' defaults)."""
    if threads is None:
        return
    if "numpy" in sys.modules or "torch" in sys.modules:
        raise RuntimeError("threads must be pinned before numpy or torch is imported")
    for name in VARIABLES:
        os.environ[name] = str(threads)


def pin_torch(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def settings() -> dict:
    """The variables as set ('default' when unset) and torch's thread count if torch is loaded."""
    found = {name: os.environ.get(name, "default") for name in VARIABLES}
    if "torch" in sys.modules:
        found["torch.get_num_threads()"] = sys.modules["torch"].get_num_threads()
    return found
