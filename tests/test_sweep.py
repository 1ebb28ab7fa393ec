"""Sweeps: planning, the process pool and Dask end to end on tiny runs, skipping and resuming, statistics."""

import csv
import dataclasses
import json
import os
import pathlib

import pytest

from portable_cnn import Config, UserError, checkpoint, train
from portable_cnn.backends import LIBRARIES, gpu_devices
from portable_cnn.cli import build_parser, config_from_args, main
from portable_cnn.runs import Interrupted
from portable_cnn.sweep import (
    LocalEngine,
    Run,
    execute_all,
    parse_seeds,
    parse_setting,
    plan,
)
from portable_cnn.sweep_report import RunResult, read_runs, summarise, table, write

from .test_cli import assert_one_line_error, run_cli

TINY = ["--epochs", "3", "--train-size", "64", "--test-size", "100", "--test-every", "2"]


def sweep_runs(*flags, out="out"):
    """The Runs `portable-cnn sweep` would plan for these flags."""
    args = build_parser().parse_args(["sweep", *flags, "--out", str(out)])
    settings = dict(parse_setting(text, args.knob_parsers) for text in args.set)
    return plan(config_from_args(args), parse_seeds(args.seeds), settings, args.out)


def test_seeds_are_ranges_and_lists():
    assert parse_seeds("1-4") == [1, 2, 3, 4]
    assert parse_seeds("1,3,5") == [1, 3, 5]
    assert parse_seeds("1-3,7,2") == [1, 2, 3, 7]


def test_plan_is_every_seed_with_every_combination_of_knob_values():
    runs = sweep_runs(
        "--seeds",
        "1-2",
        "--set",
        "kernel-init=0.5,1",
        "--set",
        "alpha=1,2",
        "--kernel-alpha",
        "64",
        "--weight-init",
        "0.02",
        "--test-every",
        "5",
        "--book",
        "--set",
        "rng=native",
    )
    assert len(runs) == 8
    assert runs[0].name == "alpha=1,kernel_init=0.5,rng=native,seed=1"
    assert runs[0].configuration == "alpha=1,kernel_init=0.5,rng=native"
    combinations = {(run.config.alpha, run.config.kernel_init, run.config.seed) for run in runs}
    assert combinations == {(alpha, init, seed) for alpha in (1.0, 2.0) for init in (0.5, 1.0) for seed in (1, 2)}
    for run in runs:
        assert (run.config.kernel_alpha, run.config.weight_init, run.config.test_every) == (64.0, 0.02, 5)
        assert run.config.book and run.config.rng == "native" and run.config.quiet
        assert run.config.save == str(pathlib.Path("out", "runs", f"{run.name}.npz").absolute())


def test_sweep_through_the_cli_trains_ordinary_runs_then_skips_them(mnist_dir, tmp_path):
    out = tmp_path / "sweep"
    flags = ["sweep", "--seeds", "1-2", "--set", "alpha=1,2", *TINY, "--workers", "2", "--out", str(out)]
    first = run_cli(*flags, "--progress", data_dir=mnist_dir)
    assert first.returncode == 0, first.stderr
    assert "4 to run on 2 worker processes" in first.stderr
    assert "4/4 [" in first.stderr  # the bar counts runs (tqdm: the test extra)
    names = [f"alpha={alpha},seed={seed}" for alpha in (1, 2) for seed in (1, 2)]
    saved = {name: checkpoint.load(out / "runs" / f"{name}.npz") for name in names}
    # Each run is the training `train` does with the same flags.
    alone = train(
        Config(
            seed=2, alpha=1.0, epochs=3, train_size=64, test_size=100, test_every=2, quiet=True, data_dir=str(mnist_dir)
        )
    )
    assert [row["test_acc"] for row in saved["alpha=1,seed=2"].history] == [record.test_acc for record in alone.history]
    assert all(run.epoch == 3 for run in saved.values())
    assert json.loads((out / "runs" / "alpha=2,seed=1.json").read_text())["config"]["alpha"] == 2.0

    with open(out / "summary.csv") as file:
        rows = list(csv.DictReader(file))
    assert [(row["configuration"], row["runs"]) for row in rows] == [("alpha=1", "2"), ("alpha=2", "2")]
    finals = [saved[f"alpha=2,seed={seed}"].history[-1]["test_acc"] for seed in (1, 2)]
    assert float(rows[1]["final_mean"]) == pytest.approx(sum(finals) / 2)
    assert "alpha=2" in first.stdout and (out / "summary.json").is_file()

    stamps = {path: path.stat().st_mtime_ns for path in (out / "runs").iterdir()}
    second = run_cli(*flags, data_dir=mnist_dir)
    assert second.returncode == 0, second.stderr
    assert "4 already complete, 0 to run" in second.stderr
    assert "final test acc" not in second.stdout  # no run reported as trained
    assert {path: path.stat().st_mtime_ns for path in (out / "runs").iterdir()} == stamps
    assert second.stdout.splitlines()[-2:] == first.stdout.splitlines()[-2:]  # the same table


