"""Curvature that does not depend on the probe's grid or on how many directions it drew.

- :func:`hessian_top_eigenvalue`: the dominant eigenvalue of the Hessian of the training loss
  with respect to every trainable parameter, by power iteration on Hessian-vector products
  (double backpropagation, as PyHessian does). It is a property of the weights alone.
- :func:`hessian_trace`: Hutchinson's estimate of the Hessian's trace (Rademacher probes), with
  its standard error.
- :func:`flatness_radii`: per direction, the smallest ``|alpha|`` (either sign) at which the
  loss has risen by ``rise`` above the centre, found by bisection to a tolerance, not read off a
  grid. Summarized with :func:`mean_interval` (mean over directions and a 95% t-interval), so
  more directions narrow the interval instead of shrinking the figure (a minimum over
  directions would).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy import stats
from torch import nn

from study.landscape.directions import Perturbed

__all__ = [
    "Interval",
    "flatness_radii",
    "hessian_top_eigenvalue",
    "hessian_trace",
    "mean_interval",
]

LossTensorFn = Callable[[nn.Module], torch.Tensor]
LossFn = Callable[[nn.Module], float]


@dataclasses.dataclass(frozen=True)
class Interval:
    """A mean over directions with its 95% t-interval (``None`` bounds with one direction)."""

    mean: float
    low: float | None
    high: float | None
    n: int


def mean_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """The mean of ``values`` and its ``level`` t-interval (directions are independent draws)."""
    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    if x.size < 2:
        return Interval(mean, None, None, int(x.size))
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return Interval(mean, mean - half, mean + half, int(x.size))


def _trainable(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def _hvp(model: nn.Module, loss_fn: LossTensorFn, params: list[torch.Tensor],
         vector: list[torch.Tensor]) -> list[torch.Tensor]:
    loss = loss_fn(model)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    dot = sum((g * v).sum() for g, v in zip(grads, vector, strict=True))
    return [h.detach() for h in torch.autograd.grad(dot, params)]


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b, strict=True)))


def hessian_top_eigenvalue(model: nn.Module, loss_fn: LossTensorFn, *, max_iter: int = 100,
                           tol: float = 1e-4, seed: int = 0) -> float:
    """The Hessian eigenvalue of largest magnitude, by power iteration.

    Args:
        model: Evaluated in its current mode (the caller puts it in eval mode, as the probes
            are); its weights are not changed.
        loss_fn: The loss as a differentiable scalar tensor of ``model``.
        max_iter: Power iterations at most.
        tol: Stop when the Rayleigh quotient changes by less than ``tol`` relatively.
        seed: Seed of the starting vector (drawn on the CPU).
    """
    params = _trainable(model)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    vector = [torch.randn(p.shape, generator=generator).to(p) for p in params]
    norm = math.sqrt(_dot(vector, vector))
    vector = [v / norm for v in vector]
    eigenvalue = 0.0
    for _ in range(max_iter):
        product = _hvp(model, loss_fn, params, vector)
        new = _dot(vector, product)  # Rayleigh quotient of a unit vector
        norm = math.sqrt(_dot(product, product))
        if norm == 0.0:
            return 0.0
        vector = [h / norm for h in product]
        if abs(new - eigenvalue) <= tol * abs(new):
            return new
        eigenvalue = new
    return eigenvalue


def hessian_trace(model: nn.Module, loss_fn: LossTensorFn, *, n_probes: int = 20,
                  seed: int = 0) -> tuple[float, float]:
    """Hutchinson's estimate of the Hessian's trace and its standard error (Rademacher
    vectors ``v``: ``E[v^T H v] = tr H``)."""
    params = _trainable(model)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    samples = []
    for _ in range(n_probes):
        vector = [(torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).to(p)
                  for p in params]
        samples.append(_dot(vector, _hvp(model, loss_fn, params, vector)))
    x = np.asarray(samples)
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else math.nan


def _first_rise(loss_at: Callable[[float], float], threshold: float, radius: float,
                n_scan: int, tol: float) -> float:
    """Smallest ``a`` in ``(0, radius]`` with ``loss_at(a) >= threshold`` (a non-finite loss
    counts as above), to ``tol``: a scan brackets the first crossing, bisection narrows it;
    ``radius`` when the loss stays below (a censored value)."""
    low = 0.0
    for a in np.linspace(radius / n_scan, radius, n_scan):
        value = loss_at(float(a))
        if not math.isfinite(value) or value >= threshold:
            high = float(a)
            break
        low = float(a)
    else:
        return radius
    while high - low > tol:
        mid = 0.5 * (low + high)
        value = loss_at(mid)
        if not math.isfinite(value) or value >= threshold:
            high = mid
        else:
            low = mid
    return 0.5 * (low + high)


def flatness_radii(model: nn.Module, loss_fn: LossFn, directions: Sequence[list[torch.Tensor]],
                   *, rise: float, radius: float, n_scan: int = 20,
                   tol: float | None = None) -> list[float]:
    """Per direction, the smallest ``|alpha|`` on either side where the loss reaches
    ``loss(theta) + rise`` (``radius`` when it never does inside the probe).

    The scan step is ``radius / n_scan``; a crossing closer than that to the previous scan
    point on a bumpy curve could be missed, as on any grid, but the located crossing is exact
    to ``tol`` (default ``radius / 2**14``).
    """
    tol = radius / 2**14 if tol is None else tol
    radii = []
    with Perturbed(model, directions) as perturbed:
        perturbed.set([0.0] * len(directions))
        threshold = loss_fn(model) + rise
        for k in range(len(directions)):
            sides = []
            for sign in (1.0, -1.0):
                def loss_at(a: float, k: int = k, sign: float = sign) -> float:
                    coefficients = [0.0] * len(directions)
                    coefficients[k] = sign * a
                    perturbed.set(coefficients)
                    return float(loss_fn(model))

                sides.append(_first_rise(loss_at, threshold, radius, n_scan, tol))
            radii.append(min(sides))
    return radii
