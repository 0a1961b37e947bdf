"""The lines `mlflow run` prints under the verdict: where to see the study in the MLflow UI."""

from __future__ import annotations

import shlex

from study.mlproject import ui_hint


def test_a_local_store_gives_the_command_and_the_url_on_lines_of_their_own():
    lines = ui_hint({"MLFLOW_TRACKING_URI": "sqlite:////tmp/x y/mlflow.db",
                     "MLFLOW_EXPERIMENT_ID": "7", "MLFLOW_EXPERIMENT_NAME": "study",
                     "MLFLOW_RUN_ID": "abc"}).splitlines()
    assert lines[0] == "the study in the MLflow UI (experiment study, parent run abc):"
    command = shlex.split(lines[1])
    assert command[1:] == ["ui", "--backend-store-uri", "sqlite:////tmp/x y/mlflow.db"]
    assert command[0].endswith("mlflow")
    assert lines[2] == ("  then open http://127.0.0.1:5000/#/experiments/7/runs"
                        "?workflowType=machine_learning")


def test_a_tracking_server_gives_its_own_url_without_the_password():
    lines = ui_hint({"MLFLOW_TRACKING_URI": "http://bob:hunter2@tracker:5000/",
                     "MLFLOW_EXPERIMENT_ID": "3", "MLFLOW_RUN_ID": "r"}).splitlines()
    assert len(lines) == 2 and "hunter2" not in lines[1]
    assert lines[1].startswith("  open http://") and lines[1].endswith(
        "tracker:5000/#/experiments/3/runs?workflowType=machine_learning")


def test_the_study_parent_is_named_rather_than_a_later_sessions_run():
    lines = ui_hint({"MLFLOW_TRACKING_URI": "sqlite:///mlflow.db", "MLFLOW_EXPERIMENT_ID": "7",
                     "MLFLOW_RUN_ID": "session"}, parent_run_id="parent").splitlines()
    assert lines[0] == "the study in the MLflow UI (experiment 7, parent run parent):"


def test_a_later_mlflow_run_session_leads_to_its_study_parent(tracking_uri):
    from study.mlproject import _study_parent
    from study.tracking import Tracker, claim_parent_run, tag_session

    tracker = Tracker(tracking_uri, retry_seconds=0)
    experiment_id = tracker.experiment_id("study")
    parent = tracker.create_run(experiment_id, name="s", tags={})
    claim_parent_run(tracker, parent, study_name="s", storage="sqlite:///optuna.db",
                     params={}, owner=None)
    session = tracker.create_run(experiment_id, name="later", tags={})
    tag_session(tracker, session, study_name="s", parent_run_id=parent)
    environ = {"MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_RUN_ID": session}

    assert _study_parent(environ) == (parent, "study")
    assert _study_parent({**environ, "MLFLOW_RUN_ID": parent}) == (parent, "study")
    assert _study_parent({**environ, "MLFLOW_RUN_ID": "0" * 32}) == (None, None)


def test_an_experiment_known_by_its_id_only_is_named():
    # Found by a user: `mlflow run --experiment-name study` gave "(experiment 1, ...)".
    lines = ui_hint({"MLFLOW_TRACKING_URI": "sqlite:///mlflow.db", "MLFLOW_EXPERIMENT_ID": "1",
                     "MLFLOW_RUN_ID": "r"}, parent_run_id="r", experiment="study").splitlines()
    assert lines[0] == "the study in the MLflow UI (experiment study, parent run r):"
    assert lines[-1].endswith("/#/experiments/1/runs?workflowType=machine_learning")


def test_the_study_entry_point_names_the_command_that_answers_it():
    """Found by a new user: `mlflow run . -e study` ended without saying what to run next."""
    from study.mlproject import next_step

    defaults = ["--study-name", "cnn-width", "--storage", "sqlite:///optuna.db", "--epochs", "3"]
    assert next_step(defaults) == ("next: mlflow run . -e report --env-manager local writes "
                                   "the answer and the report (-e analyze: the answer alone)")
    named = ["--study-name", "my study", "--storage", "postgresql://u:secret@h/optuna"]
    line = next_step(named)
    assert "-P 'study_name=my study'" not in line  # quoted as a whole -P value
    assert "-P study_name='my study'" in line
    assert "-P storage=postgresql://u:***@h/optuna" in line and "secret" not in line
