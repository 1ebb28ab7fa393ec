"""portable-cnn export: the ONNX graph and the safetensors file compute the package's network, for both recipes
and other kernels; the README's examples run as written; bad input ends in one line."""

import json
import os
import pathlib
import re
import sys
from typing import NamedTuple

import numpy as np
import onnx
import onnxruntime
import pytest
import safetensors.numpy

from portable_cnn import Config, checkpoint, get_backend, train
from portable_cnn.cli import main
from portable_cnn.datasets import EMBEDDED_DIR
from portable_cnn.evaluation import probabilities
from portable_cnn.version import __version__

from .conftest import REPO

# (name, Config knobs, positions per side): both recipes, and other kernel counts and sizes.
RUNS = {
    "default": ({}, 26),
    "book": ({"book": True}, 25),
    "default-6-of-5x5": ({"kernels": 6, "kernel_size": 5}, 24),
    "book-4-of-4x4": ({"book": True, "kernels": 4, "kernel_size": 4}, 24),
}


class Exported(NamedTuple):
    name: str
    folder: pathlib.Path
    probabilities: np.ndarray  # the package's, on the 10000 test images
    predicted: np.ndarray  # the package's digits: what portable-cnn evaluate counts


@pytest.fixture(scope="module")
def exported(request, tmp_path_factory, mnist):
    """A checkpoint trained for 2 epochs with the knobs of ``request.param``, exported to both formats."""
    name = request.param
    folder = tmp_path_factory.mktemp(name)
    saved = folder / "run.npz"
    train(Config(epochs=2, test_size=100, quiet=True, save=str(saved), **RUNS[name][0]), mnist)
    for suffix in (".onnx", ".safetensors"):
        assert main(["export", "--checkpoint", str(saved), "-o", str(folder / f"model{suffix}")]) == 0
    model = checkpoint.load(saved).to_model(get_backend("numpy"))
    return Exported(name, folder, probabilities(model, mnist.test_images), np.asarray(model.predict(mnist.test_images)))


@pytest.mark.parametrize("exported", RUNS, indirect=True)
def test_the_onnx_graph_is_the_network_with_dynamic_batches(exported):
    name, folder = exported.name, exported.folder
    model = onnx.load(folder / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert [opset.version for opset in model.opset_import if opset.domain in ("", "ai.onnx")][0] >= 17
    ops = [node.op_type for node in model.graph.node]
    kept = ["Slice"] if RUNS[name][0].get("book") else []
    assert ops == ["Conv", *kept, "Tanh", "Transpose", "Reshape", "MatMul", "Softmax"]
    assert len([node for node in model.graph.node if node.op_type == "Conv"][0].input) == 2  # no bias

    def shape(value):
        return [dim.dim_param or dim.dim_value for dim in value.type.tensor_type.shape.dim]

    (images,) = model.graph.input
    assert (images.name, images.type.tensor_type.elem_type, shape(images)) == (
        "images",
        onnx.TensorProto.FLOAT,
        ["N", 1, 28, 28],
    )
    outputs = [(value.name, value.type.tensor_type.elem_type, shape(value)) for value in model.graph.output]
    assert outputs == [("probabilities", 1, ["N", 10]), ("logits", 1, ["N", 10])]
    meta = {prop.key: prop.value for prop in model.metadata_props}
    recipe = "book" if RUNS[name][0].get("book") else "default"
    assert (meta["version"], meta["recipe"], meta["epochs_done"]) == (__version__, recipe, "2")


@pytest.mark.parametrize("exported", RUNS, indirect=True)
def test_onnx_runtime_predicts_every_test_image_as_the_package_does(exported, mnist, capsys):
    folder, predicted = exported.folder, exported.predicted
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    images = mnist.test_images[:, None, :, :].astype(np.float32) / 255
    found, logits = session.run(["probabilities", "logits"], {"images": images})
    assert found.shape == logits.shape == (10000, 10)
    assert np.array_equal(found.argmax(axis=1), predicted)
    assert np.abs(found - exported.probabilities).max() < 1e-5
    assert np.array_equal(logits.argmax(axis=1), predicted)
    # The same confusion matrix as portable-cnn evaluate prints for the checkpoint.
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(folder / "run.npz"), "--data-dir", str(EMBEDDED_DIR), "--json"]) == 0
    confusion = np.zeros((10, 10), dtype=np.int64)
    np.add.at(confusion, (mnist.test_labels.astype(np.int64), found.argmax(axis=1)), 1)
    assert json.loads(capsys.readouterr().out)["confusion"] == confusion.tolist()


@pytest.mark.parametrize("exported", RUNS, indirect=True)
def test_the_safetensors_file_holds_the_parameters_as_the_model_does(exported):
    name, folder = exported.name, exported.folder
    saved = checkpoint.load(folder / "run.npz")
    tensors = safetensors.numpy.load_file(folder / "model.safetensors")
    knobs, side = RUNS[name]
    size, count = knobs.get("kernel_size", 3), knobs.get("kernels", 16)
    dtype = np.float64 if knobs.get("book") else np.float32
    assert tensors["kernels"].shape == (size * size, count) and tensors["kernels"].dtype == dtype
    assert tensors["weights"].shape == (side * side * count, 10) and tensors["weights"].dtype == dtype
    assert np.array_equal(tensors["kernels"], saved.kernels) and np.array_equal(tensors["weights"], saved.weights)
    with safetensors.safe_open(folder / "model.safetensors", "np") as file:
        meta = file.metadata()
    layout = meta.pop("layout")
    assert meta == {
        "kernel_size": str(size),
        "positions": str(side),
        "num_kernels": str(count),
        "recipe": "book" if knobs.get("book") else "default",
        "epochs_done": "2",
        "version": __version__,
    }
    assert "(i * kernel_size + j), k]" in layout and "(r * positions + c) * num_kernels + k" in layout


