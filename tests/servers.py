"""Real servers for the scale-out and crash-safety tests, and the checks those tests share.

- :class:`MlflowServer`: an ``mlflow server`` process on a free loopback port, its SQLite backend a
  byte copy of the session's migrated template database (no ~7 s of migrations), artifacts
  proxied through the server (clients upload over HTTP, as remote workers would).
- :func:`postgres_database`: a throwaway PostgreSQL database, dropped afterwards. PostgreSQL is
  skipped with a reason when unreachable, except on CI (``CI=true``), where that is a failure.
- Helpers that read a study back from both stores.

The fixtures themselves are defined in the test modules (a few lines each) over these helpers.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from study.keys import PARENT_RUN_ATTR
from study.redact import one_line

POSTGRES_HOST = "127.0.0.1:5432"
POSTGRES_ADMIN_URL = f"postgresql://postgres@{POSTGRES_HOST}/postgres"
STUDY_EXE = Path(sys.executable).with_name("study")
MLFLOW_EXE = Path(sys.executable).with_name("mlflow")


# --- ports and processes ------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop_group(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM the process group ``proc`` leads (started with ``start_new_session``), then
    SIGKILL it if it has not exited within ``grace`` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    # The group may outlive its leader (uvicorn under the mlflow CLI): kill what is left.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=grace)


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# --- mlflow server ------------------------------------------------------------------------------


class MlflowServer:
    """One ``mlflow server`` process that can be stopped and started again on the same port
    with the same backend (an outage, then a restart).

    Args:
        directory: Holds the backend database, the artifacts and the server's log.
        template_db: A migrated MLflow SQLite database to copy as the backend.
    """

    def __init__(self, directory: Path, template_db: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.db = directory / "mlflow.db"
        shutil.copyfile(template_db, self.db)
        self.artifacts = directory / "artifacts"
        self.log = directory / "mlflow-server.log"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> MlflowServer:
        """Start the server and wait until ``GET /health`` answers OK.

        Raises:
            RuntimeError: The server exited or did not become healthy within ``timeout``.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "STUDY_"))}
        # The job runner (a handful of huey processes) is not needed and costs CPU.
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        command = [str(MLFLOW_EXE), "server", "--backend-store-uri", f"sqlite:///{self.db}",
                   "--artifacts-destination", str(self.artifacts), "--serve-artifacts",
                   "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(command, cwd=self.directory, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200 and response.read().strip() == b"OK":
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"mlflow server not healthy after {timeout:g} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Terminate the server (and its uvicorn child); the port is free afterwards."""
        if self.proc is not None:
            _stop_group(self.proc)
            self.proc = None
        deadline = time.monotonic() + 15
        while _port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def mlflow_server(directory: Path, template_db: Path) -> Iterator[MlflowServer]:
    """A started :class:`MlflowServer`, always terminated afterwards."""
    server = MlflowServer(directory, template_db)
    try:
        yield server.start()
    finally:
        server.stop()


# --- PostgreSQL ---------------------------------------------------------------------------------


def _postgres_unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is required on CI: {reason}")
    pytest.skip(reason)


def postgres_url(database: str, *, password: str | None = None) -> str:
    """The URL of ``database`` on the test server (trust auth accepts any password)."""
    user = "postgres" if password is None else f"postgres:{password}"
    return f"postgresql://{user}@{POSTGRES_HOST}/{database}"


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """Create a fresh database and yield its name; its backends are terminated and it is
    dropped afterwards. Skips (fails on CI) when PostgreSQL cannot be reached."""
    try:
        import psycopg
    except ImportError as exc:
        _postgres_unavailable(f"psycopg (3) is not installed: {exc}")
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=5, autocommit=True)
    except psycopg.Error as exc:
        _postgres_unavailable(f"PostgreSQL is unreachable at {POSTGRES_ADMIN_URL}: "
                              f"{one_line(exc)}")
    name = f"study_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        admin.close()
        yield name
    finally:
        # A fresh connection: the test may have restarted the server in between.
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=30, autocommit=True) as admin, \
                admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')


# --- the study, read back from both stores ------------------------------------------------------


@contextlib.contextmanager
def opened_study(storage: str, study_name: str) -> Iterator[optuna.Study]:
    """The study in ``storage`` (PostgreSQL through the project's driver choice); the
    storage's connections are closed afterwards so its database can be dropped."""
    from study.storages import create_storage

    storage_obj = create_storage(storage)
    try:
        yield optuna.load_study(study_name=study_name, storage=storage_obj)
    finally:
        engine = getattr(storage_obj, "engine", None)
        if engine is not None:
            engine.dispose()


