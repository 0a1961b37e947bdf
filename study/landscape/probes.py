"""Loss-landscape probes along filter-normalized random directions (Li et al., 2018).

The loss is read at ``theta + alpha * d`` (1D) or ``theta + alpha * d1 + beta * d2`` (2D), with
``d`` from :mod:`study.landscape.directions`, so ``alpha`` is in units of "the weights' own
scale".

Two summaries of a 1D curve (both in the curve's own loss units, nats for cross-entropy):

- :func:`sharpness`: the mean over directions and both signs of
  ``loss(theta +/- distance * d) - loss(theta)``, with ``distance`` =
  :data:`SHARPNESS_DISTANCE`. The probes evaluate ``+/- distance`` exactly (they are added to the
  grid), so no interpolation enters. Averaging the two signs cancels the gradient term: for a
  quadratic loss it equals ``0.5 * distance**2 * d^T H d`` exactly, at a minimum or not.
- :func:`flatness_radius`: the smallest ``|alpha|`` (over both signs and every direction) at
  which the loss has risen by an ABSOLUTE amount ``rise`` (:data:`FLATNESS_RISE` nats) above
  ``loss(theta)``, linearly interpolated between grid points; the probe radius when it never
  does. Absolute, because a relative rise degenerates for well-fitted models (``loss -> 0``
  makes any wiggle a large relative rise) and cross-entropy in nats is already comparable
  across the trials of one dataset.

This module is pure (torch, numpy, matplotlib): the caller's ``loss_fn`` decides what "the
loss" is; it is called in eval mode under :func:`torch.no_grad`, and the model's weights and
train/eval mode are restored exactly afterwards.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from study.errors import ConfigError
from study.landscape.directions import Perturbed, random_directions
from study.landscape.options import SHARPNESS_DISTANCE, check_probe_args

__all__ = [
    "FLATNESS_RISE",
    "SHARPNESS_DISTANCE",
    "Curve1D",
    "Surface2D",
    "check_probe_args",
    "flatness_radius",
    "probe_1d",
    "probe_2d",
    "sharpness",
    "sharpness_per_direction",
]

FLATNESS_RISE = 0.1
"""Absolute loss rise (nats of training cross-entropy, penalty included) that ends the flat
region in :func:`flatness_radius`."""

LossFn = Callable[[nn.Module], float]


# -- results --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class Curve1D:
    """Losses along ``n_directions`` directions: ``losses[k, i] = loss(theta + alphas[i] d_k)``.

    ``alphas`` is sorted and always holds ``0`` and ``+/- distance`` exactly (besides the
    ``n_points`` evenly spaced points of ``[-radius, radius]``).
    """

    alphas: np.ndarray
    losses: np.ndarray
    center_loss: float
    radius: float
    distance: float
    seed: int

    @property
    def n_directions(self) -> int:
        """Number of directions probed."""
        return int(self.losses.shape[0])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (non-finite losses become ``null``)."""
        return {
            "kind": "1d",
            "radius": self.radius,
            "distance": self.distance,
            "seed": self.seed,
            "n_directions": self.n_directions,
            "center_loss": _json_float(self.center_loss),
            "alphas": [float(a) for a in self.alphas],
            "losses": [[_json_float(v) for v in row] for row in self.losses],
        }


