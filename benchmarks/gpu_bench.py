"""300 epochs on the GPU (stage 4 of benchmarks/gpu_check.sh): portable-cnn on cupy, torch CUDA and jax, the
PyTorch peer, and ``--book``, each trained whole and timed, and the mask, the step and the evaluation timed apart.

    python benchmarks/gpu_bench.py [--epochs 300] [--reps 2] [--budget 170] [--json PATH] [--dry-run]

Whole trainings (the book's protocol: 1000 training images, the 10000 test images evaluated every epoch) run in
interleaved rounds after a warm-up training of a few epochs each (CUDA contexts, cuBLAS handles, kernel
compilation), with the device synchronised before and after each timer; no new round starts once ``--budget``
seconds are spent. A separate run of ``--phase-epochs`` epochs per contender synchronises at the phase boundaries
(the trainer's callbacks: masks drawn before the first batch, the batches, the evaluation) and reports each phase
per epoch; the peer's masks are inside its step. Each contender's run is tried alone (a crash loses that figure,
noted in its row) and ``--json`` is rewritten after each; then it prints a Markdown table with the targets: the
default recipe on cupy <= 5 s, cupy and jax each <= 1.2x the PyTorch peer. ``--dry-run``: CPU stand-ins (numpy for
cupy, torch and jax on the CPU), 2 epochs of 256 images, one round.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.dispatches import count as count_dispatches  # noqa: E402 (after the sys.path line)
from benchmarks.timing import paired_ratios, summary  # noqa: E402
from portable_cnn import Callback, Config, UserError, get_backend, load_mnist  # noqa: E402
from portable_cnn.backends import LIBRARIES  # noqa: E402

TARGET_SECONDS = 5.0  # the default recipe's 300 epochs on cupy, on an H200
TARGET_RATIO = 1.2  # cupy's and jax's time over the PyTorch peer's
PEER = "peer"
PHASES = ("mask", "step", "evaluation")


@dataclass(frozen=True)
class Setting:
    """Where the contenders run: the GPU, or the dry run's CPU stand-ins at small sizes."""

    cupy: tuple[str, str | None]  # (backend, device) standing for cupy
    torch_device: str
    jax_device: str
    train_size: int = 1000
    test_size: int = 10000
    warmup_epochs: int = 3  # CUDA contexts, cuBLAS handles, kernel compilation


GPU = Setting(cupy=("cupy", "cuda:0"), torch_device="cuda:0", jax_device="cuda:0")
DRY = Setting(
    cupy=("numpy", None), torch_device="cpu", jax_device="cpu", train_size=256, test_size=200, warmup_epochs=1
)


class PhaseTimer(Callback):
    """Per epoch: the seconds before the first batch (the masks), of the batches, and after them (the evaluation),
    with the device synchronised at each boundary."""

    def __init__(self, sync):
        self.sync, self.seconds = sync, {phase: [] for phase in PHASES}
        self._batch, self._images, self._mark = 0, 0, 0.0

    def _lap(self, phase: str) -> None:
        self.sync()
        now = time.perf_counter()
        self.seconds[phase].append(now - self._mark)
        self._mark = now

    def on_train_begin(self, state):
        self.sync()
        self._mark = time.perf_counter()

    def on_batch_begin(self, state):
        if self._batch == 0:
            self._lap("mask")
        self._batch += 1

    def on_batch_end(self, state, images):
        self._images += images
        if self._images == state.batches[-1][1]:  # the epoch's last batch (or its one call) ended
            self._lap("step")

    def on_epoch_end(self, state, record):
        self._lap("evaluation")
        self._batch = self._images = 0
        self._mark = time.perf_counter()  # the epoch's bookkeeping (callbacks after this one) is not a phase


class Portable:
    """portable-cnn through its library API, as users run it."""

    def __init__(self, key: str, label: str, setting: Setting, backend: str, device: str | None, **recipe):
        self.key, self.label = key, label
        self.config = Config(
            backend=backend,
            device=device,
            train_size=setting.train_size,
            test_size=setting.test_size,
            quiet=True,
            **recipe,
        )
        self.backend = get_backend(backend, device)  # a UserError here says the contender cannot run

    def sync(self):
        self.backend.sync()

    def run(self, mnist, epochs: int, callbacks=()) -> float:
        from portable_cnn import train

        return train(dataclasses.replace(self.config, epochs=epochs), mnist, callbacks=callbacks).history[-1].test_acc

    def phases(self, mnist, epochs: int) -> dict:
        timer = PhaseTimer(self.sync)
        self.run(mnist, epochs, callbacks=(timer,))
        return timer.seconds


