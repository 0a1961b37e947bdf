"""The threshold weight decay: above it the total's size effect in ``l2-in-loss`` is positive
(bigger models start higher), below it it is not.

The total's size effect at weight decay ``wd`` is ``data(wd) + wd * S(wd)``, with ``S`` the
size effect of ``||w||^2``. The estimate is where the fitted effect crosses zero upwards. Its
95% interval inverts the t test of "the effect at ``wd`` is zero" (Fieller's method): it holds
every ``wd`` at which the effect's own 95% interval contains zero. An interval that reaches the
edge of the searched range is open on that side (``None``), so no bound is ever invented.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from study.analysis.sizeeffect import L2, SizeModel
from study.analysis.verdict import MIN_TRIALS

__all__ = ["SEARCH", "threshold"]

# Where the crossing is looked for: every weight decay a CNN is trained with, and beyond, so an
# interval that is open within it is open in practice.
SEARCH = (1e-7, 10.0)
_POINTS_PER_DECADE = 60
# Weight decays at which "every studied weight decay's interval excludes zero" is checked.
_STUDIED_POINTS = 25


def threshold(model: SizeModel, *, studied: tuple[float, float] | None,
              varied: bool) -> dict[str, Any]:
    """The threshold block of ``analysis.json`` for one question.

    Where the weight decay varied (early window), the crossing is looked for in the studied
    range only: the fitted size x weight decay interaction says nothing beyond it. There, when
    no crossing lies inside, ``extrapolated`` gives where it would lie if the data part and
    ``||w||^2`` stayed as at the nearest edge (the penalty part then grows in proportion to the
    weight decay), without an interval; over the early window, a crossing found outside the
    studied range (a fixed weight decay) is one too, and ``extrapolated`` repeats it. At
    initialization weight decay changes nothing but the penalty's factor, and with a fixed
    weight decay nothing else is known, so those look over
    all of :data:`SEARCH`.

    Args:
        model: The question's fitted size model.
        studied: The lowest and highest weight decay of its ``l2-in-loss`` trials.
        varied: Whether the weight decay varied in them.

    Returns:
        ``{"estimate", "ci95", "status", "reason", "studied_range", "searched_range",
        "basis", "extrapolated", "significant"}``; ``status`` is ``inside`` (the estimate lies
        in the studied range), ``outside`` (in the searched range but not the studied one),
        ``always`` (the effect is positive at every searched weight decay), ``never`` or
        ``none``; for
        ``always`` and ``never``, ``significant`` says whether the 95% interval excludes zero
        at every studied weight decay. With fewer than ``MIN_TRIALS`` trials: ``none``.
    """
    search = studied if (varied and model.question == "early" and studied) else SEARCH
    block: dict[str, Any] = {"estimate": None, "ci95": [None, None], "status": "none",
                             "reason": None, "studied_range": list(studied) if studied else None,
                             "searched_range": list(search),
                             "basis": _basis(model.question, varied), "extrapolated": None}
    if model.n < MIN_TRIALS:  # a regression without residual df locates no crossing
        block["reason"] = (f"only {model.n} usable trials, fewer than the {MIN_TRIALS} the "
                           f"regression needs")
        return block
    if L2 not in model.modes or studied is None:
        block["reason"] = ("no l2-in-loss trials: the reported loss holds no penalty, so no "
                           "weight decay makes it rise")
        return block
    points = max(int(math.log10(search[1] / search[0]) * _POINTS_PER_DECADE), 1) + 1
    grid = np.geomspace(search[0], search[1], points)
    effects = model.effects_at(grid, L2)
    if effects is None:
        block["reason"] = "the size effect could not be estimated"
        return block
    total, data, penalty = effects
    est = total.estimate
    block["ci95"] = _interval(grid, total.margin())
    up = np.flatnonzero((est[:-1] <= 0) & (est[1:] > 0))
    if up.size:
        block["estimate"] = _crossing(grid, est, int(up[0]))
        inside = studied[0] <= block["estimate"] <= studied[1]
        block["status"] = "inside" if inside else "outside"
        if not inside and model.question != "init":  # at initialization it is exact
            block["extrapolated"] = block["estimate"]
        return block
    where = "in the studied range" if search == studied else "at any weight decay"
    # Whether every weight decay's 95% interval excludes zero: "always" from estimates alone
    # would overstate an inconclusive study.
    at_studied = model.effects_at(np.geomspace(studied[0], studied[1], _STUDIED_POINTS), L2)[0]
    block["significant"] = bool(np.all(at_studied.margin() > 0))
    estimated = "" if block["significant"] else "estimated "
    if np.all(est > 0):
        block["status"], edge = "always", 0
        block["reason"] = f"the total's {estimated}size effect is positive {where}"
    elif np.all(est <= 0):
        block["status"], edge = "never", len(grid) - 1
        block["reason"] = f"the total's {estimated}size effect is not positive {where}"
    else:
        block["reason"] = "the total's size effect falls as weight decay grows"
        return block
    if search == studied:
        slope = penalty.estimate[edge] / grid[edge]  # the penalty part per unit weight decay
        if slope > 0 and data.estimate[edge] < 0:
            block["extrapolated"] = float(-data.estimate[edge] / slope)
    return block


def _basis(question: str, varied: bool) -> str:
    if question == "init":
        return "exact: weight decay changes neither the initial weights nor their data loss"
    if varied:
        return "fitted across the studied weight decays"
    return ("extrapolated: weight decay was fixed, so the data part is assumed not to change "
            "with it")


def _crossing(grid: np.ndarray, est: np.ndarray, i: int) -> float:
    """Where ``est`` crosses 0 between grid points ``i`` and ``i + 1`` (linear in log wd)."""
    a, b = math.log10(grid[i]), math.log10(grid[i + 1])
    frac = -est[i] / (est[i + 1] - est[i])
    return float(10 ** (a + frac * (b - a)))


def _interval(grid: np.ndarray, margin: np.ndarray) -> list[float | None]:
    """The hull of the weight decays whose 95% interval holds zero (``margin <= 0``)."""
    inside = np.flatnonzero(margin <= 0)
    if not inside.size:
        return [None, None]
    first, last = int(inside[0]), int(inside[-1])
    lo = None if first == 0 else _edge(grid, margin, first - 1)
    hi = None if last == len(grid) - 1 else _edge(grid, margin, last)
    return [lo, hi]


def _edge(grid: np.ndarray, margin: np.ndarray, i: int) -> float:
    """Where ``margin`` changes sign between grid points ``i`` and ``i + 1``."""
    a, b = math.log10(grid[i]), math.log10(grid[i + 1])
    frac = margin[i] / (margin[i] - margin[i + 1])
    return float(10 ** (a + frac * (b - a)))
