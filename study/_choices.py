"""Numeric training options given as one value, several (searched as a category) or a range
``LO:HI`` (searched uniformly): ``--momentum``, ``--dropout``, ``--bn-momentum``.

Values are kept as canonical strings (``repr`` of the float, or ``"LO:HI"``), so a stored
study compares equal to the same flags given again however they were spelled.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from study._validation import fail

__all__ = ["BN_MOMENTUM_NAMES", "SearchSpec", "float_choices", "option_values", "search_spec"]

# Words for BatchNorm momenta: Keras's default 0.99 is PyTorch's 0.01.
BN_MOMENTUM_NAMES = {"keras": 0.01, "pytorch": 0.1}

# ("fixed", value) | ("categorical", [values]) | ("range", (low, high))
SearchSpec = tuple[str, Any]


def _number(field: str, text: str, names: Mapping[str, float]) -> float:
    key = text.strip().lower()
    if key in names:
        return names[key]
    try:
        value = float(key)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        named = f", or {', '.join(names)}" if names else ""
        fail(field, text, f"a number{named}")
    return value


def float_choices(field: str, values: Iterable[Any], *, low: float, high: float,
                  low_closed: bool = True, high_closed: bool = False,
                  names: Mapping[str, float] | None = None,
                  allow_range: bool = False) -> tuple[str, ...]:
    """Check and canonicalize the values of ``field``.

    Args:
        field: The setting's name, for errors.
        values: Strings or numbers; one ``"LO:HI"`` entry (alone) is a range when
            ``allow_range``.
        low: The smallest allowed value (``low_closed``: itself allowed).
        high: The largest allowed value (``high_closed``: itself allowed).
        names: Words that stand for values (``keras`` -> 0.01).
        allow_range: Whether ``LO:HI`` is accepted.

    Raises:
        ConfigError: Names the field, the value and what is allowed.
    """
    names = dict(names or {})
    items = [str(v).strip() for v in values if str(v).strip()]
    interval = f"{'[' if low_closed else '('}{low:g}, {high:g}{']' if high_closed else ')'}"
    if not items:
        fail(field, "", f"at least one value in {interval}")
    if any(":" in item for item in items):
        if not allow_range:
            fail(field, ",".join(items), f"values in {interval} (no range)")
        if len(items) != 1:
            fail(field, ",".join(items), "one range LO:HI alone, or a list of values")
        lo_text, _, hi_text = items[0].partition(":")
        bounds = [_number(field, t, names) for t in (lo_text, hi_text)]
        for value in bounds:
            _check(field, value, low, high, low_closed, high_closed, interval)
        if not bounds[0] < bounds[1]:
            fail(field, items[0], "a range LO:HI with LO < HI")
        return (f"{bounds[0]!r}:{bounds[1]!r}",)
    canonical = []
    for item in items:
        value = _number(field, item, names)
        _check(field, value, low, high, low_closed, high_closed, interval)
        canonical.append(repr(value))
    if len(set(canonical)) != len(canonical):
        fail(field, ",".join(items), "a list without repeats")
    return tuple(canonical)


def _check(field: str, value: float, low: float, high: float, low_closed: bool,
           high_closed: bool, interval: str) -> None:
    above = value >= low if low_closed else value > low
    below = value <= high if high_closed else value < high
    if not (above and below):
        fail(field, value, f"in {interval}")


def search_spec(values: tuple[str, ...]) -> SearchSpec:
    """How canonical ``values`` (see :func:`float_choices`) are searched."""
    if len(values) == 1 and ":" in values[0]:
        lo, _, hi = values[0].partition(":")
        return "range", (float(lo), float(hi))
    if len(values) == 1:
        return "fixed", float(values[0])
    return "categorical", [float(v) for v in values]


def option_values(field: str, values: Iterable[Any]) -> tuple[str, ...]:
    """The canonical values of the numeric training option ``field``: ``momentum`` and
    ``dropout`` in [0, 1) (a range allowed), ``bn_momentum`` in (0, 1] (``keras``,
    ``pytorch``).

    Raises:
        ConfigError: A bad value.
    """
    if field == "bn_momentum":
        return float_choices(field, values, low=0.0, high=1.0, low_closed=False,
                             high_closed=True, names=BN_MOMENTUM_NAMES)
    return float_choices(field, values, low=0.0, high=1.0, allow_range=True)
