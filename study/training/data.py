"""Datasets as ready-to-train tensors: split, standardized and moved to the device once.

A dataset is named by a spec string: ``digits`` (scikit-learn's bundled 8x8 digits), ``volumes3d``
(a seeded synthetic 3D shape task), ``npz:PATH`` (a user's file with arrays ``X`` and ``y``, or
their own split ``x_train, y_train, x_val, y_val``: :mod:`study.training.arrays`),
``imagefolder:PATH`` (one sub-folder of images per class, or ``train/`` and ``val/`` folders of
them: :mod:`study.training.images`) or a
loader ``pkg.module:callable`` / ``path/to/file.py:callable`` called without arguments and
returning ``(X, y)`` in the ``npz`` shapes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from study._validation import fail
from study.errors import DataError
from study.training.arrays import Arrays, from_loader, load_npz
from study.training.images import Progress, is_split_folder, load_image_folder, load_image_split
from study.training.specs import DATASETS, check_dataset_spec, check_image_size

__all__ = ["DATASETS", "DataOrigin", "TensorData", "check_dataset_spec", "check_image_size",
           "load_dataset"]

# Enough for a 3D CNN to learn the task within a few epochs on a CPU, small enough to stay fast.
_VOLUMES_N = 512
_VOLUMES_SIZE = 16
_STD_FLOOR = 1e-8


@dataclass(frozen=True, eq=False)
class DataOrigin:
    """Where each sample came from, in the user's terms.

    Attributes:
        given_split: The split is the user's own (``x_train, ...`` in an ``npz``, or ``train/``
            and ``val/`` image folders), used as given.
        train_names: Each training sample's name: ``X[17]`` / ``x_train[17]`` (a row of the
            user's arrays) or an image path relative to the folder.
        val_names: The same for the validation split.
        non_finite_train: Positions in the training split of samples that held NaN or inf
            (kept as 0 when the loader was asked to keep them; refused otherwise).
        non_finite_val: The same for the validation split.
        train_rows: Where each training sample lies in the user's ``X`` (a made split of an
            array file); empty for a split used as given and for image folders (listed class
            by class, an order that says nothing of the user's).
    """

    given_split: bool
    train_names: tuple[str, ...] = field(repr=False)
    val_names: tuple[str, ...] = field(repr=False)
    non_finite_train: tuple[int, ...] = ()
    non_finite_val: tuple[int, ...] = ()
    train_rows: tuple[int, ...] = field(default=(), repr=False)


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
    origin: DataOrigin | None = field(default=None, repr=False)

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
    keep_non_finite: bool = False,
) -> TensorData:
    """Load a dataset, split it, standardize it and move it to ``device``.

    The split is stratified and shuffled with ``random_state=seed``, unless the user gave their
    own (``npz`` with ``x_train, y_train, x_val, y_val``; an image folder with ``train/`` and
    ``val/``), which is used as given. Each channel is standardized with the mean and std of
    the training split only, applied identically to both splits.

    Args:
        spec: A dataset spec, see :func:`check_dataset_spec`.
        seed: Seed of the split (and of the synthetic data of ``volumes3d``).
        val_fraction: Fraction of the samples held out for validation, in (0, 1).
        device: Torch device of the returned tensors.
        image_size: ``imagefolder:`` only: ``"S"`` or ``"HxW"``; default the most common size.
        progress: ``imagefolder:`` only: called as ``progress(done, total)`` while a large
            folder is decoded.
        keep_non_finite: A user's samples holding NaN or inf are kept as 0 and listed in
            ``origin`` (``study doctor``), instead of refused.

    Returns:
        The split as float32 inputs and int64 labels on ``device``, with ``origin`` naming
        each sample.

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
    found = _read(spec, seed=seed, size=size, progress=progress, keep=keep_non_finite)
    if found.split is not None:
        x_train, y_train, x_val, y_val = found.split
        n_classes = int(y_train.max()) + 1
        train_rows, val_rows = np.arange(len(y_train)), np.arange(len(y_val))
    else:
        n_classes = int(found.y.max()) + 1
        train_rows, val_rows = _split(found.y, n_classes, seed=seed, val_fraction=val_fraction)
        x_train, y_train = found.x[train_rows], found.y[train_rows]
        x_val, y_val = found.x[val_rows], found.y[val_rows]
    axes = (0, *range(2, x_train.ndim))
    mean = x_train.mean(axis=axes, keepdims=True, dtype=np.float64)
    std = np.maximum(x_train.std(axis=axes, keepdims=True, dtype=np.float64), _STD_FLOOR)

    def to_x(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(((a - mean) / std).astype(np.float32)).to(device)

    def to_y(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a.astype(np.int64)).to(device)

    origin = _origin(found, train_rows, val_rows)
    return TensorData(spec, to_x(x_train), to_y(y_train), to_x(x_val), to_y(y_val), n_classes,
                      origin=origin)


def _read(spec: str, *, seed: int, size: tuple[int, int] | None, progress: Progress | None,
          keep: bool) -> Arrays:
    if spec == "digits":
        return Arrays(*_digits())
    if spec == "volumes3d":
        return Arrays(*_volumes3d(seed))
    if spec.startswith("npz:"):
        return load_npz(Path(spec[4:]).expanduser(), keep_non_finite=keep)
    if spec.startswith("imagefolder:"):
        root = Path(spec[len("imagefolder:"):]).expanduser()
        if is_split_folder(root):
            (x_train, y_train, x_val, y_val), names = load_image_split(
                root, image_size=size, progress=progress)
            return Arrays(split=(x_train.astype(np.float32), y_train,
                                 x_val.astype(np.float32), y_val), names=names)
        x, y, _, files = load_image_folder(root, image_size=size, progress=progress)
        return Arrays(x.astype(np.float32), y, names=(files, files))
    return from_loader(spec, keep_non_finite=keep)


def _origin(found: Arrays, train_rows: np.ndarray,
            val_rows: np.ndarray) -> DataOrigin:
    """Name each sample as the user finds it: a row of their arrays or an image file."""
    given = found.split is not None
    if found.names is not None:
        train, val = found.names
    else:
        train, val = ("x_train", "x_val") if given else ("X", "X")
        train = [f"{train}[{i}]" for i in range(int(train_rows.max()) + 1)]
        val = [f"{val}[{i}]" for i in range(int(val_rows.max()) + 1)]
    bad_train, bad_val = found.non_finite
    if not given:  # rows of X: find where the split put them
        position = np.full(len(found.y), -1)
        position[train_rows] = np.arange(len(train_rows))
        where_val = np.full(len(found.y), -1)
        where_val[val_rows] = np.arange(len(val_rows))
        bad_train, bad_val = (tuple(int(p[i]) for i in bad_train if p[i] >= 0)
                              for p in (position, where_val))
    return DataOrigin(given_split=given, train_names=tuple(train[i] for i in train_rows),
                      val_names=tuple(val[i] for i in val_rows),
                      non_finite_train=tuple(sorted(bad_train)),
                      non_finite_val=tuple(sorted(bad_val)),
                      # Rows of the user's X: a folder's listing is by class by construction.
                      train_rows=() if given or found.names is not None
                      else tuple(int(i) for i in train_rows))


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


def _split(y: np.ndarray, n_classes: int, *, seed: int,
           val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The rows of the training and the validation split: stratified, shuffled by ``seed``."""
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
    train_rows, val_rows = train_test_split(
        np.arange(len(y)), test_size=val_fraction, random_state=seed, shuffle=True, stratify=y
    )
    return train_rows, val_rows
