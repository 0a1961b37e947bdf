"""Tests of study.landscape.command on a real tiny study: real Optuna SQLite storage, real
MLflow SQLite store with a local artifact store, real training on digits. MLflow is checked through
MlflowClient and Optuna through a freshly loaded study."""

from __future__ import annotations

import json
import math
import pathlib
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import optuna
import pytest
import torch
from mlflow import MlflowClient

import study.landscape._weights as weights_module
from study.config import StudyConfig
from study.errors import ConfigError, TrackingError
from study.keys import WEIGHTS_ARTIFACT
from study.landscape._weights import load_state_dict
from study.landscape.command import (
    METRIC_FLATNESS,
    METRIC_HESSIAN_TOP,
    METRIC_HESSIAN_TRACE,
    METRIC_SHARPNESS,
    probe_trials,
)
from study.landscape.plots import sharpness_figure
from study.landscape.results import (
    landscape_rows,
)
from study.landscape.select import parse_trials, parse_where
from study.runtime.session import run_session

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ENV = ("MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID",
       "STUDY_STORAGE")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, mlflow_template_db: Path):
    """A real 2-trial study (digits, 1 epoch, widths 4..6) plus one FAIL trial (number 2)."""
    root = tmp_path_factory.mktemp("probe-study")
    shutil.copyfile(mlflow_template_db, root / "mlflow.db")
    with pytest.MonkeyPatch.context() as mp:
        for name in ENV:
            mp.delenv(name, raising=False)
        mp.chdir(root)  # the local artifact store (./mlruns) lands in the temporary folder
        config = StudyConfig(
            study_name="probe", storage=f"sqlite:///{root / 'optuna.db'}",
            tracking_uri=f"sqlite:///{root / 'mlflow.db'}", experiment="exp", epochs=1,
            width_min=4, width_max=6, batch_sizes=(64,), n_trials=2, device="cpu",
            pruner="none",
        )
        run_session(config)
        study = optuna.load_study(study_name="probe", storage=config.storage)
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
        yield config, root


@pytest.fixture
def config(finished, monkeypatch) -> StudyConfig:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    return finished[0]


def _trial(config: StudyConfig, number: int) -> optuna.trial.FrozenTrial:
    study = optuna.load_study(study_name=config.study_name, storage=config.storage)
    return study.trials[number]


def _artifact_dir(client: MlflowClient, run_id: str) -> Path:
    uri = client.get_run(run_id).info.artifact_uri
    return Path(unquote(urlparse(uri).path) if uri.startswith("file:") else uri)


def _artifacts(client: MlflowClient, run_id: str, folder: str) -> set[str]:
    return {f.path for f in client.list_artifacts(run_id, folder)}


class CountingTrainer(weights_module.Trainer):
    calls = 0

    def __init__(self, *args, **kwargs):
        type(self).calls += 1
        super().__init__(*args, **kwargs)


class RefusingTrainer:
    def __init__(self, *args, **kwargs):
        raise AssertionError("the probe re-trained although the weights artifact exists")


def test_missing_weights_are_retrained_and_logged_then_loaded(config, tmp_path, monkeypatch):
    client = MlflowClient(config.tracking_uri)
    trial = _trial(config, 0)
    run_id = trial.user_attrs["mlflow_run_id"]
    weights_file = _artifact_dir(client, run_id) / WEIGHTS_ARTIFACT
    # Runs logged before weights were saved have no artifact: remove it if the session logged one.
    original = None
    if weights_file.exists():
        original = torch.load(weights_file, map_location="cpu", weights_only=True)
        shutil.rmtree(weights_file.parent)
    assert WEIGHTS_ARTIFACT not in _artifacts(client, run_id, "weights")

    # (a) no artifact: re-train with the trial's own settings, log the weights, probe.
    CountingTrainer.calls = 0
    monkeypatch.setattr(weights_module, "Trainer", CountingTrainer)
    (first,) = probe_trials(config, trials="0", output_dir=tmp_path / "a")
    assert CountingTrainer.calls == 1
    assert first.weights_source == "retrained"
    assert (first.trial_number, first.run_id, first.dim) == (0, run_id, 1)
    assert WEIGHTS_ARTIFACT in _artifacts(client, run_id, "weights")
    if original is not None:  # CPU training is deterministic: the same weights come back
        retrained = torch.load(weights_file, map_location="cpu", weights_only=True)
        assert retrained.keys() == original.keys()
        assert all(torch.equal(retrained[k], original[k]) for k in original)
    hp = trial.user_attrs["hparams"]
    assert (first.batch_size, first.weight_decay, first.width) == (
        hp["batch_size"], hp["weight_decay"], hp["width"])
    assert math.isfinite(first.sharpness) and 0 < first.flatness_radius <= 1.0

    run = client.get_run(run_id)
    assert run.data.metrics[METRIC_SHARPNESS] == pytest.approx(first.sharpness)
    assert run.data.metrics[METRIC_FLATNESS] == pytest.approx(first.flatness_radius)
    assert _artifacts(client, run_id, "landscape") == {
        "landscape/landscape_1d.png", "landscape/landscape.json"}
    assert first.plot_path.read_bytes().startswith(PNG_MAGIC)
    document = json.loads(first.json_path.read_text())
    assert document["schema"] == "study.landscape/1"
    assert document["weights_source"] == "retrained"
    assert document["sharpness"] == pytest.approx(first.sharpness)
    assert document["probe"]["kind"] == "1d" and len(document["probe"]["alphas"]) == 21
    (row,) = landscape_rows(optuna.load_study(study_name="probe", storage=config.storage))
    assert row["trial_number"] == 0
    assert row["sharpness"] == pytest.approx(first.sharpness)
    assert row["flatness_radius"] == pytest.approx(first.flatness_radius)

    # (b) the artifact now exists: loaded (weights_only=True), never re-trained or re-uploaded.
    stamp = weights_file.stat().st_mtime_ns
    loads = []
    real_load = torch.load

    def spy_load(*args, **kwargs):
        loads.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(weights_module, "Trainer", RefusingTrainer)
    monkeypatch.setattr(torch, "load", spy_load)
    (second,) = probe_trials(config, trials="0", output_dir=tmp_path / "b")
    assert second.weights_source == "artifact"
    assert [kw.get("weights_only") for kw in loads] == [True]
    assert second.sharpness == first.sharpness
    assert second.flatness_radius == first.flatness_radius
    assert weights_file.stat().st_mtime_ns == stamp
    assert second.weights_path.is_file()


