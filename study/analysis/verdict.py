"""The verdict: does the loss of a bigger model start higher, and which part carries it.

Drawn from the decomposition total = data + penalty of one question (the loss at
initialization, or over the early window) at the reference weight decay, learning rate, batch
size and penalty mode. Every effect is a change per decade of parameters with its 95% interval;
"rises" means the interval's lower bound is > 0. The tolerance is
:data:`NO_INCREASE_FRACTION` of the question's median loss per decade.

Rules, in order:

1. ``inconclusive``: fewer than :data:`MIN_TRIALS` usable trials, or no usable fit.
2. ``no-increase``: every rise the total's interval allows is below the tolerance.
3. ``inconclusive``: the total's interval holds 0 and reaches past the tolerance.
4. The total rises: ``both`` when the data and penalty parts both rise; ``penalty`` when the
   penalty part rises and the data part's upper bound is below the tolerance (the data part
   cannot carry the rise); ``optimization`` when the data part rises and the penalty part does
   not; else ``inconclusive`` (the penalty rises but a data rise is not ruled out).

An ``inconclusive`` text says how many trials would decide, from the 1/sqrt(n) shrinking of an
interval: n_needed = n * (half_width / gap)^2, gap being how far the estimate sits from the
bound it must clear.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from study.analysis.estimate import Estimate

__all__ = [
    "CODES",
    "MIN_TRIALS",
    "MORE_TRIALS_CAP",
    "NO_INCREASE_FALLBACK",
    "NO_INCREASE_FRACTION",
    "decide",
    "no_increase_tolerance",
    "trials_needed",
]

CODES = ("penalty", "optimization", "both", "no-increase", "inconclusive")
# The early-window design has up to 7 coefficients; below 8 rows no residual df remain. The
# default study runs 20.
MIN_TRIALS = 8
# A rise below 1% of the typical loss per decade moves the loss by < 2% over the two decades a
# width sweep spans: smaller than seed-to-seed noise, not worth explaining.
NO_INCREASE_FRACTION = 0.01
# Tolerance when the typical loss is unknown: 1% of a loss of 1 (cross-entropy near chance).
NO_INCREASE_FALLBACK = 0.01
# Beyond 10x the current trials the 1/sqrt(n) extrapolation from a noisy estimate means little.
MORE_TRIALS_CAP = 10


def no_increase_tolerance(typical_loss: float | None) -> float:
    """The negligible rise per decade: :data:`NO_INCREASE_FRACTION` of ``typical_loss``."""
    if typical_loss is None or not math.isfinite(typical_loss) or typical_loss == 0:
        return NO_INCREASE_FALLBACK
    return NO_INCREASE_FRACTION * abs(typical_loss)


def trials_needed(n: int, *, half_width: float, gap: float) -> int | None:
    """Trials at which an interval of ``half_width`` at ``n`` trials shrinks to ``gap``:
    ``ceil(n * (half_width / gap)^2)``, at least ``n + 1``; ``None`` when ``gap <= 0``."""
    if gap <= 0 or not math.isfinite(gap) or not math.isfinite(half_width):
        return None
    return max(n + 1, math.ceil(n * (half_width / gap) ** 2))


def decide(parts: Mapping[str, Estimate] | None, *, n: int, tolerance: float
           ) -> dict[str, Any]:
    """The code of one question and why, from its ``total``, ``data`` and ``penalty`` parts.

    Returns:
        ``{"code", "why"}``: ``why`` is a short clause that completes a sentence ("the rise is
        the L2 penalty ...") and, for ``inconclusive``, says how many trials would decide.
    """
    if n < MIN_TRIALS:
        more = MIN_TRIALS - n
        return {"code": "inconclusive",
                "why": f"only {n} usable trial{'s' if n != 1 else ''}, fewer than the "
                       f"{MIN_TRIALS} the regression needs; run at least {more} more"}
    if parts is None:
        return {"code": "inconclusive", "why": "no size effect could be estimated"}
    t, d, p = (parts[k] for k in ("total", "data", "penalty"))
    (t_lo, t_hi), (d_lo, d_hi), (p_lo, _) = t.ci95, d.ci95, p.ci95
    tol = _num(tolerance)
    if t_hi < tolerance:
        return {"code": "no-increase",
                "why": f"bigger models are not higher here: every rise the total's 95% CI "
                       f"allows is below {tol} per decade (1% of the median loss)"}
    if t_lo <= 0:
        routes = [trials_needed(n, half_width=t.t_crit * t.se, gap=abs(t.estimate)),
                  trials_needed(n, half_width=t.t_crit * t.se, gap=tolerance - t.estimate)]
        return {"code": "inconclusive",
                "why": f"the 95% CI of the total is too wide to tell; {_more(n, routes)}"}
    if p_lo > 0 and d_lo > 0:
        return {"code": "both",
                "why": "both parts rise: the bigger models carry a larger penalty and also fit "
                       "the data more slowly"}
    if p_lo > 0 and d_hi < tolerance:
        return {"code": "penalty",
                "why": f"the rise is the L2 penalty in the reported loss, not worse fitting "
                       f"(the data part's 95% CI stays below {tol} per decade)"}
    if d_lo > 0:
        return {"code": "optimization",
                "why": "the rise is in the data loss itself: the bigger models fit the data "
                       "more slowly; the penalty part does not carry it"}
    routes = [trials_needed(n, half_width=d.t_crit * d.se, gap=tolerance - d.estimate)]
    return {"code": "inconclusive",
            "why": f"the penalty part rises, but a rise of the data part up to {_num(d_hi)} "
                   f"per decade is not ruled out; {_more(n, routes)}"}


def _more(n: int, routes: list[int | None]) -> str:
    known = [r for r in routes if r is not None]
    if not known or min(known) > MORE_TRIALS_CAP * n:
        return (f"more than {MORE_TRIALS_CAP * n} trials ({MORE_TRIALS_CAP}x the current {n}) "
                f"would be needed at this noise level")
    needed = min(known)
    return (f"about {needed - n} more trials ({needed} in total) would decide, if the estimate "
            f"holds and the interval narrows as 1/sqrt(n)")


def _num(value: float) -> str:
    return f"{value:+.2g}" if abs(value) < 0.01 else f"{value:+.3f}"
