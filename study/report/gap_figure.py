"""The gap figure: why validation lags training, drawn from ``analysis.json``'s ``gap`` block.

Per epoch, the parts of ``val_loss - data_loss`` stacked as bars (timing, mode -- split into its
BatchNorm and dropout parts where the block has them -- and generalization; positive parts
stacked up from 0, negative ones down), the gap itself as a point with its interval, and the
mean training data loss and validation loss as lines on the same axis. A dotted line marks the
epoch at which the lag closes. One panel per group of trials (a setting), or one for the study.

:func:`build_gap_figure` returns the :class:`~matplotlib.figure.Figure` (tests read its bars,
lines and labels); :func:`gap_figure` returns PNG bytes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from study.analysis.gap_closing import closing_of, closing_words
from study.report.figures import message_figure, to_png
from study.report.gap_blocks import MAX_PANELS

__all__ = ["MAX_PANELS", "PART_LABELS", "build_gap_figure", "gap_figure"]

QUESTION = "Why does validation lag training?"
_PANEL_HEIGHT = 3.4  # inches
PART_LABELS = {"timing": "timing (epoch averaging)", "mode": "mode (train vs eval)",
               "mode_batchnorm": "mode: BatchNorm statistics", "mode_dropout": "mode: dropout",
               "generalization": "generalization (overfitting)"}
_COLORS = {"timing": "#4C72B0", "mode": "#8C8C8C", "mode_batchnorm": "#DD8452",
           "mode_dropout": "#8172B3", "generalization": "#C44E52"}
_GAP_LABEL = "gap = validation − training ({level:.0%} CI)"
_CLOSES = "lag (timing + mode) closes"
_LINES = (("train_data_loss", "training data loss (epoch mean)", "-"),
          ("val_loss", "validation loss", "--"))


def gap_figure(block: Mapping[str, Any] | None) -> bytes:
    """PNG of :func:`build_gap_figure` (a message when there is nothing to draw)."""
    figure = build_gap_figure(block)
    if figure is None:
        return message_figure("no trial logged the parts of the validation gap",
                              title=QUESTION)
    return to_png(figure)


def build_gap_figure(block: Mapping[str, Any] | None) -> Figure | None:
    """One panel per group (or the study), each epoch's parts stacked; ``None`` when no epoch
    has any trial."""
    panels = _panels(block)
    if not panels:
        return None
    cols = 2 if len(panels) == 4 else min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    # One panel gets the width of two: the legend below it needs the room.
    width = max(4.6 * cols + 0.9, 8.4)
    fig = Figure()
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    handles: dict[str, Any] = {}
    for ax, (label, panel) in zip(axes, panels, strict=False):
        off_scale = _panel(ax, panel, handles)
        ax.set_title(_title(label, panel, off_scale=off_scale), fontsize=9.5)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax in axes[::cols]:
        ax.set_ylabel("loss (nats)")
    order = _legend_order((block or {}).get("level", 0.95))
    ordered = [handles[k] for k in order if k in handles]
    ncols = max(1, min(4, len(ordered), int((width - 0.5) / 2.7)))  # ~2.7 in per entry
    bottom = 0.6 + 0.22 * math.ceil(len(ordered) / ncols)  # inches: x label, then legend
    titled = panels[0][0] is not None  # a group's label: a two-line panel title
    top = 1.05 if titled else 0.85
    gap = 1.15 if titled else 0.85  # inches between rows: the x label, then the next title
    height = rows * _PANEL_HEIGHT + (rows - 1) * gap + top + bottom
    fig.set_size_inches(width, height)
    fig.subplots_adjust(left=0.9 / width, right=1 - 0.2 / width, top=1 - top / height,
                        bottom=bottom / height, hspace=gap / _PANEL_HEIGHT, wspace=0.3)
    fig.legend(handles=ordered, loc="lower center", ncols=ncols, frameon=False, fontsize=8.5)
    shown = f" ({len(panels)} of {_n_groups(block)} settings)" if _n_groups(block) > len(
        panels) else ""
    fig.suptitle(f"{(block or {}).get('question') or QUESTION}{shown}", fontsize=12)
    return fig


def _legend_order(level: float) -> list[str]:
    return [*PART_LABELS.values(), _GAP_LABEL.format(level=level),
            *(label for _, label, _ in _LINES), _CLOSES]


def _panels(block: Mapping[str, Any] | None) -> list[tuple[str | None, Mapping[str, Any]]]:
    if not block:
        return []
    groups = block.get("groups") or {}
    found = [(str(k), g) for k, g in groups.items() if g.get("epochs")]
    if not groups and block.get("epochs"):
        found = [(None, block)]
    return found[:MAX_PANELS]


def _n_groups(block: Mapping[str, Any] | None) -> int:
    return sum(1 for g in ((block or {}).get("groups") or {}).values() if g.get("epochs"))


def _parts(panel: Mapping[str, Any]) -> list[str]:
    """The parts to stack: mode's split in its place where every epoch has one."""
    epochs = panel["epochs"]
    split = [k for k in ("mode_batchnorm", "mode_dropout") if all(k in e for e in epochs)]
    return ["timing", *(split or ["mode"]), "generalization"]


