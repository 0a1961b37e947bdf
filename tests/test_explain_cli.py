"""`study explain` as a user runs it: the real console script in a subprocess, real stores in a
temporary folder, real training on digits."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from tests.conftest import cli_env, run_cli

pytestmark = pytest.mark.slow
SMALL = ["--width-min", "2", "--width-max", "32", "--n-widths", "4", "--replicates", "2",
         "--lr", "1e-5", "--n-bootstrap", "2", "--device", "cpu"]


def explain(tmp: Path, tracking_uri: str, *extra: str):
    return run_cli(["explain", "--storage", f"sqlite:///{tmp / 'optuna.db'}", *SMALL, *extra],
                   cwd=tmp, env=cli_env(tracking_uri), timeout=900)


@pytest.fixture(scope="module")
def strong(tmp_path_factory, mlflow_template_db):
    tmp = tmp_path_factory.mktemp("explain-strong")
    shutil.copyfile(mlflow_template_db, tmp / "mlflow.db")
    tracking_uri = f"sqlite:///{tmp / 'mlflow.db'}"
    return tmp, tracking_uri, explain(tmp, tracking_uri, "--weight-decay", "1e-2")


def early_code(stdout: str) -> str:
    """The early window's code from the verdict's second line ("Over the first ...: CODE.")."""
    lines = stdout.splitlines()
    assert lines[0].startswith("At initialization: "), stdout[:300]
    assert lines[1].startswith("Over the first "), stdout[:300]
    return lines[1].split(": ", 1)[1].split(".", 1)[0]


def test_a_strong_penalty_is_explained_by_the_penalty(strong):
    _, _, outcome = strong
    assert outcome.returncode == 0, outcome.stderr[-3000:]
    assert early_code(outcome.stdout) == "penalty"
    assert "start higher once the weight decay exceeds" in outcome.stdout


def test_the_experiment_is_paired_trials_in_one_study(strong):
    tmp, _, _ = strong
    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{tmp / 'optuna.db'}")
    study = optuna.load_study(study_name=summary.study_name,
                              storage=f"sqlite:///{tmp / 'optuna.db'}")
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 4 * 2 * 2
    seeds: dict[int, set[str]] = {}
    for t in trials:
        seeds.setdefault(t.user_attrs["train_seed"], set()).add(t.params["penalty_mode"])
    assert all(modes == {"l2-in-loss", "none"} for modes in seeds.values())
    assert {t.params["width"] for t in trials} == {2, 5, 13, 32}


def test_the_verdict_is_on_the_parent_run_and_in_the_report(strong):
    tmp, tracking_uri, outcome = strong
    client = MlflowClient(tracking_uri)
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("study").experiment_id], "tags.`study.role` = 'parent'")
    assert parent.data.tags["study.verdict"] == "penalty"
    verdict, _, where = parent.data.tags["mlflow.note.content"].partition("\n\nReport: ")
    assert verdict in outcome.stdout
    assert "report/report.html" in where
    (report,) = (tmp / "reports").iterdir()
    document = json.loads((report / "analysis.json").read_text())
    assert document["schema"] == "study.analysis/2" and document["init"]["threshold"]
    assert (report / "report.html").is_file()


def test_running_it_again_resumes_without_training(strong):
    tmp, tracking_uri, _ = strong
    again = explain(tmp, tracking_uri, "--weight-decay", "1e-2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "every designed trial has run; nothing to run" in again.stderr
    assert early_code(again.stdout) == "penalty"


def test_a_weak_penalty_is_not_explained_by_the_penalty(tmp_path, tracking_uri):
    outcome = explain(tmp_path, tracking_uri, "--weight-decay", "1e-5")
    assert outcome.returncode == 0, outcome.stderr[-3000:]
    assert early_code(outcome.stdout) != "penalty"


BAD_INPUT = {
    "penalty_mode": (["--penalty-mode", "l2-in-loss,none"],
                     "`penalty_mode` must be a single mode"),
    "n_widths": (["--n-widths", "2"], "`n_widths` must be an integer >= 3"),
    "replicates": (["--replicates", "0"], "`replicates` must be an integer >= 1"),
    "lr": (["--lr", "-1"], "`lr` must be > 0, but got lr=-1.0."),  # named as its flag
}


def _bad_input(case: str, base: Path, template: Path):
    tmp = base / case
    tmp.mkdir()
    shutil.copyfile(template, tmp / "mlflow.db")
    tracking_uri = f"sqlite:///{tmp / 'mlflow.db'}"
    return tmp, tracking_uri, explain(tmp, tracking_uri, *BAD_INPUT[case][0])


@pytest.fixture(scope="module")
def bad_outcomes(tmp_path_factory, mlflow_template_db):
    """Every bad input at once: each subprocess pays its start-up, which a second core can
    overlap."""
    base = tmp_path_factory.mktemp("explain-bad")
    with ThreadPoolExecutor(max_workers=len(BAD_INPUT)) as pool:
        futures = {case: pool.submit(_bad_input, case, base, mlflow_template_db)
                   for case in BAD_INPUT}
        return {case: future.result() for case, future in futures.items()}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_is_one_line_and_creates_nothing(bad_outcomes, case):
    tmp, tracking_uri, outcome = bad_outcomes[case]
    message = BAD_INPUT[case][1]
    assert outcome.returncode == 1
    assert outcome.stderr.strip().count("\n") == 0 and message in outcome.stderr
    assert not (tmp / "optuna.db").exists()
    client = MlflowClient(tracking_uri)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []
