"""Runs written straight into MLflow's SQL tables (study.tracking._sqlwriter) read back, through
MlflowClient, exactly as runs written by MlflowClient itself: twin runs on real SQLite and
PostgreSQL stores, one written each way."""

from __future__ import annotations

import logging
import math

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from study.errors import TrackingError
from study.tracking import Tracker
from study.tracking._sqlwriter import SqlRunWriter, writer_layout_mismatch
from tests.servers import postgres_database, postgres_url

pytestmark = pytest.mark.usefixtures("clean_env")

INF = float("inf")
# Out-of-order steps and timestamps, NaN and infinities, a key logged twice at one step.
METRICS = [Metric("loss", 0.5, 1000, 2), Metric("loss", 0.7, 900, 1),
           Metric("loss", 0.6, 1100, 1), Metric("nan", math.nan, 1000, 0),
           Metric("big", INF, 1000, 0), Metric("small", -INF, 1000, 0),
           Metric("same", 1.0, 1000, 3), Metric("same", 2.0, 1000, 3),
           # In the second batch: a newer loss (the latest moves) and an older nan (it stays).
           Metric("loss", 0.4, 1200, 3), Metric("nan", 1.0, 500, 0)]
PARAMS = [Param("width", "8"), Param("dataset", "digits")]
TAGS = [RunTag("study.role", "trial"), RunTag("optuna.trial_number", "7")]


def _twins(uri: str) -> tuple[Tracker, Tracker, str]:
    direct = Tracker(uri, retry_seconds=0)
    assert direct._writer is not None
    return direct, Tracker(uri, retry_seconds=0, direct_writes=False), \
        direct.experiment_id("exp")


def _history(client: MlflowClient, run_id: str) -> dict[str, list[tuple]]:
    run = client.get_run(run_id)
    return {key: sorted((m.step, m.timestamp, "nan" if math.isnan(m.value) else m.value)
                        for m in client.get_metric_history(run_id, key))
            for key in run.data.metrics}


def _latest(client: MlflowClient, run_id: str) -> dict[str, float | str]:
    return {k: "nan" if math.isnan(v) else v
            for k, v in client.get_run(run_id).data.metrics.items()}


def _check_batches_match(uri: str) -> None:
    direct, reference, experiment_id = _twins(uri)
    runs = [t.create_run(experiment_id, name="r", tags={}) for t in (direct, reference)]
    assert direct._writer.log_batch(runs[0], metrics=METRICS[:4], params=PARAMS, tags=TAGS)
    assert direct._writer.log_batch(runs[0], metrics=METRICS[4:])  # a second batch
    reference.client.log_batch(runs[1], metrics=METRICS[:4], params=PARAMS, tags=TAGS)
    reference.client.log_batch(runs[1], metrics=METRICS[4:])
    client = MlflowClient(uri)
    assert _history(client, runs[0]) == _history(client, runs[1])
    assert _latest(client, runs[0]) == _latest(client, runs[1])
    assert _latest(client, runs[0])["loss"] == 0.4  # the highest step, not the last written
    assert _latest(client, runs[0])["nan"] == "nan"
    assert _latest(client, runs[0])["same"] == 2.0  # same step and time: the larger value
    a, b = (client.get_run(r).data for r in runs)
    assert a.params == b.params == {"width": "8", "dataset": "digits"}
    assert a.tags == b.tags


def test_a_batch_written_directly_reads_back_as_the_clients_on_sqlite(tracking_uri):
    _check_batches_match(tracking_uri)


def test_a_batch_written_directly_reads_back_as_the_clients_on_postgresql():
    with postgres_database() as name:
        _check_batches_match(postgres_url(name))


def test_a_run_created_directly_matches_the_clients_run(tracking_uri):
    direct, reference, experiment_id = _twins(tracking_uri)
    parent = reference.create_run(experiment_id, name="parent", tags={})
    runs = [t.create_run(experiment_id, name="trial-0003", tags={"study.role": "trial"},
                         parent_run_id=parent) for t in (direct, reference)]
    client = MlflowClient(tracking_uri)
    a, b = (client.get_run(r) for r in runs)
    assert a.data.tags == b.data.tags
    assert a.data.tags["mlflow.parentRunId"] == parent
    assert a.data.tags["mlflow.runName"] == "trial-0003"
    for field in ("run_name", "status", "user_id", "lifecycle_stage", "experiment_id",
                  "end_time"):
        assert getattr(a.info, field) == getattr(b.info, field), field
    assert a.info.artifact_uri == b.info.artifact_uri.replace(runs[1], runs[0])
    assert a.info.start_time > 0
    nested = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert {r.info.run_id for r in nested} == set(runs)


