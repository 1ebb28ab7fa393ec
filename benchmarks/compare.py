"""Contenders side by side: interleaved rounds of (train epoch, evaluation), figures and pairwise ratios."""

from __future__ import annotations

from .timing import interleaved, paired_ratios, summary, timed

BASELINE = "numpy-f32"  # portable-cnn's default, the row every other row is compared with
NOTEBOOK = "notebook"


def measure(contenders: dict, rounds: dict[str, int], peaks: dict[str, float], warmup: int = 1, log=print) -> dict:
    """Time every contender in interleaved rounds and derive its figures.

    ``contenders`` maps a key to a built :class:`~benchmarks.contenders.Contender`; ``rounds`` says
    how many measured rounds each takes part in; ``peaks`` is the GEMM peak (GFLOP/s) per dtype.
    """

    def run_once(key):
        contender = contenders[key]
        train = timed(contender.train_epoch, contender.sync)
        test = timed(contender.evaluate, contender.sync)
        log(f"  {key:>12}: train {train:8.3f} s   eval {test:8.3f} s")
        return {"train": train, "eval": test, "epoch": train + test}

    samples = interleaved(rounds, run_once, warmup)
    return {key: figures(contenders[key], samples, key, peaks) for key in contenders}


def figures(contender, samples: dict[str, list[dict]], key: str, peaks: dict[str, float]) -> dict:
    """A contender's row: times (median, min, max), images/s, GFLOP/s, share of peak, ratios."""
    own = samples[key]
    train, test, epoch = (summary([s[phase] for s in own]) for phase in ("train", "eval", "epoch"))
    gflops = (contender.train_flops + contender.eval_flops) / epoch["median"] / 1e9
    row = {
        "label": contender.label,
        "dtype": contender.dtype,
        "images_trained": contender.images_trained,
        "images_tested": contender.images_tested,
        "train_flops": contender.train_flops,
        "eval_flops": contender.eval_flops,
        "samples": own,
        "train_s": train,
        "eval_s": test,
        "epoch_s": epoch,
        "train_images_per_s": contender.images_trained / train["median"],
        "eval_images_per_s": contender.images_tested / test["median"],
        "gflops": gflops,
        "share_of_gemm_peak": gflops / peaks[contender.dtype],
    }
    if NOTEBOOK in samples and key != NOTEBOOK:
        row["speedup_vs_notebook"] = summary(paired_ratios(samples[NOTEBOOK], own, "epoch"))
    if BASELINE in samples and key != BASELINE:
        row["time_vs_baseline"] = summary(paired_ratios(own, samples[BASELINE], "epoch"))
    if contender.floor in samples:
        row["time_vs_floor"] = summary(paired_ratios(own, samples[contender.floor], "epoch"))
    return row


def targets(rows: dict) -> list[dict]:
    """The CPU targets, judged on the medians of the pairwise ratios of this one run (``at_most``: lower is better)."""
    checks = [
        ("numpy float32 epoch >= 50x faster than the notebook", BASELINE, "speedup_vs_notebook", 50.0, False),
        ("numpy float32 epoch >= 2.5x faster than idiomatic PyTorch CPU", "pytorch", "time_vs_baseline", 2.5, False),
        ("numpy float32 epoch <= 1.5x the unavoidable-work floor", BASELINE, "time_vs_floor", 1.5, True),
    ]
    out = []
    for name, key, field, goal, at_most in checks:
        ratio = rows.get(key, {}).get(field)
        if ratio is not None:
            met = ratio["median"] <= goal if at_most else ratio["median"] >= goal
            out.append({"target": name, "goal": goal, "ratio": ratio, "met": met})
    return out
