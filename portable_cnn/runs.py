"""The library API, :func:`train`: a run from its Config to its trained model, resumable across processes.

It resolves the backend, reads the data, starts the model (or restores a checkpoint), puts the
callbacks together and hands them to :func:`trainer.fit`; a stop request ends in :class:`Interrupted`
after the run was saved, a NaN or infinity in :class:`Diverged` with the last good state kept.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import NamedTuple

from . import checkpoint, metrics
from .backends import get_backend
from .callbacks import (
    DEFAULT_INTERRUPT_PATH,
    Callback,
    Checkpoints,
    Diverged,
    DivergenceCheck,
    EachEpoch,
    MetricsFile,
    NotebookLines,
    ProgressBar,
    StopOnRequest,
    show_progress,
)
from .config import RECIPE_FIELDS, Config
from .datasets import EMBEDDED_SOURCE, fingerprint, load_mnist
from .errors import UserError
from .files import check_output_path
from .model import ConvNet
from .rng import make_random, numbered_as_now
from .trainer import EpochRecord, Position, batches, fit, init_model, to_device

__all__ = ["DEFAULT_INTERRUPT_PATH", "Diverged", "Interrupted", "TrainResult", "config_from_checkpoint", "train"]


class TrainResult(NamedTuple):
    model: ConvNet
    history: list[EpochRecord]


class Interrupted(Exception):
    """Training stopped on request before a batch (Ctrl-C, SIGTERM, ``stop``); the run was saved to ``path``."""

    def __init__(self, path: str, epoch: int, batch: int, batches: int, defaulted: bool):
        self.path, self.epoch, self.batch, self.batches, self.defaulted = path, epoch, batch, batches, defaulted
        where = f"epoch {epoch}" + (f", batch {batch} of {batches}" if batch else "")
        note = " (no --save was given)" if defaulted else ""
        super().__init__(f"stopped at {where}; saved {path}{note}")


def train(
    config: Config,
    data=None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    stop=None,
    callbacks: tuple[Callback, ...] = (),
    resume_from: checkpoint.Checkpoint | None = None,
) -> TrainResult:
    """Train the network as ``config`` says; returns the model and one EpochRecord per epoch.

    ``data`` is an :class:`~portable_cnn.datasets.Mnist` (``load_mnist(config.data_dir, ...)`` when omitted).
    Unless ``config.quiet`` each evaluated epoch prints the notebook's line; ``config.save``,
    ``config.metrics`` and ``config.resume`` write and continue runs (a resumed run's history starts
    with its checkpoint's epochs). ``on_epoch`` is called with each new EpochRecord; ``stop`` (anything
    with ``is_set()``) is looked at before each batch, and once set the run is saved and
    :class:`Interrupted` raised. ``callbacks`` (:class:`~portable_cnn.callbacks.Callback`) are added to the run's own.
    ``resume_from`` is a checkpoint record in memory to continue when ``config.resume`` names no file
    (:class:`~portable_cnn.callbacks.KeepRun` keeps one).
    """
    config = config.validated()
    for path, check in (
        (config.save, lambda path: check_output_path(path, checkpoint.WHAT)),
        (config.metrics, metrics.check_path),
    ):
        if path is not None:
            check(path)
    progress = show_progress(config)
    resumed = checkpoint.load(config.resume) if config.resume else resume_from
    if resumed is not None:
        check_resumable(config, resumed)
    backend = get_backend(config.backend, config.device)
    if data is None:
        data = load_mnist(config.data_dir, train_size=config.train_size, test_size=config.test_size)
    if data.source == EMBEDDED_SOURCE and not config.quiet:
        print(
            f"portable-cnn: training on {EMBEDDED_SOURCE} of MNIST ({len(data.train_images)} training, "
            f"{len(data.test_images)} test images)",
            file=sys.stderr,
        )
    with backend.activated():
        device_data = to_device(data, config, backend)
        random_source = make_random(config.random_kind(), backend, config.seed)
        saved_data = fingerprint(data, config.train_size)
        if resumed is None:
            model, history, start = init_model(config, random_source), [], Position(0)
        else:
            model, history, start = restore(
                resumed, backend, random_source, saved_data, len(batches(config, config.train_size))
            )
        saver = Checkpoints(config, backend, saved_data)
        run_callbacks = [DivergenceCheck(saver)]
        if not config.quiet:
            run_callbacks.append(NotebookLines())
        if progress:
            run_callbacks.append(ProgressBar())
        if config.metrics:
            run_callbacks.append(MetricsFile(config.metrics, keep_before=start.epoch if resumed else None))
        if on_epoch is not None:
            run_callbacks.append(EachEpoch(on_epoch))
        run_callbacks += [*callbacks, saver]
        if stop is not None:
            run_callbacks.append(StopOnRequest(stop))
        stopped = fit(model, device_data, config, random_source, run_callbacks, history, start)
    if stopped is not None:
        per_epoch = len(batches(config, config.train_size))
        raise Interrupted(saver.saved_to, stopped.epoch, stopped.batch, per_epoch, defaulted=config.save is None)
    return TrainResult(model, history)


def restore(saved: checkpoint.Checkpoint, backend, random_source, data: dict, per_epoch: int):
    """The model, history and position of a checkpoint, with ``random`` set to continue its stream."""
    wanted = saved.data.get("train_sha256")
    if wanted is not None and wanted != data["train_sha256"]:
        raise UserError(
            f"the training images differ from those the checkpoint {saved.path} was trained on "
            f"({saved.data.get('source')}); resume with the same data (--data-dir)"
        )
    try:
        random_source.restore(saved.rng)
        fields = [field.name for field in dataclasses.fields(EpochRecord)]
        history = [EpochRecord(**{name: row[name] for name in fields}) for row in saved.history]
        partial = saved.partial or {}
        counts = int(partial.get("correct", 0)), float(partial.get("loss", 0.0)), float(partial.get("seconds", 0.0))
        position = Position(saved.epoch, saved.batch, *counts)
    except UserError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise UserError(
            f"the checkpoint {saved.path} is corrupt: its training state cannot be read ({error})"
        ) from None
    if not 0 <= position.batch < per_epoch or len(history) != position.epoch:
        raise UserError(
            f"the checkpoint {saved.path} is corrupt: it stops at batch {position.batch} of epoch {position.epoch}, "
            f"with {len(history)} epochs of history"
        )
    return saved.to_model(backend), history, position


def check_resumable(config: Config, saved: checkpoint.Checkpoint) -> None:
    """Refuse to resume a checkpoint with another recipe (naming the field), with the old dropout numbering or
    with no epochs left."""
    if not numbered_as_now(saved.rng):
        raise UserError(
            f"the checkpoint {saved.path} was written by portable-cnn {saved.package_version} with the old dropout "
            "numbering (an epoch's last batch shared its mask with the next epoch's first), so it cannot continue as "
            "this version trains; start a new run"
        )
    for name in RECIPE_FIELDS:
        if name in saved.recipe and saved.recipe[name] != getattr(config, name):
            raise UserError(
                f"the checkpoint {saved.path} was trained with {_flag(name, saved.recipe[name])}, but this run has "
                f"{_flag(name, getattr(config, name))}; a resumed run keeps its checkpoint's {name.replace('_', '-')}"
            )
    if config.epochs <= saved.epoch:
        raise UserError(
            f"the checkpoint {saved.path} has {saved.epoch} epochs done and --epochs is {config.epochs}; "
            f"--epochs counts all epochs, so ask for more than {saved.epoch}"
        )


def _flag(name: str, value) -> str:
    if isinstance(value, bool):
        return f"--{name}" if value else f"no --{name}"
    return f"--{name.replace('_', '-')} {value}"


def config_from_checkpoint(saved: checkpoint.Checkpoint, **changes) -> Config:
    """The Config to resume ``saved``: its recipe and run settings, ``resume`` set to its path, then ``changes``.

    Display settings (quiet, progress) and the machine's threads are not inherited; ``save`` defaults to the
    checkpoint's own path.
    """
    known = {field.name for field in dataclasses.fields(Config)} - {"quiet", "progress", "resume", "save", "threads"}
    base = {name: value for name, value in saved.config.items() if name in known}
    try:
        config = Config(**{**base, "resume": saved.path, "save": saved.path})
    except TypeError as error:
        raise UserError(f"the checkpoint {saved.path} is corrupt: its config is not valid ({error})") from None
    return dataclasses.replace(config, **changes)
