"""Short phrases shared by the CLI's and the session's lines."""

from __future__ import annotations

import math
import os
from collections.abc import Callable

__all__ = ["finished_of", "flag_text", "interval_formatter", "settings_of"]


def flag_text(field: str, value: object = None, *, mlflow_run: bool | None = None) -> str:
    """A setting as the user's command line writes it: ``--n-trials 8``, or ``-P n_trials=8``
    under ``mlflow run`` (the MLproject's parameters); ``value`` ``None``: the flag alone.

    Args:
        field: The setting's name (``n_trials``).
        value: Its value, written as ``str`` writes it.
        mlflow_run: Whether to spell it for ``mlflow run``; ``None``: whether ``mlflow run``
            launched this process (it sets ``MLFLOW_RUN_ID``).
    """
    if mlflow_run is None:
        mlflow_run = bool(os.environ.get("MLFLOW_RUN_ID"))
    if mlflow_run:
        return f"-P {field}" if value is None else f"-P {field}={value}"
    flag = "--" + field.replace("_", "-")
    return flag if value is None else f"{flag} {value}"


def finished_of(done: int, budget: int) -> str:
    """``4/20 finished``; past the budget (a later run asked for fewer trials),
    ``20 finished, budget 3`` rather than ``20/3``."""
    if done > budget:
        return f"{done} finished, budget {budget}"
    return f"{done}/{budget} finished"


def settings_of(params: dict, *, digits: int = 3) -> str:
    """``width=20 lr=0.0055 batch_size=32 ...``: floats to ``digits`` significant digits, and
    SGD's ``momentum`` only where the optimizer is SGD (Adam and AdamW ignore it)."""
    shown = {k: v for k, v in params.items()
             if not (k == "momentum" and params.get("optimizer", "sgd") != "sgd")}
    return " ".join(f"{k}={v:.{digits}g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in shown.items())


def interval_formatter(values: list[float], *, signed: bool = True,
                       significant: int = 2) -> Callable[[float], str]:
    """Fixed decimals for one sentence: two significant digits of its largest number, more (up
    to four) where an interval is narrower; a number that would print as zero keeps two
    significant digits. ``values`` are (estimate, low, high) triples; ``signed``: ``+`` before
    positive numbers too. ``significant=3``: three significant digits of the largest number
    where the narrowest interval carries them (its half-width to two significant digits), so
    that replicates of one setting, whose narrowest intervals straddle a power of ten, print
    the same decimals."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    scale = max((abs(v) for v in finite), default=0.0)
    decimals = 2 if scale <= 0 else max(2, 1 - math.floor(math.log10(scale)))
    halves = [abs(b - a) / 2 for a, b in zip(finite[1::3], finite[2::3], strict=False)]
    narrow = min((h for h in halves if h > 0), default=0.0)
    if narrow > 0:
        by_width = -math.floor(math.log10(narrow))
        decimals = max(decimals, by_width, min(decimals + significant - 2, by_width + 1))
    decimals = min(4, decimals)

    sign = "+" if signed else ""

    def fmt(value: float) -> str:
        if value != 0 and abs(value) < 0.5 * 10**-decimals:
            return f"{value:{sign}.2g}"
        text = f"{value:{sign}.{decimals}f}"
        return text.replace("-", sign, 1) if float(text) == 0 else text

    return fmt


def as_sentence(words: str) -> str:
    """``words`` capitalized and closed with a period: ``every trial ...`` -> ``Every trial
    ....``."""
    words = words.strip().rstrip(".")
    return f"{words[:1].upper()}{words[1:]}." if words else ""


def shell_path(path: object) -> str:
    """``path`` as a shell takes it (quoted where a study name put quotes or spaces in it)."""
    import shlex

    return shlex.quote(str(path))
