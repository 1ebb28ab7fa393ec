"""Metrics files: one row per epoch, as CSV (``.csv``) or JSON lines (``.jsonl``), flushed every epoch.

Columns: epoch, train_acc, test_acc (empty / null for epochs that were not evaluated), loss, seconds,
images_per_second. A crash keeps every row written so far; a resumed run keeps the rows of the
epochs its checkpoint holds and appends after them. A row that cannot be written whole (a full disk) is
taken back, so the file never ends in half a row, and the run stops with one line naming the file.
"""

from __future__ import annotations

import csv
import json
import os
import pathlib

from .errors import UserError, reason
from .files import check_output_path, write_atomically

COLUMNS = ("epoch", "train_acc", "test_acc", "loss", "seconds", "images_per_second")
FORMATS = (".csv", ".jsonl")
WHAT = "a metrics file"  # for files' messages: "cannot write a metrics file to ..."


def check_path(path) -> pathlib.Path:
    """The file to write (a symlink's target); refuses, before training, a metrics path of unknown format or
    one that could never be written (see :func:`files.check_output_path`)."""
    target = check_output_path(path, WHAT)
    if pathlib.Path(path).suffix.lower() not in FORMATS:
        raise UserError(f"--metrics {path}: name the file .csv or .jsonl (the extension picks the format)")
    return target


class MetricsWriter:
    """Writes records with attributes named as COLUMNS (the trainer's EpochRecord) to ``path``, one flushed row each.

    ``keep_before`` (a resumed run's first epoch) keeps the file's rows of earlier epochs and drops
    the rest; otherwise the file starts empty.
    """

    def __init__(self, path, keep_before: int | None = None):
        self.path = check_path(path)
        self._csv = self.path.suffix.lower() == ".csv"
        kept = (
            [row for row in read_metrics(self.path) if row["epoch"] < keep_before]
            if keep_before and self.path.is_file()
            else []
        )
        if kept:
            header = [",".join(COLUMNS) + "\n"] if self._csv else []
            write_atomically(self.path, "".join(header + [self._format_row(row) for row in kept]).encode(), WHAT)
        try:
            mode = os.O_APPEND if kept else os.O_TRUNC
            self._descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | mode, 0o666)
        except OSError as error:
            raise UserError(f"cannot write {WHAT} {self.path}: {error.strerror or reason(error)}") from None
        if self._csv and not kept:
            self._append(",".join(COLUMNS) + "\n")

    def write(self, record) -> None:
        self._append(self._format_row({name: getattr(record, name) for name in COLUMNS}))

    def _append(self, text: str) -> None:
        """Write ``text`` whole at the end of the file, or take back what was written and raise a UserError."""
        end = os.lseek(self._descriptor, 0, os.SEEK_END)
        left = memoryview(text.encode("utf-8"))
        try:
            while left:
                left = left[os.write(self._descriptor, left) :]
        except OSError as error:
            try:
                os.ftruncate(self._descriptor, end)
            except OSError:
                pass
            raise UserError(f"cannot write {WHAT} {self.path}: {error.strerror or reason(error)}") from None

    def close(self) -> None:
        os.close(self._descriptor)

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
