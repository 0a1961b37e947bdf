"""A user's own train/validation split (``npz`` with ``x_train, y_train, x_val, y_val``; image
folders ``train/`` and ``val/``) is used as given, and every sample keeps its user-facing name."""

from __future__ import annotations

import numpy as np
import pytest

from study.errors import DataError
from study.training import load_dataset
from tests.training_tests.test_images import write_folder


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDY_CACHE_DIR", str(tmp_path / "cache"))


def _split_npz(tmp_path, *, scale_val=1.0, **override):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.normal(size=(30, 1, 4, 4)), "y_train": np.arange(30) % 3,
              "x_val": scale_val * rng.normal(size=(12, 1, 4, 4)), "y_val": np.arange(12) % 3}
    arrays.update(override)
    path = tmp_path / "split.npz"
    np.savez(path, **arrays)
    return f"npz:{path}", arrays


def test_npz_split_is_used_as_given_in_its_order(tmp_path):
    spec, arrays = _split_npz(tmp_path)
    data = load_dataset(spec, seed=5, val_fraction=0.5)
    assert (data.n_train, data.n_val) == (30, 12)
    np.testing.assert_array_equal(data.y_train.numpy(), arrays["y_train"])
    np.testing.assert_array_equal(data.y_val.numpy(), arrays["y_val"])
    assert data.origin.given_split
    assert data.origin.train_names[:2] == ("x_train[0]", "x_train[1]")
    assert data.origin.val_names[-1] == "x_val[11]"


def test_npz_split_standardizes_both_with_training_statistics(tmp_path):
    spec, _ = _split_npz(tmp_path, scale_val=3.0)
    data = load_dataset(spec, seed=0)
    assert data.x_train.std().item() == pytest.approx(1.0, abs=0.01)
    # The validation split's own scale survives: the mismatch stays visible.
    assert data.x_val.std().item() > 2.0


def test_npz_with_x_and_y_keeps_the_seeded_split_and_names_rows(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 4, 4)).astype(np.float32), np.arange(40) % 2
    path = tmp_path / "xy.npz"
    np.savez(path, X=x, y=y)
    data = load_dataset(f"npz:{path}", seed=1)
    assert not data.origin.given_split
    rows = [int(name[2:-1]) for name in data.origin.train_names]
    np.testing.assert_array_equal(data.y_train.numpy(), y[rows])
    assert sorted(rows + [int(n[2:-1]) for n in data.origin.val_names]) == list(range(40))


def test_npz_split_validation_label_outside_training_classes_is_refused(tmp_path):
    spec, _ = _split_npz(tmp_path, y_val=np.arange(12) % 4)
    with pytest.raises(DataError, match=r"`y_val` must hold labels in 0\.\.2 .* labels 0\.\.3"):
        load_dataset(spec, seed=0)


def test_npz_split_sample_shapes_must_match(tmp_path):
    spec, _ = _split_npz(tmp_path, x_val=np.zeros((12, 1, 5, 5)))
    with pytest.raises(DataError, match=r"`x_val` must have the sample shape of `x_train`"):
        load_dataset(spec, seed=0)


def test_non_finite_rows_are_refused_by_default_and_named(tmp_path):
    x_train = np.random.default_rng(0).normal(size=(30, 1, 4, 4))
    x_train[[3, 7], 0, 0, 0] = np.nan
    spec, _ = _split_npz(tmp_path, x_train=x_train)
    with pytest.raises(DataError, match=r"`x_train` must be finite, .* 2 samples \(rows 3, 7\)"):
        load_dataset(spec, seed=0)


def test_non_finite_rows_kept_as_zero_when_asked(tmp_path):
    x_train = np.random.default_rng(0).normal(size=(30, 1, 4, 4))
    x_train[[3, 7], 0, 1, 1] = np.inf
    spec, _ = _split_npz(tmp_path, x_train=x_train)
    data = load_dataset(spec, seed=0, keep_non_finite=True)
    assert data.origin.non_finite_train == (3, 7)
    assert data.origin.non_finite_val == ()
    assert bool(data.x_train.isfinite().all())


def test_non_finite_rows_of_x_are_found_after_the_split(tmp_path):
    x = np.random.default_rng(0).normal(size=(40, 4, 4))
    x[11, 0, 0] = np.nan
    path = tmp_path / "xy.npz"
    np.savez(path, X=x, y=np.arange(40) % 2)
    data = load_dataset(f"npz:{path}", seed=0, keep_non_finite=True)
    bad = [*(data.origin.train_names[i] for i in data.origin.non_finite_train),
           *(data.origin.val_names[i] for i in data.origin.non_finite_val)]
    assert bad == ["X[11]"]


def test_image_folder_with_train_and_val_is_used_as_given(tmp_path):
    root = tmp_path / "images"
    write_folder(root / "train", {"cat": 4, "dog": 3}, size=(6, 6))
    write_folder(root / "val", {"dog": 2}, size=(9, 9), seed=1)
    data = load_dataset(f"imagefolder:{root}", seed=0)
    assert (data.n_train, data.n_val, data.n_classes) == (7, 2, 2)
    assert data.input_size == (6, 6)  # validation images resized to the training size
    assert data.y_val.tolist() == [1, 1]  # "dog" is class 1 of train/
    assert data.origin.given_split
    assert data.origin.train_names[0] == "train/cat/000.png"
    assert data.origin.val_names == ("val/dog/000.png", "val/dog/001.png")


def test_image_folder_validation_class_unknown_to_training_is_refused(tmp_path):
    root = tmp_path / "images"
    write_folder(root / "train", {"cat": 2, "dog": 2})
    write_folder(root / "val", {"cow": 2})
    with pytest.raises(DataError, match=r"only classes of train/ \(cat, dog\), but val/ also "
                                        r"holds cow"):
        load_dataset(f"imagefolder:{root}", seed=0)


def test_image_folder_of_classes_keeps_the_seeded_split_and_names_files(tmp_path):
    root = write_folder(tmp_path / "images", {"a": 5, "b": 5})
    data = load_dataset(f"imagefolder:{root}", seed=0)
    assert not data.origin.given_split
    names = set(data.origin.train_names) | set(data.origin.val_names)
    assert names == {f"{c}/{i:03d}.png" for c in "ab" for i in range(5)}


def test_npz_with_part_of_a_split_names_the_missing_arrays(tmp_path):
    path = tmp_path / "partial.npz"
    np.savez(path, x_train=np.zeros((4, 1, 2, 2)), y_train=np.arange(4) % 2,
             x_val=np.zeros((2, 1, 2, 2)))
    with pytest.raises(DataError, match=r"all of x_train, y_train, x_val and y_val .* "
                                        r"without y_val\.$"):
        load_dataset(f"npz:{path}", seed=0)
