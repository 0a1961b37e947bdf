"""The run ``mlflow run`` opens for an entry point is discarded after a command that failed
before making it part of a study: by a detached process that reads the run itself, once MLflow
has closed it. Real SQLite stores, a real detached process."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from study.tracking.entry import PROJECT_ENTRY_TAG, discard_when_closed
from tests.conftest import REPO, cli_env

pytestmark = pytest.mark.slow


def _entry_run(client: MlflowClient, **tags: str) -> str:
    experiment = client.get_experiment_by_name("e") or client.get_experiment(
        client.create_experiment("e"))
    return client.create_run(experiment.experiment_id,
                             tags={PROJECT_ENTRY_TAG: "study", **tags}).info.run_id


def test_the_command_hands_its_run_over_without_importing_mlflow(tracking_uri):
    """Found by a user: a Ctrl-C while the command imported MLflow left it half-imported, the
    clean-up failed with a traceback, and the run stayed behind, FAILED and unnamed."""
    client = MlflowClient(tracking_uri)
    run_id = _entry_run(client)
    script = ("import sys\nfrom study.mlproject import _discard_unclaimed_entry\n"
              "_discard_unclaimed_entry()\nprint('mlflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, env={**cli_env(tracking_uri), "MLFLOW_RUN_ID": run_id},
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
    client.set_terminated(run_id, "FAILED")  # as `mlflow run` does once the command exited
    deadline = time.monotonic() + 60
    while client.get_run(run_id).info.lifecycle_stage != "deleted":
        assert time.monotonic() < deadline, "the detached process did not delete the run"
        time.sleep(0.3)


def test_a_run_that_became_part_of_a_study_is_kept(tracking_uri):
    client = MlflowClient(tracking_uri)
    run_id = _entry_run(client, **{"study.role": "parent"})
    client.set_terminated(run_id, "KILLED")
    assert discard_when_closed(client, run_id, wait_seconds=5) is False
    assert client.get_run(run_id).info.lifecycle_stage == "active"


def test_an_unclaimed_run_is_deleted_once_closed_not_before(tracking_uri):
    client = MlflowClient(tracking_uri)
    run_id = _entry_run(client)
    assert discard_when_closed(client, run_id, wait_seconds=0.5, poll=0.1) is False  # RUNNING
    client.set_terminated(run_id, "FAILED")
    assert discard_when_closed(client, run_id, wait_seconds=5) is True
    assert client.get_run(run_id).info.lifecycle_stage == "deleted"
