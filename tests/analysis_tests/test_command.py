"""`study analyze` and `study report` on real small studies: the product's headline answer."""

from __future__ import annotations

import json
import shutil

import pytest
from mlflow import MlflowClient

from study.analysis import analyze_study
from study.analysis.gap_text import short_line
from study.config import StudyConfig
from study.errors import StorageError
from study.report import report_study
from study.runtime.session import run_session

pytestmark = pytest.mark.usefixtures("clean_env")


def penalty_study(tmp, mode: str, tracking_uri: str) -> StudyConfig:
    """Digits, a large fixed weight decay, a tiny fixed lr, widths over two decades of params."""
    return StudyConfig(
        study_name=f"p-{mode}", storage=f"sqlite:///{tmp / 'optuna.db'}",
        tracking_uri=tracking_uri, experiment="explain", penalty_mode=(mode,), n_trials=10,
        epochs=1, width_min=4, width_max=40, lr_min=1e-4, lr_max=1e-4, weight_decay_min=1e-2,
        weight_decay_max=1e-2, batch_sizes=(64,), sampler="random", pruner="none", device="cpu",
    )


@pytest.fixture(scope="module")
def studies(tmp_path_factory, mlflow_template_db):
    """Two real studies that differ only in the penalty mode, in one pair of stores."""
    tmp = tmp_path_factory.mktemp("explain")
    shutil.copyfile(mlflow_template_db, tmp / "mlflow.db")
    tracking_uri = f"sqlite:///{tmp / 'mlflow.db'}"
    configs = {mode: penalty_study(tmp, mode, tracking_uri) for mode in ("l2-in-loss", "none")}
    results = {mode: run_session(config) for mode, config in configs.items()}
    return tmp, configs, results


def test_l2_in_loss_study_is_explained_by_the_penalty(studies):
    tmp, configs, _ = studies
    document, path, _ = analyze_study(configs["l2-in-loss"], output_dir=tmp / "a-l2")

    assert document["verdict"]["code"] == "penalty"
    assert document["decomposition"]["width_effect_penalty"]["ci95"][0] > 0
    assert json.loads(path.read_text())["verdict"]["code"] == "penalty"


def test_same_study_without_penalty_is_not_explained_by_it(studies):
    tmp, configs, _ = studies
    document, _, _ = analyze_study(configs["none"], output_dir=tmp / "a-none")

    assert document["verdict"]["code"] != "penalty"
    assert document["decomposition"]["width_effect_penalty"]["estimate"] == pytest.approx(0)


def test_analysis_is_logged_to_the_parent_run(studies):
    tmp, configs, results = studies
    analyze_study(configs["l2-in-loss"], output_dir=tmp / "a-log")

    client = MlflowClient(configs["l2-in-loss"].tracking_uri)
    parent = results["l2-in-loss"].parent_run_id
    logged = [a.path for a in client.list_artifacts(parent, "analysis")]
    assert logged == ["analysis/analysis.json"]
    local = client.download_artifacts(parent, "analysis/analysis.json", str(tmp / "dl"))
    with open(local) as fh:
        document = json.load(fh)
    assert document["schema"] == "study.analysis/3"
    tags = client.get_run(parent).data.tags
    verdict = document["verdict"]
    assert tags["mlflow.note.content"] == \
        f"{verdict['headline']}\n{short_line(document['gap'])}\n\n{verdict['detail']}"
    assert tags["study.verdict"] == document["verdict"]["code"]


def test_analysis_from_mlflow_alone_matches_optuna(studies, capsys):
    tmp, configs, results = studies
    from_optuna, _, _ = analyze_study(configs["l2-in-loss"], output_dir=tmp / "a-opt")
    only_mlflow = configs["l2-in-loss"].replace(storage=f"sqlite:///{tmp / 'absent.db'}")
    capsys.readouterr()

    from_mlflow, _, _ = analyze_study(only_mlflow, output_dir=tmp / "a-mlf")

    (note,) = [line for line in capsys.readouterr().err.splitlines() if "absent.db" in line]
    assert note.startswith("note: `storage` must point to an existing study database")
    assert note.endswith(f"Reading study {only_mlflow.study_name!r} from its MLflow runs "
                         f"instead (parent run {results['l2-in-loss'].parent_run_id}).")
    assert not (tmp / "absent.db").exists()

    assert from_mlflow["verdict"]["code"] == from_optuna["verdict"]["code"]
    assert from_mlflow["n_trials_used"] == from_optuna["n_trials_used"]
    assert from_mlflow["decomposition"]["width_effect_total"]["estimate"] == pytest.approx(
        from_optuna["decomposition"]["width_effect_total"]["estimate"], rel=1e-9)
    # The gap question too, from the runs' per-epoch metric histories (found by a new user:
    # the fallback dropped it without a word).
    assert from_optuna["gap"] is not None
    assert from_mlflow["gap"] == from_optuna["gap"]


