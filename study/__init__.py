"""study: MLflow-tracked Optuna studies of CNN width, learning rate, batch size and weight decay.

The public names below are the library's surface; the ``study`` console script wraps them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from study.errors import (
    ConfigError,
    DataError,
    NonFiniteLossError,
    StorageError,
    StudyError,
    TrackingError,
    TrialFailedError,
)

if TYPE_CHECKING:
    from study.config import StudyConfig

__all__ = [
    "ConfigError",
    "DataError",
    "NonFiniteLossError",
    "StorageError",
    "StudyConfig",
    "StudyError",
    "TrackingError",
    "TrialFailedError",
]

_EXPORTS = {
    "StudyConfig": "study.config",
}


def __getattr__(name: str) -> Any:
    # PEP 562: a name is imported on first use, so importing the package loads none of them.
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
