"""Tests of image folders (real PNG and JPEG files written with Pillow) and of user data
loaders: layout, size and colour rules, the cache, progress, and one-line errors."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from study.errors import ConfigError, DataError
from study.training import check_image_size, load_dataset
from study.training import images as images_module
from study.training.images import cache_dir, load_image_folder, parse_image_size


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDY_CACHE_DIR", str(tmp_path / "cache"))


def write_folder(root: Path, counts: dict[str, int], *, size=(10, 12), mode="RGB",
                 suffix=".png", seed=0) -> Path:
    """``counts`` images per class of ``size`` (H, W); class ``i`` has brightness ``40 i``."""
    rng = np.random.default_rng(seed)
    for label, (name, n) in enumerate(counts.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            channels = 3 if mode == "RGB" else 1
            pixels = (40 * label + rng.integers(0, 30, size=(*size, channels))).astype(np.uint8)
            image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)
            image.save(folder / f"{i:03d}{suffix}")
    return root


# --- layout ----------------------------------------------------------------------------------


def test_classes_are_sorted_subfolders_and_labels_follow_them(tmp_path):
    root = write_folder(tmp_path / "data", {"zebra": 3, "ant": 2, "moth": 4})
    x, y, classes, _ = load_image_folder(root)
    assert classes == ["ant", "moth", "zebra"]
    assert x.shape == (9, 3, 10, 12) and x.dtype == np.uint8
    assert list(y) == [0, 0, 1, 1, 1, 1, 2, 2, 2]
    # 'ant' was written as class 1 of the dict (brightness 40..69): label order is by name.
    assert x[y == 0].min() >= 40 and x[y == 0].max() < 70


def test_pixels_are_read_exactly_from_png(tmp_path):
    root = write_folder(tmp_path / "data", {"a": 2, "b": 2})
    x, _, _, _ = load_image_folder(root)
    expected = np.asarray(Image.open(root / "a" / "000.png")).transpose(2, 0, 1)
    assert np.array_equal(x[0], expected)


def test_jpeg_files_and_upper_case_suffixes_are_read(tmp_path):
    root = write_folder(tmp_path / "data", {"a": 2}, suffix=".JPG")
    write_folder(root, {"b": 2}, suffix=".jpeg")
    x, y, _, _ = load_image_folder(root)
    assert x.shape[0] == 4 and sorted(set(y)) == [0, 1]


def test_hidden_entries_other_files_and_empty_folders_are_skipped(tmp_path):
    root = write_folder(tmp_path / "data", {"a": 2, "b": 2})
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "a" / ".DS_Store").write_bytes(b"\0\1")
    (root / ".cache").mkdir()
    (root / "empty").mkdir()
    (root / "README.md").write_text("top-level files are not classes")
    x, _, classes, _ = load_image_folder(root)
    assert classes == ["a", "b"] and x.shape[0] == 4


# --- size and colour -------------------------------------------------------------------------


def test_default_size_is_the_most_common_one(tmp_path):
    root = write_folder(tmp_path / "data", {"a": 3, "b": 2}, size=(10, 12))
    write_folder(root, {"b": 1}, size=(20, 7), seed=1)  # overwrites b/000.png
    x, _, _, _ = load_image_folder(root)
    assert x.shape[2:] == (10, 12)


def test_image_size_resizes_every_image(tmp_path):
    root = write_folder(tmp_path / "data", {"a": 2, "b": 2})
    x, _, _, _ = load_image_folder(root, image_size=(5, 7))
    assert x.shape == (4, 3, 5, 7)


def test_all_grayscale_gives_one_channel(tmp_path):
    root = write_folder(tmp_path / "data", {"a": 2, "b": 2}, mode="L")
    assert load_image_folder(root)[0].shape[1] == 1


def test_one_colour_image_makes_every_image_rgb(tmp_path):
    root = write_folder(tmp_path / "data", {"a": 2, "b": 2}, mode="L")
    write_folder(root, {"c": 2}, mode="RGB")
    x, _, _, _ = load_image_folder(root)
    assert x.shape[1] == 3
    gray = x[0]
    assert np.array_equal(gray[0], gray[1]) and np.array_equal(gray[1], gray[2])


@pytest.mark.parametrize(("text", "expected"), [("32", (32, 32)), ("50x55", (50, 55)),
                                                ("50X55", (50, 55)), (" 8 x 9 ", (8, 9))])
def test_image_size_parses_one_number_or_h_by_w(text, expected):
    assert parse_image_size(text) == expected


@pytest.mark.parametrize("text", ["0", "0x5", "5x0", "-3", "5x", "x5", "5x5x5", "big", ""])
def test_bad_image_size_is_rejected(text):
    with pytest.raises(ConfigError, match=r"`image_size` must be one positive number or HxW"):
        check_image_size("imagefolder:/x", text)


def test_image_size_for_another_dataset_is_rejected():
    with pytest.raises(ConfigError, match=r"`image_size` must be unset for dataset='digits'"):
        check_image_size("digits", "32")


# --- errors: one line naming the folder, class or file ---------------------------------------


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match=r"must name a folder of class sub-folders, but got "
                                        r"imagefolder:.*nope, which is not a folder"):
        load_image_folder(tmp_path / "nope")


def test_one_class_is_rejected(tmp_path):
    root = write_folder(tmp_path / "data", {"only": 3})
    with pytest.raises(DataError, match=r"at least 2 class sub-folders .* but got 1 \('only'\)"):
        load_image_folder(root)


def test_a_class_with_one_image_is_named(tmp_path):
    root = write_folder(tmp_path / "data", {"a": 2, "lonely": 1})
    with pytest.raises(DataError, match=r"class 'lonely' must hold at least 2 images .* holds 1"):
        load_image_folder(root)


def test_a_class_with_two_images_is_accepted(tmp_path):
    root = write_folder(tmp_path / "data", {"a": 2, "b": 2})
    assert load_image_folder(root)[0].shape[0] == 4


@pytest.mark.parametrize("content", [b"", b"not a png at all"])
def test_an_unreadable_file_is_named(tmp_path, content):
    root = write_folder(tmp_path / "data", {"a": 2, "b": 2})
    (root / "b" / "broken.png").write_bytes(content)
    with pytest.raises(DataError, match=r"image .*b/broken.png could not be read"):
        load_image_folder(root)


def test_a_truncated_file_is_named(tmp_path):
    root = write_folder(tmp_path / "data", {"a": 2, "b": 2}, size=(40, 40))
    path = root / "a" / "001.png"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match=r"image .*a/001.png could not be read"):
        load_image_folder(root)


# --- cache and progress ----------------------------------------------------------------------


def test_a_second_load_reads_the_cache(tmp_path):
    root = write_folder(tmp_path / "data", {"a": 2, "b": 2})
    first, _, _, _ = load_image_folder(root)
    (cached,) = cache_dir().glob("imagefolder-*.npy")
    np.save(cached, np.full_like(first, 7))  # proves the second load did not decode
    second, _, _, _ = load_image_folder(root)
    assert (second == 7).all()


def test_a_changed_file_invalidates_the_cache(tmp_path):
    root = write_folder(tmp_path / "data", {"a": 2, "b": 2})
    load_image_folder(root)
    path = root / "a" / "000.png"
    Image.new("RGB", (12, 10), (255, 0, 0)).save(path)
    os.utime(path, ns=(1, 1))
    x, _, _, _ = load_image_folder(root)
    assert tuple(x[0, :, 0, 0]) == (255, 0, 0)
    assert len(list(cache_dir().glob("imagefolder-*.npy"))) == 2


def test_an_unwritable_cache_still_loads(tmp_path, monkeypatch):
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("")
    monkeypatch.setenv("STUDY_CACHE_DIR", str(blocker / "cache"))
    root = write_folder(tmp_path / "data", {"a": 2, "b": 2})
    assert load_image_folder(root)[0].shape[0] == 4


def test_large_folders_report_progress_small_ones_do_not(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "data", {"a": 30, "b": 30})
    calls: list[tuple[int, int]] = []
    load_image_folder(root, progress=lambda done, total: calls.append((done, total)))
    assert calls == []
    monkeypatch.setattr(images_module, "PROGRESS_MIN_FILES", 40)
    load_image_folder(root, image_size=(4, 4), progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (60, 60) and len(calls) >= 10
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


# --- through load_dataset --------------------------------------------------------------------


def test_load_dataset_splits_and_standardizes_an_image_folder(tmp_path):
    root = write_folder(tmp_path / "data", {"a": 10, "b": 10, "c": 10})
    data = load_dataset(f"imagefolder:{root}", seed=0, image_size="6x8")
    assert data.input_size == (6, 8) and data.in_channels == 3 and data.n_classes == 3
    assert data.n_train + data.n_val == 30
    assert abs(float(data.x_train.mean())) < 1e-5


LOADER = """
import numpy as np
def load():
    rng = np.random.default_rng(0)
    return rng.normal(size=(30, 2, 5, 5)), np.arange(30) % 3
