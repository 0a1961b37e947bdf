"""study: MLflow-tracked Optuna studies of CNN width, learning rate, batch size and weight decay.

The public names below are the library's surface; the ``study`` console script wraps them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from study._lazy import lazy_exports
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


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
