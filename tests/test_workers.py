"""Blocks and threads: the default recipe's numbers do not depend on the thread count, and barely on the block size."""

import dataclasses
import os
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from portable_cnn import Config, train
from portable_cnn.backends import Workers, default_threads, workers

from .test_cli import run_cli

SMALL = Config(epochs=1, test_size=1000, quiet=True)


def test_blocked_and_unblocked_float64_agree_after_an_epoch(mnist):
    """Same seed, blocks of 16 against whole batches of 128: the sums' order differs, the parameters by <= 1e-12."""
    blocked = train(dataclasses.replace(SMALL, dtype="float64", block_size=16), mnist).model
    whole = train(dataclasses.replace(SMALL, dtype="float64", block_size=128), mnist).model
    for name in ("kernels", "weights"):
        difference = np.max(np.abs(getattr(blocked, name) - getattr(whole, name)))
        assert 0 < difference <= 1e-12, (name, difference)  # not zero: the blocks really were computed apart


def test_one_thread_and_two_give_the_same_parameters_bit_for_bit(mnist):
    one, two = (train(dataclasses.replace(SMALL, train_size=384, threads=count), mnist) for count in (1, 2))
    for name in ("kernels", "weights"):
        np.testing.assert_array_equal(getattr(one.model, name), getattr(two.model, name))
    assert [record.line() for record in one.history] == [record.line() for record in two.history]


def test_threads_1_and_2_print_the_same_lines(mnist_dir):
    printed = []
    for count in ("1", "2"):
        result = run_cli(
            "train",
            "--epochs",
            "2",
            "--train-size",
            "256",
            "--test-size",
            "500",
            "--threads",
            count,
            data_dir=mnist_dir,
        )
        assert result.returncode == 0, result.stderr
        printed.append(result.stdout)
    assert printed[0] == printed[1] and printed[0].count("\n") == 2


def _blas_threads():
    return [library["num_threads"] for library in threadpool_info() if library["user_api"] == "blas"]


def test_workers_keep_the_order_take_contiguous_runs_and_run_blas_on_one_thread():
    seen = []

    def record(item):
        seen.append((item, threading.current_thread().name, _blas_threads()))
        return item * 10

    assert Workers(2).map(record, list(range(5))) == [0, 10, 20, 30, 40]
    by_item = {item: name for item, name, _ in seen}
    assert by_item[0] == by_item[1] == by_item[2] == threading.current_thread().name  # the caller takes the first run
    assert by_item[3] == by_item[4] != by_item[0]
    assert all(blas == [1] * len(blas) for _, _, blas in seen)
    assert Workers(1).map(lambda item: item + 1, [1, 2]) == [2, 3]


def test_workers_see_the_callers_numpy_error_state():
    with np.errstate(over="raise"):
        states = Workers(2).map(lambda item: np.geterr()["over"], [0, 1])
    assert states == ["raise", "raise"]


def test_an_error_in_a_worker_reaches_the_caller():
    def fail(item):
        if item == 3:
            raise ValueError("block 3")
        return item

    with pytest.raises(ValueError, match="block 3"):
        Workers(2).map(fail, list(range(4)))


def test_gpus_and_torch_never_use_the_pool():
    assert (
        workers("cupy", "cuda", 4).count == 1
        and workers("torch", "cuda:0", 4).count == 1
        and workers("torch", "cpu", 4).count == 1
    )
    assert workers("numpy", None, 2).count == 2 and workers("array-api-strict", None, 3).count == 3
    assert default_threads("cupy", None) == 1 and default_threads("torch", "cuda") == 1


@pytest.mark.parametrize(
    ("backend", "device", "block", "threads"),
    [("numpy", None, 32, 3), ("array-api-strict", None, 32, 3), ("torch", "cuda", 128, 1), ("cupy", None, 128, 1)],
)
def test_block_size_and_threads_come_from_the_device_kind(monkeypatch, backend, device, block, threads):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)  # may run on 3 cores
    config = Config(backend=backend, device=device).validated()
    assert config.block_size == block
    assert config.threads == threads
    assert Config(book=True).validated().block_size == 128  # the notebook's whole batches
    assert Config(block_size=8, threads=3).validated().block_size == 8
