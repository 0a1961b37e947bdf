"""Ordinary least squares with robust standard errors and small-sample t intervals.

Trials are independent (each trains with its own seed); trials that share a training seed
(``study explain`` pairs a trial with its control) are not, and form one cluster. Every
estimate -- a coefficient or a linear combination such as a size effect -- gets the
cluster-robust CR2 variance (HC2 when every cluster is one trial) with Bell-McCaffrey degrees of
freedom (Imbens and Kolesar 2016): studies have 10-100 trials, and a size effect read at the
smallest and largest model leans on the few trials there, so its variance is itself estimated
from few residuals; the Bell-McCaffrey df widen the interval accordingly, where the residual df
n - k would claim far more certainty. Above :data:`SMALL_SAMPLE_ROWS` trials the asymptotics
hold and HC3 on n - k df is used (it needs no n x n matrix). A fit that cannot be made (too few
rows, a singular design) comes back marked ``usable=False`` with a one-line ``note``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from study.analysis.estimate import Estimate, Estimates
from study.analysis.table import numeric

__all__ = ["CONST", "SMALL_SAMPLE_ROWS", "ModelFit", "cr1", "fit", "unusable",
           "varies"]

CONST = "const"
# Up to this many rows the n x n residual-maker matrix is cheap (2 MB) and small-sample
# corrections matter; beyond it HC3 on n - k df is accurate and needs no such matrix.
SMALL_SAMPLE_ROWS = 500
# A column whose spread is below this (relative to its magnitude) is a fixed dimension.
_CONSTANT_RTOL = 1e-12


class SmallSample:
    """CR2 variances and Bell-McCaffrey degrees of freedom of linear combinations of one fit.

    Args:
        X: The design (n x k).
        resid: The OLS residuals.
        groups: A cluster label per row (each row its own cluster for HC2).
    """

    def __init__(self, X: np.ndarray, resid: np.ndarray, groups: np.ndarray) -> None:
        self.bread = np.linalg.inv(X.T @ X)
        self.X = X
        self.M = np.eye(len(X)) - X @ self.bread @ X.T  # the residual maker I - H
        self.clusters = [np.flatnonzero(groups == g) for g in np.unique(groups)]
        self.singletons = len(self.clusters) == len(X)
        if self.singletons:  # HC2: each adjustment is 1 / sqrt(1 - h_ii)
            self.scale = 1 / np.sqrt(np.clip(np.diag(self.M), 1e-10, None))
            self.M2 = self.M * self.M
        else:
            self.adjust = [_inverse_sqrt(self.M[np.ix_(i, i)]) for i in self.clusters]
        self.resid = resid

    def estimates(self, params: np.ndarray, C: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(C @ params, se, df)`` of the combinations in the rows of ``C``."""
        A = self.X @ (self.bread @ C.T)  # column j: the weights a with c_j . beta_hat = a . y
        if self.singletons:
            D = self.scale[:, None] * A
            variance = np.sum((D * self.resid[:, None]) ** 2, axis=0)
            D2 = D * D
            trace = np.einsum("i,ij->j", np.diag(self.M), D2)
            square = np.sum(D2 * (self.M2 @ D2), axis=0)
        else:
            variance, trace, square = (np.empty(len(C)) for _ in range(3))
            for j in range(len(C)):
                D = np.zeros((len(A), len(self.clusters)))
                for g, (rows, adjust) in enumerate(zip(self.clusters, self.adjust,
                                                       strict=True)):
                    D[rows, g] = adjust @ A[rows, j]
                GtG = D.T @ self.M @ D
                variance[j] = np.sum((D.T @ self.resid) ** 2)
                trace[j], square[j] = np.trace(GtG), np.sum(GtG * GtG)
        with np.errstate(divide="ignore", invalid="ignore"):
            df = np.where(square > 0, trace**2 / np.where(square > 0, square, 1.0), np.inf)
        return C @ params, np.sqrt(np.clip(variance, 0.0, None)), df


