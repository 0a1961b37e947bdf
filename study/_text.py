"""Short phrases shared by the CLI's and the session's lines."""

from __future__ import annotations

__all__ = ["finished_of", "settings_of"]


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
