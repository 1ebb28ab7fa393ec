"""Interleaved repetitions and their statistics: medians, ranges and ratios taken pair by pair.

Every candidate runs once per round (A B C ... A B C ...), so a burst of load on a shared
machine hits all of them alike; round 0 is a warm-up and is dropped. A ratio is computed
inside each round (A_i / B_i) and then summarised, never as a ratio of two medians.
"""

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
    """Run ``run_once(name)`` in interleaved rounds; returns each name's measured rounds after the warm-up.

    ``rounds`` maps a name to how many measured rounds it takes part in (a slow candidate may take
    part in the first few only). ``run_once`` returns the phase timings of one repetition, e.g.
    ``{"train": 0.31, "eval": 0.12}``, or None for no sample (a candidate that failed or is out of time); each kept
    sample records its round number for pairing.
    """
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
