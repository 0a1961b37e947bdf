"""Tests of study.storages (URL checks, opening SQLite, journal and PostgreSQL storages) and
study.redact (no password ever reaches a message)."""

from __future__ import annotations

import time

import optuna
import pytest

from study.errors import ConfigError, StorageError
from study.redact import one_line, redact, redact_url
from study.storages import check_storage_url, create_storage, shown_storage, storage_kind
from tests.servers import postgres_database
from tests.servers import postgres_url as servers_postgres_url

# --- shown_storage --------------------------------------------------------------------------------


def test_shown_storage_makes_a_relative_sqlite_or_journal_file_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert shown_storage("sqlite:///optuna.db") == f"sqlite:///{tmp_path / 'optuna.db'}"
    assert shown_storage("sqlite:///o.db?timeout=5") == f"sqlite:///{tmp_path / 'o.db'}?timeout=5"
    assert shown_storage("journal:study.log") == f"journal:{tmp_path / 'study.log'}"


def test_shown_storage_keeps_an_absolute_path_and_redacts_a_server_password():
    assert shown_storage("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert "hunter2" not in shown_storage("postgresql://bob:hunter2@db/optuna")
    assert shown_storage("postgresql://bob:hunter2@db/optuna").endswith("@db/optuna")


# --- check_storage_url --------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "sqlite:///x.db",
    "sqlite:////abs/x.db",
    "journal:/tmp/x.log",
    "postgresql://user@localhost/db",
    "postgresql+psycopg2://u:p@h:5432/db",
])
def test_check_storage_url_accepts(url):
    assert check_storage_url(url) is None


@pytest.mark.parametrize("url", ["", "   ", "foo", "http://x", "journal:", "journal:  ",
                                 "postgresql:///db"])
def test_check_storage_url_rejects(url):
    with pytest.raises(ConfigError, match=r"^`storage` must be sqlite:///FILE, journal:PATH or "
                                          r"postgresql://"):
        check_storage_url(url)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_check_storage_url_rejects_in_memory_sqlite(url):
    with pytest.raises(ConfigError, match=r"in-memory SQLite database would lose the study"):
        check_storage_url(url)


def test_check_storage_url_rejects_non_string():
    with pytest.raises(ConfigError, match=r"`storage` must be"):
        check_storage_url(None)


@pytest.mark.parametrize("url", ["redis://u:secret@h/0", "postgresql://u:secret@/x",
                                 "postgresql://u:secret@h:notaport/db"])
def test_check_storage_url_error_hides_the_password(url):
    with pytest.raises(ConfigError, match=r"`storage` must be") as info:
        check_storage_url(url)
    assert "secret" not in str(info.value)
    assert "u:***@" in str(info.value)


@pytest.mark.parametrize(("url", "kind"), [
    ("sqlite:///x.db", "sqlite"),
    ("journal:/tmp/x.log", "journal"),
    ("postgresql://u@h/db", "postgresql"),
    ("postgresql+psycopg2://u@h/db", "postgresql"),
])
def test_storage_kind(url, kind):
    assert storage_kind(url) == kind


# --- create_storage: SQLite and journal ---------------------------------------------------------


def test_create_storage_sqlite_in_missing_directory_is_one_line_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'missing' / 'optuna.db'}"
    with pytest.raises(StorageError, match=r"^`storage` could not be opened: sqlite:///") as info:
        create_storage(url)
    assert "\n" not in str(info.value)


def test_create_storage_checks_the_url_first():
    with pytest.raises(ConfigError, match=r"storage='foo'"):
        create_storage("foo")


def test_create_storage_sqlite_keeps_a_study(storage_url):
    optuna.create_study(study_name="s", storage=create_storage(storage_url))
    assert optuna.study.get_all_study_names(storage=create_storage(storage_url)) == ["s"]


def test_create_storage_journal_keeps_a_study(tmp_path):
    url = f"journal:{tmp_path / 'optuna.log'}"
    study = optuna.create_study(study_name="s", storage=create_storage(url))
    study.enqueue_trial({"x": 1.5})
    study.optimize(lambda t: t.suggest_float("x", 0, 2), n_trials=1)

    reloaded = optuna.load_study(study_name="s", storage=create_storage(url))
    assert [t.params for t in reloaded.trials] == [{"x": 1.5}]
    assert (tmp_path / "optuna.log").is_file()


def test_create_storage_journal_in_missing_directory_is_one_line_error(tmp_path):
    url = f"journal:{tmp_path / 'missing' / 'optuna.log'}"
    with pytest.raises(StorageError, match=r"`storage` could not be opened: journal:") as info:
        optuna.create_study(study_name="s", storage=create_storage(url))
    assert "\n" not in str(info.value)


