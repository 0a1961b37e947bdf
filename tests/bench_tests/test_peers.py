"""The bench's peers log what the bench says they log (counted through ``MlflowClient`` on tmp
SQLite stores), leave MLflow's process-wide settings as they found them, and split their
costs by their clocks."""

from __future__ import annotations

import os
from typing import Any

import pytest

from bench import peers
from bench.harness import BATCH, LR, WEIGHT_DECAY, Workspace

WIDTHS = (4, 6)
EPOCHS = 2


def _run(name: str, ws: Workspace, data: Any) -> tuple[str, str, peers.Clock]:
    _, storage, tracking = ws.fresh(name)
    peers.enqueued_study(storage, WIDTHS)
    clock = peers.PEER_RUNNERS[name](storage, tracking, data, widths=WIDTHS, epochs=EPOCHS)
    return storage, tracking, clock


def _trial_values(storage: str) -> dict[int, float]:
    import optuna

    study = optuna.load_study(study_name=peers.STUDY, storage=storage)
    return {t.params["width"]: t.value for t in study.trials}


def _runs(tracking: str) -> list[Any]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name(peers.STUDY)
    return client.search_runs([experiment.experiment_id])


def test_mlflowcb_logs_one_final_value_per_trial(workspace: Workspace, data: Any) -> None:
    from mlflow import MlflowClient

    storage, tracking, _ = _run("mlflowcb", workspace, data)
    client, values = MlflowClient(tracking), _trial_values(storage)
    runs = _runs(tracking)
    assert sorted(int(r.data.params["width"]) for r in runs) == sorted(WIDTHS)
    for run in runs:
        value = values[int(run.data.params["width"])]
        assert run.data.metrics == {"val_loss": pytest.approx(value)}
        assert len(client.get_metric_history(run.info.run_id, "val_loss")) == 1
    assert peers.logged(tracking)["metric_rows"] == len(WIDTHS)


@pytest.mark.parametrize("name", ["docs", "docs_async"])
def test_the_docs_recipe_logs_each_epoch_in_nested_runs(name: str, workspace: Workspace,
                                                         data: Any) -> None:
    from mlflow import MlflowClient

    storage, tracking, _ = _run(name, workspace, data)
    client, values = MlflowClient(tracking), _trial_values(storage)
    runs = _runs(tracking)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r is not parent]
    assert parent.data.metrics == {"best_val_loss": pytest.approx(min(values.values()))}
    assert len(children) == len(WIDTHS)
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        width = int(child.data.params["width"])
        assert child.data.params == {"width": str(width), "lr": str(LR),
                                     "batch_size": str(BATCH),
                                     "weight_decay": str(WEIGHT_DECAY)}
        for key in ("train_loss", "val_loss"):
            history = client.get_metric_history(child.info.run_id, key)
            assert sorted(m.step for m in history) == list(range(EPOCHS))
        assert child.data.metrics["val_loss"] == pytest.approx(values[width])
    assert peers.logged(tracking)["metric_rows"] == 2 * EPOCHS * len(WIDTHS) + 1


def test_peers_leave_mlflow_settings_as_they_were(workspace: Workspace, data: Any) -> None:
    import mlflow

    before = {name: os.environ.get(name) for name in
              ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", peers._BUFFERING_VAR)}
    _, tracking, _ = _run("docs_async", workspace, data)
    after = {name: os.environ.get(name) for name in before}
    assert after == before
    assert mlflow.get_tracking_uri() != tracking
    assert mlflow.active_run() is None


def test_a_peer_clock_splits_per_trial_per_epoch_and_session() -> None:
    clock = peers.Clock(wall=10.0, optimize=8.0, fit=6.0, hooks=1.0)
    assert clock.split(2, 5) == {"per_trial_fixed": 1.0, "per_epoch": 0.1,
                                 "session_fixed": 2.0}


def test_a_peer_clock_times_only_its_own_calls(workspace: Workspace, data: Any) -> None:
    _, _, clock = _run("docs", workspace, data)
    assert 0 < clock.hooks < clock.fit < clock.optimize < clock.wall
