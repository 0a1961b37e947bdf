"""Run the checklist: each check in turn, timed, one failing check never stopping the others.

The checks run cheapest and most basic first (the data, then the model at initialization, then
the learning-rate range test, whose suggestion the later short trainings use) and are reported
in the order of the checklist (:data:`CHECKS`).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from study.doctor.base import CheckResult, DoctorInputs
from study.doctor.names import CHECKS
from study.errors import StudyError
from study.redact import one_line

__all__ = ["CHECKS", "point_back", "run_checks"]

# Outliers after labels: a mislabeled sample's high loss is explained by its label. Overfit,
# batch size and labels after lr: their short trainings use its suggested learning rate.
_RUN_ORDER = ("preprocessing", "duplicates", "shuffling", "init", "lr", "overfit-one-batch",
              "batch-size", "labels", "outliers")
_FUNCTIONS = {
    "labels": ("study.doctor.labels", "check_labels"),
    "preprocessing": ("study.doctor.data_checks", "check_preprocessing"),
    "duplicates": ("study.doctor.data_checks", "check_duplicates"),
    "shuffling": ("study.doctor.data_checks", "check_shuffling"),
    "outliers": ("study.doctor.outliers", "check_outliers"),
    "init": ("study.doctor.init_check", "check_init"),
    "overfit-one-batch": ("study.doctor.overfit", "check_overfit_one_batch"),
    "lr": ("study.doctor.lr_range", "check_lr"),
    "batch-size": ("study.doctor.noise_scale", "check_batch_size"),
}

# Which failed data check can cause which other check's reading by itself: labels that carry
# no signal give "no descent" and a huge noise scale whatever the lr and batch size; splits
# scaled apart make validation inputs look like outliers.
_TRAININGS = ("lr", "overfit-one-batch", "batch-size")
_CAUSES = {"preprocessing": ("outliers",), "labels": _TRAININGS, "outliers": _TRAININGS}

Check = Callable[[DoctorInputs, Mapping[str, CheckResult]], CheckResult]
Progress = Callable[[CheckResult, int, int], None]


def run_checks(inputs: DoctorInputs, *, progress: Progress | None = None,
               checks: Sequence[str] = CHECKS) -> list[CheckResult]:
    """Run ``checks`` on ``inputs`` and return their results in checklist order.

    A check that raises (the user's model cannot run on a batch, say) is reported as failed
    with the error, and the others still run.

    Args:
        inputs: The data, model and hyperparameters.
        progress: Called as ``progress(result, done, total)`` after each check.
        checks: The names to run, a subset of :data:`CHECKS`.

    Raises:
        KeyboardInterrupt: Ctrl-C stops the checklist; nothing is swallowed.
    """
    unknown = [name for name in checks if name not in CHECKS]
    if unknown:
        raise StudyError(f"`checks` must be among {', '.join(CHECKS)}, but got "
                         f"{', '.join(unknown)}.")
    order = [name for name in _RUN_ORDER if name in checks]
    found: dict[str, CheckResult] = {}
    for done, name in enumerate(order, start=1):
        start = time.perf_counter()
        try:
            result = _function(name)(inputs, found)
        except Exception as exc:  # the user's model or data may raise anything
            result = CheckResult(
                name, "fail", evidence=f"the check could not run: {type(exc).__name__}: "
                                       f"{one_line(exc)}",
                advice="fix the error above; it stops a study's trials the same way",
                budget="-",
            )
        result = replace(result, seconds=round(time.perf_counter() - start, 3))
        found[name] = result
        if progress is not None:
            progress(result, done, len(order))
    return point_back([found[name] for name in CHECKS if name in found])


def point_back(results: Sequence[CheckResult]) -> list[CheckResult]:
    """``results`` with the advice of each check that did not pass led by the failed data
    checks that can cause its reading by themselves (:data:`_CAUSES`)."""
    failed = {r.name for r in results if r.status == "fail"}
    return [_led(r, [c for c in CHECKS if c in failed and r.name in _CAUSES.get(c, ())])
            for r in results]


def _led(result: CheckResult, causes: list[str]) -> CheckResult:
    if not causes or result.status == "pass":
        return result
    one = len(causes) == 1
    return replace(result, advice=f"first fix what the {' and '.join(causes)} "
                                  f"check{'' if one else 's'} found, which can cause this "
                                  f"reading by {'itself' if one else 'themselves'}; then "
                                  f"{result.advice}")


def _function(name: str) -> Check:
    module, attribute = _FUNCTIONS[name]
    return getattr(importlib.import_module(module), attribute)
