"""Faults real use brings, each met as a careful Unix tool meets it: output paths that are not regular files,
symlinks, readers that go away, full disks, two sweeps on one folder, a folder of other settings, Ctrl-C on a
Dask sweep, and flags that can only fail later checked up front. Each test asserts the exit status, the one
line on stderr and what is on disk afterwards."""

import errno
import json
import os
import pathlib
import signal
import stat
import subprocess
import sys

import pytest

from portable_cnn import callbacks, checkpoint, cli
from portable_cnn.datasets import EMBEDDED_DIR

from .test_cli import run_cli
from .test_cli_tools import ENDLESS, TINY, main, one_line

EPOCH = ["--epochs", "1", *TINY]
SWEEP = ["--epochs", "2", "--train-size", "64", "--batch-size", "16", "--test-size", "100", "--test-every", "2"]


# --- output paths -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A checkpoint of one tiny epoch, for the commands that read one."""
    path = tmp_path_factory.mktemp("model") / "model.npz"
    assert cli.main(["train", *EPOCH, "--quiet", "--save", str(path), "--data-dir", str(EMBEDDED_DIR)]) == 0
    return path


def device(folder: pathlib.Path, name: str) -> pathlib.Path:
    """A character device standing for /dev/null: a node made in ``folder`` (as root), so that a regression
    replaces that node and never the machine's /dev/null; elsewhere /dev/null itself, which only root could
    replace."""
    path = folder / name
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        return pathlib.Path("/dev/null")
    return path


def special(kind: str, folder: pathlib.Path, name: str) -> pathlib.Path:
    """A path of ``kind`` that is not a regular file: a folder, a FIFO, a device, or a symlink to /dev/full."""
    path = folder / name
    if kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path = device(folder, name)
    else:
        path.symlink_to("/dev/full")
    return path


def what_it_is(path: pathlib.Path) -> tuple:
    """The kind of node at ``path`` (its link, if it is one), its target's kind, and a folder's entries."""
    mode = os.lstat(path).st_mode
    target = os.stat(path).st_mode
    entries = sorted(os.listdir(path)) if stat.S_ISDIR(target) else None
    return stat.S_IFMT(mode), stat.S_IFMT(target), entries


COMMANDS = {
    "train --save": lambda model, path: ["train", *EPOCH, "--save", str(path)],
    "train --metrics": lambda model, path: ["train", *EPOCH, "--metrics", str(path)],
    "evaluate --plot": lambda model, path: ["evaluate", "--checkpoint", str(model), "--plot", str(path)],
    "plot kernels -o": lambda model, path: ["plot", "kernels", "--checkpoint", str(model), "-o", str(path)],
    "plot curves -o": lambda model, path: ["plot", "curves", "--checkpoint", str(model), "-o", str(path)],
}
KINDS = {"folder": "it is a folder", "fifo": "it is a FIFO", "device": "it is a device", "link": "it is a device"}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_that_is_not_a_regular_file_is_refused_before_any_work(
    model, tmp_path, capsys, monkeypatch, command, kind
):
    monkeypatch.setenv("PORTABLE_CNN_DATA_DIR", str(EMBEDDED_DIR))
    path = special(kind, tmp_path, "out.csv" if "metrics" in command else "out.png")
    before, neighbours = what_it_is(path), sorted(os.listdir(path.parent))
    status, out, err = main(capsys, *COMMANDS[command](model, path))
    assert status == 2 and out == ""  # nothing trained, evaluated or drawn
    line = one_line(err)
    assert f"cannot write a {'metrics file' if 'metrics' in command else 'picture'}" in line or "--save" in command
    assert str(path) in line and KINDS[kind] in line
    assert what_it_is(path) == before and sorted(os.listdir(path.parent)) == neighbours  # untouched, no temporaries


@pytest.mark.parametrize("kind", ["file", "device", "fifo", "under a file"])
def test_a_sweep_folder_that_cannot_be_one_is_refused(tmp_path, kind):
    (tmp_path / "file").write_text("keep me\n")
    out = {
        "file": tmp_path / "file",
        "device": device(tmp_path, "node"),
        "fifo": special("fifo", tmp_path, "pipe"),
        "under a file": tmp_path / "file" / "sweep",
    }[kind]
    before = sorted(os.listdir(tmp_path))
    result = run_cli("sweep", *SWEEP, "--out", str(out), data_dir=EMBEDDED_DIR)
    assert result.returncode == 2 and result.stdout == ""
    line = one_line(result.stderr)
    assert str(out) in line and ("not a folder" in line or "Not a directory" in line)
    assert sorted(os.listdir(tmp_path)) == before and (tmp_path / "file").read_text() == "keep me\n"