def test_closing_a_run_tags_logs_and_terminates_it_in_one_write(tracking_uri):
    direct, _, experiment_id = _twins(tracking_uri)
    run_id = direct.create_run(experiment_id, name="r", tags={})
    direct.close_run(run_id, "KILLED", tags={"optuna.trial_state": "PRUNED"},
                     metrics={"final/val_loss": 0.3}, step=4)
    run = MlflowClient(tracking_uri).get_run(run_id)
    assert (run.info.status, run.data.tags["optuna.trial_state"]) == ("KILLED", "PRUNED")
    assert run.info.end_time >= run.info.start_time
    [point] = MlflowClient(tracking_uri).get_metric_history(run_id, "final/val_loss")
    assert (point.value, point.step) == (0.3, 4)


def test_a_run_found_by_a_search_on_what_was_written_directly(tracking_uri):
    direct, _, experiment_id = _twins(tracking_uri)
    run_id = direct.create_run(experiment_id, name="r", tags={"study.role": "trial"})
    direct.log_params(run_id, {"width": 8}, metrics={"n_params": 120}, new_run=True)
    direct.log_metrics(run_id, {"loss": 0.4}, step=1)
    found = MlflowClient(tracking_uri).search_runs(
        [experiment_id], "metrics.loss < 0.5 and params.width = '8' and "
        "tags.`study.role` = 'trial' and attributes.status = 'RUNNING'")
    assert [r.info.run_id for r in found] == [run_id]


def test_a_batch_written_twice_is_left_to_the_client_which_keeps_one_row(tracking_uri):
    direct, _, experiment_id = _twins(tracking_uri)
    run_id = direct.create_run(experiment_id, name="r", tags={})
    batch = [Metric("loss", 0.5, 1000, 1)]
    assert direct._writer.log_batch(run_id, metrics=batch)
    assert not direct._writer.log_batch(run_id, metrics=batch)  # the row exists: rolled back
    direct._log_batch(run_id, metrics=batch)  # what a retry does: no error
    assert len(MlflowClient(tracking_uri).get_metric_history(run_id, "loss")) == 1


def test_a_param_changed_on_a_run_is_mlflows_own_error(tracking_uri):
    direct, _, experiment_id = _twins(tracking_uri)
    run_id = direct.create_run(experiment_id, name="r", tags={})
    direct.log_params(run_id, {"width": 8}, new_run=True)
    with pytest.raises(TrackingError, match="width"):
        direct._log_batch(run_id, params=[Param("width", "16")])
    assert MlflowClient(tracking_uri).get_run(run_id).data.params == {"width": "8"}


@pytest.mark.parametrize("write", ["log_metrics", "close_run"])
def test_writing_to_a_deleted_run_is_mlflows_own_error(tracking_uri, write):
    direct, _, experiment_id = _twins(tracking_uri)
    run_id = direct.create_run(experiment_id, name="r", tags={})
    MlflowClient(tracking_uri).delete_run(run_id)
    with pytest.raises(TrackingError, match="active"):
        if write == "log_metrics":
            direct.log_metrics(run_id, {"loss": 1.0})
        else:
            direct.close_run(run_id, "FINISHED", tags={"a": "b"})
    run = MlflowClient(tracking_uri).get_run(run_id)
    assert (run.info.status, run.data.metrics, run.data.tags.get("a")) == ("RUNNING", {}, None)


def test_a_run_in_a_deleted_experiment_is_refused_as_mlflow_refuses_it(tracking_uri):
    direct, _, experiment_id = _twins(tracking_uri)
    MlflowClient(tracking_uri).delete_experiment(experiment_id)
    with pytest.raises(TrackingError, match="active"):
        direct.create_run(experiment_id, name="r", tags={})


def test_mlflow_tags_go_through_the_client(tracking_uri):
    direct, _, experiment_id = _twins(tracking_uri)
    run_id = direct.create_run(experiment_id, name="old", tags={})
    assert not direct._writer.log_batch(run_id, tags=[RunTag("mlflow.runName", "new")])
    direct.set_tags(run_id, {"mlflow.runName": "new"})
    assert MlflowClient(tracking_uri).get_run(run_id).info.run_name == "new"  # renamed too


