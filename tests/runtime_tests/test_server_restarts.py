"""The real servers restart under a study: two workers on PostgreSQL, a real ``mlflow server``.

The database (a PostgreSQL cluster of the test's own, :mod:`tests.private_postgres`: ``pg_ctl
stop``, a pause, ``start``) and the tracking server (stopped and started again on the same port)
each go away for a few seconds while trials train. Every worker either rides it out or stops
with one line; at most one re-run of the same command finishes the study: budget met, nothing
RUNNING in either store, one run per trial. Fails under CI=true when PostgreSQL's binaries are
missing, like the other server tests.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.conftest import cli_env, run_cli
from tests.private_postgres import PrivatePostgres, private_postgres
from tests.servers import MlflowServer, check_scaled_study, poll_trials

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("clean_env")]

BUDGET = 6
# Several seconds per trial on 2 CPU cores, so that the outage falls inside training.
TRIALS = ["--epochs", "6", "--width-min", "8", "--width-max", "8", "--batch-sizes", "32",
          "--device", "cpu", "--pruner", "none", "--n-trials", str(BUDGET), "--workers", "2",
          "--study-name", "r", "--tracking-timeout", "90"]
OUTAGE_SECONDS = 6


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivatePostgres]:
    with private_postgres() as pg:
        yield pg


def _run(args: list[str], cwd: Path) -> subprocess.Popen:
    out = (cwd / "study.out").open("a")
    err = (cwd / "study.err").open("a")
    return subprocess.Popen([str(Path(os.sys.executable).with_name("study")), *args], cwd=cwd,
                            env=cli_env(), stdout=out, stderr=err)


def _outage_then_finish(args: list[str], storage: str, cwd: Path, outage) -> str:
    """Start the study, cause the outage once a trial trains, wait; re-run once if it stopped.
    Returns what the study printed on stderr."""
    proc = _run(args, cwd)
    try:
        poll_trials(storage, "r", lambda ts: [t for t in ts if t.state == TrialState.RUNNING
                                              and "mlflow_run_id" in t.user_attrs],
                    proc=proc, timeout=240, what="a RUNNING trial with its MLflow run")
        outage()
        first = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    if first != 0:  # stopped with one line; the same command again must finish the study
        again = run_cli(args, cwd=cwd, env=cli_env(), timeout=600)
        assert again.returncode == 0, again.stderr[-3000:]
    return (cwd / "study.err").read_text()


@pytest.mark.parametrize(("which", "seen"), [("database", "storage postgresql://"),
                                           ("tracking server", "MLflow")])
def test_two_workers_ride_out_a_server_restart(which, seen, tmp_path, cluster,
                                               mlflow_template_db):
    storage = cluster.new_database()
    server = MlflowServer(tmp_path / "mlflow", mlflow_template_db).start()
    try:
        args = ["run", "--storage", storage, "--tracking-uri", server.uri, "--experiment",
                "restart", *TRIALS, "--storage-timeout", "90"]

        def restart() -> None:
            if which == "database":
                cluster.stop()
            else:
                server.stop()
            time.sleep(OUTAGE_SECONDS)
            if which == "database":
                cluster.start()
            else:
                server.start()

        stderr = _outage_then_finish(args, storage, tmp_path, restart)
        # The outage was seen (retried, then ridden out or stopped on and re-run).
        assert any(seen in line and "retrying" in line for line in stderr.splitlines())
        check_scaled_study(storage, server.uri, "restart", "r", BUDGET, workers=2)
    finally:
        server.stop()


def test_a_database_down_past_the_timeout_stops_in_one_line_and_a_rerun_finishes(
        tmp_path, cluster, mlflow_template_db):
    storage = cluster.new_database()
    server = MlflowServer(tmp_path / "mlflow", mlflow_template_db).start()
    try:
        args = ["run", "--storage", storage, "--tracking-uri", server.uri, "--experiment",
                "pg-down", *TRIALS, "--storage-timeout", "4"]
        proc = _run(args, tmp_path)
        try:
            poll_trials(storage, "r", lambda ts: [t for t in ts if t.state == TrialState.RUNNING
                                                  and "mlflow_run_id" in t.user_attrs],
                        proc=proc, timeout=240, what="a RUNNING trial with its MLflow run")
            cluster.stop()
            try:
                assert proc.wait(timeout=300) == 1
            finally:
                cluster.start()
        finally:
            if proc.poll() is None:
                proc.kill()
        errors = [line for line in (tmp_path / "study.err").read_text().splitlines()
                  if line.startswith("error:")]
        # One line per process (the session and its two workers), each naming the storage.
        assert 1 <= len(errors) <= 3, errors
        assert all(storage in e and ("unreachable" in e or "could not be opened" in e)
                   for e in errors), errors
        assert any("unreachable for 4 s" in e for e in errors), errors
        assert "Traceback" not in (tmp_path / "study.err").read_text()

        again = run_cli(args, cwd=tmp_path, env=cli_env(), timeout=600)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "recovered:" in again.stderr
        trials = check_scaled_study(storage, server.uri, "pg-down", "r", BUDGET, workers=2)
        failed = [t for t in trials if t.state == TrialState.FAIL]
        assert failed and all(t.user_attrs.get("failure") for t in failed)
    finally:
        server.stop()