def bad_shape():
    return np.zeros((30, 5)), np.arange(30) % 3
def not_a_pair():
    return np.zeros((30, 1, 5, 5))
def raises():
    raise OSError("disk gone")
"""


def test_a_loader_returns_x_and_y(tmp_path):
    (tmp_path / "loader.py").write_text(textwrap.dedent(LOADER))
    data = load_dataset(f"{tmp_path / 'loader.py'}:load", seed=0)
    assert data.in_channels == 2 and data.n_classes == 3 and data.input_size == (5, 5)


@pytest.mark.parametrize(("name", "message"), [
    ("bad_shape", r"`X` must have shape \(N, H, W\), \(N, C, H, W\) or \(N, C, D, H, W\)"),
    ("not_a_pair", r"`dataset` '.*loader.py:not_a_pair' must return a pair \(X, y\), but "
                   r"returned ndarray"),
    ("raises", r"`dataset` '.*loader.py:raises' raised \(loader.py:11\): OSError: disk gone"),
])
def test_a_bad_loader_is_one_line(tmp_path, name, message):
    (tmp_path / "loader.py").write_text(textwrap.dedent(LOADER))
    with pytest.raises(DataError, match=message):
        load_dataset(f"{tmp_path / 'loader.py'}:{name}", seed=0)
