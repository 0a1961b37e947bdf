"""Shared fixtures: real stores in temporary directories, created cheaply.

Creating an MLflow SQLite database runs every migration (~7 s), so one template database is
made per test session and each test gets a byte copy of it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """One intra-op thread for PyTorch here and in the ``study`` subprocesses (they inherit
    it), unless the developer set another: the tests' width-4 to 40 convolutions are too
    small to split, and two threads spin-waiting for each other trained a trial 10x slower on
    a busy 2-core machine."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")


# The longest modules first: pytest-xdist's loadscope hands modules out in collection order,
# and a long one collected late (test_mlproject_e2e alone runs for minutes) decides when the
# whole run ends while the other workers idle. Longest first by the summed durations of a run
# on 2 cores (267 s down to 62 s; `pytest --durations=0`).
_LONGEST_FIRST = ("tests/test_mlproject_e2e.py", "tests/doctor_tests/test_command.py",
                  "tests/runtime_tests/test_recovery.py",
                  "tests/runtime_tests/test_server_restarts.py", "tests/test_bench.py",
                  "tests/doctor_tests/test_outliers.py", "tests/runtime_tests/test_workers.py",
                  "tests/test_explain_cli.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Those modules first, in that order; the rest keep theirs (the sort is stable, so each
    module's tests stay together and in their order)."""
    rank = {path: i for i, path in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


@pytest.fixture(scope="session")
def mlflow_template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite database with its schema migrated, made once per session."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    client = MlflowClient(f"sqlite:///{path}")
    client.search_experiments(max_results=1)
    client._tracking_client.store.engine.dispose()
    return path


@pytest.fixture
def tracking_uri(tmp_path: Path, mlflow_template_db: Path) -> str:
    """A fresh MLflow tracking URI (a copy of the template database) for one test."""
    path = tmp_path / "mlflow.db"
    shutil.copyfile(mlflow_template_db, path)
    return f"sqlite:///{path}"


@pytest.fixture
def storage_url(tmp_path: Path) -> str:
    """A fresh Optuna SQLite storage URL for one test."""
    return f"sqlite:///{tmp_path / 'optuna.db'}"


@pytest.fixture
def mlflow_client(tracking_uri: str):
    """An :class:`MlflowClient` on the test's tracking store."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MLflow or study variables leak in from the developer's shell."""
    for name in ("MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME",
                 "MLFLOW_EXPERIMENT_ID", "STUDY_STORAGE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def installed_interrupts(monkeypatch: pytest.MonkeyPatch):
    """The ``study`` command's own Ctrl-C/SIGTERM handlers, installed for one test (the
    previous handlers and unraisable hook restored after it)."""
    import signal

    from study._signals import Interrupts
    from study.cli import _Terminated

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    interrupts = Interrupts(_Terminated)
    interrupts.install()
    yield interrupts
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, mlflow_template_db: Path):
    """One real ``mlflow server`` on loopback per test module; each test uses its own
    experiments."""
    from tests.servers import mlflow_server

    with mlflow_server(tmp_path_factory.mktemp("mlflow-server"), mlflow_template_db) as s:
        yield s


@pytest.fixture
def new_postgres_database():
    """Make fresh PostgreSQL databases on demand (names returned), all dropped afterwards."""
    import contextlib

    from tests.servers import postgres_database

    with contextlib.ExitStack() as stack:
        yield lambda: stack.enter_context(postgres_database())


def cli_env(tracking_uri: str | None = None, **extra: str) -> dict[str, str]:
    """Environment for a ``study`` subprocess: no inherited MLflow run, our tracking store."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "STUDY_"))}
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    env.update(extra)
    return env


def run_cli(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 300,
            fresh: bool = False) -> subprocess.CompletedProcess:
    """Run ``study ARGS`` in a process of its own: forked from a server that imported the
    heavy modules once (:mod:`tests._forked_cli`), or, with ``fresh`` or
    ``STUDY_TEST_FRESH_CLI=1``, the real console script in a new interpreter."""
    exe = Path(sys.executable).with_name("study")
    if fresh or os.environ.get("STUDY_TEST_FRESH_CLI") == "1":
        return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=timeout)
    from tests._forked_cli import run_forked

    return run_forked(args, cwd=cwd, env=env, exe=exe, timeout=timeout, server_env=cli_env())
