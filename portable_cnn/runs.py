"""Runs that outlive their process: checkpoints written and resumed, interrupts and divergence."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from array_api_compat import array_namespace

from . import checkpoint
from .backends import to_host
from .config import RECIPE_FIELDS, Config
from .errors import UserError
from .metrics import EpochRecord
from .model import ConvNet

DEFAULT_INTERRUPT_PATH = "portable-cnn-interrupted.npz"


class Interrupted(Exception):
    """Training stopped on request after a batch (Ctrl-C, SIGTERM, ``stop``); the run was saved to ``path``."""

    def __init__(self, path: str, epoch: int, batch: int, batches: int, defaulted: bool):
        self.path, self.epoch, self.batch, self.batches, self.defaulted = path, epoch, batch, batches, defaulted
        where = f"epoch {epoch}" + (f", batch {batch} of {batches}" if batch else "")
        note = " (no --save was given)" if defaulted else ""
        super().__init__(f"stopped at {where}; saved {path}{note}")


class Diverged(UserError):
    """The loss or the parameters became NaN or infinite; the last good state was kept, never the bad one."""


@dataclass
class Position:
    """Where a run stands: ``epoch`` epochs done and ``batch`` batches of the next, with that epoch's counts so far."""

    epoch: int
    batch: int = 0
    correct: int = 0
    loss: float = 0.0
    seconds: float = 0.0

    def partial(self) -> dict | None:
        return {"correct": self.correct, "loss": self.loss, "seconds": self.seconds} if self.batch else None


def divergence(record: EpochRecord, model: ConvNet) -> str | None:
    """What went non-finite in an epoch, or None: the loss (already on the host), then the parameters.

    Called once per epoch; the parameter check is one device reduction read as one host boolean.
    """
    if not math.isfinite(record.loss):
        return f"the loss became {record.loss}"
    xp = array_namespace(model.weights)
    if not bool(xp.all(xp.isfinite(model.kernels)) & xp.all(xp.isfinite(model.weights))):
        return "the weights became NaN or infinite"
    return None


def check_resumable(config: Config, saved: checkpoint.Checkpoint) -> None:
    """Refuse to resume a checkpoint with another recipe (naming the field) or with no epochs left."""
    recipe = saved.meta["recipe"]
    for name in RECIPE_FIELDS:
        if name in recipe and recipe[name] != getattr(config, name):
            raise UserError(
                f"the checkpoint {saved.path} was trained with {_flag(name, recipe[name])}, but this run has "
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

    Display settings (quiet, progress) are not inherited; ``save`` defaults to the checkpoint's own path.
    """
    known = {field.name for field in dataclasses.fields(Config)} - {"quiet", "progress", "resume", "save"}
    base = {name: value for name, value in saved.config.items() if name in known}
    try:
        config = Config(**{**base, "resume": saved.path, "save": saved.path})
    except TypeError as error:
        raise UserError(f"the checkpoint {saved.path} is corrupt: its config is not valid ({error})") from None
    return dataclasses.replace(config, **changes)


class Saver:
    """Writes this run's checkpoints and restores a saved one: the link between the trainer and its files."""

    def __init__(self, config: Config, backend, data: dict):
        self.config, self.backend, self.data = config, backend, data

    def write(self, path, model: ConvNet, rng: dict, position: Position, history: list[EpochRecord]):
        meta = checkpoint.metadata(
            config=dataclasses.asdict(self.config),
            recipe=self.config.recipe(),
            model=model,
            dtype=self.config.dtype,
            epoch=position.epoch,
            batch=position.batch,
            partial=position.partial(),
            rng=rng,
            history=[dataclasses.asdict(record) for record in history],
            data=self.data,
            backend={"name": self.backend.name, "device": str(self.backend.device)},
        )
        kernels, weights = to_host(model.kernels), to_host(model.weights)
        return checkpoint.save(path, checkpoint.Checkpoint(kernels, weights, meta))

    def restore(self, saved: checkpoint.Checkpoint, random, num_batches: int):
        """The model, history and position of a checkpoint, with ``random`` set to continue its stream."""
        wanted = saved.meta.get("data", {}).get("train_sha256")
        if wanted is not None and wanted != self.data["train_sha256"]:
            raise UserError(
                f"the training images differ from those the checkpoint {saved.path} was trained on "
                f"({saved.meta['data'].get('source')}); resume with the same data (--data-dir)"
            )
        try:
            random.restore(saved.rng)
            history = [EpochRecord(**{field.name: row[field.name] for field in dataclasses.fields(EpochRecord)}) for row in saved.history]
            partial = saved.meta.get("partial") or {}
            position = Position(saved.epoch, saved.batch, int(partial.get("correct", 0)), float(partial.get("loss", 0.0)),
                                float(partial.get("seconds", 0.0)))
        except UserError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise UserError(f"the checkpoint {saved.path} is corrupt: its training state cannot be read ({error})") from None
        if not 0 <= position.batch < num_batches or len(history) != position.epoch:
            raise UserError(f"the checkpoint {saved.path} is corrupt: it stops at batch {position.batch} of epoch {position.epoch}, "
                            f"with {len(history)} epochs of history")
        return saved.to_model(self.backend), history, position

    def interrupted(self, model, rng, position: Position, history, num_batches: int, last_saved=None) -> Interrupted:
        path = self.config.save or DEFAULT_INTERRUPT_PATH
        if not (path == self.config.save and position.batch == 0 and last_saved == position.epoch):
            self.write(path, model, rng, position, history)
        return Interrupted(str(path), position.epoch, position.batch, num_batches, defaulted=self.config.save is None)

    def diverged(self, problem: str, epoch: int, model, good, history, last_saved) -> Diverged:
        kernels, weights, rng, position, count = good
        advice = " (try a smaller --alpha)"
        if not self.config.save:
            return Diverged(f"training diverged in epoch {epoch}: {problem}{advice}; nothing was saved (no --save)")
        if count == 0 and position.batch == 0:
            return Diverged(f"training diverged in epoch {epoch}: {problem}{advice}; no epoch had finished, so nothing was saved")
        if last_saved != position.epoch or position.batch:
            good_model = dataclasses.replace(model, kernels=kernels, weights=weights)
            self.write(self.config.save, good_model, rng, position, history[:count])
        done = f"{position.epoch} epoch{'' if position.epoch == 1 else 's'}" + (f" and {position.batch} batches" if position.batch else "")
        return Diverged(f"training diverged in epoch {epoch}: {problem}{advice}; {self.config.save} keeps the last good state ({done})")
