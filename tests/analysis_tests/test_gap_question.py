"""The seed's second question on real studies: a vgg on digits whose BatchNorm statistics
follow Keras's momentum lags on validation because of them, and keeps lagging; with PyTorch's
momentum the statistics settle within an epoch and validation catches up. Every epoch's parts
add up to ``val/loss - train/data_loss`` in MLflow."""

from __future__ import annotations

import shutil

import pytest
from mlflow import MlflowClient

from study.analysis import analyze_study
from study.analysis.gap_stats import caught_up
from study.config import StudyConfig
from study.runtime.session import run_session

pytestmark = pytest.mark.usefixtures("clean_env")

EPOCHS = 3
PARTS = ("gap/timing", "gap/mode", "gap/generalization")


def _config(tmp, bn_momentum: str, tracking_uri: str) -> StudyConfig:
    # lr 3e-3: the learning rate at which the BatchNorm statistics move most within an epoch.
    return StudyConfig(
        study_name=f"gap-{bn_momentum}", storage=f"sqlite:///{tmp / 'optuna.db'}",
        tracking_uri=tracking_uri, experiment="gap", model="vgg", width_min=8, width_max=8,
        lr_min=3e-3, lr_max=3e-3, batch_sizes=(64,), weight_decay_min=0.0,
        weight_decay_max=0.0, penalty_mode=("none",), bn_momentum=(bn_momentum,),
        epochs=EPOCHS, n_trials=3, pruner="none", sampler="random", device="cpu")


@pytest.fixture(scope="module")
def studies(tmp_path_factory, mlflow_template_db):
    tmp = tmp_path_factory.mktemp("gap")
    shutil.copyfile(mlflow_template_db, tmp / "mlflow.db")
    tracking_uri = f"sqlite:///{tmp / 'mlflow.db'}"
    out = {}
    for name in ("keras", "pytorch"):
        config = _config(tmp, name, tracking_uri)
        run_session(config)
        out[name] = (config, analyze_study(config, output_dir=tmp / name)[0]["gap"])
    return out


def test_keras_momentum_lags_because_of_the_batchnorm_statistics(studies):
    _, gap = studies["keras"]
    assert gap["verdict"]["code"] == "normalization-statistics"
    assert [e["carrier"] for e in gap["epochs"]] == ["mode_batchnorm"] * EPOCHS
    assert gap["closes_at_epoch"] is None


def test_pytorch_momentum_catches_up_once_the_statistics_settle(studies):
    _, gap = studies["pytorch"]
    # Caught up at an epoch, and not shown open at the last (3 trials at epoch 3 may straddle
    # a threshold of 0.02 nats: "lag unclear at epoch 3" then, not a closing epoch).
    assert any(caught_up(e["lag"], e["threshold"]) for e in gap["epochs"])
    assert gap["closing"] != "open"
    assert gap["epochs"][-1]["carrier"] != "mode_batchnorm"
    keras_mode = studies["keras"][1]["epochs"][-1]["mode"]["ci95"][0]
    assert gap["epochs"][-1]["mode"]["ci95"][1] < keras_mode


@pytest.mark.parametrize("name", ["keras", "pytorch"])
def test_every_epochs_parts_add_up_to_the_gap_in_mlflow(studies, name):
    config, _ = studies[name]
    client = MlflowClient(config.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("gap").experiment_id],
                              f"tags.`study.name` = 'gap-{name}' and tags.`study.role` = 'trial'")
    assert len(runs) == 3

    def history(run_id: str, key: str) -> dict[int, float]:
        return {m.step: m.value for m in client.get_metric_history(run_id, key)}

    for run in runs:
        run_id = run.info.run_id
        parts = [history(run_id, key) for key in PARTS]
        val, train = history(run_id, "val/loss"), history(run_id, "train/data_loss")
        assert sorted(val) == list(range(1, EPOCHS + 1))
        for epoch in val:
            total = sum(part[epoch] for part in parts)
            assert total == pytest.approx(val[epoch] - train[epoch], abs=1e-6)
