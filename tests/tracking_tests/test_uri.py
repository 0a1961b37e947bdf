"""A tracking URI's syntax is checked before MLflow sees it (no store is opened here)."""

from __future__ import annotations

import pytest

from study.errors import ConfigError
from study.tracking import check_tracking_uri


@pytest.mark.parametrize("uri", [
    None, "http://127.0.0.1:5000", "https://mlflow.example.com", "sqlite:///mlflow.db",
    "sqlite:////abs/mlflow.db", "postgresql://u:p%40s@h/mlflow", "postgresql+psycopg://h/db",
    "mysql://h/db", "databricks", "databricks://profile", "HTTP://H:5000",
])
def test_the_schemes_mlflow_opens_pass(uri):
    check_tracking_uri(uri)


@pytest.mark.parametrize("uri", ["localhost:5000", "127.0.0.1:5077", "mlflow:5000/prefix"])
def test_a_host_and_port_without_a_scheme_is_refused_with_the_http_form(uri):
    with pytest.raises(ConfigError, match=rf"but got tracking_uri='{uri}' \(did you mean "
                                          rf"http://{uri}\?\)\.$"):
        check_tracking_uri(uri)


@pytest.mark.parametrize("uri", ["./mlruns", "mlruns", "/tmp/mlruns", "file:///tmp/mlruns"])
def test_a_folder_is_refused_as_the_file_store(uri):
    with pytest.raises(ConfigError, match=r"\(a folder of MLflow's file store, which is not "
                                          r"supported: a local store is sqlite:///mlflow.db\)\.$"):
        check_tracking_uri(uri)


def test_an_unknown_scheme_is_refused_without_a_guess():
    with pytest.raises(ConfigError, match=r"but got tracking_uri='ftp://h/x'\.$"):
        check_tracking_uri("ftp://h/x")


def test_a_database_uri_with_a_raw_at_sign_is_refused_with_the_password_hidden():
    with pytest.raises(ConfigError, match=r"write '@' as %40 .*'postgresql://u:\*\*\*@h/db'"):
        check_tracking_uri("postgresql://u:se@cret@h/db")


def test_a_refused_uri_never_shows_its_password():
    with pytest.raises(ConfigError) as caught:
        check_tracking_uri("ftp://u:secret@h/x")
    assert "secret" not in str(caught.value)
