"""The verdict: which part of the early training loss carries its rise with parameter count.

Drawn from the decomposition (SPEC section 6), never from the pooled ``explain`` model. Every
effect is the change of an early loss per decade of parameters at the study's median lr and
batch size, with its 95% interval; "significantly > 0" means the interval's lower bound is > 0.

Rules, in order:

1. ``inconclusive``: fewer than :data:`MIN_TRIALS` usable trials, or no usable fit.
2. ``no-increase``: every rise the total interval allows is negligible (upper bound <= 0 or
   below the tolerance, :data:`NO_INCREASE_FRACTION` of the median early loss per decade).
3. ``inconclusive``: the total interval includes 0 and reaches past the tolerance.
4. The total rises significantly: ``both`` when data and penalty effects are both
   significantly > 0, ``penalty`` when only the penalty is (the data effect may be negative),
   ``optimization`` when only the data loss is, else ``inconclusive``.

An ``inconclusive`` text says how many trials would decide, from the 1/sqrt(n) shrinking of an
interval's half-width: n_needed = n * (half_width / gap)^2, where gap is how far the estimate
sits from the bound it must clear.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = [
    "CODES",
    "MIN_TRIALS",
    "MORE_TRIALS_CAP",
    "NO_INCREASE_FALLBACK",
    "NO_INCREASE_FRACTION",
    "no_increase_tolerance",
    "trials_needed",
    "verdict",
]

CODES = ("penalty", "optimization", "both", "no-increase", "inconclusive")
# The design has up to 6 coefficients (+ mode shifts); below 8 rows fewer than 2 residual
# degrees of freedom remain and HC3 intervals are meaningless. The default study runs 20.
MIN_TRIALS = 8
# A rise below 1% of the typical early loss per decade moves the loss by < 2% over the two
# decades a width sweep spans: smaller than seed-to-seed noise, not worth explaining.
NO_INCREASE_FRACTION = 0.01
# Tolerance when the typical loss is unknown: 1% of a loss of 1 (cross-entropy near chance).
NO_INCREASE_FALLBACK = 0.01
# Beyond 10x the current trials the 1/sqrt(n) extrapolation from a noisy estimate means little.
MORE_TRIALS_CAP = 10


def no_increase_tolerance(typical_loss: float | None) -> float:
    """The negligible rise per decade: :data:`NO_INCREASE_FRACTION` of ``typical_loss``.

    Args:
        typical_loss: The median early total loss of the usable trials (``None``: unknown).
    """
    if typical_loss is None or not math.isfinite(typical_loss) or typical_loss == 0:
        return NO_INCREASE_FALLBACK
    return NO_INCREASE_FRACTION * abs(typical_loss)


def trials_needed(n: int, *, half_width: float, gap: float) -> int | None:
    """Trials at which an interval of ``half_width`` at ``n`` trials shrinks to ``gap``.

    Args:
        n: Trials behind the current interval.
        half_width: The interval's current half-width.
        gap: The half-width that would decide (distance from the estimate to the bound).

    Returns:
        ``ceil(n * (half_width / gap)^2)``, at least ``n + 1``; ``None`` when ``gap <= 0``.
    """
    if gap <= 0 or not math.isfinite(gap) or not math.isfinite(half_width):
        return None
    return max(n + 1, math.ceil(n * (half_width / gap) ** 2))


def verdict(
    decomposition: Mapping[str, Any], *, n: int, typical_loss: float | None = None,
    at: Mapping[str, float] | None = None, reason: str | None = None,
) -> dict[str, str]:
    """The verdict ``{code, text}`` on a decomposition block.

    Args:
        decomposition: The SPEC ``decomposition`` block (``width_effect_*`` each
            ``{"estimate", "ci95"}`` or ``None``).
        n: Usable trials behind it.
        typical_loss: Median early total loss; sets the no-increase tolerance.
        at: ``{"lr", "batch_size"}`` medians the effects refer to, for the text.
        reason: Why no fit could be made, when none could.

    Returns:
        ``{"code": one of CODES, "text": one plain paragraph with the numbers}``.
    """
    if n < MIN_TRIALS:
        return _result("inconclusive", (
            f"Only {n} usable trial{'s' if n != 1 else ''}: the early-loss regression needs at "
            f"least {MIN_TRIALS} (it estimates up to six coefficients). Run at least "
            f"{MIN_TRIALS - n} more trial{'s' if MIN_TRIALS - n != 1 else ''} that complete "
            f"the early window."
        ))
    total, data, penalty = (decomposition.get(f"width_effect_{k}")
                            for k in ("total", "data", "penalty"))
    if reason or total is None or data is None or penalty is None:
        return _result("inconclusive", (
            f"No size effect could be estimated from {n} usable trials: "
            f"{reason or 'the decomposition fits are missing'}."
        ))
    tolerance = no_increase_tolerance(typical_loss)
    t, d, p = _Effect(total), _Effect(data), _Effect(penalty)
    fmt = _formatter(t)
    where = f"{n} trials" + _at_text(at)
    tail = f" per decade of parameters [{fmt(t.lo)}, {fmt(t.hi)}] ({where})"
    rise = fmt(t.est) + tail
    if t.hi <= 0 or t.hi < tolerance:
        return _result("no-increase",
                       _no_increase_text(t, tail, fmt, tolerance, typical_loss))
    if t.lo <= 0:
        routes = [trials_needed(n, half_width=t.half, gap=t.est),
                  trials_needed(n, half_width=t.half, gap=tolerance - t.est)]
        return _result("inconclusive", (
            f"Early training loss changes {rise}: the interval is too wide to tell whether it "
            f"rises. {_more_text(n, routes)}"
        ))
    parts = (f"the L2 penalty in the reported loss {p.describe(fmt)} and the data loss "
             f"{d.describe(fmt)}")
    share = f" ({p.est / t.est:.0%} of the total)" if t.est > 0 else ""
    if p.lo > 0 and d.lo > 0:
        return _result("both", (
            f"Early training loss rises {rise}. Both parts carry it: the L2 penalty in the "
            f"reported loss rises {fmt(p.est)} [{fmt(p.lo)}, {fmt(p.hi)}]{share} and the data "
            f"loss rises {fmt(d.est)} [{fmt(d.lo)}, {fmt(d.hi)}]: the larger models carry a "
            f"larger penalty and also fit the data more slowly early on."
        ))
    if p.lo > 0:
        return _result("penalty", (
            f"Early training loss rises {rise}. The L2 penalty in the reported loss accounts "
            f"for {fmt(p.est)} [{fmt(p.lo)}, {fmt(p.hi)}] of it{share} while the data loss "
            f"{d.describe(fmt)}: the increase is the penalty, not worse fitting."
        ))
    if d.lo > 0:
        return _result("optimization", (
            f"Early training loss rises {rise}. The data loss itself rises {fmt(d.est)} "
            f"[{fmt(d.lo)}, {fmt(d.hi)}] while the penalty {p.describe(fmt)}: at this learning "
            f"rate the larger models fit the data more slowly early on; the penalty is not "
            f"the cause."
        ))
    routes = [trials_needed(n, half_width=e.half, gap=e.est) for e in (d, p) if e.est > 0]
    return _result("inconclusive", (
        f"Early training loss rises {rise}, but neither part rises significantly on its own: "
        f"{parts}. {_more_text(n, routes)}"
    ))


# -- internals --------------------------------------------------------------------------------
class _Effect:
    """An effect's estimate and 95% bounds."""

    def __init__(self, effect: Mapping[str, Any]) -> None:
        self.est = float(effect["estimate"])
        self.lo, self.hi = (float(v) for v in effect["ci95"])
        self.half = (self.hi - self.lo) / 2

    def describe(self, fmt: Any) -> str:
        bounds = f"[{fmt(self.lo)}, {fmt(self.hi)}]"
        if self.lo == self.hi == self.est == 0:
            return "does not change (exactly 0)"
        if self.hi < 0:
            return f"falls {fmt(-self.est)} {bounds}"
        if self.lo > 0:
            return f"rises {fmt(self.est)} {bounds}"
        return f"changes {fmt(self.est)} {bounds}, not significantly"


