"""Plain SGD with a learning rate per layer: the recipes' update (``alpha`` for the dense weights,
``kernel_alpha`` for the kernels)."""

from __future__ import annotations

from dataclasses import dataclass

from .model import ConvNet, Gradients


@dataclass(frozen=True)
class SGD:
    """``parameter -= rate * gradient``, with the dense weights' rate and the kernels' rate."""

    weight_rate: float
    kernel_rate: float

    def step(self, model: ConvNet, gradients: Gradients) -> None:
        """Move ``model``'s parameters down ``gradients`` (new arrays: immutable ones are fine)."""
        model.kernels = model.kernels - self.kernel_rate * gradients.kernels
        model.weights = model.weights - self.weight_rate * gradients.weights