def _panel(ax: Any, panel: Mapping[str, Any], handles: dict[str, Any]) -> bool:
    """Draw ``panel`` on ``ax``; whether its losses were left out, off its scale."""
    epochs = panel["epochs"]
    x = np.array([e["epoch"] for e in epochs], dtype=float)
    up, down = np.zeros(len(x)), np.zeros(len(x))
    for part in _parts(panel):
        value = np.array([(e.get(part) or {}).get("estimate", np.nan) for e in epochs], float)
        value = np.nan_to_num(value)
        base = np.where(value >= 0, up, down)
        bars = ax.bar(x, value, bottom=base, width=0.62, color=_COLORS[part],
                      label=PART_LABELS[part], edgecolor="white", linewidth=0.5)
        handles.setdefault(PART_LABELS[part], bars)
        up, down = up + np.clip(value, 0, None), down + np.clip(value, None, 0)
    gap = np.array([e["gap"]["estimate"] for e in epochs], dtype=float)
    lo, hi = (np.array([np.nan if b is None else b for b in bounds], dtype=float)
              for bounds in zip(*(e["gap"]["ci95"] for e in epochs), strict=True))
    error = np.vstack([np.nan_to_num(gap - lo), np.nan_to_num(hi - gap)])
    marks = ax.errorbar(x, gap, yerr=error, fmt="D", color="black", ms=4.5, capsize=3,
                        elinewidth=1, label=_GAP_LABEL.format(level=panel.get("level", 0.95)),
                        zorder=5)
    handles.setdefault(marks.get_label(), marks)
    losses = {key: [e[key]["estimate"] for e in epochs] for key, _, _ in _LINES}
    # Losses of 2.3 nats would flatten a gap of 0.02 and its parts to the zero line (and on an
    # axis of their own their noise would look like a trend): the title gives their level.
    off_scale = _dwarfed(losses, np.concatenate([up, down, lo, hi]))
    for key, label, style in ([] if off_scale else _LINES):
        line = ax.plot(x, losses[key], color="0.15", ls=style,
                       marker="o", ms=3.5, lw=1.5, label=label, zorder=4)[0]
        handles.setdefault(label, line)
    ax.axhline(0.0, color="0.3", lw=0.8)
    closing = closing_of(panel)
    if closing.kind == "closed":
        mark = ax.axvline(closing.epoch, color="0.25", ls=":", lw=1.5, label=_CLOSES, zorder=1)
        handles.setdefault(_CLOSES, mark)
    ax.set_xlim(x.min() - 0.6, x.max() + 0.6)
    # A locator asked for integers falls back to fractions where the range holds one or two.
    if len(x) <= 12:
        ax.set_xticks(x, [f"{v:g}" for v in x])
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.grid(True, axis="y", alpha=0.3)
    return off_scale


def _dwarfed(losses: Mapping[str, list[float]], gap_values: np.ndarray) -> bool:
    """Whether the losses reach ten times further from zero than the gap, its interval and
    its stacked parts: drawn on one axis with them, those would be a flat line."""
    finite = gap_values[np.isfinite(gap_values)]
    reach = float(np.max(np.abs(finite))) if finite.size else 0.0
    loss = max((abs(v) for values in losses.values() for v in values
                if v is not None and np.isfinite(v)), default=0.0)
    return loss > 10 * reach


def _title(label: str | None, panel: Mapping[str, Any], *, off_scale: bool = False) -> str:
    """``normalization-statistics (4 trials; lag closes at epoch 3)``; a setting's panel:
    ``adam, bn 0.01: normalization-statistics (4 trials)`` over ``lag closes at epoch 3``
    (two lines that fit a panel's width)."""
    code = (panel.get("verdict") or {}).get("code", "inconclusive")
    when = closing_words(closing_of(panel))  # the words of the table and the one-line summaries
    n = panel.get("n_trials", 0)
    if off_scale:  # the losses' level, where the lines were left out
        last = panel["epochs"][-1]
        when = f"{when}; losses about {last['train_data_loss']['estimate']:.2g}, off scale"
    trials = f"{n} trial{'s' * (n != 1)}"
    return f"{label}: {code} ({trials})\n{when}" if label else f"{code} ({trials}; {when})"
