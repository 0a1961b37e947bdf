"""The run layout (study.tracking.runs) and the Tracker's artifact upload, on a real MLflow
SQLite store, checked through MlflowClient."""

from __future__ import annotations

import pytest

from study.errors import TrackingError
from study.tracking import (
    OWNER_TAG,
    Tracker,
    claim_parent_run,
    end_trial_run,
    find_parent_run,
    start_trial_run,
    tag_session,
    trial_run_name,
)

pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
def tracker(tracking_uri) -> Tracker:
    return Tracker(tracking_uri, retry_seconds=0)


@pytest.fixture
def parent(tracker) -> tuple[str, str]:
    experiment_id = tracker.experiment_id("exp")
    run_id = tracker.create_run(experiment_id, name="tmp", tags={})
    return experiment_id, run_id


@pytest.mark.parametrize(("number", "name"), [(0, "trial-0000"), (7, "trial-0007"),
                                              (12345, "trial-12345")])
def test_trial_run_names_are_zero_padded_to_four_digits(number, name):
    assert trial_run_name(number) == name


def test_a_trial_run_is_nested_under_the_parent_and_tagged(tracker, parent, mlflow_client):
    experiment_id, parent_id = parent
    run_id = start_trial_run(tracker, experiment_id, parent_run_id=parent_id,
                             study_name="s", trial_number=7)
    run = mlflow_client.get_run(run_id)
    assert run.info.run_name == "trial-0007"
    assert run.info.status == "RUNNING"
    assert run.data.tags["mlflow.parentRunId"] == parent_id
    assert run.data.tags["study.role"] == "trial"
    assert run.data.tags["optuna.study_name"] == "s"
    assert run.data.tags["optuna.trial_number"] == "7"


@pytest.mark.parametrize(("state", "status"), [("COMPLETE", "FINISHED"), ("PRUNED", "FINISHED"),
                                               ("FAIL", "FAILED")])
def test_ending_a_trial_run_maps_its_state_to_a_status(tracker, parent, mlflow_client, state,
                                                       status):
    experiment_id, parent_id = parent
    run_id = start_trial_run(tracker, experiment_id, parent_run_id=parent_id,
                             study_name="s", trial_number=1)
    end_trial_run(tracker, run_id, state=state)
    run = mlflow_client.get_run(run_id)
    assert run.info.status == status
    assert run.data.tags["study.state"] == run.data.tags["optuna.trial_state"] == state
    assert "study.failure" not in run.data.tags


def test_an_interrupted_trial_run_is_killed_and_its_trial_failed(tracker, parent, mlflow_client):
    experiment_id, parent_id = parent
    run_id = start_trial_run(tracker, experiment_id, parent_run_id=parent_id,
                             study_name="s", trial_number=1)
    end_trial_run(tracker, run_id, state="FAIL", failure="interrupted", interrupted=True)
    run = mlflow_client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert (run.data.tags["study.state"], run.data.tags["study.failure"]) == \
        ("FAIL", "interrupted")


def test_a_failure_is_one_redacted_line(tracker, parent, mlflow_client):
    experiment_id, parent_id = parent
    run_id = start_trial_run(tracker, experiment_id, parent_run_id=parent_id,
                             study_name="s", trial_number=1)
    end_trial_run(tracker, run_id, state="FAIL",
                  failure="cannot reach postgresql://u:secret@db/x\nTraceback ...")
    assert mlflow_client.get_run(run_id).data.tags["study.failure"] == \
        "cannot reach postgresql://u:***@db/x"


def test_claiming_a_parent_names_it_and_logs_the_params(tracker, parent, mlflow_client):
    _, run_id = parent
    claim_parent_run(tracker, run_id, study_name="s", storage="sqlite:///o.db",
                     params={"epochs": 3}, owner="host:1")
    run = mlflow_client.get_run(run_id)
    assert run.info.run_name == "s"
    assert run.data.tags["study.role"] == "parent"
    assert run.data.tags["study.storage"] == "sqlite:///o.db"
    assert run.data.tags[OWNER_TAG] == "host:1"
    assert run.data.params == {"epochs": "3"}


def test_claiming_a_run_created_for_the_study_keeps_its_name_and_logs_the_params(
        tracker, mlflow_client):
    experiment_id = tracker.experiment_id("exp")
    run_id = tracker.create_run(experiment_id, name="s", tags={})
    claim_parent_run(tracker, run_id, study_name="s", storage="x", params={"epochs": 3},
                     owner="host:1", new_run=True)
    run = mlflow_client.get_run(run_id)
    assert (run.info.run_name, run.data.tags["mlflow.runName"]) == ("s", "s")
    assert run.data.tags["study.role"] == "parent"
    assert run.data.params == {"epochs": "3"}


def test_a_parent_owned_by_mlflow_run_has_no_owner_tag(tracker, parent, mlflow_client):
    _, run_id = parent
    claim_parent_run(tracker, run_id, study_name="s", storage="x", params={}, owner=None)
    assert OWNER_TAG not in mlflow_client.get_run(run_id).data.tags


def test_a_session_run_points_at_its_parent(tracker, parent, mlflow_client):
    experiment_id, parent_id = parent
    session = tracker.create_run(experiment_id, name="later", tags={})
    tag_session(tracker, session, study_name="s", parent_run_id=parent_id)
    tags = mlflow_client.get_run(session).data.tags
    assert (tags["study.role"], tags["study.name"], tags["study.parent_run_id"]) == \
        ("session", "s", parent_id)


def test_the_parent_is_found_by_study_name_only(tracker, parent):
    _, run_id = parent
    claim_parent_run(tracker, run_id, study_name="s", storage="x", params={}, owner=None)
    assert find_parent_run(tracker, "exp", "s").info.run_id == run_id
    assert find_parent_run(tracker, "exp", "other") is None
    assert find_parent_run(tracker, "no-such-experiment", "s") is None


@pytest.mark.parametrize("name", ["o'brien", 'say "hi"', "it's \"x\"\\"])
def test_the_parent_of_a_study_named_with_quotes_is_found(tracker, parent, name):
    _, run_id = parent
    claim_parent_run(tracker, run_id, study_name=name, storage="x", params={}, owner=None)
    assert find_parent_run(tracker, "exp", name).info.run_id == run_id
    assert find_parent_run(tracker, "exp", name + "'") is None


def test_a_file_and_a_folder_are_logged_as_artifacts(tracker, parent, mlflow_client, tmp_path):
    _, run_id = parent
    (tmp_path / "one.txt").write_text("1")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "two.txt").write_text("2")
    tracker.log_artifacts(run_id, tmp_path / "one.txt", "a")
    tracker.log_artifacts(run_id, folder, "b")
    logged = {f.path for prefix in ("a", "b") for f in mlflow_client.list_artifacts(run_id, prefix)}
    assert logged == {"a/one.txt", "b/two.txt"}


def test_a_missing_artifact_is_a_tracking_error(tracker, parent, tmp_path):
    _, run_id = parent
    with pytest.raises(TrackingError, match=f"could not log .*missing.txt to run {run_id}"):
        tracker.log_artifacts(run_id, tmp_path / "missing.txt", "a")
