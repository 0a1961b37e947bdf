"""Riding out a database restart: storage calls retried on connection errors only.

A PostgreSQL failover or restart breaks every pooled connection; ``pool_pre_ping`` replaces
them once the server is back. Until then each storage call fails with a connection error, which
is retried with exponential backoff for up to ``storage_timeout`` seconds (one warning line per
retry). After that the storage is declared unreachable: this call and every later one raise
:class:`~study.errors.StorageError` at once, so the session stops with one line instead of
waiting again in each cleanup step; the next run of the same command recovers the study.

A retried call whose reply was lost may have been committed. Reads, and writes that store a
value under a key (attrs, params, intermediate values), come out the same when made twice. The
others are checked before a retry (``settled``): a study of the requested name, a study already
deleted, a trial already in the requested finished state is the lost call's own result.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from study.errors import StorageError, exception_chain
from study.redact import one_line, redact

__all__ = ["RETRIED_METHODS", "UNSETTLED", "StorageRetry", "is_connection_error"]

_FIRST_DELAY, _MAX_DELAY = 1.0, 15.0

# Public storage methods that come out the same when a call is made twice (a lost reply
# retried): reads, and writes of a value under a key. The creates, ``delete_study`` and
# ``set_trial_state_values`` are retried with a check instead (see StudyRDBStorage).
RETRIED_METHODS = (
    "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs",
    "get_study_system_attrs", "get_all_studies", "set_trial_param", "get_trial_param",
    "get_trial_id_from_study_id_trial_number", "get_trial_number_from_id",
    "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
    "get_trial", "get_trial_params", "get_trial_user_attrs", "get_trial_system_attrs",
    "get_all_trials", "get_n_trials", "get_best_trial",
)


class _Unsettled:
    """What a ``settled`` check returns when the lost call did not take effect."""


UNSETTLED = _Unsettled()


def _describe(exc: BaseException) -> str:
    cause = exception_chain(exc)[-1]  # the driver's own words, not Optuna's wrapper
    text = one_line(cause)
    return text if text.strip("() ") else type(cause).__name__


def is_connection_error(exc: BaseException) -> bool:
    """A lost or refused database connection anywhere in the chain (Optuna wraps SQLAlchemy's
    errors in ``StorageInternalError``), not a constraint or a programming error."""
    import sqlalchemy.exc

    kinds = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.DisconnectionError,
             sqlalchemy.exc.InterfaceError, ConnectionError, TimeoutError)
    return any(isinstance(err, kinds) or (isinstance(err, sqlalchemy.exc.DBAPIError)
                                          and err.connection_invalidated)
               for err in exception_chain(exc))


class StorageRetry:
    """Retry state of one storage: its URL (redacted in messages), the time budget, whether it
    has been given up on, and which thread is already inside a retried call (nested calls are
    retried once, at the outermost level)."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self.down: str | None = None  # why the storage was given up on
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "timeout": self.timeout, "down": self.down}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, retried on connection errors (see the module)."""
        return self.call_settled(functools.partial(fn, *args, **kwargs), settled=None)

    def call_settled(self, fn: Callable[[], Any], *,
                     settled: Callable[[], Any] | None,
                     refused: type[BaseException] | None = None) -> Any:
        """``fn()``, retried on connection errors (and on ``refused``, when given); before each
        retry ``settled()`` (when given) says whether the failed call took effect: its result is
        then returned, and :data:`UNSETTLED` means ``fn`` is called again."""
        if getattr(self._local, "active", False):
            return fn()
        if self.down is not None:
            raise self._unreachable(self.down)
        self._local.active = True
        try:
            return self._loop(fn, settled, refused=refused)
        finally:
            self._local.active = False

    def _loop(self, fn: Callable[[], Any], settled: Callable[[], Any] | None, *,
              refused: type[BaseException] | None = None) -> Any:
        deadline = time.monotonic() + self.timeout
        delay = _FIRST_DELAY
        failed = False
        while True:
            try:
                if failed and settled is not None:
                    result = settled()
                    if result is not UNSETTLED:
                        return result
                return fn()
            except Exception as exc:
                if not (is_connection_error(exc) or (refused and isinstance(exc, refused))):
                    raise
                failed = True
                if time.monotonic() + delay > deadline:
                    self.down = f"for {self.timeout:g} s ({_describe(exc)[:200]})"
                    raise self._unreachable(self.down) from None
                print(f"warning: storage {redact(self.url)} unreachable "
                      f"({_describe(exc)[:160]}); retrying in {delay:g} s",
                      file=sys.stderr, flush=True)
                time.sleep(delay)
                delay = min(delay * 2, _MAX_DELAY)

    def connect(self, connect: Callable[[], Any], *, refused: type[BaseException]) -> Any:
        """A new database connection from ``connect()``, retried while it raises ``refused``
        (the driver's error for a server that is down). Optuna's ``Study`` reads and creates
        trials through private storage methods that no public wrapper sees; every one of them
        needs a connection, so this is where an outage is ridden out for them. Inside a retried
        public call the connection is tried once: that call's own loop retries it."""
        return self.call_settled(connect, settled=None, refused=refused)

    def _unreachable(self, how: str) -> StorageError:
        return StorageError(f"Optuna storage {redact(self.url)} unreachable {how}; stopping. "
                            f"Run the same command again when it is back: the study resumes.")


def retried(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` of a storage with a ``_retry`` (:class:`StorageRetry`), retried through it."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        retry = getattr(self, "_retry", None)
        if retry is None:
            return method(self, *args, **kwargs)
        return retry.call(method, self, *args, **kwargs)

    return wrapper