def test_a_tracking_server_gets_no_direct_writer():
    assert SqlRunWriter.open(MlflowClient("http://127.0.0.1:9")) is None


def test_a_database_with_a_renamed_column_gets_no_direct_writer(tracking_uri, caplog):
    import sqlalchemy as sa

    client = MlflowClient(tracking_uri)
    engine = client._tracking_client.store.engine
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE latest_metrics RENAME COLUMN is_nan TO nan_flag"))
    assert writer_layout_mismatch(engine) == "the database's latest_metrics has no is_nan"
    with caplog.at_level(logging.WARNING, logger="study.tracking._sqlwriter"):
        assert SqlRunWriter.open(client) is None
    assert "direct run writes disabled" in caplog.text


def test_a_healthy_database_fits_the_writer(tracking_uri):
    engine = MlflowClient(tracking_uri)._tracking_client.store.engine
    assert writer_layout_mismatch(engine) is None


def test_a_workspace_aware_store_gets_no_direct_writer(tracking_uri, monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
    client = MlflowClient(tracking_uri)
    assert type(client._tracking_client.store).__name__ != "SqlAlchemyStore"
    assert SqlRunWriter.open(client) is None  # its writes are scoped to a workspace


def test_metrics_of_an_active_logged_model_go_through_the_client(tracking_uri):
    import mlflow

    direct, _, experiment_id = _twins(tracking_uri)
    run_id = direct.create_run(experiment_id, name="r", tags={})
    mlflow.set_tracking_uri(tracking_uri)
    try:
        model = mlflow.set_active_model(name="m")
        assert not direct._writer.log_batch(run_id, metrics=[Metric("loss", 0.5, 1000, 1)])
        direct.log_metrics(run_id, {"loss": 0.5}, step=1)
    finally:
        mlflow.clear_active_model()
        mlflow.set_tracking_uri(None)
    linked = MlflowClient(tracking_uri).get_logged_model(model.model_id).metrics
    assert [(m.key, m.run_id) for m in linked] == [("loss", run_id)]  # as the client links it


def test_an_unnamed_run_is_named_by_the_client(tracking_uri):
    direct, _, experiment_id = _twins(tracking_uri)
    assert direct._writer.create_run(experiment_id, name="", tags=[], start_time=1) is None
    run_id = direct.create_run(experiment_id, name="", tags={})
    assert MlflowClient(tracking_uri).get_run(run_id).info.run_name  # MLflow's random name


def test_latest_metrics_are_locked_in_key_order_so_a_concurrent_writer_waits_not_deadlocks():
    """A transaction locking ``a`` then ``b`` (MLflow's own order) while the writer logs both:
    locked in another order, one of the two would be a deadlock victim."""
    import threading

    import sqlalchemy as sa

    with postgres_database() as name:
        uri = postgres_url(name)
        direct, _, experiment_id = _twins(uri)
        run_id = direct.create_run(experiment_id, name="r", tags={})
        direct.log_metrics(run_id, {"b": 1.0})  # b's row first in the table
        direct.log_metrics(run_id, {"a": 1.0})
        engine = sa.create_engine(uri)
        lock = sa.text("SELECT key FROM latest_metrics WHERE run_uuid = :r AND key = :k "
                       "FOR UPDATE")
        outcome: dict[str, object] = {}

        def write() -> None:
            try:
                outcome["writer"] = direct._writer.log_batch(
                    run_id, metrics=[Metric("a", 2.0, 10**13, 1), Metric("b", 2.0, 10**13, 1)])
            except Exception as exc:  # a deadlock victim
                outcome["writer"] = exc

        with engine.connect() as conn:
            conn.execute(lock, {"r": run_id, "k": "a"})
            writer = threading.Thread(target=write)
            writer.start()
            writer.join(timeout=1.0)  # the writer waits for a (and holds nothing yet)
            conn.execute(lock, {"r": run_id, "k": "b"})
            conn.rollback()
        writer.join(timeout=30)
        engine.dispose()
        assert outcome["writer"] is True
        assert _latest(MlflowClient(uri), run_id) == {"a": 2.0, "b": 2.0}
