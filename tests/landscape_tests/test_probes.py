"""Tests of study.landscape.probes: filter-normalized directions, probes, sharpness and flatness.

The accuracy tests use models whose loss is exactly quadratic in the weights, so the loss rise
along a direction d is known in closed form:
loss(theta + a d) - loss(theta) = a g.d + a^2/2 d^T H d,
and the +/- mean that :func:`sharpness` takes is exactly a^2/2 d^T H d.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from study.errors import ConfigError
from study.landscape.directions import filter_normalized_direction
from study.landscape.plots import build_plot_1d, build_plot_2d, plot_1d, plot_2d
from study.landscape.probes import (
    FLATNESS_RISE,
    SHARPNESS_DISTANCE,
    Curve1D,
    flatness_radius,
    probe_1d,
    probe_2d,
    sharpness,
)
from study.training.models import build_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def direction_for(model: nn.Module, seed: int, index: int = 0) -> list[torch.Tensor]:
    """The ``index``-th direction a probe with ``seed`` uses (drawn in sequence)."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(index):
        filter_normalized_direction(model, generator=generator)
    return filter_normalized_direction(model, generator=generator)


# -- known-quadratic fixtures ---------------------------------------------------------------------
class DiagonalQuadratic:
    """A bias-free linear layer with loss 0.5 * sum c_ij (W_ij - M_ij)^2: H = diag(c)."""

    def __init__(self, *, at_minimum: bool, dtype: torch.dtype = torch.float32) -> None:
        g = torch.Generator().manual_seed(1)
        self.model = nn.Linear(6, 4, bias=False).to(dtype)
        with torch.no_grad():
            self.model.weight.copy_(torch.randn(4, 6, generator=g))
        self.c = (torch.rand(4, 6, generator=g) * 3 + 0.5).to(dtype)
        offset = 0.0 if at_minimum else torch.randn(4, 6, generator=g).to(dtype)
        self.minimizer = self.model.weight.detach().clone() + offset

    def loss(self, model: nn.Module) -> float:
        return float(0.5 * (self.c * (model.weight - self.minimizer) ** 2).sum())

    def curvature(self, d: torch.Tensor) -> float:
        """d^T H d."""
        return float((self.c.double() * d.double() ** 2).sum())


class LeastSquares:
    """Linear regression at its exact least-squares minimizer: H = X^T X / n per output row."""

    def __init__(self, dtype: torch.dtype = torch.float64) -> None:
        g = torch.Generator().manual_seed(2)
        n, p, k = 200, 5, 3
        self.x = torch.randn(n, p, generator=g, dtype=torch.float64)
        true = torch.randn(k, p, generator=g, dtype=torch.float64)
        self.y = self.x @ true.T + 0.3 * torch.randn(n, k, generator=g, dtype=torch.float64)
        solution = torch.linalg.lstsq(self.x, self.y).solution.T  # (k, p)
        self.model = nn.Linear(p, k, bias=False).to(dtype)
        with torch.no_grad():
            self.model.weight.copy_(solution.to(dtype))
        self.x_model, self.y_model = self.x.to(dtype), self.y.to(dtype)

    def loss(self, model: nn.Module) -> float:
        residual = model(self.x_model) - self.y_model
        return float(0.5 * (residual**2).sum(dim=1).mean())

    def curvature(self, d: torch.Tensor) -> float:
        return float(((self.x @ d.double().T) ** 2).sum(dim=1).mean())


