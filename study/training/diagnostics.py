"""Diagnose one trial's training curve: divergence, stalls, penalty share, validation gaps.

Pure Python (no Optuna, MLflow or torch), so the training loop, the report and the tests share it.
A curve is one row per epoch of ``loss`` (total as optimized = ``data_loss + penalty``, the mean
over the epoch), ``data_loss``, ``penalty``, ``val_loss`` and ``val_accuracy`` (both measured at
the END of the epoch, in eval mode). Training-loss rules read the total ``loss`` (what the user
sees); validation rules compare ``val_loss`` with the DATA loss, never with the total, because the
penalty is not part of the validation loss. Losses are cross-entropies in nats.

=====================  ===========================================================================
Code                   Fires when (thresholds are module constants)
=====================  ===========================================================================
diverged               ``non_finite``; or any loss field is NaN/inf; or an epoch's loss exceeds
                       ``EXPLODE_FACTOR`` (3) x the first epoch's; or, given ``n_classes``, an
                       epoch's data loss exceeds ``EXPLODE_FACTOR`` x chance ``ln(n_classes)``
loss-rising            >= 2 epochs and the last loss exceeds the lowest earlier loss by more than
                       ``RISE_TOL`` (10 %) and by more than ``NOISE_FLOOR`` (0.01)
stalled                >= 2 epochs, not loss-rising, and ``(first - last) / first < STALL_TOL``
                       (2 %)
penalty-dominated      last epoch: ``penalty > 0`` and ``penalty > data_loss``
generalization-gap     last epoch: ``val_loss > GAP_FACTOR`` (1.5) x ``data_loss`` and
                       ``val_loss - data_loss > GAP_MARGIN`` (0.1); where the gap's parts were
                       measured, the same rule also holds against the eval-mode loss of training
                       samples, ``val_loss - gap_generalization`` (the part that is overfitting)
mode-gap               the first rule holds but, with the parts measured, the second does not:
                       the gap is mostly the switch to eval mode (BatchNorm's running
                       statistics, dropout) and the epoch mean, not mainly overfitting
slow-validation        >= 2 epochs; over the first ``max(1, n // 3)`` epochs the mean val loss
                       exceeds ``LAG_FACTOR`` (2) x the mean data loss and it by ``GAP_MARGIN``;
                       and the last epoch has no generalization-gap or mode-gap (the lag
                       closed)
=====================  ===========================================================================

Combination: ``diverged`` excludes every other code (after a blow-up the figures describe the
blow-up, not the learning dynamics); ``loss-rising`` excludes ``stalled`` (a rising loss points to
a too-high learning rate, a stall to a too-low one); ``slow-validation`` and
``generalization-gap`` (or ``mode-gap``) exclude each other by definition, as do
``generalization-gap`` and ``mode-gap``. The other codes combine freely.

A blow-up inside the first epoch (Adam at lr=5 on digits: first-epoch mean loss ~10-20, then
falling) is invisible without ``n_classes``: the first epoch then is the reference. Pass it.

An empty curve (a trial pruned or failed before its first epoch) yields an empty Diagnosis, or
``diverged`` when ``non_finite`` is set; malformed rows raise :class:`~study.errors.ConfigError`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from study._validation import fail
from study.keys import CURVE_FIELDS
from study.training.reports import GAP_FIELDS

__all__ = [
    "CODES", "EXPLODE_FACTOR", "FIELDS", "GAP_FACTOR", "GAP_MARGIN", "LAG_FACTOR", "NOISE_FLOOR",
    "RISE_TOL", "STALL_TOL", "Diagnosis", "curve_record", "curve_rows", "diagnose",
]

CODES = ("diverged", "loss-rising", "stalled", "penalty-dominated", "generalization-gap",
         "mode-gap", "slow-validation")
# The row layout of a sequence row (the trial attr "curve").
FIELDS = CURVE_FIELDS
_LOSS_FIELDS = FIELDS[:4]
# The gap's parts a row may carry beyond FIELDS (where measured: see mode-gap).
_PARTS = ("gap_mode", "gap_generalization", "gap_timing")
_GENERALIZATION = "gap_generalization"
_CARRIERS = (("gap_mode", "the switch to eval mode"), ("gap_timing", "the epoch mean"))


def curve_record(history: Sequence[Any]) -> list[dict[str, float]]:
    """The trial attr "curve": one labelled entry per epoch (``epoch`` and :data:`FIELDS`), so
    tools that show user attrs (optuna-dashboard) show names, not bare numbers.

    An entry also holds the parts of the validation gap that were measured (``gap_timing``,
    ``gap_mode``, ``gap_generalization``, and ``gap_mode_batchnorm``, ``gap_mode_dropout`` for
    models with BatchNorm and dropout); :func:`curve_rows` ignores them.
    """
    return [{"epoch": int(r.epoch), **{f: float(getattr(r, f)) for f in FIELDS},
             **{g: float(v) for g in GAP_FIELDS if (v := getattr(r, g, None)) is not None}}
            for r in history]


def curve_rows(value: Any) -> list[list[float]] | None:
    """A stored curve as rows in :data:`FIELDS` order: the labelled entries of
    :func:`curve_record`, or the bare rows earlier versions stored; ``None`` otherwise."""
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(row, Mapping) for row in value):
        return [[row.get(f) for f in FIELDS] for row in value]
    if all(isinstance(row, list | tuple) for row in value):
        return [list(row) for row in value]
    return None


# A mean epoch loss 3x the first epoch's (or 3x chance) is no noise: the optimizer overshot.
EXPLODE_FACTOR = 3.0
# Epoch-to-epoch noise of a mean training loss is a few %; 10 % above the best is a real rise.
RISE_TOL = 0.10
# Healthy runs lose 5-60 % per epoch; under 2 % over the whole run is no learning at all.
STALL_TOL = 0.02
# Validation 1.5x the data loss at the end is overfitting (or a train/eval mismatch), not noise.
GAP_FACTOR = 1.5
# Nats: below this absolute difference ratios of tiny losses (0.01 vs 0.03) mean nothing.
GAP_MARGIN = 0.1
# Early validation 2x the data loss is a lag worth explaining (end-of-epoch eval, BatchNorm).
LAG_FACTOR = 2.0
# Nats: training-loss movements smaller than this are noise, whatever their relative size.
NOISE_FLOOR = 0.01


@dataclass(frozen=True)
class Diagnosis:
    """The codes that apply to one curve and their evidence.

    Attributes:
        codes: Codes in :data:`CODES` order; empty for a healthy trial.
        detail: One sentence naming each code's evidence with numbers; ``""`` when healthy.
    """

    codes: tuple[str, ...] = ()
    detail: str = ""

    def tag_value(self) -> str:
        """The codes comma-separated (``""`` when healthy), e.g. for an MLflow tag."""
        return ",".join(self.codes)


def diagnose(
    curve: Sequence[Mapping[str, float]] | Sequence[Sequence[float]], *,
    non_finite: bool = False, n_classes: int | None = None,
) -> Diagnosis:
    """Diagnose one trial's per-epoch curve (see the module docstring for the rules).

    Args:
        curve: One row per epoch: mappings with the keys of :data:`FIELDS`, sequences in that
            order (the trial attr ``curve``), or objects with those attributes (EpochReport).
        non_finite: Training stopped on a NaN/inf loss (``NonFiniteLossError``).
        n_classes: Number of classes; enables the chance-level check ``ln(n_classes)``.

    Returns:
        The codes in :data:`CODES` order and a one-sentence detail.

    Raises:
        ConfigError: A row lacks a field or holds a non-number, or ``n_classes`` is not >= 2.
    """
    if n_classes is not None and (isinstance(n_classes, bool) or not isinstance(n_classes, int)
                                  or n_classes < 2):
        fail("n_classes", n_classes, "an integer >= 2 or None")
    rows = [_row(row, i) for i, row in enumerate(curve, start=1)]
    diverged = _diverged(rows, non_finite, n_classes)
    if diverged:
        return Diagnosis(("diverged",), f"diverged: {diverged}.")
    if not rows:
        return Diagnosis()
    found = {code: check(rows) for code, check in _CHECKS.items()}
    if found["loss-rising"]:
        found["stalled"] = None
    codes = tuple(code for code in CODES if found.get(code))
    if not codes:
        return Diagnosis()
    return Diagnosis(codes, "; ".join(f"{c}: {found[c]}" for c in codes) + ".")


def _row(row: Any, epoch: int) -> dict[str, float]:
    if isinstance(row, Mapping):
        missing = [f for f in FIELDS if f not in row]
        values = [row.get(f) for f in FIELDS]
    elif isinstance(row, Sequence) and not isinstance(row, str | bytes):
        missing = list(FIELDS[len(row):])
        values = list(row)
        if len(row) > len(FIELDS):
            fail(f"curve[{epoch - 1}]", row, f"a row of {len(FIELDS)} values {FIELDS}")
    else:
        missing = [f for f in FIELDS if not hasattr(row, f)]
        values = [getattr(row, f, None) for f in FIELDS]
    if missing:
        fail(f"curve[{epoch - 1}]", row, f"a row with {', '.join(FIELDS)}")
    out = {}
    for name, value in zip(FIELDS, values, strict=True):
        try:  # JSON stores may turn NaN into null: treat it as NaN (a non-finite loss)
            out[name] = math.nan if value is None else float(value)
        except (TypeError, ValueError):
            fail(f"curve[{epoch - 1}].{name}", value, "a number")
    for name in _PARTS:  # measured parts of the gap: see mode-gap
        part = row.get(name) if isinstance(row, Mapping) else getattr(row, name, None)
        if isinstance(part, numbers.Real) and not isinstance(part, bool) \
                and math.isfinite(part):
            out[name] = float(part)
    return out


def _g(x: float) -> str:
    return f"{x:.4g}"


def _times(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "inf x"


def _diverged(rows: list[dict[str, float]], non_finite: bool, n_classes: int | None) -> str:
    if non_finite:
        return f"training stopped on a non-finite loss after {len(rows)} finite epoch(s)"
    for epoch, row in enumerate(rows, start=1):
        bad = [f for f in _LOSS_FIELDS if not math.isfinite(row[f])]
        if bad:
            return f"{bad[0]} is {row[bad[0]]} at epoch {epoch}"
    if n_classes is not None:
        chance = math.log(n_classes)
        for epoch, row in enumerate(rows, start=1):
            if row["data_loss"] > EXPLODE_FACTOR * chance:
                return (f"data loss {_g(row['data_loss'])} at epoch {epoch} exceeds "
                        f"{EXPLODE_FACTOR:g}x chance ln({n_classes}) = {_g(chance)}")
    first = rows[0]["loss"] if rows else 0.0
    for epoch, row in enumerate(rows[1:], start=2):
        if first > 0 and row["loss"] > EXPLODE_FACTOR * first:
            return (f"loss {_g(row['loss'])} at epoch {epoch} exceeds {EXPLODE_FACTOR:g}x "
                    f"the first epoch's {_g(first)}")
    return ""


def _loss_rising(rows: list[dict[str, float]]) -> str | None:
    if len(rows) < 2:
        return None
    best_epoch = min(range(len(rows) - 1), key=lambda i: rows[i]["loss"])
    best, last = rows[best_epoch]["loss"], rows[-1]["loss"]
    if last > best * (1 + RISE_TOL) and last - best > NOISE_FLOOR:
        rise = f"+{100 * (last - best) / best:.1f}%" if best > 0 else "from 0"
        return (f"loss rose from its best {_g(best)} (epoch {best_epoch + 1}) to {_g(last)} "
                f"(epoch {len(rows)}), {rise} > {100 * RISE_TOL:g}%")
    return None


def _stalled(rows: list[dict[str, float]]) -> str | None:
    if len(rows) < 2:
        return None
    first, last = rows[0]["loss"], rows[-1]["loss"]
    if first > 0 and (first - last) / first < STALL_TOL:
        return (f"loss fell only {100 * (first - last) / first:.1f}% (< {100 * STALL_TOL:g}%) "
                f"from {_g(first)} to {_g(last)} over {len(rows)} epochs")
    return None


def _penalty_dominated(rows: list[dict[str, float]]) -> str | None:
    last = rows[-1]
    if last["penalty"] > 0 and last["penalty"] > last["data_loss"]:
        return (f"penalty {_g(last['penalty'])} exceeds the data loss {_g(last['data_loss'])} "
                f"at epoch {len(rows)} ({100 * last['penalty'] / last['loss']:.0f}% of the loss)")
    return None


def _has_gap(val: float, data: float, factor: float) -> bool:
    return val > factor * data and val - data > GAP_MARGIN


def _final_gap(rows: list[dict[str, float]]) -> str | None:
    """The last epoch's validation loss against its data loss, where it is a gap."""
    last = rows[-1]
    if _has_gap(last["val_loss"], last["data_loss"], GAP_FACTOR):
        return (f"val loss {_g(last['val_loss'])} is {_times(last['val_loss'], last['data_loss'])}"
                f" the data loss {_g(last['data_loss'])} at epoch {len(rows)}")
    return None


