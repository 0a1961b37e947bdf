"""A user's arrays, read and validated: an ``.npz`` file or a loader's ``(X, y)``.

An ``.npz`` holds either ``X`` and ``y`` (the study splits them) or its own split
``x_train, y_train, x_val, y_val``, used as given, so that what differs between the user's
splits (scaling, duplicates) stays visible to ``study doctor``.
"""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path

import numpy as np

from study._validation import no_npz_file
from study.errors import DataError
from study.redact import one_line
from study.training._imports import load_callable, where_raised

__all__ = ["SPLIT_KEYS", "Arrays", "check_x", "check_y", "from_loader", "load_npz"]

SPLIT_KEYS = ("x_train", "y_train", "x_val", "y_val")


@dataclasses.dataclass(frozen=True, eq=False)
class Arrays:
    """Validated arrays: ``x`` float32 ``(N, C, ...)`` and ``y`` int64, or a given split.

    ``non_finite`` lists the rows of ``x`` (or of ``x_train`` and ``x_val``) that held NaN or
    inf when the reader was asked to keep them (set to 0); otherwise they are refused.
    ``names`` are the samples' names where the reader knows them (image paths): those of ``x``
    twice, or of the two splits; else rows are named ``X[i]`` / ``x_train[i]``.
    """

    x: np.ndarray | None = None
    y: np.ndarray | None = None
    split: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
    non_finite: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())
    names: tuple[list[str], list[str]] | None = None


def load_npz(path: Path, *, keep_non_finite: bool = False) -> Arrays:
    """Read and validate ``X, y`` or ``x_train, y_train, x_val, y_val`` from ``path``.

    Raises:
        DataError: A missing, unreadable or malformed file, naming it and what it holds.
    """
    if not path.is_file():
        raise no_npz_file(path)
    # np.load would read a .npy too, and blames pickling for text files; test the format first.
    if not zipfile.is_zipfile(path):
        raise DataError(
            f"`dataset` must be a .npz file (numpy.savez) of X and y, but got {path}, "
            "which is not a zip archive."
        )
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"`dataset` must be a readable .npz file, but got {path} ({exc}).") from exc
    with archive:
        files = set(archive.files)
        if files & set(SPLIT_KEYS) and not set(SPLIT_KEYS) <= files:
            missing = [key for key in SPLIT_KEYS if key not in files]
            raise DataError(
                f"`dataset` must be a .npz file with all of x_train, y_train, x_val and y_val "
                f"(a split of your own), but got {path} without {', '.join(missing)}."
            )
        if set(SPLIT_KEYS) <= files:
            x_train, y_train, x_val, y_val = (_read_array(archive, key) for key in SPLIT_KEYS)
            return _given_split(x_train, y_train, x_val, y_val, keep_non_finite=keep_non_finite)
        missing = [key for key in ("X", "y") if key not in files]
        if missing:
            raise DataError(
                f"`dataset` must be a .npz file with arrays X and y, or x_train, y_train, x_val "
                f"and y_val, but got {path} without {' and '.join(missing)} "
                f"(arrays: {', '.join(sorted(files)) or 'none'})."
            )
        x, y = (_read_array(archive, key) for key in ("X", "y"))
    x, bad = check_x(x, keep_non_finite=keep_non_finite)
    return Arrays(x=x, y=check_y(y, n=len(x)), non_finite=(bad, ()))


def from_loader(spec: str, *, keep_non_finite: bool = False) -> Arrays:
    """Call a loader ``pkg.module:callable`` / ``file.py:callable`` and validate its ``(X, y)``.

    Raises:
        DataError: The loader raised, or returned something other than a pair of arrays.
    """
    loader = load_callable(spec, field="dataset")
    try:
        result = loader()
    except Exception as exc:  # user code may raise anything
        raise DataError(f"`dataset` {spec!r} raised{where_raised(exc)}: {type(exc).__name__}: "
                        f"{one_line(exc)}") from None
    if not isinstance(result, tuple | list) or len(result) != 2:
        length = f" of length {len(result)}" if isinstance(result, tuple | list) else ""
        raise DataError(f"`dataset` {spec!r} must return a pair (X, y), but returned "
                        f"{type(result).__name__}{length}.")
    try:
        x, y = (np.asarray(a) for a in result)
    except Exception as exc:  # e.g. a CUDA tensor or ragged lists
        raise DataError(f"`dataset` {spec!r} must return arrays, but X or y could not be "
                        f"converted: {one_line(exc)}") from None
    x, bad = check_x(x, keep_non_finite=keep_non_finite)
    return Arrays(x=x, y=check_y(y, n=len(x)), non_finite=(bad, ()))


