"""The two model sizes a size effect is read between, fixed by the question, not by the draw.

A size effect is a change of the loss per decade of parameters *between two models*. Read
between the smallest and largest model that the sampler happened to draw, it is a different
quantity in every replicate of a study (the penalty is convex in size), so two users running
the same study would get different answers. It is read instead between two widths that the
configuration fixes: by default the ends of the searched width range, else the widths the user
names (``--compare-widths A,B``). Where the trials did not reach a compared width, the effect
there is an extrapolation, and :class:`Span` says how far the trials fell short.

Parameter counts at the compared widths come from the trials themselves: a trial of that width
gives it exactly; otherwise the quadratic ``P(w) = c0 + c1 w + c2 w^2`` through the trials'
counts, which is exact for every network whose channel counts scale with its width (the
built-in models and conv nets in general: a conv between two layers of ``a w`` and ``b w``
channels has ``a b k w^2`` weights).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from study.analysis.table import numeric
from study.errors import ConfigError

__all__ = ["SizeMap", "Span", "compare_span", "parse_compare_widths"]

# A quadratic that misses any trial's count by more than this is not the model's P(w).
_QUADRATIC_RTOL = 1e-3


@dataclasses.dataclass(frozen=True)
class SizeMap:
    """Parameter count as a function of width, from the trials' ``(width, n_params)``."""

    widths: np.ndarray
    counts: np.ndarray
    quadratic: np.ndarray | None  # [c0, c1, c2] when it reproduces every trial's count

    def n_params(self, width: float) -> float:
        """The parameter count at ``width``: a trial's when one has it, else the quadratic,
        else log-log interpolation (extrapolated linearly beyond the ends)."""
        exact = self.counts[self.widths == width]
        if exact.size:
            return float(exact[0])
        if self.quadratic is not None:
            return float(np.polyval(self.quadratic[::-1], width))
        lw, lp = np.log(self.widths), np.log(self.counts)
        if len(lw) == 1:
            return float(self.counts[0] * (width / self.widths[0]) ** 2)
        i = int(np.clip(np.searchsorted(lw, math.log(width)), 1, len(lw) - 1))
        slope = (lp[i] - lp[i - 1]) / (lw[i] - lw[i - 1])
        return float(math.exp(lp[i - 1] + slope * (math.log(width) - lw[i - 1])))

    def exact(self, width: float) -> bool:
        """Whether :meth:`n_params` at ``width`` is the model's own count (a trial's, or the
        quadratic that reproduces every trial's), not an interpolation."""
        return bool((self.widths == width).any()) or self.quadratic is not None

    def width(self, n_params: np.ndarray) -> np.ndarray:
        """The (real-valued) width of each parameter count, inverting :meth:`n_params`."""
        counts = np.asarray(n_params, dtype=float)
        if self.quadratic is not None and self.quadratic[2] > 0:  # the positive root
            c0, c1, c2 = self.quadratic
            return (-c1 + np.sqrt(np.clip(c1 * c1 - 4 * c2 * (c0 - counts), 0.0, None))) \
                / (2 * c2)
        grid = np.geomspace(max(0.25, self.widths.min() / 8), self.widths.max() * 8, 200)
        known = np.array([self.n_params(w) for w in grid])
        return np.exp(np.interp(np.log(counts), np.log(known), np.log(grid)))

    @classmethod
    def from_trials(cls, rows: pd.DataFrame) -> SizeMap | None:
        """The map of ``rows`` (``None`` when no trial has both a width and a count)."""
        width, count = numeric(rows["width"]), numeric(rows["n_params"])
        ok = np.isfinite(width) & np.isfinite(count) & (width > 0) & (count > 0)
        if not ok.any():
            return None
        pairs = pd.DataFrame({"w": width[ok], "p": count[ok]}).groupby("w")["p"].median()
        w, p = pairs.index.to_numpy(dtype=float), pairs.to_numpy(dtype=float)
        quadratic = None
        if len(w) >= 3:
            coef = np.polynomial.polynomial.polyfit(w, p, 2)
            if np.all(np.abs(np.polyval(coef[::-1], w) - p) <= _QUADRATIC_RTOL * p):
                quadratic = coef
        return cls(w, p, quadratic)


@dataclasses.dataclass(frozen=True)
class Span:
    """The compared sizes (fixed by the question) and the sizes the trials reached."""

    widths: tuple[float, float]
    n_params: tuple[float, float]
    reached_widths: tuple[float, float]
    reached_n_params: tuple[float, float]
    source: str  # "configured", "given" (--compare-widths) or "drawn" (no configuration known)
    exact: tuple[bool, bool] = (True, True)  # whether each count is the model's, not interpolated

    @property
    def x(self) -> tuple[float, float]:
        """The compared sizes as log10 parameter counts."""
        return math.log10(self.n_params[0]), math.log10(self.n_params[1])

    @property
    def extrapolated(self) -> tuple[bool, bool]:
        """Whether the smaller and the larger compared size lie beyond the trials."""
        return (self.widths[0] < self.reached_widths[0],
                self.widths[1] > self.reached_widths[1])

    @property
    def shortfall(self) -> float:
        """Decades of parameters between the compared sizes and the nearest trials (0 when
        the trials reach both)."""
        lo = max(0.0, math.log10(self.reached_n_params[0] / self.n_params[0]))
        hi = max(0.0, math.log10(self.n_params[1] / self.reached_n_params[1]))
        return lo + hi

    def to_dict(self) -> dict[str, Any]:
        return {"widths": list(self.widths), "n_params": list(self.n_params),
                "reached_widths": list(self.reached_widths),
                "reached_n_params": list(self.reached_n_params), "source": self.source,
                "extrapolated": list(self.extrapolated), "shortfall_decades": self.shortfall,
                "exact_n_params": list(self.exact)}


def compare_span(sizes: SizeMap | None, widths: Sequence[float] | None, *,
                 source: str = "configured") -> Span | None:
    """The span compared at ``widths`` (``None``: the drawn extremes) of the trials whose
    widths and counts ``sizes`` holds.

    Returns ``None`` when the trials hold no width or parameter count, or the compared sizes
    have the same parameter count.
    """
    if sizes is None:
        return None
    reached = (float(sizes.widths.min()), float(sizes.widths.max()))
    if widths is None:
        widths, source = reached, "drawn"
    a, b = float(min(widths)), float(max(widths))
    counts = (sizes.n_params(a), sizes.n_params(b))
    if not (counts[0] > 0 and counts[1] > counts[0]):
        return None
    return Span((a, b), counts, reached, (sizes.n_params(reached[0]), sizes.n_params(reached[1])),
                source, (sizes.exact(a), sizes.exact(b)))


def parse_compare_widths(value: str | Sequence[int] | None) -> tuple[int, int] | None:
    """``"A,B"`` as two widths ``A < B`` (``None`` stays ``None``).

    Raises:
        ConfigError: Not two positive integers, or not increasing.
    """
    if value is None or value == "":
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        widths = [int(str(p).strip()) for p in parts]
    except ValueError:
        widths = []
    if len(widths) != 2 or min(widths) < 1 or widths[0] >= widths[1]:
        raise ConfigError(f"`compare_widths` must be two widths A,B with 1 <= A < B, but got "
                          f"compare_widths={value!r}.")
    return widths[0], widths[1]
