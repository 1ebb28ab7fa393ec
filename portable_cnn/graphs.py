"""A pure function replayed as a captured CUDA graph: one launch instead of a kernel launch (and Python) per
array operation. A library's entry in :mod:`backends` says how it captures (``Library.graph``); this module
keeps the static buffers a graph reads and writes, and falls back to the function where capturing fails.
"""

from __future__ import annotations

from collections.abc import Callable

from array_api_compat import array_namespace


class Replayed:
    """``function`` (arrays in, arrays out, no host reads) captured once per argument shapes and replayed.

    ``capture(function, static_args) -> (launch, static_outputs)`` records one call on ``static_args``; each call
    then copies its arguments into them, launches, and returns copies of the outputs (the next launch overwrites
    the graph's own). Arguments and results are arrays in nested tuples, lists and dicts. Where capturing raises,
    ``function`` runs as it is from then on (``failure`` says why)."""

    def __init__(self, function: Callable, capture: Callable):
        self.function, self._capture = function, capture
        self._graphs: dict = {}
        self.failure: str | None = None

    def __call__(self, *args):
        if self.failure is not None:
            return self.function(*args)
        leaves, layout = _flatten(args)
        key = (layout, tuple((tuple(leaf.shape), str(leaf.dtype)) for leaf in leaves))
        if key not in self._graphs:
            static = [_copy(leaf) for leaf in leaves]
            try:
                launch, outputs = self._capture(self.function, _unflatten(layout, iter(static)))
            except Exception as error:  # the library cannot capture this function: run it as it is
                self.failure = f"{type(error).__name__}: {error}"
                return self.function(*args)
            self._graphs[key] = static, launch, outputs
        static, launch, outputs = self._graphs[key]
        for buffer, leaf in zip(static, leaves):
            buffer[...] = leaf
        launch()
        results, result_layout = _flatten(outputs)
        return _unflatten(result_layout, (_copy(result) for result in results))


def _copy(array):
    return array_namespace(array).asarray(array, copy=True)


def _flatten(tree) -> tuple[list, object]:
    """The arrays of a nested structure in order, and its layout (hashable) for :func:`_unflatten`."""
    if isinstance(tree, (tuple, list)):
        parts = [_flatten(item) for item in tree]
        return [leaf for leaves, _ in parts for leaf in leaves], (type(tree), tuple(layout for _, layout in parts))
    if isinstance(tree, dict):
        parts = [_flatten(tree[name]) for name in tree]
        layouts = tuple((name, layout) for name, (_, layout) in zip(tree, parts))
        return [leaf for leaves, _ in parts for leaf in leaves], (dict, layouts)
    return [tree], None


def _unflatten(layout, leaves):
    if layout is None:
        return next(leaves)
    kind, parts = layout
    if kind is dict:
        return {name: _unflatten(part, leaves) for name, part in parts}
    return kind(_unflatten(part, leaves) for part in parts)
