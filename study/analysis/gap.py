"""Why does validation lag training? The ``gap`` block of ``analysis.json`` (SPEC section 10).

Every trial logs, at the end of each epoch, the exact decomposition

    val_loss - data_loss = timing + mode + generalization

- timing = T - D: the training data loss at the epoch's end (train mode, a fixed training
  subset) minus the epoch's mean training data loss, over which the weights improved;
- mode = E - T: the same weights and data in eval mode minus train mode (BatchNorm's running
  statistics in place of batch statistics; dropout off), split into ``mode_batchnorm`` +
  ``mode_dropout`` where a model has both;
- generalization = V - E: validation minus training, both in eval mode at the epoch's end, the
  only part that is overfitting.

:func:`gap_block` averages each part over the trials that reached each epoch (pruned trials stop
early, so a later epoch's mean describes the trials that got there; ``n`` says how many, and
``seeds`` how many training seeds they share where fewer), with t intervals (clustered by
seed), and names the part that carries the gap (:mod:`study.analysis.gap_stats` holds the
definitions: the threshold, the carrier rule, the closing epoch).

The verdict is about the *early* gap: each trial's parts averaged over its first
``early_epochs`` epochs (default 1, the epoch users ask about: "validation is far above
training after the first epoch"), over the trials that reached all of them. Codes:
``normalization-statistics`` (BatchNorm's part of mode carries it; a model with BatchNorm and
no dropout has all of mode there), ``dropout``, ``epoch-averaging`` (timing), ``overfitting``
(generalization), ``none`` (no lag worth explaining: the early gap's interval lies at or below
the threshold, validation level with training or below it, by how much the intervals may not
tell; or a gap shown below training that no part is shown to put there) and ``inconclusive``
(one trial, an interval reaching above the threshold too wide to tell, or a gap above training
that no part is shown to carry). The code is the window's: where the window has nothing to
explain (``none``) but the lag is shown open at the last epoch, the verdict's words say so, with
the advice of the part that carries the gap there.

The intervals are about the study's own data split: the validation set and the training subset
are the same for every trial, so a different split would move the parts by its own sampling
error (about the loss times its per-example spread over sqrt(examples)), which no interval over
the trials can show.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from study.analysis.gap_closing import reading
from study.analysis.gap_stats import (
    GAP_FLOOR,
    GAP_FRACTION,
    SPLIT,
    closing_epoch,
    closing_state,
    summarize,
    trial_epochs,
)
from study.analysis.gap_text import CODES, gap_table_rows, short_line, verdict, window_name

__all__ = ["CODES", "GAP_FLOOR", "GAP_FRACTION", "QUESTION", "SCOPE", "GapTrial", "gap_block",
           "gap_table_rows", "short_line"]

QUESTION = "Why does validation lag training?"
SCOPE = ("{level:.0%} intervals over the trials, on this study's data split: its validation set "
         "and training subset are shared by every trial, so another split would move the parts "
         "by its own sampling error, which the intervals do not hold")


@dataclasses.dataclass(frozen=True)
class GapTrial:
    """One trial's per-epoch records and what its model holds.

    Attributes:
        curve: One record per epoch: ``epoch`` (1-based), ``data_loss``, ``val_loss``,
            ``gap_timing``, ``gap_mode``, ``gap_generalization`` and, for a model with both
            BatchNorm and dropout, ``gap_mode_batchnorm`` and ``gap_mode_dropout``.
        has_batchnorm: Whether the model has BatchNorm layers.
        has_dropout: Whether the model has dropout layers.
        group: The trial's setting (e.g. ``"adam, bn 0.01, dropout 0"``); ``None``: no group.
        seed: Its training seed: trials sharing one are one sample of the intervals (see
            :func:`~study.analysis.gap_stats.summarize`); ``None``: a sample of its own.
    """

    curve: Sequence[Mapping[str, Any]]
    has_batchnorm: bool
    has_dropout: bool
    group: str | None = None
    seed: Any = None


def gap_block(trials: Iterable[GapTrial], *, level: float = 0.95,
              early_epochs: int = 1) -> dict[str, Any]:
    """The JSON-ready ``gap`` block of ``analysis.json``.

    Args:
        trials: The study's trials (those without gap records are left out and counted).
        level: The confidence level of every interval (the key stays ``ci95``).
        early_epochs: How many first epochs the verdict averages over.

    Returns:
        ``{"question", "n_trials", "early_epochs", "level", "threshold", "scope", "models",
        "epochs", "early", "closes_at_epoch", "closing", "closing_reading", "verdict", "notes"}``
        and, when any trial has a group,
        ``"groups": {label: the same without "question"}`` (in order of first appearance).
    """
    if early_epochs < 1:
        raise ValueError(f"early_epochs must be >= 1, got {early_epochs}")
    trials = list(trials)
    labels = list(dict.fromkeys(t.group for t in trials if t.group is not None))
    block = {"question": QUESTION, **_body(trials, level=level, early_epochs=early_epochs,
                                           grouped=bool(labels))}
    if labels:
        block["groups"] = {label: _body([t for t in trials if t.group == label], level=level,
                                        early_epochs=early_epochs, grouped=True)
                           for label in labels}
    return block


def _body(trials: Sequence[GapTrial], *, level: float, early_epochs: int,
          grouped: bool) -> dict[str, Any]:
    """Everything of the block for one set of trials (module docs)."""
    by_epoch: dict[int, list[tuple[dict[str, float], dict[str, bool], Any]]] = defaultdict(list)
    early: list[tuple[dict[str, float], dict[str, bool], Any]] = []
    used = inconsistent = with_batchnorm = with_dropout = 0
    for trial in trials:
        rows, bad = trial_epochs(trial.curve, has_batchnorm=trial.has_batchnorm,
                                 has_dropout=trial.has_dropout)
        inconsistent += bad
        if not rows:
            continue
        used += 1
        kind = {"batchnorm": bool(trial.has_batchnorm), "dropout": bool(trial.has_dropout)}
        with_batchnorm += kind["batchnorm"]
        with_dropout += kind["dropout"]
        for epoch, row in rows.items():
            by_epoch[epoch].append((row, kind, trial.seed))
        window = [rows.get(e) for e in range(1, early_epochs + 1)]
        if all(row is not None for row in window):
            early.append((_window_mean(window), kind, trial.seed))
    epochs = [{"epoch": e, **_summarize(by_epoch[e], level=level)[0]} for e in sorted(by_epoch)]
    early_entry, decision = _summarize(early, level=level)
    window = window_name(list(range(1, early_epochs + 1)))
    closes = closing_epoch(epochs)
    state = closing_state(epochs, closes)
    start = (early_entry.get("gap") or {}).get("estimate")
    below = start is not None and start <= 0
    unsplit = sum(1 for row, kind, _ in early
                  if kind["batchnorm"] and kind["dropout"] and not set(SPLIT) <= set(row))
    read = reading(epochs, closes, state=state, below=below)
    return {
        "n_trials": used, "early_epochs": early_epochs, "level": level,
        "threshold": {"floor": GAP_FLOOR, "fraction": GAP_FRACTION},
        "scope": SCOPE.format(level=level),
        "models": {"with_batchnorm": with_batchnorm, "with_dropout": with_dropout},
        "epochs": epochs,
        "early": {"epochs": list(range(1, early_epochs + 1)), **early_entry},
        "closes_at_epoch": closes,
        "closing": state,
        # What the words, the table and the figure say: "closed" at epoch 1 is "no lag" there.
        "closing_reading": read.kind,
        "verdict": verdict(early_entry, decision, window=window, level=level, closing=read,
                           unsplit=unsplit, grouped=grouped),
        "notes": _notes(len(trials), used, inconsistent, epochs),
    }


def _window_mean(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per-key means of one trial's rows over the early window (a split only if every epoch
    has it)."""
    keys = set.intersection(*(set(r) for r in rows))
    return {k: float(np.mean([r[k] for r in rows])) for k in keys}


