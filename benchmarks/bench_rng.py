"""Benchmark: Philox-4x32-10 on the array API vs NumPy's own Generator, for a dropout mask.

    python benchmarks/bench_rng.py [--reps 21] [--shape 128 10816] [--no-torch]
                                   [--torch-threads N] [--epochs REPS --data-dir DIR]
                                   [--masks-only]

Every candidate runs once per repetition, interleaved (A B C ... A B C ...) so that machine
load hits them alike; one warm-up round is excluded. Prints a Markdown table with the median
and min-max time per call and the ratio of medians to ``numpy default_rng().random(shape)``.
The issue's target: ``bernoulli(numpy, (128, 10816), 0.5)`` within 2x of that baseline.
``--epochs REPS`` also times the default recipe's epoch (numpy float32) with ``--rng portable``
against ``--rng native``, interleaved, the second epoch of each run: the target is a regression
of at most 5%.

A second table sets the mask generators side by side, old against new: the dropout mask's
unpack (the words of one batch turned into its keep-mask: the int64 field test that
``bernoulli`` used before, against today's uint8 byte test) and an epoch's masks (the default
recipe's 7 batches of 128 and one of 104: one ``bernoulli`` per batch with the int64 unpack,
as before, against one ``bernoulli_steps`` for the epoch), each with the median and the ratio old / new.

On a shared 2-core machine under load, torch's multi-threaded elementwise ops can stall on
every call (thread wake-ups): compare with ``--torch-threads 1``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from array_api_compat import numpy as np_xp  # noqa: E402

from portable_cnn import philox  # noqa: E402
from portable_cnn.philox import bernoulli_steps, random_bits, uniform  # noqa: E402

BASELINE = "numpy Generator.random"


def bernoulli(xp, shape, p, *, seed, stream, step):
    """One step's keep-mask: ``bernoulli_steps`` of one shape."""
    return bernoulli_steps(xp, [shape], p, seed=seed, stream=stream, first_step=step)[0]


def candidates(shape, with_torch, torch_threads=None):
    rng = np.random.default_rng()
    out = {
        BASELINE: lambda step: rng.random(shape),
        "numpy Generator.random < 0.5": lambda step: rng.random(shape) < 0.5,
        "philox bernoulli(p=0.5), numpy": lambda step: bernoulli(np_xp, shape, 0.5, seed=1, stream=2, step=step),
        "philox bernoulli(p=3/8), numpy": lambda step: bernoulli(np_xp, shape, 3 / 8, seed=1, stream=2, step=step),
        "philox uniform float32, numpy": lambda step: uniform(
            np_xp, shape, seed=1, stream=2, step=step, dtype=np_xp.float32
        ),
        "philox uniform float64, numpy": lambda step: uniform(
            np_xp, shape, seed=1, stream=2, step=step, dtype=np_xp.float64
        ),
    }
    if with_torch:
        try:
            import torch
            from array_api_compat import torch as torch_xp
        except ImportError:
            print("torch not installed: torch rows skipped\n")
        else:
            if torch_threads:
                torch.set_num_threads(torch_threads)
            gen = torch.Generator().manual_seed(0)
            out.update(
                {
                    "torch.rand < 0.5 (CPU)": lambda step: torch.rand(shape, generator=gen) < 0.5,
                    "philox bernoulli(p=0.5), torch CPU": lambda step: bernoulli(
                        torch_xp, shape, 0.5, seed=1, stream=2, step=step
                    ),
                    "philox uniform float32, torch CPU": lambda step: uniform(
                        torch_xp, shape, seed=1, stream=2, step=step, dtype=torch_xp.float32
                    ),
                }
            )
    return out


def int64_unpack(xp, words):
    """The keep-mask of p = 0.5 as ``bernoulli`` unpacked it before: 32 bit fields tested in int64."""
    offsets = xp.arange(32, dtype=xp.int64)
    field_masks = xp.bitwise_left_shift(xp.ones_like(offsets), offsets)
    keep = (words[None, :] & field_masks[:, None]) < field_masks[:, None]
    return xp.reshape(keep, (32 * words.shape[0],))


