"""When validation catches up with training, read once for every text and figure of the gap.

The block's ``closes_at_epoch`` is the lag's rule (:func:`~study.analysis.gap_stats.closing_epoch`):
the first epoch from which the lag (timing + mode) is at most the threshold at every epoch
through the last. Read alone it says "closes at epoch 1" for a validation loss that was never
behind, and "closes at epoch 2" where epoch 1 only could not tell. :func:`closing_of` tells
those apart:

- ``no-gap``: the gap itself (validation minus training) is at most the threshold at every epoch:
  validation is behind training at no epoch, whatever its parts' intervals say;
- ``no-lag``: validation starts below training and the lag is at most the threshold at every
  epoch;
- ``no-lag-from``: validation starts below training, no epoch shows a lag, and the lag is at most
  the threshold from ``epoch`` through the last (the epochs before it cannot tell);
- ``closed``: the lag closes at ``epoch`` (one opened: shown above the threshold before it, or a
  positive gap at the start);
- ``open``: the last epoch's lag is shown above the threshold;
- ``unclear``: the last epoch cannot tell (its lag's interval straddles the threshold, or it
  has none).

:func:`closing_words` says each in the few words that the table, the figure's titles and the
one-line summaries share.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from study.analysis.gap_stats import caught_up, lags
from study.analysis.gap_words import bracket, num

__all__ = ["NO_LAG", "Closing", "closing_of", "closing_words", "reading", "why_unclear"]

NO_LAG = frozenset({"no-gap", "no-lag", "no-lag-from"})


@dataclasses.dataclass(frozen=True)
class Closing:
    """How a set of trials' lag ends (module docs).

    Attributes:
        kind: ``no-gap``, ``no-lag``, ``no-lag-from``, ``closed``, ``open``, ``unclear`` or
            ``no-epochs``.
        epoch: The closing epoch (``closed`` and ``no-lag-from``), else ``None``.
        last: The last epoch any trial reached.
        below: Whether validation starts below training (the early gap's estimate <= 0).
        at_last: The last epoch's entry (its lag, threshold and ``n``), else ``None``.
    """

    kind: str
    epoch: int | None = None
    last: int | None = None
    below: bool = False
    at_last: Mapping[str, Any] | None = None


def closing_of(block: Mapping[str, Any]) -> Closing:
    """The closing of a gap block (or of one of its groups)."""
    epochs: Sequence[Mapping[str, Any]] = block.get("epochs") or []
    estimate = ((block.get("early") or {}).get("gap") or {}).get("estimate")
    return reading(epochs, block.get("closes_at_epoch"), state=block.get("closing"),
                   below=estimate is not None and estimate <= 0)


def reading(epochs: Sequence[Mapping[str, Any]], closes_at: int | None, *, state: str | None,
            below: bool) -> Closing:
    """:func:`closing_of` from the block's parts (the verdict is worded before the block
    exists)."""
    if not epochs:
        return Closing("no-epochs", below=below)
    final = max(epochs, key=lambda e: int(e["epoch"]))
    last = int(final["epoch"])
    if all("gap" in e and caught_up(e["gap"], e["threshold"]) for e in epochs):
        return Closing("no-gap", last=last, below=below, at_last=final)
    if closes_at is None:
        return Closing("unclear" if state == "unclear" else "open", last=last, below=below,
                       at_last=final)
    opened = any("lag" in e and lags(e["lag"], e["threshold"])
                 for e in epochs if e["epoch"] < closes_at)
    if opened or not below:
        return Closing("closed", closes_at, last, below, final)
    if closes_at == 1:
        return Closing("no-lag", None, last, below, final)
    return Closing("no-lag-from", closes_at, last, below, final)


def closing_words(closing: Closing) -> str:
    """The closing in a few words, the same in the table of settings, the figure's titles and
    the one-line summaries: ``lag closes at epoch 3``, ``lag not closed by epoch 6``, ``lag
    unclear at epoch 6``, ``no lag through epoch 6``, ``no lag from epoch 2`` (through the
    last; the epochs before it cannot tell), and, after a validation loss below training,
    ``a lag opens later, closes at epoch 4`` or ``..., not closed by epoch 6``."""
    kind, last = closing.kind, closing.last
    if kind == "no-epochs":
        return "no epochs"
    said = {"no-gap": f"no lag through epoch {last}", "no-lag": f"no lag through epoch {last}",
            "no-lag-from": f"no lag from epoch {closing.epoch}",
            "closed": f"lag closes at epoch {closing.epoch}",
            "open": f"lag not closed by epoch {last}",
            "unclear": f"lag unclear at epoch {last}"}[kind]
    if closing.below and kind in ("closed", "open"):
        said = f"a lag opens later, {said.removeprefix('lag ')}"
    return said


def why_unclear(closing: Closing) -> str:
    """Why the last epoch cannot tell: ``lag +0.076 [+0.053, +0.099] against a threshold of
    0.058, 2 trials`` or ``one trial, no interval``."""
    entry = closing.at_last or {}
    lag = entry.get("lag") or {}
    if not lag:
        return "the intervals cannot tell"
    if (lag.get("ci95") or [None])[0] is None:
        return "one training seed there, no interval" if entry.get("seeds") == 1 else \
            "one trial there, no interval"
    return (f"lag {bracket(lag)} against a threshold of {num(entry['threshold'])}, "
            f"{entry.get('n', '?')} trials: its interval straddles it")
