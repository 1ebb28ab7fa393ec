"""Writing files safely: the one writable-path check and the one atomic write of the package."""

from __future__ import annotations

import os
import pathlib
import re
import tempfile

from .errors import UserError, reason


def check_writable(path, what: str) -> pathlib.Path:
    """Refuse, before any work is done, a path ``what`` (e.g. "a checkpoint") could never be written to."""
    path = pathlib.Path(path)
    folder = path.parent
    if path.is_dir():
        raise UserError(f"cannot write {what} to {path}: it is a folder; give a file name inside it")
    if not folder.is_dir():
        raise UserError(f"cannot write {what} to {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise UserError(f"cannot write {what} to {path}: the folder {folder} is not writable")
    return path


def write_atomically(path, data: bytes, what: str) -> pathlib.Path:
    """Replace ``path`` by ``data`` all at once (temporary file, fsync, rename): a crash or a full disk
    leaves the old file, never a partial one, and no temporary file behind; the temporaries that a killed
    writer left (``.NAME.XXXXXXXX.tmp``) go with the next successful write of NAME."""
    path = check_writable(path, what)
    mode = path.stat().st_mode & 0o777 if path.is_file() else 0o666 & ~_umask()
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(temporary, mode)  # mkstemp makes it private; keep the old file's mode or a new file's
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        _remove_stale_temporaries(path)
    except OSError as error:
        _remove(temporary)
        raise UserError(f"cannot write {what} {path}: {error.strerror or reason(error)}") from None
    except BaseException:
        _remove(temporary)
        raise
    _fsync_folder(path.parent)
    return path


def _remove_stale_temporaries(path: pathlib.Path) -> None:
    """Remove what killed writers of ``path`` left: its own temporaries' pattern only (``mkstemp``'s 8 characters)."""
    own = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")
    for entry in os.scandir(path.parent):
        if own.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            _remove(entry.path)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


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
