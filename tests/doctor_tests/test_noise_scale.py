"""The gradient noise scale on digits: the default batch is in range, the full split is not."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from study.doctor.base import DoctorInputs
from study.doctor.lr_range import ShortTraining, check_lr
from study.doctor.noise_scale import (
    FACTOR,
    MAX_BATCH_FRACTION,
    TRAIN_EPOCHS,
    check_batch_size,
    noise_scale,
)
from tests.doctor_tests.conftest import DEFAULT_HP

SMALL_NET = "tests/doctor_tests/models.py:small_net"


@pytest.mark.parametrize("model", ["cnn", SMALL_NET])
def test_default_config_passes(clean_inputs, model):
    inputs = dataclasses.replace(clean_inputs, model=model)
    result = check_batch_size(inputs, {"lr": check_lr(inputs, {})})
    d = result.details
    assert result.status == "pass", result.evidence
    assert d["b_simple_init"] > 0 and d["b_simple"] > 0
    assert d["b_simple"] / FACTOR <= DEFAULT_HP.batch_size <= FACTOR * d["b_simple"]
    assert d["decided_by"] == "trained"
    assert d["train_steps"] == TRAIN_EPOCHS * (inputs.data.n_train // DEFAULT_HP.batch_size)
    json.dumps(d)
    json.dumps(result.figure)


def test_full_split_batch_warns_of_wasted_compute(clean_inputs):
    n = clean_inputs.data.n_train
    inputs = dataclasses.replace(clean_inputs,
                                 hparams=dataclasses.replace(DEFAULT_HP, batch_size=n))
    result = check_batch_size(inputs, {})
    assert result.status == "warn", result.evidence
    assert n > FACTOR * result.details["b_simple"]
    assert "wasted compute" in result.advice


def test_three_sample_split_is_not_measurable_and_passes(digits_data):
    tiny = dataclasses.replace(digits_data, x_train=digits_data.x_train[:3],
                               y_train=digits_data.y_train[:3])
    result = check_batch_size(DoctorInputs(tiny, DEFAULT_HP), {})
    assert result.status == "pass"
    assert result.details["b_simple"] is None
    assert "not measurable" in result.evidence


def test_estimate_leaves_the_model_alone(clean_inputs):
    run = ShortTraining(clean_inputs, lr=DEFAULT_HP.lr)
    buffers = [b.clone() for b in run.model.buffers()]
    weights = [p.detach().clone() for p in run.model.parameters()]
    generator = torch.Generator().manual_seed(0)
    estimate = noise_scale(run, batch_size=64, generator=generator)
    batches = clean_inputs.data.n_train // 64
    assert estimate["batches"] == batches and estimate["b_big"] == 64 * batches
    assert estimate["g2"] > 0 and estimate["trace"] > 0
    assert estimate["b_simple"] == pytest.approx(estimate["trace"] / estimate["g2"])
    assert all(torch.equal(a, b) for a, b in zip(buffers, run.model.buffers(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(weights, run.model.parameters(), strict=True))
    assert all(p.grad is None for p in run.model.parameters())


def _first(digits_data, n: int, batch_size: int) -> DoctorInputs:
    """The first ``n`` training samples of digits at ``batch_size``."""
    data = dataclasses.replace(digits_data, x_train=digits_data.x_train[:n],
                               y_train=digits_data.y_train[:n], origin=None)
    return DoctorInputs(data, dataclasses.replace(DEFAULT_HP, batch_size=batch_size), seed=0)


def test_a_tiny_batch_is_advised_no_more_than_an_eighth_of_the_split(digits_data):
    """Found by a user: on 800 samples the check advised "a batch nearer 328" (2 steps an
    epoch); on 240 samples B_simple exceeds an eighth of them (30) several times over."""
    result = check_batch_size(_first(digits_data, 240, 2), {})
    largest = int(240 * MAX_BATCH_FRACTION)
    assert result.status == "warn", result.evidence
    assert result.details["b_simple"] > largest
    assert result.advice.startswith(f"noisy steps: a batch nearer {largest} (with the lr "
                                    "scaled up)")
    assert result.advice.endswith("not larger: a batch above an eighth of the training split "
                                  "leaves fewer than 8 steps an epoch and little of SGD's noise")


def test_a_batch_within_a_decade_of_the_largest_advised_one_passes(digits_data):
    """B_simple above 10x the batch warned even where the batch it pointed to was most of the
    split; the largest advised batch (an eighth) is what the batch is held against."""
    result = check_batch_size(_first(digits_data, 400, 6), {})
    assert result.details["b_simple"] > FACTOR * 6  # the old rule warned here
    assert result.status == "pass", result.evidence
    assert result.evidence.endswith("; no batch above 50 is advised (an eighth of the 400 "
                                    "training samples)")