def test_postgresql_driver_choice_keeps_an_encoded_password():
    from sqlalchemy.engine import make_url

    from study.storages._urls import _with_driver

    parsed = make_url(_with_driver("postgresql://u:p%40s%2Fs@h:5432/db?sslmode=require"))
    assert (parsed.get_backend_name(), parsed.password, parsed.host, parsed.database,
            dict(parsed.query)) == ("postgresql", "p@s/s", "h", "db", {"sslmode": "require"})


# --- redact -------------------------------------------------------------------------------------


def test_redact_url_hides_userinfo_password():
    assert redact_url("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"


def test_redact_url_hides_password_of_driver_url():
    assert redact_url("postgresql+psycopg2://u:secret@h/db") == "postgresql+psycopg2://u:***@h/db"


def test_redact_url_hides_password_without_user():
    assert redact_url("redis://:secret@h/0") == "redis://:***@h/0"


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql://u@h/db?password=secret", "postgresql://u@h/db?password=***"),
    ("postgresql://u@h/db?sslmode=require&PASSWORD=secret&x=1",
     "postgresql://u@h/db?sslmode=require&PASSWORD=***&x=1"),
    ("https://h/api?token=secret", "https://h/api?token=***"),
])
def test_redact_url_hides_query_password(url, expected):
    assert redact_url(url) == expected


def test_redact_hides_every_url_in_a_message():
    text = ("copy postgresql://a:one@h1/db to mysql://b:two@h2/db failed; "
            "retry postgresql://h3/db?password=three later")
    assert redact(text) == ("copy postgresql://a:***@h1/db to mysql://b:***@h2/db failed; "
                            "retry postgresql://h3/db?password=*** later")


def test_redact_url_passes_none_through():
    assert redact_url(None) is None


@pytest.mark.parametrize("url", [
    "postgresql://user@localhost/db",
    "sqlite:////abs/x.db",
    "journal:/tmp/x.log",
    "http://host:8080/path",
    "postgresql://u@h:5432/db?sslmode=require",
])
def test_redact_url_leaves_url_without_password_unchanged(url):
    assert redact_url(url) == url


def test_one_line_keeps_the_first_line_redacted():
    exc = RuntimeError("\n  could not reach postgresql://u:secret@h/db\nDETAIL: more\n")
    assert one_line(exc) == "could not reach postgresql://u:***@h/db"


def test_one_line_of_empty_error_is_its_type():
    assert one_line(KeyError()) == "KeyError"


def test_one_line_of_text():
    assert one_line("a\nb") == "a"


# --- PostgreSQL ---------------------------------------------------------------------------------


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL database, dropped afterwards."""
    with postgres_database() as name:
        yield servers_postgres_url(name)


def _dispose(storage) -> None:
    engine = getattr(storage, "engine", None)
    if engine is not None:
        engine.dispose()


def test_create_storage_postgresql_keeps_a_study(postgres_url):
    storage = create_storage(postgres_url, heartbeat_interval=60)
    try:
        study = optuna.create_study(study_name="s", storage=storage)
        study.enqueue_trial({"x": 0.5})
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    finally:
        _dispose(storage)

    storage = create_storage(postgres_url)
    try:
        reloaded = optuna.load_study(study_name="s", storage=storage)
        assert [(t.state.name, t.params) for t in reloaded.trials] == [("COMPLETE", {"x": 0.5})]
    finally:
        _dispose(storage)


def test_create_storage_postgresql_unreachable_fails_fast_without_password():
    url = "postgresql://u:secret@127.0.0.1:1/db"
    start = time.monotonic()
    with pytest.raises(StorageError, match=r"^`storage` could not be opened: "
                                           r"postgresql://u:\*\*\*@127.0.0.1:1/db: ") as info:
        create_storage(url)
    assert time.monotonic() - start < 15
    assert "secret" not in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("url", "expected"), [
    # SQLAlchemy reads a raw '/' as part of the password (found by a user: shown in the clear).
    ("postgresql://u:Pa/ssSECRET@h:5432/db", "postgresql://u:***@h:5432/db"),
    # A raw '@': nothing of the password is left, whatever the parser makes of it.
    ("postgresql://u:Pa@ssSECRET@h:5432/db", "postgresql://u:***@h:5432/db"),
    ("error: could not open 'postgresql://u:a/b@c@h/db': timeout",
     "error: could not open 'postgresql://u:***@h/db': timeout"),
])
def test_redact_hides_a_password_with_raw_separators(url, expected):
    assert redact(url) == expected
    assert "SECRET" not in redact(url)


def test_a_raw_at_sign_in_the_password_is_refused_with_the_password_hidden():
    with pytest.raises(ConfigError, match=r"write '@' as %40 .*storage='postgresql://u:\*\*\*@h/db'"):
        check_storage_url("postgresql://u:pa@ss@h/db")
    check_storage_url("postgresql://u:pa%40ss@h/db")  # percent-encoded: the password is pa@ss
    check_storage_url("postgresql://u:pa/ss@h/db")  # SQLAlchemy reads '/' as the password's
