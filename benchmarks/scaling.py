"""How cost grows with batch size, training-set size, kernels and evaluation batch size: portable-cnn (numpy float32)
and the PyTorch peer with one setting changed, the phases it affects timed in interleaved rounds, peak memory probed
in a fresh process."""

from __future__ import annotations

from . import contenders as available
from . import memory_probe
from .timing import interleaved, summary, timed

KEYS = ("numpy-f32", "pytorch")

# setting: (values, the phases it affects)
AXES = {
    "batch_size": ((32, 64, 128, 256, 512, 1024), ("train",)),
    "train_size": ((1000, 2000, 3000, 4500), ("train",)),
    "kernels": ((8, 16, 32, 64), ("train", "eval")),
    "eval_batch_size": ((32, 128, 512, 2048, 10000), ("eval",)),
}


def point(mnist, setting: str, value: int, phases, reps: int, memory: bool, data_dir) -> dict:
    built = {key: available.build(key, mnist, **{setting: value}) for key in KEYS}
    calls = {"train": "train_epoch", "eval": "evaluate"}

    def run_once(key):
        contender = built[key]
        return {phase: timed(getattr(contender, calls[phase]), contender.sync) for phase in phases}

    samples = interleaved({key: reps for key in KEYS}, run_once)
    result = {"value": value}
    for key in KEYS:
        entry = {"phases": list(phases)}
        entry.update({f"{phase}_s": summary([s[phase] for s in samples[key]]) for phase in phases})
        entry["memory"] = memory_probe.probe(key, {setting: value}, data_dir) if memory else None
        result[key] = entry
    return result


def sweep(mnist, reps: int, memory: bool, data_dir=None, log=print) -> dict:
    results = {}
    for setting, (values, phases) in AXES.items():
        results[setting] = []
        for value in values:
            log(f"  {setting} = {value}")
            results[setting].append(point(mnist, setting, value, phases, reps, memory, data_dir))
    return results


def plot(scaling: dict, path) -> None:
    """Time (top row) and peak memory (bottom row) against each setting, log-log, one line per contender."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(2, len(scaling), figsize=(4 * len(scaling), 7), squeeze=False)
    for column, (setting, points) in enumerate(scaling.items()):
        values = [p["value"] for p in points]
        for key, color in zip(KEYS, ("tab:blue", "tab:orange")):
            for phase in points[0][key]["phases"]:
                medians = [p[key][f"{phase}_s"]["median"] for p in points]
                style = "-" if phase == "train" else "--"
                axes[0][column].plot(values, medians, style, color=color, marker="o", label=f"{key} {phase}")
            peaks = [_peak(p[key]) for p in points]
            if all(peak is not None for peak in peaks):
                axes[1][column].plot(values, peaks, color=color, marker="o", label=key)
        for row, unit in enumerate(("seconds (median)", "peak MiB (RSS growth)")):
            axis = axes[row][column]
            axis.set_xscale("log", base=2)
            axis.set_yscale("log")
            axis.set_xlabel(setting.replace("_", " "))
            axis.set_ylabel(unit)
            axis.grid(True, which="both", alpha=0.3)
            if axis.lines:
                axis.legend(fontsize=8)
    figure.suptitle("portable-cnn (numpy float32) and idiomatic PyTorch: cost against each setting")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _peak(entry: dict):
    memory = entry.get("memory")
    if not memory or "error" in memory:
        return None
    return max(memory[phase]["rss_mib"] for phase in entry["phases"])
