"""Plain SGD with a learning rate per parameter: the recipes' update (each network says which rate each
of its parameters takes, e.g. ``alpha`` for the dense weights and ``kernel_alpha`` for the kernels)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SGD:
    """``parameter -= rate * gradient`` for each ``(name, rate)`` of ``rates`` (a tuple: hashable)."""

    rates: tuple[tuple[str, float], ...]

    @classmethod
    def of(cls, rates: dict[str, float]) -> SGD:
        return cls(tuple(rates.items()))

    def step(self, params: dict, gradients: dict) -> dict:
        """``params`` moved down ``gradients``, as new arrays (immutable ones are fine)."""
        return {name: params[name] - rate * gradients[name] for name, rate in self.rates}