class Peer:
    """The same network written the PyTorch way (benchmarks/torch_peer.py): dropout's masks are in its step."""

    key, label = PEER, "PyTorch peer"

    def __init__(self, setting: Setting):
        self.device, self.setting = setting.torch_device, setting
        self.label = f"the PyTorch peer, {self.device}"
        get_backend("torch", self.device)

    def _peer(self, mnist):
        from benchmarks.torch_peer import TorchPeer

        sizes = {"train_size": self.setting.train_size, "test_size": self.setting.test_size}
        return TorchPeer(mnist, device=self.device, **sizes)

    def sync(self):
        get_backend("torch", self.device).sync()

    def run(self, mnist, epochs: int) -> float:
        peer = self._peer(mnist)
        correct = 0
        for _ in range(epochs):
            peer.train_epoch()
            correct = peer.evaluate()
        return correct / peer.test_images.shape[0]

    def phases(self, mnist, epochs: int) -> dict:
        peer, seconds = self._peer(mnist), {"mask": [], "step": [], "evaluation": []}
        for _ in range(epochs):
            for phase, call in (("step", peer.train_epoch), ("evaluation", peer.evaluate)):
                self.sync()
                started = time.perf_counter()
                call()
                self.sync()
                seconds[phase].append(time.perf_counter() - started)
        return seconds


def contenders(setting: Setting, log) -> tuple[dict, list[str]]:
    """The contenders that can run here, by key, and a line for each that cannot."""
    cupy_backend, cupy_device = setting.cupy
    makers = {
        "cupy": lambda: Portable("cupy", f"portable-cnn {cupy_backend} float32", setting, cupy_backend, cupy_device),
        "torch": lambda: Portable(
            "torch", f"portable-cnn torch {setting.torch_device} float32", setting, "torch", setting.torch_device
        ),
        "jax": lambda: Portable(
            "jax", f"portable-cnn jax {setting.jax_device} float32", setting, "jax", setting.jax_device
        ),
        PEER: lambda: Peer(setting),
        "book": lambda: Portable(
            "book", f"portable-cnn {cupy_backend} --book (float64)", setting, *setting.cupy, book=True
        ),
    }
    built, missing = {}, []
    for key, make in makers.items():
        library = {"cupy": cupy_backend, "book": cupy_backend, PEER: "torch"}.get(key, key)
        try:
            if library not in LIBRARIES:
                raise UserError(f"backend '{library}' is not in this package's registry")
            built[key] = make()
        except (UserError, ImportError) as error:
            missing.append(f"{key}: {error}")
            log(f"  cannot time {key}: {error}")
    return built, missing


def measure(
    mnist, built: dict, epochs: int, reps: int, phase_epochs: int, budget: float, log, save, warmup: int
) -> dict:
    """Whole trainings in interleaved rounds (within ``budget`` seconds), then each contender's phases; each
    contender's run in its own try (a crash loses that figure only, with its error in the row), and ``save(rows)``
    after each."""
    started, accuracies, errors = time.perf_counter(), {}, {key: [] for key in built}
    samples = {key: [] for key in built}

    def attempt(key, what, call):
        try:
            return call()
        except Exception as error:  # noqa: BLE001 (one contender's crash is its row's error, not the check's end)
            errors[key].append(f"{what}: {type(error).__name__}: {str(error).strip()[:300]}")
            log(f"  {key:>6}: {what} failed: {type(error).__name__}: {error}")
            return None

    def run_once(key):
        contender = built[key]
        contender.sync()
        begun = time.perf_counter()
        accuracies[key] = contender.run(mnist, epochs)
        contender.sync()
        seconds = time.perf_counter() - begun
        log(f"  {key:>6}: {epochs} epochs in {seconds:.2f} s")
        return seconds

    rows = {}

    def row(key, phases=None):
        contender, taken = built[key], samples[key]
        return {
            "label": contender.label,
            "samples": taken,
            "seconds": summary([sample["seconds"] for sample in taken]) if taken else None,
            "final_test_acc": accuracies.get(key),
            "phase_seconds_per_epoch": {phase: summary(values) for phase, values in (phases or {}).items() if values},
            "vs_peer": summary(paired_ratios(taken, samples[PEER], "seconds"))
            if PEER in samples and taken and samples[PEER]
            else None,
            "errors": errors[key],
        }

    for key, contender in built.items():
        attempt(key, "warm-up", lambda contender=contender: contender.run(mnist, warmup))
    for index in range(reps):  # interleaved rounds: a burst of load hits every contender alike
        round_started = time.perf_counter()
        for key in built:
            seconds = attempt(key, f"round {index}", lambda key=key: run_once(key))
            if seconds is not None:
                samples[key].append({"seconds": seconds, "round": index})
            rows[key] = row(key)
            save(rows)
        now = time.perf_counter()
        if now - started + (now - round_started) > budget:
            log(f"  stopping after {index + 1} round(s): the next would pass the {budget:g} s budget")
            break
    for key, contender in built.items():
        phases = attempt(key, "phases", lambda contender=contender: contender.phases(mnist, phase_epochs))
        rows[key] = row(key, phases)
        save(rows)
    return rows


