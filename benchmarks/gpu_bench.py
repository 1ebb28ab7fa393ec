"""The GPU check's timings (benchmarks/gpu_check.sh): 300-epoch trainings of portable-cnn on cupy, torch CUDA and
jax, of the PyTorch peer and of ``--book``, then a few epochs of each timed phase by phase (masks, batches, evaluation).

Each training (an epoch trained and the 10000 test images evaluated, ``--epochs`` times) runs on a contender built
afresh outside the timer, the device synchronised before and after, in interleaved rounds after a warm-up; none
starts that would end past ``--budget`` s. A contender that fails loses its own figures only, and ``--json`` is
rewritten after each. ``--dry-run``: CPU stand-ins (numpy for cupy, torch and jax on the CPU), 2 epochs of 256 images.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks import contenders, report, timing  # noqa: E402 (after the sys.path line)
from benchmarks.dispatches import count as count_dispatches  # noqa: E402
from benchmarks.report import number, spread  # noqa: E402
from portable_cnn import Callback, UserError, load_mnist  # noqa: E402

TARGET_SECONDS = 5.0  # the default recipe's 300 epochs on cupy, on an H200
TARGET_RATIO = 1.2  # cupy's and jax's time over the PyTorch peer's
PEER = "peer"
PHASES = ("mask", "step", "evaluation")
DRY_SIZES = {"train_size": 256, "test_size": 200}


def makers(dry_run: bool) -> dict:
    """Each contender's key and a call that builds it afresh from MNIST."""
    cupy, device = ("numpy", None) if dry_run else ("cupy", "cuda:0")
    gpu = "cpu" if dry_run else "cuda:0"
    sizes = DRY_SIZES if dry_run else {}

    def portable(key, label, **settings):
        return lambda mnist: contenders.portable(mnist, key, label, **sizes, **settings)

    return {
        "cupy": portable("cupy", f"portable-cnn {cupy} float32", backend=cupy, device=device),
        "torch": portable("torch", f"portable-cnn torch {gpu} float32", backend="torch", device=gpu),
        "jax": portable("jax", f"portable-cnn jax {gpu} float32", backend="jax", device=gpu),
        PEER: lambda mnist: contenders.pytorch(mnist, PEER, f"the PyTorch peer, {gpu}", device=gpu, **sizes),
        "book": portable("book", f"portable-cnn {cupy} --book (float64)", backend=cupy, device=device, book=True),
    }


class PhaseTimer(Callback):
    """An epoch's masks (before its first batch) and its batches, the device synchronised at each boundary."""

    def __init__(self, sync, seconds: dict):
        self.sync, self.seconds, self._images, self._mark = sync, seconds, 0, 0.0

    def _lap(self, phase: str | None = None) -> None:
        self.sync()
        now = timing.clock()
        if phase:
            self.seconds[phase].append(now - self._mark)
        self._mark = now

    def on_epoch_begin(self, state):
        self._images = 0
        self._lap()

    def on_batch_begin(self, state):
        if self._images == 0:
            self._lap("mask")

    def on_batch_end(self, state, images):
        self._images += images
        if self._images == state.batches[-1][1]:  # the epoch's last batch (or its one call, on JAX) ended
            self._lap("step")


def training(contender, epochs: int) -> tuple[float, float]:
    """Seconds of ``epochs`` epochs, each trained and evaluated, and the last test accuracy."""
    correct = []

    def epochs_run():
        for _ in range(epochs):
            contender.train_epoch()
            correct.append(contender.evaluate())

    return timing.timed(epochs_run, contender.sync), correct[-1] / contender.images_tested


def phases(contender, epochs: int) -> dict:
    """Seconds of each phase, epoch by epoch (the peer has no callbacks: its masks are in its step)."""
    seconds = {phase: [] for phase in PHASES}
    if contender.callbacks is not None:
        contender.callbacks.append(PhaseTimer(contender.sync, seconds))
    for _ in range(epochs):
        step = timing.timed(contender.train_epoch, contender.sync)
        if contender.callbacks is None:
            seconds["step"].append(step)
        seconds["evaluation"].append(timing.timed(contender.evaluate, contender.sync))
    return seconds


def measure(mnist, made: dict, args, log, save, missing: list) -> dict:
    """The rows of the contenders that can run here (a line in ``missing`` for each that cannot)."""
    errors, labels, accuracies, phase_seconds, last, started = {}, {}, {}, {}, {}, timing.clock()

    def attempt(key, what, call):
        try:
            return call()
        except Exception as error:  # noqa: BLE001 (one contender's crash is its row's error, not the check's end)
            errors[key].append(f"{what}: {type(error).__name__}: {str(error).strip()[:300]}")
            log(f"  {key:>6}: {what} failed: {type(error).__name__}: {error}")

    for key, make in list(made.items()):
        try:
            contender = make(mnist)
        except (UserError, ImportError) as error:
            missing.append(f"{key}: {error}")
            log(f"  cannot time {key}: {error}")
            del made[key]
            continue
        labels[key], errors[key] = contender.label, []
        attempt(key, "warm-up", lambda contender=contender: training(contender, args.warmup_epochs))

    def run_once(key):
        if errors[key] or timing.clock() - started + last.get(key, 0.0) > args.budget:
            return None
        measured = attempt(key, "training", lambda: training(made[key](mnist), args.epochs))
        if measured is None:
            return None
        last[key], accuracies[key] = measured
        log(f"  {key:>6}: {args.epochs} epochs in {measured[0]:.2f} s")
        return {"seconds": measured[0]}

    samples = timing.interleaved({key: args.reps for key in made}, run_once, warmup=0)

    def row(key):
        taken, peer = samples[key], samples.get(PEER)
        return {
            "label": labels[key],
            "samples": taken,
            "seconds": timing.summary([sample["seconds"] for sample in taken]) if taken else None,
            "final_test_acc": accuracies.get(key),
            "phase_seconds_per_epoch": {
                phase: timing.summary(values) for phase, values in phase_seconds.get(key, {}).items() if values
            },
            "vs_peer": timing.summary(timing.paired_ratios(taken, peer, "seconds")) if taken and peer else None,
            "errors": errors[key],
        }

    for key in made:
        phase_seconds[key] = attempt(key, "phases", lambda key=key: phases(made[key](mnist), args.phase_epochs))
        save({key: row(key) for key in made})
    return {key: row(key) for key in made}


