"""When validation catches up with training, read once for every text and figure of the gap.

The block's ``closes_at_epoch`` is the lag's rule (:func:`~study.analysis.gap_stats.closing_epoch`):
the first epoch from which the lag (timing + mode) is at most the threshold. Read alone it says
"closes at epoch 1" for a validation loss that was never behind, and "closes at epoch 2" where
epoch 1 only could not tell. :func:`closing_of` tells those apart:

- ``no-gap``: the gap itself (validation minus training) is at most the threshold at every epoch:
  validation is behind training at no epoch, whatever its parts' intervals say;
- ``no-lag``: validation starts below training and the lag is at most the threshold from epoch 1
  (a later epoch may not tell: ``undecided``);
- ``no-lag-from``: validation starts below training, no epoch shows a lag, and the lag is at most
  the threshold from ``epoch`` on (the epochs before it cannot tell);
- ``closed``: the lag closes at ``epoch`` (one opened: shown above the threshold before it, or a
  positive gap at the start);
- ``open``: the last epoch's lag is shown above the threshold;
- ``unclear``: the last epoch's lag straddles the threshold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from study.analysis.gap_stats import caught_up, first_undecided, lags

__all__ = ["NO_LAG", "Closing", "closing_of", "reading", "table_cell"]

NO_LAG = frozenset({"no-gap", "no-lag", "no-lag-from"})


@dataclasses.dataclass(frozen=True)
class Closing:
    """How a set of trials' lag ends (module docs).

    Attributes:
        kind: ``no-gap``, ``no-lag``, ``no-lag-from``, ``closed``, ``open``, ``unclear`` or
            ``no-epochs``.
        epoch: The closing epoch (``closed`` and ``no-lag-from``), else ``None``.
        last: The last epoch any trial reached.
        undecided: The first epoch after ``epoch`` (after 1 for ``no-lag``) whose lag
            straddles the threshold: the reading holds only that far.
        below: Whether validation starts below training (the early gap's estimate <= 0).
    """

    kind: str
    epoch: int | None = None
    last: int | None = None
    undecided: Mapping[str, Any] | None = None
    below: bool = False


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
    last = max((int(e["epoch"]) for e in epochs), default=None)
    if last is None:
        return Closing("no-epochs", below=below)
    if all("gap" in e and caught_up(e["gap"], e["threshold"]) for e in epochs):
        return Closing("no-gap", last=last, below=below)
    if closes_at is None:
        return Closing("unclear" if state == "unclear" else "open", last=last, below=below)
    undecided = first_undecided(epochs, closes_at)
    opened = any("lag" in e and lags(e["lag"], e["threshold"])
                 for e in epochs if e["epoch"] < closes_at)
    if opened or not below:
        return Closing("closed", closes_at, last, undecided, below)
    if closes_at == 1:
        return Closing("no-lag", None, last, undecided, below)
    return Closing("no-lag-from", closes_at, last, undecided, below)


def table_cell(closing: Closing) -> str:
    """The ``closes at epoch`` cell of a table of settings: ``3``, ``no lag``, ``no lag from
    2``, ``not by 6`` (open) or ``unclear at 6`` (a bare "no" beside "no lag" read as its
    opposite)."""
    if closing.kind == "closed":
        return str(closing.epoch)
    if closing.kind == "no-lag-from":
        return f"no lag from {closing.epoch}"
    if closing.kind in NO_LAG:
        return "no lag"
    if closing.kind in ("open", "unclear"):
        return f"{'not by' if closing.kind == 'open' else 'unclear at'} {closing.last}"
    return "—"
