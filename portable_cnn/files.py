"""Writing files safely: the one output-path check, the one atomic write and the one folder lock of the package.

An output path is a new name or a regular file (a symlink counts as the file it points to: the target is
written, the link stays); a device, a FIFO or a folder is refused before any work, never replaced.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import stat
import tempfile

from .errors import UserError, reason


def check_output_path(path, what: str) -> pathlib.Path:
    """The file that writing ``what`` (e.g. "a checkpoint") to ``path`` replaces: ``path`` itself, or the
    target of the symlink it is. Raises a UserError, before any work is done, if that could never be a
    regular file written there: a folder, a device such as /dev/null, a FIFO, a missing or unwritable folder."""
    path = pathlib.Path(path)
    try:
        target = pathlib.Path(os.path.realpath(path, strict=False)) if path.is_symlink() else path
        kind = _special_kind(os.stat(target).st_mode) if os.path.lexists(target) else None
    except (OSError, RuntimeError) as error:  # a symlink loop, a path through a file
        raise UserError(f"cannot write {what} to {path}: {getattr(error, 'strerror', None) or reason(error)}") from None
    shown = path if target == path else f"{path} (a link to {target})"
    if kind == "a folder":
        raise UserError(f"cannot write {what} to {shown}: it is a folder; give a file name inside it")
    if kind is not None:
        raise UserError(f"cannot write {what} to {shown}: it is {kind}, not a regular file; give a file name")
    folder = target.parent
    if not folder.is_dir():
        raise UserError(f"cannot write {what} to {shown}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise UserError(f"cannot write {what} to {shown}: the folder {folder} is not writable")
    return target


def _special_kind(mode: int) -> str | None:
    """What a path that is not a regular file is, in words (None for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_output_folder(path, what: str) -> pathlib.Path:
    """Create the folder ``path`` for ``what`` (e.g. "a sweep") if needed; a UserError if it is a file or cannot
    be created or written."""
    path = pathlib.Path(path)
    if os.path.lexists(path) and not path.is_dir():
        kind = _special_kind(os.lstat(path).st_mode) or "a file"
        raise UserError(f"cannot use {path} as the folder for {what}: it is {kind}, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the folder {path} for {what}: {error.strerror or reason(error)}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {what} to the folder {path}: it is not writable")
    return path


@contextlib.contextmanager
def locked(path, busy: str):
    """Hold an exclusive lock on the file ``path`` (created if needed) while the block runs; a UserError ``busy``
    if another process holds it. The operating system releases the lock when its holder ends, however it ends,
    so a killed holder leaves no stale lock. Without ``fcntl`` (Windows) nothing is locked."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
        raise UserError(f"cannot create the lock file {path}: {error.strerror or reason(error)}") from None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(busy) from None
        yield
    finally:
        os.close(descriptor)  # releases the lock


def write_atomically(path, data: bytes, what: str) -> pathlib.Path:
    """Replace the file ``path`` (or the target of the symlink ``path`` is) by ``data`` all at once (temporary
    file, fsync, rename): a crash or a full disk leaves the old file, never a partial one, and no temporary
    file behind; the temporaries that a killed writer left (``.NAME.XXXXXXXX.tmp``) go with the next
    successful write of NAME. Returns the file written."""
    path = check_output_path(path, what)
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