@pytest.mark.parametrize("at_minimum", [True, False], ids=["at-minimum", "off-minimum"])
def test_sharpness_matches_the_analytic_curvature_of_a_diagonal_quadratic(at_minimum):
    fixture = DiagonalQuadratic(at_minimum=at_minimum)
    curve = probe_1d(fixture.model, fixture.loss, seed=3)
    (d,) = direction_for(fixture.model, seed=3)
    expected = 0.5 * SHARPNESS_DISTANCE**2 * fixture.curvature(d)
    # +/- averaging cancels the gradient term, so even off the minimum it is exact.
    assert sharpness(curve) == pytest.approx(expected, rel=1e-4)
    assert sharpness(curve) == pytest.approx(expected, rel=0.05)  # the contract


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_sharpness_matches_the_hessian_of_least_squares_at_its_minimizer(dtype):
    fixture = LeastSquares(dtype)
    curve = probe_1d(fixture.model, fixture.loss, n_directions=3, seed=5)
    curvatures = [fixture.curvature(direction_for(fixture.model, 5, k)[0]) for k in range(3)]
    expected = 0.5 * SHARPNESS_DISTANCE**2 * float(np.mean(curvatures))
    rel = 1e-9 if dtype is torch.float64 else 1e-3
    assert sharpness(curve) == pytest.approx(expected, rel=rel)
    # Also at another distance on the grid (read exactly) and off the grid (interpolated).
    assert sharpness(curve, distance=0.5) == pytest.approx(
        expected * 25, rel=max(rel, 1e-6))
    interpolated = sharpness(curve, distance=0.25)
    assert interpolated == pytest.approx(expected * 6.25, rel=0.05)


def test_flatness_radius_matches_the_analytic_crossing_of_a_quadratic():
    fixture = LeastSquares()
    (d,) = direction_for(fixture.model, seed=0)
    curvature = fixture.curvature(d)
    rise = 0.5 * curvature * 0.3**2  # the loss rises by `rise` at |alpha| = 0.3 exactly
    fine = probe_1d(fixture.model, fixture.loss, n_points=401, seed=0)
    assert flatness_radius(fine, rise=rise) == pytest.approx(0.3, rel=1e-3)
    coarse = probe_1d(fixture.model, fixture.loss, n_points=21, seed=0)
    assert flatness_radius(coarse, rise=rise) == pytest.approx(0.3, abs=0.01)


def test_flatness_radius_is_the_radius_when_the_loss_never_rises_enough():
    model = nn.Linear(3, 2, bias=False)
    curve = probe_1d(model, lambda m: 1.0, radius=0.7, n_points=5)
    assert flatness_radius(curve) == 0.7
    assert sharpness(curve) == 0.0


def test_flatness_radius_takes_the_nearest_crossing_and_treats_non_finite_as_crossed():
    alphas = np.array([-1.0, -0.5, -0.1, 0.0, 0.1, 0.5, 1.0])
    losses = np.array([[9.0, 1.0, 1.0, 1.0, 1.0, 1.2, 3.0],
                       [1.0, 1.0, 1.0, 1.0, 1.05, math.inf, 1.0]])
    curve = Curve1D(alphas=alphas, losses=losses, center_loss=1.0, radius=1.0, distance=0.1,
                    seed=0)
    # Direction 0: +side crosses 1.1 half-way between 0.1 and 0.5 -> 0.3; -side at 0.5+.
    # Direction 1: +side hits inf at 0.5 (no interpolation) -> 0.5. Minimum: 0.3.
    assert flatness_radius(curve, rise=0.1) == pytest.approx(0.3)
    assert flatness_radius(curve, rise=0.5) == pytest.approx(0.5)


# -- directions ----------------------------------------------------------------------------------
@pytest.fixture
def cnn() -> nn.Module:
    return build_model("cnn", width=3, in_channels=1, n_classes=4, input_size=(8, 8), seed=0)


def test_direction_is_filter_normalized_and_zero_on_biases_and_batchnorm(cnn):
    direction = direction_for(cnn, seed=0)
    params = list(cnn.named_parameters())
    assert len(direction) == len(params)
    kernels = 0
    for (name, p), d in zip(params, direction, strict=True):
        assert d.shape == p.shape and d.dtype == p.dtype and d.device == p.device
        if p.dim() <= 1:  # BatchNorm weight/bias and the head's bias
            assert torch.count_nonzero(d) == 0, name
            continue
        kernels += 1
        torch.testing.assert_close(d.flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1))
        assert not torch.allclose(d, p)
    assert kernels == 5  # four conv kernels and the linear head


