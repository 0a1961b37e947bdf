"""The trials of the gap question from a trial table: their per-epoch parts (``gap_curve``),
what their models contain, and the setting each belongs to.

What a model contains is read from what it logged and trained with, without another write per
trial: a model with both BatchNorm and dropout logs the split of the mode part; a trial with
dropout and no split has no BatchNorm; a trial without dropout has BatchNorm where its mode
part is not 0 (with neither, eval and train mode give the same losses, so the mode part is 0 at
every epoch and never carries the gap).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from study.analysis.gap import GapTrial, gap_block
from study.analysis.table import TRAINING_DEFAULTS, USABLE_STATES

__all__ = ["MAX_GROUPS", "gap_trials", "setting_label", "study_gap_block"]

# More settings than this is a search over a range, not a designed comparison: no groups.
MAX_GROUPS = 12
# A mode part this small (nats) is rounding: BatchNorm's running statistics move it by far more.
_MODE_ZERO = 1e-6


def setting_label(row: Any, *, with_momentum: bool = False, with_bn: bool = True) -> str:
    """``adam, bn 0.01, dropout 0`` (and ``, momentum 0.5`` for SGD when momenta differ;
    no ``bn`` for models without BatchNorm, where its momentum changes nothing)."""
    optimizer = str(_value(row, "optimizer"))
    bn = f"bn {float(_value(row, 'bn_momentum')):g}, " if with_bn else ""
    label = f"{optimizer}, {bn}dropout {float(_value(row, 'dropout')):g}"
    if with_momentum and optimizer == "sgd":
        label += f", momentum {float(_value(row, 'momentum')):g}"
    return label


def gap_trials(table: pd.DataFrame) -> list[GapTrial]:
    """The finished (complete or pruned) trials that measured the gap, grouped by setting when
    the study compares a few settings of the training options."""
    rows = [row for _, row in table.iterrows()
            if row["state"] in USABLE_STATES and isinstance(row.get("gap_curve"), list)]
    if not rows:
        return []
    sgd = [row for row in rows if str(_value(row, "optimizer")) == "sgd"]
    with_momentum = len({float(_value(row, "momentum")) for row in sgd}) > 1
    kinds = [_kinds(row) for row in rows]
    with_bn = any(batchnorm for batchnorm, _ in kinds)
    labels = [setting_label(row, with_momentum=with_momentum, with_bn=with_bn) for row in rows]
    grouped = 1 < len(set(labels)) <= MAX_GROUPS
    return [GapTrial(curve=row["gap_curve"], has_batchnorm=batchnorm, has_dropout=dropout,
                     group=label if grouped else None, seed=_seed(row))
            for row, label, (batchnorm, dropout) in zip(rows, labels, kinds, strict=True)]


def _seed(row: Any) -> Any:
    """The trial's training seed (``None`` where it has none recorded: a sample of its own)."""
    seed = row.get("train_seed")
    return None if seed is None or pd.isna(seed) else seed


def _kinds(row: Any) -> tuple[bool, bool]:
    """Whether the row's model has BatchNorm and dropout (module docs)."""
    curve = row["gap_curve"]
    split = any("gap_mode_batchnorm" in record for record in curve)
    dropout = float(_value(row, "dropout")) > 0
    return split or (not dropout and _mode_moves(curve)), split or dropout


def _mode_moves(curve: list[Any]) -> bool:
    """Whether any epoch's mode part is not 0 (within rounding: runs of earlier versions
    measured the two modes in different chunks)."""
    values = [record.get("gap_mode") for record in curve if isinstance(record, dict)]
    return any(isinstance(v, (int, float)) and abs(v) > _MODE_ZERO for v in values)


def study_gap_block(table: pd.DataFrame) -> dict[str, Any] | None:
    """The ``gap`` block of a study's table; ``None`` when no trial measured the gap (a study
    of an earlier version, or a table read from MLflow, which keeps no per-epoch curves)."""
    trials = gap_trials(table)
    return gap_block(trials) if trials else None


def _value(row: Any, name: str) -> Any:
    """The row's training option ``name``, its default where the row has none."""
    value = row.get(name) if hasattr(row, "get") else None
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return TRAINING_DEFAULTS[name]
    return value
