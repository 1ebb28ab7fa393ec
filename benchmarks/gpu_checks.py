"""The GPU check's proofs (stage 3 of benchmarks/gpu_check.sh), one PASS/FAIL line each, on every GPU library.

    python benchmarks/gpu_checks.py [--dry-run] [--json PATH]

For cupy, torch CUDA and jax GPU: no host synchronisation inside the batch loop (from the epoch's start, where its
dropout masks are drawn, to its last batch's end; for --book, whose masks are uploaded from the host once an epoch,
each batch) under a guard: on cupy the batches are captured as a CUDA graph (CUDA refuses any synchronisation while
a stream is captured; ``cupyx.allow_synchronize`` is deprecated) and then launched, on torch
``torch.cuda.set_sync_debug_mode("error")``, on jax ``jax.transfer_guard_device_to_host("disallow")``; Philox words,
floats and masks equal to numpy's, five float32 epochs within 0.005 test accuracy of numpy's, one float64 epoch
within 1e-10 of numpy's parameters, a run stopped in mid-epoch that resumes to the straight run, ``predict`` from
the library outside any run on the model's device, and the command line's ``info``, ``--device cuda:1`` and
``CUDA_VISIBLE_DEVICES=""`` each ending in one line of the package's (the libraries' own log lines, such as XLA's
cuInit warning, are not counted).

``--json PATH`` writes every result so far after each check. ``--dry-run`` runs the same checks on CPU stand-ins
(array-api-strict's emulated "device1" for cupy, torch and jax on the CPU) at small sizes; there a stand-in that is
not installed is skipped, on the GPU machine it fails.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from portable_cnn import Callback, Config, ConvNet, UserError, get_backend, load_mnist, philox, train  # noqa: E402 (after the sys.path line)
from portable_cnn.backends import LIBRARIES, to_host  # noqa: E402 (after the sys.path line)
from portable_cnn.runs import Interrupted  # noqa: E402 (after the sys.path line)

GPU_TARGETS = (("cupy", "cuda:0"), ("torch", "cuda:0"), ("jax", "cuda:0"))
STAND_INS = (("array-api-strict", "device1"), ("torch", "cpu"), ("jax", "cpu"))
DRY_CLI_TARGETS = (("numpy", None), ("torch", None))  # libraries here that must refuse a GPU in one line


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much each check trains: the book's protocol on the GPU, a small slice for the dry run."""

    train_size: int
    test_size: int
    float32_epochs: int


GPU_SIZES = Sizes(train_size=1000, test_size=10000, float32_epochs=5)
DRY_SIZES = Sizes(train_size=256, test_size=200, float32_epochs=1)
FLOAT32_TOLERANCE = 0.005  # test accuracy, against numpy's, per epoch
FLOAT64_TOLERANCE = 1e-10  # parameters, against numpy's, after one epoch


class Report:
    """PASS/FAIL/SKIP lines as the checks go, and every result so far in ``json_path`` after each;
    the exit status is 1 if any failed."""

    def __init__(self, json_path: Path | None = None):
        self.failures, self.results, self.json_path = 0, [], json_path

    def line(self, status: str, name: str, detail: str = "") -> None:
        self.failures += status == "FAIL"
        print(f"{status} {name}{': ' + detail if detail else ''}", flush=True)
        self.results.append({"status": status, "check": name, "detail": detail})
        if self.json_path is not None:
            self.json_path.parent.mkdir(parents=True, exist_ok=True)
            self.json_path.write_text(json.dumps({"failures": self.failures, "results": self.results}, indent=1) + "\n")

    def check(self, name: str, run, *arguments) -> None:
        """Run ``run(*arguments)`` (returns a detail string, raises AssertionError or anything else on failure)."""
        try:
            self.line("PASS", name, run(*arguments))
        except AssertionError as error:
            self.line("FAIL", name, str(error))
        except Exception as error:
            last = traceback.extract_tb(error.__traceback__)[-1]
            self.line("FAIL", name, f"{type(error).__name__}: {error} (at {Path(last.filename).name}:{last.lineno})")


@contextlib.contextmanager
def cupy_captured():
    """The work queued inside is captured as a CUDA graph (``cupy.cuda.Stream.begin_capture``, cupy's relaxed mode,
    in which its memory pool may still grow), then launched and waited for: while a stream is captured, CUDA refuses
    every synchronising call (a device-to-host copy, a stream or device wait), so a hidden host sync raises."""
    import cupy

    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        try:
            yield
        finally:
            graph = stream.end_capture()
        graph.launch(stream)
    stream.synchronize()


@contextlib.contextmanager
def no_host_sync(backend):
    """Inside, any host synchronisation or read on ``backend``'s device raises (on cupy, when the capture ends);
    on a CPU stand-in, nothing is guarded (tests/test_syncs.py counts host reads there)."""
    if backend.name == "cupy":
        with cupy_captured():
            yield
    elif backend.name == "torch" and backend.device.type == "cuda":
        import torch

        torch.cuda.set_sync_debug_mode("error")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")
    elif backend.name == "jax":
        import jax

        with jax.transfer_guard_device_to_host("disallow"):  # a scalar operand's upload is no sync; a read is
            yield
    else:
        yield