class StopAfter:
    """A stop request that comes after ``checks`` looks, as Ctrl-C would in the middle of a run."""

    def __init__(self, checks):
        self.checks = checks

    def is_set(self):
        self.checks -= 1
        return self.checks < 0


def test_an_interrupted_run_resumes_where_it_stopped(mnist_dir, tmp_path, capsys):
    out = tmp_path / "sweep"
    flags = ["--seeds", "3", *TINY, "--batch-size", "16", "--data-dir", str(mnist_dir)]  # 4 batches an epoch
    [run] = sweep_runs(*flags, out=out)
    run.path.parent.mkdir(parents=True)
    with pytest.raises(Interrupted):
        train(dataclasses.replace(run.config, data_dir=str(mnist_dir)), stop=StopAfter(6))  # in epoch 1
    partial = checkpoint.load(run.path)
    assert partial.epoch == 1 and partial.batch > 0  # stopped in the middle of epoch 1

    assert main(["sweep", *flags, "--workers", "1", "--out", str(out)]) == 0
    assert "1 to run" in capsys.readouterr().err
    resumed = checkpoint.load(run.path)
    assert resumed.history[:1] == partial.history  # epoch 0 kept, seconds and all: not trained again
    whole = train(dataclasses.replace(run.config, save=None, data_dir=str(mnist_dir)))
    assert [row["test_acc"] for row in resumed.history] == [record.test_acc for record in whole.history]


def result(configuration, seed, final, best, best_epoch, seconds):
    return RunResult(
        f"{configuration},seed={seed}",
        configuration,
        {"alpha": float(configuration[-1])},
        seed,
        final,
        best,
        best_epoch,
        seconds,
        curve={0: final / 2, 1: final},
    )


def test_statistics_are_the_hand_computed_ones(tmp_path):
    results = [
        result("alpha=2", 1, 0.80, 0.82, 10, 3.0),
        result("alpha=2", 2, 0.90, 0.91, 20, 5.0),
        result("alpha=2", 3, 0.85, 0.88, 60, 4.0),
        result("alpha=1", 1, 0.70, 0.75, 5, 2.0),
    ]
    rows = summarise(results)
    assert [row["configuration"] for row in rows] == ["alpha=1", "alpha=2"]
    one, three = rows
    assert three["runs"] == 3 and three["seeds"] == [1, 2, 3]
    # final: mean 0.85, deviations -0.05, 0.05, 0: sample variance 0.005 / 2, sd 0.05
    assert three["final"] == pytest.approx({"mean": 0.85, "sd": 0.05, "min": 0.80, "max": 0.90})
    # best: mean 0.87, deviations -0.05, 0.04, 0.01: sample variance 0.0042 / 2
    assert three["best"] == pytest.approx({"mean": 0.87, "sd": 0.0021**0.5, "min": 0.82, "max": 0.91})
    assert three["best_epoch_mean"] == pytest.approx(30.0) and three["seconds_mean"] == pytest.approx(4.0)
    assert one["final"]["sd"] is None and one["final"]["mean"] == 0.70
    text = table(rows)
    assert "0.8500 ± 0.0500  0.8000  0.9000" in text and "0.7000 ±    n/a  0.7000  0.7000" in text

    written = write(rows, results, [], tmp_path)
    with open(tmp_path / "summary.csv") as file:
        rows_read = list(csv.DictReader(file))
    assert float(rows_read[1]["final_sd"]) == pytest.approx(0.05) and rows_read[0]["final_sd"] == ""
    assert json.loads((tmp_path / "summary.json").read_text())["configurations"][1]["final"]["mean"] == pytest.approx(
        0.85
    )

    assert tmp_path / "summary.png" in written and (tmp_path / "summary.png").stat().st_size > 0


def die_once(config, threads):
    """A worker that dies the first time it is given the run of seed 1 (its marker file says if it did)."""
    marker = pathlib.Path(config.save).with_suffix(".died")
    if config.seed == 1 and not marker.exists():
        marker.touch()
        os._exit(3)
    return {"final": 0.5, "best": 0.5, "best_epoch": 0, "seconds": 0.0, "seed": config.seed}


def always_die(config, threads):
    if config.seed == 1:
        os._exit(3)
    return {"final": 0.5, "best": 0.5, "best_epoch": 0, "seconds": 0.0, "seed": config.seed}


