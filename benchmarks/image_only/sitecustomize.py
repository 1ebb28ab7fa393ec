"""The GPU check's dry run (benchmarks/gpu_check.sh --dry-run) puts this folder first on PYTHONPATH, so that Python
imports this module at start-up in every process of the run: it hides each installed package that the lent GPU
image may lack, so that the dry run sees only what the check can count on there.

Seen: the standard library, the folders on PYTHONPATH (the checkout, the prepared wheels unpacked) and the
distributions in :data:`IMAGE` with everything they require. Hidden: every other installed distribution (Pillow,
matplotlib, dask, tqdm, playwright, array-api-compat, array-api-strict, threadpoolctl: the last three come from
the wheels instead). Importing a hidden one raises ModuleNotFoundError, as it would there.
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import os
import re
import site
import sys

# What the lent image holds, as its description lists it, and the suite imports: the libraries of the check (numpy,
# torch, jax, pytest) and those test modules import at collection (scikit-learn, onnx, onnxruntime, safetensors).
# The image has more (Pillow, matplotlib, tqdm ...): the dry run counts on less, so the check never needs them.
IMAGE = ("numpy", "torch", "jax", "jaxlib", "pytest", "scikit-learn", "onnx", "onnxruntime", "safetensors")


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def _required(roots) -> set[str]:
    """The normalised names of ``roots`` and of every distribution they require (extras and markers left out)."""
    seen, todo = set(), [_name(root) for root in roots]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requirements = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for requirement in requirements:
            if "extra ==" in requirement or "extra==" in requirement:
                continue
            todo.append(_name(re.split(r"[\s;<>=!~\[(]", requirement.strip(), maxsplit=1)[0]))
    return seen


def _visible_modules() -> set[str]:
    """Top-level module names that the image's distributions provide."""
    wanted = _required(IMAGE)
    return {
        module
        for module, distributions in importlib.metadata.packages_distributions().items()
        if any(_name(distribution) in wanted for distribution in distributions)
    }


class ImageOnlyPathFinder:
    """Python's path finder, except that a hidden top-level module is looked for outside the installed packages'
    folders only (so ``import`` raises ModuleNotFoundError and ``importlib.util.find_spec`` says None for it)."""

    def __init__(self, visible: set[str], hidden_folders: set[str]):
        self.visible, self.hidden_folders = visible, hidden_folders

    def find_spec(self, fullname, path=None, target=None):
        if path is None and fullname not in self.visible:
            path = [entry for entry in sys.path if os.path.realpath(entry or ".") not in self.hidden_folders]
        return importlib.machinery.PathFinder.find_spec(fullname, path, target)

    def invalidate_caches(self):
        importlib.machinery.PathFinder.invalidate_caches()


_finder = ImageOnlyPathFinder(_visible_modules(), {os.path.realpath(folder) for folder in site.getsitepackages()})
sys.meta_path[:] = [_finder if entry is importlib.machinery.PathFinder else entry for entry in sys.meta_path]