def _seen(rows: list[dict[str, float]]) -> float | None:
    """The last epoch's eval-mode loss of training samples (``None``: parts not measured)."""
    last = rows[-1]
    part = last.get(_GENERALIZATION)
    return None if part is None else last["val_loss"] - part


def _generalization_gap(rows: list[dict[str, float]]) -> str | None:
    gap, seen = _final_gap(rows), _seen(rows)
    if gap is None or seen is None:
        return gap
    val = rows[-1]["val_loss"]
    if not _has_gap(val, seen, GAP_FACTOR):
        return None  # mode-gap
    return f"{gap}, and {_times(val, seen)} the eval-mode loss {_g(seen)} of training samples"


def _mode_gap(rows: list[dict[str, float]]) -> str | None:
    gap, seen = _final_gap(rows), _seen(rows)
    if gap is None or seen is None or _has_gap(rows[-1]["val_loss"], seen, GAP_FACTOR):
        return None
    last = rows[-1]
    parts = ", ".join(f"{name.removeprefix('gap_')} {last[name]:+.3g}" for name in _PARTS
                      if name in last)
    # The parts that widen the gap (one at least: without them it would be generalization's).
    widen = [(words, last[name]) for name, words in _CARRIERS if last.get(name, 0.0) > 0]
    carriers = " and ".join(words for words, _ in widen) or "its other parts"
    share = "the gap is mostly" if sum(v for _, v in widen) > last[_GENERALIZATION] else \
        "the rest of the gap is"
    return (f"{gap}, but only {_times(last['val_loss'], seen)} the eval-mode loss "
            f"{_g(seen)} of the same model on training samples, under the "
            f"{GAP_FACTOR:g}x that marks overfitting: {share} {carriers} (parts: {parts})")


def _slow_validation(rows: list[dict[str, float]]) -> str | None:
    if len(rows) < 2 or _final_gap(rows):
        return None
    k = max(1, len(rows) // 3)
    val = sum(r["val_loss"] for r in rows[:k]) / k
    data = sum(r["data_loss"] for r in rows[:k]) / k
    if not _has_gap(val, data, LAG_FACTOR):
        return None
    last = rows[-1]
    return (f"val loss averaged {_times(val, data)} the data loss over the first {k} epoch(s) "
            f"({_g(val)} vs {_g(data)}) and closed to {_times(last['val_loss'], last['data_loss'])}"
            f" by epoch {len(rows)}")


_CHECKS = {
    "loss-rising": _loss_rising,
    "stalled": _stalled,
    "penalty-dominated": _penalty_dominated,
    "generalization-gap": _generalization_gap,
    "mode-gap": _mode_gap,
    "slow-validation": _slow_validation,
}
