"""portable-cnn against the notebook and PyTorch, side by side, measured in one run.

    python benchmarks/run.py [--quick] [--threads N] [--no-scaling] [--machine NAME] [--out benchmarks/results]

Times every contender of ``contenders.py`` (the floor among them) in interleaved rounds, probes their peak memory in
fresh processes, measures this machine's GEMM peak and copy bandwidth, sweeps four settings (``scaling.py``) and
profiles one batch stage by stage (``profile_stages.py``); writes ``<out>/<machine>.json`` and
``<machine>-scaling.png`` and prints the Markdown report. ``--quick`` (about 30 s): the targets' contenders, two
rounds, a short profile, no sweeps or memory probes, into ``<machine>-quick.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks import machine  # imports neither numpy nor torch

FULL = {"reps": 11, "notebook_reps": 3, "sweep_reps": 3, "profile_reps": 21, "no_memory": False}
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
    parser = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="about 30 s: the contenders of the targets, few rounds, no sweeps")
    add("--contenders", help="comma-separated keys (default: all of benchmarks/contenders.py's CONTENDERS)")
    add("--threads", type=positive, help="BLAS/OpenMP/torch threads for every contender (default: the libraries')")
    add("--no-scaling", action="store_true", help="skip the sweeps and their plot")
    add("--machine", help="name of the results file (default: from the core count and BLAS)")
    add("--out", type=Path, default=HERE / "results", help="output folder (default: benchmarks/results)")
    add("--data-dir", default=default_data_dir(), help="MNIST folder (default: %(default)s)")
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if not getattr(args, name, None):
            setattr(args, name, value)
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def document(machine: dict, settings: dict, loads: dict, rows: dict, scaling=None, profile=None) -> dict:
    """The results file's content; :func:`benchmarks.report.markdown` renders it."""
    from benchmarks.contenders import targets

    return {
        "schema": 1,
        "machine": machine,
        "settings": settings,
        "load_average": loads,
        "contenders": rows,
        "targets": targets(rows),
        "scaling": scaling or {},
        "profile": profile or {},
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    machine.pin_threads(args.threads)  # before numpy and torch are imported
    from portable_cnn import UserError

    try:
        return run(args)
    except UserError as error:
        print(f"benchmarks/run.py: error: {error}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    from benchmarks import contenders, memory_probe, profile_stages, report, scaling
    from portable_cnn import UserError, load_mnist
    from portable_cnn.config import Config

    keys = args.contenders.split(",") if args.contenders else list(contenders.CONTENDERS)
    unknown = sorted(set(keys) - set(contenders.CONTENDERS))
    if unknown:
        raise UserError(f"unknown contender(s) {', '.join(unknown)}; choose from {', '.join(contenders.CONTENDERS)}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    loads = {}

    def section(name: str, measure):
        """One part of the benchmark, with the 1-minute load average before and after it."""
        log(name)
        before = os.getloadavg()[0]
        result = measure()
        loads[name] = [before, os.getloadavg()[0]]
        return result

    def measure_machine() -> dict:
        info = machine.describe()
        info["gemm_peak_gflops"] = {dtype: machine.gemm_peak(dtype) for dtype in ("float32", "float64")}
        info["copy_bandwidth_gbs"] = machine.copy_bandwidth()
        return info

    def compare() -> dict:
        built = {key: contenders.build(key, mnist, args.threads) for key in keys}
        rounds = {key: args.notebook_reps if key == contenders.NOTEBOOK else args.reps for key in keys}
        log(f"timing {len(keys)} contenders, interleaved: {rounds}")
        rows = contenders.measure(built, rounds, info["gemm_peak_gflops"], log=log)
        for key in [] if args.no_memory else keys:
            log(f"memory of {key} (fresh process)")
            rows[key]["memory"] = memory_probe.probe(key, data_dir=args.data_dir)
        return rows

    mnist = load_mnist(args.data_dir)
    info = section("machine", measure_machine)
    info["name"] = args.machine or machine.slug(info) + (f"-threads{args.threads}" if args.threads else "")
    rows = section("contenders", compare)
    stem = info["name"] + ("-quick" if args.quick else "")
    swept = None
    if not args.no_scaling:
        swept = section(
            "scaling", lambda: scaling.sweep(mnist, args.sweep_reps, not args.no_memory, args.data_dir, log)
        )
        args.out.mkdir(parents=True, exist_ok=True)
        scaling.plot(swept, args.out / f"{stem}-scaling.png")
    profiled = section("profile", lambda: profile_stages.run(args.profile_reps, Config().validated()))
    settings = {
        key: getattr(args, key) for key in ("quick", "reps", "notebook_reps", "sweep_reps", "profile_reps", "threads")
    }
    results = document(info, settings, loads, rows, swept, profiled)
    path = report.write_json(results, args.out / f"{stem}.json")
    print(report.markdown(results))
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
