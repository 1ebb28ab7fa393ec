"""Results on disk (JSON) and on screen (Markdown), the table always rendered from the JSON's figures."""

from __future__ import annotations

import json
import math
from pathlib import Path


def write_json(results: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    return path


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def number(value: float) -> str:
    """Three significant digits, no exponent for the magnitudes of these tables."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def spread(stats: dict | None) -> str:
    """``median (min–max)`` of a :func:`~benchmarks.timing.summary`."""
    if not stats:
        return "–"
    return f"{number(stats['median'])} ({number(stats['min'])}–{number(stats['max'])})"


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
    lines = ["| " + " | ".join(CONTENDER_COLUMNS) + " |", "| --- |" + " ---: |" * (len(CONTENDER_COLUMNS) - 1)]
    for row in results["contenders"].values():
        cells = [
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
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


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


def scaling_table(results: dict) -> str:
    lines = []
    for axis, points in results.get("scaling", {}).items():
        keys = [k for k in points[0] if k != "value"]
        lines.append(f"\n**{axis}**\n")
        lines.append("| " + axis + " | " + " | ".join(f"{k} train s | {k} eval s | {k} peak MiB" for k in keys) + " |")
        lines.append("| ---: |" + " ---: | ---: | ---: |" * len(keys))
        for point in points:
            cells = [str(point["value"])]
            for key in keys:
                entry = point[key]
                memory = entry.get("memory") or {}
                peak = max((memory[p]["rss_mib"] for p in entry["phases"] if p in memory), default=None)
                cells += [spread(entry.get("train_s")), spread(entry.get("eval_s")), number(peak)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def profile_table(results: dict) -> str:
    lines = []
    for phase, profile in results.get("profile", {}).items():
        lines.append(f"\n**{phase}** ({profile['description']})\n")
        lines.append("| stage | median ms | MFLOP | share of time |")
        lines.append("| --- | ---: | ---: | ---: |")
        total = sum(stage["ms"]["median"] for stage in profile["stages"])
        for stage in profile["stages"]:
            lines.append(
                f"| {stage['stage']} | {spread(stage['ms'])} | {number(stage['flops'] / 1e6)} "
                f"| {100 * stage['ms']['median'] / total:.0f}% |"
            )
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
    """The whole report: machine, contenders, targets, and (when measured) scaling and profile."""
    parts = [
        f"### {results['machine']['name']}\n",
        machine_line(results),
        "",
        contender_table(results),
        "",
        target_lines(results),
    ]
    if results.get("scaling"):
        parts += ["", "### Scaling (portable-cnn numpy float32 against PyTorch)", scaling_table(results)]
    if results.get("profile"):
        parts += [
            "",
            "### Where the time goes (numpy float32, one batch)",
            profile_table(results),
            "",
            epoch_profile_line(results),
        ]
    return "\n".join(parts) + "\n"
