"""Tests of study.training.data: dataset specs, loading, splitting, standardization and npz
validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from study.errors import ConfigError, DataError
from study.training.data import DATASETS, TensorData, check_dataset_spec, load_dataset


@pytest.fixture(scope="module")
def digits() -> TensorData:
    return load_dataset("digits", seed=0)


@pytest.fixture(scope="module")
def volumes() -> TensorData:
    return load_dataset("volumes3d", seed=0)


def _npz(tmp_path, x, y, name="data.npz"):
    path = tmp_path / name
    np.savez(path, X=x, y=y)
    return f"npz:{path}"


def _blobs(n=40, shape=(6, 6), n_classes=2, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    x = rng.normal(size=(n, *shape)) + y.reshape(-1, *[1] * len(shape))
    return x.astype(np.float32), y


# --- specs ---------------------------------------------------------------------------------------


def test_datasets_lists_the_five_forms():
    assert DATASETS == ("digits", "volumes3d", "npz:PATH", "imagefolder:PATH",
                        "pkg.module:callable")


@pytest.mark.parametrize("spec", ["digits", "volumes3d", "npz:/some/file.npz",
                                  "imagefolder:/some/folder", "pkg.data:load",
                                  "loaders/mine.py:load", "mod:Cls.load"])
def test_check_dataset_spec_accepts_valid_forms(spec):
    assert check_dataset_spec(spec) is None


def test_check_dataset_spec_rejects_unknown_name():
    with pytest.raises(ConfigError, match=r"one of digits, volumes3d, npz:PATH, imagefolder:PATH "
                                          r"or a loader .*dataset='foo'"):
        check_dataset_spec("foo")


@pytest.mark.parametrize("spec", ["pkg.data:", "pkg data:load", "some/dir:load", ":load"])
def test_check_dataset_spec_rejects_malformed_loaders(spec):
    with pytest.raises(ConfigError, match=r"`dataset` must be one of"):
        check_dataset_spec(spec)


@pytest.mark.parametrize("spec", ["npz:", "npz:  ", "imagefolder:", "imagefolder: "])
def test_check_dataset_spec_rejects_empty_npz_path(spec):
    with pytest.raises(ConfigError, match=r"non-empty PATH"):
        check_dataset_spec(spec)


def test_load_dataset_rejects_unknown_spec_before_loading():
    with pytest.raises(ConfigError, match="dataset='mnist'"):
        load_dataset("mnist", seed=0)


# --- digits --------------------------------------------------------------------------------------


def test_digits_shapes_and_dtypes(digits):
    assert digits.name == "digits"
    assert digits.x_train.shape[1:] == (1, 8, 8)
    assert digits.x_train.dtype == digits.x_val.dtype == torch.float32
    assert digits.y_train.dtype == digits.y_val.dtype == torch.int64
    assert digits.y_train.shape == (digits.n_train,)
    assert (digits.n_classes, digits.spatial_dims, digits.in_channels) == (10, 2, 1)
    assert digits.input_size == (8, 8)
    assert digits.x_train.device.type == "cpu"


def test_digits_split_sizes(digits):
    assert digits.n_train + digits.n_val == 1797
    assert digits.n_val == 360  # ceil(0.2 * 1797)


def test_split_is_stratified(digits):
    train = torch.bincount(digits.y_train, minlength=10).double() / digits.n_train
    val = torch.bincount(digits.y_val, minlength=10).double() / digits.n_val
    assert torch.all((train - val).abs() < 0.01)


def test_standardization_uses_train_statistics(digits):
    assert digits.x_train.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert digits.x_train.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    # Val is transformed with train's statistics, so its own are close but not exact.
    assert abs(digits.x_val.mean().item()) > 1e-4
    assert abs(digits.x_val.mean().item()) < 0.2


def test_standardization_is_per_channel(tmp_path):
    x, y = _blobs(shape=(3, 5, 5))
    x = x * np.array([1.0, 10.0, 100.0], dtype=np.float32)[:, None, None] + 7.0
    data = load_dataset(_npz(tmp_path, x, y), seed=0)
    means = data.x_train.mean(dim=(0, 2, 3))
    stds = data.x_train.std(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(means, torch.zeros(3), atol=1e-5)
    assert torch.allclose(stds, torch.ones(3), atol=1e-4)


def test_constant_input_does_not_divide_by_zero(tmp_path):
    x = np.zeros((20, 4, 4), dtype=np.float32)
    data = load_dataset(_npz(tmp_path, x, np.arange(20) % 2), seed=0)
    assert torch.isfinite(data.x_train).all()
    assert torch.isfinite(data.x_val).all()


def test_same_seed_gives_same_split(digits):
    again = load_dataset("digits", seed=0)
    assert torch.equal(again.x_train, digits.x_train)
    assert torch.equal(again.y_val, digits.y_val)


def test_different_seed_gives_different_split(digits):
    other = load_dataset("digits", seed=1)
    assert not torch.equal(other.y_train, digits.y_train)


# --- volumes3d -----------------------------------------------------------------------------------


def test_volumes3d_shapes(volumes):
    assert volumes.x_train.shape[1:] == (1, 16, 16, 16)
    assert volumes.n_train + volumes.n_val == 512
    assert (volumes.spatial_dims, volumes.in_channels, volumes.n_classes) == (3, 1, 2)
    assert volumes.input_size == (16, 16, 16)


def test_volumes3d_labels_are_balanced(volumes):
    labels = torch.cat([volumes.y_train, volumes.y_val])
    assert torch.bincount(labels).tolist() == [256, 256]


def test_volumes3d_is_deterministic_by_seed(volumes):
    assert torch.equal(load_dataset("volumes3d", seed=0).x_train, volumes.x_train)
    other = load_dataset("volumes3d", seed=1)
    assert not torch.equal(other.x_train, volumes.x_train)


def test_volumes3d_brightness_does_not_reveal_the_class(volumes):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    x = torch.cat([volumes.x_train, volumes.x_val]).flatten(1).numpy()
    y = torch.cat([volumes.y_train, volumes.y_val]).numpy()
    features = np.stack([x.mean(1), x.std(1), x.max(1)], axis=1)
    accuracy = cross_val_score(LogisticRegression(), features, y, cv=5).mean()
    assert accuracy < 0.65


def test_volumes3d_is_learnable_from_shape(volumes):
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool3d(2),
        torch.nn.Conv3d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveMaxPool3d(1),
        torch.nn.Flatten(), torch.nn.Linear(16, 2),
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(10):
        for batch in torch.randperm(volumes.n_train).split(32):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(
                net(volumes.x_train[batch]), volumes.y_train[batch]
            )
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        accuracy = (net(volumes.x_val).argmax(1) == volumes.y_val).float().mean().item()
    assert accuracy > 0.8


# --- npz happy paths -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((6, 6), (1, 6, 6)), ((2, 6, 6), (2, 6, 6)), ((2, 4, 5, 6), (2, 4, 5, 6))],
    ids=["ndim3", "ndim4", "ndim5"],
)
def test_npz_accepts_2d_and_3d_layouts(tmp_path, shape, expected):
    x, y = _blobs(shape=shape)
    data = load_dataset(_npz(tmp_path, x, y), seed=0)
    assert data.x_train.shape[1:] == expected
    assert data.spatial_dims == len(expected) - 1
    assert data.n_train + data.n_val == 40
    assert data.n_classes == 2


def test_npz_name_is_the_spec(tmp_path):
    spec = _npz(tmp_path, *_blobs())
    assert load_dataset(spec, seed=0).name == spec


def test_npz_accepts_float_labels_with_integer_values(tmp_path):
    x, y = _blobs(n_classes=3, n=30)
    data = load_dataset(_npz(tmp_path, x, y.astype(np.float64)), seed=0)
    assert data.y_train.dtype == torch.int64
    assert data.n_classes == 3
    assert set(data.y_val.tolist()) == {0, 1, 2}


# --- npz errors ----------------------------------------------------------------------------------


def test_npz_missing_file(tmp_path):
    path = tmp_path / "nope.npz"
    with pytest.raises(DataError, match=r"`dataset` must name an existing .npz file.*nope\.npz"):
        load_dataset(f"npz:{path}", seed=0)


@pytest.mark.parametrize("content", [b"hello", b"", b"PK\x03\x04truncated"],
                         ids=["text", "empty", "broken-zip"])
def test_npz_not_an_npz_file(tmp_path, content):
    path = tmp_path / "data.npz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"`dataset` must be a .npz file .* not a zip archive"):
        load_dataset(f"npz:{path}", seed=0)


def test_npz_plain_npy_file_rejected(tmp_path):
    path = tmp_path / "data.npy"
    np.save(path, np.zeros((4, 3, 3)))
    with pytest.raises(DataError, match=r"data\.npy, which is not a zip archive"):
        load_dataset(f"npz:{path}", seed=0)


def test_npz_missing_key(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, X=np.zeros((4, 3, 3)), labels=np.zeros(4))
    with pytest.raises(DataError, match=r"arrays X and y.*without y \(arrays: X, labels\)"):
        load_dataset(f"npz:{path}", seed=0)


def test_npz_nan_in_x(tmp_path):
    x, y = _blobs()
    x[0, 0, 0] = np.nan
    x[1, 2, 3] = np.inf
    x[5, 1, 1] = -np.inf
    with pytest.raises(DataError, match=r"`X` must be finite, but got 3 NaN/inf values in"):
        load_dataset(_npz(tmp_path, x, y), seed=0)


def test_npz_mismatched_lengths(tmp_path):
    x, y = _blobs()
    with pytest.raises(DataError, match=r"same length as `X` \(40\), but got len\(y\)=39\."):
        load_dataset(_npz(tmp_path, x, y[:-1]), seed=0)


def test_npz_non_integer_labels(tmp_path):
    x, y = _blobs()
    y = y.astype(np.float64)
    y[3] = 0.5
    with pytest.raises(DataError, match=r"integer class labels, but got 1 non-integer values"):
        load_dataset(_npz(tmp_path, x, y), seed=0)


def test_npz_labels_out_of_range(tmp_path):
    x, y = _blobs()
    with pytest.raises(DataError, match=r"labels 0\.\.K-1 .* but got labels \{0, 2\}\."):
        load_dataset(_npz(tmp_path, x, y * 2), seed=0)


def test_npz_single_class_rejected(tmp_path):
    x, _ = _blobs()
    with pytest.raises(DataError, match=r"K >= 2 .* but got labels \{0\}\."):
        load_dataset(_npz(tmp_path, x, np.zeros(40, dtype=int)), seed=0)


def test_npz_class_with_one_sample(tmp_path):
    x, y = _blobs()
    y[0] = 2
    with pytest.raises(DataError, match=r"at least 2 samples per class .* 1 sample of class 2\."):
        load_dataset(_npz(tmp_path, x, y), seed=0)


def test_npz_one_dimensional_x(tmp_path):
    with pytest.raises(DataError, match=r"`X` must have shape \(N, H, W\).*X\.shape=\(40,\)\."):
        load_dataset(_npz(tmp_path, np.zeros(40), np.arange(40) % 2), seed=0)


def test_npz_object_dtype_x(tmp_path):
    x = np.empty((4, 2, 2), dtype=object)
    x[...] = 1.0
    with pytest.raises(DataError, match=r"`X` must be a numeric array stored without pickle"):
        load_dataset(_npz(tmp_path, x, np.array([0, 0, 1, 1])), seed=0)


def test_npz_string_dtype_x(tmp_path):
    x = np.full((4, 2, 2), "a")
    with pytest.raises(DataError, match=r"`X` must be a numeric array .* X\.dtype=<U1\."):
        load_dataset(_npz(tmp_path, x, np.array([0, 0, 1, 1])), seed=0)


def test_npz_too_small_for_a_stratified_split(tmp_path):
    x, y = _blobs(n=4)
    with pytest.raises(DataError, match=r"`val_fraction` must leave at least one sample per class"):
        load_dataset(_npz(tmp_path, x, y), seed=0)


# --- val_fraction --------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, float("nan")])
def test_val_fraction_outside_open_interval_rejected(fraction):
    with pytest.raises(ConfigError, match=r"`val_fraction` must be in \(0, 1\), but got"):
        load_dataset("digits", seed=0, val_fraction=fraction)


@pytest.mark.parametrize(("fraction", "n_val"), [(0.05, 2), (0.5, 20), (0.95, 38)])
def test_val_fraction_inside_open_interval_accepted(tmp_path, fraction, n_val):
    x, y = _blobs()
    data = load_dataset(_npz(tmp_path, x, y), seed=0, val_fraction=fraction)
    assert (data.n_train, data.n_val) == (40 - n_val, n_val)


def test_negative_seed_rejected():
    with pytest.raises(ConfigError, match=r"`seed` must be an integer >= 0, but got seed=-1\."):
        load_dataset("digits", seed=-1)
