"""The random sources of a run: the notebook's host stream (``--book``), Philox on the device (the default
recipe, the same numbers on every backend) and the library's own generator (``--rng native``).

Each draws uniform initial values and one epoch of dropout keep-masks, and saves its position as
JSON-able values so that a checkpointed run continues with the very numbers it would have drawn.
"""

from __future__ import annotations

import math

import numpy as np

from . import philox
from .backends import Backend
from .errors import UserError


class BookRandom:
    """The notebook's stream: numpy's legacy ``RandomState(seed)`` on the host, in the notebook's order.

    Every backend gets the very same numbers, so ``--book`` reproduces the notebook anywhere.
    """

    def __init__(self, backend: Backend, seed: int):
        self._backend = backend
        self._state = np.random.RandomState(seed)

    def uniform(self, shape, dtype: str):
        return self._backend.asarray(self._state.random_sample(shape), self._backend.dtype(dtype))

    def keep_masks(self, shapes, keep_prob: float):
        """The notebook's ``randint(2, size=shape)`` of every batch, drawn at once and moved to the device once per
        epoch. Legacy ``randint(2)`` takes one whole 32-bit MT19937 word per value and keeps its lowest bit, so one
        ``randint(0, 2**32, uint32)`` draw of all the epoch's values, lowest bits kept, is the very same stream
        (and state after it) at a fraction of the cost."""
        if keep_prob != 0.5:
            raise ValueError("the notebook's stream draws dropout masks with keep probability 0.5 only")
        words = self._state.randint(0, 2**32, size=sum(math.prod(shape) for shape in shapes), dtype=np.uint32)
        host = (words & 1).astype(bool)
        return _split(self._backend.xp, self._backend.asarray(host), shapes)

    def state(self) -> dict:
        """The stream's position as JSON-able values (numpy's MT19937 state): the same on every backend."""
        _, keys, pos, has_gauss, cached_gaussian = self._state.get_state()
        return {
            "kind": "book",
            "keys": keys.tolist(),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        }

    def restore(self, state: dict) -> None:
        """Continue the stream from a :meth:`state` (taken on any backend)."""
        _expect_kind(state, "book")
        keys = np.asarray(state["keys"], dtype=np.uint32)
        self._state.set_state(
            ("MT19937", keys, int(state["pos"]), int(state["has_gauss"]), float(state["cached_gaussian"]))
        )


# How the default recipe's dropout masks are numbered: 2 since every batch has a step of its own; 1 (checkpoints
# with no "numbering") gave an epoch's last batch the step, and so the mask, of the next epoch's first.
MASK_NUMBERING = 2


class PortableRandom:
    """Philox-4x32-10 evaluated on the device: the same seed gives the same numbers on every backend.

    Dropout masks come from stream 0, one counter step per batch; initialisation draws take streams
    1, 2, ... in order. Each draw is a pure function of (seed, stream, step): no state on the device.
    """

    def __init__(self, backend: Backend, seed: int):
        self._backend = backend
        self._seed = seed
        self._draws = 0
        self.step = 0

    def uniform(self, shape, dtype: str):
        self._draws += 1
        backend = self._backend
        return philox.uniform(
            backend.xp,
            shape,
            seed=self._seed,
            stream=self._draws,
            step=0,
            dtype=backend.dtype(dtype),
            device=backend.device,
        )

    def keep_masks(self, shapes, keep_prob: float):
        """An epoch's masks from one Philox call (:func:`philox.bernoulli_steps`), each unpacked when its batch
        comes: mask ``i`` is at step ``step + i``, and the step then advances past them, so every batch of the
        run has a step (and a mask) of its own."""
        backend = self._backend
        masks = philox.bernoulli_steps(
            backend.xp, shapes, keep_prob, seed=self._seed, stream=0, first_step=self.step, device=backend.device
        )
        self.step += len(shapes)
        return masks

    def state(self) -> dict:
        """Counters only (Philox keeps no other state): the run continues identically on any backend. ``numbering``
        says how steps are given to batches (:data:`MASK_NUMBERING`), so a run never continues with another."""
        return {
            "kind": "portable",
            "seed": self._seed,
            "step": self.step,
            "draws": self._draws,
            "numbering": MASK_NUMBERING,
        }

    def restore(self, state: dict) -> None:
        _expect_kind(state, "portable")
        if int(state["seed"]) != self._seed:
            raise UserError(f"the checkpoint's random numbers come from seed {state['seed']}, not {self._seed}")
        self.step, self._draws = int(state["step"]), int(state["draws"])


class NativeRandom:
    """The backend's own generator, drawing on the device (numpy's, torch's or cupy's ``Generator``)."""

    def __init__(self, backend: Backend, seed: int):
        self._backend = backend
        self._generator = backend.library.native(backend.module, backend.device, seed)

    def uniform(self, shape, dtype: str):
        return self._generator.draw(tuple(shape), dtype, self._backend.asarray)

    def keep_masks(self, shapes, keep_prob: float):
        return (self._generator.draw(tuple(shape), "float32", self._backend.asarray) < keep_prob for shape in shapes)

    def state(self) -> dict:
        """The generator's state as JSON-able values; it restores only on the same library (and device type)."""
        return {"kind": "native", "library": self._generator.label, "state": self._generator.save()}

    def restore(self, state: dict) -> None:
        _expect_kind(state, "native")
        saved_by = state.get("library")
        if state.get("state") is None:
            raise UserError(
                f"the checkpoint's --rng native state ({saved_by}) was not saved, as cupy does not expose it, "
                "so the run "
                "cannot continue exactly; use --rng portable (the default) for runs you want to resume"
            )
        if saved_by != self._generator.label:
            raise UserError(
                f"the checkpoint's --rng native random state belongs to {saved_by} and cannot continue on "
                f"{self._generator.label}; resume on the same library "
                "(a --rng portable run, the default, resumes on any backend)"
            )
        self._generator.load(state["state"])


def numbered_as_now(state: dict) -> bool:
    """Whether a saved random state numbers its dropout masks as this version does (only Philox's numbering changed)."""
    return state.get("kind") != "portable" or state.get("numbering") == MASK_NUMBERING


def make_random(kind: str, backend: Backend, seed: int):
    """The random source of a run: ``book`` (the notebook's host stream), ``portable`` (Philox) or ``native``."""
    sources = {"book": BookRandom, "portable": PortableRandom, "native": NativeRandom}
    return sources[kind](backend, seed)


def _split(xp, flat, shapes):
    """Cut a flat device array into consecutive pieces of the given shapes."""
    pieces, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        pieces.append(xp.reshape(flat[start : start + size], shape))
        start += size
    return pieces


def _expect_kind(state, kind: str) -> None:
    if not isinstance(state, dict) or state.get("kind") != kind:
        found = state.get("kind") if isinstance(state, dict) else type(state).__name__
        raise UserError(f"the checkpoint's random state is of kind '{found}', this run needs '{kind}'")
