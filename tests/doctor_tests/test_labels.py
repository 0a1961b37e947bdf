"""The labels check on digits: clean labels pass, flipped ones are named, misaligned ones fail.

Each expensive result (a check_labels run, ~5 s) is made once per dataset variant and shared
(cached functions, called inside the tests: they train on the one thread that conftest's
fixture sets); the outliers tests reuse the flipped one through :func:`flipped_run`.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import numpy as np
import pytest
import torch

from study.doctor.base import CheckResult, DoctorInputs, short_epochs
from study.doctor.labels import (
    FAIL_FRACTION,
    MAX_LISTED,
    RESIDUAL_MAX,
    WARN_FRACTION,
    WEAK_SHARE,
    Z_SIGNAL,
    _after_upstream,
    _verdict,
    check_labels,
)
from study.doctor.lr_range import check_lr
from study.training import load_dataset
from tests.doctor_tests.conftest import DEFAULT_HP

SMALL_NET = "tests/doctor_tests/models.py:small_net"


def flip_labels(y: np.ndarray, fraction: float, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``y`` with ``fraction`` of its labels moved to another random class, and their positions."""
    rng = np.random.default_rng(seed + 100)
    y = y.copy()
    flipped = rng.choice(len(y), round(fraction * len(y)), replace=False)
    y[flipped] = (y[flipped] + rng.integers(1, y.max() + 1, len(flipped))) % (y.max() + 1)
    return y, flipped


@functools.cache
def digits(seed: int = 0):
    """Digits as a study loads it (cached: the outliers tests share it)."""
    return load_dataset("digits", seed=seed)


@functools.cache
def flipped_run(fraction: float) -> tuple[DoctorInputs, np.ndarray, CheckResult]:
    """Digits (seed 0) with ``fraction`` of the training labels flipped, named ``row<i>``:
    the inputs, the flipped positions and the labels check's result."""
    data = digits()
    y, flipped = flip_labels(data.y_train.numpy(), fraction, seed=0)
    inputs = DoctorInputs(dataclasses.replace(data, y_train=torch.as_tensor(y)), DEFAULT_HP,
                          seed=0, train_names=[f"row{i}" for i in range(data.n_train)])
    return inputs, flipped, check_labels(inputs, {})


@functools.cache
def _clean_run() -> tuple[DoctorInputs, CheckResult]:
    inputs = DoctorInputs(digits(), DEFAULT_HP, seed=0)
    return inputs, check_labels(inputs, {})


@pytest.fixture
def clean_run():
    """Made inside a test, so it trains on the one thread conftest's fixture sets."""
    return _clean_run()


def test_clean_digits_pass(clean_run):
    _, result = clean_run
    d = result.details
    assert result.status == "pass", result.evidence
    assert d["suspect_fraction"] <= WARN_FRACTION
    assert d["signal_z"] >= Z_SIGNAL
    assert d["real_val_accuracy"] > 0.9 > 0.3 > d["shuffled_val_accuracy"]
    assert d["real_val_loss"] < d["shuffled_val_loss"]


def test_result_is_json_able_and_carries_the_out_of_fold_probabilities(clean_run):
    inputs, result = clean_run
    json.dumps(result.details)
    json.dumps(result.figure)
    probs = result.carry["oof_probs"]
    assert probs.shape == (inputs.data.n_train, inputs.data.n_classes)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    accuracy = np.mean(probs.argmax(axis=1) == inputs.data.y_train.numpy())
    assert accuracy == pytest.approx(result.details["oof_accuracy"])
    assert "\n" not in result.evidence and "\n" not in result.advice


def test_twenty_percent_flipped_fails():
    inputs, flipped, result = flipped_run(0.2)
    d = result.details
    assert result.status == "fail", result.evidence
    assert d["suspect_fraction"] > FAIL_FRACTION
    assert d["residual_error"] <= RESIDUAL_MAX
    # The estimate lands near the truth, not at every error of the model.
    assert d["suspect_fraction"] == pytest.approx(len(flipped) / inputs.data.n_train, abs=0.05)


