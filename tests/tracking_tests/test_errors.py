"""Transient vs permanent tracking failures, by type and status code: real MLflow stores, a real
refused connection, and the exceptions MLflow and the libraries below it really raise."""

from __future__ import annotations

import errno
import socket

import pytest
import requests
import sqlalchemy.exc
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos.databricks_pb2 import (
    BAD_REQUEST,
    INTERNAL_ERROR,
    PERMISSION_DENIED,
    RESOURCE_DOES_NOT_EXIST,
    TEMPORARILY_UNAVAILABLE,
)

from study.errors import TrackingError
from study.tracking import Tracker
from study.tracking._errors import is_transient, reason, unresolvable_host


def _wrapped(inner: BaseException) -> MlflowException:
    """What MLflow's REST client raises once requests gives up: the error as its context."""
    try:
        raise inner
    except BaseException as exc:
        try:
            raise MlflowException(f"API request to http://x/api failed with exception {exc}")
        except MlflowException as wrapped:
            return wrapped


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed on exit: connecting is refused


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
    TimeoutError("timed out"),
    _wrapped(requests.exceptions.ConnectionError("Max retries exceeded")),
    _wrapped(requests.exceptions.RetryError("too many 503 error responses")),
    MlflowException("database is locked", error_code=TEMPORARILY_UNAVAILABLE),
    RestException({"error_code": "INTERNAL_ERROR", "message": "db connection lost"}),
    MlflowException("API request to endpoint /x failed with error code 502 != 200",
                    error_code=INTERNAL_ERROR),
], ids=["refused", "timeout", "requests-connection", "requests-retry", "unavailable",
        "server-500", "proxy-502"])
def test_transient_failures_are_retried(exc):
    assert is_transient(exc)


@pytest.mark.parametrize("exc", [
    PermissionError(errno.EACCES, "Permission denied", "/artifacts/run"),
    FileNotFoundError(errno.ENOENT, "No such file or directory", "/nope"),
    OSError(errno.ENOSPC, "No space left on device"),
    MlflowException("Run with id=a503b not found", error_code=RESOURCE_DOES_NOT_EXIST),
    MlflowException("Connection refused is not a valid tag", error_code=BAD_REQUEST),
    RestException({"error_code": "PERMISSION_DENIED", "message": "no access to 503"}),
    MlflowException("no access", error_code=PERMISSION_DENIED),
    _wrapped(ValueError("bad header 504")),
], ids=["permission", "not-found", "disk-full", "run-id-503", "text-says-refused", "rest-403",
        "denied", "client-bug"])
def test_permanent_failures_are_not_retried_whatever_their_text(exc):
    assert not is_transient(exc)


def test_a_locked_sqlite_store_is_transient():
    inner = sqlalchemy.exc.OperationalError("INSERT ...", {}, Exception("database is locked"))
    try:
        raise inner
    except sqlalchemy.exc.OperationalError as exc:
        try:
            raise MlflowException(str(exc), error_code=INTERNAL_ERROR) from exc
        except MlflowException as wrapped:
            assert is_transient(wrapped)


def test_a_missing_run_whose_id_holds_503_is_none_at_once(tracking_uri, capsys):
    tracker = Tracker(tracking_uri, retry_seconds=30)
    assert tracker.get_run("5030000000000000000000000000f503") is None
    assert "retrying" not in capsys.readouterr().err


def test_a_permanent_error_is_reported_at_once_with_its_own_message(tracking_uri, capsys):
    tracker = Tracker(tracking_uri, retry_seconds=30)
    with pytest.raises(TrackingError, match=r"MLflow set_terminated failed: .*503"):
        tracker.end_run("0000000000000000000000000000a503", "FINISHED")
    assert "retrying" not in capsys.readouterr().err


