"""The learning-rate range test on digits: real sweeps, no mocks."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from study.doctor.base import CheckResult, DoctorInputs, training_lr
from study.doctor.init_check import check_init
from study.doctor.lr_range import (
    SLOW_FACTOR,
    STEPS,
    check_lr,
    smooth,
    sweep_rates,
    sweep_steps,
)
from study.doctor.noise_scale import check_batch_size
from study.doctor.overfit import check_overfit_one_batch
from tests.doctor_tests.conftest import DEFAULT_HP

SMALL_NET = "tests/doctor_tests/models.py:small_net"
# Adam at 3.0: the built-in cnn's first epoch ends at a data loss of ~20 (ln K = 2.3).
TOO_HIGH = 3.0
TOO_LOW = 1e-6

_cache: dict[tuple, CheckResult] = {}


def lr_result(data, model: str = "cnn", **hparams) -> CheckResult:
    """``check_lr`` of a configuration, run once per module (a sweep takes about a second)."""
    key = (model, tuple(sorted(hparams.items())))
    if key not in _cache:
        inputs = DoctorInputs(data, dataclasses.replace(DEFAULT_HP, **hparams), model=model)
        _cache[key] = check_lr(inputs, {})
    return _cache[key]


@pytest.mark.parametrize("model", ["cnn", SMALL_NET])
def test_default_config_passes(digits_data, model):
    result = lr_result(digits_data, model)
    d = result.details
    assert result.status == "pass", result.evidence
    assert 1e-4 < d["suggested_lr"] < 1.0
    assert d["onset_lr"] is not None and d["onset_lr"] > d["configured_lr"] == DEFAULT_HP.lr
    assert d["suggested_lr"] < d["onset_lr"]


def test_lr_far_too_high_fails(digits_data):
    result = lr_result(digits_data, lr=TOO_HIGH)
    assert result.status == "fail", result.evidence
    assert result.details["onset_lr"] < TOO_HIGH
    assert f"{result.details['onset_lr']:.2g}" in result.evidence


def test_lr_far_too_high_fails_no_other_check(clean_inputs):
    inputs = dataclasses.replace(clean_inputs,
                                 hparams=dataclasses.replace(DEFAULT_HP, lr=TOO_HIGH))
    found = {"lr": lr_result(clean_inputs.data, lr=TOO_HIGH)}
    assert training_lr(inputs, found) == found["lr"].details["suggested_lr"] < 0.1
    for check in (check_init, check_overfit_one_batch, check_batch_size):
        result = check(inputs, found)
        assert result.status != "fail", (result.name, result.evidence)


def test_lr_far_too_low_warns(digits_data):
    result = lr_result(digits_data, lr=TOO_LOW)
    assert result.status == "warn", result.evidence
    assert result.details["configured_lr"] < result.details["suggested_lr"] / SLOW_FACTOR
    assert result.details["lr_low"] <= TOO_LOW


@pytest.mark.parametrize("configured", [1e-7, 10.0])
def test_the_configured_rate_moves_neither_the_onset_nor_the_suggestion(digits_data, configured):
    """Found by a first user: on the same data and seed, --lr 1e-7 put the onset at 1.4 and
    --lr 10 at 0.35, against 0.28 at the default (the range, and so the steps per decade,
    followed the configured rate)."""
    default = lr_result(digits_data).details
    other = lr_result(digits_data, lr=configured).details
    assert (other["onset_lr"], other["suggested_lr"]) == (default["onset_lr"],
                                                          default["suggested_lr"])


def test_the_sweep_goes_past_a_configured_rate_above_its_top_at_the_same_spacing():
    rates = sweep_rates(100.0, 64)
    default = sweep_rates(1e-3, 64)
    np.testing.assert_allclose(rates[:len(default)], default, rtol=1e-12)
    np.testing.assert_allclose(default[[0, -1]], [1e-6, 10.0], rtol=1e-12)
    assert rates[-1] >= 1000.0 > rates[-2]
    np.testing.assert_allclose(np.diff(np.log10(rates)), np.diff(np.log10(rates))[0])


def test_figure_holds_the_sweep(digits_data):
    result = lr_result(digits_data)
    figure = result.figure
    n = result.details["steps"]
    assert 0 < n <= result.details["max_steps"] == STEPS
    assert len(figure["lr"]) == len(figure["loss"]) == len(figure["raw_loss"]) == n
    assert np.all(np.diff(figure["lr"]) > 0)
    smoothed = smooth(np.asarray(figure["raw_loss"]), beta=result.details["beta"])
    np.testing.assert_allclose(figure["loss"], smoothed)
    assert figure["suggested_lr"] == result.details["suggested_lr"]
    json.dumps(figure)
    json.dumps(result.details)


def test_sweep_is_deterministic(digits_data):
    first = lr_result(digits_data, SMALL_NET)
    again = check_lr(DoctorInputs(digits_data, DEFAULT_HP, model=SMALL_NET), {})
    assert again.figure["raw_loss"] == first.figure["raw_loss"]
    assert again.details == first.details


def test_smooth_removes_the_bias_of_a_zero_start():
    np.testing.assert_allclose(smooth(np.full(5, 2.0), beta=0.9), 2.0)
    assert smooth(np.array([1.0, 3.0]), beta=0.5)[1] == pytest.approx((0.25 + 1.5) / 0.75)


def test_large_batches_shorten_the_sweep():
    assert sweep_steps(64) == sweep_steps(256) == STEPS
    assert sweep_steps(512) == STEPS // 2 == sweep_steps(100_000)
