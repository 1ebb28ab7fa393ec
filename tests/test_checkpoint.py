"""Checkpoints: random-state round trips, exact resumes (also from the middle of an epoch), loading on
every backend, atomic writes, one-line errors for bad files, metrics files, divergence."""

import dataclasses
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from portable_cnn import Config, UserError, checkpoint, get_backend, train
from portable_cnn.backends import to_host
from portable_cnn.callbacks import show_progress
from portable_cnn.metrics import read_metrics
from portable_cnn.rng import BookRandom, NativeRandom, PortableRandom
from portable_cnn.runs import Diverged, Interrupted

from .conftest import backend_or_skip, gpu_target

SMALL = Config(epochs=2, train_size=128, batch_size=64, test_size=100, quiet=True)  # 2 batches an epoch
BOOK = dataclasses.replace(SMALL, book=True)


class StopAfter:
    """A stop flag that turns on after ``checks`` looks (the trainer looks before each batch and at epoch ends)."""

    def __init__(self, checks: int):
        self.checks = checks

    def is_set(self) -> bool:
        self.checks -= 1
        return self.checks < 0


def lines(history):
    return [record.line() for record in history if record.test_acc is not None]


def assert_same_parameters(first, second):
    np.testing.assert_array_equal(to_host(first.kernels), to_host(second.kernels))
    np.testing.assert_array_equal(to_host(first.weights), to_host(second.weights))


def draws(source):
    """Some uniform numbers and one epoch of masks, as host arrays."""
    masks = [to_host(mask) for mask in source.keep_masks([(3, 7), (2, 7)], 0.5)]
    return [to_host(source.uniform((4, 5), "float32")), *masks]


@pytest.fixture(scope="module")
def saved_file(mnist, tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "model.npz"
    train(dataclasses.replace(SMALL, epochs=1, save=str(path)), mnist)
    return path


# --- random sources ------------------------------------------------------------------------------


@pytest.mark.parametrize("source", [BookRandom, PortableRandom, NativeRandom])
def test_random_state_round_trips_through_json(backend, source):
    random = source(backend, 7)
    draws(random)
    state = json.loads(json.dumps(random.state()))
    if source is NativeRandom and backend.name == "cupy":  # cupy does not expose its generator's state
        with pytest.raises(UserError, match="was not saved, as cupy does not expose it"):
            source(backend, 7).restore(state)
        return
    expected = draws(random)
    fresh = source(backend, 7)
    fresh.restore(state)
    for got, wanted in zip(draws(fresh), expected):
        np.testing.assert_array_equal(got, wanted)


@pytest.mark.parametrize("source", [BookRandom, PortableRandom])
@pytest.mark.parametrize("target", ["torch", "array-api-strict"])
def test_book_and_portable_states_continue_on_another_backend(source, target):
    on_numpy = source(get_backend("numpy"), 3)
    draws(on_numpy)
    state = on_numpy.state()
    elsewhere = source(backend_or_skip(target), 3)
    elsewhere.restore(state)
    for got, wanted in zip(draws(elsewhere), draws(on_numpy)):
        np.testing.assert_array_equal(got, wanted)


def test_native_state_restores_only_on_its_own_library():
    state = NativeRandom(get_backend("numpy"), 1).state()
    NativeRandom(get_backend("array-api-strict"), 1).restore(state)  # numpy's generator under both
    with pytest.raises(UserError, match="belongs to numpy") as error:
        NativeRandom(backend_or_skip("torch"), 1).restore(state)
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="kind"):
        PortableRandom(get_backend("numpy"), 1).restore(state)


# --- resume ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("looks", "batch"), [(4, 1), (2, 0)], ids=["mid-epoch", "epoch-end"])
@pytest.mark.parametrize("recipe", [BOOK, SMALL], ids=["book", "default"])
def test_interrupted_resumes_exactly(mnist, tmp_path, recipe, looks, batch):
    """Stopped before batch 1 of epoch 1 (of 2 batches: the 5th look, after epoch 0's end) or at epoch 0's end (the
    3rd), the resumed run is the straight one."""
    straight = train(recipe, mnist)
    path = tmp_path / "stopped.npz"
    with pytest.raises(Interrupted) as stopped:
        train(dataclasses.replace(recipe, save=str(path)), mnist, stop=StopAfter(looks))
    assert (stopped.value.epoch, stopped.value.batch, stopped.value.path) == (1, batch, str(path))
    saved = checkpoint.load(path)
    assert (saved.epoch, saved.batch, len(saved.history)) == (1, batch, 1)
    resumed = train(dataclasses.replace(recipe, resume=str(path), save=str(tmp_path / "end.npz")), mnist)
    assert_same_parameters(resumed.model, straight.model)
    assert [dataclasses.replace(r, seconds=0, images_per_second=0) for r in resumed.history] == [
        dataclasses.replace(r, seconds=0, images_per_second=0) for r in straight.history
    ]


