"""Several user attrs of a running trial, through Optuna's public API."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna

__all__ = ["set_user_attrs"]


def set_user_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    """Set ``attrs`` on ``trial``, one :meth:`optuna.Trial.set_user_attr` per key (Optuna has
    no call for several; one write each)."""
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