def _given_split(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
                 y_val: np.ndarray, *, keep_non_finite: bool) -> Arrays:
    # The shapes as given: check_x adds the channel axis of an (N, H, W) array.
    given, val_shape = tuple(x_train.shape[1:]), tuple(x_val.shape)
    x_train, bad_train = check_x(x_train, keep_non_finite=keep_non_finite, name="x_train")
    x_val, bad_val = check_x(x_val, keep_non_finite=keep_non_finite, name="x_val")
    if x_train.shape[1:] != x_val.shape[1:]:
        raise DataError(f"`x_val` must have the sample shape of `x_train`, {given}, but got "
                        f"sample shape {val_shape[1:]} (x_val.shape={val_shape}).")
    y_train = check_y(y_train, n=len(x_train), name="y_train", x_name="x_train",
                      min_per_class=1)
    y_val = check_y(y_val, n=len(x_val), name="y_val", x_name="x_val",
                    n_classes=int(y_train.max()) + 1)
    return Arrays(split=(x_train, y_train, x_val, y_val), non_finite=(bad_train, bad_val))


def _read_array(archive: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    try:
        return archive[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        # Object arrays need pickle, which a data file must never be allowed to run.
        raise DataError(
            f"`{key}` must be a numeric array stored without pickle, but got an unreadable "
            f"array ({exc})."
        ) from exc


def check_x(x: np.ndarray, *, keep_non_finite: bool = False,
            name: str = "X") -> tuple[np.ndarray, tuple[int, ...]]:
    """``x`` as float32 ``(N, C, ...)`` and the rows that held NaN or inf (set to 0 when
    ``keep_non_finite``, refused otherwise).

    Raises:
        DataError: Not numeric, not 3-5 dimensional, empty, or non-finite values refused.
    """
    if x.dtype.kind not in "biuf":
        raise DataError(
            f"`{name}` must be a numeric array (bool, int or float), but got "
            f"{name}.dtype={x.dtype}."
        )
    if x.ndim not in (3, 4, 5):
        raise DataError(
            f"`{name}` must have shape (N, H, W), (N, C, H, W) or (N, C, D, H, W), "
            f"but got {name}.shape={x.shape}."
        )
    if x.size == 0:
        raise DataError(f"`{name}` must be non-empty, but got {name}.shape={x.shape}.")
    x = x.astype(np.float32)
    finite = np.isfinite(x).reshape(len(x), -1).all(axis=1)
    bad = tuple(int(i) for i in np.flatnonzero(~finite))
    if bad and not keep_non_finite:
        n_values = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        shown = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
        raise DataError(f"`{name}` must be finite, but got {n_values} NaN/inf values in "
                        f"{len(bad)} samples (rows {shown}); `study doctor` lists them.")
    if bad:
        x[~np.isfinite(x)] = 0.0
    return (x[:, None] if x.ndim == 3 else x), bad


def check_y(y: np.ndarray, *, n: int, name: str = "y", x_name: str = "X",
            n_classes: int | None = None, min_per_class: int = 2) -> np.ndarray:
    """``y`` as int64 labels ``0..K-1``: every class present with ``min_per_class`` samples (a
    stratified split needs 2), or, given ``n_classes`` (a validation split), any label below it.

    Raises:
        DataError: Not 1-D, a length other than ``n``, not integer labels, or labels that
            skip a class.
    """
    if y.ndim != 1:
        raise DataError(f"`{name}` must be 1-D (one label per sample), but got "
                        f"{name}.shape={y.shape}.")
    if len(y) != n:
        raise DataError(f"`{name}` must have the same length as `{x_name}` ({n}), but got "
                        f"len({name})={len(y)}.")
    if y.dtype.kind not in "biuf":
        raise DataError(f"`{name}` must hold integer class labels, but got "
                        f"{name}.dtype={y.dtype}.")
    if y.dtype.kind == "f":
        bad = y[~(np.isfinite(y) & (y == np.round(y)))]
        if bad.size:
            raise DataError(
                f"`{name}` must hold integer class labels, but got {bad.size} non-integer "
                f"values (e.g. {bad[0].item()})."
            )
    y = y.astype(np.int64)
    labels, counts = np.unique(y, return_counts=True)
    if n_classes is not None:
        if labels[0] < 0 or labels[-1] >= n_classes:
            got = (f"only label {labels[0]}" if len(labels) == 1
                   else f"labels {labels[0]}..{labels[-1]}")
            raise DataError(f"`{name}` must hold labels in 0..{n_classes - 1} (the classes of "
                            f"y_train), but got {got}.")
        return y
    if labels[0] != 0 or labels[-1] != len(labels) - 1 or len(labels) < 2:
        shown = ", ".join(str(v) for v in labels[:10]) + (", ..." if len(labels) > 10 else "")
        raise DataError(
            f"`{name}` must hold labels 0..K-1 with K >= 2 and every class present, "
            f"but got labels {{{shown}}}."
        )
    if counts.min() < min_per_class:
        raise DataError(
            f"`{name}` must have at least 2 samples per class (for a stratified split), "
            f"but got {counts.min()} sample of class {labels[counts.argmin()]}."
        )
    return y
