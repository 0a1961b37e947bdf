"""The verdict: does the loss of a bigger model start higher, and which part carries it.

Drawn from the decomposition total = data + penalty of one question (the loss at
initialization, or over the early window) at the reference weight decay, learning rate, batch
size and penalty mode. Every effect is a change per decade of parameters with its 95% interval;
"rises" means the interval's lower bound is > 0. The tolerance is
:data:`NO_INCREASE_FRACTION` of the question's median loss per decade.

Rules, in order:

1. ``inconclusive``: fewer than :data:`MIN_TRIALS` usable trials, or no usable fit (a study of
   one model size is ``not-asked`` instead, before these rules).
2. ``no-increase``: every rise the total's interval allows is below the tolerance.
3. ``inconclusive``: the total's interval holds 0 and reaches past the tolerance.
4. The total rises. What carries it is judged by *shares of the rise*, not by an absolute bar
   (a 10-trial study rarely bounds a part below 1% of the loss, but it readily shows that a
   part is a small fraction of a clear rise): a part is *small* when its 95% upper bound is
   at most :data:`SMALL_SHARE` of the total's estimated rise, or below the tolerance.
   ``penalty`` when the penalty part rises and the data part is small; ``optimization`` the
   mirror; ``both`` when both parts rise and each carries at least :data:`SMALL_SHARE` of the
   rise; else ``inconclusive``.

The penalty's share of the rise is reported with its 95% interval (Fieller's, for a ratio of
two correlated estimates): :func:`penalty_share`.

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
    "SMALL_SHARE",
    "decide",
    "no_increase_tolerance",
    "number_text",
    "penalty_share",
    "trials_needed",
]

# "not-asked": every trial has one model size; no number of trials answers it (analyze.py).
CODES = ("penalty", "optimization", "both", "no-increase", "inconclusive", "not-asked")
# The early-window design has up to 7 coefficients; below 8 rows no residual df remain. The
# default study runs 20.
MIN_TRIALS = 8
# A rise below 1% of the typical loss per decade moves the loss by < 2% over the two decades a
# width sweep spans: smaller than seed-to-seed noise, not worth explaining.
NO_INCREASE_FRACTION = 0.01
# Tolerance when the typical loss is unknown: 1% of a loss of 1 (cross-entropy near chance).
NO_INCREASE_FALLBACK = 0.01
# A part whose worst case is at most a fifth of the rise does not carry it: the other part
# carries at least four fifths.
SMALL_SHARE = 0.2
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
                       f"{MIN_TRIALS} a verdict needs; run at least {more} more (study run's "
                       f"--n-trials is the total of finished trials to reach; study explain's "
                       f"--replicates the seeds per width)"}
    if parts is None:
        return {"code": "inconclusive", "why": "no size effect could be estimated"}
    t, d, p = (parts[k] for k in ("total", "data", "penalty"))
    (t_lo, t_hi), (d_lo, d_hi), (p_lo, p_hi) = t.ci95, d.ci95, p.ci95
    tol = number_text(tolerance)
    if t_hi < tolerance:
        return {"code": "no-increase", "tolerance": tolerance,
                "why": f"bigger models are not higher here: every rise the total's 95% CI "
                       f"allows is below {tol} per decade (1% of the median loss)"}
    if t_lo <= 0:
        routes = [trials_needed(n, half_width=t.t_crit * t.se, gap=abs(t.estimate)),
                  trials_needed(n, half_width=t.t_crit * t.se, gap=tolerance - t.estimate)]
        return {"code": "inconclusive", **_needed(n, routes),
                "why": f"the 95% CI of the total is too wide to tell; {_more(n, routes)}"}
    bar = max(SMALL_SHARE * t.estimate, tolerance)
    if p_lo > 0 and d_hi <= bar:
        return {"code": "penalty",
                "why": f"the rise is the L2 penalty in the reported loss, not worse fitting "
                       f"(the data part's 95% CI stays at or below {number_text(d_hi)} per decade, "
                       f"at most a fifth of the rise)"}
    if d_lo > 0 and p_hi <= bar:
        return {"code": "optimization",
                "why": "the rise is in the data loss itself: the bigger models fit the data "
                       "more slowly; the penalty part carries at most a fifth of it"}
    fifth = SMALL_SHARE * t.estimate
    if p_lo > 0 and d_lo > 0 and min(p.estimate, d.estimate) >= fifth:
        return {"code": "both",
                "why": "both parts carry the rise: the bigger models carry a larger penalty "
                       "and also fit the data more slowly"}
    if p_lo > 0:
        routes = [trials_needed(n, half_width=d.t_crit * d.se, gap=bar - d.estimate)]
        return {"code": "inconclusive", **_needed(n, routes),
                "why": f"the penalty part rises, but the data part may carry up to "
                       f"{number_text(d_hi)} per decade, more than a fifth of the rise; "
                       f"{_more(n, routes)}"}
    routes = [trials_needed(n, half_width=p.t_crit * p.se, gap=abs(p.estimate)),
              trials_needed(n, half_width=d.t_crit * d.se, gap=abs(d.estimate))]
    return {"code": "inconclusive", **_needed(n, routes),
            "why": f"the total rises, but neither part is shown to carry it; {_more(n, routes)}"}


def penalty_share(parts: Mapping[str, Estimate] | None) -> dict[str, Any] | None:
    """The penalty part's share of the total's rise, ``p / t``, with its 95% interval by
    Fieller's method (the two parts' covariance is what the total's variance holds beyond
    theirs). ``None`` unless the total's 95% interval lies above zero (a share of no rise is
    no number); an interval bound is ``None`` where Fieller's set is unbounded."""
    if parts is None:
        return None
    t, d, p = (parts[k] for k in ("total", "data", "penalty"))
    if t.ci95[0] <= 0:
        return None
    var_t, var_p = t.se**2, p.se**2
    cov_pt = var_p + (var_t - d.se**2 - var_p) / 2  # cov(p, d + p)
    q2 = t.t_crit**2
    a = t.estimate**2 - q2 * var_t
    b = t.estimate * p.estimate - q2 * cov_pt
    c = p.estimate**2 - q2 * var_p
    share = p.estimate / t.estimate
    root = b * b - a * c
    if a <= 0 or root < 0:
        return {"estimate": share, "ci95": [None, None]}
    half = math.sqrt(root)
    return {"estimate": share, "ci95": [(b - half) / a, (b + half) / a]}


def _needed(n: int, routes: list[int | None]) -> dict[str, int]:
    """``trials_needed``: the total the ``why`` names (for a flag that adds them), if any."""
    known = [r for r in routes if r is not None]
    return {"trials_needed": min(known)} if known and min(known) <= MORE_TRIALS_CAP * n else {}


def _more(n: int, routes: list[int | None]) -> str:
    needed = _needed(n, routes).get("trials_needed")
    if needed is None:
        return (f"more than {MORE_TRIALS_CAP * n} trials ({MORE_TRIALS_CAP}x the current {n}) "
                f"would be needed at this noise level")
    more = needed - n
    return (f"about {more} more trial{'s' * (more != 1)} ({needed} in total) would decide, if "
            f"the estimate holds and the interval narrows as 1/sqrt(n)")


def number_text(value: float) -> str:
    """A signed number as the verdict texts write it (two or three significant digits)."""
    return f"{value:+.2g}" if abs(value) < 0.01 else f"{value:+.3f}"