def _formatter(effect: _Effect) -> Any:
    """Fixed decimals for one paragraph: two significant digits of the total effect, and
    enough to show its interval's width (at most four)."""
    scale = max(abs(effect.lo), abs(effect.hi), abs(effect.est))
    decimals = 2 if scale <= 0 else min(6, max(2, 1 - math.floor(math.log10(scale))))
    if effect.half > 0:  # enough digits to show the interval's width, up to 4
        decimals = max(decimals, min(4, -math.floor(math.log10(effect.half))))

    def fmt(value: float) -> str:
        text = f"{value:.{decimals}f}"
        return text[1:] if text.startswith("-") and float(text) == 0 else text

    return fmt


def _at_text(at: Mapping[str, float] | None) -> str:
    if not at:
        return ""
    parts = [f"{label} {at[key]:.3g}" for key, label in (("lr", "lr"),
                                                         ("batch_size", "batch size"))
             if at.get(key) is not None and math.isfinite(at[key])]
    return ", at the median " + " and ".join(parts) if parts else ""


def _no_increase_text(t: _Effect, tail: str, fmt: Any, tolerance: float,
                      typical_loss: float | None) -> str:
    rise = fmt(t.est) + tail
    if t.hi <= 0:
        change = f"falls {fmt(-t.est)}{tail}" if t.est < 0 else f"changes {rise}"
        return f"Early training loss does not rise with parameter count: it {change}."
    basis = (f"{NO_INCREASE_FRACTION:.0%} of the median early loss {typical_loss:.3g}"
             if typical_loss is not None and math.isfinite(typical_loss) and typical_loss != 0
             else "the default tolerance")
    return (f"Early training loss does not rise materially with parameter count: it changes "
            f"{rise}, and every rise the interval allows is below {fmt(tolerance)} per decade "
            f"({basis}).")


def _more_text(n: int, routes: list[int | None]) -> str:
    known = [r for r in routes if r is not None]
    if not known or min(known) > MORE_TRIALS_CAP * n:
        return (f"More than {MORE_TRIALS_CAP * n} trials ({MORE_TRIALS_CAP}x the current "
                f"{n}) would be needed at this noise level; the effect is too small to resolve "
                f"this way.")
    needed = min(known)
    return (f"About {needed - n} more trials ({needed} in total) would decide, assuming the "
            f"estimate holds and the interval narrows as 1/sqrt(n).")


def _result(code: str, text: str) -> dict[str, str]:
    return {"code": code, "text": " ".join(text.split())}
