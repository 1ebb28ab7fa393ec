"""What the page shows, shared between a run and the server's threads: the latest model snapshot, the epochs so
far and whether training has ended; and the callback by which a run publishes them at each epoch's end.

The trainer never meets the server: :class:`Publish` copies the parameters to the host once per epoch (after the
batch loop, so ``--live`` adds no host read inside it) and the handler threads only ever read those copies.
"""

from __future__ import annotations

import threading

from ..callbacks import Callback
from ..trainer import EpochRecord
from .snapshot import Snapshot

EPOCH_FIELDS = ("epoch", "test_acc", "train_acc", "loss")  # an epoch as the page gets it: the printed line's numbers


def epoch_entry(record) -> dict:
    """An epoch (an EpochRecord or a checkpoint's history row) as the API gives it."""
    row = record if isinstance(record, dict) else vars(record)
    return {name: row[name] for name in EPOCH_FIELDS}


class Board:
    """The latest :class:`Snapshot`, the epochs so far and ``done``, behind one condition: the run writes, the
    server's threads read and wait for news."""

    def __init__(self, snapshot: Snapshot | None = None, history=(), done: bool = False):
        self._changed = threading.Condition()
        self._snapshot, self._epochs, self._done = snapshot, [epoch_entry(row) for row in history], done

    def publish(self, snapshot: Snapshot, history) -> None:
        """A new snapshot and the run's whole history (a resumed run's earlier epochs included)."""
        with self._changed:
            self._snapshot, self._epochs = snapshot, [epoch_entry(row) for row in history]
            self._changed.notify_all()

    def finish(self) -> None:
        """Training has ended: no more epochs will come."""
        with self._changed:
            self._done = True
            self._changed.notify_all()

    @property
    def snapshot(self) -> Snapshot | None:
        with self._changed:
            return self._snapshot

    def wait_for_snapshot(self) -> Snapshot:
        """The snapshot, once there is one (a run publishes its first when training begins)."""
        with self._changed:
            self._changed.wait_for(lambda: self._snapshot is not None)
            return self._snapshot

    def history(self) -> list[dict]:
        with self._changed:
            return list(self._epochs)

    def news(self, after: int, timeout: float) -> tuple[list[dict], bool]:
        """The epochs numbered above ``after`` and whether training has ended, once either is there or ``timeout``
        seconds have passed (then ``([], False)``)."""

        def ready():
            return self._done or (self._epochs and self._epochs[-1]["epoch"] > after)

        with self._changed:
            self._changed.wait_for(ready, timeout)
            return [row for row in self._epochs if row["epoch"] > after], self._done


class Publish(Callback):
    """Publishes the run to a :class:`Board`: a host snapshot when training begins and after each epoch, and
    ``done`` when it ends."""

    def __init__(self, board: Board):
        self._board = board

    def _publish(self, state) -> None:
        snapshot = Snapshot.of(state.model, state.config.recipe(), len(state.history))
        self._board.publish(snapshot, state.history)

    def on_train_begin(self, state):
        self._publish(state)

    def on_epoch_end(self, state, record: EpochRecord):
        self._publish(state)

    def on_train_end(self, state):
        self._board.finish()
