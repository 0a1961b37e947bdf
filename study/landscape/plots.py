"""Figures of the landscape: a trial's 1D curves or 2D contour, and sharpness across trials.

Drawn on :class:`matplotlib.figure.Figure` objects (no pyplot state), returned as PNG bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from study.landscape.probes import (
    FLATNESS_RISE,
    SHARPNESS_DISTANCE,
    Curve1D,
    Surface2D,
    flatness_radius,
    sharpness,
)

__all__ = ["build_plot_1d", "build_plot_2d", "build_sharpness_figure", "plot_1d", "plot_2d",
           "sharpness_figure"]

_DPI = 100


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


def _use_log(values: np.ndarray) -> bool:
    finite = values[np.isfinite(values)]
    return finite.size > 0 and finite.min() > 0 and finite.max() / finite.min() > 30


AXIS_UNITS = {"filter": "filter-normalized distance", "layer": "layer-normalized distance",
              "none": "distance in weight space, unit-norm directions"}


def build_plot_1d(curve: Curve1D, title: str, *, rise: float = FLATNESS_RISE,
                  flatness: float | None = None, normalization: str = "filter") -> Figure:
    """The loss against ``alpha``, one line per direction.

    Marks ``loss(theta)``, the flatness threshold and radius (``flatness``, the command's
    bisection mean; read off the grid when not given), and ``+/- distance`` where the sharpness
    is read.
    """
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    for k, row in enumerate(curve.losses):
        ax.plot(curve.alphas, row, marker=".", lw=1.4, label=f"direction {k}")
    radius = flatness_radius(curve, rise=rise) if flatness is None else flatness
    sharp = sharpness(curve, distance=curve.distance)
    ax.axhline(curve.center_loss, color="0.3", lw=0.8, ls="--",
               label=f"loss(θ) = {curve.center_loss:.4g}")
    ax.axhline(curve.center_loss + rise, color="tab:red", lw=0.8, ls=":",
               label=f"loss(θ) + {rise:g}")
    ax.axvspan(-radius, radius, color="tab:green", alpha=0.08,
               label=f"flatness radius {radius:.3g}"
                     f"{'' if flatness is None else ' (mean over directions)'}")
    for sign in (-1, 1):
        ax.axvline(sign * curve.distance, color="tab:purple", lw=0.8, ls="-.",
                   label=f"±{curve.distance:g}: sharpness {sharp:.3g}" if sign > 0 else None)
    if _use_log(curve.losses):
        ax.set_yscale("log")
    ax.set_xlabel(f"α ({AXIS_UNITS.get(normalization, normalization)})")
    ax.set_ylabel("training loss")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    # Below the axes: the curves fill the plot, and a legend inside hid some of them.
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=2,
              frameon=False)
    fig.set_size_inches(6.4, 4.4 + 0.2 * math.ceil((len(curve.losses) + 4) / 2))
    fig.tight_layout()
    return fig


def build_plot_2d(surface: Surface2D, title: str, *, normalization: str = "filter") -> Figure:
    """Contour plot of the loss over the ``(alpha, beta)`` plane."""
    fig = Figure(figsize=(6.0, 5.0))
    ax = fig.subplots()
    z = np.ma.masked_invalid(surface.losses.T)  # rows of the image are beta
    a, b = np.meshgrid(surface.alphas, surface.betas)
    finite = surface.losses[np.isfinite(surface.losses)]
    if finite.size and finite.max() > finite.min():
        lo, hi = float(finite.min()), float(finite.max())
        if _use_log(surface.losses):
            levels = np.geomspace(lo, hi, 25)
            norm: Normalize = LogNorm(vmin=lo, vmax=hi)
        else:
            levels = np.linspace(lo, hi, 25)
            norm = Normalize(vmin=lo, vmax=hi)
        filled = ax.contourf(a, b, z, levels=levels, norm=norm, cmap="viridis")
        ax.contour(a, b, z, levels=levels[::3], colors="white", linewidths=0.5, alpha=0.7)
        fig.colorbar(filled, ax=ax, label="training loss")
    else:
        ax.text(0.5, 0.5, "loss is constant or not finite", ha="center", va="center",
                transform=ax.transAxes)
    ax.plot([0], [0], marker="*", color="tab:red", ms=12,
            label=f"trained weights, loss {surface.center_loss:.4g}")
    units = AXIS_UNITS.get(normalization, normalization)
    ax.set_xlabel(f"α (direction 1, {units})")
    ax.set_ylabel(f"β (direction 2, {units})")
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    fig.tight_layout()
    return fig


def _rows(results_or_table: Any) -> list[dict[str, Any]]:
    if results_or_table is None:
        return []
    if hasattr(results_or_table, "to_dict") and hasattr(results_or_table, "columns"):
        return list(results_or_table.to_dict("records"))  # a pandas DataFrame
    rows = []
    for item in results_or_table if isinstance(results_or_table, Iterable) else []:
        if isinstance(item, Mapping):
            rows.append(dict(item))
        elif hasattr(item, "to_dict"):  # a ProbeResult
            rows.append(item.to_dict())
    return rows


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def _cells(rows: list[dict[str, Any]], sharp: np.ndarray) -> dict[tuple, list[float]]:
    """Sharpness of the trials of each (batch size, weight decay, penalty mode) cell: the
    replicates (seeds) of one setting."""
    cells: dict[tuple, list[float]] = {}
    for row, value in zip(rows, sharp, strict=True):
        if math.isfinite(value):
            key = (_number(row.get("batch_size")), _number(row.get("weight_decay")),
                   str(row.get("penalty_mode") or "unknown"))
            cells.setdefault(key, []).append(float(value))
    return cells


def _set_x_axis(ax: Any, column: str, values: list[float]) -> None:
    if column == "batch_size":
        ax.set_xscale("log", base=2)
        ticks = sorted(set(values))
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
    elif min(values) <= 0:  # weight decay 0 (Li et al.'s comparison) has no logarithm
        positive = [v for v in values if v > 0]
        ax.set_xscale("symlog", linthresh=min(positive) / 2 if positive else 1e-6)
    else:
        ax.set_xscale("log")
    if len(set(values)) == 1 and values[0] > 0:  # one value: give the log axis some room
        ax.set_xlim(values[0] / 2, values[0] * 2)


def build_sharpness_figure(results_or_table: Any) -> Figure:
    """Sharpness against batch size and against weight decay: each probed trial as a point,
    and each setting probed with several seeds as its mean with a 95% interval.

    Args:
        results_or_table: :class:`study.landscape.command.ProbeResult` objects, mappings or a
            DataFrame with the columns ``sharpness``, ``batch_size``, ``weight_decay`` (and
            optionally ``trial_number``/``number`` and ``penalty_mode``), e.g.
            :func:`landscape_rows`.
    """
    from study.landscape.curvature import mean_interval

    rows = _rows(results_or_table)
    fig = Figure(figsize=(10.0, 4.2))
    axes = fig.subplots(1, 2, sharey=True)
    sharp = np.array([_number(r.get("sharpness")) for r in rows], dtype=float)
    modes = [str(r.get("penalty_mode") or "unknown") for r in rows]
    cells = {k: mean_interval(v) for k, v in _cells(rows, sharp).items() if len(v) >= 2}
    palette = {"l2-in-loss": "tab:red", "coupled": "tab:blue", "decoupled": "tab:green",
               "none": "tab:gray"}
    for ax, column, index, label in ((axes[0], "batch_size", 0, "batch size"),
                                     (axes[1], "weight_decay", 1, "weight decay")):
        x = np.array([_number(r.get(column)) for r in rows], dtype=float)
        ok = np.isfinite(x) & (x >= 0) & np.isfinite(sharp)
        ax.set_xlabel(label)
        ax.grid(True, which="both", alpha=0.3)
        if not ok.any():
            ax.text(0.5, 0.5, "no probed trials", ha="center", va="center",
                    transform=ax.transAxes, color="0.4")
            ax.set_xscale("log")
            continue
        seen: set[str] = set()
        for i in np.flatnonzero(ok):
            mode = modes[i]
            ax.scatter(x[i], sharp[i], s=30, alpha=0.6, color=palette.get(mode, "tab:orange"),
                       label=None if mode in seen else mode, zorder=3)
            seen.add(mode)
            number = rows[i].get("trial_number", rows[i].get("number"))
            if number is not None:
                ax.annotate(str(number), (x[i], sharp[i]), textcoords="offset points",
                            xytext=(4, 3), fontsize=7, color="0.3")
        for n, (key, cell) in enumerate(sorted(cells.items())):
            ax.errorbar([key[index]], [cell.mean], yerr=[[cell.mean - cell.low],
                                                         [cell.high - cell.mean]],
                        fmt="D", ms=6, color="black", capsize=4, zorder=4,
                        label="setting: mean, 95% interval over seeds" if n == 0 else None)
        _set_x_axis(ax, column, [float(v) for v in x[ok]])
        ax.margins(x=0.15, y=0.15)
        ax.legend(fontsize=8, title="penalty mode", title_fontsize=8)
    axes[0].set_ylabel(f"sharpness (loss rise at ±{SHARPNESS_DISTANCE:g})")
    n = int(np.isfinite(sharp).sum())
    fig.suptitle(f"Loss-landscape sharpness of probed trials ({n} trial{'s' * (n != 1)}, "
                 f"{len(cells)} setting{'s' * (len(cells) != 1)} with replicates)",
                 fontsize=11)
    fig.tight_layout()
    return fig


def plot_1d(curve: Curve1D, title: str, *, rise: float = FLATNESS_RISE,
            flatness: float | None = None, normalization: str = "filter") -> bytes:
    """:func:`build_plot_1d` as PNG bytes."""
    return _png(build_plot_1d(curve, title, rise=rise, flatness=flatness,
                              normalization=normalization))


def plot_2d(surface: Surface2D, title: str, *, normalization: str = "filter") -> bytes:
    """:func:`build_plot_2d` as PNG bytes."""
    return _png(build_plot_2d(surface, title, normalization=normalization))


def sharpness_figure(results_or_table: Any) -> bytes:
    """:func:`build_sharpness_figure` as PNG bytes."""
    return _png(build_sharpness_figure(results_or_table))
