"""benchmarks/floor.py: the epoch's unavoidable work, its structure and arithmetic (never its speed)."""

import numpy as np
import pytest

from benchmarks import contenders, floor, report
from benchmarks.contenders import Contender
from benchmarks.run import document

POSITIONS = 26  # a valid 3x3 convolution of a 28x28 image
HIDDEN = POSITIONS * POSITIONS * 16


def test_the_epoch_has_the_networks_flops_and_one_tanh_per_hidden_unit_and_image():
    units = floor.epoch_work(1000, 10000, 128, None, 128)
    train = [unit for unit in units if unit.phase == "train"]
    evaluation = [unit for unit in units if unit.phase == "eval"]
    assert [unit.images for unit in train] == [128] * 7 + [104] and [unit.group for unit in train] == list(range(8))
    assert len(evaluation) == 79 and sum(unit.images for unit in evaluation) == 10000
    assert {unit.group for unit in evaluation} == {8}  # one group: the chunks wait for no one
    assert floor.work_flops(units, "train") == 1000 * contenders.train_flops_per_image(POSITIONS)
    assert floor.work_flops(units, "eval") == 10000 * contenders.eval_flops_per_image(POSITIONS)
    assert floor.tanh_count(units, "train") == 1000 * HIDDEN and floor.tanh_count(units, "eval") == 10000 * HIDDEN


def test_blocks_cut_each_batch_and_leave_the_work_unchanged():
    whole = floor.epoch_work(1000, 200, 128, None, 64)
    blocked = floor.epoch_work(1000, 200, 128, 32, 64)
    train = [(unit.group, unit.images) for unit in blocked if unit.phase == "train"]
    assert train[:4] == [(0, 32)] * 4 and train[-4:] == [(7, 32)] * 3 + [(7, 8)] and len(train) == 7 * 4 + 4
    for phase in ("train", "eval"):
        assert floor.work_flops(blocked, phase) == floor.work_flops(whole, phase)
        assert floor.tanh_count(blocked, phase) == floor.tanh_count(whole, phase)


def test_a_block_has_the_five_products_at_the_models_shapes():
    products = [step for step in floor.training_block(4, POSITIONS, 3, 16) if isinstance(step, floor.Product)]
    shapes = {step.name.split(" (")[0]: (step.stack, step.m, step.k, step.n) for step in products}
    assert shapes == {
        "conv forward": (1, 4 * 676, 9, 16),
        "dense forward": (16, 4, 676, 10),
        "back-propagation to the hidden layer": (1, 4, 10, HIDDEN),
        "dense weight gradient": (1, HIDDEN, 4, 10),
        "kernel gradient": (4, 9, 676, 16),
    }


@pytest.mark.parametrize(
    ("count", "workers", "runs"),
    [(10, 3, [(0, 4), (4, 8), (8, 10)]), (2, 4, [(0, 1), (1, 2)]), (0, 2, []), (5, 1, [(0, 5)])],
)
def test_workers_take_contiguous_runs(count, workers, runs):
    assert floor.contiguous_groups(count, workers) == runs


@pytest.mark.parametrize("workers", [1, 2])
def test_every_unit_runs_once_and_a_batch_waits_for_the_one_before(monkeypatch, workers):
    units = floor.epoch_work(20, 12, 8, 4, 5, kernel_size=26, kernels=2)  # tiny: 3x3 positions
    work = floor.Floor(units, workers)
    done = []
    monkeypatch.setattr(work, "_run_units", lambda some, slot: done.append([(unit.phase, unit.group) for unit in some]))
    work.run("train")
    work.run("eval")
    ran = [unit for call in done for unit in call]
    assert sorted(ran) == sorted((unit.phase, unit.group) for unit in units)
    groups = [call[0][1] for call in done]
    assert groups == sorted(groups)  # the calls of a batch all return before the next batch's are made
    assert len(done) == (3 + 1 if workers == 1 else 3 * 2 + 1)  # batches of 8, 8, 4 rows in blocks of 4; one eval group


def test_the_floor_computes_real_products_into_its_own_arrays():
    units = floor.epoch_work(4, 3, 4, 2, 3, kernel_size=26, kernels=2)
    work = floor.Floor(units, workers=2)
    work.warm()
    arrays = {key: array for (key, _), array in work._arrays.items()}
    outputs = [key for key in arrays if key[-1] == "out"]
    assert len(outputs) == 2 * 5 + 2  # the five training products on each worker, the two of evaluation on one
    for slot, name, _ in outputs:
        np.testing.assert_allclose(
            arrays[slot, name, "out"], arrays[slot, name, "left"] @ arrays[slot, name, "right"], rtol=1e-5
        )
    np.testing.assert_allclose(arrays[0, "tanh out"], np.tanh(arrays[0, "tanh in"]), rtol=1e-6)
    assert {key[0] for key in arrays} == {0, 1}  # each worker writes its own arrays


def test_the_epoch_is_reported_as_a_multiple_of_its_floor(clock):

    def fake(key, train, test, floor_key=None):
        return Contender(
            key,
            f"fake {key}",
            "float32",
            1000,
            10000,
            10**9,
            10**9,
            clock.takes(train),
            clock.takes(test),
            lambda: None,
            floor_key,
        )

    built = {
        "numpy-f32": fake("numpy-f32", 0.03, 0.05, "floor"),
        "floor": fake("floor", 0.02, 0.03),
        "pytorch": fake("pytorch", 0.15, 0.1),
    }
    rows = contenders.measure(built, {key: 2 for key in built}, {"float32": 100.0}, log=lambda _: None)
    assert rows["numpy-f32"]["time_vs_floor"]["median"] == pytest.approx(0.08 / 0.05)
    assert "time_vs_floor" not in rows["pytorch"]
    targets = {t["target"]: t["met"] for t in contenders.targets(rows)}
    assert targets == {
        "numpy float32 epoch >= 2.5x faster than idiomatic PyTorch CPU": True,  # 0.25 s / 0.08 s
        "numpy float32 epoch <= 1.5x the unavoidable-work floor": False,
    }  # 1.6x
    machine = {
        "name": "m",
        "cpu": "t",
        "cores": 2,
        "blas": "b",
        "numpy": "0",
        "threads": {},
        "gemm_peak_gflops": {"float32": 100.0, "float64": 50.0},
        "copy_bandwidth_gbs": 10.0,
    }
    table = report.markdown(document(machine, {}, {}, rows))
    row = next(line for line in table.splitlines() if line.startswith("| fake numpy-f32 |"))
    assert row.rstrip(" |").endswith("| 1.6 (1.6–1.6)")
    assert "MISSED: numpy float32 epoch <= 1.5x the unavoidable-work floor — measured 1.6 (1.6–1.6)x" in table
