"""The run ``mlflow run`` opens for an entry point, discarded when the command fails before
making it part of a study (bad input: nothing may be left behind).

MLflow creates that run before our command starts and marks it FAILED only after the command
has exited, so the command cannot delete it itself (MLflow would then fail on a deleted run).
It hands the run to a short-lived detached process instead, which waits for MLflow to close it
and then deletes it if nothing of a study was written to it (MLflow's delete: the run leaves
every experiment's list). The command itself does not read the run: it may have ended while
importing MLflow (a Ctrl-C there leaves MLflow half-imported, unusable in that process).
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import TYPE_CHECKING

from study.tracking.runs import ROLE_TAG

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["PROJECT_ENTRY_TAG", "discard_later", "discard_when_closed", "is_unclaimed_entry"]

# Set by MLflow Projects on the runs it opens: only those are ever discarded.
PROJECT_ENTRY_TAG = "mlflow.project.entryPoint"
# How long the detached process waits for MLflow to close the run (it does within a second of
# the command's exit; a hung MLflow leaves the run as it is).
WAIT_SECONDS = 120.0


def is_unclaimed_entry(run: object) -> bool:
    """Whether ``run`` was opened by ``mlflow run`` and nothing of a study was written to it
    (no study role: not a parent, session, trial or single run; no metrics)."""
    tags = run.data.tags
    return (PROJECT_ENTRY_TAG in tags and ROLE_TAG not in tags and not run.data.metrics
            and run.info.lifecycle_stage == "active")


def discard_later(run_id: str) -> None:
    """Start the detached process that deletes ``run_id`` once MLflow has closed it, if it is
    still an unclaimed entry run then (the tracking URI is taken from the environment, as
    ``mlflow run`` set it)."""
    subprocess.Popen(
        [sys.executable, "-m", "study.tracking.entry", run_id],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,  # outlives the command, and MLflow does not wait for it
    )


def discard_when_closed(client: MlflowClient, run_id: str, *, wait_seconds: float = WAIT_SECONDS,
                        poll: float = 0.2) -> bool:
    """Delete ``run_id`` once it is no longer RUNNING, if it is still an unclaimed entry run;
    returns whether it was deleted."""
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        run = client.get_run(run_id)
        if run.info.status != "RUNNING":
            if not is_unclaimed_entry(run):
                return False
            client.delete_run(run_id)
            return True
        time.sleep(poll)
    return False


if __name__ == "__main__":
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        discard_when_closed(MlflowClient(), sys.argv[1])
    except MlflowException:
        sys.exit(1)  # the store went away: the FAILED run stays, as without this process
