"""The GPU check (benchmarks/gpu_check.sh) runs through on this machine's CPU with stand-ins, and its pytest stage
counts a skipped test as a failure: so the one prepared command is known to work before a GPU is lent."""

import json
import os
import subprocess
import sys

import pytest

from .conftest import REPO


def run_pytest_with_no_skips(tmp_path, body: str):
    (tmp_path / "test_sample.py").write_text(body)
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "benchmarks.gpu_pytest", "-p", "no:cacheprovider"]
    env = {"PYTHONPATH": str(REPO)}
    return subprocess.run([*command, str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)


def test_a_skipped_test_fails_the_gpu_checks_pytest_stage(tmp_path):
    done = run_pytest_with_no_skips(
        tmp_path, "import pytest\ndef test_a(): pass\ndef test_b(): pytest.skip('no GPU')\n"
    )
    assert done.returncode == 1, done.stdout
    assert "1 skipped test(s) count as failures" in done.stdout and "SKIPPED [1]" in done.stdout
    assert "no GPU" in done.stdout


def test_without_skips_the_pytest_stage_passes(tmp_path):
    done = run_pytest_with_no_skips(tmp_path, "def test_a(): pass\n")
    assert done.returncode == 0, done.stdout


def test_the_dry_run_hides_what_the_gpu_image_may_lack():
    """Pillow, matplotlib, array-api-compat ... fail to import under benchmarks/image_only; numpy and pytest do not."""
    code = (
        "import importlib.util as u; "
        "print([m for m in ('PIL', 'matplotlib', 'tqdm', 'array_api_compat', 'numpy', 'pytest') if u.find_spec(m)])"
    )
    env = {"PYTHONPATH": str(REPO / "benchmarks" / "image_only"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['numpy', 'pytest']"


def test_the_dispatch_counter_counts_each_outermost_operation_once():
    """Three operations (asarray, +, sum) and one indexing; sum's own inner calls are not counted again."""
    strict = pytest.importorskip("array_api_strict")
    from benchmarks.dispatches import Counter, counting

    with counting(Counter()) as counter:
        x = strict.asarray([1.0, 2.0])
        total = strict.sum(x + x)
        x[0]
    assert counter.snapshot() == (3, 1)
    assert float(total) == 6.0


STAGES = ("setup", "pytest", "timings")


@pytest.mark.slow
def test_the_gpu_check_runs_through_on_cpu_stand_ins(tmp_path):
    """Every stage of the prepared command, with only what the GPU image surely has plus the prepared wheels, on
    array-api-strict's device1 / torch / jax CPU in place of the GPUs: every gpu-marked test RUNS."""
    pytest.importorskip("torch")
    if not list((REPO / "benchmarks" / "wheels").glob("*.whl")):
        prepared = subprocess.run(
            ["bash", "benchmarks/gpu_check.sh", "--prepare"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert prepared.returncode == 0, f"--prepare needs the package index: {prepared.stdout}{prepared.stderr}"
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--dry-run", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    output = done.stdout
    names = {path.name for path in tmp_path.iterdir()}
    assert names == {f"{stage}.log" for stage in STAGES} | {"pytest.json", "timings.json", "summary.json"}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [(stage["stage"], stage["exit"]) for stage in summary["stages"]] == [(stage, 0) for stage in STAGES]
    assert "| stage | exit | seconds | cap |" in output
    outcomes = json.loads((tmp_path / "pytest.json").read_text())
    assert set(outcomes["counts"]) == {"passed"} and outcomes["counts"]["passed"] >= 90  # none skipped, none failed
    assert len(outcomes["properties"]) == 3  # --book's differing lines on each GPU library
    proofs = [node.split("::")[1] for node in outcomes["tests"] if node.startswith("tests/test_gpu.py::")]
    for proof in ("no_host_sync_in_the_batch_loop", "philox_bits_equal_numpys", "float32", "float64", "resumes"):
        for library in ("cupy", "torch", "jax"):
            assert any(proof in node and library in node for node in proofs), (proof, library)
    results = json.loads((tmp_path / "timings.json").read_text())
    assert set(results["contenders"]) == {"cupy", "torch", "jax", "peer", "book"}
    for row in results["contenders"].values():
        assert row["errors"] == [] and row["seconds"]["n"] == 1 and 0 <= row["final_test_acc"] <= 1
        assert (
            row["phase_seconds_per_epoch"]["step"]["n"] == 2 and row["phase_seconds_per_epoch"]["evaluation"]["n"] == 2
        )
    assert results["contenders"]["book"]["phase_seconds_per_epoch"]["mask"]["n"] == 2
    assert {"default", "book"} == set(results["dispatches"]) and "array operations (default" in output
    assert "| the PyTorch peer, cpu |" in output and "gpu_check: all stages passed" in output
