"""Optuna's own log lines, silenced while a session runs trials: the session's progress lines
say how each trial ended (state, reason, parameters) from the trials themselves, and an error
that ends the session is said once by its caller."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import optuna

__all__ = ["optuna_quiet"]


@contextlib.contextmanager
def optuna_quiet() -> Iterator[None]:
    """Optuna's verbosity at ERROR (or quieter, where it already was) for the block, then
    back to what it was, however the block ends."""
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(previous, optuna.logging.ERROR))
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)