def _summarize(entries: Sequence[tuple[dict[str, float], dict[str, bool], Any]], *,
               level: float) -> tuple[dict[str, Any], Any]:
    """:func:`summarize` of ``(row, kind, seed)`` per trial."""
    return summarize([e[0] for e in entries], [e[1] for e in entries], level=level,
                     seeds=[e[2] for e in entries])


def _notes(given: int, used: int, inconsistent: int,
           epochs: Sequence[Mapping[str, Any]]) -> list[str]:
    notes = []
    if used < given:
        notes.append(f"{given - used} of {given} trials logged no gap parts and are left out")
    if inconsistent:
        notes.append(f"{inconsistent} epoch records left out: their parts do not add up to "
                     "val_loss - data_loss")
    if any(e["n"] == 1 for e in epochs):
        ones = [str(e["epoch"]) for e in epochs if e["n"] == 1]
        notes.append(f"one trial only at epoch {', '.join(ones)}: no interval there")
    shared = [str(e["epoch"]) for e in epochs if e["n"] > 1 and e.get("seeds") == 1]
    if shared:
        notes.append(f"one training seed only at epoch {', '.join(shared)}: its trials are one "
                     f"sample, no interval there")
    if len({e["n"] for e in epochs}) > 1:
        notes.append("later epochs hold only the trials that reached them (pruned trials stop "
                     "early): their means describe those trials")
    return notes

