"""What happens around the training loop, as callbacks (the convention of Keras callbacks and Lightning
hooks): the notebook's line, the progress bar, the metrics file, checkpoints, the divergence check and
stop requests. Subclass :class:`Callback` and pass it to ``train(..., callbacks=[...])`` to add your own.
"""

from __future__ import annotations

import dataclasses
import math
import sys

from . import checkpoint
from .backends import to_host
from .errors import UserError
from .metrics import MetricsWriter
from .trainer import EpochRecord, Position, TrainState

try:
    from tqdm import tqdm
except ImportError:  # the progress extra is not installed: no bar
    tqdm = None

DEFAULT_INTERRUPT_PATH = "portable-cnn-interrupted.npz"
PROGRESS_HINT = (
    "--progress draws a bar with tqdm, which is not installed; install it with: pip install 'portable-cnn[progress]'"
)


class Callback:
    """Hooks the training loop calls; each does nothing unless overridden. Set ``state.stop_training``
    to end the run before the next call (``on_stop`` then runs). A call trains one batch, or a whole epoch where
    the library compiles loops or captures graphs (JAX; torch on a GPU), unless a callback sets ``every_batch``."""

    every_batch = False  # True: its batch hooks must see each batch, so the trainer makes one call a batch

    def on_train_begin(self, state: TrainState) -> None:
        """Before the first batch."""

    def on_epoch_begin(self, state: TrainState) -> None:
        """Before each epoch's dropout masks are drawn: from here to its last batch's end, no host sync."""

    def on_batch_begin(self, state: TrainState) -> None:
        """Before each call (the last chance to stop before it): each batch, or each epoch's batches at once."""

    def on_batch_end(self, state: TrainState, images: int) -> None:
        """After each call, which trained ``images`` images (keep it on the host: no device reads here)."""

    def on_epoch_end(self, state: TrainState, record: EpochRecord) -> None:
        """After each epoch, with its record (already in ``state.history``)."""

    def on_stop(self, state: TrainState, position: Position) -> None:
        """When ``stop_training`` ended the run at ``position``."""

    def on_train_end(self, state: TrainState) -> None:
        """Always, last (also after an error): release files and bars."""


def print_line(line: str, file=None) -> None:
    """Print a result line to stdout (or ``file``) without tearing a running bar."""
    file = file or sys.stdout
    if tqdm is None:
        print(line, file=file, flush=True)
    else:
        tqdm.write(line, file=file)
        file.flush()


class NotebookLines(Callback):
    """Prints the notebook's ``I:<epoch> Test-Acc:<acc> Train-Acc:<acc>`` line after each evaluated epoch."""

    def on_epoch_end(self, state, record):
        if record.test_acc is not None:
            print_line(record.line())


class ProgressBar(Callback):
    """A tqdm bar on stderr counting trained images (elapsed time and images/s included)."""

    def __init__(self):
        self._bar = None

    def on_train_begin(self, state):
        per_epoch = state.batches[-1][1]
        left = (state.config.epochs - state.start.epoch) * per_epoch - state.batches[state.start.batch][0]
        self._bar = tqdm(total=left, unit="img", unit_scale=True, file=sys.stderr, dynamic_ncols=True)

    def on_batch_end(self, state, images):
        if self._bar is not None:
            self._bar.update(images)

    def on_epoch_end(self, state, record):
        if self._bar is not None and record.test_acc is not None:
            self._bar.set_postfix_str(f"epoch {record.epoch} test {record.test_acc:.4f}", refresh=False)

    def on_train_end(self, state):
        if self._bar is not None:
            self._bar.close()


def show_progress(config) -> bool:
    """The progress bar's switch: ``config.progress`` if given, else on when stderr is a terminal and not quiet
    (and tqdm is there). Asking for a bar without tqdm is a UserError that names the extra to install."""
    if config.progress and tqdm is None:
        raise UserError(PROGRESS_HINT)
    if config.progress is not None:
        return config.progress
    return not config.quiet and sys.stderr.isatty() and tqdm is not None


class MetricsFile(Callback):
    """One row per epoch in a .csv or .jsonl file, flushed at once; a resumed run keeps the earlier rows."""

    def __init__(self, path, keep_before: int | None = None):
        self._writer = MetricsWriter(path, keep_before)

    def on_epoch_end(self, state, record):
        self._writer.write(record)

    def on_train_end(self, state):
        self._writer.close()


class EachEpoch(Callback):
    """Calls a function with each new EpochRecord (the library API's ``on_epoch``)."""

    def __init__(self, function):
        self._function = function

    def on_epoch_end(self, state, record):
        self._function(record)


class StopOnRequest(Callback):
    """Stops the run once ``flag.is_set()`` (a ``threading.Event`` set by a signal handler): before the next call
    (a batch, or an epoch where that is one call), or at the end of the epoch, before the next draws its masks."""

    def __init__(self, flag):
        self._flag = flag

    def _look(self, state):
        if self._flag.is_set():
            state.stop_training = True

    def on_batch_begin(self, state):
        self._look(state)

    def on_epoch_end(self, state, record):
        self._look(state)


class Diverged(UserError):
    """The loss or the parameters became NaN or infinite; the last good state was kept, never the bad one."""


