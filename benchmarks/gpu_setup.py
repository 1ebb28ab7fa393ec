"""The GPU check's first stage (benchmarks/gpu_check.sh): the carried wheels unpacked into the folder the later stages
put on PYTHONPATH (pure-Python wheels: unpacking is installing, no pip, no index), then the version of every module the
check imports and the devices each GPU library sees. Exit status 1 when a needed module cannot be imported.

    python benchmarks/gpu_setup.py WHEELS_DIR SITE_DIR [--dry-run]
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

NEEDED = ("numpy", "pytest", "array_api_compat", "array_api_strict", "threadpoolctl")
GPU_LIBRARIES = ("cupy", "torch", "jax")


def unpack(wheels: Path, site: Path) -> list[str]:
    site.mkdir(parents=True, exist_ok=True)
    names = sorted(path.name for path in wheels.glob("*.whl"))
    for name in names:
        with zipfile.ZipFile(wheels / name) as wheel:
            wheel.extractall(site)
    return names


def devices(name: str) -> str:
    """What a GPU library sees, in one line (its failure's first line where it sees nothing)."""
    try:
        module = importlib.import_module(name)
        if name == "cupy":
            return f"cupy {module.__version__}: {module.cuda.runtime.getDeviceCount()} GPU(s)"
        if name == "torch":
            count = module.cuda.device_count()
            named = ", ".join(module.cuda.get_device_name(index) for index in range(count))
            return f"torch {module.__version__} (CUDA {module.version.cuda}): {count} GPU(s) {named}"
        return f"jax {module.__version__}: {module.devices()}"
    except Exception as error:  # noqa: BLE001 (a line for the log, whatever went wrong)
        return f"{name}: {type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/gpu_setup.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("wheels", type=Path)
    parser.add_argument("site", type=Path)
    parser.add_argument("--dry-run", action="store_true", help="no GPU here: list no devices")
    args = parser.parse_args(argv)
    print(f"python {sys.version.split()[0]} at {sys.executable}")
    print(f"unpacked into {args.site}: {' '.join(unpack(args.wheels, args.site)) or 'no wheels'}")
    sys.path.insert(0, str(args.site))
    importlib.invalidate_caches()  # the folder was empty (or missing) when Python started
    missing = []
    for module in NEEDED:
        try:
            print(f"{module} {importlib.import_module(module).__version__}")
        except ImportError as error:
            missing.append(module)
            print(f"MISSING {module} ({error}); run benchmarks/gpu_check.sh --prepare where there is internet")
    if not args.dry_run:
        if shutil.which("nvidia-smi"):
            subprocess.run(["nvidia-smi", "-L"], check=False, timeout=20)
        for name in GPU_LIBRARIES:
            print(devices(name), flush=True)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
