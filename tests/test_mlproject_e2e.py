"""The real `mlflow run` command on this project, in a subprocess, checked through MlflowClient."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from tests.conftest import REPO, cli_env

pytestmark = pytest.mark.slow

TRIAL_PARAMS = {"width", "lr", "batch_size", "weight_decay", "penalty_mode", "model", "dataset",
                "seed", "device", "n_params"}
TRIAL_TAGS = {"study.role", "optuna.study_name", "optuna.trial_number", "optuna.trial_state",
              "mlflow.parentRunId"}
EPOCH_METRICS = ("train/loss", "train/data_loss", "train/penalty", "train/weight_sq_norm",
                 "val/loss", "val/accuracy", "train/samples_per_s")
SUMMARY_METRICS = {"n_params", "early/loss", "early/data_loss", "early/penalty",
                   "final/val_loss", "final/val_accuracy"}
PARENT_METRICS = {"study/n_complete", "study/n_pruned", "study/n_failed", "study/best_value"}


def mlflow_run(entry: str, params: dict[str, str], *, cwd: Path, tracking_uri: str,
               experiment: str = "e2e", project: Path = REPO) -> subprocess.CompletedProcess:
    bin_dir = str(Path(sys.executable).parent)
    # The image cache stays in the test's folder, not the user's home.
    env = cli_env(tracking_uri, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""),
                  STUDY_CACHE_DIR=str(cwd / "cache"))
    cmd = [str(Path(bin_dir) / "mlflow"), "run", str(project), "-e", entry, "--env-manager",
           "local", "--experiment-name", experiment]
    for key, value in params.items():
        cmd += ["-P", f"{key}={value}"]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_mlflow_run_study_then_resume(tmp_path, tracking_uri):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = mlflow_run("study", {"n_trials": "3", "epochs": "2", "storage": storage},
                       cwd=tmp_path, tracking_uri=tracking_uri)
    assert first.returncode == 0, first.stderr[-3000:]
    # What to run next and where to look, as `-e main` ends (found by a new user).
    assert "next: mlflow run . -e report --env-manager local" in first.stdout
    assert "the study in the MLflow UI" in first.stdout
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("e2e")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("study.role") == "parent"]
    trials = sorted((r for r in runs if r.data.tags.get("study.role") == "trial"),
                    key=lambda r: r.info.run_name)

    assert len(runs) == 4
    (parent,) = parents
    assert parent.info.run_name == "cnn-width"
    assert parent.info.status == "FINISHED"
    assert {"study.name", "study.storage"} <= set(parent.data.tags)
    assert set(parent.data.metrics) >= PARENT_METRICS
    assert parent.data.metrics["study/n_complete"] + parent.data.metrics["study/n_pruned"] == 3
    assert {"n_trials", "width_min", "lr_max", "penalty_mode", "seed"} <= set(parent.data.params)
    assert [r.info.run_name for r in trials] == ["trial-0000", "trial-0001", "trial-0002"]
    for run in trials:
        assert set(run.data.tags) >= TRIAL_TAGS
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert set(run.data.params) >= TRIAL_PARAMS
        assert run.data.params["penalty_mode"] == "l2-in-loss"
        state = run.data.tags["study.state"]
        assert state in ("COMPLETE", "PRUNED")
        assert run.info.status == "FINISHED"  # pruned trials too: they ran as asked
        if state == "COMPLETE":
            assert set(run.data.metrics) >= SUMMARY_METRICS
        histories = {key: {m.step: m.value
                           for m in client.get_metric_history(run.info.run_id, key)}
                     for key in EPOCH_METRICS}
        assert set(histories["train/loss"]) <= {1, 2} and 1 in histories["train/loss"]
        for step, total in histories["train/loss"].items():
            assert set(EPOCH_METRICS) == {k for k, h in histories.items() if step in h}
            assert total == pytest.approx(
                histories["train/data_loss"][step] + histories["train/penalty"][step],
                rel=1e-12)

    second = mlflow_run("study", {"n_trials": "5", "epochs": "2", "storage": storage},
                        cwd=tmp_path, tracking_uri=tracking_uri)
    assert second.returncode == 0, second.stderr[-3000:]
    runs = client.search_runs([experiment.experiment_id])
    by_role: dict[str, list] = {}
    for run in runs:
        by_role.setdefault(run.data.tags.get("study.role"), []).append(run)
    assert len(by_role["parent"]) == 1
    assert by_role["parent"][0].info.run_id == parent.info.run_id
    assert sorted(r.info.run_name for r in by_role["trial"]) == [
        f"trial-{n:04d}" for n in range(5)]
    assert {r.data.tags["mlflow.parentRunId"] for r in by_role["trial"]} == {parent.info.run_id}
    (session,) = by_role["session"]
    assert session.data.tags["study.parent_run_id"] == parent.info.run_id
    assert all(r.info.status != "RUNNING" for r in runs)


def test_mlflow_run_trial_logs_one_run(tmp_path, tracking_uri):
    result = mlflow_run("trial", {"width": "4", "epochs": "1"}, cwd=tmp_path,
                        tracking_uri=tracking_uri, experiment="single")
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("single").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["study.role"] == "single"
    assert run.data.params["width"] == "4"
    assert run.data.metrics["train/loss"] == pytest.approx(
        run.data.metrics["train/data_loss"] + run.data.metrics["train/penalty"], rel=1e-12)


@pytest.fixture(scope="module")
def two_mains(tmp_path_factory, mlflow_template_db):
    """``main`` run twice in a copy of the project (MLflow runs the entry point in the project's
    folder, so the default reports/<study-name>/ lands there and not in this checkout): study
    ``first`` (4 trials) in experiment ``main``, then ``second`` (2 trials) in ``two``, both in
    one storage."""
    tmp = tmp_path_factory.mktemp("main")
    project = tmp / "project"
    project.mkdir()
    for name in ("MLproject", "python_env.yaml"):
        shutil.copy(REPO / name, project / name)
    shutil.copytree(REPO / "pipelines", project / "pipelines")
    shutil.copyfile(mlflow_template_db, tmp / "mlflow.db")
    tracking_uri = f"sqlite:///{tmp / 'mlflow.db'}"
    storage = f"sqlite:///{tmp / 'optuna.db'}"
    results = {}
    for name, experiment, n_trials, n_bootstrap, widths in (("first", "main", "4", "3", ""),
                                                            ("second", "two", "2", "2", "4,16")):
        results[name] = mlflow_run(
            "main", {"study_name": name, "n_trials": n_trials, "epochs": "1",
                     "storage": storage, "n_bootstrap": n_bootstrap, "compare_widths": widths},
            cwd=tmp, tracking_uri=tracking_uri, experiment=experiment, project=project)
    return project, tracking_uri, results


def test_mlflow_run_main_leaves_analysis_and_report_on_the_parent(two_mains, tmp_path):
    _, tracking_uri, results = two_mains
    result = results["first"]
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("main").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("study.role") == "parent"]
    assert len([r for r in runs if r.data.tags.get("study.role") == "trial"]) == 4
    analysis = {a.path for a in client.list_artifacts(parent.info.run_id, "analysis")}
    report = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert analysis == {"analysis/analysis.json"}
    assert {"report/report.html", "report/report.md", "report/report.json",
            "report/trials.csv", "report/trials_table.json"} <= report
    # said once, by report, not by analyze too; the two lines first
    assert result.stdout.count("At initialization: ") == 1
    assert result.stdout.count("Over the first epoch: ") == 1
    lines = result.stdout.splitlines()
    first = lines.index(next(line for line in lines if line.startswith("At initialization: ")))
    assert lines[first + 2].startswith("Gap")  # the gap's line third, once
    assert result.stdout.count("\nGap") == 1
    ui = f"{Path(sys.executable).with_name('mlflow')} ui --backend-store-uri"
    hint = lines.index(next(line for line in lines
                            if line.startswith("the study in the MLflow UI (experiment ")))
    assert lines[hint + 1].startswith(f"  {ui} ") and not lines[hint + 1].endswith(",")
    experiment_id = client.get_experiment_by_name("main").experiment_id
    assert f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs" \
           "?workflowType=machine_learning" in result.stdout
    note = client.get_run(parent.info.run_id).data.tags["mlflow.note.content"]
    assert note.startswith("At initialization: ") and "report/report.html" in note
    assert note.split("\n")[1].startswith("Over the first epoch: ")
    tags = client.get_run(parent.info.run_id).data.tags
    assert tags["study.verdict.early"] == tags["study.verdict"]
    assert tags["study.verdict.init"] in ("penalty", "inconclusive", "no-increase", "both",
                                          "optimization")
    # A table artifact as the UI knows it (the tag it reads), holding one row per trial.
    logged = json.loads(client.get_run(parent.info.run_id).data.tags["mlflow.loggedArtifacts"])
    assert {"path": "report/trials_table.json", "type": "table"} in logged
    local = client.download_artifacts(parent.info.run_id, "report/trials_table.json",
                                      str(tmp_path))
    table = json.loads(Path(local).read_text())  # pandas "split" orientation
    assert len(table["data"]) == 4 and {"number", "width", "n_params"} <= set(table["columns"])


def test_mlflow_run_main_writes_one_report_folder_per_study(two_mains):
    project, _, results = two_mains
    for result in results.values():
        assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (project / "reports").iterdir()) == ["first", "second"]
    for name in ("first", "second"):
        assert (project / "reports" / name / "report.html").is_file()
    # `main` takes --compare-widths for its analysis and report (found by a user: refused).
    widths = {name: json.loads((project / "reports" / name / "analysis.json").read_text())
              ["reference"]["span"] for name in ("first", "second")}
    assert (widths["first"]["widths"], widths["first"]["source"]) == ([4, 32], "configured")
    assert (widths["second"]["widths"], widths["second"]["source"]) == ([4, 16], "given")


def test_mlflow_run_explain_leaves_the_verdict_on_its_parent_run(tmp_path, tracking_uri):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = mlflow_run(
        "explain",
        {"storage": storage, "width_min": "2", "width_max": "8", "n_widths": "3",
         "replicates": "1", "lr": "1e-5", "weight_decay": "0.01"},
        cwd=tmp_path, tracking_uri=tracking_uri, experiment="explain",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("explain").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("study.role") == "parent"]
    trials = [r for r in runs if r.data.tags.get("study.role") == "trial"]
    assert len(trials) == 3 * 2  # three widths, each paired with its none control
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parent.info.run_id}
    assert parent.data.tags["study.verdict"] in ("penalty", "inconclusive", "no-increase",
                                                 "both", "optimization")
    assert parent.data.tags["mlflow.note.content"].startswith("At initialization: ")
    verdict, _, where = parent.data.tags["mlflow.note.content"].partition("\n\nReport: ")
    assert verdict.split("\n")[2].startswith("Gap")  # the third line, after the two
    assert all(paragraph in result.stdout for paragraph in verdict.split("\n\n"))
    assert "report/report.html" in where
    assert {r.data.params["epochs"] for r in trials} == {"1"}  # explain's own default


def test_mlflow_run_study_on_a_users_factory_and_image_folder(tmp_path, tracking_uri):
    from tests.test_own_model import FACTORY, write_images

    (tmp_path / "net.py").write_text(FACTORY)
    images = write_images(tmp_path / "shapes")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    model = f"{tmp_path / 'net.py'}:build"
    result = mlflow_run(
        "study",
        {"storage": storage, "model": model, "dataset": f"imagefolder:{images}",
         "image_size": "10x12", "n_trials": "2", "epochs": "1", "width_min": "2",
         "width_max": "8", "batch_sizes": "8", "device": "cpu"},
        cwd=tmp_path, tracking_uri=tracking_uri, experiment="own",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("own").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("study.role") == "parent"]
    trials = [r for r in runs if r.data.tags.get("study.role") == "trial"]
    assert len(trials) == 2
    assert {r.info.status for r in trials} == {"FINISHED"}
    assert parent.data.params["model"] == model
    assert parent.data.params["image_size"] == "10x12"
    assert "study.model_sha256" in parent.data.tags
    assert {r.data.params["dataset"] for r in trials} == {f"imagefolder:{images}"}


BAD_INPUT = {
    "study": ({"width_min": "0"}, "width_min"),
    "main": ({"weight_decay_max": "-1"}, "weight_decay_max"),
    "trial": ({"batch_size": "0"}, "batch_size"),
    "analyze": ({"compare_widths": "8,4"}, "compare_widths"),
    "report": ({"compare_widths": "0,4"}, "compare_widths"),
}


def _bad_input(entry: str, base: Path, template: Path):
    cwd = base / entry
    cwd.mkdir()
    shutil.copyfile(template, cwd / "mlflow.db")
    tracking_uri = f"sqlite:///{cwd / 'mlflow.db'}"
    storage = f"sqlite:///{cwd / 'optuna.db'}"
    extra = {} if entry == "trial" else {"storage": storage}
    proc = mlflow_run(entry, {**BAD_INPUT[entry][0], **extra}, cwd=cwd,
                      tracking_uri=tracking_uri)
    return cwd, tracking_uri, storage, proc


@pytest.fixture(scope="module")
def bad_outcomes(tmp_path_factory, mlflow_template_db):
    """Each entry point given bad input, all at once: each ``mlflow run`` pays seconds of
    imports, which a second core can overlap."""
    base = tmp_path_factory.mktemp("bad-input")
    with ThreadPoolExecutor(max_workers=len(BAD_INPUT)) as pool:
        futures = {entry: pool.submit(_bad_input, entry, base, mlflow_template_db)
                   for entry in BAD_INPUT}
        return {entry: future.result() for entry, future in futures.items()}


@pytest.mark.parametrize("entry", BAD_INPUT)
def test_bad_input_through_mlflow_run_leaves_no_run(bad_outcomes, entry):
    cwd, tracking_uri, storage, bad = bad_outcomes[entry]
    field = BAD_INPUT[entry][1]

    assert bad.returncode != 0
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"`{field}`" in errors[0], bad.stderr[-2000:]
    assert "Traceback" not in bad.stderr
    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    # MLflow closes its entry run after the command exits; the discard follows within seconds.
    deadline = time.monotonic() + 60
    while client.search_runs(experiments) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert client.search_runs(experiments) == []
    (discarded,) = client.search_runs(experiments, run_view_type=ViewType.DELETED_ONLY)
    assert discarded.info.status == "FAILED"
    assert not (cwd / "optuna.db").exists() or not optuna.get_all_study_names(storage)


def write_digit_folders(root: Path, *, moved: int, seed: int = 0) -> set[str]:
    """Digits as PNG files in ``train/<digit>/`` and ``val/<digit>/``, with ``moved`` training
    images put in the folder of another digit (mislabeled); returns their paths."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (bunch.images * 255 / 16).astype("uint8")
    train, val = train_test_split(range(len(images)), test_size=0.2, random_state=seed,
                                  stratify=bunch.target)
    rng = np.random.default_rng(seed)
    wrong = set(rng.choice(train, moved, replace=False).tolist())
    paths = set()
    for split, rows in (("train", train), ("val", val)):
        for i in rows:
            label = int(bunch.target[i])
            if i in wrong:
                label = (label + int(rng.integers(1, 10))) % 10
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i], "L").save(folder / f"{i:04d}.png")
            if i in wrong:
                paths.add(f"train/{label}/{i:04d}.png")
    return paths


