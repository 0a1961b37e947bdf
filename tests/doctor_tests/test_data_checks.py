"""The data checks on digits (no training): preprocessing, duplicates and shuffling, clean and
with planted faults."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from study.doctor.base import DoctorInputs
from study.doctor.data_checks import (
    CONFLICT_FAIL,
    D_WARN,
    LEAK_FAIL,
    MIX_FAIL,
    STD_RATIO_FAIL,
    check_duplicates,
    check_preprocessing,
    check_shuffling,
    order_mixing,
    trainer_order,
)
from study.training.trainer import Trainer
from tests.doctor_tests.conftest import DEFAULT_HP
from tests.doctor_tests.test_labels import digits, flip_labels

CHECKS = (check_preprocessing, check_duplicates, check_shuffling)


def _inputs(data, **changes) -> DoctorInputs:
    return DoctorInputs(dataclasses.replace(data, **changes), DEFAULT_HP, seed=0)


# preprocessing

@pytest.mark.parametrize("seed", range(5))
def test_clean_splits_pass_every_data_check(seed):
    inputs = DoctorInputs(digits(seed), DEFAULT_HP, seed=seed)
    for check in CHECKS:
        result = check(inputs, {})
        assert result.status == "pass", f"{result.name}: {result.evidence}"
        json.dumps(result.details)
    row = check_preprocessing(inputs, {}).details["channels"][0]
    assert abs(row["std_ratio"] - 1) < 0.05 and abs(row["mean_shift_sd"]) < 0.05
    assert max(abs(row["d_sample_mean"]), abs(row["d_sample_std"])) < D_WARN


def test_validation_scaled_threefold_fails():
    data = digits()
    result = check_preprocessing(_inputs(data, x_val=data.x_val * 3), {})
    row = result.details["channels"][0]
    assert result.status == "fail", result.evidence
    assert row["std_ratio"] == pytest.approx(3.0, rel=0.02)
    assert "3.00x" in result.evidence


def test_raw_training_against_validation_standardized_on_its_own_fails():
    data = digits()
    raw = data.x_train * 6.0 + 4.9  # undo roughly the standardization: digits' 0..16 scale
    own = (data.x_val - data.x_val.mean()) / data.x_val.std()
    result = check_preprocessing(_inputs(data, x_train=raw, x_val=own), {})
    row = result.details["channels"][0]
    assert result.status == "fail", result.evidence
    assert row["std_ratio"] < 1 / STD_RATIO_FAIL


def test_small_scale_difference_warns_not_fails():
    data = digits()
    result = check_preprocessing(_inputs(data, x_val=data.x_val * 1.1), {})
    row = result.details["channels"][0]
    assert result.status == "warn", result.evidence
    assert row["std_ratio"] < STD_RATIO_FAIL and abs(row["d_sample_std"]) > D_WARN


def test_tiny_validation_split_does_not_warn():
    data = digits()
    result = check_preprocessing(_inputs(data, x_val=data.x_val[:30], y_val=data.y_val[:30]), {})
    assert result.status == "pass", result.evidence
    assert result.details["channels"][0]["se_sample_mean"] > 0.15  # a wide SE, no alarm


def test_flipped_labels_do_not_fail_the_data_checks():
    data = digits()
    y, _ = flip_labels(data.y_train.numpy(), 0.2, seed=0)
    inputs = _inputs(data, y_train=torch.as_tensor(y))
    for check in CHECKS:
        result = check(inputs, {})
        assert result.status == "pass", f"{result.name}: {result.evidence}"


# duplicates

def _with_copies(n_leak: int = 0, n_conflict_pairs: int = 0, n_same_pairs: int = 0):
    """Digits with ``n_leak`` validation samples replaced by training ones, and training pairs
    made identical with different (or the same) labels."""
    data = digits()
    x_train, y_train, x_val = data.x_train.clone(), data.y_train.clone(), data.x_val.clone()
    x_val[:n_leak] = x_train[:n_leak]
    for k in range(n_conflict_pairs + n_same_pairs):
        a, b = 100 + 2 * k, 101 + 2 * k
        x_train[b] = x_train[a]
        y_train[b] = (y_train[a] + 1) % 10 if k < n_conflict_pairs else y_train[a]
    names_t = [f"train/{i}.png" for i in range(data.n_train)]
    names_v = [f"val/{i}.png" for i in range(data.n_val)]
    return DoctorInputs(dataclasses.replace(data, x_train=x_train, y_train=y_train, x_val=x_val),
                        DEFAULT_HP, seed=0, train_names=names_t, val_names=names_v)


def test_a_few_validation_copies_warn_with_their_training_twins():
    result = check_duplicates(_with_copies(n_leak=5), {})
    d = result.details
    assert result.status == "warn", result.evidence
    assert d["n_val_in_train"] == 5 and d["val_in_train_fraction"] < LEAK_FAIL
    assert d["val_twins"][0] == {"val": "val/0.png", "train": ["train/0.png"]}


def test_many_validation_copies_fail():
    inputs = _with_copies(n_leak=30)
    result = check_duplicates(inputs, {})
    assert result.status == "fail", result.evidence
    assert result.details["val_in_train_fraction"] == pytest.approx(30 / inputs.data.n_val)


@pytest.mark.parametrize(("pairs", "status"), [(3, "warn"), (20, "fail")])
def test_conflicting_training_copies(pairs, status):
    result = check_duplicates(_with_copies(n_conflict_pairs=pairs), {})
    d = result.details
    assert result.status == status, result.evidence
    assert d["n_conflicting_samples"] == 2 * pairs
    assert (d["conflicting_fraction"] > CONFLICT_FAIL) == (status == "fail")
    assert {c["name"] for c in d["conflicts"][0]} == {"train/100.png", "train/101.png"}


def test_every_validation_copy_is_listed_beyond_the_first_hundred_kept_in_details():
    result = check_duplicates(_with_copies(n_leak=120), {})
    rows = result.listing
    assert len(result.details["val_twins"]) == 100
    assert [r["sample"] for r in rows] == [f"val/{i}.png" for i in range(120)]
    assert rows[0] == {"rank": 1, "kind": "validation sample in training", "split": "val",
                       "sample": "val/0.png", "label": int(digits().y_val[0]), "group": None,
                       "copies_in_train": "train/0.png"}
    assert "duplicates_suspects.csv" in result.advice


def test_conflicting_copies_are_listed_by_group_with_their_labels():
    rows = check_duplicates(_with_copies(n_conflict_pairs=2), {}).listing
    assert [(r["sample"], r["group"], r["kind"]) for r in rows] == [
        ("train/100.png", 1, "conflicting labels"), ("train/101.png", 1, "conflicting labels"),
        ("train/102.png", 2, "conflicting labels"), ("train/103.png", 2, "conflicting labels")]
    assert rows[0]["label"] != rows[1]["label"]


def test_clean_splits_list_no_copies():
    result = check_duplicates(_with_copies(), {})
    assert result.status == "pass" and result.listing == []


@pytest.mark.parametrize("given", [False, True])
def test_validation_copies_advice_depends_on_whose_split_it_is(tmp_path, given):
    """Found by a user: ``X, y`` with repeated rows, split by the study, was told to "remove the
    validation samples found in training", a split that is not theirs; only their own split
    keeps that advice."""
    from sklearn.datasets import load_digits

    from study.training import load_dataset

    bunch = load_digits()
    x = bunch.data.reshape(-1, 1, 8, 8).astype(np.float32)
    path = tmp_path / "file.npz"
    if given:  # the user's split, 200 of whose validation samples are training ones
        np.savez(path, x_train=x[:1400], y_train=bunch.target[:1400],
                 x_val=np.concatenate([x[:200], x[1400:1600]]),
                 y_val=np.concatenate([bunch.target[:200], bunch.target[1400:1600]]))
    else:  # every sample twice in X: the study's split puts most copies on both sides
        np.savez(path, X=np.concatenate([x, x]), y=np.concatenate([bunch.target] * 2))
    inputs = _inputs(load_dataset(f"npz:{path}", seed=0, device=torch.device("cpu")))
    result = check_duplicates(inputs, {})
    assert inputs.given_split is given
    assert result.status == "fail", result.evidence
    assert result.details["val_in_train_fraction"] > LEAK_FAIL
    expected = "remove the validation samples found in training" if given else (
        "deduplicate X, keeping one copy of each repeated sample: the split is the study's")
    assert result.advice.startswith(expected), result.advice


def test_same_label_copies_inside_training_are_counted_not_judged():
    result = check_duplicates(_with_copies(n_same_pairs=4), {})
    assert result.status == "pass", result.evidence
    assert result.details["n_train_duplicates"] == 4


# shuffling

def test_order_mixing_fails_a_sorted_order_and_passes_a_random_one():
    y = digits().y_train.numpy()
    sorted_order = order_mixing(np.sort(y), 64)
    assert sorted_order["status"] == "fail" and sorted_order["sorted"]
    assert sorted_order["ratio"] < MIX_FAIL
    assert sorted_order["longest_run"] > 64 > sorted_order["random_longest_run"]
    shuffled = order_mixing(np.random.default_rng(0).permutation(y), 64)
    assert shuffled["status"] == "pass" and not shuffled["sorted"]
    assert shuffled["ratio"] == pytest.approx(1.0, abs=0.05)


def test_order_mixing_sees_class_blocks_larger_than_a_batch():
    y = np.repeat(np.arange(10), 144)  # grouped in blocks of 144, not sorted overall
    blocks = np.concatenate([y[i:i + 144] for i in np.random.default_rng(0).permutation(
        np.arange(0, len(y), 144))])
    result = order_mixing(blocks, 64)
    assert result["status"] == "fail" and not result["sorted"]


def test_trainer_order_is_the_order_the_trainer_draws(clean_inputs):
    trainer = Trainer(DEFAULT_HP, clean_inputs.data, epochs=1, seed=clean_inputs.seed,
                      measure_gap=False)
    # The trainer's own order iterator (private): one permutation per epoch.
    first, second = (next(trainer._orders).numpy() for _ in range(2))
    np.testing.assert_array_equal(trainer_order(clean_inputs, epoch=1), first)
    np.testing.assert_array_equal(trainer_order(clean_inputs, epoch=2), second)


def test_stored_order_sorted_by_class_passes_with_a_note():
    data = digits()
    order = torch.argsort(data.y_train, stable=True)
    # No origin: the tensors' order is the stored one (digits' would put its rows back).
    inputs = _inputs(data, x_train=data.x_train[order], y_train=data.y_train[order],
                     origin=None)
    result = check_shuffling(inputs, {})
    d = result.details
    assert result.status == "pass", result.evidence
    assert d["stored"]["sorted"] and d["stored_grouped"]
    assert all(m["status"] == "pass" for m in d["epochs"])
    assert "sorted by class" in result.evidence and "own" in result.advice
    assert result.note  # shown like a warning's advice, though it passes


@pytest.mark.parametrize("sort", [True, False])
def test_the_stored_order_of_an_x_y_file_is_the_files_not_the_made_splits(tmp_path, sort):
    """Found by a first user: an ``X, y`` file sorted by class read as "mixed": the stored
    order was taken after the seeded split had shuffled it."""
    from sklearn.datasets import load_digits

    from study.training import load_dataset

    bunch = load_digits()
    order = np.argsort(bunch.target, kind="stable") if sort else np.arange(len(bunch.target))
    path = tmp_path / "file.npz"
    np.savez(path, X=bunch.data.reshape(-1, 1, 8, 8)[order].astype(np.float32),
             y=bunch.target[order])
    data = load_dataset(f"npz:{path}", seed=0, device=torch.device("cpu"),
                        keep_non_finite=True)
    result = check_shuffling(_inputs(data), {})
    assert result.details["stored"]["sorted"] is sort, result.evidence
    assert ("stored order sorted by class" in result.evidence) is sort
    assert all(m["status"] == "pass" for m in result.details["epochs"])


def test_a_few_corrupted_training_images_do_not_fail_preprocessing():
    """Five noise images inflate the training pixels' std 1.5x; the per-sample stds agree."""
    data = digits()
    x = data.x_train.clone()
    x[:5] = torch.randn(x[:5].shape, generator=torch.Generator().manual_seed(0)) * 20
    result = check_preprocessing(_inputs(data, x_train=x), {})
    row = result.details["channels"][0]
    assert result.status == "pass", result.evidence
    assert row["std_ratio"] < 1 / 1.2 and abs(row["d_sample_std"]) < D_WARN


