"""The checklist's runner: the order of the checks, and the training checks' advice led by a
failed data check that can cause their readings."""

from __future__ import annotations

import dataclasses

import torch

from study.doctor.base import CheckResult, DoctorInputs
from study.doctor.runner import point_back, run_checks
from tests.doctor_tests.conftest import DEFAULT_HP


def _result(name: str, status: str) -> CheckResult:
    return CheckResult(name, status, evidence="-", advice="do this", budget="-")


def test_labels_that_carry_no_signal_lead_the_advice_of_the_trainings_that_did_not_pass(
        digits_data):
    """Found by a first user: labels rolled by one made lr warn "no descent" and batch-size
    advise a larger batch, with no word of the labels."""
    shifted = dataclasses.replace(digits_data, y_train=torch.roll(digits_data.y_train, 1))
    results = {r.name: r for r in run_checks(DoctorInputs(shifted, DEFAULT_HP, seed=0),
                                             checks=("lr", "batch-size", "labels"))}
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
