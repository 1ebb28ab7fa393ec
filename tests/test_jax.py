"""JAX as a backend: its devices, 64-bit numbers for this run only, the compiled step against the eager one,
checkpoints that continue across numpy, torch and jax, and the notebook's lines on JAX's CPU."""

import dataclasses
import threading

import jax
import numpy as np
import pytest

from portable_cnn import Callback, Config, UserError, backends, checkpoint, get_backend, train
from portable_cnn.backends import to_host
from portable_cnn.model import ConvNet
from portable_cnn.rng import PortableRandom
from portable_cnn.runs import Interrupted

from .conftest import StopAt, backend_or_skip

SMALL = Config(epochs=2, train_size=256, test_size=300, quiet=True)


def test_64_bits_are_on_inside_the_run_only():
    backend = get_backend("jax")
    with backend.activated():
        assert backend.xp.arange(3, dtype=backend.xp.int64).dtype == backend.xp.int64
    assert not jax.config.jax_enable_x64  # the user's global setting is left as it was


def test_float32_products_are_full_precision_inside_the_run_only():
    """On an NVIDIA GPU JAX's default float32 matrix product is TF32 (10-bit mantissas): a run asks for "highest"."""
    before = jax.config.jax_default_matmul_precision
    with get_backend("jax").activated():
        assert jax.config.jax_default_matmul_precision == "highest"
    assert jax.config.jax_default_matmul_precision == before


@pytest.mark.parametrize("device", ["cuda:x", "npu:0", "cpu:3"])
def test_bad_jax_devices_are_one_line(device):
    with pytest.raises(UserError) as error:
        get_backend("jax", device)
    assert "\n" not in str(error.value) and device in str(error.value)


def test_the_compiled_step_equals_the_eager_one(mnist, monkeypatch):
    """The same run compiled (jax.jit: the step's Python runs once, as its trace) and eager (the registry entry
    without ``compile``: the step's Python runs every batch): the same lines, weights equal to float32 rounding."""
    calls = {"gradients": 0, "logits": 0}
    for name in calls:
        monkeypatch.setattr(ConvNet, name, _counted(getattr(ConvNet, name), calls, name))
    config = dataclasses.replace(SMALL, backend="jax", eval_batch_size=100)  # 2 epochs of 2 batches, 3 test batches
    compiled = train(config, mnist)
    assert calls == {"gradients": 1, "logits": 1}  # each traced once, then run compiled
    eager_jax = dataclasses.replace(backends.LIBRARIES["jax"], compile=None, scan=None)
    monkeypatch.setitem(backends.LIBRARIES, "jax", eager_jax)
    calls.update(gradients=0, logits=0)
    eager = train(config, mnist)
    assert calls == {"gradients": 4, "logits": 6}  # every batch and every test batch in Python
    assert [r.line() for r in compiled.history] == [r.line() for r in eager.history]
    np.testing.assert_allclose(to_host(compiled.model.weights), to_host(eager.model.weights), rtol=0, atol=1e-6)


class EveryBatch(Callback):
    every_batch = True


@pytest.mark.parametrize(("callbacks", "calls"), [((), 2 + 2), ((EveryBatch(),), 2 * 3 + 2)], ids=["epoch", "batches"])
def test_an_epoch_is_one_compiled_call_and_its_evaluation_another(mnist, monkeypatch, callbacks, calls):
    """2 epochs of 3 batches (the last a short one), each evaluated: 2 + 2 compiled calls, or, for a callback that
    wants every batch, one a batch (the evaluation stays one call); numpy's lines, weights to float32 rounding."""
    made = {"calls": 0}
    jax_entry = backends.LIBRARIES["jax"]

    def counting_jit(module, function):
        return _counted(jax_entry.compile(module, function), made, "calls")

    monkeypatch.setitem(backends.LIBRARIES, "jax", dataclasses.replace(jax_entry, compile=counting_jit))
    config = dataclasses.replace(SMALL, train_size=300, backend="jax")
    result = train(config, mnist, callbacks=callbacks)
    assert made["calls"] == calls
    monkeypatch.setitem(backends.LIBRARIES, "jax", jax_entry)
    numpy_run = train(dataclasses.replace(config, backend="numpy"), mnist)
    assert [r.line() for r in result.history] == [r.line() for r in numpy_run.history]
    np.testing.assert_allclose(to_host(result.model.weights), to_host(numpy_run.model.weights), rtol=0, atol=1e-6)


