"""Callables named by the user: ``pkg.module:callable`` or ``path/to/file.py:callable``.

A module is imported the usual way, so it must be on ``sys.path`` (``PYTHONPATH``, an installed
package, or the working directory). A file is loaded by path (relative to the working
directory) under a module name derived from its absolute path, so loading it twice in a process
runs it once.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from study.errors import ConfigError
from study.redact import one_line

__all__ = ["is_callable_spec", "load_callable", "source_file", "source_sha256", "where_raised"]

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED_RE = re.compile(rf"^{_IDENT}(\.{_IDENT})*$")  # a module path or a (nested) attribute


def is_callable_spec(spec: str) -> bool:
    """Whether ``spec`` has the form ``module:callable`` or ``file.py:callable``."""
    where, sep, name = spec.rpartition(":")
    if not sep or not _DOTTED_RE.match(name):
        return False
    return _is_file(where) or bool(_DOTTED_RE.match(where))


def _is_file(where: str) -> bool:
    return where.endswith(".py")


def source_file(spec: str) -> Path | None:
    """The file that defines ``spec``'s module, without importing it when it is a path."""
    where = spec.rpartition(":")[0]
    if _is_file(where):
        return Path(where).expanduser().resolve()
    found = _find(where)
    origin = getattr(found, "origin", None)
    return Path(origin) if origin and origin not in ("built-in", "frozen") else None


def _find(module: str) -> Any:
    try:
        return importlib.util.find_spec(module)
    except Exception:  # find_spec imports parent packages, which may raise anything
        return None


def source_sha256(spec: str) -> str | None:
    """SHA-256 of the source file behind ``spec`` (``None`` when it has none)."""
    path = source_file(spec)
    if path is None or not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_callable(spec: str, *, field: str) -> Callable[..., Any]:
    """Import ``spec`` and return the callable it names.

    Args:
        spec: ``pkg.module:callable`` or ``path/to/file.py:callable`` (``callable`` may be
            dotted, e.g. ``Class.build``).
        field: The setting being loaded, named in errors (``model`` or ``dataset``).

    Raises:
        ConfigError: The module or file cannot be imported, lacks the name, or the name is not
            callable; the message is one line naming ``spec``.
    """
    where, _, name = spec.rpartition(":")
    module = _load_file(where, spec, field) if _is_file(where) else _import(where, spec, field)
    target: Any = module
    for part in name.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"`{field}` {spec!r} could not be loaded: {where} has no "
                              f"attribute {part!r}.")
        target = getattr(target, part)
    if not callable(target):
        kind = type(target).__name__
        raise ConfigError(f"`{field}` {spec!r} must name a callable, but {name} is "
                          f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind}.")
    return target


def where_raised(exc: BaseException) -> str:
    """`` (file.py:12)``: the innermost frame of a user's code that raised (empty if none), so a
    one-line error still points at the line to fix."""
    import traceback

    ours = Path(__file__).resolve().parents[1]
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "site-packages" not in f.filename and "dist-packages" not in f.filename
              and not Path(f.filename).resolve().is_relative_to(ours)]
    if not frames:
        return ""
    return f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})"


def _import(module: str, spec: str, field: str) -> Any:
    try:
        return importlib.import_module(module)
    except Exception as exc:  # user code may raise anything at import time
        hint = " (is its folder on PYTHONPATH?)" if isinstance(exc, ModuleNotFoundError) else ""
        raise ConfigError(f"`{field}` {spec!r} could not be imported{hint}: "
                          f"{type(exc).__name__}: {one_line(exc)}") from None


def _load_file(where: str, spec: str, field: str) -> Any:
    path = Path(where).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"`{field}` {spec!r} could not be imported: no file at "
                          f"{path}.")
    name = "study_user_" + hashlib.sha256(str(path).encode()).hexdigest()[:16]
    if name in sys.modules:
        return sys.modules[name]
    loader_spec = importlib.util.spec_from_file_location(name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ConfigError(f"`{field}` {spec!r} could not be imported: {path} is not "
                          f"a Python file.")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module  # dataclasses and pickling look a module up by name
    try:
        loader_spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[name]
        if not isinstance(exc, Exception):
            raise
        raise ConfigError(f"`{field}` {spec!r} could not be imported: "
                          f"{type(exc).__name__}: {one_line(exc)}") from None
    return module
