"""The size effect of one question: how much higher the loss of a bigger model is, split into
the data part and the L2 penalty part, at any weight decay.

Two questions (:data:`QUESTIONS`): ``init``, the loss of the initial weights before the first
update ("does a bigger model start higher?"), and ``early``, the mean loss over the first
epochs ("is its first epoch higher?", what Keras prints).

The size effect of a part is its change between two model sizes fixed by the question
(:mod:`study.analysis.span`: by default the smallest and largest model of the searched width
range), per decade of parameters: ``(f(P_B) - f(P_A)) / (log10 P_B - log10 P_A)``, at the
reference learning rate and batch size (the study's medians) and a given weight decay.
total = data + penalty.

- **Data part**: OLS of the data loss on ``log10 n_params`` and the controls that can matter.
  At initialization that is the batch size alone (train-mode BatchNorm): the initial weights do
  not depend on lr, weight decay or penalty mode, so every trial is pooled. In the early window
  the lr, batch size and weight decay matter, with size x lr and size x weight decay
  interactions (the size effect on the data loss depends strongly on lr), fitted per penalty
  mode. The data loss is close to linear in ``log10 n_params``, so its size effect is the slope.
- **Penalty part**: in ``l2-in-loss`` the penalty is exactly ``wd * ||w||^2``, and
  ``||w||^2 = penalty / wd`` is read off every trial with little noise. It is regressed on the
  *width* (plus the controls and their width interactions, early): ``||w||^2`` is a sum over
  layers of output channels times the initialization's gain, linear in the width whenever the
  channels scale with it, so the model extrapolates as the network does where the trials fell
  short of a compared size. The part at weight decay ``wd`` is
  ``wd * (W(B) - W(A)) / (log10 P_B - log10 P_A)``. Zero in every other mode.

Standard errors: robust OLS for both parts (:mod:`study.analysis.regression`; a weighted fit
with a modelled variance for ``||w||^2`` covered a known truth in only 80-87% of simulated
12-trial studies: weights estimated from the same few residuals overfit them). Both parts
are fitted on the same trials, so the total's variance adds their covariance: the correlation
of the two estimates comes from one cluster-robust sandwich over trials (clusters: training
seeds), applied to each part's own standard error; its df by Welch-Satterthwaite.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from study.analysis.estimate import Estimate, Estimates
from study.analysis.regression import CONST, ModelFit, fit, unusable, varies
from study.analysis.span import SizeMap, Span, compare_span
from study.analysis.table import numeric

__all__ = ["L2", "QUESTIONS", "RESPONSES", "SIZE", "WIDTH", "Effects", "Reference", "SizeModel",
           "controls_at", "design_rows", "fit_part", "fit_size_model", "reference_mode"]

QUESTIONS = ("init", "early")
RESPONSES = {q: {"total": f"{q}_loss", "data": f"{q}_data_loss", "penalty": f"{q}_penalty"}
             for q in QUESTIONS}
SIZE = "log10_n_params"
WIDTH = "width"
L2 = "l2-in-loss"
# Distinct widths from which the early ||w||^2 gets a quadratic term in width: linear at
# initialization (a sum of output channels times the init's gain: no curvature to fit, and a
# needless term doubled the spread of replicate estimates), it bends a little over training
# (small models' weights grow more).
_CURVED_WIDTHS = 5
# Without l2-in-loss, the reference mode is "none" if present (no decay at all).
_FALLBACK_MODE = "none"


@dataclasses.dataclass(frozen=True)
class Reference:
    """Where effects are read: the compared sizes and the medians of the controls (log10)."""

    span: Span
    centers: dict[str, float]
    sizes: SizeMap

    @property
    def x_lo(self) -> float:
        return self.span.x[0]

    @property
    def x_hi(self) -> float:
        return self.span.x[1]

    @property
    def decades(self) -> float:
        """Decades of parameters between the two compared models."""
        return self.x_hi - self.x_lo

    @property
    def mid(self) -> float:
        return (self.x_lo + self.x_hi) / 2

    @property
    def width_mid(self) -> float:
        return (self.span.widths[0] + self.span.widths[1]) / 2

    @property
    def width_half(self) -> float:
        return max((self.span.widths[1] - self.span.widths[0]) / 2, 0.5)

    def median(self, name: str) -> float | None:
        """The median of ``name`` (lr, batch_size or weight_decay) on its own scale, to 12
        significant digits (10 ** log10(32) is 32.00000000000001)."""
        value = self.centers.get(f"log10_{name}")
        return None if value is None or not math.isfinite(value) else float(f"{10**value:.12g}")


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
    penalty: ModelFit | None  # ||w||^2 of the l2-in-loss trials against width
    n: int
    modes: tuple[str, ...]

    def effects(self, weight_decay: float, mode: str) -> Effects | None:
        """The size effects at ``weight_decay`` in ``mode`` (``None``: not estimable)."""
        found = self.effects_at(np.array([weight_decay], dtype=float), mode)
        return None if found is None else Effects(*(part.at(0) for part in found))

    def why_not(self, mode: str) -> str | None:
        """Why :meth:`effects` in ``mode`` is ``None``: which regression could not be fitted
        and why (too few trials for its coefficients, a singular design); ``None`` if it is
        estimable."""
        fits = [("data", self.data.get(mode))] + ([("penalty", self.penalty)] if mode == L2
                                                  else [])
        for part, found in fits:
            if found is None:
                return f"the {part} part's regression has no {mode} trials"
            if found.usable:
                continue
            if 0 < found.n <= found.k:
                return (f"the {part} part's regression has {found.k} coefficients and "
                        f"{found.n} usable trials; run at least {found.k + 1 - found.n} more")
            return f"the {part} part's regression cannot be fitted ({found.note})"
        return None

    def effects_at(self, weight_decays: np.ndarray, mode: str
                   ) -> tuple[Estimates, Estimates, Estimates] | None:
        """``(total, data, penalty)`` at each of ``weight_decays`` in ``mode`` (``None``: not
        estimable)."""
        data_fit = self.data.get(mode)
        if data_fit is None or not data_fit.usable:
            return None
        ref, m = self.reference, len(weight_decays)
        logs = controls_at(ref, weight_decays)
        C_data = self._difference("data", data_fit, logs, m)
        data = data_fit.combine_many(C_data)
        if mode != L2:
            return data, data, Estimates.exact(m)
        model = self.penalty
        if model is None or not model.usable:
            return None
        C_pen = self._difference("penalty", model, logs, m)
        scale = weight_decays / ref.decades
        penalty = model.combine_many(C_pen).scaled(scale)
        rho = data_fit.correlation(C_data, model, C_pen)
        return data.plus(penalty, rho), data, penalty

    def _difference(self, part: str, model: ModelFit, logs: Mapping[str, np.ndarray],
                    m: int) -> np.ndarray:
        """The design rows at the larger minus the smaller compared size (per decade for the
        data part, a plain difference of ``||w||^2`` for the penalty part)."""
        ref = self.reference
        rows = [design_rows(self.question, part, model, np.full(m, x), logs, ref,
                            widths=np.full(m, w))
                for x, w in zip(ref.span.x, ref.span.widths, strict=True)]
        return (rows[1] - rows[0]) / (ref.decades if part == "data" else 1.0)

    def weight_sq_norm(self, n_params: np.ndarray, weight_decay: float) -> np.ndarray:
        """The fitted ``||w||^2`` at ``n_params`` (reference lr and batch size), for figures."""
        model, ref = self.penalty, self.reference
        x = np.log10(np.asarray(n_params, dtype=float))
        if model is None or not model.usable:
            return np.full(len(x), np.nan)
        logs = controls_at(ref, np.full(len(x), weight_decay))
        rows = design_rows(self.question, "penalty", model, x, logs, ref,
                           widths=ref.sizes.width(10**x))
        return rows @ model.params


def reference_mode(modes: Any) -> str | None:
    """The mode the answer is given for: ``l2-in-loss`` (the penalty is in the reported loss)
    if present, else ``none``, else the alphabetically first."""
    present = sorted({str(m) for m in modes})
    for preferred in (L2, _FALLBACK_MODE):
        if preferred in present:
            return preferred
    return present[0] if present else None


def fit_size_model(usable: pd.DataFrame, question: str, *,
                   compare_widths: tuple[float, float] | None = None,
                   source: str = "configured") -> SizeModel | None:
    """Fit the data and penalty models of ``question`` on its usable trials.

    Args:
        usable: The question's usable trials.
        question: ``init`` or ``early``.
        compare_widths: The two widths the effect is read between (``None``: the smallest and
            largest width of the trials).
        source: Where ``compare_widths`` came from (``configured`` or ``given``).

    Returns ``None`` when the trials span no range of parameter counts.
    """
    x = np.log10(numeric(usable["n_params"]))
    if len(usable) == 0 or not varies(x):
        return None
    sizes = SizeMap.from_trials(usable)
    span = compare_span(sizes, compare_widths, source=source)
    if span is None:
        return None
    centers = {}
    for name in ("lr", "batch_size", "weight_decay"):
        values = numeric(usable[name])
        values = values[values > 0]
        centers[f"log10_{name}"] = float(np.median(np.log10(values))) if values.size else math.nan
    ref = Reference(span, centers, sizes)
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
        penalty = fit_part(l2.assign(_wsq=np.where(wsq > 0, wsq, np.nan)), question, "penalty",
                           "_wsq", ref)
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
           ref: Reference, widths: np.ndarray, decay: bool = True,
           curved: bool = True) -> dict[str, np.ndarray]:
    """Every candidate column of a design, at sizes ``x`` (log10 n_params) or ``widths`` and
    log10 controls ``logs``; ``decay``: whether weight decay can matter (not in mode
    ``none``)."""
    c = {k: logs[k] - ref.centers[k] for k in logs}
    if part == "data":
        label, size = SIZE, x - ref.mid
    else:  # scaled to about [-1, 1] over the compared widths, for a well-conditioned design
        label, size = WIDTH, (widths - ref.width_mid) / ref.width_half
    terms = {CONST: np.ones_like(size), label: size}
    if part == "penalty" and curved:
        terms[f"{WIDTH}^2"] = size**2
    if question == "init":
        if part == "data":
            terms["log10_batch_size"] = c["log10_batch_size"]
        return terms
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
    """The ``data`` design (or the ``penalty`` one, for ``||w||^2`` against width) of
    ``question`` fitted to ``response`` on ``rows``."""
    name = f"{question}_{part}"
    x = np.log10(numeric(rows["n_params"]))
    modes = set(pd.unique(rows["penalty_mode"].astype(str)))
    widths = numeric(rows["width"])
    curved = question == "early" and \
        len(np.unique(widths[np.isfinite(widths)])) >= _CURVED_WIDTHS
    terms = _terms(part, question, x, _logs(rows), ref, widths,
                   decay=modes != {_FALLBACK_MODE}, curved=curved)
    kept = {CONST: terms[CONST]}
    dropped = [k for k, v in terms.items() if k != CONST and not (np.all(np.isfinite(v))
                                                                  and varies(v))]
    kept.update({k: v for k, v in terms.items() if k != CONST and k not in dropped})
    X = pd.DataFrame(kept, index=rows.index)
    y = numeric(rows[response])
    formula = f"{'||w||^2' if part == 'penalty' else response} ~ " + \
        (" + ".join(c for c in X.columns if c != CONST) or "1")
    if len(rows) == 0:
        return unusable(name=name, formula=formula, n=0, note="no usable trials")
    seeds = rows["train_seed"].to_numpy() if "train_seed" in rows else None
    if seeds is not None and pd.isna(seeds).any():
        seeds = None
    if part == "penalty":
        model = _fit_weighted(y, X, widths, name=name, formula=formula, dropped=dropped,
                              clusters=seeds, power=0.0 if question == "init" else 2.0)
        scale = (f"width is centred and scaled: (width - {ref.width_mid:g}) / "
                 f"{ref.width_half:g}, -1 to 1 over the compared widths")
        weights = "" if question == "init" else "; weighted by 1 / width^2"
        return dataclasses.replace(model, note="; ".join(
            n for n in (scale + weights, model.note) if n))
    return fit(y, X, name=name, formula=formula, dropped=dropped, clusters=seeds)


def _fit_weighted(y: np.ndarray, X: pd.DataFrame, widths: np.ndarray, *, power: float,
                  **kwargs: Any) -> ModelFit:
    """OLS of ``y / width^(power/2)`` on ``X / width^(power/2)``: weights fixed by how the
    noise of ``||w||^2`` grows with width, not estimated from the residuals (over training
    the noise is multiplicative, variance ~ width^2; at initialization it is U-shaped and
    modest, so unweighted); the robust variance covers whatever they miss."""
    root = 1.0 / np.sqrt(np.clip(widths, 1e-9, None) ** power)
    return fit(np.asarray(y, dtype=float) * root, X.mul(root, axis=0), **kwargs)


def design_rows(question: str, part: str, model: ModelFit, x: np.ndarray,
                logs: Mapping[str, np.ndarray], ref: Reference, *,
                widths: np.ndarray | None = None) -> np.ndarray:
    """The design rows of ``model`` at sizes ``x`` (log10 n_params; ``widths`` for the
    penalty part, else derived from ``x``) and log10 controls ``logs``."""
    if widths is None:
        widths = ref.sizes.width(10**x) if part == "penalty" else np.zeros(len(x))
    terms = _terms(part, question, x, logs, ref, np.asarray(widths, dtype=float))
    return np.column_stack([terms[c] if c in terms else np.zeros(len(x))
                            for c in model.columns])
