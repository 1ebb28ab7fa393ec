"""Pictures: the learned kernels (the chapter's "edges and corners"), feature maps of a digit,
accuracy curves and the confusion matrix.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no global backend switch, no
display needed). Every figure has a fixed size in whole pixels at ``DPI``, so the files are the
size the functions return. matplotlib is optional: ``pip install 'portable-cnn[plot]'``.
"""

from __future__ import annotations

import io
import math

import numpy as np

from .errors import UserError
from .files import check_output_path, write_atomically

DPI = 100
WHAT = "a picture"  # for files' messages: "cannot write a picture to ..."
MATPLOTLIB_HINT = (
    "drawing pictures needs matplotlib, which is not installed; install it with: pip install 'portable-cnn[plot]'"
)


def _figure(width: float, height: float):
    """A Figure of ``width`` x ``height`` inches (multiples of 1/4, so the pixel size is exact)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError(MATPLOTLIB_HINT) from None
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path) -> tuple[int, int]:
    """Draw ``figure`` in the format its extension names, then write it atomically (through a symlink)."""
    target = check_output_path(path, WHAT)
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, dpi=DPI, format=target.suffix[1:] or None)
    except ValueError as error:  # an unknown extension
        raise UserError(f"cannot write {path}: {error}") from None
    write_atomically(path, buffer.getvalue(), WHAT)
    width, height = figure.get_size_inches()
    return round(width * DPI), round(height * DPI)


def _grid(count: int, columns: int = 8) -> tuple[int, int]:
    columns = min(count, columns)
    return math.ceil(count / columns), columns


def kernels(kernels: np.ndarray, kernel_size: int, path, title: str = "learned kernels") -> tuple[int, int]:
    """Each ``(kernel_size**2,)`` column of ``kernels`` as a small gray image, each on its own scale
    (dark: negative weight, light: positive). Returns the picture's (width, height) in pixels."""
    kernels = np.asarray(kernels, dtype=np.float64)
    count = kernels.shape[1]
    rows, columns = _grid(count)
    figure = _figure(columns * 1.0, rows * 1.0 + 0.5)
    figure.suptitle(title, fontsize=11)
    grid = figure.add_gridspec(
        rows, columns, left=0.02, right=0.98, bottom=0.02, top=1 - 0.6 / (rows + 0.5), wspace=0.1, hspace=0.25
    )
    for index in range(count):
        axes = figure.add_subplot(grid[index // columns, index % columns])
        kernel = kernels[:, index].reshape(kernel_size, kernel_size)
        limit = np.abs(kernel).max() or 1.0
        axes.imshow(kernel, cmap="gray", vmin=-limit, vmax=limit, interpolation="nearest")
        axes.set_title(str(index), fontsize=7, pad=2)
        axes.set_axis_off()
    return _save(figure, path)


def feature_maps(image: np.ndarray, maps: np.ndarray, path, title: str = "") -> tuple[int, int]:
    """A digit (28x28) beside its ``(K, side, side)`` tanh feature maps, all on one scale centred on 0
    (mid-gray: 0, black and white: the largest negative and positive activations)."""
    maps = np.asarray(maps, dtype=np.float64)
    limit = float(np.abs(maps).max()) or 1.0
    rows, columns = _grid(maps.shape[0])
    height = max(rows, 2) * 1.0 + 0.5
    figure = _figure(2.5 + columns * 1.0, height)
    if title:
        figure.suptitle(title, fontsize=11)
    top = 1 - 0.5 / height
    digit = figure.add_gridspec(1, 1, left=0.01, right=2.3 / (2.5 + columns), bottom=0.05, top=top)
    axes = figure.add_subplot(digit[0, 0])
    axes.imshow(np.asarray(image, dtype=np.float64), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes.set_title("input", fontsize=8)
    axes.set_axis_off()
    grid = figure.add_gridspec(
        rows, columns, left=2.5 / (2.5 + columns), right=0.99, bottom=0.03, top=top, wspace=0.08, hspace=0.25
    )
    for index, plane in enumerate(maps):
        axes = figure.add_subplot(grid[index // columns, index % columns])
        axes.imshow(plane, cmap="gray", vmin=-limit, vmax=limit, interpolation="nearest")
        axes.set_title(f"kernel {index}", fontsize=6, pad=2)
        axes.set_axis_off()
    return _save(figure, path)


def curves(rows: list[dict], path, title: str = "accuracy per epoch") -> tuple[int, int]:
    """Train accuracy of every epoch and test accuracy of the evaluated ones, from metrics rows."""
    if not rows:
        raise UserError("no epochs to draw: the metrics or history are empty")
    figure = _figure(8.0, 5.0)
    axes = figure.add_subplot()
    epochs = [row["epoch"] for row in rows]
    axes.plot(epochs, [row["train_acc"] for row in rows], label="train", color="tab:blue", linewidth=1.2)
    tested = [row for row in rows if row["test_acc"] is not None]
    if tested:
        axes.plot(
            [row["epoch"] for row in tested],
            [row["test_acc"] for row in tested],
            label="test",
            color="tab:orange",
            linewidth=1.2,
            marker="o" if len(tested) <= 40 else None,
            markersize=3,
        )
    axes.set_xlabel("epoch")
    axes.set_ylabel("accuracy")
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    axes.set_title(title)
    figure.tight_layout()
    return _save(figure, path)


def confusion(matrix: np.ndarray, path, title: str = "confusion matrix") -> tuple[int, int]:
    """``matrix[true, predicted]`` as a heat map with the counts written in."""
    matrix = np.asarray(matrix)
    figure = _figure(6.0, 5.5)
    axes = figure.add_subplot()
    shown = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04)
    size = matrix.shape[0]
    threshold = matrix.max() / 2 if matrix.size else 0
    for true in range(size):
        for predicted in range(size):
            count = int(matrix[true, predicted])
            axes.text(
                predicted,
                true,
                str(count),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if count > threshold else "black",
            )
    axes.set_xticks(range(size))
    axes.set_yticks(range(size))
    axes.set_xlabel("predicted digit")
    axes.set_ylabel("true digit")
    axes.set_title(title)
    figure.tight_layout()
    return _save(figure, path)


def sweep(rows: list[dict], curves: dict, path, title: str = "sweep") -> tuple[int, int]:
    """A sweep's summary: each configuration's final test accuracies (one dot per run, mean ± sd as a bar) beside
    its mean test-accuracy curve with a ± sd band. ``curves`` maps a configuration to (epochs, means, sds)."""
    figure = _figure(12.0, 5.0)
    spread, curve = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.4]})
    for index, row in enumerate(rows):
        finals = [result["final"] for result in row["results"]]
        offsets = np.linspace(-0.15, 0.15, len(finals)) if len(finals) > 1 else [0.0]
        spread.scatter(index + np.asarray(offsets), finals, s=14, alpha=0.6, color=f"C{index % 10}")
        spread.errorbar(
            index + 0.3, row["final"]["mean"], yerr=row["final"]["sd"] or 0.0, fmt="o", color="black", capsize=4
        )
        epochs, means, sds = curves[row["configuration"]]
        means, sds = np.asarray(means), np.asarray(sds)
        curve.plot(
            epochs, means, color=f"C{index % 10}", linewidth=1.2, label=f"{row['configuration']} ({row['runs']} runs)"
        )
        curve.fill_between(epochs, means - sds, means + sds, color=f"C{index % 10}", alpha=0.2, linewidth=0)
    spread.set_xticks(range(len(rows)))
    spread.set_xticklabels([row["configuration"] for row in rows], rotation=30, ha="right", fontsize=8)
    spread.set_ylabel("final test accuracy")
    spread.set_title("final test accuracy per run (black: mean ± sd)", fontsize=10)
    spread.grid(alpha=0.3, axis="y")
    curve.set_xlabel("epoch")
    curve.set_ylabel("test accuracy")
    curve.set_title("mean test accuracy ± sd", fontsize=10)
    curve.grid(alpha=0.3)
    curve.legend(loc="lower right", fontsize=8)
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    return _save(figure, path)
