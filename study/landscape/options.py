"""The settings of ``study landscape``, checked without torch or Optuna.

The CLI checks its flags here before it loads the probe (:mod:`study.landscape.command`), so a
bad flag answers at once; the probe modules re-export these names and run the same checks.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from study.errors import ConfigError
from study.training.specs import HParams

__all__ = [
    "NORMALIZATIONS",
    "SHARPNESS_DISTANCE",
    "WHERE_KEYS",
    "check_between",
    "check_probe",
    "check_probe_args",
    "parse_between",
    "parse_trials",
    "parse_where",
]

NORMALIZATIONS = ("filter", "layer", "none")

SHARPNESS_DISTANCE = 0.1
"""Normalized distance at which :func:`~study.landscape.probes.sharpness` reads the loss rise
(10% of each filter's norm): small enough to stay in the locally quadratic region of trained
small CNNs, large enough for the rise to dwarf float32 noise."""

WHERE_KEYS = tuple(f.name for f in dataclasses.fields(HParams))
_TRIALS_ALLOWED = "best, all, or comma-separated trial numbers (e.g. 3,7)"
_WHERE_ALLOWED = (f"comma-separated key=value pairs with keys among {', '.join(WHERE_KEYS)} "
                  "(e.g. batch_size=32,weight_decay=0)")


def parse_trials(trials: str) -> str | list[int]:
    """``"best"``, ``"all"`` or a list of distinct trial numbers from ``"N,M"``.

    Raises:
        ConfigError: Anything else (one line naming ``trials``).
    """
    if not isinstance(trials, str):
        raise ConfigError(f"`trials` must be {_TRIALS_ALLOWED}, but got trials={trials!r}.")
    text = trials.strip()
    if text.lower() in ("best", "all"):
        return text.lower()
    numbers: list[int] = []
    for item in text.split(","):
        item = item.strip()
        if not (item.isascii() and item.isdigit()):
            raise ConfigError(f"`trials` must be {_TRIALS_ALLOWED}, but got trials={trials!r}.")
        if int(item) not in numbers:
            numbers.append(int(item))
    return numbers


def parse_where(where: str | None) -> dict[str, str]:
    """``{"batch_size": "32", ...}`` from ``"batch_size=32,..."`` (``None`` or empty: ``{}``).

    Raises:
        ConfigError: A pair without ``=``, an unknown key, or a key given twice.
    """
    if where is None or not where.strip():
        return {}
    pairs: dict[str, str] = {}
    for item in where.split(","):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not value or key not in WHERE_KEYS or key in pairs:
            raise ConfigError(f"`where` must be {_WHERE_ALLOWED}, but got where={where!r}.")
        pairs[key] = value
    return pairs


def parse_between(between: str) -> tuple[int, int]:
    """Two distinct trial numbers from ``"A,B"``.

    Raises:
        ConfigError: Anything else (one line naming ``between``).
    """
    parts = [p.strip() for p in str(between).split(",")]
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() for p in parts) \
            or parts[0] == parts[1]:
        raise ConfigError(f"`between` must be two different trial numbers A,B (e.g. 3,7), but "
                          f"got between={between!r}.")
    return int(parts[0]), int(parts[1])


def check_probe_args(radius: float, n_points: int, distance: float = SHARPNESS_DISTANCE) -> None:
    """Validate the grid of a probe.

    Raises:
        ConfigError: ``radius`` is not a finite number > 0 or is below ``distance`` (the probe
            must reach the sharpness distance), or ``n_points`` is not an integer >= 3.
    """
    if isinstance(distance, bool) or not isinstance(distance, int | float) or not distance > 0:
        raise ConfigError(f"`distance` must be a number > 0, but got distance={distance!r}.")
    if isinstance(radius, bool) or not isinstance(radius, int | float) \
            or not math.isfinite(radius) or radius < distance:
        raise ConfigError(f"`radius` must be a finite number >= {distance:g} (the sharpness "
                          f"distance), but got radius={radius!r}.")
    if isinstance(n_points, bool) or not isinstance(n_points, int) or n_points < 3:
        raise ConfigError(f"`n_points` must be an integer >= 3, but got n_points={n_points!r}.")


def check_probe(*, trials: str, where: str | None, dim: Any, radius: Any, n_points: Any,
                n_directions: Any, seed: Any, normalization: Any) -> None:
    """Check every setting of a probe before any study, data or model is loaded.

    Raises:
        ConfigError: The first bad setting, named.
    """
    if normalization not in NORMALIZATIONS:
        raise ConfigError(f"`normalization` must be one of {', '.join(NORMALIZATIONS)}, but got "
                          f"normalization={normalization!r}.")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim not in (1, 2):
        raise ConfigError(f"`dim` must be 1 or 2, but got dim={dim!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"`seed` must be an integer >= 0, but got seed={seed!r}.")
    check_probe_args(radius, n_points)
    if isinstance(n_directions, bool) or not isinstance(n_directions, int) or n_directions < 1:
        raise ConfigError(
            f"`n_directions` must be an integer >= 1, but got n_directions={n_directions!r}."
        )
    parse_trials(trials)
    parse_where(where)


def check_between(between: str, *, n_points: Any = 41) -> tuple[int, int]:
    """The two trial numbers of ``--between``, with the points of the line checked.

    Raises:
        ConfigError: A bad ``between`` or ``n_points``.
    """
    pair = parse_between(between)
    if isinstance(n_points, bool) or not isinstance(n_points, int) or n_points < 3:
        raise ConfigError(f"`n_points` must be an integer >= 3, but got n_points={n_points!r}.")
    return pair