@pytest.mark.parametrize("function, status, attempts", [(die_once, "done", 2), (always_die, "failed", 2)])
def test_a_dying_worker_fails_only_its_run_and_is_retried_once(tmp_path, function, status, attempts):
    runs = [
        Run(f"seed={seed}", "default", {}, Config(seed=seed, save=str(tmp_path / f"seed={seed}.npz")))
        for seed in (1, 2, 3)
    ]
    engine = LocalEngine(2, 1, function=function)
    retried = []
    engine.on_retry = retried.append
    try:
        outcomes = {outcome.run.config.seed: outcome for outcome in execute_all(runs, engine, lambda outcome: None)}
    finally:
        engine.close()
    assert (outcomes[1].status, outcomes[1].attempts) == (status, attempts)
    assert [run.config.seed for run in retried] == [1]
    assert all(outcomes[seed].status == "done" and outcomes[seed].summary["seed"] == seed for seed in (2, 3))


def report_device(config, threads):
    return {"device": config.device, "process": os.getpid()}


def test_gpu_runs_go_one_per_gpu(tmp_path):
    runs = [
        Run(f"seed={seed}", "default", {}, Config(seed=seed, save=str(tmp_path / f"seed={seed}.npz")))
        for seed in range(6)
    ]
    engine = LocalEngine(2, 1, devices=["cuda:0", "cuda:1"], function=report_device)
    try:
        outcomes = execute_all(runs, engine, lambda outcome: None)
    finally:
        engine.close()
    placed = {(outcome.summary["process"], outcome.summary["device"]) for outcome in outcomes}
    assert {device for _, device in placed} == {"cuda:0", "cuda:1"}
    assert len({process for process, _ in placed}) == 2  # two workers, each always on its own GPU


def test_only_gpu_runs_are_spread_over_gpus_and_a_named_one_is_kept(monkeypatch):
    assert gpu_devices("numpy", None) is None
    assert gpu_devices("torch", "cpu") is None
    two_gpus = dataclasses.replace(
        LIBRARIES["torch"],
        device=lambda torch, device: device,
        devices=lambda torch: ["cpu", "cuda:0 (A)", "cuda:1 (B)"],
    )
    monkeypatch.setitem(LIBRARIES, "torch", two_gpus)
    assert gpu_devices("torch", "cuda") == ["cuda:0", "cuda:1"]
    assert gpu_devices("torch", "cuda:1") == ["cuda:1"]


def test_a_gpu_sweep_without_a_gpu_is_one_line(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="^torch sees no CUDA GPU for device 'cuda:0'; use --device cpu"):
        gpu_devices("torch", "cuda:0")


def test_the_dask_engine_runs_the_sweep(mnist_dir, tmp_path, capsys):
    import distributed

    out = tmp_path / "sweep"
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        code = main(
            [
                "sweep",
                "--seeds",
                "1-2",
                "--set",
                "weight-init=0.01,0.02",
                *TINY,
                "--data-dir",
                str(mnist_dir),
                "--scheduler",
                cluster.scheduler_address,
                "--out",
                str(out),
            ]
        )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Dask cluster" in captured.err
    results, incomplete = read_runs(out)
    assert len(results) == 4 and not incomplete
    serial = train(
        Config(
            seed=2,
            weight_init=0.02,
            epochs=3,
            train_size=64,
            test_size=100,
            test_every=2,
            quiet=True,
            data_dir=str(mnist_dir),
        )
    )
    [run] = [run for run in results if run.name == "weight_init=0.02,seed=2"]
    assert run.final == serial.history[-1].test_acc


@pytest.mark.parametrize(
    "flags, fragments",
    [
        (["--seeds", "3-1"], ["--seeds '3-1'"]),
        (["--seeds", "one"], ["--seeds 'one'", "1-10"]),
        (["--set", "nope=1"], ["--set nope", "choose from"]),
        (["--set", "seed=1,2"], ["--seeds"]),
        (["--set", "alpha"], ["knob=value"]),
        (["--set", "alpha=1,x"], ["--set alpha=x", "not a number"]),
        (["--set", "alpha=-1"], ["alpha=-1", "positive"]),
        (["--set", "dtype=float16"], ["float16", "float32"]),
        (["--set", "alpha=1", "--set", "alpha=2"], ["twice"]),
        (["--set", "batch-size=0"], ["batch_size=0", "at least 1"]),
    ],
)
def test_bad_sweep_input_is_one_line(tmp_path, capsys, flags, fragments):
    code = main(["sweep", *flags, "--out", str(tmp_path / "sweep")])
    assert_one_line_error(CliResult(code, capsys.readouterr().err), *fragments)
    assert not (tmp_path / "sweep").exists()


def test_a_sweep_needs_a_folder_and_a_report_needs_runs(tmp_path):
    assert_one_line_error(run_cli("sweep", "--seeds", "1-2"), "--out DIR")
    assert_one_line_error(run_cli("sweep", "--report", str(tmp_path)), "no sweep runs")


@dataclasses.dataclass
class CliResult:
    returncode: int
    stderr: str