def _inverse_sqrt(block: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(block)
    # A trial with leverage 1 has nothing left to estimate its variance from: weigh it as 1.
    values = np.where(values > 1e-10, values, 1.0)
    return (vectors / np.sqrt(values)) @ vectors.T


@dataclasses.dataclass(frozen=True)
class ModelFit:
    """One fitted regression.

    Attributes:
        name: What the model explains (e.g. ``early_data``).
        formula: The model in formula notation.
        n: Rows used.
        r2: Coefficient of determination (``None`` when undefined).
        coefficients: ``{term: {"estimate", "ci95": [lo, hi], "p_value"}}``; empty when unusable.
        dropped: Terms left out because the study held them constant.
        cov_type: ``CR2`` (clusters of trials sharing a seed), ``HC2`` or ``HC3`` (large n).
        usable: Whether the fit could be made.
        note: One line on why the fit is unusable, or on its clusters.
        k: The design's coefficients (an unusable fit too: ``n <= k`` says more trials help).
        columns: The design's columns, in the order of ``params``.
        params: The coefficient vector.
        resid: The residuals.
    """

    name: str
    formula: str
    n: int
    r2: float | None
    coefficients: dict[str, dict[str, Any]]
    dropped: tuple[str, ...] = ()
    cov_type: str = "HC2"
    usable: bool = True
    note: str | None = None
    columns: tuple[str, ...] = ()
    params: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)
    resid: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)
    cov: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)
    df: float = math.inf
    small: SmallSample | None = dataclasses.field(default=None, repr=False, compare=False)
    design: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)
    keys: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)
    k: int = 0

    def combine(self, weights: Mapping[str, float] | Sequence[float]) -> Estimate:
        """The linear combination ``w . params`` with its robust standard error and df.

        Args:
            weights: ``{column: weight}`` (missing columns weigh 0) or one weight per column.
        """
        return self.combine_many(self.vector(weights)[None, :]).at(0)

    def combine_many(self, C: np.ndarray) -> Estimates:
        """The combinations in the rows of ``C`` at once."""
        if self.small is not None:
            return Estimates(*self.small.estimates(self.params, C))
        se = np.sqrt(np.clip(np.einsum("ij,jk,ik->i", C, self.cov, C), 0.0, None))
        return Estimates(C @ self.params, se, np.full(len(C), self.df))

    def scores(self, C: np.ndarray) -> pd.DataFrame:
        """Each cluster's contribution to the error of the combinations in the rows of ``C``:
        the estimate's influence weights times the leverage-adjusted residuals, summed within
        clusters (rows: cluster keys, columns: combinations). Their cross-products give a
        cluster-robust (co)variance, shared by fits made on the same trials."""
        X = self.design
        bread = np.linalg.pinv(X.T @ X)
        influence = X @ bread @ C.T
        leverage = np.einsum("ij,jk,ik->i", X, bread, X)
        adjusted = self.resid / np.sqrt(np.clip(1 - leverage, 1e-10, None))
        return pd.DataFrame(influence * adjusted[:, None], index=self.keys).groupby(
            level=0).sum()

    def correlation(self, C: np.ndarray, other: ModelFit, C_other: np.ndarray) -> np.ndarray:
        """The correlation of this fit's combinations ``C`` with ``other``'s ``C_other`` (row
        by row), from one cluster-robust sandwich over the trials both were fitted on; 0 where
        either fit has no residuals to tell."""
        if self.design is None or other.design is None or self.keys is None \
                or other.keys is None:
            return np.zeros(len(C))
        a, b = self.scores(C), other.scores(C_other)
        a, b = a.align(b, join="outer", fill_value=0.0)
        a, b = a.to_numpy(), b.to_numpy()
        scale = np.sqrt(np.sum(a * a, axis=0) * np.sum(b * b, axis=0))
        with np.errstate(divide="ignore", invalid="ignore"):
            rho = np.where(scale > 0, np.sum(a * b, axis=0) / np.where(scale > 0, scale, 1),
                           0.0)
        return np.clip(rho, -1.0, 1.0)

    def vector(self, weights: Mapping[str, float] | Sequence[float]) -> np.ndarray:
        """``weights`` as a vector over :attr:`columns`."""
        if isinstance(weights, Mapping):
            return np.array([float(weights.get(c, 0.0)) for c in self.columns])
        return np.asarray(weights, dtype=float)

    def to_dict(self) -> dict[str, Any]:
        """The model block of ``analysis.json``: formula, n, r2, coefficients, cov_type, note."""
        return {
            "formula": self.formula, "n": self.n, "r2": self.r2,
            "coefficients": {k: {"estimate": v["estimate"], "ci95": list(v["ci95"]),
                                 "p_value": v["p_value"]} for k, v in self.coefficients.items()},
            "cov_type": self.cov_type, "note": self.note, "dropped": list(self.dropped),
        }


def unusable(*, name: str, formula: str, n: int, note: str,
             dropped: Iterable[str] = (), k: int = 0) -> ModelFit:
    """A fit that could not be made, saying why (``k``: its coefficients, where known)."""
    return ModelFit(name=name, formula=formula, n=n, r2=None, coefficients={},
                    dropped=tuple(dropped), usable=False, note=note, k=k)