def test_mlflow_run_doctor_names_mislabeled_image_files(tmp_path, tracking_uri):
    moved = write_digit_folders(tmp_path / "digits", moved=40)
    # The two checks this is about (lr: the labels check trains at its suggestion); the
    # parameter reaches the command (every check on every model: tests/doctor_tests).
    result = mlflow_run("doctor", {"dataset": f"imagefolder:{tmp_path / 'digits'}",
                                   "output_dir": str(tmp_path / "out"), "device": "cpu",
                                   "checks": "lr,labels"},
                        cwd=tmp_path, tracking_uri=tracking_uri, experiment="doc")
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads((tmp_path / "out" / "doctor.json").read_text())
    assert doc["inputs"]["split"] == "given"
    assert [c["name"] for c in doc["checks"]] == ["labels", "lr"]
    labels = next(c for c in doc["checks"] if c["name"] == "labels")
    assert all(s.startswith("train/") and s.endswith(".png") for s in labels["suspects"])
    assert len(moved & set(labels["suspects"])) >= 30
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("doc").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["study.role"] == "doctor"
    assert run.data.tags["study.doctor.labels"] == labels["status"]
    # Every suspect, not only the first 100 of doctor.json, in a file logged beside it.
    listed = (tmp_path / "out" / labels["suspects_file"]).read_text().splitlines()
    assert len(listed) == 1 + labels["details"]["n_suspects"]
    assert [line.split(",")[1] for line in listed[1:len(labels["suspects"]) + 1]] == \
        labels["suspects"]
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "doctor")}
    assert f"doctor/{labels['suspects_file']}" in logged


def test_main_refuses_bad_compare_widths_before_running_the_study(tmp_path, monkeypatch,
                                                                   capsys):
    from study.mlproject import main_pipeline

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    code = main_pipeline(["--study-name", "w", "--storage", storage, "--compare-widths", "8,4"])
    assert code == 1
    assert capsys.readouterr().err.strip() == (
        "error: `compare_widths` must be two widths A,B with 1 <= A < B, but got "
        "compare_widths='8,4'.")
    assert list(tmp_path.iterdir()) == []
