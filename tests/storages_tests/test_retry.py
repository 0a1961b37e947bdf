"""Storage calls ride out lost connections (and only those): real refused connections, real
integrity errors, real storages."""

from __future__ import annotations

import pickle

import optuna
import pytest
import sqlalchemy as sa

from study.errors import StorageError
from study.storages import create_storage
from study.storages._retry import StorageRetry, is_connection_error
from tests.servers import free_port


def _refused() -> Exception:
    engine = sa.create_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/x",
                              connect_args={"connect_timeout": 2})
    try:
        engine.connect()
    except Exception as exc:  # sqlalchemy.exc.OperationalError from psycopg
        return exc
    raise AssertionError("nothing should listen on a free port")


def _duplicate_key(tmp_path) -> Exception:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (k INTEGER PRIMARY KEY)"))
        conn.execute(sa.text("INSERT INTO t VALUES (1)"))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO t VALUES (1)"))
    except Exception as exc:  # sqlalchemy.exc.IntegrityError
        return exc
    raise AssertionError("the duplicate key should be refused")


def test_a_refused_connection_is_a_connection_error_even_wrapped_by_optuna():
    refused = _refused()
    assert is_connection_error(refused)
    try:
        raise optuna.exceptions.StorageInternalError("An exception is raised during the commit") \
            from refused
    except optuna.exceptions.StorageInternalError as wrapped:
        assert is_connection_error(wrapped)


def test_a_constraint_violation_is_not_retried(tmp_path):
    assert not is_connection_error(_duplicate_key(tmp_path))
    assert not is_connection_error(ValueError("bad value"))


def test_a_call_failing_past_the_timeout_gives_up_then_every_call_fails_at_once(capsys):
    retry = StorageRetry("postgresql://u:secret@h/db", timeout=1.5)
    calls = []

    def down():
        calls.append(1)
        raise _refused()

    with pytest.raises(StorageError, match=r"unreachable for 1.5 s \(.*refused"):
        retry.call(down)
    assert len(calls) == 2  # at 0 s and after the 1 s backoff; the next wait passes 1.5 s
    err = capsys.readouterr().err
    assert "retrying in 1 s" in err and "secret" not in err
    with pytest.raises(StorageError, match=r"unreachable for 1.5 s"):
        retry.call(lambda: "never called")
    assert len(calls) == 2


def test_a_connection_that_comes_back_is_ridden_out(capsys):
    retry = StorageRetry("postgresql://h/db", timeout=30)
    failures = [_refused()]

    def flaky():
        if failures:
            raise failures.pop()
        return "answer"

    assert retry.call(flaky) == "answer"
    assert capsys.readouterr().err.count("retrying") == 1


def test_other_errors_pass_through_untouched(tmp_path):
    retry = StorageRetry("sqlite:///x.db", timeout=30)
    error = _duplicate_key(tmp_path)

    def broken():
        raise error

    with pytest.raises(type(error)):
        retry.call(broken)


def test_nested_calls_retry_once_at_the_outer_level():
    retry = StorageRetry("postgresql://h/db", timeout=30)
    inner_failures = [_refused()]
    seen = []

    def inner():
        seen.append("inner")
        if inner_failures:
            raise inner_failures.pop()
        return 1

    assert retry.call(lambda: retry.call(inner)) == 1
    assert seen == ["inner", "inner"]


def test_the_service_storage_retries_and_still_pickles(tmp_path):
    storage = create_storage(f"sqlite:///{tmp_path / 'o.db'}", storage_timeout=30)
    study = optuna.create_study(storage=storage, study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    copy = pickle.loads(pickle.dumps(storage))
    assert len(copy.get_all_trials(copy.get_study_id_from_name("s"))) == 2
    assert copy._retry.timeout == 30