def test_interrupt_without_save_writes_the_default_file(mnist, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Interrupted) as stopped:
        train(SMALL, mnist, stop=StopAfter(0))
    assert stopped.value.defaulted and stopped.value.path == "portable-cnn-interrupted.npz"
    assert "no --save" in str(stopped.value)
    assert checkpoint.load(tmp_path / "portable-cnn-interrupted.npz").epoch == 0


@pytest.mark.parametrize("target", ["torch", "array-api-strict"])
def test_a_numpy_checkpoint_resumes_on_another_backend(mnist, tmp_path, target):
    """float64 and the same Philox stream: the continued run matches numpy's straight run to 1e-10."""
    backend_or_skip(target)
    config = dataclasses.replace(SMALL, dtype="float64")
    straight = train(config, mnist)
    path = str(tmp_path / "one.npz")
    train(dataclasses.replace(config, epochs=1, save=path), mnist)
    resumed = train(dataclasses.replace(config, resume=path, save=path, backend=target), mnist)
    for name in ("kernels", "weights"):
        np.testing.assert_allclose(
            to_host(getattr(resumed.model, name)), to_host(getattr(straight.model, name)), rtol=0, atol=1e-10
        )


def test_the_checkpoint_loads_bit_for_bit_on_every_backend(mnist, saved_file, backend):
    saved = checkpoint.load(saved_file)
    model, reference = saved.to_model(backend), saved.to_model(get_backend("numpy"))
    for name, array in saved.params.items():
        np.testing.assert_array_equal(to_host(model.params[name]), array)
    predicted, expected = (
        to_host(model.predict(mnist.test_images[:200])),
        to_host(reference.predict(mnist.test_images[:200])),
    )
    assert (predicted == expected).mean() >= 0.99


@pytest.mark.gpu
def test_a_gpu_checkpoint_resumes_on_numpy(mnist, tmp_path):
    name, device = gpu_target("cupy")
    backend_or_skip(name, device)
    config = dataclasses.replace(SMALL, dtype="float64")
    path = str(tmp_path / "gpu.npz")
    train(dataclasses.replace(config, epochs=1, save=path, backend=name, device=device), mnist)
    resumed = train(dataclasses.replace(config, resume=path, save=path), mnist)
    straight = train(config, mnist)
    np.testing.assert_allclose(to_host(resumed.model.weights), to_host(straight.model.weights), rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    ("change", "flag"),
    [
        ({"alpha": 3.0}, "--alpha 2.0"),
        ({"book": True, "dtype": "float64"}, "no --book"),
        ({"seed": 2}, "--seed 1"),
        ({"epochs": 1}, "--epochs"),
    ],
)
def test_resuming_another_recipe_names_the_field(mnist, saved_file, change, flag):
    with pytest.raises(UserError, match=flag) as error:
        train(dataclasses.replace(SMALL, resume=str(saved_file), **change), mnist)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("old_rng", [{"kind": "portable", "seed": 1, "step": 1, "draws": 2}, {"numbering": 1}])
def test_a_checkpoint_with_the_old_dropout_numbering_is_refused_in_one_line(mnist, saved_file, tmp_path, old_rng):
    """Written before every batch had its own mask (no ``numbering``, or numbering 1): continuing it would mix two
    numberings in one run, so it is refused, naming the version that wrote it."""
    good = checkpoint.load(saved_file)
    old = tmp_path / "old.npz"
    rng = old_rng if "kind" in old_rng else {**good.rng, **old_rng}
    checkpoint.save(old, dataclasses.replace(good, rng=rng, package_version="0.0.9"))
    with pytest.raises(UserError, match="written by portable-cnn 0.0.9 with the old dropout numbering") as error:
        train(dataclasses.replace(SMALL, resume=str(old)), mnist)
    assert "\n" not in str(error.value) and str(error.value).endswith("start a new run")


def test_a_book_checkpoint_has_no_numbering_and_still_resumes(mnist, tmp_path):
    """Only the default recipe's Philox masks were renumbered; the notebook's stream is unchanged."""
    path = tmp_path / "book.npz"
    train(dataclasses.replace(BOOK, epochs=1, save=str(path)), mnist)
    assert "numbering" not in checkpoint.load(path).rng
    assert len(train(dataclasses.replace(BOOK, resume=str(path)), mnist).history) == 2


def test_resuming_with_other_training_images_is_refused(mnist, saved_file):
    other = dataclasses.replace(mnist, train_images=mnist.train_images[::-1].copy())
    with pytest.raises(UserError, match="training images differ"):
        train(dataclasses.replace(SMALL, resume=str(saved_file)), other)


