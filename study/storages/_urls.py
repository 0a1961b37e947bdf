"""Optuna storages from a URL: SQLite (one process), a journal file (several processes on one
machine) and PostgreSQL or MySQL (many machines)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from study._validation import check_url_userinfo, fail
from study.errors import StorageError
from study.redact import one_line, redact

if TYPE_CHECKING:
    from collections.abc import Callable

    import optuna
    from optuna.trial import FrozenTrial

__all__ = ["JOURNAL_PREFIX", "check_storage_url", "create_storage", "shown_storage", "storage_kind"]

JOURNAL_PREFIX = "journal:"
_ALLOWED = "sqlite:///FILE, journal:PATH or postgresql://USER@HOST[:PORT]/DB"
_RDB_BACKENDS = ("sqlite", "postgresql", "mysql")
# Optuna retries a trial whose worker died this many times before leaving it failed.
_MAX_RETRY = 3


def storage_kind(url: str) -> str:
    """``"journal"``, ``"sqlite"``, ``"postgresql"`` or ``"mysql"`` (the URL must be valid)."""
    if url.startswith(JOURNAL_PREFIX):
        return "journal"
    from sqlalchemy.engine import make_url

    return make_url(url).get_backend_name()


def shown_storage(url: str) -> str:
    """``url`` as a report shows it: a relative SQLite or journal file made absolute (a report
    read elsewhere would otherwise name a file relative to nowhere), the password redacted."""
    from pathlib import Path

    if url.startswith(JOURNAL_PREFIX):
        path = url[len(JOURNAL_PREFIX):]
        return JOURNAL_PREFIX + str(Path(path).expanduser().resolve())
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        path, sep, query = url[len(prefix):].partition("?")
        return prefix + str(Path(path).resolve()) + sep + query
    return redact(url)


def check_storage_url(url: str) -> None:
    """Validate the syntax of a storage URL without connecting.

    Raises:
        ConfigError: The URL is malformed or names an unsupported backend.
    """
    if not isinstance(url, str) or not url.strip():
        fail("storage", url, _ALLOWED)
    if url.startswith(JOURNAL_PREFIX):
        if not url[len(JOURNAL_PREFIX):].strip():
            fail("storage", url, _ALLOWED)
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        fail("storage", redact(url), _ALLOWED)
    backend = parsed.get_backend_name()
    if backend not in _RDB_BACKENDS:
        fail("storage", redact(url), _ALLOWED)
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        fail("storage", url, _ALLOWED + " (an in-memory SQLite database would lose the study)")
    if backend != "sqlite" and not parsed.host:
        fail("storage", redact(url), _ALLOWED)
    check_url_userinfo("storage", url, redact(url))


def create_storage(
    url: str, *, heartbeat_interval: int | None = None,
    stale_callback: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    storage_timeout: float | None = None,
) -> optuna.storages.BaseStorage:
    """Open (and for RDB storages create the tables of) the storage at ``url``.

    Args:
        url: A storage URL accepted by :func:`check_storage_url`.
        heartbeat_interval: Seconds between heartbeats of running trials (RDB storages only);
            a trial whose heartbeat goes stale is failed and handed to ``stale_callback``.
        stale_callback: Called with each trial failed for a stale heartbeat (closes its run
            and retries it); Optuna's own retry callback when ``None``.
        storage_timeout: Seconds to keep retrying calls that fail on a lost database
            connection (RDB storages; ``None``: no retries).

    Raises:
        StorageError: The storage cannot be reached or opened.
    """
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    from study.storages._rdb import StudyRDBStorage

    check_storage_url(url)
    try:
        if url.startswith(JOURNAL_PREFIX):
            from optuna.storages.journal import JournalFileBackend

            path = url[len(JOURNAL_PREFIX):]
            return optuna.storages.JournalStorage(JournalFileBackend(path))
        engine_kwargs = {}
        if storage_kind(url) == "postgresql":
            # Fail fast on an unreachable host instead of hanging for minutes.
            engine_kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
        return StudyRDBStorage(
            _with_driver(url),
            storage_timeout=storage_timeout,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_interval,
            heartbeat_stale_trial_callback=(
                stale_callback or RetryHeartbeatStaleTrialCallback(max_retry=_MAX_RETRY)
            ) if heartbeat_interval else None,
        )
    except Exception as exc:  # drivers raise many types; all mean "cannot open"
        raise StorageError(
            f"`storage` could not be opened: {redact(url)}: {one_line(exc)}"
        ) from None


def _with_driver(url: str) -> str:
    """``url`` with an installed PostgreSQL driver named when it names none.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, which the ``postgres`` extra
    installs, so the same URL works in Optuna's CLI, optuna-dashboard and ``mlflow server``.
    Only where psycopg2 alone is installed (an older environment) is it named here.
    """
    from importlib.util import find_spec

    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername != "postgresql" or find_spec("psycopg2") is None:
        return url
    if find_spec("psycopg") is not None:
        return url
    return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
