"""The tools around training, from the command line: Ctrl-C and SIGTERM, divergence, resume, evaluate,
predict, plot, metrics and progress flags, missing extras."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from portable_cnn import checkpoint, cli, get_backend
from portable_cnn.backends import to_host

from .conftest import BACKENDS, backend_or_skip

TINY = ["--train-size", "128", "--batch-size", "64", "--test-size", "100"]  # 2 batches an epoch
# Runs stopped by a signal: so many epochs that none can end before its signal arrives, however fast the machine.
ENDLESS = str(10**6)


def main(capsys, *argv):
    """Run the command line in this process: (exit status, stdout, stderr)."""
    try:
        status = cli.main(list(argv))
    except SystemExit as exit:  # argparse's usage errors
        status = exit.code
    out, err = capsys.readouterr()
    return status, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def spawn(args, cwd, mnist_dir):
    environment = {**os.environ, "PORTABLE_CNN_DATA_DIR": str(mnist_dir)}
    return subprocess.Popen(
        [sys.executable, "-m", "portable_cnn", *args],
        cwd=cwd,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def ready(child) -> str:
    """Wait (as long as it takes, no clock) for a training child's first line: its signal handlers are in place and
    epoch 0 is done, so a signal sent now stops it in a later batch. A child that ended instead fails the test."""
    first = child.stdout.readline()
    if not first.startswith("I:0 "):
        child.kill()
        pytest.fail(f"the child printed {first!r} instead of epoch 0's line: {child.communicate()[1][-2000:]}")
    return first


@pytest.fixture(scope="module")
def model_file(mnist_dir, tmp_path_factory):
    """A model good enough to read digits (about 80% on the test set), and the metrics of its run."""
    folder = tmp_path_factory.mktemp("model")
    status = cli.main(
        [
            "train",
            "--epochs",
            "5",
            "--train-size",
            "500",
            "--test-size",
            "500",
            "--test-every",
            "2",
            "--quiet",
            "--save",
            str(folder / "model.npz"),
            "--metrics",
            str(folder / "metrics.csv"),
            "--data-dir",
            str(mnist_dir),
        ]
    )
    assert status == 0
    return folder / "model.npz"


# --- interrupts and divergence, through a subprocess ------------------------------------------------


def test_ctrl_c_saves_the_default_file_and_the_resumed_run_is_the_straight_one(
    mnist_dir, tmp_path, capsys, monkeypatch
):
    child = spawn(["train", "--epochs", ENDLESS, *TINY], tmp_path, mnist_dir)
    first = ready(child)
    child.send_signal(signal.SIGINT)
    rest, err = child.communicate(timeout=120)
    assert child.returncode == 130, err
    line = one_line(err)
    assert (
        "SIGINT" in line
        and "no --save" in line
        and line.endswith("resume with: portable-cnn train --resume portable-cnn-interrupted.npz")
    )
    saved = checkpoint.load(tmp_path / "portable-cnn-interrupted.npz")
    assert saved.epoch >= 1 and saved.config["epochs"] == int(ENDLESS)
    printed = (first + rest).splitlines()
    assert len(printed) == saved.epoch

    epochs = str(saved.epoch + 2)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PORTABLE_CNN_DATA_DIR", str(mnist_dir))
    status, resumed, err = main(capsys, "train", "--resume", "portable-cnn-interrupted.npz", "--epochs", epochs)
    assert status == 0, err
    status, straight, _ = main(capsys, "train", "--epochs", epochs, *TINY, "--save", "straight.npz")
    assert printed + resumed.splitlines() == straight.splitlines()
    np.testing.assert_array_equal(
        checkpoint.load("portable-cnn-interrupted.npz").weights, checkpoint.load("straight.npz").weights
    )


def test_sigterm_saves_to_save_and_says_how_to_resume(mnist_dir, tmp_path):
    child = spawn(
        ["train", "--book", "--epochs", ENDLESS, *TINY, "--save", "run.npz", "--metrics", "run.csv"],
        tmp_path,
        mnist_dir,
    )
    ready(child)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130, err
    line = one_line(err)
    assert "SIGTERM" in line and "saved run.npz" in line and line.endswith("portable-cnn train --resume run.npz")
    saved = checkpoint.load(tmp_path / "run.npz")
    assert saved.meta["recipe"]["name"] == "book" and saved.epoch >= 1
    assert len((tmp_path / "run.csv").read_text().splitlines()) == 1 + saved.epoch  # header + one row per epoch done


def test_divergence_stops_with_one_line_and_keeps_the_good_checkpoint(mnist_dir, tmp_path):
    """--book with alpha 1000: epoch 0 is finite, epoch 1 overflows the notebook's softmax (the book's
    recipe is frozen, so this stays true; the default recipe's divergence is tested in test_checkpoint)."""
    args = ["--book", "--alpha", "1000", "--epochs", "5", *TINY, "--save", "run.npz", "--checkpoint-every", "1"]
    child = spawn(["train", *args], tmp_path, mnist_dir)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 1
    line = one_line(err)
    assert (
        "diverged in epoch 1" in line
        and "smaller --alpha" in line
        and "run.npz keeps the last good state (1 epoch)" in line
    )
    assert len(out.splitlines()) == 1
    kept = checkpoint.load(tmp_path / "run.npz")
    assert kept.epoch == 1 and np.isfinite(kept.weights).all()


