"""The numbers and part names the gap's words share (:mod:`study.analysis.gap_text`): a value,
its interval in prose or brackets, and the other parts beside a carrier larger than the gap."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from study._text import interval_formatter

__all__ = ["LABELS", "beyond", "bracket", "est", "num", "signed"]

LABELS = {"timing": "epoch averaging", "mode": "the train/eval mode difference",
          "mode_batchnorm": "BatchNorm statistics", "mode_dropout": "dropout",
          "generalization": "generalization (overfitting)"}


def beyond(early: Mapping[str, Any], carrier: str) -> str:
    """Where the carrier is larger than the whole gap (either sign), the other parts, signed,
    that bring it back to the gap (the parts add up to it: a carrier of 1.86 in a gap of 1.13
    needs a word): ``, more than the whole gap (the rest: epoch averaging -0.73)``."""
    gap, own = early["gap"]["estimate"], early[carrier]["estimate"]
    s = 1 if gap > 0 else -1
    if not 0 < s * gap < s * own:
        return ""
    split = [k for k in ("mode_batchnorm", "mode_dropout") if k in early]
    others = [k for k in ("timing", *(split or ["mode"]), "generalization")
              if k != carrier and k in early]
    if not others:
        return ""
    rest = ", ".join(f"{LABELS[k]} {signed(early[k]['estimate'])}" for k in others)
    return f", more than the whole gap (the rest: {rest})"


def signed(value: float) -> str:
    """:func:`num` with its sign: ``+0.061``, ``-0.73`` (``0.00`` for 0)."""
    return num(value) if value == 0 else ("+" if value > 0 else "-") + num(abs(value))


def num(value: float | None) -> str:
    """Two decimals (two significant digits under 0.1); a dash for none."""
    if value is None:
        return "—"
    return f"{value:.2g}" if 0 < abs(value) < 0.1 else f"{value:.2f}"


def est(value: Mapping[str, Any], ci: str) -> str:
    """``1.86 (95% CI 1.34 to 2.37)``: the estimate and its interval in prose."""
    lo, hi = value["ci95"]
    if lo is None:
        return f"{num(value['estimate'])} (no interval)"
    # One number of decimals per interval, as the size lines; signs only where negative (prose)
    fmt = interval_formatter([value["estimate"], lo, hi], signed=False)
    return f"{fmt(value['estimate'])} ({ci} {fmt(lo)} to {fmt(hi)})"


def bracket(value: Mapping[str, Any]) -> str:
    """``+1.86 [+1.34, +2.37]``: the estimate and its interval in brackets."""
    lo, hi = value["ci95"]
    if lo is None:
        return f"{num(value['estimate'])} [no interval]"
    fmt = interval_formatter([value["estimate"], lo, hi])
    return f"{fmt(value['estimate'])} [{fmt(lo)}, {fmt(hi)}]"
