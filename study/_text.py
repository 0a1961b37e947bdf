"""Short phrases shared by the CLI's and the session's lines."""

from __future__ import annotations

__all__ = ["finished_of"]


def finished_of(done: int, budget: int) -> str:
    """``4/20 finished``; past the budget (a later run asked for fewer trials),
    ``20 finished, budget 3`` rather than ``20/3``."""
    if done > budget:
        return f"{done} finished, budget {budget}"
    return f"{done}/{budget} finished"
