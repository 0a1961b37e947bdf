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
    "exception_chain",
]


def exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or during, outermost first (libraries
    wrap driver and HTTP errors: their types are what tells a transient failure)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


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