def test_flipped_samples_lead_the_suspects():
    inputs, flipped, result = flipped_run(0.2)
    d = result.details
    positions = result.carry["suspect_positions"]
    top = positions[:len(flipped) // 2]
    assert np.isin(top, flipped).mean() >= 0.8
    assert d["n_suspects"] == len(positions) > MAX_LISTED == len(d["suspects"])
    assert d["suspects"] == [f"row{i}" for i in positions[:MAX_LISTED]]
    assert d["suspect_fraction"] == pytest.approx(len(positions) / inputs.data.n_train)
    # Found by a first user: only the first 100 of 262 suspects could be read anywhere.
    assert [row["sample"] for row in result.listing] == [f"row{i}" for i in positions]
    assert [row["rank"] for row in result.listing[:3]] == [1, 2, 3]
    assert {"label", "predicted", "self_confidence"} <= set(result.listing[0])


def test_ten_percent_flipped_at_least_warns():
    _, flipped, result = flipped_run(0.1)
    assert result.status in ("warn", "fail"), result.evidence
    assert result.details["suspect_fraction"] > WARN_FRACTION
    assert np.isin(result.carry["suspect_positions"][:len(flipped) // 2], flipped).mean() >= 0.8


def _three_digits(per_class: int, val_per_class: int):
    """Digits 0, 1 and 2 only, ``per_class`` training and ``val_per_class`` validation samples
    each: an easy task on a split far smaller than digits."""
    d = digits()

    def pick(x, y, k):
        idx = torch.cat([torch.nonzero(y == c).flatten()[:k] for c in range(3)])
        return x[idx], y[idx]

    (xt, yt), (xv, yv) = pick(d.x_train, d.y_train, per_class), pick(d.x_val, d.y_val,
                                                                    val_per_class)
    return dataclasses.replace(d, x_train=xt, y_train=yt, x_val=xv, y_val=yv, n_classes=3)


def test_short_trainings_take_as_many_steps_on_a_small_split():
    small = DoctorInputs(_three_digits(30, 10), DEFAULT_HP, seed=0)
    full = DoctorInputs(digits(), DEFAULT_HP, seed=0)
    assert short_epochs(6, full) == 6  # sized on digits: unchanged
    assert short_epochs(6, small) == 69  # 2 batches of 64 an epoch: 138 steps, as on digits
    wide = DoctorInputs(digits(), dataclasses.replace(DEFAULT_HP, batch_size=16), seed=0)
    assert short_epochs(6, wide) == 6  # more steps an epoch than digits: never fewer epochs


def test_an_easy_task_on_ninety_samples_is_learned_not_called_misaligned():
    # Found by a first user: 6 epochs of 2 batches left the model at chance, and correct
    # labels failed with "check that x and y are aligned".
    result = check_labels(DoctorInputs(_three_digits(30, 10), DEFAULT_HP, seed=0), {})
    assert result.details["learned"], result.evidence
    assert result.status == "pass", result.evidence
    assert result.details["real_val_accuracy"] >= 0.9


def test_labels_misaligned_with_inputs_fail():
    data = digits()
    perm = torch.randperm(data.n_train, generator=torch.Generator().manual_seed(1))
    shuffled = data.y_train[perm]
    inputs = DoctorInputs(dataclasses.replace(data, y_train=shuffled), DEFAULT_HP, seed=0)
    result = check_labels(inputs, {})
    d = result.details
    assert result.status == "fail", result.evidence
    assert d["signal_z"] < Z_SIGNAL and not d["learned"]
    assert d["suspects"] == [] and result.carry["oof_probs"] is None


def test_user_factory_passes_on_clean_digits(clean_inputs):
    inputs = dataclasses.replace(clean_inputs, model=SMALL_NET)
    result = check_labels(inputs, {"lr": check_lr(inputs, {})})
    d = result.details
    assert result.status == "pass", result.evidence
    assert d["suspect_fraction"] <= WARN_FRACTION
    assert d["lr"] in (d["base_lr"], d["base_lr"] / 10)


@pytest.mark.parametrize(("fraction", "residual", "status"), [
    (WARN_FRACTION, 0.0, "pass"),
    (WARN_FRACTION + 1e-3, 0.0, "warn"),
    (FAIL_FRACTION, 0.0, "warn"),
    (FAIL_FRACTION + 1e-3, RESIDUAL_MAX, "fail"),
    (FAIL_FRACTION + 1e-3, RESIDUAL_MAX + 1e-3, "warn"),  # the model's own errors: no fail
])
def test_status_thresholds(clean_run, fraction, residual, status):
    details = {**clean_run[1].details, "suspect_fraction": fraction, "residual_error": residual}
    assert _verdict(details)[0] == status


@pytest.mark.parametrize(("val_error", "status"), [
    (WEAK_SHARE * 0.2, "fail"),
    (WEAK_SHARE * 0.2 + 1e-3, "warn"),  # errs on validation itself: its suspects may be its own
])
def test_a_model_that_errs_on_validation_cannot_fail_the_labels(clean_run, val_error, status):
    details = {**clean_run[1].details, "suspect_fraction": 0.2, "residual_error": 0.0,
               "real_val_accuracy": 1 - val_error}
    assert _verdict(details)[0] == status


def test_class_with_one_training_sample_warns_without_suspects():
    data = digits()
    y = data.y_train
    keep = torch.cat([torch.nonzero(y != 9).flatten(), torch.nonzero(y == 9).flatten()[:1]])
    inputs = DoctorInputs(dataclasses.replace(data, x_train=data.x_train[keep], y_train=y[keep]),
                          DEFAULT_HP, seed=0)
    result = check_labels(inputs, {})
    d = result.details
    assert result.status == "warn", result.evidence
    assert d["learned"] and d["folds"] == 1
    assert d["suspects"] == [] and result.carry["oof_probs"] is None


@pytest.mark.parametrize(("upstream", "status"), [
    ({"init": "fail"}, "warn"),
    ({"overfit-one-batch": "fail", "init": "pass"}, "warn"),
    ({"preprocessing": "fail"}, "warn"),  # scored on a validation split scaled apart
    ({"init": "warn", "lr": "fail"}, "fail"),  # not a check of the model itself
    ({}, "fail"),
])
def test_a_failing_model_check_turns_a_labels_failure_into_a_warning(upstream, status):
    found = {name: CheckResult(name, s, "", "", "") for name, s in upstream.items()}
    result = _after_upstream(("fail", "20% suspects", "relabel"), found)
    assert result[0] == status
    if status == "warn":
        failed = next(n for n, s in upstream.items() if s == "fail")
        assert result[1] == f"not conclusive while {failed} fails: 20% suspects"


def test_a_pass_or_a_warning_stays_whatever_the_model_checks_say():
    found = {"init": CheckResult("init", "fail", "", "", "")}
    assert _after_upstream(("pass", "e", "a"), found) == ("pass", "e", "a")
    assert _after_upstream(("warn", "e", "a"), found) == ("warn", "e", "a")