def document(device: str, epochs: int, rows: dict, missing: list[str], dispatches: dict) -> dict:
    """The results file: the rows and the targets, judged on medians (unmet where a contender is missing)."""

    def median(key, field):
        row = rows.get(key)
        return row[field]["median"] if row and row.get(field) else float("nan")

    cupy = f"default recipe on cupy, {epochs} epochs with the 10k evaluation every epoch <= {TARGET_SECONDS:g} s"
    targets = [(cupy, median("cupy", "seconds"), TARGET_SECONDS)]
    targets += [
        (f"{key} within {TARGET_RATIO}x of the PyTorch peer", median(key, "vs_peer"), TARGET_RATIO)
        for key in ("cupy", "jax")
    ]
    return {
        "schema": 4,
        "dispatches": dispatches,
        "device": device,
        "epochs": epochs,
        "contenders": rows,
        "missing": missing,
        "targets": [{"target": text, "measured": value, "met": value <= limit} for text, value, limit in targets],
    }


def table(results: dict) -> str:
    columns = ("contender", "s per training", "÷ PyTorch peer", *(f"{phase} ms/epoch" for phase in PHASES))
    rows = []
    for row in results["contenders"].values():
        phases = row["phase_seconds_per_epoch"]
        per_epoch = [f"{1000 * phases[phase]['median']:.2f}" if phase in phases else "in step" for phase in PHASES]
        seconds = spread(row["seconds"]) if row["seconds"] else "failed"
        rows.append([row["label"], seconds, spread(row["vs_peer"]), *per_epoch, number(row["final_test_acc"])])
    lines = [
        f"### {results['device']}, {results['epochs']} epochs",
        "",
        *report.table((*columns, "final test acc"), rows),
    ]
    lines.append("")
    for recipe, counted in results["dispatches"].items():
        lines.append(
            f"- array operations ({recipe}, counted on the CPU by benchmarks/dispatches.py): "
            f"{counted['per_batch']['operations']} per batch, {counted['masks']['operations']} for the epoch's masks, "
            f"{counted['evaluation_and_read']['operations']} for the evaluation and read, "
            f"{counted['per_epoch']['operations']} per epoch (+ {counted['per_epoch']['indexing']} indexing)"
        )
    lines += [f"- missing: {line}" for line in results["missing"]]
    for target in results["targets"]:
        lines.append(
            f"- {'MET' if target['met'] else 'MISSED'}: {target['target']} — measured {number(target['measured'])}"
        )
    return "\n".join(lines)


def device_name(dry_run: bool) -> str:
    if dry_run:
        return "CPU stand-ins (dry run)"
    try:
        import torch

        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    except Exception as error:  # noqa: BLE001 (the name is only a label)
        return f"a GPU torch cannot name ({type(error).__name__})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/gpu_bench.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, help="epochs per timed training (default 300, dry run 2)")
    parser.add_argument("--reps", type=int, default=2, help="timed trainings per contender, interleaved (default 2)")
    parser.add_argument("--phase-epochs", type=int, help="epochs of the phase timings (default 20, dry run 2)")
    parser.add_argument("--budget", type=float, default=170.0, help="no training starts that would end past this")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "gpu-timings.json", help="the results file")
    parser.add_argument("--dry-run", action="store_true", help="CPU stand-ins at small sizes")
    args = parser.parse_args(argv)
    args.epochs = args.epochs or (2 if args.dry_run else 300)
    args.phase_epochs = args.phase_epochs or (2 if args.dry_run else 20)
    args.reps = 1 if args.dry_run else args.reps
    args.warmup_epochs = 1 if args.dry_run else 3

    def log(message):
        print(message, file=sys.stderr, flush=True)

    made = makers(args.dry_run)
    log(f"timing {', '.join(made)}: {args.reps} x {args.epochs} epochs (+ {args.warmup_epochs} warm-up)")
    mnist, device = load_mnist(None), device_name(args.dry_run)
    dispatches = {}
    for recipe in ("default", "book"):
        try:
            dispatches[recipe] = count_dispatches(recipe == "book", **(DRY_SIZES if args.dry_run else {}))
        except Exception as error:  # noqa: BLE001 (a missing count is noted, the timings still run)
            log(f"  cannot count the array operations ({recipe}): {type(error).__name__}: {error}")
    missing = []

    def save(rows):
        report.write_json(document(device, args.epochs, rows, missing, dispatches), args.json)

    rows = measure(mnist, made, args, log, save, missing)
    if PEER not in rows:
        print("gpu_bench: the PyTorch peer cannot run here; nothing to compare with")
        return 1
    print(table(document(device, args.epochs, rows, missing, dispatches)))
    log(f"wrote {args.json}")
    failed = any(row["errors"] for row in rows.values())
    return 1 if failed or (missing and not args.dry_run) else 0


if __name__ == "__main__":
    sys.exit(main())
