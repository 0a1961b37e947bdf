"""optuna-dashboard (a tool Optuna users already have) reads a study the service wrote: the
objective is named, and the curve attr shows labelled epochs. The dashboard's own WSGI app is
called in-process on a real SQLite storage."""

from __future__ import annotations

import io
import json
import sys

import optuna
import pytest

from study.config import StudyConfig
from study.runtime.session import run_session

pytestmark = pytest.mark.usefixtures("clean_env")


def _get(app, path: str) -> dict:
    path, _, query = path.partition("?")
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query,
               "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "wsgi.url_scheme": "http",
               "wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr}
    status: list[str] = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    assert status == ["200 OK"], (status, body[:300])
    return json.loads(body)


def test_optuna_dashboard_reads_the_study_with_named_objective_and_labelled_curves(
        tmp_path, tracking_uri):
    from optuna_dashboard import wsgi

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    config = StudyConfig(study_name="s", storage=storage, tracking_uri=tracking_uri,
                         experiment="exp", epochs=2, width_min=4, width_max=8,
                         batch_sizes=(64,), n_trials=2, pruner="none", device="cpu")
    run_session(config)
    assert optuna.load_study(study_name="s", storage=storage).metric_names == ["val_loss"]

    app = wsgi(storage)
    (summary,) = _get(app, "/api/studies")["study_summaries"]
    assert summary["study_name"] == "s"
    study = _get(app, f"/api/studies/{summary['study_id']}?after=0")
    assert study["objective_names"] == ["val_loss"]  # not "Objective 0"
    assert len(study["trials"]) == 2
    for trial in study["trials"]:
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        curve = json.loads(attrs["curve"])
        assert [row["epoch"] for row in curve] == [1, 2]
        assert {"loss", "data_loss", "penalty", "val_loss", "val_accuracy"} <= set(curve[0])