def readme_examples(section: str) -> list[str]:
    """The Python examples of a README section, in order."""
    text = (REPO / "README.md").read_text().split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", text, re.DOTALL)


def run_example(code: str, folder, monkeypatch) -> dict:
    """Run README ``code`` in ``folder`` (where its files are) on the embedded MNIST; its variables."""
    monkeypatch.chdir(folder)
    monkeypatch.setenv("PORTABLE_CNN_DATA_DIR", str(EMBEDDED_DIR))
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("exported", ["default", "book-4-of-4x4"], indirect=True)
def test_the_readme_examples_predict_as_the_package(exported, monkeypatch):
    """ONNX Runtime, NumPy from the safetensors file alone, and a plain PyTorch nn.Sequential."""
    folder, predicted = exported.folder, exported.predicted
    onnx_example, numpy_example, torch_example = readme_examples("Use the model elsewhere")[:3]
    assert np.array_equal(run_example(onnx_example, folder, monkeypatch)["predicted"], predicted)
    assert np.array_equal(run_example(numpy_example, folder, monkeypatch)["predicted"], predicted[:1000])
    found = run_example(torch_example, folder, monkeypatch)["predicted"]
    assert np.array_equal(found.numpy(), predicted)


def test_a_float64_checkpoint_exports_a_float32_graph_and_says_so(tmp_path, mnist, capsys):
    train(Config(book=True, epochs=1, test_size=100, quiet=True, save=str(tmp_path / "run.npz")), mnist)
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(tmp_path / "run.npz"), "-o", str(tmp_path / "model.onnx")]) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("portable-cnn:")]
    assert said == ["portable-cnn: the checkpoint is float64; the ONNX graph is float32"]
    assert all(
        init.data_type == onnx.TensorProto.FLOAT
        for init in onnx.load(tmp_path / "model.onnx").graph.initializer
        if init.name in ("kernels", "weights")
    )


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory, mnist):
    path = tmp_path_factory.mktemp("saved") / "run.npz"
    train(Config(epochs=1, test_size=100, quiet=True, save=str(path)), mnist)
    return path


def test_format_flag_overrides_the_extension(saved_run, tmp_path):
    assert main(["export", "--checkpoint", str(saved_run), "-o", str(tmp_path / "model.bin"), "--format", "onnx"]) == 0
    onnx.checker.check_model(onnx.load(tmp_path / "model.bin"), full_check=True)


def _fails_in_one_line(argv, capsys, *words) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("portable-cnn: error: ")
    for word in words:
        assert word in lines[0]


def test_an_unknown_extension_says_which_to_use(saved_run, tmp_path, capsys):
    _fails_in_one_line(
        ["export", "--checkpoint", str(saved_run), "-o", str(tmp_path / "model.pt")],
        capsys,
        ".onnx",
        ".safetensors",
        "--format",
    )
    assert not (tmp_path / "model.pt").exists()


def test_a_foreign_or_corrupt_checkpoint_is_refused(tmp_path, capsys):
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    _fails_in_one_line(
        ["export", "--checkpoint", str(tmp_path / "other.npz"), "-o", str(tmp_path / "m.onnx")],
        capsys,
        "not a portable-cnn checkpoint",
    )
    (tmp_path / "cut.npz").write_bytes(b"PK\x03\x04 truncated")
    _fails_in_one_line(
        ["export", "--checkpoint", str(tmp_path / "cut.npz"), "-o", str(tmp_path / "m.onnx")], capsys, "corrupt"
    )
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize(
    ("suffix", "modules"), [(".onnx", ["onnx"]), (".safetensors", ["safetensors", "safetensors.numpy"])]
)
def test_a_missing_package_names_the_extra(saved_run, tmp_path, capsys, monkeypatch, suffix, modules):
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    extra = suffix[1:]
    _fails_in_one_line(
        ["export", "--checkpoint", str(saved_run), "-o", str(tmp_path / f"model{suffix}")],
        capsys,
        f"pip install 'portable-cnn[{extra}]'",
    )


@pytest.mark.parametrize("suffix", [".onnx", ".safetensors"])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(saved_run, tmp_path, capsys, monkeypatch, suffix):
    target = tmp_path / f"model{suffix}"
    target.write_bytes(b"the user's old export")

    def full_disk(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    _fails_in_one_line(["export", "--checkpoint", str(saved_run), "-o", str(target)], capsys, "No space left on device")
    assert target.read_bytes() == b"the user's old export"
    assert sorted(path.name for path in tmp_path.iterdir()) == [target.name]


def test_an_output_in_a_missing_folder_is_refused(saved_run, tmp_path, capsys):
    _fails_in_one_line(
        ["export", "--checkpoint", str(saved_run), "-o", str(tmp_path / "nowhere" / "m.onnx")], capsys, "does not exist"
    )


def test_the_checkpoint_itself_is_never_overwritten(saved_run, capsys):
    before = saved_run.read_bytes()
    _fails_in_one_line(
        ["export", "--checkpoint", str(saved_run), "-o", str(saved_run), "--format", "onnx"], capsys, "another -o"
    )
    assert saved_run.read_bytes() == before
