"""Results on disk (JSON) and on screen (Markdown), the Markdown always rendered from the JSON's figures."""

from __future__ import annotations

import json
import math
from pathlib import Path


def write_json(results: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    return path


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def number(value: float) -> str:
    """Three significant digits, no exponent."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def spread(stats: dict | None) -> str:
    """``median (min–max)`` of a :func:`~benchmarks.timing.summary`."""
    return f"{number(stats['median'])} ({number(stats['min'])}–{number(stats['max'])})" if stats else "–"


def table(columns, rows) -> list[str]:
    """A Markdown table's lines: the first column left-aligned, the others right."""
    lines = ["| " + " | ".join(columns) + " |", "| --- |" + " ---: |" * (len(columns) - 1)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _memory(row: dict) -> str:
    memory = row.get("memory")
    if not memory or "error" in memory:
        return "–"
    return f"{number(memory['train']['rss_mib'])} / {number(memory['eval']['rss_mib'])}"


CONTENDER_COLUMNS = (
    "contender",
    "train epoch s",
    "eval 10k s",
    "epoch s",
    "train img/s",
    "eval img/s",
    "peak MiB train / eval",
    "GFLOP/s",
    "% of GEMM peak",
    "× faster than notebook",
    "time ÷ numpy f32",
    "× floor",
)


def contender_table(results: dict) -> str:
    """One row per contender: medians with (min–max) over the interleaved rounds."""
    rows = [
        [
            row["label"],
            spread(row["train_s"]),
            spread(row["eval_s"]),
            spread(row["epoch_s"]),
            number(row["train_images_per_s"]),
            number(row["eval_images_per_s"]),
            _memory(row),
            number(row["gflops"]),
            number(100 * row["share_of_gemm_peak"]),
            spread(row.get("speedup_vs_notebook")),
            spread(row.get("time_vs_baseline")),
            spread(row.get("time_vs_floor")),
        ]
        for row in results["contenders"].values()
    ]
    return "\n".join(table(CONTENDER_COLUMNS, rows))


def target_lines(results: dict) -> str:
    return "\n".join(
        f"- {'MET' if t['met'] else 'MISSED'}: {t['target']} — measured {spread(t['ratio'])}x"
        for t in results.get("targets", [])
    )


def machine_line(results: dict) -> str:
    m = results["machine"]
    threads = ", ".join(f"{k}={v}" for k, v in m["threads"].items())
    torch = f", torch {m['torch']}" if "torch" in m else ""
    loads = ", ".join(f"{part} {start:.2f} → {end:.2f}" for part, (start, end) in results["load_average"].items())
    return (
        f"{m['cores']} CPU cores ({m['cpu']}), {m['blas']}, numpy {m['numpy']}{torch}; threads: {threads}. "
        f"GEMM peak {number(m['gemm_peak_gflops']['float32'])} GFLOP/s float32, "
        f"{number(m['gemm_peak_gflops']['float64'])} float64; copy bandwidth {number(m['copy_bandwidth_gbs'])} GB/s. "
        f"Load average (1 min) before → after each part: {loads}."
    )


def profile_table(results: dict) -> str:
    lines = []
    for phase, profile in results.get("profile", {}).items():
        total = sum(stage["ms"]["median"] for stage in profile["stages"])
        rows = [
            [
                stage["stage"],
                spread(stage["ms"]),
                number(stage["flops"] / 1e6),
                f"{100 * stage['ms']['median'] / total:.0f}%",
            ]
            for stage in profile["stages"]
        ]
        lines += [
            f"\n**{phase}** ({profile['description']})\n",
            *table(("stage", "median ms", "MFLOP", "share of time"), rows),
        ]
        lines.append(f"| **sum of stages** | {number(total)} | | |")
        lines.append(f"| whole step, timed as one | {spread(profile['whole_ms'])} | | |")
    return "\n".join(lines)


def epoch_profile(results: dict) -> dict:
    """The profile scaled to one epoch: stages summed and steps timed whole, in ms."""
    parts = results["profile"].values()
    return {
        "stages_ms": sum(sum(s["ms"]["median"] for s in p["stages"]) * p["batches_per_epoch"] for p in parts),
        "whole_ms": sum(p["whole_ms"]["median"] * p["batches_per_epoch"] for p in parts),
    }


def epoch_profile_line(results: dict) -> str:
    epoch = epoch_profile(results)
    line = (
        "Per epoch (the batches above times the batches in an epoch): "
        f"the stages add up to {number(epoch['stages_ms'])} ms, "
        f"the steps timed whole to {number(epoch['whole_ms'])} ms"
    )
    measured = results["contenders"].get("numpy-f32", {}).get("epoch_s")
    if measured:
        line += f"; the measured numpy float32 epoch takes {number(1e3 * measured['median'])} ms"
    return line + "."


def markdown(results: dict) -> str:
    """The whole report: machine, contenders, targets and (when measured) the profile; the sweeps are in the JSON
    and the plot."""
    parts = [f"### {results['machine']['name']}\n", machine_line(results), "", contender_table(results)]
    parts += ["", target_lines(results)]
    if results.get("profile"):
        parts += ["", "### Where the time goes (numpy float32, one batch)", profile_table(results)]
        parts += ["", epoch_profile_line(results)]
    return "\n".join(parts) + "\n"
