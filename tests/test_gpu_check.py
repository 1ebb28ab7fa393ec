"""The GPU check (benchmarks/gpu_check.sh) runs through on this machine's CPU with stand-ins, and its pytest stage
counts a skipped test as a failure: so the one prepared command is known to work before a GPU is lent."""

import json
import re
import subprocess
import sys

import pytest

from .conftest import REPO


def run_pytest_with_no_skips(tmp_path, body: str):
    (tmp_path / "test_sample.py").write_text(body)
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "benchmarks.no_skips", "-p", "no:cacheprovider"]
    env = {"PYTHONPATH": str(REPO)}
    return subprocess.run([*command, str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)


def test_a_skipped_test_fails_the_gpu_checks_pytest_stage(tmp_path):
    done = run_pytest_with_no_skips(
        tmp_path, "import pytest\ndef test_a(): pass\ndef test_b(): pytest.skip('no GPU')\n"
    )
    assert done.returncode == 1, done.stdout
    assert (
        "1 skipped test(s) count as failures" in done.stdout
        and "SKIPPED [1]" in done.stdout
        and "no GPU" in done.stdout
    )


def test_without_skips_the_pytest_stage_passes(tmp_path):
    done = run_pytest_with_no_skips(tmp_path, "def test_a(): pass\n")
    assert done.returncode == 0, done.stdout


@pytest.mark.slow
def test_the_gpu_check_runs_through_on_cpu_stand_ins(tmp_path):
    """Every stage of the prepared command, on array-api-strict's device1 / torch / jax CPU in place of the GPUs."""
    done = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--dry-run", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    output = done.stdout
    for stage in ("pytest", "checks", "timings"):
        assert f"gpu_check: {stage}: exit 0" in output and (tmp_path / f"gpu-check-{stage}.log").is_file()
    collected = re.search(r"^(\d+)/\d+ tests collected \(\d+ deselected\)", output, re.MULTILINE)
    assert collected and int(collected[1]) > 0  # the gpu-marked tests, and only those, are collected
    stand_ins = ["array-api-strict device1", "torch cpu", "jax cpu"]
    for check in ("no host sync in the batch loop", "Philox bits", "float32", "float64", "stop and resume"):
        for stand_in in stand_ins:
            assert f"PASS {stand_in}: {check}" in output
    assert "FAIL" not in output
    results = json.loads((tmp_path / "gpu-timings-dry-run.json").read_text())
    assert {"cupy", "torch", "peer", "book"} <= set(results["contenders"])
    for row in results["contenders"].values():
        assert row["seconds"]["n"] == 1 and 0 <= row["final_test_acc"] <= 1
        assert (
            row["phase_seconds_per_epoch"]["step"]["n"] == 2 and row["phase_seconds_per_epoch"]["evaluation"]["n"] == 2
        )
    assert results["contenders"]["book"]["phase_seconds_per_epoch"]["mask"]["n"] == 2
    assert "| the PyTorch peer, cpu |" in output and "gpu_check: all stages passed" in output
