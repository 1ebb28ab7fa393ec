"""Worker threads and BLAS's thread cap: the threads that share a batch's row blocks and an evaluation's
chunks on a CPU, each with one BLAS thread (``threadpoolctl``). Knows no array library: which libraries
gain from a pool, and how many threads a run takes, is the registry's (:mod:`backends`).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from concurrent.futures import ThreadPoolExecutor


class Workers:
    """Threads that share a batch's blocks and an evaluation's chunks on a CPU, each with one BLAS thread.

    :meth:`map` gives each thread one contiguous run of the items (the calling thread takes the
    first) and returns the results in the items' order. With one worker the calling thread does
    everything. While they run, BLAS is limited to one thread (``threadpoolctl``): two workers with
    two BLAS threads each would be four threads on two cores. ``limit_blas=False`` leaves a
    library's own threads alone (torch on a CPU, where no pool is used).
    """

    def __init__(self, count: int, limit_blas: bool = True):
        self.count = count
        self._limit_blas = limit_blas
        self._pool = ThreadPoolExecutor(count - 1, thread_name_prefix="portable-cnn") if count > 1 else None

    def map(self, fn, items: list) -> list:
        with one_blas_thread() if self._limit_blas else contextlib.nullcontext():
            if self._pool is None or len(items) < 2:
                return _in_order(fn, items)
            size = -(-len(items) // self.count)
            runs = [items[start : start + size] for start in range(0, len(items), size)]
            # each run in a copy of the caller's context: numpy's errstate (Backend.activated) lives there
            others = [self._pool.submit(contextvars.copy_context().run, _in_order, fn, run) for run in runs[1:]]
            results = _in_order(fn, runs[0])
            for other in others:
                results += other.result()
            return results


def _in_order(fn, items) -> list:
    return [fn(item) for item in items]


@functools.cache
def _blas_controller():
    from threadpoolctl import ThreadpoolController  # finding the loaded BLAS libraries takes a while: once

    return ThreadpoolController()


def one_blas_thread():
    """A context in which BLAS runs on one thread (``threadpoolctl``), restored after."""
    return _blas_controller().limit(limits=1, user_api="blas")
