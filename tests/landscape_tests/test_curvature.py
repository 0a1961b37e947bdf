"""Curvature that does not depend on the probe's settings, checked against closed forms: a
model whose loss is exactly quadratic in its weights, 0.5 (w - m)^T A (w - m) with a known
symmetric A, so the Hessian is A everywhere and the rise along a direction is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from study.landscape.curvature import (
    flatness_radii,
    hessian_top_eigenvalue,
    hessian_trace,
    mean_interval,
)
from study.landscape.directions import random_directions


class Quadratic:
    """A bias-free 5x4 linear layer (20 weights) with loss 0.5 (w - m)^T A (w - m)."""

    def __init__(self, *, seed: int = 0, top: float = 7.0) -> None:
        rng = np.random.default_rng(seed)
        q, _ = np.linalg.qr(rng.normal(size=(20, 20)))
        self.eigenvalues = np.concatenate([[top], rng.uniform(0.1, 3.0, size=19)])
        self.a = torch.tensor(q @ np.diag(self.eigenvalues) @ q.T)
        self.model = nn.Linear(4, 5, bias=False).double()
        with torch.no_grad():
            self.model.weight.copy_(torch.tensor(rng.normal(size=(5, 4))))
        self.m = self.model.weight.detach().flatten().clone() + torch.tensor(
            rng.normal(scale=0.3, size=20))

    def loss_tensor(self, model: nn.Module) -> torch.Tensor:
        r = model.weight.flatten() - self.m
        return 0.5 * r @ self.a @ r

    def loss(self, model: nn.Module) -> float:
        return float(self.loss_tensor(model))

    def crossing(self, d: torch.Tensor, rise: float) -> float:
        """Smallest |alpha| (either sign) with loss(w + alpha d) - loss(w) = rise."""
        r = self.model.weight.detach().flatten() - self.m
        g, c = float(r @ self.a @ d), float(d @ self.a @ d)  # slope and curvature along d
        roots = [(-s * g + math.sqrt(g * g + 2 * c * rise)) / c for s in (1.0, -1.0)]
        return min(roots)


def test_the_top_eigenvalue_of_a_quadratic_is_recovered_within_one_percent():
    fixture = Quadratic(top=7.0)
    value = hessian_top_eigenvalue(fixture.model, fixture.loss_tensor, max_iter=500, tol=1e-8)
    assert value == pytest.approx(7.0, rel=0.01)


def test_the_trace_estimate_covers_the_trace():
    fixture = Quadratic()
    estimate, error = hessian_trace(fixture.model, fixture.loss_tensor, n_probes=200)
    assert abs(estimate - fixture.eigenvalues.sum()) <= 3 * error
    assert error > 0


@pytest.mark.parametrize("normalization", ["filter", "layer", "none"])
def test_bisection_finds_the_closed_form_crossing(normalization):
    fixture = Quadratic(seed=1)
    directions = random_directions(fixture.model, 4, seed=2, normalization=normalization)
    rise = 0.05
    radii = flatness_radii(fixture.model, fixture.loss, directions, rise=rise, radius=5.0)
    expected = [fixture.crossing(d[0].flatten(), rise) for d in directions]
    assert radii == pytest.approx(expected, abs=5.0 / 2**13)
    assert max(radii) < 5.0  # none censored


def test_a_loss_that_never_rises_gives_the_radius():
    model = nn.Linear(3, 2, bias=False)
    directions = random_directions(model, 2, seed=0)
    assert flatness_radii(model, lambda m: 1.0, directions, rise=0.1, radius=0.7) == [0.7, 0.7]


def _radii_closed_form(fixture: Quadratic, n: int, seed: int, rise: float) -> list[float]:
    directions = random_directions(fixture.model, n, seed=seed, normalization="none")
    return [fixture.crossing(d[0].flatten(), rise) for d in directions]


def test_the_flatness_interval_covers_the_mean_over_all_directions_near_95_percent():
    """More directions narrow the interval; they do not move the figure (a minimum would)."""
    fixture = Quadratic(seed=3)
    truth = float(np.mean(_radii_closed_form(fixture, 20_000, seed=10_000, rise=0.05)))
    covered = []
    for seed in range(300):
        interval = mean_interval(_radii_closed_form(fixture, 5, seed=seed, rise=0.05))
        covered.append(interval.low <= truth <= interval.high)
    assert 0.91 <= np.mean(covered) <= 0.99
    five = mean_interval(_radii_closed_form(fixture, 5, seed=0, rise=0.05))
    forty = mean_interval(_radii_closed_form(fixture, 40, seed=0, rise=0.05))
    assert forty.high - forty.low < five.high - five.low
    assert five.low <= forty.mean <= five.high


def test_one_direction_has_no_interval():
    assert mean_interval([0.3]).low is None and mean_interval([0.3]).n == 1


@pytest.mark.parametrize("normalization", ["filter", "layer", "none"])
def test_normalizations_scale_the_same_draw(normalization):
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(12, 2))
    (raw,) = random_directions(model, 1, seed=4, normalization="none")
    (d,) = random_directions(model, 1, seed=4, normalization=normalization)
    params = list(model.parameters())
    for p, a, b in zip(params, raw, d, strict=True):
        if p.dim() <= 1:
            assert not b.any()  # biases and BatchNorm never move
            continue
        ratio = (b / a).flatten()
        if normalization == "filter":  # one factor per filter, the filter's own norm
            per_filter = (b.flatten(1).norm(dim=1) / p.detach().flatten(1).norm(dim=1))
            assert per_filter == pytest.approx(torch.ones(p.shape[0]), rel=1e-5)
        elif normalization == "layer":  # one factor per tensor, the tensor's norm
            assert ratio == pytest.approx(ratio[0].expand_as(ratio), rel=1e-5)
            assert float(b.norm()) == pytest.approx(float(p.detach().norm()), rel=1e-5)
    if normalization == "none":
        assert math.sqrt(sum(float((x**2).sum()) for x in d)) == pytest.approx(1.0, rel=1e-6)
