"""The Tracker's writes through MlflowClient, on a real SQLite store and a real ``mlflow server``
(the contract is the same on both): asynchronous epoch metrics complete before the close,
params and tags, weights through ``log_artifact``, names of any characters in search filters,
idempotent run creation, and no process-wide changes. Checked through MlflowClient."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid

import pytest
import torch
from mlflow import MlflowClient

from study.errors import TrackingError
from study.tracking import Tracker, tag_equals
from study.tracking import _retry as retry_module
from study.tracking._tracker import BUFFERING_ENV, CREATE_KEY_TAG

pytestmark = pytest.mark.usefixtures("clean_env")

# Quotes of either kind or both, backslashes (also last, and before a quote), LIKE's wildcards,
# an attempt to close the quote and add a clause, and non-ASCII text.
NAMES = ["o'brien", 'say "hi"', "both ' and \"", "back\\slash", "end\\", "o'b\\", 'q\\"',
         "ünïcødé ✓", "a%_b", "x' or tags.`study.name` = 'y", "it's \"50%\"_done\\"]
# Each differs from a name above only where a LIKE pattern has a wildcard.
DECOYS = ["aX_b", "it's \"50%\"Xdone\\", "it's \"50%\"_doneX", "both ' and X"]


@pytest.fixture(params=["sqlite", "server"])
def store(request, tracking_uri) -> str:
    """A tracking URI: a fresh SQLite store, or the module's real ``mlflow server``."""
    if request.param == "sqlite":
        return tracking_uri
    return request.getfixturevalue("server").uri


@pytest.fixture
def tracker(store) -> Tracker:
    return Tracker(store, retry_seconds=0)


@pytest.fixture
def experiment_id(tracker) -> str:
    return tracker.experiment_id(f"exp-{uuid.uuid4().hex[:8]}")


def _trial_run(tracker: Tracker, experiment_id: str) -> str:
    """A nested run, as a trial's: created by ``tracker`` under a parent."""
    parent = tracker.create_run(experiment_id, name="parent", tags={})
    return tracker.create_run(experiment_id, name="t", tags={}, parent_run_id=parent)


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_a_trial_runs_batches_all_arrive_before_it_is_closed(tracker, experiment_id, store):
    run_id = _trial_run(tracker, experiment_id)
    tracker.log_params(run_id, {"width": 8}, metrics={"n_params": 9}, new_run=True)
    for epoch in range(1, 11):
        tracker.log_metrics(run_id, {"train/loss": 1 / epoch, "val/loss": 2 / epoch},
                            step=epoch)
    tracker.close_run(run_id, "FINISHED", tags={"study.state": "COMPLETE"},
                      metrics={"final/val_loss": 0.2}, step=10)
    client = MlflowClient(store)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert _history(client, run_id, "val/loss") == [(e, 2 / e) for e in range(1, 11)]
    assert _history(client, run_id, "train/loss") == [(e, 1 / e) for e in range(1, 11)]
    last = max(m.timestamp for m in client.get_metric_history(run_id, "val/loss"))
    assert run.info.end_time >= last
    assert (run.data.metrics["final/val_loss"], run.data.tags["study.state"]) == \
        (0.2, "COMPLETE")
    assert (run.data.params, run.data.metrics["n_params"]) == ({"width": "8"}, 9)


def test_the_buffering_setting_lives_only_while_batches_are_in_flight(tracker, experiment_id):
    run_id = _trial_run(tracker, experiment_id)
    tracker.log_metrics(run_id, {"loss": 1.0}, step=1)
    assert os.environ[BUFFERING_ENV] == "1"
    tracker.end_run(run_id, "FINISHED")
    assert BUFFERING_ENV not in os.environ


def test_the_users_buffering_setting_is_kept(tracker, experiment_id, monkeypatch):
    monkeypatch.setenv(BUFFERING_ENV, "3")
    run_id = _trial_run(tracker, experiment_id)
    tracker.log_metrics(run_id, {"loss": 1.0}, step=1)
    tracker.end_run(run_id, "FINISHED")
    assert os.environ[BUFFERING_ENV] == "3"
    assert _history(MlflowClient(tracker.tracking_uri), run_id, "loss") == [(1, 1.0)]