class AskToStop(Callback):
    """Sets ``flag`` after the first call, as a Ctrl-C during the first epoch would."""

    def __init__(self, flag):
        self.flag = flag

    def on_batch_end(self, state, images):
        self.flag.set()


def test_a_stop_asked_in_an_epoch_ends_the_run_at_its_end_before_the_next_draws_its_masks(mnist, tmp_path, monkeypatch):
    """An epoch is one call on JAX: a stop asked during epoch 0 lets it finish, and the run ends before epoch 1's
    masks are drawn (no work wasted on them); the resumed run is the straight one."""
    drawn = {"masks": 0}
    monkeypatch.setattr(PortableRandom, "keep_masks", _counted(PortableRandom.keep_masks, drawn, "masks"))
    config = dataclasses.replace(SMALL, backend="jax", dtype="float64", epochs=3)
    path, stop = str(tmp_path / "stopped.npz"), threading.Event()
    with pytest.raises(Interrupted) as stopped:
        train(dataclasses.replace(config, save=path), mnist, stop=stop, callbacks=(AskToStop(stop),))
    assert (stopped.value.epoch, stopped.value.batch, drawn["masks"]) == (1, 0, 1)
    resumed = train(dataclasses.replace(config, resume=path, save=path), mnist)
    straight = train(config, mnist)
    assert [r.line() for r in resumed.history] == [r.line() for r in straight.history]
    np.testing.assert_allclose(to_host(resumed.model.weights), to_host(straight.model.weights), rtol=0, atol=1e-10)


def test_a_numpy_run_stopped_in_mid_epoch_continues_on_jax(mnist, tmp_path):
    """The resumed epoch's last batches one call each, then an epoch a call: numpy's straight run to 1e-10."""
    config = dataclasses.replace(SMALL, dtype="float64", epochs=3)
    path = str(tmp_path / "stopped.npz")
    with pytest.raises(Interrupted):
        train(dataclasses.replace(config, save=path), mnist, callbacks=(StopAt(1, 1),))
    saved = checkpoint.load(path)
    assert (saved.epoch, saved.batch) == (1, 1)
    resumed = train(dataclasses.replace(config, resume=path, save=path, backend="jax"), mnist)
    straight = train(config, mnist)
    assert [r.line() for r in resumed.history] == [r.line() for r in straight.history]
    np.testing.assert_allclose(to_host(resumed.model.weights), to_host(straight.model.weights), rtol=0, atol=1e-10)


def _counted(method, calls: dict, name: str):
    def counting(*args, **kwargs):
        calls[name] += 1
        return method(*args, **kwargs)

    return counting


@pytest.mark.parametrize(("first", "then"), [("numpy", "jax"), ("jax", "numpy"), ("jax", "torch"), ("torch", "jax")])
def test_a_checkpoint_continues_across_libraries(mnist, tmp_path, first, then):
    """float64 and the same Philox stream: the continued run matches numpy's straight run to 1e-10."""
    backend_or_skip(first)
    backend_or_skip(then)
    config = dataclasses.replace(SMALL, dtype="float64")
    straight = train(config, mnist)
    path = str(tmp_path / "one.npz")
    train(dataclasses.replace(config, epochs=1, save=path, backend=first), mnist)
    resumed = train(dataclasses.replace(config, resume=path, save=path, backend=then), mnist)
    assert [r.line() for r in resumed.history] == [r.line() for r in straight.history]
    for name in ("kernels", "weights"):
        np.testing.assert_allclose(
            to_host(getattr(resumed.model, name)), to_host(getattr(straight.model, name)), rtol=0, atol=1e-10
        )


@pytest.mark.slow
def test_book_lines_on_jax_cpu_through_the_collapse(mnist, book_lines):
    """The notebook's first 30 lines (its dynamics collapse and recover around epochs 15-25), bit for bit."""
    history = train(Config(book=True, epochs=30, backend="jax", quiet=True), mnist).history
    assert [record.line() for record in history] == book_lines[:30]
