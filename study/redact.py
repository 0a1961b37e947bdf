"""Redaction of credentials in URLs, so passwords never reach params, tags, logs or reports."""

from __future__ import annotations

import re

__all__ = ["one_line", "redact", "redact_url"]

# scheme://user:password@host -> scheme://user:***@host; also inside longer messages. The
# password runs to the last "@" of its word: SQLAlchemy (and so Optuna and MLflow) reads a raw
# "/" as part of it, and a raw "@" in it must not leave its second half shown.
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*):(?P<pw>\S*)@")
_QUERY_SECRET = re.compile(r"(?i)(?P<key>[?&](?:password|passwd|pwd|token)=)(?P<value>[^&\s]+)")


def redact_url(url: str | None) -> str | None:
    """Return ``url`` with the password (userinfo or query parameter) replaced by ``***``."""
    if url is None:
        return None
    return redact(url)


def redact(text: str) -> str:
    """Replace every URL password found in free ``text`` (an error message, a log line)."""
    text = _USERINFO.sub(r"\g<head>:***@", text)
    return _QUERY_SECRET.sub(r"\g<key>***", text)


def one_line(exc: BaseException | str) -> str:
    """The first non-empty line of an error (or text), redacted: what users are shown."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__ if isinstance(exc, BaseException) else ""
    return redact(text.splitlines()[0])
