"""The two figures of the answer, drawn from ``analysis.json`` alone.

- :func:`size_effect_figure`: the loss at initialization (top row) and over the early window
  (bottom row) against parameter count, split into total, data and L2 penalty; one curve per
  group of trials (a penalty mode at a weight decay level) through its own trials, which are
  adjusted to the reference lr and batch size.
- :func:`threshold_figure`: the size effect of each part against weight decay, with the
  threshold at which the total's turns positive and its 95% interval.

``build_*`` return the :class:`~matplotlib.figure.Figure` (tests read its axes, lines and
labels); the plain names return PNG bytes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullLocator

from study.report.figures import message_figure, to_png

__all__ = ["build_size_effect_figure", "build_threshold_figure", "size_effect_figure",
           "threshold_figure"]

_PARTS = (("total", "Total loss (what is reported)"), ("data", "Data loss"),
          ("penalty", "L2 penalty in the loss"))
_MODE_COLORS = {"none": "0.45", "coupled": "tab:blue", "decoupled": "tab:green"}
_ROW_LABELS = {"init": "at initialization", "early": "over the early window"}


def size_effect_figure(analysis: Mapping[str, Any] | None) -> bytes:
    """PNG of :func:`build_size_effect_figure`."""
    figure = build_size_effect_figure(analysis)
    return to_png(figure) if figure is not None else message_figure(
        "no size effect could be estimated yet", title="Loss against parameter count")


def threshold_figure(analysis: Mapping[str, Any] | None) -> bytes:
    """PNG of :func:`build_threshold_figure`."""
    figure = build_threshold_figure(analysis)
    return to_png(figure) if figure is not None else message_figure(
        "no l2-in-loss trials: no weight decay makes the reported loss rise",
        title="Size effect against weight decay")


def build_size_effect_figure(analysis: Mapping[str, Any] | None) -> Figure | None:
    """Two rows (initialization, early window) of three panels (total, data, penalty)."""
    blocks = _questions(analysis)
    if not any(b.get("curves") for b in blocks.values()):
        return None
    fig = Figure(figsize=(12.8, 8.4))
    fig.subplots_adjust(left=0.07, right=0.985, top=0.9, bottom=0.17, hspace=0.62, wspace=0.26)
    axes = fig.subplots(2, 3)
    handles: dict[str, Any] = {}
    for row, question in enumerate(("init", "early")):
        block = blocks.get(question) or {}
        for col, (part, title) in enumerate(_PARTS):
            ax = axes[row, col]
            _size_panel(ax, block, part, handles)
            effect = (block.get("decomposition") or {}).get(f"width_effect_{part}")
            ax.set_title(f"{title}, {_row_label(question, analysis)}\n{_effect_text(effect)}",
                         fontsize=9.5)
        axes[row, 0].set_ylabel("loss (nats)")
    ref = (blocks.get("early") or {}).get("reference") or {}
    note = "Points: trials, adjusted to " + _settings(ref) + " and their group's weight decay."
    fig.legend(handles=list(handles.values()), loc="lower center", ncols=min(4, len(handles)),
               frameon=False, fontsize=9, bbox_to_anchor=(0.5, 0.035))
    fig.text(0.5, 0.008, note, ha="center", fontsize=8.5, color="0.3")
    fig.suptitle("Loss against parameter count: total = data + L2 penalty, per group of trials",
                 fontsize=12)
    _place_log_ticks(fig)
    return fig


def build_threshold_figure(analysis: Mapping[str, Any] | None) -> Figure | None:
    """Per question, the size effect of each part against weight decay and the threshold."""
    blocks = _questions(analysis)
    if not any(b.get("effect_curve") for b in blocks.values()):
        return None
    fig = Figure(figsize=(12.8, 4.9))
    fig.subplots_adjust(left=0.075, right=0.985, top=0.84, bottom=0.27, wspace=0.22)
    axes = fig.subplots(1, 2)
    spans = [(min(c["weight_decay"]), max(c["weight_decay"])) for b in blocks.values()
             if (c := b.get("effect_curve")) and c.get("weight_decay")]
    shared = (min(lo for lo, _ in spans), max(hi for _, hi in spans))
    for ax, question in zip(axes, ("init", "early"), strict=True):
        block = blocks.get(question) or {}
        note = _threshold_panel(ax, block, shared)
        ax.set_title(f"Size effect {_row_label(question, analysis)}"
                     + (f"\n{note}" if note else ""), fontsize=10.5)
    axes[0].set_ylabel("change per decade of parameters")
    handles = [Line2D([], [], color="black", lw=2, label="total, with 95% CI"),
               Line2D([], [], color="black", marker="o", ls="none",
                      label="total at a studied weight decay (95% CI)"),
               Line2D([], [], color="tab:blue", ls="--", label="data part"),
               Line2D([], [], color="tab:red", ls=":", lw=2, label="L2 penalty part"),
               Line2D([], [], color="0.5", lw=6, alpha=0.15, label="weight decays studied")]
    if any((b.get("threshold") or {}).get("estimate") and b.get("effect_curve")
           for b in blocks.values()):
        handles.insert(3, Line2D([], [], color="tab:green", lw=6, alpha=0.3,
                                 label="threshold: total turns positive (95% CI)"))
    fig.legend(handles=handles, loc="lower center", ncols=3, frameon=False, fontsize=9)
    fig.suptitle("At which weight decay do bigger models start higher? (l2-in-loss)",
                 fontsize=12)
    _place_log_ticks(fig)
    return fig


# -- panels -----------------------------------------------------------------------------------
def _size_panel(ax: Any, block: Mapping[str, Any], part: str, handles: dict[str, Any]) -> None:
    curves = block.get("curves") or {}
    groups = curves.get("groups") or []
    points = curves.get("points") or {}
    _log_x(ax)
    ax.set_xlabel("parameters")
    ax.grid(True, which="major", alpha=0.3)
    if not groups:
        _empty(ax, _too_few(block))
        return
    colors = _group_colors(groups)
    member = np.asarray(points.get("group", []), dtype=float)
    xs = np.asarray(points.get("n_params", []), dtype=float)
    ys = np.asarray(points.get(part, []), dtype=float)
    for g, group in enumerate(groups):
        mask = (member == g) & np.isfinite(ys) & (xs > 0)
        color = colors[g]
        if mask.any():
            ax.scatter(xs[mask], ys[mask], s=16, color=color, alpha=0.7, linewidths=0)
        line = ax.plot(group["n_params"], group[part], color=color, lw=2,
                       label=group["label"])[0]
        handles.setdefault(group["label"], line)
    if part == "penalty":
        ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))


def _threshold_panel(ax: Any, block: Mapping[str, Any], xlim: tuple[float, float]
                     ) -> str | None:
    """Draw one question's panel; returns a note for its title (no threshold found)."""
    curve = block.get("effect_curve")
    _log_x(ax)
    ax.set_xlabel("weight decay")
    ax.grid(True, which="major", alpha=0.3)
    if not curve:
        reason = (block.get("threshold") or {}).get("reason")
        _empty(ax, reason.split(":")[0] if reason else _too_few(block))
        return None
    note = None
    wd = np.asarray(curve["weight_decay"], dtype=float)
    total = curve["total"]
    ax.fill_between(wd, total["lo"], total["hi"], color="black", alpha=0.12, linewidth=0)
    ax.plot(wd, total["estimate"], color="black", lw=2, label="total")
    ax.plot(wd, curve["data"]["estimate"], color="tab:blue", ls="--", label="data part")
    ax.plot(wd, curve["penalty"]["estimate"], color="tab:red", ls=":", lw=2,
            label="L2 penalty part")
    ax.axhline(0.0, color="0.2", lw=0.8)
    found = block.get("threshold") or {}
    studied = found.get("studied_range")
    if studied and studied[0] is not None:
        lo, hi = studied
        if hi > lo:
            ax.axvspan(lo, hi, color="0.5", alpha=0.12, lw=0)
        else:
            ax.axvline(lo, color="0.5", lw=4, alpha=0.3)
    measured = _measured(block)
    if measured.size:
        ax.errorbar(measured[:, 0], measured[:, 1],
                    yerr=[measured[:, 1] - measured[:, 2], measured[:, 3] - measured[:, 1]],
                    fmt="o", color="black", ms=5, capsize=3, zorder=5)
    ax.set_xlim(*xlim)
    ax.set_ylim(*_focus(curve, found, measured))
    if not found.get("estimate") and found.get("status") in ("always", "never"):
        verb = "always rises" if found["status"] == "always" else "never rises"
        note = f"no threshold in the studied range: the total {verb} there"
    if found.get("estimate"):
        estimate = found["estimate"]
        lo, hi = found.get("ci95") or (None, None)
        if lo is None and hi is None:  # any weight decay shown is as likely: no band
            ax.axvline(estimate, color="tab:green", lw=1.5, ls="--")
            label = f"threshold {estimate:.1e} (95% CI open)"
        else:
            ax.axvspan(lo or wd[0], hi or wd[-1], color="tab:green", alpha=0.18, lw=0)
            ax.axvline(estimate, color="tab:green", lw=1.5)
            label = f"threshold {estimate:.1e}"
        right = np.log10(estimate) > np.mean(np.log10([wd[0], wd[-1]]))
        ax.annotate(label, (estimate, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(-4 if right else 4, -14), textcoords="offset points",
                    ha="right" if right else "left", fontsize=9, color="tab:green", zorder=10,
                    # Readable where the curves pass behind it (found by a first user).
                    bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none", "pad": 1})
    return note


# -- helpers ----------------------------------------------------------------------------------
def _too_few(block: Mapping[str, Any]) -> str:
    n = int(block.get("n_trials_used") or 0)
    return f"{n} usable trial{'s' * (n != 1)}: too few to fit" if n else "no usable trials"


def _empty(ax: Any, text: str) -> None:
    """A panel with nothing to draw says why, on bare axes (no made-up scale)."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("")
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4",
            wrap=True)
def _measured(block: Mapping[str, Any]) -> np.ndarray:
    """``[weight decay, total, lo, hi]`` at each studied weight decay the analysis named."""
    rows = []
    for row in block.get("by_weight_decay") or []:
        total = row.get("total") if isinstance(row, Mapping) else None
        if isinstance(total, Mapping) and total.get("estimate") is not None:
            lo, hi = total.get("ci95") or (None, None)
            if lo is not None and hi is not None:
                rows.append([row["weight_decay"], total["estimate"], lo, hi])
    return np.asarray(rows, dtype=float).reshape(-1, 4)


def _focus(curve: Mapping[str, Any], found: Mapping[str, Any],
           measured: np.ndarray) -> tuple[float, float]:
    """Y limits that hold zero, every measured point with its interval, and the total's band
    and the data part where the answer lies (the studied weight decays and the threshold's
    interval); the penalty part, growing with weight decay, may leave the top beyond them."""
    wd = np.asarray(curve["weight_decay"], dtype=float)
    marks = [v for v in (*(found.get("studied_range") or ()), found.get("estimate"),
                         *(found.get("ci95") or ())) if v]
    inside = (wd >= min(marks) / 1.5) & (wd <= max(marks) * 1.5) if marks else \
        np.ones(len(wd), dtype=bool)
    if not inside.any():
        inside[:] = True
    values = [np.zeros(1), measured[:, 2:].ravel()]
    values += [np.asarray(curve[part][key], dtype=float)[inside]
               for part, key in (("total", "lo"), ("total", "hi"), ("data", "estimate"))]
    ys = np.concatenate(values)
    ys = ys[np.isfinite(ys)]
    lo, hi = float(ys.min()), float(ys.max())
    pad = 0.08 * max(hi - lo, 1e-6)
    return lo - pad, hi + pad



def _questions(analysis: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    analysis = analysis if isinstance(analysis, Mapping) else {}
    init = analysis.get("init") if isinstance(analysis.get("init"), Mapping) else {}
    return {"init": init, "early": analysis}


def _row_label(question: str, analysis: Mapping[str, Any] | None) -> str:
    if question == "init":
        return _ROW_LABELS["init"]
    epochs = (analysis or {}).get("early_epochs")
    if isinstance(epochs, int) and not isinstance(epochs, bool):
        return "over the first epoch" if epochs == 1 else f"over the first {epochs} epochs"
    return _ROW_LABELS["early"]


def _effect_text(effect: Any) -> str:
    if not isinstance(effect, Mapping) or effect.get("estimate") is None:
        return "no size effect estimated"
    lo, hi = effect.get("ci95") or (math.nan, math.nan)
    return (f"{effect['estimate']:+.3g} per decade (95% CI {lo:+.3g} to {hi:+.3g})")


def _settings(ref: Mapping[str, Any]) -> str:
    bits = []
    if ref.get("lr") is not None:
        bits.append(f"lr {ref['lr']:.1e}")
    if ref.get("batch_size") is not None:
        bits.append(f"batch size {ref['batch_size']:.3g}")
    return " and ".join(bits) or "the reference settings"


def _group_colors(groups: list[Mapping[str, Any]]) -> list[Any]:
    """A red ramp over the l2-in-loss levels (darker = more decay), fixed colours elsewhere."""
    l2 = [g for g in groups if g.get("penalty_mode") == "l2-in-loss"]
    ramp = colormaps["Reds"]
    shades = {id(g): ramp(0.45 + 0.5 * i / max(len(l2) - 1, 1)) for i, g in enumerate(l2)}
    spare = iter(("tab:purple", "tab:brown", "tab:olive", "tab:cyan"))
    return [shades.get(id(g)) or _MODE_COLORS.get(str(g.get("penalty_mode"))) or next(spare)
            for g in groups]


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
# Ticks at 1, 2 and 5 times powers of ten when fewer than two powers of ten are in view.
_SUBS = ((1,), (1, 2, 5), (1, 1.5, 2, 3, 5, 7))
_MAX_TICKS = 7


def _tick_label(value: float, _position: int = 0) -> str:
    """``10³`` or ``2×10³``: plain text (no mathtext to parse), exact at the chosen ticks."""
    if value <= 0:
        return ""
    exponent = math.floor(math.log10(value) + 1e-9)
    mantissa = round(value / 10**exponent, 2)
    power = f"10{str(exponent).translate(_SUPERSCRIPT)}"
    return power if mantissa == 1 else f"{mantissa:g}×{power}"


def log_ticks(lo: float, hi: float) -> list[float]:
    """At most seven ticks in ``[lo, hi]``: powers of ten when two or more are in view, else
    1-2-5 multiples of them (a finer set for under half a decade)."""
    if not (0 < lo < hi and math.isfinite(hi)):
        return []
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    ticks: list[float] = []
    for subs in _SUBS:
        ticks = [m * 10.0**e for e in range(first, last + 1) for m in subs
                 if lo * (1 - 1e-9) <= m * 10.0**e <= hi * (1 + 1e-9)]
        if len(ticks) >= 2:
            break
    return ticks[:: math.ceil(len(ticks) / _MAX_TICKS)] if ticks else ticks


def _log_x(ax: Any) -> None:
    """A log x axis without minor ticks (they cost more to draw than they tell); its ticks are
    placed by :func:`_place_log_ticks` once the limits are known."""
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(_tick_label))


def _place_log_ticks(fig: Figure) -> None:
    for ax in fig.axes:
        if ax.get_xscale() == "log" and ax.get_xticks().size:
            ax.set_xticks(log_ticks(*ax.get_xlim()))
            ax.xaxis.set_minor_locator(NullLocator())
