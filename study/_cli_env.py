"""What the ``study`` command (not the library) sets in its own process for MLflow, each only
where the user has not set it (README: what the code changes beyond its own objects)."""

from __future__ import annotations

import os

__all__ = ["mlflow_env_defaults"]


def mlflow_env_defaults() -> None:
    """Bound MLflow's own HTTP retries (7 by default, minutes of backoff): our tracker retries
    with its own --tracking-timeout. A user's explicit setting wins."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    # The artifact-download bar (landscape weights) would bury the one line a command prints.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # On a tracking server MLflow prints two "View run/experiment" links to stdout at every
    # run's close (fetching the run again to do it): one pair per trial, amid the summaries.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # MLflow's INFO lines ("Creating initial MLflow database tables" as it makes mlflow.db)
    # amid the command's own output; its warnings and errors still show.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
