"""300 epochs on the GPU: portable-cnn on CuPy (default recipe and --book) against idiomatic PyTorch CUDA.

    python benchmarks/gpu_bench.py [--epochs 300] [--reps 3] [--out benchmarks/results] [--dry-run]

Each contender runs whole trainings (MNIST host arrays -> ``--epochs`` epochs of 1000 training
images and the 10000-image evaluation every epoch), in interleaved rounds after a short warm-up
training (CUDA context, cuBLAS handles, CuPy's kernel compilation), with the device synchronised
before and after every timer. portable-cnn runs as users run it, ``portable_cnn.train``; the peer
is :mod:`benchmarks.torch_peer`. Writes ``<out>/gpu-<name>.json`` and prints a Markdown table with
the targets: the default recipe's 300 epochs in at most 10 s, CuPy within 1.2x of PyTorch CUDA.
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
TARGET_RATIO = 1.2  # the default recipe's time over the PyTorch peer's
DEFAULT, PEER = "default", "peer"


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
    """A whole training through the library API; returns (final test accuracy, seconds of each epoch)."""
    from portable_cnn import Config, train

    history = train(Config(epochs=epochs, quiet=True, **settings), mnist).history
    return history[-1].test_acc, [record.seconds for record in history]


def peer_run(mnist, epochs: int, device: str, **settings):
    from benchmarks.torch_peer import TorchPeer

    peer = TorchPeer(mnist, device=device, **settings)
    for _ in range(epochs):
        peer.train_epoch()
        correct = peer.evaluate()
    return correct / peer.test_images.shape[0], None


def runs(backend: str = "cupy", device: str = "cuda", **settings) -> dict:
    """key -> (label, run(mnist, epochs)): portable-cnn's default recipe and --book on ``backend``, the
    default recipe on torch ``device``, and the PyTorch peer there; ``settings`` are Config fields."""
    return {
        DEFAULT: (
            f"portable-cnn {backend} float32 (default recipe)",
            lambda mnist, n: portable_run(mnist, n, backend=backend, **settings),
        ),
        "book": (
            f"portable-cnn {backend} --book (float64)",
            lambda mnist, n: portable_run(mnist, n, backend=backend, book=True, **settings),
        ),
        "torch": (
            f"portable-cnn torch {device} float32 (default recipe)",
            lambda mnist, n: portable_run(mnist, n, backend="torch", device=device, **settings),
        ),
        PEER: (f"PyTorch idiomatic {device} float32", lambda mnist, n: peer_run(mnist, n, device, **settings)),
    }


def cuda_sync():
    """Wait for both libraries' queued GPU work (each contender uses one of them)."""
    import cupy
    import torch

    cupy.cuda.Device().synchronize()
    torch.cuda.synchronize()


def measure(
    mnist, trainings: dict, epochs: int, reps: int, sync, warmup_epochs: int = WARMUP_EPOCHS, log=print
) -> dict:
    """Time ``reps`` interleaved whole trainings of each of :func:`runs`, after one short warm-up training each."""
    from benchmarks.timing import interleaved, paired_ratios, summary, timed

    accuracies, per_epoch = {}, {}

    def run_once(key, count):
        def go():
            accuracies[key], per_epoch[key] = trainings[key][1](mnist, count)

        seconds = timed(go, sync)
        log(f"  {key:>8}: {count} epochs in {seconds:.2f} s")
        return {"seconds": seconds}

    for key in trainings:
        run_once(key, warmup_epochs)
    samples = interleaved({key: reps for key in trainings}, lambda key: run_once(key, epochs), warmup=0)
    return {
        key: {
            "label": label,
            "samples": samples[key],
            "seconds": summary([s["seconds"] for s in samples[key]]),
            "final_test_acc": accuracies[key],
            "library_epoch_seconds": summary(per_epoch[key]) if per_epoch[key] else None,
            "vs_peer": summary(paired_ratios(samples[key], samples[PEER], "seconds")),
        }
        for key, (label, _) in trainings.items()
    }


def document(gpu: str, found_by: str, epochs: int, reps: int, tests_exit_code, rows: dict) -> dict:
    """The results file: the rows and the two targets, judged on medians."""
    default = rows[DEFAULT]
    targets = [
        {
            "target": f"default recipe, {epochs} epochs with the 10k evaluation every epoch <= {TARGET_SECONDS:g} s",
            "measured": default["seconds"]["median"],
            "met": default["seconds"]["median"] <= TARGET_SECONDS,
        },
        {
            "target": f"default recipe within {TARGET_RATIO}x of the PyTorch peer",
            "measured": default["vs_peer"]["median"],
            "met": default["vs_peer"]["median"] <= TARGET_RATIO,
        },
    ]
    return {
        "schema": 1,
        "gpu": gpu,
        "found_by": found_by,
        "epochs": epochs,
        "reps": reps,
        "tests_exit_code": tests_exit_code,
        "contenders": rows,
        "targets": targets,
    }


def table(results: dict) -> str:
    from benchmarks.report import number, spread

    lines = [
        f"### {results['gpu']} ({results['found_by']}), {results['epochs']} epochs",
        "",
        "| contender | seconds per run | per epoch (library's own timer) | ÷ PyTorch peer | final test acc |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in results["contenders"].values():
        lines.append(
            f"| {row['label']} | {spread(row['seconds'])} | {spread(row['library_epoch_seconds'])} "
            f"| {spread(row['vs_peer'])} | {number(row['final_test_acc'])} |"
        )
    lines.append("")
    lines += [
        f"- {'MET' if t['met'] else 'MISSED'}: {t['target']} — measured {number(t['measured'])}"
        for t in results["targets"]
    ]
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
    trainings = runs()
    epochs = f"({args.reps} x {args.epochs} + {WARMUP_EPOCHS} warm-up) epochs"
    plan = f"{len(trainings)} contenders x {epochs}: {', '.join(trainings)}"
    if args.dry_run:
        print(f"gpu_bench: found {gpu} ({found_by}); would time {plan}")
        return 0

    from portable_cnn import load_mnist

    def log(message):
        print(message, file=sys.stderr, flush=True)

    log(f"{gpu}: timing {plan}")
    rows = measure(load_mnist(args.data_dir), trainings, args.epochs, args.reps, cuda_sync, log=log)
    results = document(gpu, found_by, args.epochs, args.reps, args.tests_exit_code, rows)
    path = args.out / f"gpu-{re.sub(r'[^a-z0-9]+', '-', gpu.lower()).strip('-')}.json"
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
