"""Datasets as ready-to-train tensors: split, standardized and moved to the device once.

A dataset is named by a spec string: ``digits`` (scikit-learn's bundled 8x8 digits), ``volumes3d``
(a seeded synthetic 3D shape task), ``npz:PATH`` (a user's file with arrays ``X`` and ``y``),
``imagefolder:PATH`` (one sub-folder of images per class, :mod:`study.training.images`) or a
loader ``pkg.module:callable`` / ``path/to/file.py:callable`` called without arguments and
returning ``(X, y)`` in the ``npz`` shapes.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from study._validation import fail
from study.errors import DataError
from study.redact import one_line
from study.training._imports import load_callable, where_raised
from study.training.images import Progress, load_image_folder
from study.training.specs import DATASETS, check_dataset_spec, check_image_size

__all__ = ["DATASETS", "TensorData", "check_dataset_spec", "check_image_size", "load_dataset"]

# Enough for a 3D CNN to learn the task within a few epochs on a CPU, small enough to stay fast.
_VOLUMES_N = 512
_VOLUMES_SIZE = 16
_STD_FLOOR = 1e-8


@dataclass(frozen=True, eq=False)
class TensorData:
    """A train/validation split as tensors on one device.

    ``x_*`` are float32 of shape ``(N, C, H, W)`` (2D) or ``(N, C, D, H, W)`` (3D); ``y_*`` are
    int64 class labels in ``0 .. n_classes - 1``.
    """

    name: str
    x_train: torch.Tensor = field(repr=False)
    y_train: torch.Tensor = field(repr=False)
    x_val: torch.Tensor = field(repr=False)
    y_val: torch.Tensor = field(repr=False)
    n_classes: int

    @property
    def spatial_dims(self) -> int:
        """2 for images, 3 for volumes."""
        return self.x_train.ndim - 2

    @property
    def in_channels(self) -> int:
        """Number of input channels ``C``."""
        return int(self.x_train.shape[1])

    @property
    def input_size(self) -> tuple[int, ...]:
        """Spatial sizes, e.g. ``(8, 8)`` or ``(16, 16, 16)``."""
        return tuple(int(s) for s in self.x_train.shape[2:])

    @property
    def n_train(self) -> int:
        """Number of training samples."""
        return int(self.x_train.shape[0])

    @property
    def n_val(self) -> int:
        """Number of validation samples."""
        return int(self.x_val.shape[0])


def load_dataset(
    spec: str, *, seed: int, val_fraction: float = 0.2, device: str | torch.device = "cpu",
    image_size: str | None = None, progress: Progress | None = None,
) -> TensorData:
    """Load a dataset, split it, standardize it and move it to ``device``.

    The split is stratified and shuffled with ``random_state=seed``. Each channel is standardized
    with the mean and std of the training split only, applied identically to both splits.

    Args:
        spec: A dataset spec, see :func:`check_dataset_spec`.
        seed: Seed of the split (and of the synthetic data of ``volumes3d``).
        val_fraction: Fraction of the samples held out for validation, in (0, 1).
        device: Torch device of the returned tensors.
        image_size: ``imagefolder:`` only: ``"S"`` or ``"HxW"``; default the most common size.
        progress: ``imagefolder:`` only: called as ``progress(done, total)`` while a large
            folder is decoded.

    Returns:
        The split as float32 inputs and int64 labels on ``device``.

    Raises:
        ConfigError: ``spec``, ``seed`` or ``val_fraction`` is invalid.
        DataError: A file, folder or loader is missing, unreadable or malformed, or the data is
            too small to split.
    """
    check_dataset_spec(spec)
    size = check_image_size(spec, image_size)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        fail("seed", seed, "an integer >= 0")
    if not 0 < val_fraction < 1:
        fail("val_fraction", val_fraction, "in (0, 1)")
    if spec == "digits":
        x, y = _digits()
    elif spec == "volumes3d":
        x, y = _volumes3d(seed)
    elif spec.startswith("npz:"):
        x, y = _load_npz(Path(spec[4:]).expanduser())
    elif spec.startswith("imagefolder:"):
        root = Path(spec[len("imagefolder:"):]).expanduser()
        x, y, _ = load_image_folder(root, image_size=size, progress=progress)
        x = x.astype(np.float32)
    else:
        x, y = _from_loader(spec)
    n_classes = int(y.max()) + 1
    x_train, x_val, y_train, y_val = _split(x, y, n_classes, seed=seed, val_fraction=val_fraction)
    axes = (0, *range(2, x.ndim))
    mean = x_train.mean(axis=axes, keepdims=True, dtype=np.float64)
    std = np.maximum(x_train.std(axis=axes, keepdims=True, dtype=np.float64), _STD_FLOOR)

    def to_x(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(((a - mean) / std).astype(np.float32)).to(device)

    def to_y(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a.astype(np.int64)).to(device)

    return TensorData(spec, to_x(x_train), to_y(y_train), to_x(x_val), to_y(y_val), n_classes)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    # Imported here: config validation imports this module and should not pay for sklearn.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data.reshape(-1, 1, 8, 8).astype(np.float32), bunch.target.astype(np.int64)


def _volumes3d(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy volumes holding one ball (class 0) or one axis-aligned cube (class 1)."""
    rng = np.random.default_rng(seed)
    n, size = _VOLUMES_N, _VOLUMES_SIZE
    y = rng.permutation(np.arange(n) % 2)
    radius = rng.uniform(3.0, 5.0, size=n)
    # Sub-voxel centres make the expected voxel count equal the continuous volume for both shapes.
    centre = rng.uniform(radius[:, None], size - 1 - radius[:, None], size=(n, 3))
    grid = np.indices((size,) * 3, dtype=np.float32)
    offset = grid[None] - centre[:, :, None, None, None].astype(np.float32)
    r = radius[:, None, None, None]
    ball = (offset**2).sum(axis=1) <= r**2
    # Half side h with (2h)^3 = 4/3 pi r^3: the cube has the ball's volume, hence its brightness.
    cube = np.abs(offset).max(axis=1) <= (np.pi / 6) ** (1 / 3) * r
    shape = np.where(y[:, None, None, None] == 0, ball, cube)
    x = rng.normal(0.0, 0.5, size=shape.shape).astype(np.float32) + shape
    return x[:, None], y.astype(np.int64)


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read and validate ``X`` and ``y``; return ``X`` as ``(N, C, ...)`` float32, ``y`` int64."""
    if not path.is_file():
        raise DataError(f"`dataset` must name an existing .npz file, but got no file at {path}.")
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
        missing = [key for key in ("X", "y") if key not in archive.files]
        if missing:
            raise DataError(
                f"`dataset` must be a .npz file with arrays X and y, but got {path} "
                f"without {' and '.join(missing)} (arrays: {', '.join(archive.files) or 'none'})."
            )
        x, y = (_read_array(archive, key) for key in ("X", "y"))
    return _check_x(x), _check_y(y, n=len(x))


def _from_loader(spec: str) -> tuple[np.ndarray, np.ndarray]:
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
    return _check_x(x), _check_y(y, n=len(x))


def _read_array(archive: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    try:
        return archive[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        # Object arrays need pickle, which a data file must never be allowed to run.
        raise DataError(
            f"`{key}` must be a numeric array stored without pickle, but got an unreadable "
            f"array ({exc})."
        ) from exc


def _check_x(x: np.ndarray) -> np.ndarray:
    if x.dtype.kind not in "biuf":
        raise DataError(
            f"`X` must be a numeric array (bool, int or float), but got X.dtype={x.dtype}."
        )
    if x.ndim not in (3, 4, 5):
        raise DataError(
            "`X` must have shape (N, H, W), (N, C, H, W) or (N, C, D, H, W), "
            f"but got X.shape={x.shape}."
        )
    if x.size == 0:
        raise DataError(f"`X` must be non-empty, but got X.shape={x.shape}.")
    n_bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
    if n_bad:
        raise DataError(f"`X` must be finite, but got {n_bad} NaN/inf values.")
    x = x.astype(np.float32)
    return x[:, None] if x.ndim == 3 else x


def _check_y(y: np.ndarray, *, n: int) -> np.ndarray:
    if y.ndim != 1:
        raise DataError(f"`y` must be 1-D (one label per sample), but got y.shape={y.shape}.")
    if len(y) != n:
        raise DataError(f"`y` must have the same length as `X` ({n}), but got len(y)={len(y)}.")
    if y.dtype.kind not in "biuf":
        raise DataError(f"`y` must hold integer class labels, but got y.dtype={y.dtype}.")
    if y.dtype.kind == "f":
        bad = y[~(np.isfinite(y) & (y == np.round(y)))]
        if bad.size:
            raise DataError(
                f"`y` must hold integer class labels, but got {bad.size} non-integer values "
                f"(e.g. {bad[0]!r})."
            )
    y = y.astype(np.int64)
    labels, counts = np.unique(y, return_counts=True)
    if labels[0] != 0 or labels[-1] != len(labels) - 1 or len(labels) < 2:
        shown = ", ".join(str(v) for v in labels[:10]) + (", ..." if len(labels) > 10 else "")
        raise DataError(
            "`y` must hold labels 0..K-1 with K >= 2 and every class present, "
            f"but got labels {{{shown}}}."
        )
    if counts.min() < 2:
        raise DataError(
            "`y` must have at least 2 samples per class (for a stratified split), "
            f"but got {counts.min()} sample of class {labels[counts.argmin()]}."
        )
    return y


def _split(
    x: np.ndarray, y: np.ndarray, n_classes: int, *, seed: int, val_fraction: float
) -> list[np.ndarray]:
    from sklearn.model_selection import train_test_split

    # Same arithmetic as scikit-learn, checked here to turn its ValueError into a clear message.
    n_val = math.ceil(val_fraction * len(y))
    n_train = len(y) - n_val
    if min(n_val, n_train) < n_classes:
        raise DataError(
            f"`val_fraction` must leave at least one sample per class ({n_classes}) on both "
            f"sides, but got val_fraction={val_fraction!r}: {n_train} train and {n_val} val "
            f"samples out of {len(y)}."
        )
    return train_test_split(
        x, y, test_size=val_fraction, random_state=seed, shuffle=True, stratify=y
    )