def test_directions_depend_only_on_the_seed(cnn):
    first, again = direction_for(cnn, seed=7), direction_for(cnn, seed=7)
    other = direction_for(cnn, seed=8)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    # Drawn in float32 on the CPU: a float64 copy of the model gets the same direction.
    double = build_model("cnn", width=3, in_channels=1, n_classes=4, input_size=(8, 8),
                         seed=0).double()
    for a, b in zip(first, direction_for(double, seed=7), strict=True):
        torch.testing.assert_close(a.double(), b)


def test_a_zero_filter_gets_a_zero_direction():
    model = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        model.weight[1].zero_()
    (d,) = direction_for(model, seed=0)
    assert torch.count_nonzero(d[1]) == 0 and torch.count_nonzero(d[0]) == 3


# -- probes restore the model --------------------------------------------------------------------
def _batch_loss(x: torch.Tensor, y: torch.Tensor, seen: list[tuple[bool, bool]]):
    def loss(model: nn.Module) -> float:
        seen.append((model.training, torch.is_grad_enabled()))
        return float(nn.functional.cross_entropy(model(x), y))

    return loss


def test_probes_restore_weights_buffers_and_mode_exactly(cnn):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 4, (16,), generator=g)
    cnn.train()
    cnn(x)  # move the BatchNorm running statistics off their initial values
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    seen: list[tuple[bool, bool]] = []
    loss = _batch_loss(x, y, seen)
    curve = probe_1d(cnn, loss, n_points=5, n_directions=2)
    surface = probe_2d(cnn, loss, n_points=5)
    after = cnn.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit-exact
    assert cnn.training
    assert all(p.requires_grad for p in cnn.parameters())
    assert set(seen) == {(False, False)}  # eval mode, no autograd
    assert np.isfinite(curve.losses).all() and np.isfinite(surface.losses).all()


def test_probe_restores_the_weights_when_the_loss_function_raises(cnn):
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    calls = []

    def failing(model: nn.Module) -> float:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return 1.0

    with pytest.raises(RuntimeError, match="boom"):
        probe_1d(cnn, failing)
    assert all(torch.equal(before[k], v) for k, v in cnn.state_dict().items())
    assert cnn.training


def test_grid_holds_zero_and_the_sharpness_distance_exactly():
    model = nn.Linear(2, 2, bias=False)
    curve = probe_1d(model, lambda m: float((m.weight**2).sum()), radius=1.0, n_points=4)
    alphas = list(curve.alphas)
    assert alphas == sorted(alphas)
    assert {0.0, -SHARPNESS_DISTANCE, SHARPNESS_DISTANCE} <= set(alphas)
    assert alphas[0] == -1.0 and alphas[-1] == 1.0
    assert len(alphas) == 7  # 4 points + 0 + two distances
    default = probe_1d(model, lambda m: 0.0)
    assert len(default.alphas) == 21  # 0 and +/-0.1 are already on linspace(-1, 1, 21)
    assert curve.losses.shape == (1, 7)


def test_surface_axes_are_the_1d_curves_of_the_same_seed(cnn):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 4, (16,), generator=g)
    loss = _batch_loss(x, y, [])
    curve = probe_1d(cnn, loss, n_points=5, n_directions=2, seed=4)
    surface = probe_2d(cnn, loss, n_points=5, seed=4)
    np.testing.assert_array_equal(surface.axes().losses, curve.losses)
    assert sharpness(surface) == sharpness(curve)
    assert flatness_radius(surface) == flatness_radius(curve)
    assert surface.losses.shape == (len(surface.alphas), len(surface.betas))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"radius": 0.0}, "radius"), ({"radius": 0.05}, "radius"), ({"radius": math.inf}, "radius"),
     ({"n_points": 2}, "n_points"), ({"n_points": 5.0}, "n_points"),
     ({"n_directions": 0}, "n_directions"), ({"distance": -1.0}, "distance")],
)
def test_bad_probe_settings_are_one_line_config_errors(kwargs, field):
    with pytest.raises(ConfigError) as info:
        probe_1d(nn.Linear(2, 2), lambda m: 0.0, **kwargs)
    assert f"`{field}`" in str(info.value) and "\n" not in str(info.value)


