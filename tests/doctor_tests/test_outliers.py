"""The outliers check on digits: clean data passes, corrupted images are listed first, samples
with NaN/inf fail, and wrong labels alone are left to the labels check."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from study.doctor.base import DoctorInputs
from study.doctor.labels import check_labels
from study.doctor.outliers import (
    INPUT_Z,
    MAX_UNEXPLAINED_FRACTION,
    check_outliers,
    input_scores,
)
from tests.doctor_tests.conftest import DEFAULT_HP
from tests.doctor_tests.test_labels import digits, flip_labels, flipped_run


def _corrupted(kind: str, n: int = 5) -> tuple[DoctorInputs, list[str]]:
    """Digits (seed 0) with ``n`` training images replaced, and their names."""
    data = digits()
    g = torch.Generator().manual_seed(0)
    planted = torch.randperm(data.n_train, generator=g)[:n]
    x = data.x_train.clone()
    shape = x[planted].shape
    x[planted] = (torch.randn(shape, generator=g) * 20 if kind == "noise" else
                  torch.full(shape, 50.0))
    names = [f"img{i}.png" for i in range(data.n_train)]
    inputs = DoctorInputs(dataclasses.replace(data, x_train=x), DEFAULT_HP, seed=0,
                          train_names=names)
    return inputs, [names[i] for i in planted.tolist()]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clean_digits_pass(seed):
    result = check_outliers(DoctorInputs(digits(seed), DEFAULT_HP, seed=seed), {})
    d = result.details
    assert result.status == "pass", result.evidence
    assert d["input_outliers_train"] == d["input_outliers_val"] == []
    assert max(d["input_z_max_train"], d["input_z_max_val"]) < INPUT_Z
    assert d["n_extreme_loss"] <= MAX_UNEXPLAINED_FRACTION * digits(seed).n_train
    json.dumps(d)
    json.dumps(result.figure)


@pytest.mark.parametrize("kind", ["noise", "constant"])
def test_corrupted_images_warn_and_lead_the_list(kind):
    inputs, planted = _corrupted(kind)
    result = check_outliers(inputs, {})
    d = result.details
    assert result.status == "warn", result.evidence
    assert sorted(d["input_outliers_train"]) == sorted(planted)
    assert sorted(d["suspects"][:len(planted)]) == sorted(planted)
    assert d["input_z_max_train"] > INPUT_Z


def test_every_outlier_is_counted_and_listed_beyond_the_first_hundred():
    inputs, planted = _corrupted("constant", n=120)
    result = check_outliers(inputs, {})
    d = result.details
    assert "120 inputs beyond" in result.evidence
    assert d["n_input_outliers_train"] == 120 and len(d["input_outliers_train"]) == 100
    far = [r for r in result.listing if r["reason"] == "input outlier"]
    assert sorted(r["sample"] for r in far) == sorted(planted)
    assert all(r["split"] == "train" and r["input_z"] > INPUT_Z for r in far)
    assert [r["rank"] for r in result.listing] == list(range(1, len(result.listing) + 1))
    assert "outliers_suspects.csv" in result.advice


def test_clean_digits_list_no_input_outlier(clean_inputs):
    result = check_outliers(clean_inputs, {})
    assert not [r for r in result.listing if r["reason"] != "extreme loss"]


def test_non_finite_samples_fail_with_their_names(clean_inputs):
    inputs = dataclasses.replace(clean_inputs, non_finite_train=(3, 7), non_finite_val=(1,))
    train, val = inputs.train_names, inputs.val_names
    result = check_outliers(inputs, {})
    assert result.status == "fail", result.evidence
    assert result.details["non_finite_train"] == [train[3], train[7]]
    assert result.details["non_finite_val"] == [val[1]]
    assert result.details["suspects"][:2] == [train[3], train[7]]
    assert [(r["sample"], r["split"], r["reason"]) for r in result.listing[:3]] == [
        (train[3], "train", "non-finite"), (train[7], "train", "non-finite"),
        (val[1], "val", "non-finite")]


def test_input_scores_rank_a_brighter_image_below_a_corrupted_one():
    x = digits().x_train.clone()
    x[0] = x[0] + 0.5  # half a training SD brighter: unusual, not corrupted
    x[1] = 50.0
    z = input_scores(x)
    assert z[0] < INPUT_Z < z[1]
    assert np.argmax(z) == 1


def test_a_few_wrong_labels_have_extreme_losses_that_the_labels_check_explains():
    data = digits()
    y, flipped = flip_labels(data.y_train.numpy(), 0.02, seed=0)
    inputs = DoctorInputs(dataclasses.replace(data, y_train=torch.as_tensor(y)), DEFAULT_HP,
                          seed=0, train_names=[str(i) for i in range(data.n_train)])
    alone = check_outliers(inputs, {})
    assert alone.status == "warn", alone.evidence
    named = [int(n) for n in alone.details["extreme_loss"]]
    assert np.isin(named, flipped).mean() >= 0.8
    after = check_outliers(inputs, {"labels": check_labels(inputs, {})})
    assert after.status == "pass", after.evidence
    assert after.details["n_explained_by_label"] >= 0.8 * len(named)


def test_twenty_percent_flipped_labels_do_not_warn_after_the_labels_check():
    inputs, _, labels = flipped_run(0.2)
    result = check_outliers(inputs, {"labels": labels})
    assert result.status == "pass", result.evidence
    assert result.details["n_extreme_loss"] <= MAX_UNEXPLAINED_FRACTION * inputs.data.n_train