def old_bernoulli_half(shape, step):
    """``bernoulli(numpy, shape, 0.5, seed=1, stream=0, step=step)`` as it was: one call per batch, int64 unpack."""
    n = int(np.prod(shape))
    words = random_bits(np_xp, -(-n // 32), seed=1, stream=0, step=step)
    return np.reshape(int64_unpack(np_xp, words)[:n], shape)


def old_and_new(shape, reps):
    """Median seconds of each mask generator, old and new, interleaved; bit-identity checked first."""
    epoch = [shape] * 7 + [(104,) + shape[1:]]
    nwords = -(-int(np.prod(shape)) // 32)
    words = random_bits(np_xp, nwords, seed=1, stream=0, step=0)
    pairs = {
        "unpack of one batch's words": (
            lambda: int64_unpack(np_xp, words),
            lambda: philox._dyadic_keep(np_xp, words, 1, 1, device=None),
        ),
        f"an epoch's masks ({len(epoch)} batches)": (
            lambda: [old_bernoulli_half(s, step) for step, s in enumerate(epoch)],
            lambda: list(bernoulli_steps(np_xp, epoch, 0.5, seed=1, stream=0, first_step=0)),
        ),
    }
    for name, (old, new) in pairs.items():  # the same bits, or the comparison means nothing
        old_masks, new_masks = old(), new()
        if not isinstance(old_masks, list):
            old_masks, new_masks = [old_masks], [new_masks]
        assert all(np.array_equal(a, b) for a, b in zip(old_masks, new_masks, strict=True)), name
    times = {(name, which): [] for name in pairs for which in ("old", "new")}
    for rep in range(reps + 1):  # rep 0 is the warm-up
        for name, functions in pairs.items():
            for which, fn in zip(("old", "new"), functions):
                t0 = time.perf_counter()
                fn()
                if rep:
                    times[name, which].append(time.perf_counter() - t0)
    print(f"\nmask generators, old vs new (numpy, p = 0.5, batch {shape}), {reps} interleaved repetitions\n")
    print("| generator | old median ms | new median ms | old / new |")
    print("| --- | ---: | ---: | ---: |")
    for name in pairs:
        old, new = statistics.median(times[name, "old"]), statistics.median(times[name, "new"])
        print(f"| {name} | {old * 1e3:.2f} | {new * 1e3:.2f} | {old / new:.2f}x |")


def epoch_comparison(reps, data_dir):
    """Median seconds of a default-recipe epoch with each random source, and portable/native."""
    from portable_cnn import Config, load_mnist, train

    data = load_mnist(data_dir)
    seconds = {"native": [], "portable": []}
    for _ in range(reps):
        for rng in seconds:
            history = train(Config(epochs=2, quiet=True, rng=rng), data).history
            seconds[rng].append(history[1].seconds)
    print(f"\ndefault recipe epoch (train 1000 + evaluate 10000, numpy float32), {reps} interleaved runs\n")
    print("| --rng | median s | min-max s |")
    print("| --- | ---: | ---: |")
    for rng, ts in seconds.items():
        print(f"| {rng} | {statistics.median(ts):.3f} | {min(ts):.3f}-{max(ts):.3f} |")
    ratio = statistics.median(seconds["portable"]) / statistics.median(seconds["native"])
    print(f"\nportable / native: {ratio:.3f}x")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=21)
    ap.add_argument("--shape", type=int, nargs="+", default=[128, 10816])
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--epochs", type=int, default=0, metavar="REPS", help="also compare whole epochs, REPS times")
    ap.add_argument("--data-dir", help="MNIST for --epochs (default: the usual search order)")
    ap.add_argument("--masks-only", action="store_true", help="only the old-vs-new mask table")
    args = ap.parse_args(argv)
    shape = tuple(args.shape)
    if args.masks_only:
        old_and_new(shape, args.reps)
        return

    cands = candidates(shape, not args.no_torch, args.torch_threads)
    times = {name: [] for name in cands}
    for rep in range(args.reps + 1):  # rep 0 is the warm-up
        for name, fn in cands.items():
            t0 = time.perf_counter()
            fn(rep)
            dt = time.perf_counter() - t0
            if rep:
                times[name].append(dt)

    base = statistics.median(times[BASELINE])
    info = f"numpy {np.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs"
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info += f", torch {torch.__version__} ({torch.get_num_threads()} threads)"
    print(f"shape {shape}, {args.reps} interleaved repetitions after 1 warm-up; {info}\n")
    print("| candidate | median ms | min-max ms | vs numpy Generator.random |")
    print("| --- | ---: | ---: | ---: |")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med * 1e3:.2f} | {min(ts) * 1e3:.2f}-{max(ts) * 1e3:.2f} | {med / base:.2f}x |")
    old_and_new(shape, args.reps)
    if args.epochs:
        epoch_comparison(args.epochs, args.data_dir)


if __name__ == "__main__":
    main()