def document(device: str, epochs: int, rows: dict, missing: list[str], dispatches: dict | None = None) -> dict:
    """The results file: the rows and the targets, judged on medians (unmet where a contender is missing)."""

    def median(key, field):
        row = rows.get(key)
        return row[field]["median"] if row and row.get(field) else float("nan")

    targets = [
        (
            f"default recipe on cupy, {epochs} epochs with the 10k evaluation every epoch <= {TARGET_SECONDS:g} s",
            median("cupy", "seconds"),
            TARGET_SECONDS,
        ),
        (f"cupy within {TARGET_RATIO}x of the PyTorch peer", median("cupy", "vs_peer"), TARGET_RATIO),
        (f"jax within {TARGET_RATIO}x of the PyTorch peer", median("jax", "vs_peer"), TARGET_RATIO),
    ]
    return {
        "schema": 3,
        "dispatches": dispatches or {},
        "device": device,
        "epochs": epochs,
        "contenders": rows,
        "missing": missing,
        "targets": [{"target": text, "measured": value, "met": value <= limit} for text, value, limit in targets],
    }


def table(results: dict) -> str:
    from benchmarks.report import number, spread

    lines = [
        f"### {results['device']}, {results['epochs']} epochs",
        "",
        "| contender | s per training | ÷ PyTorch peer | mask ms/epoch | step ms/epoch | evaluation ms/epoch "
        "| final test acc |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results["contenders"].values():
        phases = row["phase_seconds_per_epoch"]
        per_epoch = [f"{1000 * phases[phase]['median']:.2f}" if phase in phases else "in step" for phase in PHASES]
        ratio = spread(row["vs_peer"]) if row["vs_peer"] else "–"
        seconds = spread(row["seconds"]) if row["seconds"] else "failed"
        accuracy = number(row["final_test_acc"]) if row["final_test_acc"] is not None else "–"
        lines.append(f"| {row['label']} | {seconds} | {ratio} | {' | '.join(per_epoch)} | {accuracy} |")
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
    parser.add_argument("--budget", type=float, default=170.0, help="no new round after this many seconds")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "gpu-timings.json", help="the results file")
    parser.add_argument("--dry-run", action="store_true", help="CPU stand-ins at small sizes")
    args = parser.parse_args(argv)
    epochs = args.epochs or (2 if args.dry_run else 300)
    phase_epochs = args.phase_epochs or (2 if args.dry_run else 20)
    reps = 1 if args.dry_run else args.reps

    def log(message):
        print(message, file=sys.stderr, flush=True)

    setting = DRY if args.dry_run else GPU
    built, missing = contenders(setting, log)
    if PEER not in built:
        print("gpu_bench: the PyTorch peer cannot run here; nothing to compare with")
        return 1
    log(
        f"timing {', '.join(built)}: {reps} x {epochs} epochs "
        f"(+ {setting.warmup_epochs} warm-up, {phase_epochs} phased)"
    )
    mnist = load_mnist(None)
    device = device_name(args.dry_run)
    args.json.parent.mkdir(parents=True, exist_ok=True)

    dispatches = {}
    for recipe in ("default", "book"):
        try:
            dispatches[recipe] = count_dispatches(recipe == "book", setting.train_size, setting.test_size)
        except Exception as error:  # noqa: BLE001 (a missing count is noted, the timings still run)
            log(f"  cannot count the array operations ({recipe}): {type(error).__name__}: {error}")

    def save(rows):
        args.json.write_text(json.dumps(document(device, epochs, rows, missing, dispatches), indent=1) + "\n")

    rows = measure(mnist, built, epochs, reps, phase_epochs, args.budget, log, save, setting.warmup_epochs)
    print(table(document(device, epochs, rows, missing, dispatches)))
    log(f"wrote {args.json}")
    failed = [key for key, row in rows.items() if row["errors"]]
    return 1 if failed or (missing and not args.dry_run) else 0


if __name__ == "__main__":
    sys.exit(main())