def study_trials(storage: str, study_name: str) -> list[optuna.trial.FrozenTrial]:
    """Every trial of the study, by number."""
    with opened_study(storage, study_name) as study:
        return sorted(study.get_trials(), key=lambda t: t.number)


def study_user_attrs(storage: str, study_name: str) -> dict:
    with opened_study(storage, study_name) as study:
        return dict(study.user_attrs)


def n_finished(trials: list[optuna.trial.FrozenTrial]) -> int:
    """COMPLETE + PRUNED: what the budget counts."""
    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)


def experiment_runs(tracking_uri: str, experiment: str) -> list:
    """Every run (any status) of ``experiment``."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"experiment {experiment!r} is not in {tracking_uri}"
    return client.search_runs([found.experiment_id], max_results=10_000)


def runs_per_trial(runs: list, study_name: str) -> Counter:
    """How many trial runs each trial number of ``study_name`` has."""
    return Counter(
        int(r.data.tags["optuna.trial_number"]) for r in runs
        if r.data.tags.get("study.role") == "trial"
        and r.data.tags.get("optuna.study_name") == study_name
    )


def study_exists(storage: str, study_name: str) -> bool:
    """Whether the study row exists, read with plain SQL: opening an Optuna storage would
    create its tables, racing the process under test that is creating them too."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    from study.storages._urls import _with_driver

    if storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///"):]).exists():
        return False
    engine = create_engine(_with_driver(storage))
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT 1 FROM studies WHERE study_name = :name"),
                               {"name": study_name}).first()
            return row is not None
    except SQLAlchemyError:
        return False
    finally:
        engine.dispose()


def poll_trials(storage: str, study_name: str, predicate, *, proc: subprocess.Popen,
                timeout: float, what: str) -> list[optuna.trial.FrozenTrial]:
    """Poll the trials of a study that ``proc`` is running until ``predicate(trials)`` holds.

    Fails when ``timeout`` passes or ``proc`` exits first.
    """
    deadline = time.monotonic() + timeout

    def check_time_and_process() -> None:
        if proc.poll() is not None:
            pytest.fail(f"the study process exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")

    while not study_exists(storage, study_name):
        check_time_and_process()
        time.sleep(0.2)
    with opened_study(storage, study_name) as study:
        while True:
            trials = study.get_trials(deepcopy=False)
            if predicate(trials):
                return trials
            check_time_and_process()
            time.sleep(0.1)


def timeline(trials: list[optuna.trial.FrozenTrial]) -> str:
    """Which worker ran which trial when (for assertion messages)."""
    return json.dumps([(t.number, t.state.name, t.user_attrs.get("worker"),
                        t.datetime_start and t.datetime_start.isoformat(timespec="milliseconds"),
                        t.datetime_complete and
                        t.datetime_complete.isoformat(timespec="milliseconds"))
                       for t in trials], indent=1)


def check_scaled_study(storage: str, tracking_uri: str, experiment: str, study_name: str,
                     budget: int, *, workers: int = 1) -> list[optuna.trial.FrozenTrial]:
    """The shared scale-out guarantees: the budget met (README: workers that finish in the same
    instant may each start one more, at most workers - 1 extra), unique trial numbers, one
    nested run per trial, nothing left RUNNING in either store."""
    trials = study_trials(storage, study_name)
    assert budget <= n_finished(trials) <= budget + workers - 1, timeline(trials)
    numbers = [t.number for t in trials]
    assert numbers == list(range(len(trials))), numbers  # no number repeats or is skipped
    assert not [t.number for t in trials if not t.state.is_finished()], timeline(trials)

    runs = experiment_runs(tracking_uri, experiment)
    per_trial = runs_per_trial(runs, study_name)
    assert per_trial == {n: 1 for n in numbers}, per_trial
    parents = [r for r in runs if r.data.tags.get("study.role") == "parent"]
    assert [p.info.run_id for p in parents] == [
        study_user_attrs(storage, study_name)[PARENT_RUN_ATTR]]
    trial_runs = [r for r in runs if r.data.tags.get("study.role") == "trial"]
    assert {r.data.tags["mlflow.parentRunId"] for r in trial_runs} == {parents[0].info.run_id}
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in trial_runs}
    for trial in trials:
        assert by_number[trial.number].info.run_id == trial.user_attrs["mlflow_run_id"]
    return trials


def stamp_of_an_exited_process() -> str:
    """The worker stamp of a real process of this host that has exited: a dead worker."""
    return subprocess.run([sys.executable, "-c", "from study.runtime.recovery import "
                           "worker_stamp; print(worker_stamp())"], capture_output=True,
                          text=True, check=True).stdout.strip()


def stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]
