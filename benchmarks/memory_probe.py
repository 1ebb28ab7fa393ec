"""Peak memory of one training epoch and one evaluation of a contender, in a fresh process.

    python benchmarks/memory_probe.py KEY [--set NAME=VALUE ...] [--data-dir DIR]

Prints one JSON object. After a warm-up epoch (so that one-time buffers of BLAS, oneDNN ... are not counted) the
kernel's peak-RSS mark is reset (``/proc/self/clear_refs``) and each phase's peak read back from ``VmHWM``, whatever
library allocated it; ``MALLOC_MMAP_THRESHOLD_`` is pinned so that freed blocks leave the process at once. numpy
reports its buffers to ``tracemalloc``: a second count for the numpy-based contenders.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MIB = 2**20
TRACEMALLOC_SEES = ("notebook", "numpy", "strict")  # contender keys whose arrays are numpy buffers


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return int(re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.MULTILINE).group(1))


def peak_of(fn, trace: bool) -> dict:
    """MiB of resident memory ``fn`` added at its peak, and (if ``trace``) tracemalloc's peak."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    before = _status_kib("VmRSS")
    if trace:
        tracemalloc.start()
    fn()
    result = {"rss_mib": (_status_kib("VmHWM") - before) / 1024}
    if trace:
        result["tracemalloc_mib"] = tracemalloc.get_traced_memory()[1] / MIB
        tracemalloc.stop()
    return result


def measure(contender) -> dict:
    trace = contender.key.startswith(TRACEMALLOC_SEES)
    contender.train_epoch()
    contender.evaluate()
    return {"train": peak_of(contender.train_epoch, trace), "eval": peak_of(contender.evaluate, trace)}


def probe(key: str, overrides: dict | None = None, data_dir: str | None = None) -> dict:
    """The probe's figures from a fresh process (or ``{"error": ...}``)."""
    command = [sys.executable, str(Path(__file__).resolve()), key]
    command += [f"--set={name}={value}" for name, value in (overrides or {}).items()]
    command += ["--data-dir", data_dir] if data_dir else []
    environment = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(128 * 1024))
    done = subprocess.run(command, check=False, env=environment, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout)


def main(argv=None):
    from benchmarks.contenders import CONTENDERS, build
    from portable_cnn import load_mnist

    parser = argparse.ArgumentParser(description="Peak memory of one epoch of a contender, in this (fresh) process.")
    parser.add_argument("key", choices=sorted(CONTENDERS))
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a sweep setting")
    parser.add_argument("--data-dir")
    args = parser.parse_args(argv)
    settings = {name: int(value) for name, _, value in (text.partition("=") for text in args.set)}
    contender = build(args.key, load_mnist(args.data_dir), **settings)
    print(json.dumps(measure(contender)))


if __name__ == "__main__":
    main()