class GuardTheBatchLoop(Callback):
    """Runs the batch loop inside :func:`no_host_sync`: from the epoch's start (its masks drawn on the device) to
    its last batch's end, or each batch alone for ``--book`` (its masks are the host stream's, uploaded per epoch)."""

    def __init__(self, backend, book: bool):
        self.backend, self.book, self.batches, self.images, self._guard = backend, book, 0, 0, None

    def _open(self):
        if self._guard is None:
            self._guard = contextlib.ExitStack()
            self._guard.enter_context(no_host_sync(self.backend))

    def on_epoch_begin(self, state):
        if not self.book:
            self._open()

    def on_batch_begin(self, state):
        self._open()

    def on_batch_end(self, state, images):
        self.batches += 1
        self.images += images
        if self.book or self.images % state.batches[-1][1] == 0:  # the epoch's last batch (or its one call) ended
            self._close()

    def on_train_end(self, state):
        self._close()

    def _close(self):
        if self._guard is not None:
            guard, self._guard = self._guard, None
            guard.close()


class StopAt(Callback):
    """Asks the run to stop when it reaches batch ``batch`` of epoch ``epoch``."""

    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch, self._looks = epoch, batch, 0

    def on_batch_begin(self, state):
        per_epoch = len(state.batches)
        if self._looks == self.epoch * per_epoch + self.batch:
            state.stop_training = True
        self._looks += 1


def config(sizes: Sizes, **settings) -> Config:
    return Config(train_size=sizes.train_size, test_size=sizes.test_size, quiet=True, **settings)


def parameter_gap(first, second) -> float:
    """The largest absolute difference between two models' parameters."""
    return max(
        float(np.max(np.abs(to_host(array).astype(np.float64) - to_host(second.params[name]))))
        for name, array in first.params.items()
    )


def test_accuracies(history) -> list[float]:
    return [record.test_acc for record in history]


def check_no_sync(backend, device, sizes: Sizes, mnist, book: bool) -> str:
    guard = GuardTheBatchLoop(backend, book)
    train(config(sizes, epochs=2, book=book, backend=backend.name, device=device), mnist, callbacks=(guard,))
    assert guard.batches > 0, "no batch ran"
    watched = "each batch" if book else "each epoch's masks and batches"
    return f"{guard.batches} step calls without a host sync ({watched} guarded)"


def check_predict(backend, device, sizes: Sizes, mnist) -> str:
    """A model trained on the device, asked from the library after the run (no device made current by it)."""
    run = train(config(sizes, epochs=1, backend=backend.name, device=device), mnist)
    images = mnist.test_images[:500]
    predicted = to_host(run.model.predict(images))
    model = run.model
    on_host = ConvNet(
        {name: to_host(array) for name, array in model.params.items()}, model.kernel_size, model.positions
    )
    agree = int(np.sum(predicted == to_host(on_host.predict(images))))
    assert agree >= len(images) - 2, f"{agree} of {len(images)} predictions equal to numpy's"
    return f"{agree} of {len(images)} predictions equal to numpy's, made on the model's device"


def check_philox(backend, device) -> str:
    from array_api_compat import numpy as np_xp

    draws = {
        "words": lambda ns, where: philox.random_bits(ns, 1001, seed=2**40 + 7, stream=3, step=5, device=where),
        "float32": lambda ns, where: philox.uniform(
            ns, (13, 77), seed=1, stream=1, step=0, dtype=ns.float32, device=where
        ),
        "float64": lambda ns, where: philox.uniform(
            ns, (13, 77), seed=1, stream=2, step=0, dtype=ns.float64, device=where
        ),
        "mask p=0.5": lambda ns, where: philox.bernoulli_steps(
            ns, [(128, 10816)], 0.5, seed=1, stream=0, first_step=9, device=where
        )[0],
        "mask p=3/8": lambda ns, where: philox.bernoulli_steps(
            ns, [(7, 129)], 3 / 8, seed=1, stream=0, first_step=9, device=where
        )[0],
    }
    with backend.activated():
        for name, draw in draws.items():
            got, wanted = to_host(draw(backend.xp, backend.device)), to_host(draw(np_xp, "cpu"))
            assert got.dtype == wanted.dtype and np.array_equal(got, wanted), f"{name} differ from numpy's"
    return f"{', '.join(draws)} equal to numpy's, bit for bit"


def check_float32(backend, device, sizes: Sizes, mnist, reference) -> str:
    run = train(config(sizes, epochs=sizes.float32_epochs, backend=backend.name, device=device), mnist)
    gaps = [abs(a - b) for a, b in zip(test_accuracies(run.history), test_accuracies(reference.history))]
    assert max(gaps) <= FLOAT32_TOLERANCE, f"test accuracy {max(gaps):.4f} from numpy's (allowed {FLOAT32_TOLERANCE})"
    return f"{len(gaps)} epochs, test accuracy at most {max(gaps):.4f} from numpy's"


