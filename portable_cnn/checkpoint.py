"""Checkpoint files: one ``.npz`` holding the parameters as host arrays and a JSON metadata record.

A checkpoint is written atomically (a temporary file in the same folder, fsync, ``os.replace``), so a
crash or a full disk never leaves a half-written file where a good one was; the temporary files that
a killed writer left behind (``.NAME.XXXXXXXX.tmp``) go with the next successful write of NAME. It holds plain numpy
arrays and JSON, no pickles, so it loads on every backend and in any later version that reads its
``format_version``. Every way a file can be wrong (missing, empty, truncated, corrupt, foreign, from a
newer version, inconsistent) is a :class:`~portable_cnn.errors.UserError` with a one-line message.

The metadata record (``meta``)::

    format, format_version, package_version, saved_at
    recipe      "book" or "default", with the fields that define the run
    config      every Config field of the run that wrote it
    model       kernel_size, positions, num_kernels, dtype (the arrays' shapes follow from these)
    epoch       epochs completed
    batch       batches completed of the next epoch (0 at an epoch boundary; > 0 after an interrupt)
    partial     that epoch's counts so far: correct, loss, seconds (None when batch is 0)
    rng         the random source's state at the start of epoch ``epoch``
    history     one EpochRecord (as a dict) per completed epoch
    data        where the training images came from and their SHA-256
    backend     the backend and device that wrote it
"""

from __future__ import annotations

import datetime
import io
import json
import os
import pathlib
import re
import tempfile
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from .errors import UserError
from .model import NUM_CLASSES, ConvNet

FORMAT = "portable-cnn checkpoint"
FORMAT_VERSION = 1
_ZIP_MAGIC = b"PK\x03\x04"
_ARRAYS = ("kernels", "weights")


@dataclass
class Checkpoint:
    """A checkpoint's parameters (numpy arrays) and metadata, as read from or written to ``path``."""

    kernels: np.ndarray
    weights: np.ndarray
    meta: dict
    path: str = ""

    @property
    def epoch(self) -> int:
        return self.meta["epoch"]

    @property
    def batch(self) -> int:
        return self.meta["batch"]

    @property
    def config(self) -> dict:
        return self.meta["config"]

    @property
    def history(self) -> list[dict]:
        return self.meta["history"]

    @property
    def rng(self) -> dict:
        return self.meta["rng"]

    @property
    def dtype(self) -> str:
        return self.meta["model"]["dtype"]

    def describe(self) -> str:
        """One line for people: the recipe, epochs, dtype and where it stopped."""
        where = f"{self.epoch} epochs" + (f" and {self.batch} batches" if self.batch else "")
        return f"{self.path}: {self.meta['recipe']['name']} recipe, {where}, {self.dtype}, saved by portable-cnn {self.meta['package_version']}"

    def to_model(self, backend) -> ConvNet:
        """The network with these parameters, as arrays of ``backend`` (bit for bit the saved values)."""
        dtype = backend.dtype(self.dtype)
        shape = self.meta["model"]
        return ConvNet(backend.asarray(self.kernels, dtype), backend.asarray(self.weights, dtype), shape["kernel_size"], shape["positions"])


def metadata(*, config: dict, recipe: dict, model: ConvNet, dtype: str, epoch: int, batch: int = 0,
             partial: dict | None = None, rng: dict, history: list[dict], data: dict, backend: dict) -> dict:
    """The metadata record of a checkpoint (see the module doc); ``model`` gives the shapes."""
    from . import __version__

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "recipe": recipe,
        "config": config,
        "model": {
            "kernel_size": model.kernel_size,
            "positions": model.positions,
            "num_kernels": model.num_kernels,
            "dtype": dtype,
        },
        "epoch": epoch,
        "batch": batch,
        "partial": partial,
        "rng": rng,
        "history": history,
        "data": data,
        "backend": backend,
    }


