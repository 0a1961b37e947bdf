"""The syntax of a tracking URI, checked before MLflow sees it: MLflow takes a URI without a
scheme for a folder of its file store (refused here, SPEC) and answers a typo such as
``localhost:5000`` with a paragraph about its model registry."""

from __future__ import annotations

import re

from study._validation import check_url_userinfo
from study.errors import ConfigError
from study.redact import redact

__all__ = ["check_tracking_uri"]

_ALLOWED = "http(s)://HOST:PORT, sqlite:///FILE or a database URL (postgresql://...)"
# MLflow's tracking schemes this service opens (its file store is not one of them).
_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks",
            "databricks-uc", "uc")
_SERVERS = ("postgresql", "mysql", "mssql")  # database URLs with a host (and a password)
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)(?::|$)")
_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-]+:\d+(?:/\S*)?$")


def check_tracking_uri(uri: str | None) -> None:
    """Refuse a tracking URI MLflow would take for a file-store folder, or whose scheme it
    does not know; ``None`` (MLflow's own default) passes.

    Raises:
        ConfigError: Naming the URI (redacted) and, for ``HOST:PORT``, the ``http://`` form.
    """
    if uri is None:
        return
    shown = redact(uri)
    match = _SCHEME.match(uri)
    scheme = match["scheme"].lower() if match else ""
    base = scheme.partition("+")[0]
    if base in _SCHEMES:
        if base in _SERVERS:
            check_url_userinfo("tracking_uri", uri, shown)
        return
    if _HOST_PORT.match(uri):
        hint = f" (did you mean http://{uri}?)"
    elif scheme in ("", "file") or not uri.partition(":")[2]:
        hint = " (a folder of MLflow's file store, which is not supported: a local store is " \
               "sqlite:///mlflow.db)"
    else:
        hint = ""
    raise ConfigError(f"`tracking_uri` must be {_ALLOWED}, but got tracking_uri={shown!r}{hint}.")
