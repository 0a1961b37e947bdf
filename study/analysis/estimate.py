"""An estimate with its standard error and degrees of freedom, and the 95% t interval it gives.

Size effects are sums of such estimates (total = data + penalty); each part carries its own
uncertainty, so intervals come from one place and are computed the same way everywhere.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from scipy import stats

__all__ = ["CI_LEVEL", "Estimate", "Estimates", "exact"]

CI_LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class Estimate:
    """``estimate`` with standard error ``se`` on ``df`` degrees of freedom (``inf``: normal)."""

    estimate: float
    se: float
    df: float = math.inf

    @property
    def t_crit(self) -> float:
        """The two-sided :data:`CI_LEVEL` quantile of t with ``df`` degrees of freedom."""
        return float(stats.t.ppf(0.5 + CI_LEVEL / 2, self.df))

    @property
    def ci95(self) -> tuple[float, float]:
        """The 95% interval ``estimate +/- t_crit * se``."""
        half = self.t_crit * self.se
        return self.estimate - half, self.estimate + half

    def __add__(self, other: Estimate) -> Estimate:
        """The sum of two estimates with independent errors; its df by Welch-Satterthwaite."""
        se = math.hypot(self.se, other.se)
        return Estimate(self.estimate + other.estimate, se, _welch(self, other, se))

    def scaled(self, factor: float) -> Estimate:
        """``factor`` times the estimate (its se scales by ``|factor|``)."""
        return Estimate(factor * self.estimate, abs(factor) * self.se, self.df)

    def to_dict(self) -> dict[str, Any]:
        """``{"estimate", "ci95", "se", "df"}`` (``df`` ``None`` when infinite)."""
        lo, hi = self.ci95
        return {"estimate": self.estimate, "ci95": [lo, hi], "se": self.se,
                "df": self.df if math.isfinite(self.df) else None}


@dataclasses.dataclass(frozen=True, eq=False)
class Estimates:
    """Many estimates at once (arrays of equal length): the same arithmetic as
    :class:`Estimate`, for a size effect read at a grid of weight decays."""

    estimate: np.ndarray
    se: np.ndarray
    df: np.ndarray

    def __add__(self, other: Estimates) -> Estimates:
        se = np.hypot(self.se, other.se)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = sum(np.where((e.se > 0) & np.isfinite(e.df), e.se**4 / e.df, 0.0)
                        for e in (self, other))
            df = np.where(terms > 0, se**4 / np.where(terms > 0, terms, 1.0),
                          np.minimum(self.df, other.df))
        return Estimates(self.estimate + other.estimate, se, df)

    def plus(self, other: Estimates, rho: np.ndarray) -> Estimates:
        """The sum of two estimates whose errors correlate by ``rho``; df by Welch-
        Satterthwaite on the parts."""
        independent = self + other
        variance = self.se**2 + other.se**2 + 2 * rho * self.se * other.se
        return Estimates(independent.estimate, np.sqrt(np.clip(variance, 0.0, None)),
                         independent.df)

    def scaled(self, factor: np.ndarray) -> Estimates:
        return Estimates(factor * self.estimate, np.abs(factor) * self.se, self.df)

    def margin(self) -> np.ndarray:
        """``|estimate| - t_crit * se``: negative where the 95% interval holds zero."""
        return np.abs(self.estimate) - stats.t.ppf(0.5 + CI_LEVEL / 2, self.df) * self.se

    def at(self, i: int) -> Estimate:
        return Estimate(float(self.estimate[i]), float(self.se[i]), float(self.df[i]))

    @classmethod
    def exact(cls, n: int) -> Estimates:
        return cls(np.zeros(n), np.zeros(n), np.full(n, math.inf))


def exact(value: float = 0.0) -> Estimate:
    """A value known without error (the penalty part outside ``l2-in-loss`` is exactly 0)."""
    return Estimate(value, 0.0, math.inf)


def _welch(a: Estimate, b: Estimate, se: float) -> float:
    terms = [e.se**4 / e.df for e in (a, b) if e.se > 0 and math.isfinite(e.df)]
    if se == 0 or not terms:
        return min(a.df, b.df)
    return se**4 / sum(terms)
