"""Diagnoses reach both stores and the report: a learning rate of 5 on digits diverges."""

from __future__ import annotations

import optuna
import pytest
from mlflow import MlflowClient

from study.config import StudyConfig
from study.report import report_study
from study.runtime.lifecycle import load_study, prepare_study
from study.runtime.session import run_session
from tests.conftest import cli_env, run_cli

pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
def diverging_study(storage_url, tracking_uri):
    config = StudyConfig(study_name="diag", storage=storage_url, tracking_uri=tracking_uri,
                         experiment="diag", epochs=3, width_min=4, width_max=4, lr_min=1e-3,
                         lr_max=5.0, batch_sizes=(64,), weight_decay_min=1e-2,
                         weight_decay_max=1e-2, n_trials=2, pruner="none", device="cpu")
    study = load_study(prepare_study(config)).study
    study.enqueue_trial({"lr": 5.0})
    study.enqueue_trial({"lr": 1e-2})
    run_session(config)
    return config


def test_lr_5_trial_is_diagnosed_diverged_in_both_stores(diverging_study):
    study = optuna.load_study(study_name="diag", storage=diverging_study.storage)
    wild = study.trials[0]
    diverged = (wild.state == optuna.trial.TrialState.FAIL
                and "non-finite" in wild.user_attrs.get("failure", "")) or \
        "diverged" in wild.user_attrs.get("diagnosis", "")
    assert diverged
    run = MlflowClient(diverging_study.tracking_uri).get_run(wild.user_attrs["mlflow_run_id"])
    assert "diverged" in run.data.tags["study.diagnosis"]
    assert run.data.tags["study.diagnosis.detail"]


def test_healthy_trial_gets_no_code(diverging_study):
    study = optuna.load_study(study_name="diag", storage=diverging_study.storage)
    healthy = study.trials[1]
    assert "diagnosis" not in healthy.user_attrs
    run = MlflowClient(diverging_study.tracking_uri).get_run(
        healthy.user_attrs["mlflow_run_id"])
    assert "study.diagnosis" not in run.data.tags


def test_report_lists_the_diverged_trial(diverging_study, tmp_path):
    report_study(diverging_study, output_dir=tmp_path / "rep", evaluators=["fanova"],
                   seed=0, n_bootstrap=2)
    html = (tmp_path / "rep" / "report.html").read_text()
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "diverged" in html
    assert "diverged" in md


def test_study_trial_with_lr_5_reports_diverged(tmp_path, tracking_uri):
    proc = run_cli(["trial", "--lr", "5", "--width", "4", "--epochs", "2", "--device", "cpu"],
                   cwd=tmp_path, env=cli_env(tracking_uri))
    out = proc.stdout + proc.stderr
    assert "diverged" in out, out
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert "diverged" in run.data.tags["study.diagnosis"]
