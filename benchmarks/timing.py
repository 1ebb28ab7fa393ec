"""Interleaved rounds (A B C ... A B C ..., so a burst of load hits all alike; the warm-up rounds dropped), medians
and ranges, and ratios taken inside each round, never as a ratio of two medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

clock = time.perf_counter  # seconds; the tests put a fake clock here, so that no test depends on this machine's speed


def timed(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    """Seconds one call of ``fn`` takes, with the device synchronised before and after."""
    sync()
    started = clock()
    fn()
    sync()
    return clock() - started


def interleaved(
    rounds: dict[str, int], run_once: Callable[[str], dict[str, float]], warmup: int = 1
) -> dict[str, list[dict]]:
    """Each name's samples: ``run_once(name)``'s timings (None: no sample) with their round, in the first
    ``rounds[name]`` rounds after the warm-up."""
    samples: dict[str, list[dict]] = {name: [] for name in rounds}
    for index in range(warmup + max(rounds.values(), default=0)):
        for name, wanted in rounds.items():
            if index < warmup + wanted:
                timings = run_once(name)
                if index >= warmup and timings is not None:
                    samples[name].append({"round": index - warmup, **timings})
    return samples


def summary(values: list[float]) -> dict[str, float]:
    """Median, minimum and maximum of a sample (all NaN for an empty one)."""
    if not values:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def paired_ratios(numerator: list[dict], denominator: list[dict], key: str) -> list[float]:
    """``numerator[key] / denominator[key]`` for every round both took part in."""
    by_round = {sample["round"]: sample[key] for sample in denominator}
    return [sample[key] / by_round[sample["round"]] for sample in numerator if sample["round"] in by_round]
