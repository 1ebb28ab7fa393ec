"""portable-cnn against the notebook and PyTorch, side by side, measured in one run.

    python benchmarks/run.py [--quick] [--threads N] [--out benchmarks/results]

Times every contender's training epoch (1000 images, batches of 128) and evaluation (10000 test
images) in interleaved rounds after a warm-up, with the floor of that work (``floor.py``) as
one of them, probes peak memory in fresh processes, measures this machine's GEMM peak and copy
bandwidth, sweeps batch size, training-set size, kernel count and evaluation batch size, and
profiles one training and one evaluation batch stage by stage.
Writes ``<out>/<machine>.json`` (and ``<machine>-scaling.png``) and prints a Markdown report.
``--quick`` takes about 30 s: the contenders the targets compare (notebook, numpy float32,
PyTorch, the floor), two rounds, a short profile; no sweeps and no memory probes (written to
``<machine>-quick.json``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks import threads  # imports neither numpy nor torch

FULL = {"reps": 11, "notebook_reps": 3, "sweep_reps": 3, "profile_reps": 21}
QUICK = {
    "reps": 2,
    "notebook_reps": 1,
    "sweep_reps": 1,
    "profile_reps": 5,
    "no_scaling": True,
    "no_memory": True,
    "contenders": "notebook,numpy-f32,numpy-f32-threads1,pytorch,floor,floor-threads1",
}


def default_data_dir() -> str | None:
    """$PORTABLE_CNN_DATA_DIR, else the project's shared MNIST beside the checkout, else the package's search."""
    shared = HERE.parents[1] / "shared" / "data" / "mnist"
    return os.environ.get("PORTABLE_CNN_DATA_DIR") or (str(shared) if shared.is_dir() else None)


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="about 30 s: the contenders of the targets, few rounds, no sweeps"
    )
    parser.add_argument(
        "--reps", type=positive, help=f"measured rounds per contender (default {FULL['reps']}, quick {QUICK['reps']})"
    )
    parser.add_argument(
        "--notebook-reps", type=positive, help=f"rounds for the notebook, ~8 s each (default {FULL['notebook_reps']})"
    )
    parser.add_argument(
        "--contenders",
        help="comma-separated keys (default: all: notebook, numpy-f32, numpy-f32-threads1, numpy-f32-native, "
        "numpy-f64, numpy-book, torch-f32, strict-f32, jax-f32, pytorch, floor, floor-threads1)",
    )
    parser.add_argument(
        "--threads", type=positive, help="BLAS/OpenMP/torch threads for every contender (default: the libraries' own)"
    )
    parser.add_argument("--no-scaling", action="store_true", help="skip the sweeps and their plot")
    parser.add_argument("--no-profile", action="store_true", help="skip the per-stage profile")
    parser.add_argument("--no-memory", action="store_true", help="skip the fresh-process memory probes")
    parser.add_argument("--machine", help="name of the results file (default: from the core count and BLAS)")
    parser.add_argument(
        "--out", type=Path, default=HERE / "results", help="output folder (default: benchmarks/results)"
    )
    parser.add_argument("--data-dir", default=default_data_dir(), help="MNIST folder (default: %(default)s)")
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if not getattr(args, name, None):
            setattr(args, name, value)
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure_machine() -> dict:
    from benchmarks import machine

    info = machine.describe()
    info["gemm_peak_gflops"] = {"float32": machine.gemm_peak("float32"), "float64": machine.gemm_peak("float64")}
    info["copy_bandwidth_gbs"] = machine.copy_bandwidth()
    return info


def compare_contenders(mnist, keys, args, peaks) -> dict:
    from benchmarks import compare, contenders, memory_probe

    built = {key: contenders.build(key, mnist, args.threads) for key in keys}
    rounds = {key: args.notebook_reps if key == compare.NOTEBOOK else args.reps for key in keys}
    log(f"timing {len(keys)} contenders, interleaved: {rounds}")
    rows = compare.measure(built, rounds, peaks, log=log)
    if not args.no_memory:
        for key in keys:
            log(f"memory of {key} (fresh process)")
            rows[key]["memory"] = memory_probe.probe(key, data_dir=args.data_dir)
    return rows


def section(loads: dict, name: str, measure):
    """Run one part of the benchmark, recording the 1-minute load average before and after it."""
    log(name)
    before = os.getloadavg()[0]
    result = measure()
    loads[name] = [before, os.getloadavg()[0]]
    return result


def document(machine: dict, settings: dict, loads: dict, rows: dict, scaling=None, profile=None) -> dict:
    """The results file's content; :func:`benchmarks.report.markdown` renders it."""
    from benchmarks import compare

    return {
        "schema": 1,
        "machine": machine,
        "settings": settings,
        "load_average": loads,
        "contenders": rows,
        "targets": compare.targets(rows),
        "scaling": scaling or {},
        "profile": profile or {},
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    threads.pin(args.threads)  # before numpy and torch are imported
    from portable_cnn import UserError

    try:
        return run(args)
    except UserError as error:
        print(f"benchmarks/run.py: error: {error}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    from benchmarks import contenders, profile_stages, report, scaling
    from benchmarks import machine as machine_info
    from portable_cnn import UserError, load_mnist
    from portable_cnn.config import Config

    keys = args.contenders.split(",") if args.contenders else list(contenders.CONTENDERS)
    unknown = sorted(set(keys) - set(contenders.CONTENDERS))
    if unknown:
        raise UserError(f"unknown contender(s) {', '.join(unknown)}; choose from {', '.join(contenders.CONTENDERS)}")
    threads.pin_torch(args.threads)
    loads = {}
    mnist = load_mnist(args.data_dir)
    machine = section(loads, "machine", measure_machine)
    name = args.machine or machine_info.slug(machine) + (f"-threads{args.threads}" if args.threads else "")
    machine["name"] = name

    rows = section(loads, "contenders", lambda: compare_contenders(mnist, keys, args, machine["gemm_peak_gflops"]))
    swept = None
    stem = name + ("-quick" if args.quick else "")
    if not args.no_scaling:
        swept = section(
            loads, "scaling", lambda: scaling.sweep(mnist, args.sweep_reps, not args.no_memory, args.data_dir, log=log)
        )
        args.out.mkdir(parents=True, exist_ok=True)
        scaling.plot(swept, args.out / f"{stem}-scaling.png")
    profiled = None
    if not args.no_profile:
        recipe = Config().validated()
        profiled = section(loads, "profile", lambda: profile_stages.run(args.profile_reps, recipe))
    settings = {
        key: getattr(args, key) for key in ("quick", "reps", "notebook_reps", "sweep_reps", "profile_reps", "threads")
    }
    results = document(machine, settings, loads, rows, swept, profiled)
    path = report.write_json(results, args.out / f"{stem}.json")
    print(report.markdown(results))
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
