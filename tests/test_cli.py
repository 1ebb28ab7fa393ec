"""The command line end to end, through a subprocess: output lines, and one-line errors for bad input."""

import os
import re
import subprocess
import sys

import pytest

LINE = re.compile(r"^I:\d+ Test-Acc:[0-9.]+ Train-Acc:[0-9.]+$")


def run_cli(*args, data_dir=None, env=None, cwd=None):
    environment = {**os.environ, **(env or {})}
    if data_dir is not None:
        environment["PORTABLE_CNN_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "portable_cnn", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        cwd=cwd,
    )


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_train_prints_one_notebook_line_per_epoch(mnist_dir):
    result = run_cli("train", "--epochs", "2", "--train-size", "256", "--test-size", "500", data_dir=mnist_dir)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all(LINE.match(line) for line in lines), result.stdout
    assert "Traceback" not in result.stderr


def test_book_prints_the_notebooks_first_line(mnist_dir, book_lines):
    result = run_cli("train", "--book", "--epochs", "1", data_dir=mnist_dir)
    assert result.stdout.splitlines() == book_lines[:1], result.stderr


def test_quiet_prints_nothing(mnist_dir):
    result = run_cli(
        "train", "--epochs", "1", "--train-size", "128", "--test-size", "100", "--quiet", data_dir=mnist_dir
    )
    assert result.returncode == 0 and result.stdout == ""


def test_info_lists_every_backend():
    result = run_cli("info")
    assert result.returncode == 0
    for name in ("numpy", "cupy", "torch", "jax", "array-api-strict"):  # the five the README promises
        assert re.search(rf"^{name}\s", result.stdout, re.MULTILINE), result.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--epochs", "-1"], "--epochs"),
        (["--epochs", "ten"], "not a whole number"),
        (["--batch-size", "0"], "--batch-size"),
        (["--kernels", "0"], "--kernels"),
        (["--kernel-size", "29"], "does not fit"),
        (["--train-size", "1001"], "more images than the data has"),
        (["--test-size", "0"], "--test-size"),
        (["--eval-batch-size", "0"], "--eval-batch-size"),
        (["--test-every", "0"], "--test-every"),
        (["--alpha", "-2"], "--alpha"),
        (["--dtype", "float16"], "--dtype"),
        (["--book", "--dtype", "float32"], "float64"),
        (["--backend", "mxnet"], "--backend"),
        (["--backend", "numpy", "--device", "cuda"], "CPU only"),
        (["--rng", "mt"], "--rng"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_input_ends_in_one_line(mnist_dir, args, fragment):
    assert_one_line_error(run_cli("train", *args, data_dir=mnist_dir), fragment)


def test_a_missing_backend_names_the_extra_to_install(mnist_dir):
    try:
        import cupy  # noqa: F401

        pytest.skip("cupy is installed here")
    except ImportError:
        pass
    assert_one_line_error(run_cli("train", "--backend", "cupy", data_dir=mnist_dir), "cupy", "pip install")


def test_torch_without_a_gpu_says_so(mnist_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    assert_one_line_error(run_cli("train", "--backend", "torch", "--device", "cuda", data_dir=mnist_dir), "no CUDA GPU")


def test_no_data_points_to_data_dir_and_the_environment_variable(tmp_path):
    result = run_cli("train", "--data-dir", str(tmp_path / "nowhere"))
    assert_one_line_error(result, "--data-dir", "PORTABLE_CNN_DATA_DIR")


def test_a_corrupt_data_file_is_named(tmp_path, mnist_dir):
    for name in os.listdir(mnist_dir):
        (tmp_path / name).write_bytes((mnist_dir / name).read_bytes())
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    assert_one_line_error(run_cli("train", "--data-dir", str(tmp_path)), "t10k-labels-idx1-ubyte.gz")
