"""The Optuna storage's own SQLite engine runs in write-ahead-log mode with
``synchronous=NORMAL``; MLflow's SQLite store is left in the mode MLflow gives it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import optuna
import sqlalchemy

from study.storages import _sqlite, create_storage
from study.storages._sqlite import tune_sqlite_engine
from study.tracking import Tracker


def _journal_mode(path: Path) -> str:
    with sqlite3.connect(path) as conn:  # a fresh connection: the mode is stored in the file
        return conn.execute("PRAGMA journal_mode").fetchone()[0]


def test_a_plain_sqlite_file_starts_in_rollback_journal_mode(tmp_path):
    path = tmp_path / "plain.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x INTEGER)").connection.close()
    assert _journal_mode(path) == "delete"


def test_optuna_storage_uses_wal_and_normal_sync(tmp_path):
    path = tmp_path / "optuna.db"
    storage = create_storage(f"sqlite:///{path}")
    optuna.create_study(study_name="s", storage=storage).ask()
    assert _journal_mode(path) == "wal"
    with storage.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


def test_mlflow_sqlite_store_is_left_in_its_own_journal_mode(tracking_uri):
    path = Path(tracking_uri.removeprefix("sqlite:///"))
    assert _journal_mode(path) == "delete"  # the template, as MLflow leaves it
    Tracker(tracking_uri).experiment_id("e")
    assert _journal_mode(path) == "delete"
    from mlflow import MlflowClient

    assert MlflowClient(tracking_uri).get_experiment_by_name("e") is not None


def test_only_the_storages_own_engine_is_tuned(storage_url):
    storage = create_storage(storage_url)
    other = sqlalchemy.create_engine(storage_url)
    assert sqlalchemy.event.contains(storage.engine, "connect", _sqlite._pragmas)
    assert not sqlalchemy.event.contains(other, "connect", _sqlite._pragmas)
    with other.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL, SQLite's own


def test_other_databases_are_left_alone():
    engine = sqlalchemy.create_engine("postgresql://postgres@127.0.0.1/none")
    tune_sqlite_engine(engine)  # creates no connection and registers nothing
    assert not sqlalchemy.event.contains(engine, "connect", _sqlite._pragmas)


def test_a_tuned_engine_connects_in_wal_mode_even_when_tuned_twice(tmp_path):
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    tune_sqlite_engine(engine)
    tune_sqlite_engine(engine)
    assert sqlalchemy.event.contains(engine, "connect", _sqlite._pragmas)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