def test_a_refused_connection_is_retried_then_unreachable(capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # our retries, not requests'
    with pytest.raises(TrackingError, match=r"unreachable for 1.5 s .*Connection refused"):
        Tracker(f"http://127.0.0.1:{_closed_port()}", retry_seconds=1.5)
    assert "retrying for up to 1.5 s" in capsys.readouterr().err


def test_a_store_never_opened_does_not_promise_that_the_study_resumes(monkeypatch):
    # Found by a user: a brand-new study, never created, was said to resume.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(TrackingError) as caught:
        Tracker(f"http://127.0.0.1:{_closed_port()}", retry_seconds=0.2)
    message = str(caught.value)
    assert message.startswith("`tracking_uri` could not be opened: ")
    assert message.endswith("Check the URI (--tracking-uri or MLFLOW_TRACKING_URI) and that "
                            "its server runs, then run the same command again.")
    # The cause alone, not the URL-laden wrapper of requests (found by a user: 400 characters).
    assert "unreachable for 0.2 s ([Errno 111] Connection refused); stopping." in message
    assert "HTTPConnectionPool" not in message


def _resolver_says_no_such_name() -> bool:
    """Whether this machine's resolver answers "no such name" for a name that cannot exist
    (RFC 2606's .invalid); a machine without a reachable resolver answers "try again"."""
    try:
        socket.getaddrinfo("no-such-host.invalid", 80)
    except socket.gaierror as exc:
        return exc.errno in {getattr(socket, n, None) for n in ("EAI_NONAME", "EAI_NODATA")}
    return False


def _raised(fn) -> BaseException:
    try:
        fn()
    except BaseException as exc:  # the real exception is the test's input
        return exc
    raise AssertionError("nothing raised")


@pytest.mark.skipif(not _resolver_says_no_such_name(), reason="no resolver answers here")
def test_a_host_name_that_does_not_resolve_is_refused_at_once_not_retried(monkeypatch, capsys):
    """Found by a user: a typo in --tracking-uri waited out --tracking-timeout (120 s by
    default) behind warnings that cut the reason off."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(TrackingError, match=(
            r"^`tracking_uri` could not be opened: http://no-such-host.invalid:5000: its host "
            r"name does not resolve \(Failed to resolve 'no-such-host.invalid' \(.*\)\); "
            r"check the URI \(--tracking-uri or MLFLOW_TRACKING_URI\)\.$")):
        Tracker("http://no-such-host.invalid:5000", retry_seconds=20)  # a regression: 20 s
    assert "retrying" not in capsys.readouterr().err


@pytest.mark.skipif(not _resolver_says_no_such_name(), reason="no resolver answers here")
def test_a_store_known_to_the_study_is_waited_for_whatever_the_resolver_says(monkeypatch,
                                                                            capsys):
    """A worker given the URI the study recorded: a name that stops resolving (a DNS outage)
    is an outage like a refused connection, not a typo."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(TrackingError, match=r"unreachable for 1.5 s .*Run the same command "
                                             r"again when it is back\.$"):
        Tracker("http://no-such-host.invalid:5000", retry_seconds=1.5, known=True)
    first = capsys.readouterr().err.splitlines()[0]
    # How long it waits, as for any store not reached yet; no word of a wrong URI (the study
    # recorded this one).
    assert first.endswith("retrying for up to 1.5 s (--tracking-timeout) (Ctrl-C stops).")


@pytest.mark.skipif(not _resolver_says_no_such_name(), reason="no resolver answers here")
def test_only_a_name_the_resolver_does_not_know_is_unresolvable():
    lookup = _raised(lambda: socket.getaddrinfo("no-such-host.invalid", 80))
    assert unresolvable_host(_wrapped(lookup)) is not None
    down = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    assert unresolvable_host(_wrapped(down)) is None  # a resolver down: transient, retried
    assert is_transient(_wrapped(requests.exceptions.ConnectionError(str(down))))
    assert unresolvable_host(_wrapped(ConnectionRefusedError(111, "refused"))) is None


def test_a_store_that_never_answered_says_how_long_it_waits_and_why_once(capsys, monkeypatch):
    """Found by a user: a wrong port waited two minutes behind warnings that said neither how
    long nor that the URI may be wrong (and cut the reason off)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    port = _closed_port()
    with pytest.raises(TrackingError):
        Tracker(f"http://127.0.0.1:{port}", retry_seconds=3.5)
    first, *later = capsys.readouterr().err.splitlines()
    assert first == (f"warning: MLflow tracking store http://127.0.0.1:{port} is not available "
                     f"([Errno 111] Connection refused); retrying for up to 3.5 s "
                     f"(--tracking-timeout), as for a server still starting; a wrong URI is "
                     f"not fixed by waiting (Ctrl-C stops).")
    assert later == ["warning: MLflow search_experiments failed ([Errno 111] Connection "
                     "refused); retrying in 2 s"]


def test_the_reason_of_an_error_without_a_cause_is_its_own_first_line():
    assert reason(MlflowException("x" * 300 + "\nmore")) == "x" * 160
    assert reason(_wrapped(TimeoutError("timed out"))) == "timed out"


@pytest.fixture
def plain_http_port():
    """A plain HTTP server on 127.0.0.1 (no TLS), serving in a thread."""
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_https_to_a_plain_http_server_is_refused_at_once_not_retried(plain_http_port, capsys,
                                                                      monkeypatch):
    """Found by a user: https:// to an http server waited out --tracking-timeout, then said to
    run the same command again when the server is back."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(TrackingError, match=(
            r"^`tracking_uri` could not be opened: https://127.0.0.1:\d+: its TLS handshake "
            r"failed \(.*\); check the URI's scheme \(http:// or https://\) and the server's "
            r"certificate\.$")):
        Tracker(f"https://127.0.0.1:{plain_http_port}", retry_seconds=20)  # a regression: 20 s
    assert "retrying" not in capsys.readouterr().err


def test_a_tls_failure_of_a_store_the_study_recorded_is_waited_for(plain_http_port,
                                                                   monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(TrackingError, match=r"unreachable for 1 s"):
        Tracker(f"https://127.0.0.1:{plain_http_port}", retry_seconds=1, known=True)