def test_a_synchronous_tracker_writes_each_batch_at_once(store, experiment_id):
    tracker = Tracker(store, retry_seconds=0, asynchronous=False)
    run_id = _trial_run(tracker, experiment_id)
    tracker.log_metrics(run_id, {"loss": 0.5}, step=3)
    assert _history(MlflowClient(store), run_id, "loss") == [(3, 0.5)]
    assert BUFFERING_ENV not in os.environ


def test_a_run_without_a_parent_is_written_at_once(tracker, experiment_id, store):
    run_id = tracker.create_run(experiment_id, name="study", tags={})  # as a parent run
    tracker.log_params(run_id, {"width": 8}, new_run=True)
    tracker.log_metrics(run_id, {"loss": 0.5}, step=1)
    assert MlflowClient(store).get_run(run_id).data.params == {"width": "8"}
    assert _history(MlflowClient(store), run_id, "loss") == [(1, 0.5)]
    assert BUFFERING_ENV not in os.environ


def test_metrics_of_a_run_opened_elsewhere_are_written_at_once(tracker, experiment_id, store):
    client = MlflowClient(store)
    run_id = client.create_run(experiment_id).info.run_id  # as `mlflow run` opens its run
    tracker.log_metrics(run_id, {"loss": 0.5}, step=1)
    assert _history(client, run_id, "loss") == [(1, 0.5)]


def test_params_already_logged_are_kept_and_new_ones_added(tracker, experiment_id, store):
    run_id = tracker.create_run(experiment_id, name="t", tags={"a": "1"})
    tracker.log_params(run_id, {"width": 8}, new_run=True)
    tracker.log_params(run_id, {"width": 16, "lr": 0.1, "none": None}, metrics={"n_params": 9})
    tracker.set_tags(run_id, {"b": 2}, metrics={"m": 1.5}, step=4)
    run = MlflowClient(store).get_run(run_id)
    assert run.data.params == {"width": "8", "lr": "0.1"}
    assert (run.data.tags["a"], run.data.tags["b"]) == ("1", "2")
    assert run.data.metrics == {"n_params": 9.0, "m": 1.5}


def test_weights_are_logged_through_the_artifact_store(tracker, experiment_id, store, tmp_path):
    run_id = tracker.create_run(experiment_id, name="t", tags={})
    weights = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2)}
    tracker.log_state_dict(run_id, weights, "weights/final.pt")
    client = MlflowClient(store)
    assert [f.path for f in client.list_artifacts(run_id, "weights")] == ["weights/final.pt"]
    local = client.download_artifacts(run_id, "weights/final.pt", str(tmp_path))
    loaded = torch.load(local)
    assert loaded.keys() == weights.keys()
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)


def test_runs_are_found_by_names_of_any_characters(tracker, experiment_id):
    made = {name: tracker.create_run(experiment_id, name="r", tags={"study.name": name})
            for name in [*NAMES, *DECOYS]}
    for name in NAMES:
        found = tracker.find_runs(experiment_id, tags={"study.name": name})
        assert [r.info.run_id for r in found] == [made[name]], name


def test_a_filter_and_a_name_with_quotes_combine(tracker, experiment_id):
    running = tracker.create_run(experiment_id, name="r", tags={"study.name": "o'brien"})
    ended = tracker.create_run(experiment_id, name="r", tags={"study.name": "o'brien"})
    tracker.end_run(ended, "FINISHED")
    found = tracker.find_runs(experiment_id, "attributes.status = 'RUNNING'",
                              tags={"study.name": "o'brien"})
    assert [r.info.run_id for r in found] == [running]


def test_a_tag_name_with_a_backtick_is_refused():
    with pytest.raises(ValueError, match=r"`key` must be a tag name without '`', but got "
                                         r"key='a`b'"):
        tag_equals("a`b", "x")


def _lose_first_reply(tracker: Tracker, *, reached_store: bool) -> list[str]:
    """Make the first ``create_run`` fail as a lost connection does: after the store made the
    run (the reply lost on the way back) or before it reached the store. Returns the ids of the
    runs the store made."""
    create, made = tracker.client.create_run, []

    def create_run(*args, **kwargs):
        if not made and not reached_store:
            made.append(None)
            raise ConnectionError("connection reset by peer")
        run = create(*args, **kwargs)
        made.append(run.info.run_id)
        if len(made) == 1:
            raise ConnectionError("connection reset by peer")
        return run

    tracker.client.create_run = create_run
    return made


