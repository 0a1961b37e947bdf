"""Small shared helpers of the report writers: missing values, number formatting, JSON safety."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from pathlib import PurePath
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "MISSING",
    "TRIAL_COLUMNS",
    "as_float",
    "effect",
    "fmt_ci",
    "fmt_num",
    "fmt_p",
    "is_missing",
    "jsonable",
    "numeric",
    "text",
]

MISSING = "—"
# The trial-table columns every report output carries (SPEC section 5 / study.analysis.table).
# The trials table of the report: what fits a 1280-pixel page (trials.csv holds every column).
TRIAL_COLUMNS = (
    "number", "state", "width", "lr", "batch_size", "weight_decay", "penalty_mode", "n_params",
    "init_loss", "early_loss", "early_data_loss", "early_penalty", "final_val_loss",
    "final_val_accuracy",
)
INT_COLUMNS = ("number", "width", "batch_size", "n_params")


def is_missing(value: Any) -> bool:
    """True for None, NaN, pd.NA and NaT (never raises on arrays or odd objects)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, (float, np.floating)):
        return not math.isfinite(float(value))
    return False


def as_float(value: Any) -> float:
    """``value`` as a float; NaN when missing or not a number."""
    if is_missing(value) or isinstance(value, (bool, np.bool_)):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def numeric(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A column of ``frame`` as float64 (missing, absent or non-numeric values as NaN)."""
    if column not in frame.columns:
        return np.full(len(frame), np.nan)
    series = pd.to_numeric(frame[column], errors="coerce")
    return series.to_numpy(dtype=float, na_value=np.nan)


def text(value: Any) -> str:
    """A value as one line of text ('' when missing)."""
    if is_missing(value):
        return ""
    return " ".join(str(value).split())


def fmt_num(value: Any, digits: int = 4) -> str:
    """A number for people: 4 significant digits, integers as integers, missing as a dash."""
    if is_missing(value):
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if number.is_integer() and abs(number) < 1e9:
            return str(int(number))
        return f"{number:.{digits}g}"
    return text(value)


def fmt_p(value: Any) -> str:
    """A p-value: 2 significant digits, scientific below 0.001."""
    number = as_float(value)
    if not math.isfinite(number):
        return MISSING
    return f"{number:.1e}" if number < 1e-3 else f"{number:.2g}"


def fmt_ci(ci: Any, digits: int = 3) -> str:
    """``[lo, hi]`` of a 2-sequence, a dash when absent."""
    if not isinstance(ci, (list, tuple, np.ndarray)) or len(ci) != 2:
        return MISSING
    lo, hi = (as_float(v) for v in ci)
    if not (math.isfinite(lo) or math.isfinite(hi)):
        return MISSING
    return f"[{fmt_num(lo, digits)}, {fmt_num(hi, digits)}]"


def effect(value: Any) -> tuple[float, float, float] | None:
    """``(estimate, lo, hi)`` from ``{"estimate", "ci95"}`` or a bare number; None if absent."""
    if isinstance(value, Mapping):
        estimate = as_float(value.get("estimate"))
        ci = value.get("ci95")
        lo, hi = (as_float(v) for v in ci) if isinstance(ci, (list, tuple)) and len(ci) == 2 \
            else (math.nan, math.nan)
    else:
        estimate, lo, hi = as_float(value), math.nan, math.nan
    return None if not math.isfinite(estimate) else (estimate, lo, hi)


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: NaN/inf/NA -> None, numpy -> Python, dates -> ISO text."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, (datetime, date, pd.Timestamp)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return jsonable(float(value))
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Iterable):
        return [jsonable(v) for v in value]
    return str(value)
