"""The tracker's retry loop: transient failures retried with exponential backoff, a permanent
one (or a host name nobody knows, on a store not opened yet) reported at once."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from study.errors import TrackingError
from study.redact import one_line, redact
from study.tracking._errors import is_transient, reason, tls_problem, unresolvable_host

__all__ = ["FIRST_DELAY", "MAX_DELAY", "with_retries"]

FIRST_DELAY, MAX_DELAY = 1.0, 30.0


def with_retries(fn: Callable[..., Any], *args: Any, uri: str, seconds: float, opened: bool,
                 known: bool, pause: Callable[[], None] | None = None, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, retried on transient failures for up to ``seconds``.

    Args:
        fn: An MLflow call (named in messages by its ``__name__``).
        uri: The tracking URI (shown redacted).
        seconds: How long to keep retrying.
        opened: Whether the store answered this tracker once already (an outage of a study
            that resumes).
        known: Whether the URI is known to reach the store (``opened``, or a study recorded
            its parent run there); before that, a host name that does not resolve is refused
            at once and the first warning says how long it waits and that it may be the URI.
        pause: Called while waiting between tries, on the main thread (the command's
            interrupt check: a Ctrl-C held while the stores open stops the wait).

    Raises:
        TrackingError: A permanent failure, or a transient one that outlasted ``seconds``.
    """
    deadline = time.monotonic() + seconds
    delay, name = FIRST_DELAY, getattr(fn, "__name__", "call").lstrip("_")
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # MlflowException, requests and driver errors
            if not is_transient(exc):
                raise TrackingError(f"MLflow {name} failed: {one_line(exc)}") from None
            _refuse_a_setting(exc, known)
            if time.monotonic() + delay > deadline:
                raise TrackingError(_given_up(exc, uri, seconds, opened=opened, known=known)
                                    ) from None
            if not opened and delay == FIRST_DELAY:
                typo = "" if known else (", as for a server still starting; a wrong URI is "
                                         "not fixed by waiting")
                print(f"warning: MLflow tracking store {redact(uri)} is not available "
                      f"({reason(exc)}); retrying for up to {seconds:g} s "
                      f"(--tracking-timeout){typo} (Ctrl-C stops).", file=sys.stderr,
                      flush=True)
            else:
                print(f"warning: MLflow {name} failed ({reason(exc)}); retrying in "
                      f"{delay:g} s", file=sys.stderr, flush=True)
            _wait(delay, pause)
            delay = min(delay * 2, MAX_DELAY)


def _refuse_a_setting(exc: BaseException, known: bool) -> None:
    """Raise at once for what waiting cannot fix in a URI never used yet: a host name the
    resolver does not know, a TLS handshake that fails."""
    if known:
        return
    host = unresolvable_host(exc)
    if host:
        raise TrackingError(f"its host name does not resolve ({host}); check the URI "
                            f"(--tracking-uri or MLFLOW_TRACKING_URI).") from None
    tls = tls_problem(exc)
    if tls:
        raise TrackingError(f"its TLS handshake failed ({tls}); check the URI's scheme "
                            f"(http:// or https://) and the server's certificate.") from None


def _given_up(exc: BaseException, uri: str, seconds: float, *, opened: bool,
              known: bool) -> str:
    """The message of a store that stayed unreachable: a store never reached names the cause
    alone and says what to check."""
    if opened:
        return (f"MLflow tracking store {redact(uri)} unreachable for {seconds:g} s "
                f"({one_line(exc)}); stopping. Run the same command again when it is back: "
                f"the study resumes.")
    then = ("Run the same command again when it is back." if known else
            "Check the URI (--tracking-uri or MLFLOW_TRACKING_URI) and that its server runs, "
            "then run the same command again.")
    return (f"MLflow tracking store {redact(uri)} unreachable for {seconds:g} s "
            f"({reason(exc)}); stopping. {then}")


def _wait(seconds: float, pause: Callable[[], None] | None) -> None:
    """Sleep ``seconds``, calling ``pause`` every fifth of a second on the main thread (a
    signal latched meanwhile is raised here, between two tries, where nothing is half
    written)."""
    if pause is None or threading.current_thread() is not threading.main_thread():
        time.sleep(seconds)
        return
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        pause()
        time.sleep(min(left, 0.2))
