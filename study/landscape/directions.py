"""Filter-normalized random directions in weight space (Li et al., 2018), and moving a model
along them.

A direction ``d`` has one tensor per model parameter. For every weight tensor of two or more
dimensions (conv and linear kernels) ``d`` is Gaussian and each filter (slice along dim 0, the
output channel or output unit) is rescaled to the Frobenius norm of the same filter of the
weights; biases, BatchNorm parameters and every other 1-D parameter get a zero direction. A
coefficient ``alpha`` is then in units of "the weights' own scale": ``alpha = 1`` moves every
filter by its own norm.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["Perturbed", "filter_normalized_direction", "random_directions"]

_EPS = 1e-12


def filter_normalized_direction(
    model: nn.Module, *, generator: torch.Generator
) -> list[torch.Tensor]:
    """A random Gaussian direction, filter-normalized to ``model``'s current weights.

    Args:
        model: The network; its parameters are read, never changed.
        generator: A CPU generator; the same seed gives the same direction on every device and
            dtype (the noise is drawn in float32 on the CPU, then moved).

    Returns:
        One tensor per ``model.parameters()`` entry, same shape, dtype and device. Parameters
        with fewer than two dimensions (biases, BatchNorm) get zeros; for the others each
        filter ``d[i]`` has the Frobenius norm of ``weight[i]`` (a zero filter stays zero).
    """
    direction: list[torch.Tensor] = []
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() <= 1:
                direction.append(torch.zeros_like(p))
                continue
            d = torch.randn(p.shape, generator=generator, dtype=torch.float32)
            d = d.to(device=p.device, dtype=p.dtype)
            w_norm = p.detach().flatten(1).norm(dim=1)
            d_norm = d.flatten(1).norm(dim=1)
            scale = w_norm / d_norm.clamp_min(_EPS)
            direction.append(d * scale.view(-1, *([1] * (p.dim() - 1))))
    return direction


def random_directions(model: nn.Module, n: int, seed: int) -> list[list[torch.Tensor]]:
    """``n`` directions drawn one after the other from a CPU generator seeded ``seed``."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    return [filter_normalized_direction(model, generator=generator) for _ in range(n)]


class Perturbed:
    """Sets ``theta + sum_k c_k d_k`` in place; restores the weights and the mode on exit."""

    def __init__(self, model: nn.Module, directions: Sequence[list[torch.Tensor]]) -> None:
        self.model = model
        self.params = list(model.parameters())
        self.directions = directions
        for direction in directions:
            if len(direction) != len(self.params):
                raise ValueError(
                    f"a direction has {len(direction)} tensors but the model has "
                    f"{len(self.params)} parameters"
                )
        # Only parameters some direction moves are touched (biases and BatchNorm never are).
        self.active = [
            i for i in range(len(self.params))
            if any(bool(torch.any(d[i] != 0)) for d in directions)
        ]

    def __enter__(self) -> Perturbed:
        self.was_training = self.model.training
        self.originals = {i: self.params[i].detach().clone() for i in self.active}
        self.grad_ctx = torch.no_grad()
        self.grad_ctx.__enter__()
        self.model.eval()
        return self

    def set(self, coefficients: Sequence[float]) -> None:
        for i in self.active:
            p = self.params[i]
            p.copy_(self.originals[i])
            for c, d in zip(coefficients, self.directions, strict=True):
                if c != 0.0:
                    p.add_(d[i], alpha=float(c))

    def __exit__(self, *exc: object) -> None:
        try:
            for i in self.active:
                self.params[i].copy_(self.originals[i])
        finally:
            self.grad_ctx.__exit__(None, None, None)
            self.model.train(self.was_training)
