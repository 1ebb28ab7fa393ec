"""A checkpoint's network in other formats: an ONNX graph (for ONNX Runtime, browsers, Netron) and a
safetensors file (the parameters as :class:`~portable_cnn.model.ConvNet` holds them, for PyTorch, NumPy
and model hubs). Both are written atomically (:func:`files.write_atomically`); ``onnx`` and ``safetensors``
are optional packages (the ``onnx`` and ``safetensors`` extras), imported only here, only when asked for.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from .backends import to_host
from .checkpoint import Checkpoint
from .errors import UserError
from .files import check_output_path, write_atomically
from .model import IMAGE_SIDE, NUM_CLASSES
from .version import __version__

FORMATS = {".onnx": "onnx", ".safetensors": "safetensors"}
OPSET = 17
IR_VERSION = 8  # the file format of ONNX 1.12, the release that brought opset 17: readable by older runtimes too
LAYOUT = (
    "kernels[(i * kernel_size + j), k] is pixel (i, j) of kernel k, applied without flipping (cross-correlation) to "
    "images of 28x28 pixels scaled to [0, 1] with no padding, stride 1, keeping the first `positions` rows and "
    "columns of the output; weights[(r * positions + c) * num_kernels + k, d] multiplies tanh of kernel k's "
    "output at row r, column c for digit d; softmax of the 10 sums gives the probabilities"
)


def parameters(holder) -> dict[str, np.ndarray]:
    """The network's named arrays (a :class:`Checkpoint`'s or a model's), as host arrays: the one place that
    knows which parameters there are."""
    return {"kernels": to_host(holder.kernels), "weights": to_host(holder.weights)}


def metadata(saved: Checkpoint) -> dict[str, str]:
    """The string metadata both formats carry: the network's shape, its recipe, epochs done, the version, the layout."""
    return {
        "kernel_size": str(saved.kernel_size),
        "positions": str(saved.positions),
        "num_kernels": str(saved.num_kernels),
        "recipe": saved.recipe["name"],
        "epochs_done": str(saved.epoch),
        "version": __version__,
        "layout": LAYOUT,
    }


def format_of(path, given: str | None = None) -> str:
    """``given``, or the format named by ``path``'s extension; a UserError saying what to do for any other."""
    if given is not None:
        return given
    suffix = pathlib.Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise UserError(
            f"cannot tell the export format of {path} from its extension; name it "
            f"{' or '.join(FORMATS)}, or give --format {'|'.join(FORMATS.values())}"
        )
    return FORMATS[suffix]


def export(saved: Checkpoint, path, kind: str) -> pathlib.Path:
    """Write ``saved``'s network to ``path`` as ``kind`` ("onnx" or "safetensors"), atomically; never over the
    checkpoint it reads."""
    if saved.path and os.path.exists(path) and os.path.samefile(path, saved.path):
        raise UserError(f"{path} is the checkpoint being exported; give another -o file (.onnx or .safetensors)")
    what = f"an {kind} file" if kind == "onnx" else f"a {kind} file"
    check_output_path(path, what)  # before the graph is built: a folder, a device or a FIFO is refused at once
    data = {"onnx": onnx_bytes, "safetensors": safetensors_bytes}[kind](saved)
    return write_atomically(path, data, what)


def safetensors_bytes(saved: Checkpoint) -> bytes:
    """The parameters exactly as the model holds them (the checkpoint's dtype) with :func:`metadata`."""
    numpy_io = _require("safetensors.numpy", "safetensors")
    arrays = {name: np.ascontiguousarray(array) for name, array in parameters(saved).items()}
    return numpy_io.save(arrays, metadata=metadata(saved))


def onnx_bytes(saved: Checkpoint) -> bytes:
    """The network as an ONNX graph in float32: ``images`` ``[N, 1, 28, 28]`` in [0, 1] -> Conv (no bias) -> Tanh
    (-> Slice to the book's ``positions``) -> Transpose and Reshape to the dense layer's (row, column, kernel)
    order -> MatMul -> ``logits`` ``[N, 10]`` and Softmax -> ``probabilities`` ``[N, 10]``; checked in full."""
    onnx = _require("onnx", "onnx")
    from onnx import TensorProto, helper, numpy_helper

    arrays = {name: array.astype(np.float32) for name, array in parameters(saved).items()}
    size, count, side = saved.kernel_size, saved.num_kernels, saved.positions
    # Conv's weight is (out channels, in channels, rows, columns); the model's column k is kernel k, row-major.
    conv_weight = arrays["kernels"].T.reshape(count, 1, size, size)
    valid = IMAGE_SIDE - size + 1
    initializers = [
        numpy_helper.from_array(conv_weight, "kernels"),
        numpy_helper.from_array(arrays["weights"], "weights"),
        numpy_helper.from_array(np.array([0, side * side * count], dtype=np.int64), "hidden_shape"),
    ]
    nodes = [helper.make_node("Conv", ["images", "kernels"], ["conv"], kernel_shape=[size, size])]
    maps = "conv"
    if side < valid:  # the book's erratum 1: the first `side` positions of each side only
        initializers += [
            numpy_helper.from_array(np.array([0, 0], dtype=np.int64), "slice_start"),
            numpy_helper.from_array(np.array([side, side], dtype=np.int64), "slice_end"),
            numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "slice_axes"),
        ]
        nodes.append(helper.make_node("Slice", ["conv", "slice_start", "slice_end", "slice_axes"], ["conv_kept"]))
        maps = "conv_kept"
    nodes += [
        helper.make_node("Tanh", [maps], ["hidden_maps"]),
        helper.make_node("Transpose", ["hidden_maps"], ["hidden_rck"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["hidden_rck", "hidden_shape"], ["hidden"]),  # 0: keep N
        helper.make_node("MatMul", ["hidden", "weights"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "portable_cnn",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 1, IMAGE_SIDE, IMAGE_SIDE])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", NUM_CLASSES]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", NUM_CLASSES]),
        ],
        initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="portable-cnn",
        producer_version=__version__,
        doc_string="The chapter-10 CNN of Grokking Deep Learning; images: [N, 1, 28, 28] pixels in [0, 1].",
    )
    helper.set_model_props(model, metadata(saved))
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def _require(module: str, extra: str):
    """The optional package ``module``, or a UserError saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(
            f"exporting to {extra} needs the {extra} package: pip install 'portable-cnn[{extra}]'"
        ) from None
