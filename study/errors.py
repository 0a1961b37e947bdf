"""The domain exception hierarchy.

Every error a user can cause (bad flags, a bad data file, an unreachable storage) is a
:class:`StudyError`. The CLI catches it once and turns it into one line and exit code 1.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "NonFiniteLossError",
    "StorageError",
    "StudyError",
    "TrackingError",
    "TrialFailedError",
]


class StudyError(Exception):
    """Base class of every error the CLI reports as one line without a traceback."""


class ConfigError(StudyError, ValueError):
    """A configuration value (flag, config file key, MLproject parameter) is invalid."""


class DataError(StudyError, ValueError):
    """A dataset specification or a user's data file is invalid."""


class StorageError(StudyError):
    """The Optuna storage URL is malformed or the storage cannot be reached."""


class TrackingError(StudyError):
    """The MLflow tracking store is malformed, unreachable or inconsistent with the study."""


class TrialFailedError(StudyError):
    """A trial could not finish; the message is the one-line reason recorded in both stores."""


class NonFiniteLossError(TrialFailedError, ArithmeticError):
    """The training loss became NaN or infinite."""
