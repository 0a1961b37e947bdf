"""Which tracking-store failures are worth retrying, decided by exception type and status code,
never by the message text (a run id may contain "503"; a path may contain "refused")."""

from __future__ import annotations

import socket

from mlflow.exceptions import MlflowException, RestException

from study.errors import exception_chain
from study.redact import one_line

__all__ = ["is_transient", "reason", "tls_problem", "unresolvable_host"]

# MLflow error codes that mean "the server is there but cannot answer now".
_TRANSIENT_CODES = {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED",
                    "DEADLINE_EXCEEDED"}


def _transient_types() -> tuple[type[BaseException], ...]:
    import requests
    import sqlalchemy.exc
    import urllib3.exceptions

    return (
        ConnectionError, TimeoutError,  # builtins: refused, reset, broken pipe, timed out
        requests.exceptions.ConnectionError, requests.exceptions.Timeout,
        requests.exceptions.RetryError, requests.exceptions.ChunkedEncodingError,
        urllib3.exceptions.ProtocolError, urllib3.exceptions.NewConnectionError,
        urllib3.exceptions.MaxRetryError, urllib3.exceptions.TimeoutError,
        sqlalchemy.exc.OperationalError, sqlalchemy.exc.DisconnectionError,
        sqlalchemy.exc.TimeoutError,
    )


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` means the store is down or busy (retry) rather than the request wrong.

    Transient: a connection or timeout error anywhere in the exception's chain (MLflow wraps
    ``requests`` and SQLAlchemy errors), an MLflow code saying "unavailable" (503, 429, 504, a
    database error of a SQL store), or a server's own 500 (a tracking server whose database
    restarts). Everything else is permanent and reported at once: permission, not-found and
    bad-request errors, and any ``OSError`` that is not a connection error.
    """
    transient_types = _transient_types()
    if any(isinstance(err, transient_types) for err in exception_chain(exc)):
        return True
    if not isinstance(exc, MlflowException):
        return False
    if exc.error_code in _TRANSIENT_CODES:
        return True
    # A 500 or 502 the server sent (JSON or a proxy's page) has no cause; a client-side
    # MlflowException wrapping a non-transient error has one and is permanent.
    server_said = isinstance(exc, RestException) or (exc.__cause__ is None
                                                     and exc.__context__ is None)
    return exc.error_code == "INTERNAL_ERROR" and server_said


def unresolvable_host(exc: BaseException) -> str | None:
    """Why the tracking server's host name does not resolve, where that is what ``exc`` says
    (the resolver knows no such name, not a resolver that is down: that one is transient);
    ``None`` otherwise."""
    chain = exception_chain(exc)
    permanent = {getattr(socket, name) for name in ("EAI_NONAME", "EAI_NODATA")
                 if hasattr(socket, name)}
    if not any(isinstance(err, socket.gaierror) and err.errno in permanent for err in chain):
        return None
    import urllib3.exceptions

    named = [err for err in chain if isinstance(err, urllib3.exceptions.NameResolutionError)]
    return one_line(named[0] if named else chain[-1]).split(": ", 1)[-1]


def tls_problem(exc: BaseException) -> str | None:
    """Why the TLS handshake failed, where that is what ``exc`` says (``https://`` to a plain
    HTTP server, a certificate the client does not trust): a setting, not an outage;
    ``None`` otherwise."""
    import ssl

    chain = exception_chain(exc)
    if not any(isinstance(err, ssl.SSLError) for err in chain):
        return None
    return reason(exc)


def reason(exc: BaseException) -> str:
    """The innermost cause of ``exc`` in one line (``[Errno 111] Connection refused``, not the
    URL-laden wrapper MLflow and requests put around it, cut before the cause)."""
    chain = exception_chain(exc)
    return one_line(chain[-1]) if len(chain) > 1 else one_line(exc)[:160]
