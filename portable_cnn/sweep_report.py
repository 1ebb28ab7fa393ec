"""A sweep's results: per configuration, the runs' final and best test accuracy (mean, sample standard
deviation, min, max), the epoch of the best and the seconds per run; as a table, CSV, JSON and a picture.

Everything is read back from the sweep's folder (each run's configuration record and checkpoint),
so the report can be rebuilt at any time, also while a sweep is still running.
"""

from __future__ import annotations

import csv
import io
import json
import pathlib
import statistics
from dataclasses import dataclass, field

from . import checkpoint
from .errors import UserError
from .files import write_atomically
from .sweep import RUNS_FOLDER, SUMMARY_NAMES, summarise_history

COLUMNS = (
    "configuration",
    "runs",
    "final_mean",
    "final_sd",
    "final_min",
    "final_max",
    "best_mean",
    "best_sd",
    "best_min",
    "best_max",
    "best_epoch_mean",
    "seconds_mean",
)


@dataclass
class RunResult:
    """One completed run: its configuration, seed, summary and test-accuracy curve (evaluated epochs only)."""

    name: str
    configuration: str
    knobs: dict
    seed: int
    final: float
    best: float
    best_epoch: int
    seconds: float
    curve: dict[int, float] = field(repr=False)


def read_runs(folder) -> tuple[list[RunResult], list[str]]:
    """The completed runs under ``folder`` and the names of those not complete (missing or partial checkpoint)."""
    records = sorted((pathlib.Path(folder) / RUNS_FOLDER).glob("*.json"))
    if not records:
        raise UserError(
            f"{folder} holds no sweep runs (no {pathlib.Path(folder) / RUNS_FOLDER / '*.json'}); "
            f"run portable-cnn sweep --out {folder} first"
        )
    results, incomplete = [], []
    for record in records:
        try:
            described = json.loads(record.read_text(encoding="utf-8"))
            epochs = described["config"]["epochs"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise UserError(f"{record} is not a sweep run's record ({error})") from None
        path = record.with_suffix(".npz")
        saved = checkpoint.load(path) if path.is_file() else None
        if saved is None or saved.epoch != epochs or saved.batch or not saved.history:
            incomplete.append(described["name"])
            continue
        results.append(
            RunResult(
                described["name"],
                described["configuration"],
                described["knobs"],
                described["seed"],
                **summarise_history(saved.history),
                curve={row["epoch"]: row["test_acc"] for row in saved.history if row["test_acc"] is not None},
            )
        )
    return results, incomplete


def spread(values: list[float]) -> dict:
    """Mean, sample standard deviation (n - 1 in the denominator; None for a single value), min and max."""
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else None,
        "min": min(values),
        "max": max(values),
    }


def summarise(results: list[RunResult]) -> list[dict]:
    """One row per configuration, in the order of its knob values."""
    groups: dict[str, list[RunResult]] = {}
    for result in sorted(results, key=lambda result: _order(result.knobs)):
        groups.setdefault(result.configuration, []).append(result)
    rows = []
    for configuration, members in groups.items():
        members.sort(key=lambda result: result.seed)
        rows.append(
            {
                "configuration": configuration,
                "knobs": members[0].knobs,
                "runs": len(members),
                "seeds": [result.seed for result in members],
                "final": spread([result.final for result in members]),
                "best": spread([result.best for result in members]),
                "best_epoch_mean": statistics.fmean(result.best_epoch for result in members),
                "seconds_mean": statistics.fmean(result.seconds for result in members),
                "results": [
                    {
                        "seed": result.seed,
                        "final": result.final,
                        "best": result.best,
                        "best_epoch": result.best_epoch,
                        "seconds": result.seconds,
                    }
                    for result in members
                ],
            }
        )
    return rows


def _order(knobs: dict) -> tuple:
    return tuple((name, isinstance(value, str), value) for name, value in knobs.items())


def flat(row: dict) -> dict:
    """A summary row as the CSV's columns."""
    measured = {
        f"{name}_{stat}": row[name][stat] for name in ("final", "best") for stat in ("mean", "sd", "min", "max")
    }
    return {name: row[name] if name in row else measured[name] for name in COLUMNS}


def table(rows: list[dict]) -> str:
    """The summary for people: accuracies to 4 places, mean ± sd."""
    width = max(len("configuration"), *(len(row["configuration"]) for row in rows))

    def accuracy(stats):
        sd = f"{'n/a':>6}" if stats["sd"] is None else f"{stats['sd']:.4f}"
        return f"{stats['mean']:.4f} ± {sd}  {stats['min']:.4f}  {stats['max']:.4f}"

    header = (
        f"{'configuration':<{width}}  runs  {'final acc ± sd':<15}  {'min':<6}  {'max':<6}  "
        f"{'best acc ± sd':<15}  {'min':<6}  {'max':<6}  best at  s/run"
    )
    lines = [header]
    for row in rows:
        lines.append(
            f"{row['configuration']:<{width}}  {row['runs']:>4}  {accuracy(row['final'])}  {accuracy(row['best'])}  "
            f"{row['best_epoch_mean']:>7.1f}  {row['seconds_mean']:>5.1f}"
        )
    return "\n".join(lines)


def write(rows: list[dict], results: list[RunResult], incomplete: list[str], folder) -> list[pathlib.Path]:
    """summary.csv, summary.json and, with matplotlib, summary.png in ``folder``; returns the paths written."""
    folder = pathlib.Path(folder)
    text = io.StringIO()
    writer = csv.DictWriter(text, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat(row) for row in rows)
    csv_path, json_path, picture_path = (folder / name for name in SUMMARY_NAMES)
    write_atomically(csv_path, text.getvalue().encode(), "the sweep's summary")
    write_atomically(
        json_path,
        (json.dumps({"configurations": rows, "incomplete": incomplete}, indent=1) + "\n").encode(),
        "the sweep's summary",
    )
    written = [csv_path, json_path]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return written
    from . import plots

    plots.sweep(rows, curves(rows, results), picture_path, title=f"sweep {folder.resolve().name}")
    return [*written, picture_path]


def curves(rows: list[dict], results: list[RunResult]) -> dict[str, tuple[list[int], list[float], list[float]]]:
    """Per configuration: the epochs every run evaluated, the mean test accuracy there and its sd (0 for one run)."""
    drawn = {}
    for row in rows:
        members = [result for result in results if result.configuration == row["configuration"]]
        epochs = sorted(set.intersection(*(set(result.curve) for result in members)))
        values = [[result.curve[epoch] for result in members] for epoch in epochs]
        drawn[row["configuration"]] = (
            epochs,
            [statistics.fmean(at) for at in values],
            [statistics.stdev(at) if len(at) > 1 else 0.0 for at in values],
        )
    return drawn


def report(folder) -> tuple[str, list[pathlib.Path], list[str]]:
    """Rebuild the summary of the sweep in ``folder``: (the table, the files written, the runs not complete)."""
    results, incomplete = read_runs(folder)
    if not results:
        return "", [], incomplete
    rows = summarise(results)
    return table(rows), write(rows, results, incomplete, folder), incomplete
