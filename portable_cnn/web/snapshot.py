"""A model as the page sees it: host (NumPy) copies of its parameters (:func:`export.parameters`), and what it makes
of a drawing (the 28x28 input, the feature maps, each kernel's share of each class score, the probabilities).

The page's predictions run here, on the host copy, never on the training arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from array_api_compat import array_namespace

from .. import export, ops
from ..digits import from_pixels
from ..model import ConvNet, as_model_images


@dataclass(frozen=True)
class Snapshot:
    """A model at one moment: its host copy, its recipe and how many epochs it had trained."""

    network: ConvNet  # on NumPy
    recipe: dict
    epochs_done: int

    @classmethod
    def of(cls, model: ConvNet, recipe: dict, epochs_done: int) -> Snapshot:
        """A host snapshot of ``model`` (of any backend): copies, so that nothing the run does can reach them."""
        parameters = {name: array.copy() for name, array in export.parameters(model).items()}
        return cls(ConvNet(parameters, kernel_size=model.kernel_size, positions=model.positions), recipe, epochs_done)

    def describe(self) -> dict:
        """``GET /api/model``: the shapes, the recipe, the epochs done and the kernels as ``[K][ks][ks]``."""
        network = self.network
        side = network.kernel_size
        return {
            "kernel_size": side,
            "num_kernels": network.num_kernels,
            "positions": network.positions,
            "epochs_done": self.epochs_done,
            "recipe": self.recipe,
            "kernels": network.kernels.T.reshape(-1, side, side).tolist(),
        }

    def explain(self, pixels) -> dict:
        """``POST /api/predict``: a drawing of any size (see :func:`digits.from_pixels`) -> the digit, the ten
        probabilities, the 28x28 input, the feature maps ``[K][P][P]`` and ``contributions[k][c]``, kernel k's
        exact share of class c's score (the K shares add up to it). The same digit and probabilities as
        ``portable-cnn predict`` on a picture file of the same pixels. Raises UserError for a bad drawing."""
        network = self.network
        digit = from_pixels(pixels)
        maps = network.feature_maps(as_model_images(digit[None, ...], network.weights))
        shares = network.contributions(maps)
        xp = array_namespace(shares)
        probabilities = ops.softmax(xp.sum(shares, axis=0))[0].astype(np.float64)  # as ConvNet.scores sums them
        side = network.positions
        return {
            "digit": int(np.argmax(probabilities)),
            "probabilities": probabilities.tolist(),
            "input": digit.tolist(),
            "maps": maps[:, 0, :].reshape(-1, side, side).tolist(),
            "contributions": shares[:, 0, :].tolist(),
        }
