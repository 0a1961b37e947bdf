"""Overfitting one batch on digits: working models memorize it, a blind one cannot."""

from __future__ import annotations

import dataclasses
import json

import pytest

from study.doctor.lr_range import check_lr
from study.doctor.overfit import STEPS, TARGET, check_overfit_one_batch
from tests.doctor_tests.conftest import DEFAULT_HP

SMALL_NET = "tests/doctor_tests/models.py:small_net"
BLIND_NET = "tests/doctor_tests/models.py:blind_net"


@pytest.mark.parametrize("model", ["cnn", SMALL_NET])
def test_default_config_passes_at_the_suggested_lr(clean_inputs, model):
    inputs = dataclasses.replace(clean_inputs, model=model)
    lr = check_lr(inputs, {})
    result = check_overfit_one_batch(inputs, {"lr": lr})
    d = result.details
    assert result.status == "pass", result.evidence
    assert d["lr"] == lr.details["suggested_lr"]
    assert d["final_loss"] < TARGET < d["start_loss"]
    assert d["reached_at"] == d["steps"] < STEPS
    assert d["batch_size"] == 32


def test_without_the_range_test_it_trains_at_the_configured_lr(clean_inputs):
    result = check_overfit_one_batch(clean_inputs, {})
    assert result.details["lr"] == DEFAULT_HP.lr
    assert result.status == "pass", result.evidence


def test_model_blind_to_its_input_fails(clean_inputs):
    inputs = dataclasses.replace(clean_inputs, model=BLIND_NET)
    result = check_overfit_one_batch(inputs, {})
    d = result.details
    assert result.status == "fail", result.evidence
    assert d["reached_at"] is None and d["steps"] == STEPS
    assert d["final_loss"] > 10 * TARGET
    assert result.figure["step"] == list(range(STEPS + 1))  # step 0: before training
    json.dumps(result.figure)
    json.dumps(d)


def test_slow_batchnorm_momentum_does_not_fail(clean_inputs):
    """Memorization is read on the batch's statistics, not on running ones that lag."""
    inputs = dataclasses.replace(clean_inputs,
                                 hparams=dataclasses.replace(DEFAULT_HP, bn_momentum=0.01))
    result = check_overfit_one_batch(inputs, {})
    assert result.status == "pass", result.evidence


def test_dropout_does_not_fail(clean_inputs):
    inputs = dataclasses.replace(clean_inputs,
                                 hparams=dataclasses.replace(DEFAULT_HP, dropout=0.5))
    result = check_overfit_one_batch(inputs, {})
    assert result.status == "pass", result.evidence
    assert len(result.figure["train_loss"]) == len(result.figure["loss"]) - 1
