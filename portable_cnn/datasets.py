"""MNIST: find it, read it (IDX, gzipped or not, or a Keras mnist.npz), validate it, download it.

Search order of `find_mnist` / `load_mnist`: the `data_dir` argument, then `$PORTABLE_CNN_DATA_DIR`,
then the user cache (`default_cache_dir()`), then `~/.keras/datasets/mnist.npz`, then the book's
subset embedded in the package (`EMBEDDED_DIR`) when the run asks for no more than it holds, then a
download from `MIRRORS` into the cache. Every failure is a `UserError` with a one-line message.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import pathlib
import struct
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from .errors import UserError, reason

ENV_VAR = "PORTABLE_CNN_DATA_DIR"
HINT = (
    "pass --data-dir DIR or set PORTABLE_CNN_DATA_DIR to a folder with the four MNIST IDX files "
    "(train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-...) or a Keras mnist.npz"
)

# (split, part) -> standard IDX file name, without the optional ".gz".
IDX_NAMES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
ROWS = COLS = 28

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
# SHA-256 of the original .gz files as the mirrors serve them. Source: TensorFlow Datasets,
# tensorflow_datasets/url_checksums/mnist.txt (the same bytes as the torchvision MD5s
# f68b3c2d..., d53e105e..., 9fb629c4..., ec29112d...). A re-gzipped copy has other bytes, so
# these are only used for downloads; local files are checked by their IDX headers instead.
GZ_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}


# The book's protocol, shipped in the package: the first 1000 training and all 10000 test images
# (see data/README.md), with the SHA-256 of each uncompressed file, checked whenever it is read.
EMBEDDED_DIR = pathlib.Path(__file__).resolve().parent / "data"
EMBEDDED_SOURCE = "the embedded book subset"
EMBEDDED_SIZES = {"train": 1000, "test": 10000}
EMBEDDED_SHA256 = {
    ("train", "images"): "386bb018796babeaca208787b77c1b9db39532c4098951ea35f4694e744eb4b7",
    ("train", "labels"): "895f65588e45d05babf0b5fa7aee2a0d782d8143b40b5764e596df91bc9dddeb",
    ("test", "images"): "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ("test", "labels"): "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
FULL_SIZES = {"train": 60000, "test": 10000}


@dataclass(frozen=True)
class Source:
    """Where `load_mnist` reads: `kind` is one of KINDS, `path` the folder or .npz file."""

    kind: str
    path: pathlib.Path

    KINDS = ("data directory", ENV_VAR, "cache", "keras", "embedded", "download")

    def describe(self) -> str:
        if self.kind == "embedded":
            return f"{EMBEDDED_SOURCE} ({self.path})"
        if self.kind == "download":
            return f"a download of the full MNIST from {MIRRORS[0]} into {self.path}"
        return f"{self.path} (the {self.kind})"


@dataclass(frozen=True)
class Mnist:
    """The four MNIST arrays, uint8, and where they were read from."""

    train_images: np.ndarray  # (N, 28, 28)
    train_labels: np.ndarray  # (N,)
    test_images: np.ndarray  # (M, 28, 28)
    test_labels: np.ndarray  # (M,)
    source: str


def default_cache_dir() -> pathlib.Path:
    """`$XDG_CACHE_HOME/portable-cnn/mnist`, or `~/.cache/portable-cnn/mnist`."""
    base = os.environ.get("XDG_CACHE_HOME")
    root = pathlib.Path(base) if base and os.path.isabs(base) else pathlib.Path.home() / ".cache"
    return root / "portable-cnn" / "mnist"


def find_mnist(data_dir=None, *, download=True, train_size=None, test_size=None) -> Source:
    """The first place in the search order (see the module doc) that has MNIST; reads nothing.

    `train_size` and `test_size` are the images a run asks for (None: the book's 1000 and 10000); the
    embedded subset is chosen only when it holds that many.
    """
    if data_dir is not None:
        return Source("data directory", pathlib.Path(data_dir).expanduser())
    if os.environ.get(ENV_VAR):
        return Source(ENV_VAR, pathlib.Path(os.environ[ENV_VAR]).expanduser())
    cache = default_cache_dir()
    if all(_idx_paths(cache).values()):
        return Source("cache", cache)
    keras = pathlib.Path.home() / ".keras" / "datasets" / "mnist.npz"
    if keras.is_file():
        return Source("keras", keras)
    wanted = {"train": train_size or 0, "test": test_size or 0}
    too_many = [f"--{split}-size {wanted[split]}" for split in wanted if wanted[split] > EMBEDDED_SIZES[split]]
    if not too_many:
        return Source("embedded", EMBEDDED_DIR)
    if not download:
        raise UserError(
            f"{' and '.join(too_many)} asks for more than {_embedded_holds()}, no full MNIST was found "
            f"(looked in {cache} and {keras}) and download is off: {HINT}"
        )
    return Source("download", cache)


def load_mnist(data_dir=None, *, download=True, train_size=None, test_size=None) -> Mnist:
    """Load MNIST from the first place in the search order that has it (see `find_mnist`)."""
    source = find_mnist(data_dir, download=download, train_size=train_size, test_size=test_size)
    if source.kind in ("data directory", ENV_VAR):
        return _load_explicit(source.path, source.kind)
    if source.kind == "keras":
        return _load_npz(source.path)
    if source.kind == "embedded":
        return _load_idx(source.path, checksums=EMBEDDED_SHA256, source=EMBEDDED_SOURCE)
    if source.kind == "download":
        try:
            download_mnist(source.path)
        except UserError as error:
            asked = (
                f"--train-size {train_size}"
                if (train_size or 0) > EMBEDDED_SIZES["train"]
                else f"--test-size {test_size}"
            )
            raise UserError(f"{asked} asks for more than {_embedded_holds()} and {error}") from None
    return _load_idx(source.path)


def _embedded_holds() -> str:
    return f"{EMBEDDED_SOURCE} holds ({EMBEDDED_SIZES['train']} training, {EMBEDDED_SIZES['test']} test images)"


def download_mnist(dest=None, *, mirrors=None, checksums=None, timeout=30.0) -> pathlib.Path:
    """Download the .gz files named in `checksums` (default `GZ_SHA256`) into `dest` (default: cache).

    Each file comes from the first of `mirrors` (default `MIRRORS`) that serves it with the right
    SHA-256. All files go to temporary files in `dest` first and are moved into place only when every
    one has verified, so a failure leaves nothing behind.
    """
    dest = pathlib.Path(dest) if dest is not None else default_cache_dir()
    mirrors = MIRRORS if mirrors is None else mirrors
    checksums = GZ_SHA256 if checksums is None else checksums
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the MNIST cache directory {dest} ({reason(e)}): {HINT}") from None
    parts = {}
    try:
        for name, sha256 in checksums.items():
            parts[name] = _fetch(name, sha256, mirrors, dest, timeout)
        for name, part in parts.items():
            os.replace(part, dest / name)
    except OSError as e:
        raise UserError(f"cannot write the MNIST download into {dest} ({reason(e)}): {HINT}") from None
    finally:
        for part in parts.values():
            part.unlink(missing_ok=True)
    return dest


def _fetch(name, sha256, mirrors, dest, timeout) -> pathlib.Path:
    """Download `name` from the first mirror whose copy has `sha256`; return its temporary file."""
    failures = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + name
        fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{name}.", suffix=".part")
        tmp = pathlib.Path(tmp)
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                progress = _Progress(name, response.headers.get("Content-Length"))
                while chunk := response.read(1 << 16):
                    digest.update(chunk)
                    out.write(chunk)
                    progress.add(len(chunk))
                progress.close()
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() == sha256:
                return tmp
            failures.append(f"{url} has SHA-256 {digest.hexdigest()}, expected {sha256}")
        except (OSError, http.client.HTTPException, ValueError) as e:
            failures.append(f"{url}: {reason(e)}")
        tmp.unlink(missing_ok=True)
    raise UserError(f"could not download {name} ({'; '.join(failures)}); nothing was saved: {HINT}")


class _Progress:
    """Bytes received and rate of one download, on stderr when it is a terminal (at most 10 updates a second)."""

    def __init__(self, name, length, stream=None, clock=time.monotonic):
        self.stream = sys.stderr if stream is None else stream
        self.shown = self.stream.isatty()
        self.name, self.total = name, int(length) if length and str(length).isdigit() else None
        self.clock, self.start, self.last, self.done = clock, clock(), float("-inf"), 0

    def add(self, count) -> None:
        self.done += count
        if self.shown and self.clock() - self.last >= 0.1:
            self.last = self.clock()
            self.stream.write("\r" + self.line())
            self.stream.flush()

    def line(self) -> str:
        """`name: 1.2 of 9.9 MB, 3.4 MB/s`, the total left out when the server did not say it."""
        seconds = self.clock() - self.start
        rate = f"{self.done / seconds / 1e6:.1f} MB/s" if seconds > 0 else "- MB/s"
        of = f" of {self.total / 1e6:.1f}" if self.total else ""
        return f"downloading {self.name}: {self.done / 1e6:.1f}{of} MB, {rate}"

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r" + self.line() + "\n")
            self.stream.flush()


def _load_explicit(path, origin) -> Mnist:
    """Load from a folder or .npz file the user named; never fall through to other places."""
    where = f"{path} (the {origin})"
    if path.is_file():
        if path.suffix == ".npz":
            return _load_npz(path)
        raise UserError(f"{where} is a file but not a .npz archive: {HINT}")
    if not path.is_dir():
        raise UserError(f"{where} does not exist: {HINT}")
    found = _idx_paths(path)
    if all(found.values()):
        return _load_idx(path)
    if any(found.values()):
        missing = ", ".join(IDX_NAMES[key] for key, p in found.items() if p is None)
        raise UserError(f"{where} lacks {missing} (with or without .gz): add it or {HINT}")
    if (path / "mnist.npz").is_file():
        return _load_npz(path / "mnist.npz")
    raise UserError(f"no MNIST data in {where}: {HINT}")


def _idx_paths(folder) -> dict:
    """(split, part) -> the existing IDX file in `folder` (plain preferred over .gz), or None."""
    found = {}
    for key, name in IDX_NAMES.items():
        candidates = [folder / name, folder / (name + ".gz")]
        found[key] = next((p for p in candidates if p.is_file()), None)
    return found


def _load_idx(folder, *, checksums=None, source=None) -> Mnist:
    """Read the four IDX files in `folder`; with `checksums`, each uncompressed file must have its SHA-256."""
    paths = _idx_paths(folder)
    arrays = {key: _read_idx(p, key[1], (checksums or {}).get(key)) for key, p in paths.items()}
    for split in ("train", "test"):
        images, labels = arrays[split, "images"], arrays[split, "labels"]
        if len(images) != len(labels):
            raise UserError(
                f"{paths[split, 'images']} holds {len(images)} images but {paths[split, 'labels']} holds "
                f"{len(labels)} labels: use a matching pair of files"
            )
    return Mnist(*(arrays[key] for key in IDX_NAMES), source=source or str(folder))


def _read_idx(path, part, sha256=None) -> np.ndarray:
    """Read one IDX file (gzipped if its name ends in .gz) and check its header against its payload.

    With `sha256`, the uncompressed content must have that digest (the embedded files).
    """
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"cannot read {path}: {reason(e)}; replace the file with a good copy") from None
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise UserError(
            f"{path} has SHA-256 {hashlib.sha256(data).hexdigest()}, expected {sha256}: the file is corrupt; "
            f"reinstall portable-cnn or {HINT}"
        )
    magic, header = (IMAGES_MAGIC, ">IIII") if part == "images" else (LABELS_MAGIC, ">II")
    size = struct.calcsize(header)
    if len(data) < size:
        raise UserError(f"{path} is too short ({len(data)} bytes) to be an IDX {part} file; replace it")
    fields = struct.unpack_from(header, data)
    if fields[0] != magic:
        raise UserError(f"{path} has magic number {fields[0]}, expected {magic} for IDX {part}: wrong or corrupt file")
    count, shape = fields[1], (fields[1], *fields[2:])
    if part == "images" and shape[1:] != (ROWS, COLS):
        raise UserError(f"{path} holds {shape[1]}x{shape[2]} images, expected {ROWS}x{COLS}: not MNIST")
    expected = size + int(np.prod(shape))
    if len(data) != expected:
        raise UserError(
            f"{path} is {len(data)} bytes but its header ({count} {part}) needs {expected}: "
            f"the file is {'truncated' if len(data) < expected else 'too long'}; replace it"
        )
    array = np.frombuffer(data, dtype=np.uint8, offset=size).reshape(shape).copy()
    if part == "labels":
        _check_labels(array, path)
    return array


def _load_npz(path) -> Mnist:
    """Read a Keras mnist.npz (x_train, y_train, x_test, y_test)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in npz.files]
            if missing:
                raise UserError(f"{path} lacks the arrays {', '.join(missing)}: not a Keras mnist.npz")
            arrays = {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as e:
        raise UserError(f"cannot read {path}: {reason(e)}; replace it with a good mnist.npz") from None
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (ROWS, COLS):
            raise UserError(f"{path}: x_{split} is {x.dtype} {x.shape}, expected uint8 (N, {ROWS}, {COLS})")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or len(y) != len(x):
            raise UserError(f"{path}: y_{split} is {y.dtype} {y.shape}, expected {len(x)} integer labels")
        _check_labels(y, f"{path} (y_{split})")
        arrays[f"y_{split}"] = y.astype(np.uint8)
    return Mnist(*arrays.values(), source=str(path))


def _check_labels(labels, where) -> None:
    bad = np.flatnonzero((labels < 0) | (labels > 9))
    if bad.size:
        i = int(bad[0])
        raise UserError(f"{where} has label {labels[i]} at index {i}; MNIST labels are 0..9: corrupt file")


def fingerprint(mnist, train_size: int) -> dict:
    """Where the training images came from and the SHA-256 of the ones a run uses (stored in checkpoints)."""
    digest = hashlib.sha256()
    for array in (mnist.train_images[:train_size], mnist.train_labels[:train_size]):
        digest.update(np.ascontiguousarray(array).tobytes())
    return {"source": str(getattr(mnist, "source", "")), "train_sha256": digest.hexdigest()}
