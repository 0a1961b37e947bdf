"""The checklist's runner: the order of the checks, and the training checks' advice led by a
failed data check that can cause their readings."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from study.doctor.base import CheckResult, DoctorInputs
from study.doctor.figures import CAPTIONS, build_figure
from study.doctor.runner import point_back, run_checks
from study.training import load_dataset
from tests.doctor_tests.conftest import DEFAULT_HP


def _result(name: str, status: str) -> CheckResult:
    return CheckResult(name, status, evidence="-", advice="do this", budget="-")


@pytest.fixture(scope="module")
def rolled() -> dict[str, CheckResult]:
    """lr, batch-size and labels on digits whose training labels are rolled by one."""
    data = load_dataset("digits", seed=0)
    shifted = dataclasses.replace(data, y_train=torch.roll(data.y_train, 1))
    return {r.name: r for r in run_checks(DoctorInputs(shifted, DEFAULT_HP, seed=0),
                                          checks=("lr", "batch-size", "labels"))}


def test_labels_that_carry_no_signal_lead_the_advice_of_the_trainings_that_did_not_pass(
        rolled):
    """Found by a first user: labels rolled by one made lr warn "no descent" and batch-size
    advise a larger batch, with no word of the labels."""
    results = rolled
    assert results["labels"].status == "fail", results["labels"].evidence
    led = [r for name, r in results.items() if name != "labels" and r.status != "pass"]
    assert led, {n: r.evidence for n, r in results.items()}
    for r in led:
        assert r.advice.startswith("first fix what the labels check found, which can cause "
                                   "this reading by itself; then "), r.advice


def test_only_the_trainings_that_did_not_pass_are_led_and_only_after_a_data_failure():
    results = [_result("preprocessing", "fail"), _result("lr", "warn"),
               _result("batch-size", "pass"), _result("labels", "fail"),
               _result("outliers", "fail"), _result("init", "warn")]
    advice = {r.name: r.advice for r in point_back(results)}
    assert advice["lr"] == ("first fix what the labels and outliers checks found, which can "
                            "cause this reading by themselves; then do this")
    assert advice["batch-size"] == advice["init"] == advice["preprocessing"] == "do this"
    clean = [_result("labels", "warn"), _result("lr", "fail")]
    assert point_back(clean) == clean  # a warning of the data is not a fault that explains it


def test_splits_preprocessed_apart_lead_the_advice_of_the_outliers_they_make():
    """Found by a first user: validation scaled x16 failed preprocessing and also warned of
    validation input outliers, with no word of the preprocessing."""
    results = point_back([_result("preprocessing", "fail"), _result("outliers", "warn"),
                          _result("lr", "warn")])
    advice = {r.name: r.advice for r in results}
    assert advice["outliers"] == ("first fix what the preprocessing check found, which can "
                                  "cause this reading by itself; then do this")
    assert advice["lr"] == "do this"  # training sees only the training split


def test_labels_not_learned_draw_real_against_shuffled_accuracy(rolled):
    """Found by a first user: a failed labels check had no figure (no suspects searched)."""
    result = rolled["labels"]
    figure = result.figure
    assert figure["kind"] == "labels-signal"
    assert len(figure["real"]) == len(figure["shuffled"]) > 1
    assert max(figure["real"]) == result.details["real_val_accuracy"]
    assert max(figure["shuffled"]) == result.details["shuffled_val_accuracy"]
    ax = build_figure(result).axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["real labels", "shuffled labels"]
    assert list(ax.get_lines()[0].get_ydata()) == figure["real"]
    assert ax.get_xlabel() == "epoch of the short training"
    assert ax.get_ylabel() == "validation accuracy" and ax.get_ylim() == (0, 1)
    assert "labels-signal" in CAPTIONS


@pytest.fixture(scope="module")
def all_shuffled(tmp_path_factory) -> dict[str, CheckResult]:
    """lr, overfit-one-batch and labels on digits with every label permuted (before the split,
    as a user's file), for a user's slow model (small_net, width 8) at Adam's default 1e-3."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    path = tmp_path_factory.mktemp("shuffled") / "shuffled_all.npz"
    np.savez(path, X=bunch.images.astype(np.float32),
             y=np.random.default_rng(0).permutation(bunch.target))
    inputs = DoctorInputs(load_dataset(f"npz:{path}", seed=0),
                          dataclasses.replace(DEFAULT_HP, width=8), seed=0,
                          model="tests/doctor_tests/models.py:small_net")
    return {r.name: r for r in run_checks(inputs, checks=("lr", "overfit-one-batch", "labels"))}


def test_fully_shuffled_labels_fail_the_labels_check_not_the_model(all_shuffled):
    """Found by a user: the range test found no descent on random labels, overfit-one-batch
    fell back to lr 1e-3 and failed ("the model ... is broken") while its loss still fell
    steadily, and that failure turned the labels' failure into "not conclusive"."""
    results = all_shuffled
    assert results["lr"].details["suggested_lr"] is None  # the fallback to lr 1e-3
    assert results["overfit-one-batch"].status == "warn", results["overfit-one-batch"].evidence
    assert results["labels"].status == "fail", results["labels"].evidence
    assert results["labels"].evidence.startswith("val accuracy ")
    assert results["labels"].advice.startswith("the model learns real labels no better than "
                                               "shuffled ones: check that x and y are aligned")
    assert results["overfit-one-batch"].advice.startswith(
        "first fix what the labels check found, which can cause this reading by itself; then "
        "the model memorizes the batch, slowly")