def test_summaries_refuse_bad_distance_and_rise():
    curve = probe_1d(nn.Linear(2, 2), lambda m: 0.0, radius=0.5, n_points=3)
    with pytest.raises(ConfigError, match="`distance`"):
        sharpness(curve, distance=0.6)
    with pytest.raises(ConfigError, match="`rise`"):
        flatness_radius(curve, rise=0.0)


# -- output ---------------------------------------------------------------------------------------
def test_plots_are_png_bytes_and_curves_serialize_to_strict_json(cnn):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 4, (16,), generator=g)
    loss = _batch_loss(x, y, [])
    curve = probe_1d(cnn, loss, n_points=5, n_directions=2)
    surface = probe_2d(cnn, loss, n_points=5)
    assert plot_1d(curve, "a title").startswith(PNG_MAGIC)
    assert plot_2d(surface, "a title").startswith(PNG_MAGIC)
    fig = build_plot_1d(curve, "a title")
    (ax,) = fig.axes
    directions = [line for line in ax.get_lines() if line.get_label().startswith("direction")]
    assert len(directions) == 2
    for line, row in zip(directions, curve.losses, strict=True):
        assert np.allclose(line.get_xdata(), curve.alphas)
        assert np.allclose(line.get_ydata(), row)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"loss(θ) = {curve.center_loss:.4g}" in labels
    assert any(label.startswith("flatness radius") for label in labels)
    (ax2, _colorbar) = build_plot_2d(surface, "a title").axes
    assert ax2.get_xlabel() == "α (direction 1, filter-normalized distance)"
    assert ax2.get_title() == "a title"
    assert ax.get_xlabel() == "α (filter-normalized distance)"
    plain = build_plot_1d(curve, "t", flatness=0.42, normalization="none").axes[0]
    assert plain.get_xlabel() == "α (distance in weight space, unit-norm directions)"
    assert "flatness radius 0.42 (mean over directions)" in [
        t.get_text() for t in plain.get_legend().get_texts()]
    broken = Curve1D(alphas=curve.alphas, losses=np.full_like(curve.losses, math.nan),
                     center_loss=math.nan, radius=1.0, distance=SHARPNESS_DISTANCE, seed=0)
    document = json.loads(json.dumps(broken.to_dict(), allow_nan=False))
    assert document["center_loss"] is None and document["kind"] == "1d"
    assert json.loads(json.dumps(surface.to_dict(), allow_nan=False))["kind"] == "2d"
    assert FLATNESS_RISE > 0


def test_landscape_imports_neither_optuna_nor_mlflow_nor_pyplot():
    code = ("import sys, study.landscape; "
            "print(sorted(m for m in ('optuna', 'mlflow', 'matplotlib.pyplot') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_landscape_legends_lie_outside_the_plotting_area(cnn):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 4, (16,), generator=g)
    loss = _batch_loss(x, y, [])
    for fig in (build_plot_1d(probe_1d(cnn, loss, n_points=5, n_directions=5), "t"),
                build_plot_2d(probe_2d(cnn, loss, n_points=5), "t")):
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        ax = fig.axes[0]
        legend = ax.get_legend().get_window_extent(renderer)
        assert not ax.get_window_extent(renderer).overlaps(legend)
        assert fig.bbox.contains(legend.x0, legend.y0) and fig.bbox.contains(legend.x1,
                                                                              legend.y1)