def test_save_and_resume_write_through_a_symlink(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PORTABLE_CNN_DATA_DIR", str(EMBEDDED_DIR))
    (tmp_path / "kept").mkdir()
    link = tmp_path / "run.npz"
    link.symlink_to("kept/real.npz")
    status, _, err = main(capsys, "train", *EPOCH, "--save", "run.npz")
    assert status == 0, err
    assert link.is_symlink() and os.readlink(link) == "kept/real.npz"
    assert checkpoint.load(tmp_path / "kept" / "real.npz").epoch == 1

    status, _, err = main(capsys, "train", "--resume", "run.npz", "--epochs", "2")  # saves back to run.npz
    assert status == 0, err
    assert link.is_symlink() and os.readlink(link) == "kept/real.npz"
    assert checkpoint.load(tmp_path / "kept" / "real.npz").epoch == 2
    assert sorted(os.listdir(tmp_path)) == ["kept", "run.npz"] and os.listdir(tmp_path / "kept") == ["real.npz"]


def test_a_picture_is_written_through_a_symlink(model, tmp_path, capsys):
    link = tmp_path / "kernels.png"
    link.symlink_to(tmp_path / "target.png")
    status, out, err = main(capsys, "plot", "kernels", "--checkpoint", str(model), "-o", str(link))
    assert status == 0, err
    assert link.is_symlink() and (tmp_path / "target.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(os.listdir(tmp_path)) == ["kernels.png", "target.png"]


# --- readers that go away, full disks ---------------------------------------------------------------------


def with_stdout_closed(args, cwd, extra_env=None):
    """Run the command line with its stdout a pipe whose reader has already gone (as `| head` does once it has
    read its lines): every write to stdout fails with EPIPE. Returns (exit status, stderr)."""
    reader, writer = os.pipe()
    os.close(reader)
    environment = {**os.environ, "PORTABLE_CNN_DATA_DIR": str(EMBEDDED_DIR), **(extra_env or {})}
    try:
        result = subprocess.run(
            [sys.executable, "-m", "portable_cnn", *args],
            cwd=cwd,
            env=environment,
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    finally:
        os.close(writer)
    return result.returncode, result.stderr


SIGPIPE_STATUS = 128 + signal.SIGPIPE  # what a shell reports for a tool killed by SIGPIPE: 141


def test_train_into_a_closed_pipe_ends_quietly_with_nothing_half_written(tmp_path):
    status, err = with_stdout_closed(["train", "--epochs", "3", *TINY, "--save", "run.npz"], tmp_path)
    assert (status, err) == (SIGPIPE_STATUS, "")
    assert os.listdir(tmp_path) == []  # stopped at epoch 0's line, before its checkpoint: nothing, not half


@pytest.mark.parametrize(
    "args",
    [["info"], ["evaluate", "--json", "--test-size", "100", "--checkpoint", "MODEL"]],
    ids=["info", "evaluate --json"],
)
def test_reports_into_a_closed_pipe_end_quietly(model, tmp_path, args):
    status, err = with_stdout_closed([str(model) if arg == "MODEL" else arg for arg in args], tmp_path)
    assert (status, err) == (SIGPIPE_STATUS, "")


def test_a_sweep_into_a_closed_pipe_stops_its_runs_and_ends_quietly(tmp_path):
    args = ["sweep", "--seeds", "1-3", *SWEEP, "--workers", "1", "--out", "out"]
    status, err = with_stdout_closed(args, tmp_path)
    assert status == SIGPIPE_STATUS
    assert one_line(err).startswith("sweep: 3 runs, 0 already complete, 3 to run")
    runs = tmp_path / "out" / "runs"
    assert checkpoint.load(runs / "seed=1.npz").epoch == 2  # the run whose line could not be printed: done
    assert not (runs / "seed=3.npz").exists()  # never started: the sweep stopped
    assert all(checkpoint.load(path) for path in runs.glob("*.npz"))  # what is there reads back
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_full_disk_under_the_metrics_stops_in_one_line_and_keeps_the_last_good_checkpoint(
    tmp_path, capsys, monkeypatch
):
    """The disk fills while epoch 1's row is written: half the row goes down, then ENOSPC."""
    write, full = os.write, []

    def fill_up(descriptor, data):
        if full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if bytes(data).startswith(b"1,"):  # epoch 1's CSV row: its first 10 bytes fill the disk
            full.append(descriptor)
            return write(descriptor, bytes(data)[:10])
        return write(descriptor, data)

    monkeypatch.setattr(os, "write", fill_up)
    monkeypatch.chdir(tmp_path)
    args = ["--epochs", "3", *TINY, "--checkpoint-every", "1", "--save", "run.npz", "--metrics", "run.csv"]
    status, out, err = main(capsys, "train", *args, "--data-dir", str(EMBEDDED_DIR))
    assert status == 2 and one_line(err) == "portable-cnn: error: cannot write a metrics file run.csv: " + os.strerror(
        errno.ENOSPC
    )
    assert len(out.splitlines()) == 2  # epochs 0 and 1 were printed; the run stopped at epoch 1's row
    rows = (tmp_path / "run.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("0,")  # header and epoch 0: the half row was taken back
    saved = checkpoint.load(tmp_path / "run.npz")
    assert (saved.epoch, saved.batch) == (1, 0)  # the last good checkpoint, written after epoch 0
    assert sorted(os.listdir(tmp_path)) == ["run.csv", "run.npz"]


# --- sweeps -----------------------------------------------------------------------------------------------


def spawn_sweep(args, cwd, extra_env=None):
    """A sweep in its own process group (so that the test can end it and all its workers at once)."""
    environment = {**os.environ, "PORTABLE_CNN_DATA_DIR": str(EMBEDDED_DIR), **(extra_env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "portable_cnn", "sweep", *args],
        cwd=cwd,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_a_second_sweep_on_a_folder_in_use_is_refused_and_a_killed_one_leaves_no_lock(tmp_path):
    args = ["--epochs", ENDLESS, "--train-size", "64", "--test-size", "100", "--workers", "1", "--out", "out"]
    first = spawn_sweep(args, tmp_path)
    try:
        assert first.stderr.readline().startswith("sweep: 1 run, 0 already complete, 1 to run")  # it holds the folder
        records = {path: path.read_bytes() for path in (tmp_path / "out").rglob("*.json")}
        second = run_cli("sweep", *args, data_dir=EMBEDDED_DIR, cwd=tmp_path)
        assert second.returncode == 2 and second.stdout == ""
        assert one_line(second.stderr) == (
            "portable-cnn: error: another sweep is running in out (it holds out/sweep.lock); "
            "wait for it to end or use another --out"
        )
        assert {path: path.read_bytes() for path in (tmp_path / "out").rglob("*.json")} == records
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the sweep and its worker, as a crash or kill -9 would end them
        first.communicate(timeout=60)
    # The lock went with its holder: the next sweep gets past it (to the check of its settings).
    third = run_cli("sweep", *args[:-4], "--epochs", "1", "--workers", "1", "--out", "out", cwd=tmp_path)
    assert third.returncode == 2
    assert one_line(third.stderr).startswith(
        "portable-cnn: error: out holds a sweep with other settings (--epochs 1000000 there, --epochs 1 here)"
    )


def test_a_folder_of_other_settings_is_refused_naming_them_and_force_starts_again(tmp_path):
    def sweep(*flags):
        return run_cli("sweep", *flags, "--workers", "1", "--out", "out", data_dir=EMBEDDED_DIR, cwd=tmp_path)

    assert sweep(*SWEEP).returncode == 0
    kept = {path: path.read_bytes() for path in (tmp_path / "out").rglob("*") if path.is_file()}
    for flags, difference in [
        (["--epochs", "3"], "--epochs 2 there, --epochs 3 here"),
        (["--set", "alpha=1,2"], "no --set alpha there, --set alpha=1,2 here"),
        (["--book"], "no --book there, --book here"),
    ]:
        refused = sweep(*SWEEP, *flags)
        assert refused.returncode == 2 and refused.stdout == ""
        line = one_line(refused.stderr)
        assert line.startswith(f"portable-cnn: error: out holds a sweep with other settings ({difference}")
        assert line.endswith("use another --out, or --force to delete its runs and start again")
        assert {path: path.read_bytes() for path in (tmp_path / "out").rglob("*") if path.is_file()} == kept

    more_seeds = sweep(*SWEEP, "--seeds", "1-2")  # the same runs, one more sample: the same sweep
    assert more_seeds.returncode == 0 and "1 already complete, 1 to run" in more_seeds.stderr

    forced = sweep(*SWEEP, "--set", "alpha=1,2", "--force")
    assert forced.returncode == 0, forced.stderr
    assert sorted(path.name for path in (tmp_path / "out" / "runs").glob("*.npz")) == [
        "alpha=1,seed=1.npz",
        "alpha=2,seed=1.npz",
    ]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [row["configuration"] for row in summary["configurations"]] == ["alpha=1", "alpha=2"]


SITE_GATE = '''
"""Test hook: each sweep run waits in epoch 1, before its batch 1, until the sweep asks it to stop."""
import os, pathlib, time

from portable_cnn import callbacks

_gate = pathlib.Path(os.environ["PORTABLE_CNN_TEST_GATE"])
_original = callbacks.StopOnRequest.on_batch_begin


def on_batch_begin(self, state):
    self.calls = getattr(self, "calls", 0) + 1
    if self.calls == 6:  # 4 batches an epoch: epoch 1, batch 1
        (_gate / f"seed={state.config.seed}.ready").touch()
        while not self._flag.is_set():
            time.sleep(0.01)
    _original(self, state)


callbacks.StopOnRequest.on_batch_begin = on_batch_begin
'''


def test_ctrl_c_stops_a_dask_sweep_says_which_runs_it_saved_and_the_same_command_finishes(tmp_path):
    pytest.importorskip("distributed", reason="the Dask path needs dask[distributed]")
    hooks, gate = tmp_path / "hooks", tmp_path / "gate"
    hooks.mkdir()
    gate.mkdir()
    (hooks / "sitecustomize.py").write_text(SITE_GATE)
    path = os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")])
    args = ["--seeds", "1-4", *SWEEP, "--scheduler", "local", "--workers", "2", "--out", "out"]
    child = spawn_sweep(args, tmp_path, {"PYTHONPATH": path, "PORTABLE_CNN_TEST_GATE": str(gate)})
    try:
        assert "to run on the Dask cluster" in child.stderr.readline()
        while len(list(gate.glob("*.ready"))) < 2:  # both workers hold a run in the middle of epoch 1
            assert child.poll() is None, child.stderr.read()
            os.sched_yield()
        in_flight = sorted(path.name.removesuffix(".ready") for path in gate.glob("*.ready"))
        os.killpg(child.pid, signal.SIGINT)  # the terminal's Ctrl-C: the sweep and its workers
        _, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    assert child.returncode == 130, err
    summary, line = err.strip().splitlines()  # and no traceback or log of a worker
    assert summary.startswith("portable-cnn: 4 runs in out not complete (not in the table)")
    waiting = sorted({"seed=1", "seed=2", "seed=3", "seed=4"} - set(in_flight))
    saved = ", ".join(f"{name} (after 1 epoch and 1 of 4 batches)" for name in in_flight)
    assert line == (
        f"portable-cnn: SIGINT: 4 runs not finished; saved where they stopped: {saved}; "
        f"not started: {', '.join(waiting)}; run the same command again to finish them"
    )
    runs = tmp_path / "out" / "runs"
    for name in in_flight:
        stopped = checkpoint.load(runs / f"{name}.npz")
        assert (stopped.epoch, stopped.batch) == (1, 1)
    assert not any((runs / f"{name}.npz").exists() for name in waiting)

    again = run_cli("sweep", *args, data_dir=EMBEDDED_DIR, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert all(checkpoint.load(runs / f"seed={seed}.npz").epoch == 2 for seed in range(1, 5))
    assert "failed" not in again.stderr


# --- up-front checks --------------------------------------------------------------------------------------


def test_a_backend_set_for_a_sweep_is_checked_as_the_flag_is(tmp_path):
    try:
        import cupy  # noqa: F401

        pytest.skip("cupy is installed here")
    except ImportError:
        pass
    result = run_cli("sweep", *SWEEP, "--set", "backend=numpy,cupy", "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and result.stdout == ""
    line = one_line(result.stderr)
    assert "backend 'cupy' needs cupy, which is not installed" in line and "pip install" in line
    assert not (tmp_path / "out").exists()  # refused before the folder, the workers or any run


def test_maps_of_an_index_past_mnist_says_the_range(model, tmp_path, capsys):
    out = tmp_path / "maps.png"
    args = ["plot", "maps", "--checkpoint", str(model), "--index", "10000", "--data-dir", str(EMBEDDED_DIR)]
    status, stdout, err = main(capsys, *args, "-o", str(out))
    assert (status, stdout) == (2, "")
    assert one_line(err) == "portable-cnn: error: --index 10000 is out of range: MNIST's test images are 0-9999"
    assert not out.exists()


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_progress_without_tqdm_names_the_extra(tmp_path, capsys, monkeypatch, command):
    monkeypatch.setattr(callbacks, "tqdm", None)
    monkeypatch.chdir(tmp_path)
    extra = ["--out", "out"] if command == "sweep" else ["--save", "run.npz"]
    status, out, err = main(capsys, command, *SWEEP, "--progress", *extra, "--data-dir", str(EMBEDDED_DIR))
    assert (status, out) == (2, "")
    assert one_line(err) == (
        "portable-cnn: error: --progress draws a bar with tqdm, which is not installed; "
        "install it with: pip install 'portable-cnn[progress]'"
    )
    assert os.listdir(tmp_path) == []