@dataclasses.dataclass(frozen=True, eq=False)
class Surface2D:
    """``losses[i, j] = loss(theta + alphas[i] d1 + betas[j] d2)`` on a square grid.

    The grid holds ``0`` and ``+/- distance`` exactly on both axes, so the two axes are 1D
    curves along ``d1`` and ``d2`` (:meth:`axes`), which :func:`sharpness` and
    :func:`flatness_radius` accept directly.
    """

    alphas: np.ndarray
    betas: np.ndarray
    losses: np.ndarray
    center_loss: float
    radius: float
    distance: float
    seed: int

    def axes(self) -> Curve1D:
        """The ``beta = 0`` and ``alpha = 0`` slices as a two-direction :class:`Curve1D`."""
        i0 = int(np.flatnonzero(self.alphas == 0.0)[0])
        j0 = int(np.flatnonzero(self.betas == 0.0)[0])
        return Curve1D(
            alphas=self.alphas, losses=np.stack([self.losses[:, j0], self.losses[i0, :]]),
            center_loss=self.center_loss, radius=self.radius, distance=self.distance,
            seed=self.seed,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (non-finite losses become ``null``)."""
        return {
            "kind": "2d",
            "radius": self.radius,
            "distance": self.distance,
            "seed": self.seed,
            "center_loss": _json_float(self.center_loss),
            "alphas": [float(a) for a in self.alphas],
            "betas": [float(b) for b in self.betas],
            "losses": [[_json_float(v) for v in row] for row in self.losses],
        }


def _json_float(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


# -- probes ---------------------------------------------------------------------------------------
def _grid(radius: float, n_points: int, distance: float) -> np.ndarray:
    """``linspace(-radius, radius, n_points)`` with ``0`` and ``+/- distance`` put in exactly."""
    points = [float(v) for v in np.linspace(-radius, radius, n_points)]
    tol = 1e-9 * radius
    for extra in (0.0, -float(distance), float(distance)):
        near = [i for i, v in enumerate(points) if abs(v - extra) <= tol]
        if near:
            points[near[0]] = extra
        else:
            points.append(extra)
    return np.array(sorted(points), dtype=np.float64)


def _evaluate(loss_fn: LossFn, model: nn.Module) -> float:
    value = loss_fn(model)
    return float(value.item() if isinstance(value, torch.Tensor) else value)


def probe_1d(
    model: nn.Module,
    loss_fn: LossFn,
    *,
    radius: float = 1.0,
    n_points: int = 21,
    n_directions: int = 1,
    seed: int = 0,
    distance: float = SHARPNESS_DISTANCE,
    normalization: str = "filter",
) -> Curve1D:
    """The loss along ``n_directions`` filter-normalized random directions.

    Args:
        model: The trained network (its weights are restored exactly afterwards).
        loss_fn: Maps the (perturbed) model to its loss; called in eval mode under no_grad.
        radius: The grid spans ``alpha`` in ``[-radius, radius]``.
        n_points: Evenly spaced grid points (``0`` and ``+/- distance`` are added if missing).
        n_directions: Directions drawn one after the other from a generator seeded ``seed``
            (so direction 0 is the first direction of :func:`probe_2d` with the same seed).
        seed: Seed of the directions.
        distance: Where :func:`sharpness` reads the loss; evaluated exactly.

    Raises:
        ConfigError: A bad ``radius``, ``n_points``, ``n_directions`` or ``distance``.
    """
    check_probe_args(radius, n_points, distance)
    if isinstance(n_directions, bool) or not isinstance(n_directions, int) or n_directions < 1:
        raise ConfigError(
            f"`n_directions` must be an integer >= 1, but got n_directions={n_directions!r}."
        )
    alphas = _grid(radius, n_points, distance)
    directions = random_directions(model, n_directions, seed, normalization=normalization)
    losses = np.empty((n_directions, len(alphas)), dtype=np.float64)
    with Perturbed(model, directions) as perturbed:
        perturbed.set([0.0] * n_directions)
        center = _evaluate(loss_fn, model)
        for k in range(n_directions):
            for i, alpha in enumerate(alphas):
                if alpha == 0.0:
                    losses[k, i] = center
                    continue
                coefficients = [0.0] * n_directions
                coefficients[k] = alpha
                perturbed.set(coefficients)
                losses[k, i] = _evaluate(loss_fn, model)
    return Curve1D(alphas=alphas, losses=losses, center_loss=center, radius=float(radius),
                   distance=float(distance), seed=seed)


def probe_2d(
    model: nn.Module,
    loss_fn: LossFn,
    *,
    radius: float = 1.0,
    n_points: int = 21,
    seed: int = 0,
    distance: float = SHARPNESS_DISTANCE,
    normalization: str = "filter",
) -> Surface2D:
    """The loss on the plane spanned by two filter-normalized random directions.

    Same arguments as :func:`probe_1d`; the grid is the same on both axes (``n_points**2``
    evaluations, a few more when ``0`` or ``+/- distance`` are added).
    """
    check_probe_args(radius, n_points, distance)
    grid = _grid(radius, n_points, distance)
    directions = random_directions(model, 2, seed, normalization=normalization)
    losses = np.empty((len(grid), len(grid)), dtype=np.float64)
    with Perturbed(model, directions) as perturbed:
        perturbed.set([0.0, 0.0])
        center = _evaluate(loss_fn, model)
        for i, alpha in enumerate(grid):
            for j, beta in enumerate(grid):
                if alpha == 0.0 and beta == 0.0:
                    losses[i, j] = center
                    continue
                perturbed.set([alpha, beta])
                losses[i, j] = _evaluate(loss_fn, model)
    return Surface2D(alphas=grid, betas=grid.copy(), losses=losses, center_loss=center,
                     radius=float(radius), distance=float(distance), seed=seed)


# -- summaries ------------------------------------------------------------------------------------
def _as_curve(curve: Curve1D | Surface2D) -> Curve1D:
    return curve.axes() if isinstance(curve, Surface2D) else curve


def sharpness(curve: Curve1D | Surface2D, *, distance: float = SHARPNESS_DISTANCE) -> float:
    """The mean of :func:`sharpness_per_direction`."""
    return float(np.mean(sharpness_per_direction(curve, distance=distance)))


def sharpness_per_direction(curve: Curve1D | Surface2D, *,
                            distance: float = SHARPNESS_DISTANCE) -> list[float]:
    """Mean loss rise at ``+/- distance``: mean over k, s=+/- of
    ``loss(theta + s * distance * d_k) - loss(theta)``.

    Exact when ``+/- distance`` are grid points (always for the distance the probe was run
    with), else linearly interpolated. A :class:`Surface2D` counts as its two axes.

    Raises:
        ConfigError: ``distance`` is not in ``(0, radius]``.
    """
    curve = _as_curve(curve)
    if not (isinstance(distance, int | float) and 0 < distance <= curve.radius):
        raise ConfigError(f"`distance` must be in (0, radius={curve.radius:g}], but got "
                          f"distance={distance!r}.")
    per_direction = []
    for row in curve.losses:
        rises = []
        for target in (-float(distance), float(distance)):
            hit = np.flatnonzero(np.isclose(curve.alphas, target, rtol=0, atol=1e-12))
            value = row[hit[0]] if hit.size else np.interp(target, curve.alphas, row)
            rises.append(value - curve.center_loss)
        per_direction.append(float(np.mean(rises)))
    return per_direction


def flatness_radius(curve: Curve1D | Surface2D, *, rise: float = FLATNESS_RISE) -> float:
    """Smallest ``|alpha|`` where ``loss >= loss(theta) + rise`` (absolute), else the radius.

    Walks outwards from ``alpha = 0`` on each side of each direction and interpolates linearly
    between the last grid point below the threshold and the first one at or above it; a
    non-finite loss counts as above. The result is the minimum over sides and directions: the
    radius of the region, in the probed directions, where the loss stays within ``rise``.

    Raises:
        ConfigError: ``rise`` is not a number > 0.
    """
    curve = _as_curve(curve)
    if not (isinstance(rise, int | float) and rise > 0):
        raise ConfigError(f"`rise` must be a number > 0, but got rise={rise!r}.")
    threshold = curve.center_loss + float(rise)
    zero = int(np.flatnonzero(curve.alphas == 0.0)[0])
    best = float(curve.radius)
    for row in curve.losses:
        for step in (1, -1):
            prev_a, prev_l = 0.0, curve.center_loss
            i = zero + step
            while 0 <= i < len(curve.alphas):
                a, value = abs(float(curve.alphas[i])), float(row[i])
                if not math.isfinite(value) or value >= threshold:
                    if math.isfinite(value) and value > prev_l:
                        a = prev_a + (threshold - prev_l) / (value - prev_l) * (a - prev_a)
                    best = min(best, a)
                    break
                prev_a, prev_l = a, value
                i += step
    return best


