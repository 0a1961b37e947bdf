"""study: MLflow-tracked Optuna studies of CNN width, learning rate, batch size and weight decay.

The public names below are the library's surface; the ``study`` console script wraps them.
"""

from study.config import StudyConfig
from study.errors import (
    ConfigError,
    DataError,
    NonFiniteLossError,
    StorageError,
    StudyError,
    TrackingError,
    TrialFailedError,
)

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