# --- train flags ---------------------------------------------------------------------------------------


def test_five_and_five_epochs_print_what_ten_print(mnist_dir, tmp_path, capsys):
    data = ["--data-dir", str(mnist_dir)]
    for recipe in (["--book"], []):
        _, straight, _ = main(
            capsys, "train", *recipe, "--epochs", "10", *TINY, *data, "--save", str(tmp_path / "ten.npz")
        )
        _, first, _ = main(
            capsys, "train", *recipe, "--epochs", "5", *TINY, *data, "--save", str(tmp_path / "five.npz")
        )
        status, second, err = main(capsys, "train", "--resume", str(tmp_path / "five.npz"), "--epochs", "10")
        assert status == 0 and err.startswith("portable-cnn: saved"), err
        assert first.splitlines() + second.splitlines() == straight.splitlines() and len(straight.splitlines()) == 10
        np.testing.assert_array_equal(
            checkpoint.load(tmp_path / "five.npz").weights, checkpoint.load(tmp_path / "ten.npz").weights
        )


def test_resume_refuses_another_recipe_in_one_line(model_file, capsys):
    status, _, err = main(capsys, "train", "--resume", str(model_file), "--alpha", "3")
    assert status == 2 and "trained with --alpha 2.0" in one_line(err) and "--alpha 3.0" in err
    status, _, err = main(capsys, "train", "--resume", str(model_file))
    assert status == 2 and "ask for more" in one_line(err)


def test_progress_flags(mnist_dir, capsys):
    args = ["train", "--epochs", "1", *TINY, "--data-dir", str(mnist_dir)]
    assert "img/s" in main(capsys, *args, "--progress")[2]
    assert main(capsys, *args, "--no-progress")[2] == ""
    assert main(capsys, *args)[2] == ""  # stderr is not a terminal here


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["train", "--checkpoint-every", "0"], "--checkpoint-every"),
        (["train", "--metrics", "run.txt"], ".csv or .jsonl"),
        (["train", "--save", "no/such/folder/run.npz"], "does not exist"),
        (["train", "--resume", "missing.npz"], "no checkpoint at missing.npz"),
        (["evaluate", "--checkpoint", "missing.npz"], "no checkpoint"),
        (["evaluate"], "--checkpoint"),
        (["predict", "--checkpoint", "x.npz"], "FILE"),
        (["plot", "kernels", "--checkpoint", "x.npz"], "--output"),
        (["plot", "curves", "-o", "x.png"], "--metrics"),
        (["plot", "curves", "--metrics", "missing.csv", "-o", "x.png"], "no metrics file"),
    ],
)
def test_bad_input_ends_in_one_line(tmp_path, capsys, monkeypatch, args, fragment):
    monkeypatch.chdir(tmp_path)
    status, _, err = main(capsys, *args)
    assert status == 2 and fragment in one_line(err)