def test_a_create_whose_reply_was_lost_returns_the_run_it_made(store, experiment_id, capsys):
    tracker = Tracker(store, retry_seconds=30)
    made = _lose_first_reply(tracker, reached_store=True)
    run_id = tracker.create_run(experiment_id, name="t", tags={"x": "y"})
    assert made == [run_id]
    runs = MlflowClient(store).search_runs([experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]
    assert runs[0].data.tags["x"] == "y" and len(runs[0].data.tags[CREATE_KEY_TAG]) == 32
    assert "MLflow create_run failed (connection reset by peer); retrying" in \
        capsys.readouterr().err


def test_a_create_that_never_reached_the_store_is_made_once(store, experiment_id):
    tracker = Tracker(store, retry_seconds=30)
    made = _lose_first_reply(tracker, reached_store=False)
    run_id = tracker.create_run(experiment_id, name="t", tags={})
    assert made == [None, run_id]
    assert [r.info.run_id for r in MlflowClient(store).search_runs([experiment_id])] == [run_id]


def test_the_sqlite_store_keeps_its_journal_mode_and_the_environment_is_unchanged(
        tracking_uri):
    def environment() -> dict[str, str]:  # less MLflow's own telemetry session
        return {k: v for k, v in os.environ.items() if not k.startswith("_MLFLOW_TELEMETRY")}

    before = environment()
    tracker = Tracker(tracking_uri, retry_seconds=0)
    run_id = _trial_run(tracker, tracker.experiment_id("e"))
    tracker.log_metrics(run_id, {"loss": 1.0}, step=1)
    tracker.close_run(run_id, "FINISHED", tags={"s": "x"})
    with sqlite3.connect(tracking_uri.removeprefix("sqlite:///")) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert environment() == before


def test_a_password_in_the_tracking_uri_is_never_printed(server, capsys, monkeypatch):
    # MLflow's links are on (the `study` command turns them off; a test that ran it in this
    # process would have left that behind).
    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    uri = f"http://someone:s3cret@127.0.0.1:{server.port}"
    tracker = Tracker(uri, retry_seconds=0)
    run_id = tracker.create_run(tracker.experiment_id("secret-uri"), name="t", tags={})
    tracker.end_run(run_id, "FINISHED")
    out = capsys.readouterr().out
    assert f"someone:***@127.0.0.1:{server.port}/#/experiments/" in out
    assert "s3cret" not in out
    assert "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT" not in os.environ


def test_a_batch_lost_while_the_server_was_down_is_written_before_the_close(
        server, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # our retries, not requests'
    monkeypatch.setattr(retry_module, "MAX_DELAY", 2.0)  # retry often: the test is shorter
    tracker = Tracker(server.uri, retry_seconds=120)
    run_id = _trial_run(tracker, tracker.experiment_id("outage"))
    server.stop()
    restart = threading.Timer(1.5, server.start)  # after MLflow's queue tried and failed
    restart.start()
    try:
        tracker.log_metrics(run_id, {"loss": 0.5}, step=1)
        tracker.close_run(run_id, "FINISHED", tags={"study.state": "COMPLETE"})
    finally:
        restart.join()
    client = MlflowClient(server.uri)
    run = client.get_run(run_id)
    assert _history(client, run_id, "loss") == [(1, 0.5)]
    assert (run.info.status, run.data.tags["study.state"]) == ("FINISHED", "COMPLETE")
    assert "MLflow set_terminated failed" in capsys.readouterr().err  # it was down


def test_a_store_down_during_training_stops_the_trial_at_its_next_batch(server, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    tracker = Tracker(server.uri, retry_seconds=1)
    run_id = _trial_run(tracker, tracker.experiment_id("down"))
    server.stop()
    try:
        tracker.log_metrics(run_id, {"loss": 0.5}, step=1)  # handed over: no error yet
        time.sleep(2.5)  # MLflow's queue tries to write it meanwhile, and fails
        with pytest.raises(TrackingError, match=r"unreachable for 1 s .*log-batch"):
            tracker.log_metrics(run_id, {"loss": 0.4}, step=2)
        # Nothing of the trial is in flight any more: the process-wide buffering goes too.
        assert BUFFERING_ENV not in os.environ
    finally:
        server.start()
