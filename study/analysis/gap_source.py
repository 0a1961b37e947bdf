"""The trials of the gap question from a trial table: their per-epoch parts (``gap_curve``),
what their models contain, and the setting each belongs to.

What a model contains is read from what it logged and trained with, without another write per
trial: a model with both BatchNorm and dropout logs the split of the mode part; a trial with
dropout and no split has no BatchNorm; a trial without dropout has only BatchNorm to put in
the mode part (with neither, the mode part is zero and never carries the gap).
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


def setting_label(row: Any, *, with_momentum: bool = False) -> str:
    """``adam, bn 0.01, dropout 0`` (and ``, momentum 0.5`` for SGD when momenta differ)."""
    optimizer = str(_value(row, "optimizer"))
    label = (f"{optimizer}, bn {float(_value(row, 'bn_momentum')):g}, "
             f"dropout {float(_value(row, 'dropout')):g}")
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
    labels = [setting_label(row, with_momentum=with_momentum) for row in rows]
    grouped = 1 < len(set(labels)) <= MAX_GROUPS
    trials = []
    for row, label in zip(rows, labels, strict=True):
        curve = row["gap_curve"]
        split = any("gap_mode_batchnorm" in record for record in curve)
        dropout = float(_value(row, "dropout")) > 0
        trials.append(GapTrial(curve=curve, has_batchnorm=split or not dropout,
                               has_dropout=split or dropout,
                               group=label if grouped else None))
    return trials


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