# --- files -------------------------------------------------------------------------------------------


def test_the_file_holds_parameters_and_metadata(saved_file):
    with np.load(saved_file, allow_pickle=False) as archive:
        assert set(archive.files) == {"kernels", "weights", "metadata"}
        meta = json.loads(archive["metadata"].tobytes())
    assert meta["format"] == checkpoint.FORMAT and meta["package_version"]
    assert meta["recipe"]["name"] == "default" and meta["config"]["train_size"] == 128
    assert meta["epoch"] == 1 and len(meta["history"]) == 1 and meta["rng"]["kind"] == "portable"
    assert meta["model"] == {
        "network": "convnet",
        "kernel_size": 3,
        "positions": 26,
        "num_kernels": 16,
        "dtype": "float32",
    }


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d, good: d / "missing.npz", "no checkpoint at"),
        (lambda d, good: _write(d / "empty.npz", b""), "is empty"),
        (
            lambda d, good: _write(d / "cut.npz", good.read_bytes()[: len(good.read_bytes()) // 2]),
            "truncated or corrupt",
        ),
        (lambda d, good: _write(d / "text.npz", b"I:0 Test-Acc:0.1\n"), "not a portable-cnn checkpoint"),
        (lambda d, good: d, "is a folder"),
    ],
    ids=["missing", "empty", "truncated", "foreign-text", "folder"],
)
def test_bad_files_end_in_one_line(saved_file, tmp_path, make, message):
    with pytest.raises(UserError, match=message) as error:
        checkpoint.load(make(tmp_path, saved_file))
    assert "\n" not in str(error.value)