def check_writable(path) -> None:
    """Refuse, before any work is done, a checkpoint path that could never be written."""
    path = pathlib.Path(path)
    folder = path.parent
    if path.is_dir():
        raise UserError(f"cannot save a checkpoint to {path}: it is a folder; give a file name such as {path / 'model.npz'}")
    if not folder.is_dir():
        raise UserError(f"cannot save a checkpoint to {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise UserError(f"cannot save a checkpoint to {path}: the folder {folder} is not writable")


def save(path, checkpoint: Checkpoint) -> pathlib.Path:
    """Write ``checkpoint`` to ``path`` atomically; never leaves a partial file behind."""
    path = pathlib.Path(path)
    for name, array in (("kernels", checkpoint.kernels), ("weights", checkpoint.weights)):
        if not np.all(np.isfinite(array)):
            raise ValueError(f"refusing to save non-finite {name} to {path}")  # the trainer checks before it saves
    encoded = json.dumps(checkpoint.meta, allow_nan=False).encode("utf-8")
    buffer = io.BytesIO()
    np.savez(buffer, kernels=np.ascontiguousarray(checkpoint.kernels), weights=np.ascontiguousarray(checkpoint.weights),
             metadata=np.frombuffer(encoded, dtype=np.uint8))
    check_writable(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private; give it a normal file's mode
        with os.fdopen(handle, "wb") as file:
            file.write(buffer.getbuffer())
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        _remove_stale_temporaries(path)
    except OSError as error:
        _remove(temporary)
        raise UserError(f"cannot save the checkpoint {path}: {error.strerror or error}") from None
    except BaseException:
        _remove(temporary)
        raise
    _fsync_folder(path.parent)
    return path


def load(path) -> Checkpoint:
    """Read and validate a checkpoint; any fault is a UserError naming the file and the fault."""
    path = pathlib.Path(path)
    try:
        with open(path, "rb") as file:
            head = file.read(len(_ZIP_MAGIC))
    except FileNotFoundError:
        raise UserError(f"no checkpoint at {path}") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder, not a checkpoint file") from None
    except OSError as error:
        raise UserError(f"cannot read the checkpoint {path}: {error.strerror or error}") from None
    if not head:
        raise UserError(f"the checkpoint {path} is empty (0 bytes)")
    if head != _ZIP_MAGIC:
        raise UserError(f"{path} is not a portable-cnn checkpoint (not an .npz file)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "metadata" not in archive.files:
                raise UserError(f"{path} is an .npz file but not a portable-cnn checkpoint (it has no metadata)")
            arrays = {name: archive[name] for name in (*_ARRAYS, "metadata") if name in archive.files}
    except UserError:
        raise
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError) as error:
        raise UserError(f"the checkpoint {path} is truncated or corrupt ({_reason(error)})") from None
    meta = _parse_metadata(arrays.pop("metadata"), path)
    missing = [name for name in _ARRAYS if name not in arrays]
    if missing:
        raise UserError(f"the checkpoint {path} is corrupt: it has no {missing[0]} array")
    checkpoint = Checkpoint(arrays["kernels"], arrays["weights"], meta, str(path))
    _check_consistent(checkpoint, path)
    return checkpoint


def _parse_metadata(raw: np.ndarray, path) -> dict:
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"the checkpoint {path} is corrupt: its metadata is not readable JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{path} is an .npz file but not a portable-cnn checkpoint")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise UserError(
            f"the checkpoint {path} has format version {version}, newer than this portable-cnn reads "
            f"({FORMAT_VERSION}); upgrade portable-cnn"
        )
    return meta


def _check_consistent(checkpoint: Checkpoint, path) -> None:
    """The metadata has what readers need and the arrays have the shapes and dtype it states."""
    meta = checkpoint.meta
    try:
        shape = meta["model"]
        kernel_size, positions, num_kernels = (int(shape[key]) for key in ("kernel_size", "positions", "num_kernels"))
        dtype = np.dtype(shape["dtype"])
        for key, kind in (("epoch", int), ("batch", int), ("config", dict), ("history", list), ("rng", dict), ("recipe", dict)):
            if not isinstance(meta[key], kind):
                raise TypeError(key)
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(f"the checkpoint {path} is corrupt: its metadata lacks a valid '{_reason(error)}'") from None
    expected = {"kernels": (kernel_size**2, num_kernels), "weights": (positions**2 * num_kernels, NUM_CLASSES)}
    for name, wanted in expected.items():
        array = getattr(checkpoint, name)
        if array.shape != wanted or array.dtype != dtype:
            raise UserError(
                f"the checkpoint {path} is corrupt: {name} is {array.dtype}{list(array.shape)}, "
                f"its metadata says {dtype}{list(wanted)}"
            )
        if not np.all(np.isfinite(array)):
            raise UserError(f"the checkpoint {path} is corrupt: its {name} contain NaN or infinity")


def _reason(error: BaseException) -> str:
    text = str(error).strip().strip("'\"")
    return text.splitlines()[0] if text else type(error).__name__


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _remove_stale_temporaries(path: pathlib.Path) -> None:
    """Remove what killed writers of ``path`` left: its own temporaries' pattern only (``mkstemp``'s 8 characters)."""
    own = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")
    for entry in os.scandir(path.parent):
        if own.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            _remove(entry.path)


def _fsync_folder(folder) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
