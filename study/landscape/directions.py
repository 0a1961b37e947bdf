"""Random directions in weight space (Li et al., 2018), normalized three ways, and moving a
model along them.

- ``filter`` (the default, Li et al.'s filter normalization), described below.
- ``layer``: each kernel tensor's direction is rescaled to the Frobenius norm of the whole
  tensor (the layer variant).
- ``none``: a plain Gaussian direction over the same kernels, scaled to unit norm overall, so
  ``alpha`` is a Euclidean distance in weight space: the weights' own scale is ignored, which
  is what the paper shows can mislead when comparing networks.

Only conv and linear kernels move in every variant; the same seed draws the same Gaussian noise
whatever the normalization, so probes of different trials and normalizations compare.

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

from study.landscape.options import NORMALIZATIONS

__all__ = ["DIRECTION_LABELS", "NORMALIZATIONS", "Perturbed", "filter_normalized_direction",
           "random_directions"]

# How each normalization's directions are named in figures and output lines.
DIRECTION_LABELS = {"filter": "filter-normalized directions",
                    "layer": "layer-normalized directions",
                    "none": "plain unit-norm directions"}

_EPS = 1e-12


def _gaussian(model: nn.Module, generator: torch.Generator) -> list[torch.Tensor]:
    """Gaussian noise for every kernel (zeros elsewhere), drawn in float32 on the CPU in
    parameter order, so a seed gives the same draw on every device and dtype."""
    noise = []
    for p in model.parameters():
        if p.dim() <= 1:
            noise.append(torch.zeros_like(p))
            continue
        d = torch.randn(p.shape, generator=generator, dtype=torch.float32)
        noise.append(d.to(device=p.device, dtype=p.dtype))
    return noise


def _normalize(model: nn.Module, noise: list[torch.Tensor],
               normalization: str) -> list[torch.Tensor]:
    with torch.no_grad():
        if normalization == "none":
            total = float(torch.sqrt(sum((d.double() ** 2).sum() for d in noise)))
            return [d / max(total, _EPS) for d in noise]
        out = []
        for p, d in zip(model.parameters(), noise, strict=True):
            if p.dim() <= 1:
                out.append(d)
            elif normalization == "layer":
                out.append(d * (p.detach().norm() / d.norm().clamp_min(_EPS)))
            else:
                w_norm = p.detach().flatten(1).norm(dim=1)
                scale = w_norm / d.flatten(1).norm(dim=1).clamp_min(_EPS)
                out.append(d * scale.view(-1, *([1] * (p.dim() - 1))))
        return out


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
    return _normalize(model, _gaussian(model, generator), "filter")


def random_directions(model: nn.Module, n: int, seed: int, *,
                      normalization: str = "filter") -> list[list[torch.Tensor]]:
    """``n`` directions drawn one after the other from a CPU generator seeded ``seed``,
    normalized as ``normalization`` says (one of :data:`NORMALIZATIONS`)."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    return [_normalize(model, _gaussian(model, generator), normalization) for _ in range(n)]


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