def run_record(
    config, model, params: dict, random_state: dict, position: Position, history, data: dict, backend: dict
) -> checkpoint.Checkpoint:
    """The checkpoint record of a run of ``config`` at ``position``: ``model``'s description with host copies of
    ``params``, the random state, the history, where its data came from and the backend that trained it."""
    partial = (
        {"correct": position.correct, "loss": position.loss, "seconds": position.seconds} if position.batch else None
    )
    return checkpoint.Checkpoint(
        {name: to_host(array) for name, array in params.items()},
        model={"network": model.name, **model.describe()},
        recipe=config.recipe(),
        config=dataclasses.asdict(config),
        dtype=config.dtype,
        epoch=position.epoch,
        batch=position.batch,
        partial=partial,
        rng=random_state,
        history=[dataclasses.asdict(entry) for entry in history],
        data=data,
        backend=backend,
    )


class KeepRun(Callback):
    """Keeps the run's end in memory as a checkpoint record (``run``), to continue it later in this process
    as a saved file would be (``train(..., resume_from=run)``: the estimator's warm start)."""

    def __init__(self):
        self.run = None

    def on_train_end(self, state):
        config = state.config
        backend = {"name": config.backend, "device": str(config.device)}
        position = Position(len(state.history))
        self.run = run_record(
            config,
            state.model,
            state.model.params,
            state.random_source.state(),
            position,
            state.history,
            {},
            backend,
        )


class Checkpoints(Callback):
    """Writes the run to ``config.save`` every ``checkpoint_every`` epochs and at the end; on a stop, to
    ``config.save`` or :data:`DEFAULT_INTERRUPT_PATH` (``saved_to`` says where)."""

    def __init__(self, config, backend, data: dict):
        self.config, self.backend, self.data = config, backend, data
        self.last_saved = None  # the epoch of the last checkpoint this run wrote to config.save
        self.saved_to = None

    def write(self, path, model, params: dict, random_state: dict, position: Position, history) -> None:
        """A checkpoint of ``model`` with these parameters and random state at ``position`` with ``history``."""
        backend = {"name": self.backend.name, "device": str(self.backend.device)}
        record = run_record(self.config, model, params, random_state, position, history, self.data, backend)
        checkpoint.save(path, record)
        if str(path) == str(self.config.save) and position.batch == 0:
            self.last_saved = position.epoch

    def on_train_begin(self, state):
        if self.config.save and self.config.epochs == state.start.epoch:  # --epochs 0: the initial model
            model = state.model
            self.write(self.config.save, model, model.params, state.random_source.state(), state.start, state.history)

    def on_epoch_end(self, state, record):
        done = record.epoch + 1
        if self.config.save and (done % self.config.checkpoint_every == 0 or done == self.config.epochs):
            self.write(
                self.config.save,
                state.model,
                state.model.params,
                state.random_source.state(),
                Position(done),
                state.history,
            )

    def on_stop(self, state, position):
        """The model as trained so far, with the random state of its epoch's start (its masks are drawn again)."""
        path = self.config.save or DEFAULT_INTERRUPT_PATH
        if not (path == self.config.save and position.batch == 0 and self.last_saved == position.epoch):
            self.write(path, state.model, state.model.params, state.epoch_start.random_state, position, state.history)
        self.saved_to = str(path)

    def keep_last_good(self, state: TrainState, problem: str, epoch: int) -> Diverged:
        """Write the state of the diverged epoch's start to ``config.save`` (unless it is there already)."""
        good = state.epoch_start
        advice = " (try a smaller --alpha)"
        if not self.config.save:
            return Diverged(f"training diverged in epoch {epoch}: {problem}{advice}; nothing was saved (no --save)")
        position = good.position
        if good.epochs_done == 0 and position.batch == 0:
            return Diverged(
                f"training diverged in epoch {epoch}: {problem}{advice}; no epoch had finished, so nothing was saved"
            )
        if self.last_saved != position.epoch or position.batch:
            history = state.history[: good.epochs_done]
            self.write(self.config.save, state.model, good.params, good.random_state, position, history)
        done = f"{position.epoch} epoch{'' if position.epoch == 1 else 's'}"
        done += f" and {position.batch} batches" if position.batch else ""
        return Diverged(
            f"training diverged in epoch {epoch}: {problem}{advice}; "
            f"{self.config.save} keeps the last good state ({done})"
        )


class DivergenceCheck(Callback):
    """Ends the run with :class:`Diverged` when an epoch's loss or parameters are NaN or infinite, keeping
    the last good state in the checkpoint file (never the bad one). Runs first at each epoch's end."""

    def __init__(self, checkpoints: Checkpoints):
        self._checkpoints = checkpoints

    def on_epoch_end(self, state, record):
        problem = divergence(record, state.parameters_finite)
        if problem:
            raise self._checkpoints.keep_last_good(state, problem, record.epoch)


def divergence(record: EpochRecord, parameters_finite: bool) -> str | None:
    """What went non-finite in an epoch, or None: the loss, then the parameters (both read with the epoch's figures,
    in its one transfer: no read of its own)."""
    if not math.isfinite(record.loss):
        return f"the loss became {record.loss}"
    if not parameters_finite:
        return "the weights became NaN or infinite"
    return None