def test_rows_that_held_nan_are_not_counted_as_copies(clean_inputs):
    import dataclasses as dc

    x = clean_inputs.data.x_train.clone()
    x[[3, 50, 700]] = 0.0  # what the loader leaves of rows that held NaN
    data = dc.replace(clean_inputs.data, x_train=x)
    with_nan = dc.replace(clean_inputs, data=data, non_finite_train=(3, 50, 700))
    assert check_duplicates(with_nan, {}).status == "pass"
    # The same zero rows, not known as NaN, are identical copies (the check sees them).
    plain = type(clean_inputs)(data, clean_inputs.hparams, train_names=clean_inputs.train_names)
    assert check_duplicates(plain, {}).details["n_train_duplicates"] == 2


def test_the_preprocessing_figure_shows_each_splits_samples_and_a_scaled_split_apart():
    """Found by a first user: a failed preprocessing check had no figure."""
    from study.doctor.figures import build_figure

    data = digits()
    scaled = check_preprocessing(_inputs(data, x_val=data.x_val * 16), {})
    clean = check_preprocessing(_inputs(data), {})
    assert scaled.status == "fail" and clean.status == "pass"
    for result in (scaled, clean):
        fig = result.figure
        assert fig["kind"] == "preprocessing" and fig["channel"] == 0
        assert len(fig["train_mean"]) == len(fig["train_std"]) == min(1000, data.n_train)
        assert len(fig["val_mean"]) == len(fig["val_std"]) == data.n_val
        json.dumps(fig)
    # The scaled validation samples' stds lie far above every training sample's.
    assert min(scaled.figure["val_std"]) > 5 * max(scaled.figure["train_std"])
    ax = build_figure(scaled).axes[0]
    assert ax.get_xlabel() == "per-sample mean (channel 0)"
    assert ax.get_ylabel() == "per-sample std (channel 0)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        f"training samples (1000 of {data.n_train})", f"validation samples ({data.n_val})"]
    points = [c.get_offsets() for c in ax.collections]
    np.testing.assert_allclose(points[1][:, 1], scaled.figure["val_std"])
