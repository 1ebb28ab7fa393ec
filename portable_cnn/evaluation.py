"""Using a trained network: accuracy, per-class accuracy and the confusion matrix of a labelled set,
and class probabilities of any images. The work runs on the model's backend; only the predictions
(or probabilities) come back to the host, once."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from array_api_compat import array_namespace

from . import ops
from .backends import to_host
from .model import NUM_CLASSES, Network, as_model_images


@dataclass
class Evaluation:
    """``confusion[true, predicted]`` counts over a labelled set."""

    confusion: np.ndarray

    @property
    def total(self) -> int:
        return int(self.confusion.sum())

    @property
    def correct(self) -> int:
        return int(np.trace(self.confusion))

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")

    @property
    def per_class(self) -> list[float | None]:
        """Accuracy of each true class (recall); None for a class absent from the set."""
        sizes = self.confusion.sum(axis=1)
        return [float(self.confusion[c, c] / sizes[c]) if sizes[c] else None for c in range(NUM_CLASSES)]

    def as_dict(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "correct": self.correct,
            "total": self.total,
            "per_class": self.per_class,
            "confusion": self.confusion.tolist(),
        }

    def report(self) -> str:
        """Accuracy, per-class accuracy and the confusion matrix as aligned text."""
        sizes = self.confusion.sum(axis=1)
        lines = [f"test accuracy: {self.accuracy:.4f} ({self.correct} of {self.total} images)", "per-class accuracy:"]
        for digit, accuracy in enumerate(self.per_class):
            shown = "   -  " if accuracy is None else f"{accuracy:.4f}"
            lines.append(f"  {digit}: {shown} ({self.confusion[digit, digit]} of {sizes[digit]})")
        width = max(4, len(str(self.confusion.max())) + 1)
        lines.append("confusion matrix (rows: true digit, columns: predicted digit):")
        lines.append("   " + "".join(f"{digit:>{width}}" for digit in range(NUM_CLASSES)))
        for digit, row in enumerate(self.confusion):
            lines.append(f"  {digit}" + "".join(f"{count:>{width}}" for count in row))
        return "\n".join(lines)


def confusion_of(model: Network, images, labels, batch_size: int = 1000) -> Evaluation:
    """The confusion matrix of ``model`` on host ``images`` (0-255 or [0, 1]) with host ``labels``."""
    predicted = to_host(model.predict(images, batch_size)).astype(np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    confusion = np.bincount(labels * NUM_CLASSES + predicted, minlength=NUM_CLASSES**2).reshape(
        NUM_CLASSES, NUM_CLASSES
    )
    return Evaluation(confusion)


def probabilities(model: Network, images, batch_size: int = 1000) -> np.ndarray:
    """Softmax class probabilities ``(N, 10)`` (no dropout) of images as ``model.predict`` takes them."""
    xp = array_namespace(model.like)
    images = as_model_images(images, model.like)
    pieces = [
        ops.softmax(model.logits(images[start:stop, ...])) for start, stop in ops.slices(images.shape[0], batch_size)
    ]
    if not pieces:
        return np.zeros((0, NUM_CLASSES))
    return to_host(xp.concat(pieces)).astype(np.float64)
