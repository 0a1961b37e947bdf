"""Early-loss regressions: OLS with HC3 robust standard errors and 95% t intervals.

The early total, data and penalty losses are each regressed on one design::

    y ~ log10_n_params + log10_lr + log10_batch_size + log10_weight_decay
        + mode[...] + log10_n_params:log10_lr

The controls are centred at the study's medians (on the log scale) and the interaction uses a
centred ``log10_n_params`` too, so the ``log10_n_params`` coefficient is the change of the early
loss per decade of parameters *at the median lr and batch size* (SPEC section 6: the size effect
on the data loss depends strongly on lr). OLS is linear in the response, so with one design the
three size coefficients add up exactly: total = data + penalty.

A dimension the study fixed gives a constant column; it is dropped (listed in ``dropped``),
never fatal. A fit that cannot be made (too few rows, a singular design) comes back marked
``usable=False`` with a one-line ``note`` instead of raising.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import statsmodels.api as sm

from study.analysis.table import numeric

__all__ = [
    "CI_LEVEL",
    "CONST",
    "CONTROLS",
    "COV_TYPE",
    "INTERACTION",
    "REFERENCE_MODE",
    "RESPONSES",
    "SIZE",
    "ModelFit",
    "decomposition_block",
    "design_matrix",
    "fit",
    "fit_decomposition",
    "reference_mode",
]

CONST = "const"
SIZE = "log10_n_params"
CONTROLS = ("log10_lr", "log10_batch_size", "log10_weight_decay")
INTERACTION = "log10_n_params:log10_lr"
# Treatment coding: effects of the other modes are shifts against "no penalty at all".
REFERENCE_MODE = "none"
CI_LEVEL = 0.95
# HC3 (MacKinnon-White) behaves best of the HC family in small samples; studies are 10-100 rows.
COV_TYPE = "HC3"
# Response of each decomposition model (SPEC section 6).
RESPONSES = {"total": "early_loss", "data": "early_data_loss", "penalty": "early_penalty"}
# A column whose spread is below this (relative to its magnitude) is a fixed dimension.
_CONSTANT_RTOL = 1e-12
# A leverage this close to 1 makes HC3's 1/(1 - h)^2 weight a ratio of rounding errors.
_LEVERAGE_ONE = 1e-8


@dataclasses.dataclass(frozen=True)
class ModelFit:
    """One fitted regression.

    Attributes:
        name: ``total``, ``data``, ``penalty`` or ``explain``.
        formula: The model in formula notation.
        n: Rows used.
        r2: Coefficient of determination (``None`` when undefined: a constant response).
        coefficients: ``{term: {"estimate", "ci95": [lo, hi], "p_value"}}``; empty when unusable.
        dropped: Terms left out because the study held them constant.
        cov_type: ``HC3``, or ``HC1`` when HC3 was not finite (a trial with leverage 1).
        usable: Whether the fit could be made.
        note: One line on a fallback or on why the fit is unusable.
    """

    name: str
    formula: str
    n: int
    r2: float | None
    coefficients: dict[str, dict[str, Any]]
    dropped: tuple[str, ...] = ()
    cov_type: str = COV_TYPE
    usable: bool = True
    note: str | None = None

    def effect(self, term: str = SIZE) -> dict[str, Any] | None:
        """``{"estimate", "ci95"}`` of ``term``, or ``None`` when the fit has no such term."""
        coefficient = self.coefficients.get(term) if self.usable else None
        if coefficient is None:
            return None
        return {"estimate": coefficient["estimate"], "ci95": list(coefficient["ci95"])}

    def to_dict(self) -> dict[str, Any]:
        """The SPEC section 6 model block: formula, n, r2, coefficients."""
        return {
            "formula": self.formula, "n": self.n, "r2": self.r2,
            "coefficients": {k: {"estimate": v["estimate"], "ci95": list(v["ci95"]),
                                 "p_value": v["p_value"]} for k, v in self.coefficients.items()},
        }


def reference_mode(modes: Iterable[str]) -> str | None:
    """The reference penalty mode: ``none`` if present, else the alphabetically first."""
    present = sorted({str(m) for m in modes})
    if not present:
        return None
    return REFERENCE_MODE if REFERENCE_MODE in present else present[0]


def design_matrix(
    table: pd.DataFrame, *, interaction: bool = True
) -> tuple[pd.DataFrame, list[str], dict[str, float]]:
    """The regression design of the usable trials in ``table``.

    Args:
        table: Usable trials (:func:`~study.analysis.table.usable_trials`).
        interaction: Include ``log10_n_params:log10_lr`` when both vary.

    Returns:
        ``(X, dropped, centers)``: ``X`` has a ``const`` column and the varying terms (index of
        ``table``); ``dropped`` names the terms left out because the study held them constant;
        ``centers`` maps each log10 term to its median (the point the controls are centred at).
    """
    log_size = np.log10(numeric(table["n_params"]))
    columns: dict[str, np.ndarray] = {CONST: np.ones(len(table))}
    dropped: list[str] = []
    centers = {SIZE: _median(log_size)}
    if _varies(log_size):
        columns[SIZE] = log_size
    else:
        dropped.append(SIZE)
    decay = numeric(table["weight_decay"])
    raw = {"log10_lr": numeric(table["lr"]), "log10_batch_size": numeric(table["batch_size"]),
           "log10_weight_decay": decay if np.all(decay > 0) else None}
    for name, values in raw.items():
        if values is None:
            dropped.append(name)
            continue
        logged = np.log10(values)
        centers[name] = _median(logged)
        if _varies(logged):
            columns[name] = logged - centers[name]
        else:
            dropped.append(name)
    modes = table["penalty_mode"].astype(str).to_numpy()
    present = sorted(set(modes))
    if len(present) > 1:
        reference = reference_mode(present)
        for mode in present:
            if mode != reference:
                columns[f"mode[{mode}]"] = (modes == mode).astype(float)
    else:
        dropped.append("penalty_mode")
    if interaction:
        if SIZE in columns and "log10_lr" in columns:
            columns[INTERACTION] = (log_size - centers[SIZE]) * columns["log10_lr"]
        else:
            dropped.append(INTERACTION)
    return pd.DataFrame(columns, index=table.index), dropped, centers


def fit(
    y: pd.Series, X: pd.DataFrame, *, name: str, formula: str, dropped: Iterable[str] = (),
) -> ModelFit:
    """OLS of ``y`` on ``X`` with HC3 standard errors and 95% t intervals (df = n - k).

    Degenerate inputs (n <= number of columns, non-finite values, a singular design) give a
    fit marked ``usable=False`` with a one-line ``note``. When HC3 is undefined or not finite (a
    trial with leverage 1, e.g. the only trial of a penalty mode) the fit falls back to HC1 and
    says so in ``cov_type`` and ``note``.

    Args:
        y: The response, aligned with ``X``.
        X: The design (:func:`design_matrix`), including ``const``.
        name: The model's name.
        formula: The model in formula notation.
        dropped: Terms the design left out.

    Returns:
        The :class:`ModelFit`.
    """
    response = numeric(y)
    design = X.to_numpy(dtype=float)
    n, k = design.shape
    base = {"name": name, "formula": formula, "n": n, "dropped": tuple(dropped)}
    if n <= k:
        return _unusable(base, f"{n} usable trials for {k} coefficients; need more than {k}")
    if not (np.all(np.isfinite(response)) and np.all(np.isfinite(design))):
        return _unusable(base, "the response or the design has non-finite values")
    if np.linalg.matrix_rank(design) < k:
        return _unusable(base, "singular design: the varying hyperparameters are collinear "
                               f"({', '.join(c for c in X.columns if c != CONST)})")
    cov_type, note = COV_TYPE, None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        plain = sm.OLS(response, design).fit()
        leverage = np.einsum("ij,jk,ik->i", design, plain.normalized_cov_params, design)
        if np.max(leverage) > 1 - _LEVERAGE_ONE:
            cov_type = "HC1"
            note = ("HC3 is undefined (a trial with leverage 1, e.g. the only trial of a "
                    "penalty mode); HC1 used")
        result = plain.get_robustcov_results(cov_type=cov_type, use_t=True)
        if not np.all(np.isfinite(result.bse)) and cov_type == COV_TYPE:
            cov_type, note = "HC1", "HC3 standard errors were not finite; HC1 used"
            result = plain.get_robustcov_results(cov_type=cov_type, use_t=True)
        if not np.all(np.isfinite(result.bse)):
            return _unusable(base, "robust standard errors are not finite")
        interval = np.asarray(result.conf_int(alpha=1 - CI_LEVEL))
        p_values = np.asarray(result.pvalues)
        r2 = float(result.rsquared)
    coefficients = {
        term: {"estimate": float(result.params[i]),
               "ci95": [float(interval[i, 0]), float(interval[i, 1])],
               "p_value": _finite_or_none(p_values[i])}
        for i, term in enumerate(X.columns)
    }
    return ModelFit(**base, r2=_finite_or_none(r2), coefficients=coefficients,
                    cov_type=cov_type, note=note)


def fit_decomposition(usable: pd.DataFrame) -> dict[str, Any]:
    """Fit the early total, data and penalty losses on one design, plus the ``explain`` model.

    The ``explain`` model is the pooled ``early_loss ~ log10_n_params + early_penalty +
    controls`` without the size x lr interaction (SPEC section 6: kept for reference; it is
    misspecified where the size effect depends on lr).

    Args:
        usable: Usable trials (:func:`~study.analysis.table.usable_trials`).

    Returns:
        ``{"models": {total, data, penalty, explain: ModelFit}, "decomposition": block,
        "dropped": [...], "centers": {...}, "mode_reference": str | None}``.
    """
    X, dropped, centers = design_matrix(usable)
    rhs = " + ".join(c for c in X.columns if c != CONST) or "1"
    models = {
        key: fit(usable[column], X, name=key, formula=f"{column} ~ {rhs}", dropped=dropped)
        for key, column in RESPONSES.items()
    }
    pooled, pooled_dropped, _ = design_matrix(usable, interaction=False)
    penalty = numeric(usable["early_penalty"])
    if _varies(penalty):
        at = list(pooled.columns).index(SIZE) + 1 if SIZE in pooled.columns else 1
        pooled.insert(at, "early_penalty", penalty)
    else:
        pooled_dropped.append("early_penalty")
    pooled_rhs = " + ".join(c for c in pooled.columns if c != CONST) or "1"
    models["explain"] = fit(usable["early_loss"], pooled, name="explain",
                            formula=f"early_loss ~ {pooled_rhs}", dropped=pooled_dropped)
    return {
        "models": models,
        "decomposition": decomposition_block(models),
        "dropped": dropped,
        "centers": centers,
        "mode_reference": None if "penalty_mode" in dropped
        else reference_mode(usable["penalty_mode"].astype(str)),
    }


def decomposition_block(models: Mapping[str, ModelFit]) -> dict[str, Any]:
    """The SPEC ``decomposition`` block from the ``total``, ``data`` and ``penalty`` fits.

    Each ``width_effect_*`` is ``{"estimate", "ci95"}`` of the ``log10_n_params`` coefficient
    (change of the early loss per decade of parameters at the median lr and batch size), or
    ``None`` when it could not be estimated. ``penalty_share`` is the penalty effect over the
    total effect, ``None`` unless the total effect is > 0.
    """
    total, data, penalty = (models[k].effect(SIZE) for k in ("total", "data", "penalty"))
    share = None
    if total is not None and penalty is not None and total["estimate"] > 0:
        share = penalty["estimate"] / total["estimate"]
    return {"width_effect_total": total, "width_effect_data": data,
            "width_effect_penalty": penalty, "penalty_share": share}


# -- internals --------------------------------------------------------------------------------
def _median(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else float("nan")


def _varies(values: np.ndarray) -> bool:
    finite = values[np.isfinite(values)]
    if finite.size < 2:
        return False
    scale = max(1.0, float(np.max(np.abs(finite))))
    return bool(np.ptp(finite) > _CONSTANT_RTOL * scale)


def _finite_or_none(value: Any) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def _unusable(base: Mapping[str, Any], note: str) -> ModelFit:
    return ModelFit(**base, r2=None, coefficients={}, usable=False, note=note)
