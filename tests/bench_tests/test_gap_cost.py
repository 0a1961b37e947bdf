"""The gap measurement's cost benchmark on tiny settings: its structure and a share of an epoch
that is a finite, non-negative number (timings themselves are not asserted)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from bench.gap_cost import MODELS, bench_gap_cost
from bench.harness import BATCH, QUICK
from study.training.data import TensorData, load_dataset


@pytest.fixture(scope="module")
def result() -> dict:
    digits = load_dataset("digits", seed=0)
    small = TensorData("digits", digits.x_train[:128], digits.y_train[:128], digits.x_val[:64],
                       digits.y_val[:64], digits.n_classes)
    plan = dataclasses.replace(QUICK, widths=(4, 8), overhead_repeats=1)
    return bench_gap_cost(small, plan, torch.device("cpu"))


def test_every_model_has_its_timings_and_shares(result):
    assert set(result["per_model"]) == set(MODELS) == {"cnn", "vgg"}
    for row in result["per_model"].values():
        assert set(row["times"]) == {"epoch_off", "epoch_on", "measure"}
        assert all(len(t) == 1 and t[0] > 0 for t in row["times"].values())
        assert math.isfinite(row["ratio_by_difference"])


def test_the_share_is_finite_and_not_negative(result):
    assert math.isfinite(result["ratio"]) and result["ratio"] >= 0
    assert all(math.isfinite(r["ratio"]) and r["ratio"] >= 0
               for r in result["per_model"].values())


def test_vgg_with_dropout_prices_the_mixed_mode_too(result):
    assert result["per_model"]["cnn"]["passes"] == 2
    assert result["per_model"]["vgg"]["passes"] == 3


def test_the_setting_is_recorded(result):
    assert (result["samples"], result["n_train"], result["n_val"]) == (64, 128, 64)
    assert (result["batch_size"], result["width"], result["device"]) == (BATCH, 4, "cpu")