def check_float64(backend, device, sizes: Sizes, mnist, reference) -> str:
    run = train(config(sizes, epochs=1, dtype="float64", backend=backend.name, device=device), mnist)
    gap = parameter_gap(run.model, reference.model)
    assert gap <= FLOAT64_TOLERANCE, f"parameters {gap:.3g} from numpy's (allowed {FLOAT64_TOLERANCE:g})"
    return f"parameters {gap:.3g} from numpy's after one epoch"


def check_resume(backend, device, sizes: Sizes, mnist) -> str:
    settings = config(sizes, epochs=2, dtype="float64", backend=backend.name, device=device)
    straight = train(settings, mnist)
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "stopped.npz")
        try:
            stopping = dataclasses.replace(settings, save=path, epoch_call=False)  # a call a batch, to stop inside one
            train(stopping, mnist, callbacks=(StopAt(epoch=1, batch=1),))
            raise AssertionError("the run did not stop")
        except Interrupted as stopped:
            assert (stopped.epoch, stopped.batch) == (1, 1), f"stopped at epoch {stopped.epoch}, batch {stopped.batch}"
        resumed = train(dataclasses.replace(settings, resume=path, save=path), mnist)
    assert test_accuracies(resumed.history) == test_accuracies(straight.history), "the resumed run's lines differ"
    gap = parameter_gap(resumed.model, straight.model)
    assert gap <= FLOAT64_TOLERANCE, f"parameters {gap:.3g} from the straight run's"
    return f"stopped at epoch 1 batch 1, resumed: the straight run's lines, parameters within {gap:.3g}"


def package_lines(stderr: str) -> list[str]:
    """The lines the package wrote (``portable-cnn: ...``), not the libraries' own logs (XLA's cuInit warning)."""
    return [line for line in stderr.splitlines() if line.startswith("portable-cnn")]


def ends_in_one_line(arguments: list[str], environment: dict, may_succeed: bool) -> str:
    """``portable-cnn ARGUMENTS`` ends cleanly: no traceback, and a refusal says why in exactly one line of the
    package's on stderr."""
    command = [sys.executable, "-m", "portable_cnn", *arguments]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **environment}, timeout=120)
    output = done.stdout + done.stderr
    assert "Traceback" not in output, f"a traceback: {output.strip().splitlines()[-1]}"
    if done.returncode == 0:
        assert may_succeed, "it succeeded where it should have refused"
        return "ran"
    lines = package_lines(done.stderr)
    assert len(lines) == 1, f"{len(lines)} lines of the package's on stderr: {done.stderr.strip()!r}"
    return lines[0]


def cli_checks(report: Report, targets, sizes: Sizes) -> None:
    small = ["--epochs", "1", "--train-size", str(sizes.train_size), "--test-size", str(sizes.test_size)]
    hidden = {"CUDA_VISIBLE_DEVICES": ""}
    report.check("info", ends_in_one_line, ["info"], {}, True)
    report.check('info with CUDA_VISIBLE_DEVICES=""', ends_in_one_line, ["info"], hidden, True)
    for name, _ in targets:
        second_gpu = ["train", "--backend", name, "--device", "cuda:1", *small]
        report.check(f"{name} --device cuda:1", ends_in_one_line, second_gpu, {}, True)
        no_gpu = ["train", "--backend", name, "--device", "cuda", *small]
        report.check(f'{name} --device cuda with CUDA_VISIBLE_DEVICES=""', ends_in_one_line, no_gpu, hidden, False)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/gpu_checks.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU stand-ins at small sizes")
    parser.add_argument("--json", type=Path, help="write the results so far here after each check")
    args = parser.parse_args(argv)
    targets, sizes = (STAND_INS, DRY_SIZES) if args.dry_run else (GPU_TARGETS, GPU_SIZES)
    report = Report(args.json)
    mnist = load_mnist(None)
    reference32 = train(config(sizes, epochs=sizes.float32_epochs), mnist)
    reference64 = train(config(sizes, epochs=1, dtype="float64"), mnist)
    for name, device in targets:
        if name not in LIBRARIES:
            report.line("SKIP" if args.dry_run else "FAIL", name, "not a backend of this package")
            continue
        try:
            backend = get_backend(name, device)
        except UserError as error:
            report.line("SKIP" if args.dry_run else "FAIL", f"{name} {device}", str(error))
            continue
        label = f"{name} {device}"
        report.check(f"{label}: no host sync in the batch loop", check_no_sync, backend, device, sizes, mnist, False)
        report.check(
            f"{label}: no host sync in the batch loop (--book)", check_no_sync, backend, device, sizes, mnist, True
        )
        report.check(f"{label}: Philox bits", check_philox, backend, device)
        report.check(f"{label}: float32", check_float32, backend, device, sizes, mnist, reference32)
        report.check(f"{label}: float64", check_float64, backend, device, sizes, mnist, reference64)
        report.check(f"{label}: stop and resume", check_resume, backend, device, sizes, mnist)
        report.check(f"{label}: predict outside the run", check_predict, backend, device, sizes, mnist)
    cli_checks(report, DRY_CLI_TARGETS if args.dry_run else targets, sizes)
    print(f"gpu_checks: {report.failures} failed", flush=True)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
