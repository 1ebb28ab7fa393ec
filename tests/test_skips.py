"""The suite's skips hide no fault: a backend is skipped only for what a CPU machine cannot have (cupy, a GPU);
any other failure to get one fails the test."""

import dataclasses

import pytest

from portable_cnn import UserError
from portable_cnn.backends import LIBRARIES

from .conftest import backend_or_skip


def outcome(name, device=None) -> str:
    """'skipped: <reason>', 'failed: <error>' or 'ran' for a test that asks for this backend."""
    try:
        backend_or_skip(name, device)
    except pytest.skip.Exception as skip:
        return f"skipped: {skip.msg}"
    except UserError as error:
        return f"failed: {error}"
    return "ran"


def test_a_backend_that_breaks_for_a_reason_other_than_a_gpu_fails():
    assert outcome("jax", "cpu:3").startswith("failed: jax sees 1 cpu device(s)")


def test_a_missing_cpu_library_fails_for_the_test_extra_installs_it(monkeypatch):
    monkeypatch.setitem(LIBRARIES, "torch", dataclasses.replace(LIBRARIES["torch"], module="no_such_torch"))
    assert outcome("torch").startswith("failed: backend 'torch' needs no_such_torch, which is not installed")


def test_a_missing_gpu_library_or_gpu_is_a_skip_that_says_so(monkeypatch):
    monkeypatch.setitem(LIBRARIES, "cupy", dataclasses.replace(LIBRARIES["cupy"], module="no_such_cupy"))
    assert outcome("cupy") == "skipped: needs a GPU: no_such_cupy is not installed (pip install " + (
        LIBRARIES["cupy"].extra + ")"
    )
    monkeypatch.setitem(LIBRARIES, "torch", dataclasses.replace(LIBRARIES["torch"], devices=lambda torch: ["cpu"]))
    assert outcome("torch", "cuda:0") == "skipped: needs a GPU: torch sees no cuda:0 on this machine (it sees: cpu)"
