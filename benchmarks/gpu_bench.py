"""300 epochs on the GPU: portable-cnn on CuPy (default recipe and --book) against idiomatic PyTorch CUDA.

    python benchmarks/gpu_bench.py [--epochs 300] [--reps 3] [--out benchmarks/results] [--dry-run]

Each contender runs whole trainings (MNIST host arrays -> ``--epochs`` epochs of 1000 training
images and the 10000-image evaluation every epoch), in interleaved rounds after a short warm-up
training (CUDA context, cuBLAS handles, CuPy's kernel compilation), with the device synchronised
before and after every timer. portable-cnn runs as users run it, ``portable_cnn.train``; the peer
is :mod:`benchmarks.torch_peer`. Writes ``<out>/<gpu>.json`` and prints a Markdown table with the
targets: the default recipe's 300 epochs in at most 10 s, CuPy within 1.2x of PyTorch CUDA.
``--dry-run`` only reports what it finds (GPU, libraries) and what it would run.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

WARMUP_EPOCHS = 3
TARGET_SECONDS = 10.0  # the default recipe's 300 epochs on an H200
TARGET_RATIO = 1.2  # cupy's time over PyTorch CUDA's


def find_gpu() -> tuple[str | None, str]:
    """(GPU name, how it was found) or (None, why not), asking torch and then cupy."""
    reasons = []
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0), f"torch {torch.__version__}, CUDA {torch.version.cuda}"
        reasons.append(f"torch {torch.__version__} sees no CUDA device")
    except ImportError:
        reasons.append("torch is not installed")
    try:
        import cupy
    except ImportError:
        reasons.append("cupy is not installed")
        return None, "; ".join(reasons)
    try:
        if cupy.cuda.runtime.getDeviceCount():
            return cupy.cuda.runtime.getDeviceProperties(0)["name"].decode(), f"cupy {cupy.__version__}"
        reasons.append("cupy sees no device")
    except cupy.cuda.runtime.CUDARuntimeError as error:  # no driver, or no device it can use
        reasons.append(f"cupy cannot reach a GPU ({error})")
    return None, "; ".join(reasons)


def portable_run(mnist, epochs: int, **settings):
    """A whole training through the library API; returns (final test accuracy, seconds per epoch)."""
    from portable_cnn import Config, train

    history = train(Config(epochs=epochs, quiet=True, **settings), mnist).history
    return history[-1].test_acc, [record.seconds for record in history]


def peer_run(mnist, epochs: int, device: str):
    from benchmarks.torch_peer import TorchPeer

    peer = TorchPeer(mnist, device=device)
    for _ in range(epochs):
        peer.train_epoch()
        correct = peer.evaluate()
    return correct / peer.test_images.shape[0], None


RUNS = {
    "cupy": ("portable-cnn cupy float32 (default recipe)", lambda mnist, epochs: portable_run(mnist, epochs, backend="cupy")),
    "cupy-book": ("portable-cnn cupy --book (float64)", lambda mnist, epochs: portable_run(mnist, epochs, backend="cupy", book=True)),
    "torch-cuda": (
        "portable-cnn torch CUDA float32 (default recipe)",
        lambda mnist, epochs: portable_run(mnist, epochs, backend="torch", device="cuda"),
    ),
    "pytorch-cuda": ("PyTorch idiomatic CUDA float32", lambda mnist, epochs: peer_run(mnist, epochs, "cuda")),
}


def synchronize():
    """Wait for both libraries' queued GPU work (each contender uses one of them)."""
    import cupy
    import torch

    cupy.cuda.Device().synchronize()
    torch.cuda.synchronize()


def measure(mnist, epochs: int, reps: int, log) -> dict:
    from benchmarks.timing import interleaved, paired_ratios, summary, timed

    accuracies, per_epoch = {}, {}

    def run_once(key, count):
        def go():
            accuracies[key], per_epoch[key] = RUNS[key][1](mnist, count)

        seconds = timed(go, synchronize)
        log(f"  {key:>12}: {count} epochs in {seconds:.2f} s")
        return {"seconds": seconds}

    for key in RUNS:  # warm-up: a short training of each, not timed
        run_once(key, WARMUP_EPOCHS)
    samples = interleaved({key: reps for key in RUNS}, lambda key: run_once(key, epochs), warmup=0)
    rows = {}
    for key, (label, _) in RUNS.items():
        rows[key] = {
            "label": label,
            "samples": samples[key],
            "seconds": summary([s["seconds"] for s in samples[key]]),
            "final_test_acc": accuracies[key],
            "library_epoch_seconds": summary(per_epoch[key]) if per_epoch[key] else None,
            "vs_pytorch_cuda": summary(paired_ratios(samples[key], samples["pytorch-cuda"], "seconds")),
        }
    return rows


def targets(rows: dict, epochs: int) -> list[dict]:
    default = rows["cupy"]
    return [
        {"target": f"cupy default recipe, {epochs} epochs with the 10k evaluation every epoch <= {TARGET_SECONDS:g} s",
         "measured": default["seconds"]["median"], "met": default["seconds"]["median"] <= TARGET_SECONDS},
        {"target": f"cupy within {TARGET_RATIO}x of PyTorch CUDA", "measured": default["vs_pytorch_cuda"]["median"],
         "met": default["vs_pytorch_cuda"]["median"] <= TARGET_RATIO},
    ]


def table(results: dict) -> str:
    from benchmarks.report import number, spread

    lines = [
        f"### {results['gpu']} ({results['found_by']}), {results['epochs']} epochs",
        "",
        "| contender | seconds per run | per epoch (library's own timer) | ÷ PyTorch CUDA | final test acc |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in results["contenders"].values():
        lines.append(
            f"| {row['label']} | {spread(row['seconds'])} | {spread(row['library_epoch_seconds'])} "
            f"| {spread(row['vs_pytorch_cuda'])} | {number(row['final_test_acc'])} |"
        )
    lines.append("")
    lines += [f"- {'MET' if t['met'] else 'MISSED'}: {t['target']} — measured {number(t['measured'])}" for t in results["targets"]]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/gpu_bench.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--reps", type=int, default=3, help="measured trainings per contender, interleaved")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--data-dir", help="MNIST folder (default: $PORTABLE_CNN_DATA_DIR or the package's search)")
    parser.add_argument("--tests-exit-code", type=int, help="exit status of the gpu-marked tests, recorded in the JSON")
    parser.add_argument("--dry-run", action="store_true", help="report the GPU and the plan, run nothing")
    args = parser.parse_args(argv)

    gpu, found_by = find_gpu()
    if gpu is None:
        print(f"gpu_bench: no NVIDIA GPU usable here ({found_by})")
        return 0 if args.dry_run else 1
    plan = f"{len(RUNS)} contenders x ({args.reps} x {args.epochs} + {WARMUP_EPOCHS} warm-up) epochs: {', '.join(RUNS)}"
    if args.dry_run:
        print(f"gpu_bench: found {gpu} ({found_by}); would time {plan}")
        return 0

    from portable_cnn import load_mnist

    def log(message):
        print(message, file=sys.stderr, flush=True)

    log(f"{gpu}: timing {plan}")
    rows = measure(load_mnist(args.data_dir), args.epochs, args.reps, log)
    results = {"schema": 1, "gpu": gpu, "found_by": found_by, "epochs": args.epochs, "reps": args.reps,
               "tests_exit_code": args.tests_exit_code, "contenders": rows, "targets": targets(rows, args.epochs)}
    name = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-")
    path = args.out / f"gpu-{name}.json"
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