def test_a_flipped_byte_is_caught(saved_file, tmp_path):
    data = bytearray(saved_file.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside the weights: the zip's CRC-32 no longer matches
    with pytest.raises(UserError, match="truncated or corrupt"):
        checkpoint.load(_write(tmp_path / "flipped.npz", bytes(data)))


def test_foreign_and_inconsistent_npz_files(saved_file, tmp_path):
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(UserError, match="no metadata"):
        checkpoint.load(tmp_path / "other.npz")
    np.save(tmp_path / "array.npy", np.zeros(3))
    with pytest.raises(UserError, match="not an .npz"):
        checkpoint.load(tmp_path / "array.npy")
    good = checkpoint.load(saved_file)
    newer = dict(good.meta, format_version=checkpoint.FORMAT_VERSION + 1)
    np.savez(
        tmp_path / "newer.npz",
        **good.params,
        metadata=np.frombuffer(json.dumps(newer).encode(), np.uint8),
    )
    with pytest.raises(UserError, match="upgrade portable-cnn"):
        checkpoint.load(tmp_path / "newer.npz")
    np.savez(
        tmp_path / "shape.npz",
        **{**good.params, "kernels": good.params["kernels"][:4]},
        metadata=np.frombuffer(json.dumps(good.meta).encode(), np.uint8),
    )
    with pytest.raises(UserError, match="kernels is float32"):
        checkpoint.load(tmp_path / "shape.npz")


def test_a_failed_write_keeps_the_old_file_and_no_temporary(saved_file, tmp_path, monkeypatch):
    path = tmp_path / "keep.npz"
    path.write_bytes(saved_file.read_bytes())
    good = checkpoint.load(path)

    def fail(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(UserError, match="No space left"):
        checkpoint.save(path, good)
    assert path.read_bytes() == saved_file.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.npz"]


# A writer that hangs inside save(), after its temporary file is created and before it is renamed.
HANGING_WRITER = """
import os, sys, time
from portable_cnn import checkpoint
saved = checkpoint.load(sys.argv[1])
def hang(descriptor):
    print("writing", flush=True)
    time.sleep(600)
os.fsync = hang
checkpoint.save(sys.argv[2], saved)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_the_next_save_removes_what_a_killed_writer_left_and_nothing_else(saved_file, tmp_path):
    path = tmp_path / "run.npz"
    writer = subprocess.Popen(
        [sys.executable, "-c", HANGING_WRITER, str(saved_file), str(path)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout.readline() == "writing\n"
    writer.send_signal(signal.SIGKILL)
    writer.communicate(timeout=60)
    [left] = [p.name for p in tmp_path.iterdir()]
    assert left.startswith(".run.npz.") and left.endswith(".tmp") and not path.exists()
    others = [
        ".other.npz.abcd1234.tmp",
        ".run.npz.abcd12345.tmp",
        "run.npz.abcd1234.tmp",
        ".run.npz.abcd1234.txt",
        ".xrun.npz.abcd1234.tmp",
    ]
    for name in others:
        (tmp_path / name).write_text("not ours")
    checkpoint.save(path, checkpoint.load(saved_file))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["run.npz", *others])
    assert checkpoint.load(path).epoch == checkpoint.load(saved_file).epoch


def test_non_finite_parameters_are_never_written(saved_file, tmp_path):
    good = checkpoint.load(saved_file)
    bad = dataclasses.replace(good, params={**good.params, "weights": np.full_like(good.params["weights"], np.nan)})
    with pytest.raises(ValueError, match="non-finite"):
        checkpoint.save(tmp_path / "nan.npz", bad)
    assert not (tmp_path / "nan.npz").exists()


def test_unwritable_save_paths_are_refused_before_training(mnist, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        train(dataclasses.replace(SMALL, save=str(tmp_path / "no" / "such.npz")), mnist)
    with pytest.raises(UserError, match="is a folder"):
        train(dataclasses.replace(SMALL, save=str(tmp_path)), mnist)


# --- divergence --------------------------------------------------------------------------------------


def test_divergence_keeps_the_last_good_state(mnist, tmp_path):
    """--book with alpha 1000: epoch 0 is finite, epoch 1 overflows the notebook's softmax."""
    path = tmp_path / "run.npz"
    config = dataclasses.replace(BOOK, epochs=4, alpha=1000.0, save=str(path), checkpoint_every=10)
    with pytest.raises(Diverged, match="diverged in epoch 1") as error:
        train(config, mnist)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    kept = checkpoint.load(path)  # written at the divergence: checkpoint_every=10 wrote nothing before
    assert kept.epoch == 1
    one_epoch = train(dataclasses.replace(config, epochs=1, save=None), mnist)
    assert_same_parameters(kept.to_model(get_backend()), one_epoch.model)


def test_default_recipe_divergence_in_the_first_epoch_saves_nothing(mnist, tmp_path):
    path = tmp_path / "run.npz"
    with pytest.raises(Diverged, match="diverged in epoch 0: the loss became nan") as error:
        train(dataclasses.replace(SMALL, alpha=1e38, save=str(path)), mnist)
    assert "nothing was saved" in str(error.value) and not path.exists()


# --- metrics and progress ----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_metrics_rows_are_flushed_every_epoch(mnist, tmp_path, suffix):
    path = tmp_path / f"metrics{suffix}"
    seen = []
    result = train(
        dataclasses.replace(SMALL, epochs=3, test_every=2, metrics=str(path)),
        mnist,
        on_epoch=lambda record: seen.append(len(read_metrics(path))),
    )
    assert seen == [1, 2, 3]  # each row is on disk when the epoch ends
    rows = read_metrics(path)
    assert [row["epoch"] for row in rows] == [0, 1, 2]
    assert rows[1]["test_acc"] is None and rows[2]["test_acc"] == result.history[2].test_acc
    assert [row["train_acc"] for row in rows] == [record.train_acc for record in result.history]
    for row, record in zip(rows, result.history, strict=True):  # each row is its epoch's record, rounded
        assert (row["loss"], row["seconds"], row["images_per_second"]) == (
            record.loss,
            round(record.seconds, 6),
            round(record.images_per_second, 1),
        )
    if suffix == ".csv":
        assert path.read_text().splitlines()[0] == "epoch,train_acc,test_acc,loss,seconds,images_per_second"
    else:
        assert json.loads(path.read_text().splitlines()[0])["epoch"] == 0


def test_resumed_metrics_keep_the_checkpoints_rows_only(mnist, tmp_path):
    path, metrics = str(tmp_path / "run.npz"), tmp_path / "m.csv"
    train(dataclasses.replace(SMALL, epochs=2, save=path, metrics=str(metrics)), mnist)
    with metrics.open("a") as file:
        file.write("2,0.5,,2.0,0.1,100.0\n")  # a row the checkpoint does not have (written after it)
    train(dataclasses.replace(SMALL, epochs=3, resume=path, save=path, metrics=str(metrics)), mnist)
    assert [row["epoch"] for row in read_metrics(metrics)] == [0, 1, 2]
    assert read_metrics(metrics)[2]["test_acc"] is not None


def test_bad_metrics_paths_are_refused(mnist, tmp_path):
    with pytest.raises(UserError, match=".csv or .jsonl"):
        train(dataclasses.replace(SMALL, metrics=str(tmp_path / "m.txt")), mnist)
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="not a portable-cnn metrics file"):
        read_metrics(tmp_path / "bad.csv")


class Stderr:
    def __init__(self, tty: bool):
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_is_switchable_and_follows_the_terminal_by_default(monkeypatch):
    monkeypatch.setattr(sys, "stderr", Stderr(tty=True))
    assert (
        show_progress(Config()) and not show_progress(Config(quiet=True)) and not show_progress(Config(progress=False))
    )
    monkeypatch.setattr(sys, "stderr", Stderr(tty=False))
    assert not show_progress(Config()) and show_progress(Config(progress=True))
