"""The size effect of one question: how much higher the loss of a bigger model is, split into
the data part and the L2 penalty part, at any weight decay.

Two questions (:data:`QUESTIONS`): ``init``, the loss of the initial weights before the first
update ("does a bigger model start higher?"), and ``early``, the mean loss over the first
epochs ("is its first epoch higher?", what Keras prints).

The size effect of a part is its change from the smallest to the largest model of the study,
per decade of parameters: ``(f(P_hi) - f(P_lo)) / (log10 P_hi - log10 P_lo)``, with ``P_lo``
and ``P_hi`` the extreme parameter counts among the usable trials, at the reference learning rate
and batch size (the study's medians) and a given weight decay. total = data + penalty.

- **Data part**: OLS of the data loss on ``log10 n_params`` and the controls that can matter.
  At initialization that is the batch size alone (train-mode BatchNorm): the initial weights do
  not depend on lr, weight decay or penalty mode, so every trial is pooled. In the early window
  the lr, batch size and weight decay matter, with size x lr and size x weight decay
  interactions (the size effect on the data loss depends strongly on lr), fitted per penalty
  mode. The data loss is close to linear in ``log10 n_params``, so its size effect is the slope.
- **Penalty part**: in ``l2-in-loss`` the penalty is exactly ``wd * ||w||^2``, and
  ``||w||^2 = penalty / wd`` is read off every trial with little noise. ``log ||w||^2`` is
  regressed on a cubic in ``log10 n_params`` (plus the controls, early), and the part at weight
  decay ``wd`` is ``wd * (W(P_hi) - W(P_lo)) / (log10 P_hi - log10 P_lo)``: convex in size, so
  no straight line in ``log10 n_params`` is assumed. Zero in every other mode.

Standard errors: robust OLS (:mod:`study.analysis.regression`), the delta method for the
back-transformed penalty, and Welch-Satterthwaite degrees of freedom for the sum.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from study.analysis.estimate import Estimate, Estimates
from study.analysis.regression import CONST, ModelFit, fit, fit_modelled, unusable, varies
from study.analysis.table import numeric

__all__ = ["L2", "QUESTIONS", "RESPONSES", "SIZE", "Effects", "Reference", "SizeModel",
           "controls_at", "design_rows", "fit_part", "fit_size_model", "reference_mode"]

QUESTIONS = ("init", "early")
RESPONSES = {q: {"total": f"{q}_loss", "data": f"{q}_data_loss", "penalty": f"{q}_penalty"}
             for q in QUESTIONS}
SIZE = "log10_n_params"
L2 = "l2-in-loss"
# Without l2-in-loss, the reference mode is "none" if present (no decay at all).
_FALLBACK_MODE = "none"
# The penalty model's polynomial degree in log10 n_params, by the rows it has: a cubic follows
# ||w||^2 of real architectures to 0.1% over two decades; fewer rows get fewer terms.
_DEGREE_ROWS = ((12, 3), (8, 2), (0, 1))


@dataclasses.dataclass(frozen=True)
class Reference:
    """Where effects are read: the size range and the medians of the controls (log10)."""

    x_lo: float
    x_hi: float
    centers: dict[str, float]

    @property
    def span(self) -> float:
        """Decades of parameters between the smallest and the largest model."""
        return self.x_hi - self.x_lo

    @property
    def mid(self) -> float:
        return (self.x_lo + self.x_hi) / 2

    def median(self, name: str) -> float | None:
        """The median of ``name`` (lr, batch_size or weight_decay) on its own scale."""
        value = self.centers.get(f"log10_{name}")
        return None if value is None or not math.isfinite(value) else float(10**value)


@dataclasses.dataclass(frozen=True)
class Effects:
    """The size effects of one question at one weight decay and mode (per decade)."""

    total: Estimate
    data: Estimate
    penalty: Estimate

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total.to_dict(), "data": self.data.to_dict(),
                "penalty": self.penalty.to_dict()}


@dataclasses.dataclass(frozen=True)
class SizeModel:
    """The fitted data and penalty models of one question."""

    question: str
    reference: Reference
    data: dict[str, ModelFit]  # per penalty mode; init: one pooled fit under every mode
    penalty: ModelFit | None  # log ||w||^2 in l2-in-loss trials
    n: int
    modes: tuple[str, ...]

    def effects(self, weight_decay: float, mode: str) -> Effects | None:
        """The size effects at ``weight_decay`` in ``mode`` (``None``: not estimable)."""
        found = self.effects_at(np.array([weight_decay], dtype=float), mode)
        return None if found is None else Effects(*(part.at(0) for part in found))

    def effects_at(self, weight_decays: np.ndarray, mode: str
                   ) -> tuple[Estimates, Estimates, Estimates] | None:
        """``(total, data, penalty)`` at each of ``weight_decays`` in ``mode`` (``None``: not
        estimable)."""
        data_fit = self.data.get(mode)
        if data_fit is None or not data_fit.usable:
            return None
        ref, m = self.reference, len(weight_decays)
        logs = controls_at(ref, weight_decays)
        lo, hi = (design_rows(self.question, "data", data_fit, np.full(m, x), logs, ref)
                  for x in (ref.x_lo, ref.x_hi))
        data = data_fit.combine_many((hi - lo) / ref.span)
        if mode != L2:
            return data, data, Estimates.exact(m)
        model = self.penalty
        if model is None or not model.usable:
            return None
        lo, hi = (design_rows(self.question, "penalty", model, np.full(m, x), logs, ref)
                  for x in (ref.x_lo, ref.x_hi))
        w_lo, w_hi = (_mean_of_log_normal(model, rows) for rows in (lo, hi))
        # Delta method: the difference is linear in the coefficients with this gradient.
        linear = model.combine_many(w_hi[:, None] * hi - w_lo[:, None] * lo)
        scale = weight_decays / ref.span
        penalty = Estimates(scale * (w_hi - w_lo), scale * linear.se, linear.df)
        return data + penalty, data, penalty

    def weight_sq_norm(self, n_params: np.ndarray, weight_decay: float) -> np.ndarray:
        """The fitted ``||w||^2`` at ``n_params`` (reference lr and batch size), for figures."""
        model, ref = self.penalty, self.reference
        x = np.log10(np.asarray(n_params, dtype=float))
        if model is None or not model.usable:
            return np.full(len(x), np.nan)
        logs = controls_at(ref, np.full(len(x), weight_decay))
        rows = design_rows(self.question, "penalty", model, x, logs, ref)
        return _mean_of_log_normal(model, rows)


def _mean_of_log_normal(model: ModelFit, rows: np.ndarray) -> np.ndarray:
    """``E[W]`` from a model of ``log W``: ``exp(mean + variance / 2)`` at each row."""
    return np.exp(rows @ model.params + model.residual_variance(rows) / 2)


def reference_mode(modes: Any) -> str | None:
    """The mode the answer is given for: ``l2-in-loss`` (the penalty is in the reported loss)
    if present, else ``none``, else the alphabetically first."""
    present = sorted({str(m) for m in modes})
    for preferred in (L2, _FALLBACK_MODE):
        if preferred in present:
            return preferred
    return present[0] if present else None


def fit_size_model(usable: pd.DataFrame, question: str) -> SizeModel | None:
    """Fit the data and penalty models of ``question`` on its usable trials.

    Returns ``None`` when the trials span no range of parameter counts.
    """
    x = np.log10(numeric(usable["n_params"]))
    if len(usable) == 0 or not varies(x):
        return None
    centers = {}
    for name in ("lr", "batch_size", "weight_decay"):
        values = numeric(usable[name])
        values = values[values > 0]
        centers[f"log10_{name}"] = float(np.median(np.log10(values))) if values.size else math.nan
    ref = Reference(float(x.min()), float(x.max()), centers)
    modes = tuple(sorted(str(m) for m in pd.unique(usable["penalty_mode"].astype(str))))
    response = RESPONSES[question]["data"]
    if question == "init":  # the initial weights are the same under every mode
        pooled = fit_part(usable, question, "data", response, ref)
        data = dict.fromkeys(modes, pooled)
    else:
        data = {m: fit_part(usable[usable["penalty_mode"].astype(str) == m], question, "data",
                             response, ref) for m in modes}
    penalty = None
    l2 = usable[usable["penalty_mode"].astype(str) == L2]
    l2 = l2[numeric(l2["weight_decay"]) > 0]
    if len(l2):
        wsq = numeric(l2[RESPONSES[question]["penalty"]]) / numeric(l2["weight_decay"])
        penalty = fit_part(l2.assign(_log_wsq=np.log(np.where(wsq > 0, wsq, np.nan))),
                            question, "penalty", "_log_wsq", ref)
    return SizeModel(question, ref, data, penalty, len(usable), modes)


# -- designs ----------------------------------------------------------------------------------
def controls_at(ref: Reference, weight_decays: np.ndarray) -> dict[str, np.ndarray]:
    """The log10 controls at the reference lr and batch size and each of ``weight_decays``."""
    m = len(weight_decays)
    with np.errstate(divide="ignore"):
        decay = np.where(weight_decays > 0, np.log10(np.where(weight_decays > 0,
                                                              weight_decays, 1.0)), np.nan)
    return {"log10_lr": np.full(m, ref.centers["log10_lr"]),
            "log10_batch_size": np.full(m, ref.centers["log10_batch_size"]),
            "log10_weight_decay": decay}


def _terms(part: str, question: str, x: np.ndarray, logs: Mapping[str, np.ndarray],
           ref: Reference, degree: int = 3, decay: bool = True) -> dict[str, np.ndarray]:
    """Every candidate column of a design, at sizes ``x`` and log10 controls ``logs``;
    ``decay``: whether weight decay can matter (not in mode ``none``)."""
    c = {k: logs[k] - ref.centers[k] for k in logs}
    if part == "data":
        size = x - ref.mid
        terms = {CONST: np.ones_like(x), SIZE: size}
    else:
        z = (x - ref.mid) / (ref.span / 2)
        terms = {CONST: np.ones_like(x), **{f"z{k}" if k > 1 else "z": z**k
                                            for k in range(1, degree + 1)}}
        size = z
    if question == "init":
        if part == "data":
            terms["log10_batch_size"] = c["log10_batch_size"]
        return terms
    label = SIZE if part == "data" else "z"
    terms.update({"log10_lr": c["log10_lr"], "log10_batch_size": c["log10_batch_size"],
                  f"{label}:log10_lr": size * c["log10_lr"]})
    if decay:
        terms["log10_weight_decay"] = c["log10_weight_decay"]
        terms[f"{label}:log10_weight_decay"] = size * c["log10_weight_decay"]
    return terms


def _logs(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    out = {}
    for name in ("lr", "batch_size", "weight_decay"):
        values = numeric(frame[name])
        out[f"log10_{name}"] = np.log10(np.where(values > 0, values, np.nan))
    return out


def fit_part(rows: pd.DataFrame, question: str, part: str, response: str,
             ref: Reference) -> ModelFit:
    """The ``data`` design (or the ``penalty`` one, for ``log ||w||^2``) of ``question``
    fitted to ``response`` on ``rows``."""
    name = f"{question}_{part}"
    x = np.log10(numeric(rows["n_params"]))
    degree = next(d for n_min, d in _DEGREE_ROWS if len(rows) >= n_min) \
        if part == "penalty" else 1
    degree = min(degree, max(1, len(set(np.round(x, 9))) - 1))
    modes = set(pd.unique(rows["penalty_mode"].astype(str)))
    terms = _terms(part, question, x, _logs(rows), ref, degree, decay=modes != {_FALLBACK_MODE})
    kept = {CONST: terms[CONST]}
    dropped = [k for k, v in terms.items() if k != CONST and not (np.all(np.isfinite(v))
                                                                  and varies(v))]
    kept.update({k: v for k, v in terms.items() if k != CONST and k not in dropped})
    X = pd.DataFrame(kept, index=rows.index)
    y = numeric(rows[response])
    formula = f"{'log ||w||^2' if part == 'penalty' else response} ~ " + \
        (" + ".join(c for c in X.columns if c != CONST) or "1")
    if len(rows) == 0:
        return unusable(name=name, formula=formula, n=0, note="no usable trials")
    if part == "penalty":  # the constant and the size term model the variance
        return fit_modelled(y, X, name=name, formula=formula, dropped=dropped,
                            variance_columns=2 if "z" in X.columns else 1)
    seeds = rows["train_seed"].to_numpy() if "train_seed" in rows else None
    if seeds is not None and pd.isna(seeds).any():
        seeds = None
    return fit(y, X, name=name, formula=formula, dropped=dropped, clusters=seeds)


def design_rows(question: str, part: str, model: ModelFit, x: np.ndarray,
          logs: Mapping[str, np.ndarray], ref: Reference) -> np.ndarray:
    """The design rows of ``model`` at sizes ``x`` and log10 controls ``logs``."""
    degree = sum(1 for c in model.columns if c == "z" or (c.startswith("z") and c[1:].isdigit()))
    terms = _terms(part, question, x, logs, ref, max(degree, 1))
    return np.column_stack([terms[c] if c in terms else np.zeros(len(x))
                            for c in model.columns])
