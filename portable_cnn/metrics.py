"""Metrics files: one row per epoch, as CSV (``.csv``) or JSON lines (``.jsonl``), flushed every epoch.

Columns: epoch, train_acc, test_acc (empty / null for epochs that were not evaluated), loss, seconds,
images_per_second. A crash keeps every row written so far; a resumed run keeps the rows of the
epochs its checkpoint holds and appends after them.
"""

from __future__ import annotations

import csv
import json
import pathlib

from .errors import UserError
from .files import check_writable, write_atomically

COLUMNS = ("epoch", "train_acc", "test_acc", "loss", "seconds", "images_per_second")
FORMATS = (".csv", ".jsonl")
WHAT = "a metrics file"  # for files' messages: "cannot write a metrics file to ..."


def check_path(path) -> pathlib.Path:
    """Refuse, before training, a metrics path of unknown format or one that could never be written."""
    path = pathlib.Path(path)
    if path.suffix.lower() not in FORMATS:
        raise UserError(f"--metrics {path}: name the file .csv or .jsonl (the extension picks the format)")
    return check_writable(path, WHAT)


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
        try:
            if kept:
                header = [",".join(COLUMNS) + "\n"] if self._csv else []
                write_atomically(
                    self.path, "".join(header + [self._format_row(row) for row in kept]).encode("utf-8"), WHAT
                )
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
