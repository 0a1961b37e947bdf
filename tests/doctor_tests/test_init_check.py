"""The initialization check on digits: healthy models pass, the x10 weights fail."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from study.doctor.base import DoctorInputs
from study.doctor.init_check import FAIL_RATIO, WARN_RATIO, check_init, label_entropy
from study.doctor.lr_range import check_lr
from study.doctor.noise_scale import check_batch_size
from study.doctor.overfit import check_overfit_one_batch
from tests.doctor_tests.conftest import DEFAULT_HP

SMALL_NET = "tests/doctor_tests/models.py:small_net"
SCALED_CNN = "tests/doctor_tests/models.py:scaled_cnn"


@pytest.mark.parametrize("model", ["cnn", SMALL_NET])
def test_default_config_passes(clean_inputs, model):
    result = check_init(dataclasses.replace(clean_inputs, model=model), {})
    d = result.details
    assert result.status == "pass", result.evidence
    assert d["reference_loss"] == pytest.approx(math.log(10))
    assert d["ratio"] < WARN_RATIO
    assert d["flagged"] == {}
    assert len(d["layers"]) >= 3


def test_layers_are_named_as_in_the_model(clean_inputs):
    result = check_init(clean_inputs, {})
    model = clean_inputs.trainer(epochs=1).model
    kernels = [n for n, m in model.named_modules()
               if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    assert result.figure["layers"] == kernels
    assert len(result.figure["activation_rms"]) == len(result.figure["grad_norm"]) == len(kernels)
    assert all(g > 0 for g in result.figure["grad_norm"])


def test_scaled_weights_fail(clean_inputs):
    result = check_init(dataclasses.replace(clean_inputs, model=SCALED_CNN), {})
    d = result.details
    assert result.status == "fail", result.evidence
    assert d["ratio"] > FAIL_RATIO
    assert d["flagged"] and set(d["flagged"]) <= set(d["layers"])
    assert max(d["activation_rms"]) / d["data_rms"] > 10
    json.dumps(result.figure)
    json.dumps(d)


def test_scaled_weights_fail_no_other_check(clean_inputs):
    inputs = dataclasses.replace(clean_inputs, model=SCALED_CNN)
    found = {"lr": check_lr(inputs, {})}
    assert found["lr"].status != "fail", found["lr"].evidence
    for check in (check_overfit_one_batch, check_batch_size):
        result = check(inputs, found)
        assert result.status != "fail", (result.name, result.evidence)


def test_leaves_the_inputs_and_random_state_alone(clean_inputs):
    x, y = clean_inputs.data.x_train.clone(), clean_inputs.data.y_train.clone()
    state = torch.get_rng_state()
    first = check_init(clean_inputs, {})
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(clean_inputs.data.x_train, x) and torch.equal(clean_inputs.data.y_train, y)
    assert check_init(clean_inputs, {}).details == first.details


def test_label_entropy_is_ln_k_when_balanced_and_less_otherwise():
    assert label_entropy(torch.arange(4).repeat(5), 4) == pytest.approx(math.log(4))
    skewed = torch.tensor([0] * 99 + [1])
    expected = -(0.99 * math.log(0.99) + 0.01 * math.log(0.01))
    assert label_entropy(skewed, 2) == pytest.approx(expected)


def test_unbalanced_labels_keep_ln_k_as_reference(digits_data):
    y = digits_data.y_train.clone()
    y[y < 5] = 0  # half the samples in one class
    inputs = DoctorInputs(dataclasses.replace(digits_data, y_train=y), DEFAULT_HP)
    result = check_init(inputs, {})
    d = result.details
    assert d["label_entropy"] < d["reference_loss"] == pytest.approx(math.log(10))
    assert result.status == "pass", result.evidence