def test_unknown_study_in_both_stores_is_one_storage_error(studies):
    tmp, configs, _ = studies
    missing = configs["none"].replace(study_name="nope",
                                      storage=f"sqlite:///{tmp / 'absent2.db'}")

    with pytest.raises(StorageError, match="nope"):
        analyze_study(missing, output_dir=tmp / "a-missing")
    assert not (tmp / "a-missing").exists()


def test_an_unset_tracking_uri_is_mlflows_own_from_the_environment(studies, monkeypatch):
    tmp, configs, results = studies
    config = configs["none"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", config.tracking_uri)

    _, _, logged = analyze_study(config.replace(tracking_uri=None), output_dir=tmp / "a-env")

    assert logged.run_id == results["none"].parent_run_id
    assert str(logged).startswith(f"logged to run {results['none'].parent_run_id}")


def test_an_unset_tracking_uri_without_a_database_here_creates_none(studies, monkeypatch,
                                                                     capsys):
    tmp, configs, _ = studies
    here = tmp / "elsewhere"
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    _, _, logged = analyze_study(configs["none"].replace(tracking_uri=None),
                                 output_dir=tmp / "a-default")

    assert list(here.iterdir()) == []
    assert f"warning: no MLflow database at sqlite:///{here / 'mlflow.db'} (no such file)" \
        in capsys.readouterr().err
    assert logged.run_id is None and str(logged).startswith("not logged")


def test_a_tracking_database_that_does_not_exist_is_not_created(studies, capsys):
    tmp, configs, _ = studies
    absent = f"sqlite:///{tmp / 'no-mlflow.db'}"

    _, _, logged = analyze_study(configs["none"].replace(tracking_uri=absent),
                                 output_dir=tmp / "a-local")

    assert not (tmp / "no-mlflow.db").exists()
    assert (tmp / "a-local" / "analysis.json").exists()
    assert f"warning: no MLflow database at {absent} (no such file); results are written " \
           "locally only." in capsys.readouterr().err
    assert logged.run_id is None and str(logged).startswith("not logged")


def test_report_writes_every_file_and_logs_them(studies):
    tmp, configs, results = studies
    out = tmp / "r-l2"
    document, _, _ = report_study(configs["l2-in-loss"], output_dir=out,
                                        evaluators=["fanova", "ped-anova"], seed=3,
                                        n_bootstrap=5)

    for name in ("report.html", "report.md", "report.json", "trials.csv", "analysis.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["analysis"]["verdict"]["code"] == document["verdict"]["code"]
    evaluators = {row["evaluator"] for row in report["importance"]}
    assert {"fanova", "ped-anova"} <= evaluators
    html = (out / "report.html").read_text()
    assert "fanova" in html and "ped-anova" in html and "seed" in html
    client = MlflowClient(configs["l2-in-loss"].tracking_uri)
    logged = {a.path for a in client.list_artifacts(results["l2-in-loss"].parent_run_id,
                                                    "report")}
    assert {"report/report.html", "report/report.md", "report/report.json",
            "report/trials.csv"} <= logged


def test_analyze_beside_an_earlier_report_says_the_report_is_out_of_date(studies, capsys):
    # Found by a first user: analyze --compare-widths left report.* of other widths beside it.
    from study.cli import main

    tmp, configs, _ = studies
    config = configs["none"]
    args = ["analyze", "--study-name", config.study_name, "--storage", config.storage,
            "--tracking-uri", config.tracking_uri]
    assert main([*args, "--output-dir", str(tmp / "a-fresh")]) == 0
    assert "note: the report" not in capsys.readouterr().err
    report_study(config, output_dir=tmp / "a-stale", evaluators=["fanova"], seed=0,
                 n_bootstrap=2)
    assert main([*args, "--output-dir", str(tmp / "a-stale"), "--compare-widths", "4,20"]) == 0
    assert f"note: the report in {tmp / 'a-stale'} is from an earlier analysis; `study report` " \
           f"with the same flags brings it up to date." in capsys.readouterr().err


def test_analyze_beside_a_report_of_the_same_analysis_says_nothing(studies, capsys):
    """Found by a new user: `make run` (analyze, then report) and an unchanged `study analyze`
    after `study report` said the report was out of date."""
    from study.cli import main

    tmp, configs, _ = studies
    config = configs["none"]
    report_study(config, output_dir=tmp / "a-same", evaluators=["fanova"], seed=0,
                 n_bootstrap=2)
    capsys.readouterr()
    assert main(["analyze", "--study-name", config.study_name, "--storage", config.storage,
                 "--tracking-uri", config.tracking_uri, "--output-dir", str(tmp / "a-same")]) == 0
    assert "note: the report" not in capsys.readouterr().err


def test_analyze_beside_another_studys_report_names_that_study(studies, capsys):
    """Found by a new user: a study of the same name in another storage analyzed into the same
    folder read only "the report is from an earlier analysis"."""
    from study.cli import main

    tmp, configs, results = studies
    report_study(configs["l2-in-loss"], output_dir=tmp / "a-other", evaluators=["fanova"],
                 seed=0, n_bootstrap=2)
    config = configs["none"]
    capsys.readouterr()
    assert main(["analyze", "--study-name", config.study_name, "--storage", config.storage,
                 "--tracking-uri", config.tracking_uri, "--output-dir", str(tmp / "a-other")]) == 0
    assert (f"note: the report in {tmp / 'a-other'} is of another study named 'p-l2-in-loss' "
            f"(parent run {results['l2-in-loss'].parent_run_id}, storage ") \
        in capsys.readouterr().err


@pytest.fixture(scope="module")
def spread(tmp_path_factory, mlflow_template_db):
    """Digits, l2-in-loss, lr 1e-5, widths 2-64, weight decays spread over 1e-5..3e-2."""
    tmp = tmp_path_factory.mktemp("spread")
    shutil.copyfile(mlflow_template_db, tmp / "mlflow.db")
    config = StudyConfig(
        study_name="spread", storage=f"sqlite:///{tmp / 'optuna.db'}",
        tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}", experiment="spread", n_trials=24,
        epochs=1, width_min=2, width_max=64, lr_min=1e-5, lr_max=1e-5, batch_sizes=(64,),
        weight_decay_min=1e-5, weight_decay_max=3e-2, sampler="random", pruner="none",
        device="cpu")
    run_session(config)
    document, _, _ = analyze_study(config, output_dir=tmp / "out")
    return document


def test_a_spread_of_weight_decays_finds_the_threshold_inside_it(spread):
    for block in (spread, spread["init"]):
        found = block["threshold"]
        assert found["status"] == "inside", found
        low, high = found["studied_range"]
        assert low < found["estimate"] < high
        lo, hi = found["ci95"]
        assert (lo is None or lo < found["estimate"]) and hi is not None
        assert hi < high
    assert "start higher once the weight decay exceeds" in spread["verdict"]["text"]


def test_the_gap_question_is_answered_from_every_trials_parts(studies):
    tmp, configs, results = studies
    document, _, _ = analyze_study(configs["none"], output_dir=tmp / "a-gap")

    assert document["design"]["explain"] is False  # a searched study: `study run` adds trials
    gap = document["gap"]
    assert gap["n_trials"] == 10 and [e["epoch"] for e in gap["epochs"]] == [1]
    (epoch,) = gap["epochs"]
    parts = sum(epoch[p]["estimate"] for p in ("timing", "mode", "generalization"))
    assert parts == pytest.approx(epoch["gap"]["estimate"], abs=1e-9)
    assert epoch["gap"]["estimate"] == pytest.approx(
        epoch["val_loss"]["estimate"] - epoch["train_data_loss"]["estimate"], abs=1e-9)
    tags = MlflowClient(configs["none"].tracking_uri).get_run(results["none"].parent_run_id) \
        .data.tags
    assert tags["study.verdict.gap"] == gap["verdict"]["code"]
    assert tags["mlflow.note.content"].split("\n")[2] == short_line(gap)  # the third line
