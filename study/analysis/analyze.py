"""The ``analysis.json`` document (SPEC section 6, schema ``study.analysis/1``) of a trial table."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from study.analysis.regression import (
    CI_LEVEL,
    CONST,
    RESPONSES,
    SIZE,
    ModelFit,
    decomposition_block,
    fit_decomposition,
)
from study.analysis.table import numeric, usable_trials
from study.analysis.verdict import (
    MIN_TRIALS,
    MORE_TRIALS_CAP,
    NO_INCREASE_FRACTION,
    no_increase_tolerance,
    verdict,
)

__all__ = ["MODEL_NAMES", "SCHEMA", "analyze", "write_analysis"]

SCHEMA = "study.analysis/1"
MODEL_NAMES = ("total", "data", "penalty", "explain")


def analyze(table: pd.DataFrame, *, study_name: str, early_epochs: int) -> dict[str, Any]:
    """Fit the early-loss decomposition of a trial table and draw the verdict.

    Args:
        table: The trial table (:func:`~study.analysis.table.trial_table` or
            :func:`~study.analysis.table.trial_table_from_mlflow`); unusable rows are skipped.
        study_name: The study's name, recorded in the document.
        early_epochs: Epochs averaged into the early losses, recorded in the document.

    Returns:
        The ``analysis.json`` document: the SPEC keys (``schema``, ``study_name``,
        ``n_trials_used``, ``early_epochs``, ``models``, ``decomposition``, ``verdict``) plus
        ``n_trials_total``, ``n_trials_by_state``, ``medians``, ``centers``, ``dropped``,
        ``mode_reference``, ``fits`` (covariance type, usability and note of each model) and
        ``thresholds``. JSON-ready: plain Python types, ``None`` for anything undefined.
    """
    usable = usable_trials(table)
    n = len(usable)
    fitted = fit_decomposition(usable) if n else _no_fits()
    models: dict[str, ModelFit] = fitted["models"]
    typical = _median(numeric(usable["early_loss"]))
    medians = {
        "lr": _unlog(fitted["centers"].get("log10_lr")),
        "batch_size": _unlog(fitted["centers"].get("log10_batch_size")),
        "weight_decay": _unlog(fitted["centers"].get("log10_weight_decay")),
        "n_params": _unlog(fitted["centers"].get(SIZE)),
        "early_loss": typical,
    }
    document = {
        "schema": SCHEMA,
        "study_name": study_name,
        "n_trials_used": n,
        "early_epochs": int(early_epochs),
        "models": {name: models[name].to_dict() for name in MODEL_NAMES},
        "decomposition": fitted["decomposition"],
        "verdict": verdict(fitted["decomposition"], n=n, typical_loss=typical, at=medians,
                           reason=_reason(models["total"], fitted["dropped"])),
        "n_trials_total": len(table),
        "n_trials_by_state": {str(k): int(v) for k, v in
                              table["state"].value_counts(sort=False).items()},
        "medians": medians,
        "centers": fitted["centers"],
        "dropped": list(fitted["dropped"]),
        "mode_reference": fitted["mode_reference"],
        "fits": {name: {"usable": m.usable, "cov_type": m.cov_type, "note": m.note,
                        "dropped": list(m.dropped)} for name, m in models.items()},
        "thresholds": {
            "ci_level": CI_LEVEL, "min_trials": MIN_TRIALS,
            "no_increase_fraction": NO_INCREASE_FRACTION,
            "no_increase_tolerance": no_increase_tolerance(typical),
            "more_trials_cap": MORE_TRIALS_CAP,
        },
    }
    return _jsonable(document)


def write_analysis(document: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``document`` as JSON (indent 2), creating parent folders.

    Args:
        document: An :func:`analyze` document.
        path: Target file.

    Returns:
        The path written.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(_jsonable(document), indent=2, allow_nan=False) + "\n",
                      encoding="utf-8")
    return target


# -- internals --------------------------------------------------------------------------------
def _no_fits() -> dict[str, Any]:
    note = "no usable trials"
    models = {
        name: ModelFit(name=name, formula=_empty_formula(name), n=0, r2=None, coefficients={},
                       usable=False, note=note)
        for name in MODEL_NAMES
    }
    return {"models": models, "decomposition": decomposition_block(models), "dropped": [],
            "centers": {}, "mode_reference": None}


def _empty_formula(name: str) -> str:
    response = RESPONSES.get(name, "early_loss")
    return f"{response} ~ {SIZE} + controls"


def _reason(total: ModelFit, dropped: list[str]) -> str | None:
    if total.n == 0:
        return None  # too few trials: the verdict says so itself
    if SIZE in dropped:
        return "the parameter count is the same in every usable trial (width is fixed)"
    if not total.usable:
        return total.note
    if set(total.coefficients) <= {CONST}:
        return "the design has no size term"
    return None


def _median(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else None


def _unlog(center: float | None) -> float | None:
    if center is None or not math.isfinite(center):
        return None
    return float(10.0 ** center)


def _jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars unwrapped, tuples as lists, NaN and inf as ``None``."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    if value is pd.NA or value is pd.NaT:
        return None
    return str(value)
