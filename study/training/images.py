"""Image folders: ``ROOT/<class>/<image>.png|.jpg|.jpeg``, torchvision's ImageFolder layout.

Classes are the sub-folders in sorted order (labels 0..K-1); hidden entries and files of other
types are skipped. Every image is decoded with Pillow (EXIF orientation applied), resized to one
size (bilinear) and stacked into one ``uint8`` array: RGB unless every image is grayscale. The
array is cached on disk (keyed by the files' names, sizes and modification times and the target
size), so workers and later sessions decode a folder once and open none of its images again.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from study._validation import not_a_folder
from study.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "cache_dir", "is_split_folder", "load_image_folder",
           "load_image_split", "parse_image_size"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Below this many files decoding takes a second or two: no progress lines.
PROGRESS_MIN_FILES = 500
_GRAY_MODES = ("1", "L", "LA", "I", "F")
_CACHE_VERSION = 2
_SIZE_RE = re.compile(r"^\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?$")

Progress = Callable[[int, int], None]


def parse_image_size(text: str) -> tuple[int, int] | None:
    """``"32"`` -> ``(32, 32)``, ``"50x55"`` -> ``(50, 55)`` (height x width); else ``None``."""
    match = _SIZE_RE.match(text) if isinstance(text, str) else None
    if match is None:
        return None
    h = int(match.group(1))
    w = int(match.group(2)) if match.group(2) else h
    return (h, w) if h >= 1 and w >= 1 else None


def cache_dir() -> Path:
    """``$STUDY_CACHE_DIR``, else ``$XDG_CACHE_HOME/study``, else ``~/.cache/study``."""
    if os.environ.get("STUDY_CACHE_DIR"):
        return Path(os.environ["STUDY_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "study"


def load_image_folder(
    root: Path, *, image_size: tuple[int, int] | None = None, progress: Progress | None = None,
    validation: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Decode a folder of class sub-folders into ``X (N, C, H, W) uint8`` and ``y (N,) int64``.

    Args:
        root: The folder holding one sub-folder per class.
        image_size: ``(H, W)`` to resize to; ``None`` takes the most common size.
        progress: Called as ``progress(done, total)`` while decoding folders of
            :data:`PROGRESS_MIN_FILES` or more images.
        validation: A given validation split: one class and one image per class suffice.

    Returns:
        The images, their labels, the class names (label ``i`` is ``classes[i]``) and each
        image's path relative to ``root``.

    Raises:
        DataError: The folder is missing, has fewer than two classes, a class has fewer than
            two images, or an image cannot be read; the message names the folder or file.
    """
    files, labels, classes = _list(root, validation=validation)
    names = [str(path.relative_to(root)) for path in files]
    # The files (names, sizes, times) and the requested size decide the decoded array, so a
    # cached one is found without opening a single image.
    key = _cache_key(root, files, image_size)
    cached = _read_cache(key)
    if cached is not None and len(cached) == len(files):
        return cached, np.asarray(labels, dtype=np.int64), classes, names
    headers = [_header(path) for path in files]
    size = image_size or collections.Counter((h, w) for h, w, _ in headers).most_common(1)[0][0]
    gray = all(mode in _GRAY_MODES or mode.startswith("I;16") for _, _, mode in headers)
    x = np.empty((len(files), 1 if gray else 3, *size), dtype=np.uint8)
    report = progress if progress is not None and len(files) >= PROGRESS_MIN_FILES else None
    step = max(1, len(files) // 20)
    for i, path in enumerate(files):
        pixels = _decode(path, size, "L" if gray else "RGB")
        x[i] = pixels[None] if gray else pixels.transpose(2, 0, 1)
        if report is not None and ((i + 1) % step == 0 or i + 1 == len(files)):
            report(i + 1, len(files))
    _write_cache(key, x)
    return x, np.asarray(labels, dtype=np.int64), classes, names


def load_image_split(
    root: Path, *, image_size: tuple[int, int] | None = None, progress: Progress | None = None,
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[list[str], list[str]]]:
    """Decode ``root/train`` and ``root/val`` (the user's own split) into ``x_train, y_train,
    x_val, y_val`` at one size (the training images' most common one by default), and each
    image's path relative to ``root``; a validation class is labelled by its name among the
    training classes.

    Raises:
        DataError: Either folder is malformed, or ``val/`` holds a class ``train/`` has not.
    """
    x_train, y_train, classes, train_names = load_image_folder(
        root / "train", image_size=image_size, progress=progress)
    size = (int(x_train.shape[2]), int(x_train.shape[3]))
    x_val, y_val, val_classes, val_names = load_image_folder(
        root / "val", image_size=size, progress=progress, validation=True)
    unknown = [c for c in val_classes if c not in classes]
    if unknown:
        raise DataError(f"`dataset` imagefolder:{root} must hold in val/ only classes of train/ "
                        f"({', '.join(classes)}), but val/ also holds {', '.join(unknown)}.")
    if x_val.shape[1] != x_train.shape[1]:  # one split all grayscale, the other not
        x_train, x_val = (np.repeat(a, 3, axis=1) if a.shape[1] == 1 else a
                          for a in (x_train, x_val))
    to_train = np.asarray([classes.index(c) for c in val_classes], dtype=np.int64)
    return ((x_train, y_train, x_val, to_train[y_val]),
            ([f"train/{n}" for n in train_names], [f"val/{n}" for n in val_names]))


def is_split_folder(root: Path) -> bool:
    """``root`` holds the user's own split: ``train/`` and ``val/`` sub-folders, each of class
    sub-folders (any other folder beside them, such as ``test/``, is ignored)."""
    return (root / "train").is_dir() and (root / "val").is_dir()


def _list(root: Path, *, validation: bool = False) -> tuple[list[Path], list[int], list[str]]:
    if not root.is_dir():
        raise not_a_folder(root)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files: list[Path] = []
    labels: list[int] = []
    classes: list[str] = []
    for folder in folders:
        images = sorted(p for p in folder.iterdir() if p.is_file() and not
                        p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            continue  # torchvision skips empty class folders too
        if len(images) < 2 and not validation:
            raise DataError(f"class {folder.name!r} must hold at least 2 images (for a "
                            f"stratified split), but {folder} holds {len(images)}.")
        files += images
        labels += [len(classes)] * len(images)
        classes.append(folder.name)
    least = 1 if validation else 2
    if len(classes) < least:
        found = ", ".join(repr(c) for c in classes) or "none"
        raise DataError(f"`dataset` imagefolder:{root} must hold at least {least} class "
                        f"sub-folder{'s' if least > 1 else ''} "
                        f"of {'/'.join(s[1:] for s in IMAGE_SUFFIXES)} images, but got "
                        f"{len(classes)} ({found}).")
    return files, labels, classes


def _unreadable(path: Path, exc: Exception) -> DataError:
    return DataError(f"image {path} could not be read: {type(exc).__name__}: {exc}")


def _header(path: Path) -> tuple[int, int, str]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            orientation = im.getexif().get(0x0112, 1)  # EXIF 5..8 rotate by 90 degrees
            w, h = im.size
            mode = im.mode
    except Exception as exc:  # Pillow raises many types for a bad file
        raise _unreadable(path, exc) from None
    return (w, h, mode) if orientation in (5, 6, 7, 8) else (h, w, mode)


def _decode(path: Path, size: tuple[int, int], mode: str) -> np.ndarray:
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert(mode)
            if im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except Exception as exc:  # truncated data surfaces only here
        raise _unreadable(path, exc) from None


def _cache_key(root: Path, files: list[Path], image_size: tuple[int, int] | None) -> str:
    digest = hashlib.sha256()
    requested = list(image_size) if image_size else "most common"
    digest.update(json.dumps([_CACHE_VERSION, str(root.resolve()), requested]).encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def _read_cache(key: str) -> np.ndarray | None:
    path = cache_dir() / f"imagefolder-{key}.npy"
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None


def _write_cache(key: str, x: np.ndarray) -> None:
    folder = cache_dir()
    tmp: str | None = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Write then rename: concurrent workers never read a half-written file.
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".npy.tmp", delete=False) as fh:
            tmp = fh.name
            np.save(fh, x, allow_pickle=False)
        os.replace(tmp, folder / f"imagefolder-{key}.npy")
    except OSError:  # a read-only or full cache costs a second decode, never the study
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