def test_best_trial_in_2d(config, tmp_path):
    client = MlflowClient(config.tracking_uri)
    best = optuna.load_study(study_name="probe", storage=config.storage).best_trial
    (result,) = probe_trials(config, trials="best", dim=2, n_points=5, radius=0.5,
                             output_dir=tmp_path)
    assert result.trial_number == best.number and result.dim == 2
    run_id = best.user_attrs["mlflow_run_id"]
    assert "landscape/landscape_2d.png" in _artifacts(client, run_id, "landscape")
    document = json.loads(result.json_path.read_text())
    assert document["probe"]["kind"] == "2d"
    assert len(document["probe"]["losses"]) == 7  # 5 points + the two sharpness distances
    assert client.get_run(run_id).data.metrics[METRIC_SHARPNESS] == \
        pytest.approx(result.sharpness)
    rows = landscape_rows(optuna.load_study(study_name="probe", storage=config.storage))
    assert [r["sharpness"] for r in rows if r["trial_number"] == best.number] == \
        [pytest.approx(result.sharpness)]
    figure = sharpness_figure(rows)
    assert figure.startswith(PNG_MAGIC)


class Payload:
    """Unpickling this would touch ``marker``: the probe must refuse it, not run it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_a_weights_file_holding_code_is_refused_with_a_clear_error(config, tmp_path):
    client = MlflowClient(config.tracking_uri)
    run_id = _trial(config, 1).user_attrs["mlflow_run_id"]
    marker = tmp_path / "unpickled"
    fake = tmp_path / "final.pt"
    torch.save({"0.weight": Payload(marker)}, fake)
    client.log_artifact(run_id, str(fake), artifact_path="weights")
    with pytest.raises(TrackingError) as info:
        probe_trials(config, trials="1", output_dir=tmp_path / "out")
    message = str(info.value)
    assert "\n" not in message
    assert "weights/final.pt of trial 1" in message and "weights_only=True" in message
    assert "Unsupported global" in message
    assert not marker.exists()
    (_artifact_dir(client, run_id) / WEIGHTS_ARTIFACT).unlink()  # later tests probe trial 1


def test_load_state_dict_accepts_tensors_only(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"_orig_mod.0.weight": torch.ones(2)}, good)
    assert list(load_state_dict(good, device="cpu", what="w")) == ["0.weight"]
    plain = tmp_path / "plain.pt"
    torch.save({"0.weight": 3}, plain)  # weights_only allows ints, a state_dict does not
    with pytest.raises(TrackingError, match=r"non-tensor values for 0\.weight"):
        load_state_dict(plain, device="cpu", what="w")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(TrackingError, match="weights_only=True") as info:
        load_state_dict(junk, device="cpu", what="w")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("bad", ["", "worst", "1,a", "-1", "1;2", "best,1", "1.5", "²"])
def test_bad_trials_are_one_line_config_errors(config, tmp_path, bad):
    with pytest.raises(ConfigError) as info:
        probe_trials(config, trials=bad, output_dir=tmp_path)
    message = str(info.value)
    assert message.startswith("`trials` must be best, all, or comma-separated trial numbers")
    assert f"trials={bad!r}" in message and "\n" not in message


@pytest.mark.parametrize("bad", [0, 3, "1", True, 1.0, 1.5])
def test_bad_dim_is_a_one_line_config_error(config, tmp_path, bad):
    with pytest.raises(ConfigError) as info:
        probe_trials(config, dim=bad, output_dir=tmp_path)
    assert str(info.value) == f"`dim` must be 1 or 2, but got dim={bad!r}."


@pytest.mark.parametrize(("trials", "reason"), [("7", "trial 7 does not exist"),
                                                 ("0,2", "trial 2 is FAIL")])
def test_unknown_or_unfinished_trials_list_the_allowed_ones(config, tmp_path, trials, reason):
    with pytest.raises(ConfigError) as info:
        probe_trials(config, trials=trials, output_dir=tmp_path)
    message = str(info.value)
    assert "(allowed: 0, 1)" in message and reason in message and "\n" not in message
    assert not (tmp_path / "trial-0000").exists()  # nothing was probed


def test_bad_radius_fails_before_any_work(config, tmp_path):
    with pytest.raises(ConfigError, match="`radius`"):
        probe_trials(config, radius=0.01, output_dir=tmp_path)


def test_parse_trials():
    assert parse_trials(" Best ") == "best"
    assert parse_trials("ALL") == "all"
    assert parse_trials("3, 1,3") == [3, 1]


def test_all_selects_every_complete_trial_and_where_filters_them(config, tmp_path):
    study = optuna.load_study(study_name="probe", storage=config.storage)
    widths = {t.number: t.user_attrs["hparams"]["width"] for t in study.trials
              if t.state.name == "COMPLETE"}
    quick = dict(n_points=3, radius=0.2, n_directions=1)
    everything = probe_trials(config, trials="all", output_dir=tmp_path / "all", **quick)
    assert [r.trial_number for r in everything] == [0, 1]  # trial 2 FAILED
    width = widths[1]
    matching = probe_trials(config, trials="all", where=f"width={width}",
                            output_dir=tmp_path / "where", **quick)
    assert [r.trial_number for r in matching] == [n for n, w in widths.items() if w == width]
    with pytest.raises(ConfigError, match=r"where='width=999', which selects none"):
        probe_trials(config, trials="all", where="width=999", output_dir=tmp_path, **quick)


@pytest.mark.parametrize("bad", ["width", "depth=3", "width=4,width=5", "=4", "lr="])
def test_bad_where_is_a_one_line_config_error(config, tmp_path, bad):
    with pytest.raises(ConfigError) as info:
        probe_trials(config, where=bad, output_dir=tmp_path)
    assert str(info.value).startswith("`where` must be comma-separated key=value pairs")
    assert f"where={bad!r}" in str(info.value)


def test_parse_where_compares_numbers_by_value():
    assert parse_where("batch_size=32, weight_decay=5e-4") == {"batch_size": "32",
                                                               "weight_decay": "5e-4"}
    assert parse_where(None) == {} and parse_where(" ") == {}


def test_bad_normalization_is_refused_before_any_work(config, tmp_path):
    with pytest.raises(ConfigError, match="`normalization` must be one of filter, layer, none, "
                                          "but got normalization='unit'"):
        probe_trials(config, normalization="unit", output_dir=tmp_path)


def test_plain_directions_and_the_hessian_are_logged_with_the_metrics(config, tmp_path):
    client = MlflowClient(config.tracking_uri)
    (result,) = probe_trials(config, trials="1", normalization="none", n_directions=3,
                             n_points=5, radius=2.0, output_dir=tmp_path)
    run = client.get_run(_trial(config, 1).user_attrs["mlflow_run_id"])
    assert run.data.tags["landscape.normalization"] == "none"
    assert run.data.tags["landscape.directions"] == "3"
    metrics = run.data.metrics
    assert metrics[METRIC_HESSIAN_TOP] == pytest.approx(result.hessian_top_eigenvalue)
    assert metrics[METRIC_HESSIAN_TRACE] == pytest.approx(result.hessian_trace)
    assert result.hessian_top_eigenvalue > 0  # a trained net sits near a minimum
    assert metrics[f"{METRIC_SHARPNESS}_low"] <= result.sharpness <= \
        metrics[f"{METRIC_SHARPNESS}_high"]
    assert metrics[f"{METRIC_FLATNESS}_low"] <= result.flatness_radius <= \
        metrics[f"{METRIC_FLATNESS}_high"]
    document = json.loads(result.json_path.read_text())
    assert document["normalization"] == "none"
    assert document["hessian_top_eigenvalue"] == pytest.approx(result.hessian_top_eigenvalue)
    assert "landscape/landscape_1d.png" in _artifacts(client, run.info.run_id, "landscape")
