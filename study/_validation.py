"""Small checks that raise one-line :class:`~study.errors.ConfigError` messages.

The message shape follows Optuna and scikit-learn: "`lr_min` must be > 0, but got lr_min=-1.0."
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from study.errors import ConfigError, DataError, StudyError


def fail(field: str, value: Any, allowed: str, *, error: type[StudyError] = ConfigError) -> None:
    """Raise ``error`` naming ``field``, its bad ``value`` and what is ``allowed``."""
    raise error(f"`{field}` must be {allowed}, but got {field}={value!r}.")


def check_positive(field: str, value: float, *, allow_zero: bool = False) -> None:
    """Check ``value > 0`` (or ``>= 0`` with ``allow_zero``)."""
    if allow_zero:
        if not value >= 0:
            fail(field, value, ">= 0")
    elif not value > 0:
        fail(field, value, "> 0")


def check_fixed_hparams(*, lr: float, batch_size: int, weight_decay: float,
                        width: int | None = None) -> None:
    """Check the fixed values of ``study trial`` and ``study explain``, named as their flags."""
    if width is not None:
        check_positive("width", width)
    check_positive("lr", lr)
    if batch_size < 2:  # BatchNorm cannot train on a batch of one sample
        fail("batch_size", batch_size, ">= 2")
    check_positive("weight_decay", weight_decay, allow_zero=True)


def check_choice(field: str, value: Any, choices: Iterable[Any]) -> None:
    """Check that ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        fail(field, value, "one of " + ", ".join(str(c) for c in choices))


def check_range(field_min: str, low: float, field_max: str, high: float) -> None:
    """Check that a ``(min, max)`` pair is ordered."""
    if low > high:
        raise ConfigError(
            f"`{field_min}` must be <= `{field_max}`, but got "
            f"{field_min}={low!r} and {field_max}={high!r}."
        )


# Path separators, control characters and "..": a study name becomes a folder under reports/.
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\]|\.\.")


def check_new_study_name(name: str) -> None:
    """Refuse a name for a new study that could not be a folder name of its own.

    Raises:
        ConfigError: The name holds a path separator, ``..`` or a control character.
    """
    if _UNSAFE_NAME.search(name):
        fail("study_name", name, "a name without '/', '\\', '..' or control characters (it "
                                 "names the study's report folder)")


def folder_name(name: str) -> str:
    """A folder name derived from a study name: unsafe parts become ``_``, leading dots go, so
    ``reports/<folder_name>`` never points outside ``reports/``."""
    safe = _UNSAFE_NAME.sub("_", name).lstrip(". ")
    return safe or "study"


def no_npz_file(path: object) -> DataError:
    """The error of an ``npz:`` dataset whose file is missing (the loader's, and the CLI's
    before any heavy import)."""
    return DataError(f"`dataset` must name an existing .npz file, but got no file at {path}.")


def not_a_folder(root: object) -> DataError:
    """The error of an ``imagefolder:`` dataset that is not a folder."""
    return DataError(f"`dataset` must name a folder of class sub-folders, but got "
                     f"imagefolder:{root}, which is not a folder.")


def check_dataset_path(spec: str) -> None:
    """Refuse a missing ``npz:`` file or ``imagefolder:`` folder at once: the CLI checks it
    before importing torch (seconds), the loaders check it again.

    Raises:
        DataError: The same line the loaders give.
    """
    from pathlib import Path

    if spec.startswith("npz:") and not Path(spec[4:]).expanduser().is_file():
        raise no_npz_file(Path(spec[4:]).expanduser())
    if spec.startswith("imagefolder:"):
        root = Path(spec[len("imagefolder:"):]).expanduser()
        if not root.is_dir():
            raise not_a_folder(root)


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL; ``None`` in memory or for an SQLite URI filename
    (``?uri=true``), which SQLite itself parses."""
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def folder_problem(path: Path | None) -> str | None:
    """Why a store file cannot be made at ``path`` (``FOLDER does not exist; create it
    first`` or ``FOLDER is not a folder``); ``None`` when its folder is there (or no path)."""
    folder = None if path is None else path.absolute().parent
    if folder is None or folder.is_dir():
        return None
    return f"{folder} {'is not a folder' if folder.exists() else 'does not exist; create it first'}"


def check_url_userinfo(field: str, url: str, shown: str) -> None:
    """Refuse a database URL whose password (or user name) holds a raw ``@``: SQLAlchemy reads
    the host from the part after its first ``@``, so the connection fails, and its errors
    would name the password's second half as that host. ``shown``: ``url`` redacted.

    Raises:
        ConfigError: Saying to percent-encode it.
    """
    from sqlalchemy.engine import make_url

    host = make_url(url).host
    if host and "@" in host:
        fail(field, shown, "a URL whose user name and password write '@' as %40 "
                           "(percent-encoded)")
