"""The benchmark suite's own checks: its command lines, its statistics, and that table and JSON agree."""

import ast
import re
import subprocess
import sys

import pytest

from benchmarks import contenders, memory_probe, mutants, profile_stages, report, timing
from benchmarks.contenders import Contender
from benchmarks.run import document
from portable_cnn import Config

from .conftest import REPO


def test_run_help_works_without_measuring_anything():
    done = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "usage: benchmarks/run.py" in done.stdout and "--quick" in done.stdout


def test_rounds_are_interleaved_after_a_dropped_warm_up_and_ratios_are_paired():
    calls = []
    samples = timing.interleaved({"a": 3, "b": 1}, lambda name: calls.append(name) or {"t": float(len(calls))})
    assert calls == ["a", "b", "a", "b", "a", "a"]  # round 0 (a b) is the warm-up; b takes part in one round
    assert samples == {
        "a": [{"round": 0, "t": 3.0}, {"round": 1, "t": 5.0}, {"round": 2, "t": 6.0}],
        "b": [{"round": 0, "t": 4.0}],
    }
    assert timing.paired_ratios(samples["a"], samples["b"], "t") == [3.0 / 4.0]
    assert timing.summary([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}


def fake(clock, key, seconds):
    """A contender whose train epoch takes `seconds` and its evaluation twice that, on the fake clock."""
    return Contender(
        key,
        f"fake {key}",
        "float32",
        1000,
        10000,
        10**9,
        4 * 10**9,
        clock.takes(seconds),
        clock.takes(2 * seconds),
        lambda: None,
    )


def cell_median(cell: str) -> float:
    return float(re.match(r"([\d.]+)", cell).group(1))


MACHINE = {
    "name": "synthetic",
    "cpu": "test",
    "cores": 2,
    "blas": "none",
    "numpy": "0",
    "threads": {"OMP_NUM_THREADS": "1"},
    "gemm_peak_gflops": {"float32": 100.0, "float64": 50.0},
    "copy_bandwidth_gbs": 10.0,
}
SYNTHETIC_RESULTS = document(MACHINE, {}, {}, {})


def test_the_table_shows_the_json_figures(tmp_path, clock):
    built = {
        "notebook": fake(clock, "notebook", 0.02),
        "numpy-f32": fake(clock, "numpy-f32", 0.002),
        "pytorch": fake(clock, "pytorch", 0.004),
    }
    rows = contenders.measure(
        built, {"notebook": 1, "numpy-f32": 2, "pytorch": 2}, {"float32": 100.0, "float64": 50.0}, log=lambda _: None
    )
    path = report.write_json(
        document(MACHINE, {"quick": True}, {"contenders": [0.5, 0.7]}, rows), tmp_path / "synthetic.json"
    )
    results = report.read_json(path)
    table = report.markdown(results)

    lines = {
        line.split(" | ")[0].lstrip("| "): line.strip("| ").split(" | ")
        for line in table.splitlines()
        if line.startswith("| fake")
    }
    assert len(lines) == 3
    for key, row in results["contenders"].items():
        cells = dict(zip(report.CONTENDER_COLUMNS, lines[row["label"]]))
        for column, field in (("train epoch s", "train_s"), ("eval 10k s", "eval_s"), ("epoch s", "epoch_s")):
            assert cell_median(cells[column]) == pytest.approx(row[field]["median"], rel=5e-3)
        assert cell_median(cells["GFLOP/s"]) == pytest.approx(row["gflops"], rel=5e-3)
        assert row["gflops"] == pytest.approx(5e9 / row["epoch_s"]["median"] / 1e9)
        if key != "notebook":
            assert cell_median(cells["× faster than notebook"]) == pytest.approx(
                row["speedup_vs_notebook"]["median"], rel=5e-3
            )
    assert (
        results["contenders"]["numpy-f32"]["speedup_vs_notebook"]["n"] == 1
    )  # the notebook took part in one round only
    assert results["contenders"]["numpy-f32"]["epoch_s"]["median"] == pytest.approx(0.006)  # train 2 ms + eval 4 ms
    assert results["contenders"]["numpy-f32"]["speedup_vs_notebook"]["median"] == pytest.approx(10.0)
    assert results["contenders"]["pytorch"]["time_vs_baseline"]["median"] == pytest.approx(
        2.0
    )  # it takes twice as long
    assert [t["met"] for t in results["targets"]] == [False, False]  # 10x is not 50x; 2x is not 2.5x
    assert "MISSED: numpy float32 epoch >= 50x faster than the notebook" in table
    assert "Load average (1 min) before → after each part: contenders 0.50 → 0.70." in table


def test_the_real_contenders_run_through_the_library_api(mnist):
    """A tiny round of each fast contender: guards the suite against changes of the trainer's API."""
    keys = ["numpy-f32", "numpy-book", "strict-f32", "pytorch", "torch-f32", "jax-f32"]
    built = {key: contenders.build(key, mnist, train_size=256, test_size=500) for key in keys}
    rows = contenders.measure(
        built, {key: 1 for key in keys}, {"float32": 100.0, "float64": 50.0}, warmup=0, log=lambda _: None
    )
    assert rows["numpy-book"]["images_trained"] == 256 and rows["numpy-f32"]["images_tested"] == 500
    assert all(len(row["samples"]) == 1 for row in rows.values())  # one timed round each, no warm-up
    # the timed epoch really trained: the same recipe and Philox stream on numpy, torch, jax and the strict
    # namespace counts the same test images right (to float32 rounding), far above chance
    counts = [built[key].evaluate() for key in ("numpy-f32", "torch-f32", "jax-f32", "strict-f32")]
    assert max(counts) - min(counts) <= 2 and min(counts) > 150, counts


def test_the_pytorch_peer_takes_the_default_recipes_step(mnist):
    """Same recipe, other random streams: after two epochs both are at the same accuracy (~0.78)."""
    from benchmarks.torch_peer import TorchPeer
    from portable_cnn import train

    peer = TorchPeer(mnist)
    for _ in range(2):
        peer.train_epoch()
    ours = train(Config(epochs=2, quiet=True), mnist).history[-1].test_acc
    assert peer.evaluate() / 10000 == pytest.approx(ours, abs=0.03)


def test_the_notebooks_code_trains_like_the_book(mnist):
    """The reference's first training epoch gives the book's first Train-Acc (0.055)."""
    from benchmarks.reference.notebook_cnn import Notebook

    book = Notebook(mnist.train_images, mnist.train_labels, mnist.test_images[:10], mnist.test_labels[:10])
    assert book.train_epoch() / 1000 == 0.055


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the probe reads /proc/self")
def test_memory_probe_sees_the_evaluation_batch(mnist_dir):
    """Evaluation batches of 512 images instead of 64 add ~45 MiB at the evaluation's peak (~100 KiB an image, one
    worker: two workers' batches overlap only when both cores are free) and nothing to training's; resident growth
    and numpy's own count agree."""
    small, big = (
        memory_probe.probe(
            "numpy-f32", {"train_size": 256, "test_size": 1000, "eval_batch_size": size, "threads": 1}, str(mnist_dir)
        )
        for size in (64, 512)
    )
    assert set(small) == set(big) == {"train", "eval"}, (small, big)
    assert big["eval"]["tracemalloc_mib"] - small["eval"]["tracemalloc_mib"] > 30
    assert abs(big["train"]["tracemalloc_mib"] - small["train"]["tracemalloc_mib"]) < 4
    for phase in (*small.values(), *big.values()):
        assert abs(phase["rss_mib"] - phase["tracemalloc_mib"]) < max(4, phase["tracemalloc_mib"] / 10)


def test_a_profile_times_each_stage_and_the_whole_step_on_the_clock(clock):
    stages = [
        profile_stages._stage("copy", clock.takes(0.002)),
        profile_stages._stage("gemm", clock.takes(0.005), flops=5 * 10**9),
    ]
    profiled = profile_stages.profile(stages, clock.takes(0.008), "given", reps=3)
    copy, gemm = profiled["stages"]
    assert copy["ms"] == {"median": pytest.approx(2.0), "min": pytest.approx(2.0), "max": pytest.approx(2.0), "n": 3}
    assert gemm["ms"]["median"] == pytest.approx(5.0) and gemm["flops"] == 5 * 10**9
    assert profiled["whole_ms"]["median"] == pytest.approx(8.0)


def test_the_epoch_profile_scales_each_batch_by_the_batches_of_an_epoch():
    def stage(ms):
        return {"ms": {"median": ms}}

    profile = {
        "training batch": {"stages": [stage(2.0), stage(3.0)], "whole_ms": {"median": 6.0}, "batches_per_epoch": 8},
        "evaluation batch": {"stages": [stage(1.0)], "whole_ms": {"median": 1.5}, "batches_per_epoch": 100},
    }
    assert report.epoch_profile({"profile": profile}) == {
        "stages_ms": 5.0 * 8 + 1.0 * 100,
        "whole_ms": 6.0 * 8 + 1.5 * 100,
    }
    line = report.epoch_profile_line({"profile": profile, "contenders": {"numpy-f32": {"epoch_s": {"median": 0.37}}}})
    assert (
        "the stages add up to 140 ms" in line and "the steps timed whole to 198 ms" in line and "takes 370 ms" in line
    )


def test_profile_stages_follow_the_model():
    """The real stages on a tiny recipe: their names, traffic and FLOPs, and the report's section (no time compared)."""
    recipe = Config(batch_size=8, eval_batch_size=4, train_size=16, test_size=16).validated()
    profiled = profile_stages.run(reps=1, recipe=recipe)
    assert [p["batches_per_epoch"] for p in profiled.values()] == [2, 4]
    for result in profiled.values():
        assert all(row["ms"]["n"] == 1 for row in result["stages"])
    assert any(row["flops"] > 0 for row in profiled["training batch"]["stages"])
    assert "### Where the time goes" in report.markdown({**SYNTHETIC_RESULTS, "profile": profiled})


def test_the_mutation_check_changes_operators_and_numbers_but_not_docstrings_or_annotations():
    source = 'def f(a: int | None, b=-2) -> float:\n    """Twice 3."""\n    return a * 3 + b if a >= 0 and b else 0\n'
    _, found = mutants.sites(source)
    assert sorted(change for _, change, _ in found) == sorted(
        ["-x -> x", "2 -> 3", "* -> /", "3 -> 4", "+ -> -", ">= -> >", "0 -> 1", "and -> or", "0 -> 1"]
    )
    tree, found = mutants.sites(source)
    [apply] = [apply for _, change, apply in found if change == ">= -> >"]
    apply()
    assert "a > 0" in ast.unparse(tree)