# --- evaluate ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("wanted", BACKENDS)
def test_evaluate_on_every_backend(model_file, mnist_dir, mnist, wanted, capsys):
    name, where = wanted
    backend_or_skip(name, where)
    device = [] if where is None else ["--device", where]  # jax-cuda and torch-cuda on the GPU, not the CPU
    status, out, err = main(
        capsys,
        "evaluate",
        "--checkpoint",
        str(model_file),
        "--backend",
        name,
        *device,
        "--data-dir",
        str(mnist_dir),
        "--test-size",
        "500",
        "--eval-batch-size",
        "128",
        "--json",
    )
    assert status == 0, err
    result = json.loads(out)
    confusion = np.array(result["confusion"])
    predicted = to_host(checkpoint.load(model_file).to_model(get_backend()).predict(mnist.test_images[:500]))
    assert confusion.sum() == 500 and np.array_equal(
        confusion.sum(axis=1), np.bincount(mnist.test_labels[:500], minlength=10)
    )
    assert abs(result["correct"] - int((predicted == mnist.test_labels[:500]).sum())) <= 2
    assert result["accuracy"] > 0.6 and len(result["per_class"]) == 10


def test_evaluate_prints_a_report_and_draws_the_confusion_matrix(model_file, mnist_dir, tmp_path, capsys):
    status, out, err = main(
        capsys,
        "evaluate",
        "--checkpoint",
        str(model_file),
        "--data-dir",
        str(mnist_dir),
        "--test-size",
        "300",
        "--plot",
        str(tmp_path / "confusion.png"),
    )
    assert status == 0, err
    assert "test accuracy: " in out and "per-class accuracy:" in out and "confusion matrix" in out
    assert len([line for line in out.splitlines() if line.startswith("  ") and len(line.split()) == 11]) == 10
    assert Image.open(tmp_path / "confusion.png").size == (600, 550)


# --- predict ---------------------------------------------------------------------------------------------


def pictures(mnist, folder, count=12):
    """Test digits as people would hand them over: big, dark on light, coloured, JPEG, transparent."""
    files = []
    for index in range(count):
        digit = Image.fromarray(mnist.test_images[index])
        kind = index % 4
        if kind == 0:  # upscaled, black on white
            picture = Image.fromarray(255 - np.asarray(digit.resize((140, 140), Image.Resampling.BICUBIC)))
            name = folder / f"{index}-big.png"
        elif kind == 1:  # red ink on a pale yellow page, not square
            ink = np.asarray(digit.resize((120, 90), Image.Resampling.BICUBIC)).astype(float)[..., None] / 255
            page, red = np.array([250, 245, 200]), np.array([200, 20, 20])
            picture = Image.fromarray((page * (1 - ink) + red * ink).astype(np.uint8), "RGB")
            name = folder / f"{index}-red.png"
        elif kind == 2:  # JPEG, white on black, small
            picture = digit.resize((56, 56), Image.Resampling.BILINEAR)
            name = folder / f"{index}.jpg"
        else:  # black ink on a transparent ground
            alpha = np.asarray(digit.resize((84, 84), Image.Resampling.BICUBIC))
            picture = Image.fromarray(np.dstack([np.zeros((84, 84, 3), np.uint8), alpha]), "RGBA")
            name = folder / f"{index}-transparent.png"
        picture.save(name)
        files.append(str(name))
    return files


