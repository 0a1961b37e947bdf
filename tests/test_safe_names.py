"""Study names become folders (reports/<name>/): a new study's unsafe name is refused, and an
existing one (any user of a shared storage can create it through Optuna) writes only under the
output folder."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from study._validation import check_new_study_name, folder_name
from study.config import StudyConfig
from study.errors import ConfigError
from study.runtime.lifecycle import prepare_study
from tests.conftest import cli_env, run_cli


@pytest.mark.parametrize("name", ["../x", "a/b", "a\\b", "..", "x..y", "tab\there", "nul\x00",
                                  "del\x7f"])
def test_unsafe_new_names_are_refused(name):
    with pytest.raises(ConfigError, match=r"`study_name` must be a name without '/', '\\', "
                                          r"'\.\.' or control characters"):
        check_new_study_name(name)


@pytest.mark.parametrize("name", ["cnn-width", "explain-lr1e-05-wd0.01", "a.b", "x y", "é"])
def test_safe_names_are_accepted(name):
    check_new_study_name(name)
    assert folder_name(name) == name


@pytest.mark.parametrize(("name", "folder"), [("../x", "__x"), ("../../etc", "____etc"),
                                              ("/abs", "_abs"), (".hidden", "hidden"),
                                              ("..", "_"), ("./", "_"), ("\x00", "_")])
def test_folder_names_never_leave_the_output_folder(name, folder):
    assert folder_name(name) == folder
    root = Path("/r/reports")
    assert (root / folder_name(name)).resolve().parent == root


def test_creating_a_study_with_an_unsafe_name_creates_nothing(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    with pytest.raises(ConfigError, match=r"`study_name` must be"):
        prepare_study(StudyConfig(study_name="../x", storage=storage))
    assert optuna.study.get_all_study_names(storage=storage) == []


@pytest.mark.slow
def test_report_of_an_existing_unsafe_study_stays_in_its_output_folder(tmp_path, tracking_uri):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="../x", storage=storage)  # Optuna itself allows it
    cwd = tmp_path / "a" / "b" / "c"
    cwd.mkdir(parents=True)
    env = cli_env(tracking_uri)
    ran = run_cli(["run", "--study-name", "../x", "--storage", storage, "--n-trials", "2",
                   "--epochs", "1", "--device", "cpu"], cwd=cwd, env=env)
    assert ran.returncode == 0, ran.stderr[-2000:]
    report = run_cli(["report", "--study-name", "../x", "--storage", storage], cwd=cwd, env=env)
    assert report.returncode == 0, report.stderr[-2000:]
    assert "not a safe folder name; writing to reports/__x" in report.stderr
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()
                     and p.suffix in (".html", ".md", ".json", ".csv", ".png")
                     and "mlruns" not in p.parts)  # MLflow's own artifact store
    assert written and all(p.parts[:5] == ("a", "b", "c", "reports", "__x") for p in written)
    assert not (tmp_path / "a" / "b" / "x").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["o'brien", 'say "hi"'])
def test_a_study_named_with_quotes_runs_resumes_and_is_analyzed(tmp_path, tracking_uri, name):
    """MLflow's filter strings quote values: a name with a quote once failed at the first
    search (``Invalid clause(s) in filter string``)."""
    from mlflow import MlflowClient

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    env = cli_env(tracking_uri)
    common = ["--study-name", name, "--storage", storage, "--experiment", "quotes"]
    for n in (2, 3):  # the second run resumes: it finds the parent run by the study's name
        ran = run_cli(["run", *common, "--n-trials", str(n), "--epochs", "1", "--width-max", "8",
                       "--device", "cpu"], cwd=tmp_path, env=env)
        assert ran.returncode == 0, ran.stderr[-2000:]
    analyzed = run_cli(["analyze", *common], cwd=tmp_path, env=env)
    assert analyzed.returncode == 0, analyzed.stderr[-2000:]
    assert "At initialization:" in analyzed.stdout
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("quotes")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("study.role") == "parent"]
    trials = [r for r in runs if r.data.tags.get("study.role") == "trial"]
    assert [p.data.tags["study.name"] for p in parents] == [name]  # resumed, not a second
    assert len(trials) == 3 and all(r.info.status == "FINISHED" for r in trials)
