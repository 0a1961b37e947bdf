"""What the report draws, computed where the models are: fitted curves of each part against
parameter count per group of trials, the trials adjusted onto them, and the size effect
against weight decay.

A group is one penalty mode at one weight decay: ``l2-in-loss`` trials are split into up to
:data:`WEIGHT_DECAY_LEVELS` levels of weight decay (equal counts, on the log scale), each drawn
at its geometric median; every other mode is one group. Each trial is adjusted to the reference
lr and batch size and to its group's weight decay -- its data loss by the fitted difference
between the two settings, its ``||w||^2`` likewise, its penalty as weight decay times that --
so the points of a group scatter around its own curve.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from study.analysis.sizeeffect import L2, RESPONSES, SizeModel, controls_at, design_rows
from study.analysis.table import numeric

__all__ = ["CURVE_POINTS", "MAX_POINTS", "WEIGHT_DECAY_LEVELS", "effect_curve", "size_curves"]

WEIGHT_DECAY_LEVELS = 3
CURVE_POINTS = 25
# Trials drawn per question (a fixed random subset of larger studies): a figure of more says
# no more, and analysis.json stays small.
MAX_POINTS = 2000
_EFFECT_POINTS_PER_DECADE = 10


def size_curves(model: SizeModel, usable: pd.DataFrame) -> dict[str, Any]:
    """``{"groups": [...], "points": {...}}`` for the size-effect figure of one question."""
    modes = usable["penalty_mode"].astype(str).to_numpy()
    decay = numeric(usable["weight_decay"])
    group = np.full(len(usable), -1)
    groups: list[dict[str, Any]] = []
    for mode in model.modes:
        if not model.data[mode].usable:  # too few trials of this mode to draw a curve
            continue
        in_mode = modes == mode
        for level, members in _levels(decay, in_mode if mode == L2 else None, in_mode):
            group[members] = len(groups)
            groups.append(_curve(model, mode, level))
    points = {"number": numeric(usable["number"]), "group": group,
              "n_params": numeric(usable["n_params"])}
    points.update(_adjusted(model, usable, group, groups))
    shown = _sample(len(usable), MAX_POINTS)
    return {"groups": groups, "n_trials": len(usable),
            "points": {k: np.asarray(v)[shown].tolist() for k, v in points.items()}}


def effect_curve(model: SizeModel, span: tuple[float, float]) -> dict[str, Any] | None:
    """The ``l2-in-loss`` size effects against weight decay over ``span``, with intervals."""
    lo, hi = span
    points = max(int(np.log10(hi / lo) * _EFFECT_POINTS_PER_DECADE), 1) + 1
    grid = np.geomspace(lo, hi, points)
    found = model.effects_at(grid, L2)
    if found is None:
        return None
    out: dict[str, Any] = {"weight_decay": grid.tolist()}
    for name, part in zip(("total", "data", "penalty"), found, strict=True):
        half = np.array([part.at(i).t_crit for i in range(len(grid))]) * part.se
        out[name] = {"estimate": part.estimate.tolist(),
                     "lo": (part.estimate - half).tolist(), "hi": (part.estimate + half).tolist()}
    return out


def _levels(decay: np.ndarray, split: np.ndarray | None,
            members: np.ndarray) -> list[tuple[float, np.ndarray]]:
    """``(weight decay, member mask)`` per level: up to three for ``split``, else one."""
    positive = members & (decay > 0)
    if split is None or not positive.any():
        level = float(10 ** np.median(np.log10(decay[positive]))) if positive.any() else 0.0
        return [(level, members)]
    logs = np.log10(decay[positive])
    edges = np.quantile(logs, np.linspace(0, 1, WEIGHT_DECAY_LEVELS + 1))
    out = []
    index = np.flatnonzero(positive)
    bins = np.clip(np.searchsorted(edges[1:-1], logs, side="right"), 0, WEIGHT_DECAY_LEVELS - 1)
    for b in range(WEIGHT_DECAY_LEVELS):
        mask = np.zeros_like(members)
        mask[index[bins == b]] = True
        if mask.any():
            out.append((float(10 ** np.median(logs[bins == b])), mask))
    return out


def _curve(model: SizeModel, mode: str, weight_decay: float) -> dict[str, Any]:
    ref = model.reference
    x = np.linspace(ref.x_lo, ref.x_hi, CURVE_POINTS)
    logs = controls_at(ref, np.full(len(x), weight_decay))
    fit = model.data[mode]
    data = design_rows(model.question, "data", fit, x, logs, ref) @ fit.params
    penalty = np.zeros(len(x))
    if mode == L2 and model.penalty is not None and model.penalty.usable:
        penalty = weight_decay * model.weight_sq_norm(10**x, weight_decay)
    label = mode if mode != L2 else f"{mode}, weight decay {weight_decay:.1e}"
    return {"label": label, "penalty_mode": mode, "weight_decay": weight_decay,
            "n_params": (10**x).tolist(), "total": (data + penalty).tolist(),
            "data": data.tolist(), "penalty": penalty.tolist()}


def _adjusted(model: SizeModel, usable: pd.DataFrame, group: np.ndarray,
              groups: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Each trial's data, penalty and total moved to its group's setting (module docs)."""
    q, ref = model.question, model.reference
    x = np.log10(numeric(usable["n_params"]))
    own = {f"log10_{k}": np.log10(np.clip(numeric(usable[k]), 1e-300, None))
           for k in ("lr", "batch_size", "weight_decay")}
    target_decay = np.array([groups[g]["weight_decay"] if g >= 0 else np.nan for g in group])
    target = controls_at(ref, target_decay)
    data = numeric(usable[RESPONSES[q]["data"]]).copy()
    penalty = numeric(usable[RESPONSES[q]["penalty"]]).copy()
    modes = usable["penalty_mode"].astype(str).to_numpy()
    for mode, fit in model.data.items():
        rows = modes == mode
        if not rows.any() or not fit.usable:
            continue
        shift = (design_rows(q, "data", fit, x[rows], _take(target, rows), ref)
                 - design_rows(q, "data", fit, x[rows], _take(own, rows), ref)) @ fit.params
        data[rows] += np.where(np.isfinite(shift), shift, 0.0)
    l2 = (modes == L2) & (numeric(usable["weight_decay"]) > 0)
    if l2.any() and model.penalty is not None and model.penalty.usable:
        fit = model.penalty
        widths = numeric(usable["width"])[l2]
        shift = (design_rows(q, "penalty", fit, x[l2], _take(target, l2), ref, widths=widths)
                 - design_rows(q, "penalty", fit, x[l2], _take(own, l2), ref, widths=widths)
                 ) @ fit.params
        wsq = penalty[l2] / numeric(usable["weight_decay"])[l2] + shift
        penalty[l2] = target_decay[l2] * wsq
    return {"data": data, "penalty": penalty, "total": data + penalty}


def _sample(n: int, limit: int) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, size=limit, replace=False))


def _take(logs: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[rows] for k, v in logs.items()}