def test_predict_reads_digits_from_pictures_of_any_kind(model_file, mnist, tmp_path, capsys):
    files = pictures(mnist, tmp_path)
    status, out, err = main(capsys, "predict", "--checkpoint", str(model_file), *files, "--json")
    assert status == 0, err
    results = json.loads(out)
    assert [entry["file"] for entry in results] == files
    expected = to_host(checkpoint.load(model_file).to_model(get_backend()).predict(mnist.test_images[: len(files)]))
    agree = np.mean([entry["digit"] == want for entry, want in zip(results, expected)])
    assert agree >= 0.75, (agree, [entry["digit"] for entry in results], expected)
    assert all(0.1 <= entry["probability"] <= 1 and abs(sum(entry["probabilities"]) - 1) < 1e-4 for entry in results)


def test_predict_reports_each_unreadable_file_and_goes_on(model_file, mnist, tmp_path, capsys):
    np.save(tmp_path / "batch.npy", mnist.test_images[:3])
    np.save(tmp_path / "one.npy", mnist.test_images[0] / 255.0)
    np.save(tmp_path / "wrong.npy", np.zeros((3, 4)))
    (tmp_path / "text.png").write_text("not a picture")
    Image.new("L", (40, 40), 255).save(tmp_path / "blank.png")
    files = [tmp_path / name for name in ("batch.npy", "text.png", "one.npy", "missing.png", "wrong.npy", "blank.png")]
    status, out, err = main(capsys, "predict", "--checkpoint", str(model_file), *map(str, files))
    assert status == 1
    assert [line.split(":")[0] for line in out.splitlines()] == [
        f"{files[0]}[0]",
        f"{files[0]}[1]",
        f"{files[0]}[2]",
        str(files[2]),
    ]
    problems = err.strip().splitlines()
    assert len(problems) == 4 and "Traceback" not in err
    assert (
        "not a picture" in problems[0]
        and "no such file" in problems[1]
        and "(3, 4)" in problems[2]
        and "blank" in problems[3]
    )


def test_missing_extras_are_named(model_file, mnist, tmp_path, capsys, monkeypatch):
    pictures(mnist, tmp_path, count=1)
    monkeypatch.setitem(sys.modules, "PIL", None)
    status, _, err = main(capsys, "predict", "--checkpoint", str(model_file), str(tmp_path / "0-big.png"))
    assert status == 1 and "pip install 'portable-cnn[images]'" in one_line(err)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.delitem(sys.modules, "matplotlib.figure", raising=False)
    monkeypatch.delitem(sys.modules, "matplotlib.backends.backend_agg", raising=False)
    status, _, err = main(capsys, "plot", "kernels", "--checkpoint", str(model_file), "-o", str(tmp_path / "k.png"))
    assert status == 2 and "pip install 'portable-cnn[plot]'" in one_line(err)


# --- pictures ----------------------------------------------------------------------------------------------


def test_plots_have_the_expected_size(model_file, mnist_dir, tmp_path, capsys):
    metrics = model_file.parent / "metrics.csv"
    commands = {
        "kernels.png": (["kernels", "--checkpoint", str(model_file)], (800, 250)),
        "maps.png": (
            ["maps", "--checkpoint", str(model_file), "--index", "7", "--data-dir", str(mnist_dir)],
            (1050, 250),
        ),
        "curves.png": (["curves", "--metrics", str(metrics)], (800, 500)),
        "history.png": (["curves", "--checkpoint", str(model_file)], (800, 500)),
    }
    for name, (args, size) in commands.items():
        status, out, err = main(capsys, "plot", *args, "-o", str(tmp_path / name))
        assert status == 0, err
        assert out.strip() == f"wrote {tmp_path / name} ({size[0]}x{size[1]} pixels)"
        with Image.open(tmp_path / name) as picture:
            assert picture.size == size and picture.format == "PNG"
            assert np.asarray(picture.convert("L")).std() > 10  # something was drawn


def test_maps_of_a_picture_file(model_file, mnist, tmp_path, capsys):
    files = pictures(mnist, tmp_path, count=2)
    status, _, err = main(
        capsys, "plot", "maps", "--checkpoint", str(model_file), "--image", files[1], "-o", str(tmp_path / "m.png")
    )
    assert status == 0, err
    assert Image.open(tmp_path / "m.png").size == (1050, 250)