def fit(
    y: pd.Series | np.ndarray, X: pd.DataFrame, *, name: str, formula: str,
    dropped: Iterable[str] = (), clusters: np.ndarray | None = None,
) -> ModelFit:
    """OLS of ``y`` on ``X`` with robust standard errors and 95% t intervals (module docs).

    Args:
        y: The response, aligned with ``X``.
        X: The design, including ``const``.
        name: The model's name.
        formula: The model in formula notation.
        dropped: Terms the design left out.
        clusters: One label per row (rows sharing a label are one cluster), or ``None``.
    """
    response = numeric(pd.Series(np.asarray(y, dtype=float)))
    design = X.to_numpy(dtype=float)
    n, k = design.shape
    base = {"name": name, "formula": formula, "n": n, "dropped": tuple(dropped)}
    problem = _problem(response, design, X)
    if problem:
        return unusable(**base, note=problem, k=k)
    params, *_ = np.linalg.lstsq(design, response, rcond=None)
    resid = response - design @ params
    groups = _groups(clusters, n)
    spread = float(np.sum((response - response.mean()) ** 2))
    r2 = 1 - float(resid @ resid) / spread if spread > 0 else None
    fields: dict[str, Any] = {"params": params, "resid": resid, "columns": tuple(X.columns),
                              "r2": r2, "design": design, "keys": _keys(clusters, X.index)}
    if n <= SMALL_SAMPLE_ROWS:
        fields["small"] = SmallSample(design, resid, groups)
        shared = len(np.unique(groups)) < n
        fields["cov_type"] = "CR2" if shared else "HC2"
        if shared:
            fields["note"] = (f"trials that share a training seed are clustered "
                              f"({len(np.unique(groups))} seeds)")
    elif len(np.unique(groups)) < n:  # clusters stay clusters at any size
        fields.update(cov=cr1(design, resid, groups), df=float(len(np.unique(groups)) - 1),
                      cov_type="CR1",
                      note=f"trials that share a training seed are clustered "
                           f"({len(np.unique(groups))} seeds)")
    else:
        fields.update(cov=_hc3(design, resid), df=float(n - k), cov_type="HC3")
    model = ModelFit(**base, coefficients={}, k=k, **fields)
    return dataclasses.replace(model, coefficients=_table(model))


def _problem(response: np.ndarray, design: np.ndarray, X: pd.DataFrame) -> str | None:
    n, k = design.shape
    if n <= k:
        return f"{n} usable trials for {k} coefficients; need more than {k}"
    if not (np.all(np.isfinite(response)) and np.all(np.isfinite(design))):
        return "the response or the design has non-finite values"
    if np.linalg.matrix_rank(design.T @ design) < k:  # k x k: cheap for 10,000 rows too
        return ("singular design: the varying terms are collinear "
                f"({', '.join(c for c in X.columns if c != CONST)})")
    return None


def _hc3(design: np.ndarray, resid: np.ndarray) -> np.ndarray:
    """MacKinnon-White HC3: each squared residual inflated by its leverage, 1 / (1 - h)^2."""
    bread = np.linalg.inv(design.T @ design)
    leverage = np.einsum("ij,jk,ik->i", design, bread, design)
    weights = (resid / np.clip(1 - leverage, 1e-10, None)) ** 2
    return bread @ (design.T @ (design * weights[:, None])) @ bread


def cr1(design: np.ndarray, resid: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Liang-Zeger with the usual small-sample factor G/(G-1) (n-1)/(n-k): above
    :data:`SMALL_SAMPLE_ROWS` rows CR2's n x n matrices are too large, and trials that share a
    seed must still count as one cluster."""
    n, k = design.shape
    G = int(groups.max()) + 1
    sums = np.zeros((G, k))
    np.add.at(sums, groups, design * resid[:, None])
    bread = np.linalg.inv(design.T @ design)
    factor = G / max(G - 1, 1) * (n - 1) / max(n - k, 1)
    return factor * bread @ (sums.T @ sums) @ bread


def _keys(clusters: np.ndarray | None, index: pd.Index) -> np.ndarray:
    """Labels shared across fits of the same trials: the cluster (training seed) where known,
    else the trial's row label."""
    if clusters is None:
        return np.array([f"row:{i}" for i in index], dtype=object)
    return np.array([f"seed:{c}" for c in np.asarray(clusters)], dtype=object)


def _groups(clusters: np.ndarray | None, n: int) -> np.ndarray:
    if clusters is None:
        return np.arange(n)
    return pd.factorize(pd.Series(np.asarray(clusters)).astype(str))[0]


def _table(model: ModelFit) -> dict[str, dict[str, Any]]:
    """Each coefficient's estimate, 95% interval and two-sided p-value."""
    table = {}
    for j, term in enumerate(model.columns):
        unit = np.zeros(len(model.columns))
        unit[j] = 1.0
        est = model.combine(unit)
        lo, hi = est.ci95
        p = 2 * stats.t.sf(abs(est.estimate) / est.se, est.df) if est.se > 0 else None
        table[term] = {"estimate": est.estimate, "ci95": [lo, hi],
                       "p_value": _finite_or_none(p) if p is not None else None}
    return table


def varies(values: np.ndarray) -> bool:
    """Whether ``values`` (finite ones) take more than one value."""
    finite = values[np.isfinite(values)]
    if finite.size < 2:
        return False
    scale = max(1.0, float(np.max(np.abs(finite))))
    return bool(np.ptp(finite) > _CONSTANT_RTOL * scale)


def _finite_or_none(value: Any) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None
