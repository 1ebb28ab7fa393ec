"""Checkpoint files: one ``.npz`` holding the parameters as host arrays and a JSON metadata record.

A checkpoint is written atomically (:func:`files.write_atomically`), so a crash or a full disk never
leaves a half-written file where a good one was. It holds plain numpy
arrays and JSON, no pickles, so it loads on every backend and in any later version that reads its
``format_version``. Every way a file can be wrong (missing, empty, truncated, corrupt, foreign, from a
newer version, inconsistent) is a :class:`~portable_cnn.errors.UserError` with a one-line message.

A :class:`Checkpoint` is a typed record; its metadata (``meta``, stored as JSON) holds::

    format, format_version, package_version, saved_at
    recipe      "book" or "default", with the fields that define the run
    config      every Config field of the run that wrote it
    model       the network's name and architecture (the arrays' shapes follow from these), dtype
    epoch       epochs completed
    batch       batches completed of the next epoch (0 at an epoch boundary; > 0 after an interrupt)
    partial     that epoch's counts so far: correct, loss, seconds (None when batch is 0)
    rng         the random source's state at the start of epoch ``epoch``
    history     one EpochRecord (as a dict) per completed epoch
    data        where the training images came from and their SHA-256
    backend     the backend and device that wrote it
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import pathlib
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np

from .errors import UserError, reason
from .files import write_atomically
from .model import NETWORKS, Network
from .version import __version__

FORMAT = "portable-cnn checkpoint"
FORMAT_VERSION = 1
_ZIP_MAGIC = b"PK\x03\x04"
WHAT = "a checkpoint"  # for files' messages: "cannot write a checkpoint to ..."


@dataclass
class Checkpoint:
    """A checkpoint's parameters (numpy arrays by name) and what the run needs to continue (see the module doc).

    ``model`` is the network's record: ``network`` (its registered name) and its architecture."""

    params: dict[str, np.ndarray]
    model: dict
    recipe: dict
    config: dict
    dtype: str
    epoch: int
    rng: dict
    history: list[dict]
    data: dict
    backend: dict
    batch: int = 0
    partial: dict | None = None
    package_version: str = __version__
    saved_at: str = field(
        default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    )
    path: str = ""

    @property
    def meta(self) -> dict:
        """The metadata record as written to the file."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "package_version": self.package_version,
            "saved_at": self.saved_at,
            "recipe": self.recipe,
            "config": self.config,
            "model": {**self.model, "dtype": self.dtype},
            "epoch": self.epoch,
            "batch": self.batch,
            "partial": self.partial,
            "rng": self.rng,
            "history": self.history,
            "data": self.data,
            "backend": self.backend,
        }

    def describe(self) -> str:
        """One line for people: the recipe, epochs, dtype and where it stopped."""
        where = f"{self.epoch} epochs" + (f" and {self.batch} batches" if self.batch else "")
        saved_by = f"saved by portable-cnn {self.package_version}"
        return f"{self.path}: {self.recipe['name']} recipe, {where}, {self.dtype}, {saved_by}"

    def to_model(self, backend) -> Network:
        """The network with these parameters, as arrays of ``backend`` (bit for bit the saved values)."""
        dtype = backend.dtype(self.dtype)
        params = {name: backend.asarray(array, dtype) for name, array in self.params.items()}
        return network_of(self.model, self.path).from_description(self.model, params)


def network_of(model: dict, path) -> type[Network]:
    """The network class a checkpoint's ``model`` record names (files before networks had names: the ConvNet)."""
    name = model.get("network", "convnet")
    if name not in NETWORKS:
        known = ", ".join(NETWORKS)
        raise UserError(f"the checkpoint {path} holds a '{name}' network; this portable-cnn knows: {known}")
    return NETWORKS[name]


def save(path, checkpoint: Checkpoint) -> pathlib.Path:
    """Write ``checkpoint`` to ``path`` atomically; never leaves a partial file behind."""
    path = pathlib.Path(path)
    for name, array in checkpoint.params.items():
        if not np.all(np.isfinite(array)):
            raise ValueError(f"refusing to save non-finite {name} to {path}")  # the trainer checks before it saves
    encoded = json.dumps(checkpoint.meta, allow_nan=False).encode("utf-8")
    buffer = io.BytesIO()
    arrays = {name: np.ascontiguousarray(array) for name, array in checkpoint.params.items()}
    np.savez(buffer, **arrays, metadata=np.frombuffer(encoded, dtype=np.uint8))
    return write_atomically(path, buffer.getvalue(), WHAT)


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
            arrays = {name: archive[name] for name in archive.files}
    except UserError:
        raise
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError) as error:
        raise UserError(f"the checkpoint {path} is truncated or corrupt ({reason(error)})") from None
    return _record(arrays, _parse_metadata(arrays.pop("metadata"), path), path)


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


def _record(arrays: dict[str, np.ndarray], meta: dict, path) -> Checkpoint:
    """The typed record of a file's arrays and metadata, once the metadata has what readers need and the
    arrays have the shapes and dtype it states."""
    try:
        if not isinstance(meta["model"], dict):
            raise TypeError("model")
        model = {key: value for key, value in meta["model"].items() if key != "dtype"}
        dtype = np.dtype(meta["model"]["dtype"])
        network = network_of(model, path)
        expected = network.shapes(model)
        for key, kind in (
            ("epoch", int),
            ("batch", int),
            ("config", dict),
            ("history", list),
            ("rng", dict),
            ("recipe", dict),
        ):
            if not isinstance(meta[key], kind):
                raise TypeError(key)
        if not isinstance(meta.get("partial") or {}, dict):
            raise TypeError("partial")
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(f"the checkpoint {path} is corrupt: its metadata lacks a valid '{reason(error)}'") from None
    for name, wanted in expected.items():
        if name not in arrays:
            raise UserError(f"the checkpoint {path} is corrupt: it has no {name} array")
        array = arrays[name]
        if array.shape != wanted or array.dtype != dtype:
            raise UserError(
                f"the checkpoint {path} is corrupt: {name} is {array.dtype}{list(array.shape)}, "
                f"its metadata says {dtype}{list(wanted)}"
            )
        if not np.all(np.isfinite(array)):
            raise UserError(f"the checkpoint {path} is corrupt: its {name} contain NaN or infinity")
    fields = {item.name for item in dataclasses.fields(Checkpoint)} - {"params", "model", "path", "dtype"}
    values = {name: meta[name] for name in fields if name in meta}
    return Checkpoint(
        {name: arrays[name] for name in expected},
        model,
        dtype=dtype.name,
        path=str(path),
        **{"data": {}, "backend": {}, **values},
    )
