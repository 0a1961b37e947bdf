"""The report's figures, as PNG bytes.

Drawn on :class:`matplotlib.figure.Figure` objects with the Agg renderer, so no pyplot (global)
state is touched and any thread or process may call them. Each figure is about 100 dpi and a
few tens of kilobytes; 10,000 trials render in well under a second per figure (the curve plot
draws at most ``max_trials`` trials).
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from study.report._format import is_missing, numeric, text

__all__ = ["DPI", "build_curves_figure", "build_importance_figure", "curves_figure",
           "importance_figure", "importance_gap", "message_figure", "to_png"]

DPI = 100
_EVALUATOR_ORDER = ("fanova", "ped-anova", "mdi")
_EVALUATOR_COLORS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860")
_TARGET_ORDER = ("objective", "early_loss")


def build_curves_figure(table: pd.DataFrame | None, *,
                        max_trials: int = 30) -> Figure | None:
    """Training loss per epoch (total solid, data dashed), coloured by log10 parameter count;
    each curve starts at epoch 0 with the loss at initialization where the trial measured it
    (the question is where training starts).

    At most ``max_trials`` trials with a curve are drawn, evenly spread over parameter count;
    ``None`` when no trial has a curve.
    """
    frame = _frame(table)
    if "curve" not in frame.columns:
        return None
    n_params = numeric(frame, "n_params")
    start = np.column_stack([numeric(frame, "init_loss"), numeric(frame, "init_data_loss")])
    entries: list[tuple[float, np.ndarray, int]] = []  # (count, curve, its first epoch)
    for count, curve, init in zip(n_params, frame["curve"], start, strict=True):
        values = _curve(curve)
        if values is None:
            continue
        first = 1
        if np.all(np.isfinite(init)):
            values, first = np.vstack([init, values]), 0
        entries.append((float(count) if count > 0 else math.nan, values, first))
    if not entries:
        return None
    entries.sort(key=lambda e: (math.isnan(e[0]), e[0]))
    total = len(entries)
    if total > max(1, max_trials):
        picks = np.unique(np.round(np.linspace(0, total - 1, max(1, max_trials))).astype(int))
        entries = [entries[i] for i in picks]
    logs = np.log10([e[0] for e in entries])
    finite = logs[np.isfinite(logs)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    norm, cmap = Normalize(lo, hi), colormaps["viridis"]

    fig = Figure(figsize=(9, 4.8))
    _margins(fig, left=0.75, right=0.7, top=0.45, bottom=0.85)
    ax = fig.subplots()
    for log_count, (_, curve, first) in zip(logs, entries, strict=True):
        color = cmap(norm(log_count)) if np.isfinite(log_count) else "0.6"
        epochs = np.arange(first, first + len(curve))
        marker = "o" if len(curve) == 1 else None
        ax.plot(epochs, curve[:, 0], color=color, lw=1.4, alpha=0.85, marker=marker)
        ax.plot(epochs, curve[:, 1], color=color, lw=1.1, alpha=0.85, ls="--", marker=marker)
    ys = np.concatenate([curve.ravel() for _, curve, _ in entries])
    ys = ys[np.isfinite(ys)]
    if ys.size and ys.min() > 0 and ys.max() / ys.min() > 30:
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    first = min(f for _, _, f in entries)
    ax.set_xlim(first - 0.5, max(f + len(c) - 1 for _, c, f in entries) + 0.5)
    ax.set_xlabel("epoch (0: the loss at initialization)" if first == 0 else "epoch")
    ax.set_ylabel("training loss (epoch mean)")
    ax.grid(True, alpha=0.3)
    # Below the axis label: never over a curve.
    ax.legend(handles=[Line2D([], [], color="0.2", lw=1.4, label="total (optimized)"),
                       Line2D([], [], color="0.2", lw=1.1, ls="--", label="data loss")],
              loc="upper center", bbox_to_anchor=(0.5, -0.13), ncols=2, fontsize=9,
              frameon=False)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="log10(parameters)",
                 fraction=0.05, pad=0.02)
    shown_text = f"{len(entries)} of {total:,}" if len(entries) < total else f"all {total}"
    ax.set_title(f"Training loss curves ({shown_text} trials with curves, spread over size)",
                 fontsize=11)
    return fig


def curves_figure(table: pd.DataFrame | None, *, max_trials: int = 30) -> bytes:
    """:func:`build_curves_figure` as PNG bytes (a message when there is nothing to draw)."""
    fig = build_curves_figure(table, max_trials=max_trials)
    if fig is None:
        return message_figure("no training curves available", title="Training curves")
    return to_png(fig)


def importance_gap(importance: pd.DataFrame | None) -> str | None:
    """Why no importance can be drawn (the evaluators' own reasons), or ``None``."""
    frame = _frame(importance)
    if frame.empty or not {"target", "evaluator", "param", "importance"} <= set(frame.columns):
        return "no importance available"
    if np.isfinite(numeric(frame, "importance")).any():
        return None
    reasons = frame["error"].dropna().map(text).unique() if "error" in frame else []
    why = "; ".join(reasons[:3]) if len(reasons) else "every evaluator failed"
    return f"no importance available: {why}"


def build_importance_figure(importance: pd.DataFrame | None, *,
                            objective: str | None = None) -> Figure | None:
    """Hyperparameter importance with bootstrap 95% intervals, one panel per target.

    Bars are grouped by evaluator (legend names the evaluator and its seeds); derived
    parameters (``n_params``, a function of the searched width) are hatched and labelled.
    ``objective`` names the target ``objective`` (e.g. ``val_loss``). A panel whose intervals
    all overlap says that no ranking can be read from it.
    """
    if importance_gap(importance) is not None:
        return None
    frame = _frame(importance)
    frame = frame.assign(_value=numeric(frame, "importance"), _lo=numeric(frame, "ci_lo"),
                         _hi=numeric(frame, "ci_hi"),
                         target=frame["target"].map(text), evaluator=frame["evaluator"].map(text),
                         param=frame["param"].map(text))
    targets = _ordered(frame["target"], _TARGET_ORDER)
    evaluators = _ordered(frame["evaluator"], _EVALUATOR_ORDER)
    colors = {ev: _EVALUATOR_COLORS[i % len(_EVALUATOR_COLORS)] for i, ev in enumerate(evaluators)}
    n_rows = max(frame[frame["target"] == t]["param"].nunique() for t in targets)
    group = 0.17 * len(evaluators) + 0.2
    fig = Figure()
    axes = fig.subplots(1, len(targets), squeeze=False)[0]
    labels: dict[tuple[str, str], str] = {}  # (target, evaluator) -> legend label
    any_derived = False
    for ax, target in zip(axes, targets, strict=True):
        any_derived |= _importance_panel(ax, frame[frame["target"] == target], evaluators,
                                         colors, labels, objective=objective)
    # one legend; an evaluator with the same seeds on every panel gets one entry
    handles: list[Any] = []
    for ev in evaluators:
        texts = {t: label for (t, e), label in labels.items() if e == ev}
        if len(set(texts.values())) == 1:
            handles.append(Patch(color=colors[ev], label=next(iter(texts.values()))))
        else:
            # An evaluator that ran on no trial of a target draws no bar there: a hollow
            # swatch, not the colour of bars that are not in that panel.
            handles += [Patch(facecolor="white" if "not computed" in label else colors[ev],
                              edgecolor=colors[ev], label=f"{t}: {label}")
                        for t, label in texts.items()]
    if any_derived:
        handles.append(Patch(facecolor="white", edgecolor="0.3", hatch="///",
                             label="derived from width (not searched)"))
        handles.append(Patch(facecolor="none", edgecolor="none",
                             label="n_params: its own pass, in place of width (not in the sum)"))
    ncols = 1 if len(targets) == 1 or len(handles) < 4 else 2
    bottom = 0.75 + 0.22 * math.ceil(len(handles) / ncols)
    top = 0.85 if any("\n" in ax.get_title() for ax in axes) else 0.6  # a two-line title
    fig.set_size_inches(5.6 * len(targets) + 0.8, top + group * n_rows + bottom)
    _margins(fig, left=1.25, right=0.25, top=top, bottom=bottom, wspace=0.45)
    fig.legend(handles=handles, loc="lower center", frameon=False, fontsize=9, ncols=ncols)
    fig.suptitle("Hyperparameter importance (bootstrap 95% intervals)", fontsize=12)
    return fig


def importance_figure(importance: pd.DataFrame | None, *, objective: str | None = None) -> bytes:
    """:func:`build_importance_figure` as PNG bytes (the reason when there is none)."""
    fig = build_importance_figure(importance, objective=objective)
    if fig is None:
        return message_figure(str(importance_gap(importance)), title="Hyperparameter importance")
    return to_png(fig)


def message_figure(message: str, *, title: str | None = None) -> bytes:
    """A small figure that only says ``message`` (for absent inputs)."""
    fig = Figure(figsize=(6 if len(message) < 70 else 9, 1.6))
    fig.text(0.5, 0.42, message, ha="center", va="center", fontsize=12, color="0.3", wrap=True)
    if title:
        fig.text(0.5, 0.85, title, ha="center", va="center", fontsize=12)
    return to_png(fig)


# -- internals --------------------------------------------------------------------------------
def to_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (no timestamp or software in its metadata)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _margins(fig: Figure, *, left: float, right: float, top: float, bottom: float,
             wspace: float = 0.2) -> None:
    """Fixed margins in inches (faster than constrained layout, which draws twice)."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=left / width, right=1 - right / width, top=1 - top / height,
                        bottom=bottom / height, wspace=wspace)


def _frame(frame: Any) -> pd.DataFrame:
    return frame if isinstance(frame, pd.DataFrame) else pd.DataFrame()


def _curve(value: Any) -> np.ndarray | None:
    """A per-epoch curve as an (epochs, 2) float array [total, data]; None when absent."""
    if value is None or (not isinstance(value, (list, tuple, np.ndarray, str))
                         and is_missing(value)):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    rows = []
    try:
        for row in value:
            if isinstance(row, Mapping):
                items = [row.get("loss"), row.get("data_loss")]
            else:
                items = list(row) if isinstance(row, (list, tuple, np.ndarray)) else [row]
            first = [float(v) if not is_missing(v) else math.nan for v in items[:2]]
            rows.append([*first, math.nan, math.nan][:2])
    except (TypeError, ValueError):
        return None
    if not rows:
        return None
    array = np.asarray(rows, dtype=float)
    return array if np.isfinite(array[:, 0]).any() else None


def _ordered(values: pd.Series, preferred: tuple[str, ...]) -> list[str]:
    present = list(dict.fromkeys(v for v in values if v))
    return [v for v in preferred if v in present] + [v for v in present if v not in preferred]


def _seed_label(rows: pd.DataFrame, evaluator: str) -> str:
    def seeds(column: str) -> str:
        if column not in rows.columns:
            return "?"
        found = sorted({str(int(v)) for v in rows[column] if not is_missing(v)})
        return ",".join(found) if found else ""

    seed = seeds("evaluator_seed")
    # An evaluator without a seed (PED-ANOVA) is deterministic: nothing to seed.
    label = f"{evaluator} ({f'seed {seed}' if seed else 'deterministic'}"
    if "n_bootstrap" in rows.columns:
        label += f"; {seeds('n_bootstrap') or 0} bootstrap resamples, seed "
        label += seeds("bootstrap_seed") or "?"
    label += ")"
    if not np.isfinite(rows["_value"]).any():
        errors = [str(e) for e in rows.get("error", []) if not is_missing(e)]
        label += f": not computed ({_short_reason(errors[0])})" if errors else ": not computed"
    return label


def _short_reason(error: str) -> str:
    """``5 usable trials, needs 10`` for the importance table's longer reason (a legend line
    wider than the figure is cut off); other reasons up to 48 characters."""
    found = re.fullmatch(r"(\d+) usable trials for .+?, .+? needs at least (\d+)", error)
    if found:
        return f"{found[1]} usable trials, needs {found[2]}"
    return error if len(error) <= 48 else error[:47] + "…"


def _importance_panel(ax: Any, rows: pd.DataFrame, evaluators: list[str],
                      colors: dict[str, str], labels: dict[tuple[str, str], str], *,
                      objective: str | None = None) -> bool:
    """One target's grouped horizontal bars; returns whether a derived param was drawn.

    Records the legend label of each (target, evaluator) in ``labels``.
    """
    target = rows["target"].iloc[0]
    whole = rows  # an evaluator that could not run has one row without a param: legend only
    named = [not is_missing(p) and str(p) != "" for p in rows["param"]]
    rows = rows[named] if any(named) else rows
    flags = rows["derived"] if "derived" in rows.columns else [False] * len(rows)
    derived = {p for p, d in zip(rows["param"], flags, strict=True)
               if not is_missing(d) and bool(d)}
    means = rows.groupby("param")["_value"].mean()
    params = sorted(means.index, key=lambda p: (p in derived, -np.nan_to_num(means[p], nan=-1)))
    params = params[::-1]  # most important at the top, derived at the bottom
    position = {p: i for i, p in enumerate(params)}
    present = [ev for ev in evaluators if (whole["evaluator"] == ev).any()]
    height = 0.8 / max(1, len(present))
    top = float(np.nanmax(np.r_[rows["_hi"].to_numpy(float), rows["_value"].to_numpy(float),
                                0.05]))
    for j, ev in enumerate(present):
        sub = rows[rows["evaluator"] == ev].drop_duplicates("param").set_index("param")
        if sub.empty:
            labels[(target, ev)] = _seed_label(whole[whole["evaluator"] == ev], ev)
            continue
        offset = ((len(present) - 1) / 2 - j) * height
        value = sub["_value"].to_numpy(dtype=float)
        err = np.vstack([np.clip(np.nan_to_num(value - sub["_lo"].to_numpy(float)), 0, None),
                         np.clip(np.nan_to_num(sub["_hi"].to_numpy(float) - value), 0, None)])
        ys = np.array([position[p] for p in sub.index]) + offset
        hatched = np.array([p in derived for p in sub.index])
        bars = ax.barh(ys, np.nan_to_num(value), height=height * 0.92, color=colors[ev],
                       xerr=err, error_kw={"elinewidth": 1, "capsize": 2, "ecolor": "0.2"})
        for bar, flag in zip(bars, hatched, strict=True):
            if flag:
                bar.set_hatch("///")
                bar.set_edgecolor("0.25")
        for y, v in zip(ys, value, strict=True):
            if not np.isfinite(v):
                ax.text(0.01 * top, y, "not computed (see legend)", va="center", fontsize=7,
                        color="0.35")
        labels[(target, ev)] = _seed_label(sub.reset_index(), ev)
    ax.set_yticks(range(len(params)),
                  [f"{p}\n(derived)" if p in derived else p for p in params], fontsize=9)
    ax.set_ylim(-0.6, len(params) - 0.4)
    ax.set_xlim(0, top * 1.05)
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_xlabel("importance (the searched parameters sum to 1)")
    n_trials = sorted({str(int(v)) for v in rows.get("n_trials", []) if not is_missing(v)})
    name = f"{objective} (the objective)" if target == "objective" and objective else target
    title = f"target: {name}" + (f" (n = {', '.join(n_trials)} trials)" if n_trials else "")
    if _no_ranking(rows[~rows["param"].isin(derived)]):
        title += "\nintervals overlap: no ranking can be read"
    ax.set_title(title, fontsize=11)
    return bool(derived)


def _no_ranking(rows: pd.DataFrame) -> bool:
    """Whether, for every evaluator, all parameters' 95% intervals share a common value (any
    order of the bars is then as likely as the one drawn)."""
    found = False
    for _, sub in rows.groupby("evaluator"):
        lo, hi = sub["_lo"].to_numpy(float), sub["_hi"].to_numpy(float)
        ok = np.isfinite(lo) & np.isfinite(hi)
        if ok.sum() < 2:
            continue
        if np.max(lo[ok]) >= np.min(hi[ok]):
            return False
        found = True
    return found
