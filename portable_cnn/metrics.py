"""Metrics files: one row per epoch, as CSV (``.csv``) or JSON lines (``.jsonl``), flushed every epoch.

Columns: epoch, train_acc, test_acc (empty / null for epochs that were not evaluated), loss, seconds,
images_per_second. A crash keeps every row written so far; a resumed run keeps the rows of the
epochs its checkpoint holds and appends after them.
"""

from __future__ import annotations

import csv
import json
import os
import pathlib
import shutil
import tempfile
from dataclasses import dataclass

from .errors import UserError

COLUMNS = ("epoch", "train_acc", "test_acc", "loss", "seconds", "images_per_second")
FORMATS = (".csv", ".jsonl")


@dataclass
class EpochRecord:
    """What one epoch measured; ``test_acc`` is None for epochs that were not evaluated."""

    epoch: int
    train_acc: float
    test_acc: float | None
    loss: float
    seconds: float
    images_per_second: float

    def line(self) -> str:
        """The notebook's progress line, formatted exactly as the notebook formats it."""
        return f"I:{self.epoch} Test-Acc:{self.test_acc} Train-Acc:{self.train_acc}"


def check_path(path) -> None:
    """Refuse, before training, a metrics path of unknown format or in a folder that does not exist."""
    path = pathlib.Path(path)
    if path.suffix.lower() not in FORMATS:
        raise UserError(f"--metrics {path}: name the file .csv or .jsonl (the extension picks the format)")
    if not path.parent.is_dir():
        raise UserError(f"--metrics {path}: the folder {path.parent} does not exist")
    if path.is_dir():
        raise UserError(f"--metrics {path} is a folder; give a file name")


class MetricsWriter:
    """Writes EpochRecord-like objects (attributes named as COLUMNS) to ``path``, one flushed row each.

    ``keep_before`` (a resumed run's first epoch) keeps the file's rows of earlier epochs and drops
    the rest; otherwise the file starts empty.
    """

    def __init__(self, path, keep_before: int | None = None):
        check_path(path)
        self.path = pathlib.Path(path)
        self._csv = self.path.suffix.lower() == ".csv"
        kept = [row for row in read_metrics(self.path) if row["epoch"] < keep_before] if keep_before and self.path.is_file() else []
        try:
            if kept:
                _rewrite(self.path, kept, self._format_row)
            self._file = open(self.path, "a" if kept else "w", newline="", encoding="utf-8")
        except OSError as error:
            raise UserError(f"cannot write --metrics {self.path}: {error.strerror or error}") from None
        if self._csv and not kept:
            self._file.write(",".join(COLUMNS) + "\n")
            self._file.flush()

    def write(self, record) -> None:
        self._file.write(self._format_row({name: getattr(record, name) for name in COLUMNS}))
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _format_row(self, row: dict) -> str:
        row = {
            "epoch": int(row["epoch"]),
            "train_acc": float(row["train_acc"]),
            "test_acc": None if row["test_acc"] is None else float(row["test_acc"]),
            "loss": float(row["loss"]),
            "seconds": round(float(row["seconds"]), 6),
            "images_per_second": round(float(row["images_per_second"]), 1),
        }
        if not self._csv:
            return json.dumps(row) + "\n"
        return ",".join("" if row[name] is None else repr(row[name]) for name in COLUMNS) + "\n"


def read_metrics(path) -> list[dict]:
    """The rows of a metrics file (either format) as dicts with typed values; a UserError if unreadable."""
    path = pathlib.Path(path)
    if path.suffix.lower() not in FORMATS:
        raise UserError(f"{path}: a metrics file is .csv or .jsonl")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"no metrics file at {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read the metrics file {path}: {getattr(error, 'strerror', None) or error}") from None
    try:
        if path.suffix.lower() == ".csv":
            reader = csv.DictReader(text.splitlines())
            if tuple(reader.fieldnames or ()) != COLUMNS:
                raise ValueError(f"its header is not {','.join(COLUMNS)}")
            raw = list(reader)
        else:
            raw = [json.loads(line) for line in text.splitlines() if line.strip()]
        return [_typed(row) for row in raw]
    except (ValueError, TypeError, KeyError) as error:
        raise UserError(f"{path} is not a portable-cnn metrics file ({error})") from None


def _typed(row: dict) -> dict:
    def number(value):
        return None if value in (None, "") else float(value)

    return {
        "epoch": int(row["epoch"]),
        "train_acc": float(row["train_acc"]),
        "test_acc": number(row["test_acc"]),
        "loss": float(row["loss"]),
        "seconds": float(row["seconds"]),
        "images_per_second": float(row["images_per_second"]),
    }


def _rewrite(path: pathlib.Path, rows: list[dict], format_row) -> None:
    """Replace the file with ``rows`` atomically (header included for CSV)."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        shutil.copymode(path, temporary)
        with os.fdopen(handle, "w", newline="", encoding="utf-8") as file:
            if path.suffix.lower() == ".csv":
                file.write(",".join(COLUMNS) + "\n")
            file.writelines(format_row(row) for row in rows)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
