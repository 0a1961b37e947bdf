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

# Faults of the training data itself, and the trainings whose readings they spoil: labels that
# carry no signal give "no descent" and a huge noise scale whatever the lr and batch size.
_DATA_FAULTS = ("labels", "outliers")
_TRAININGS = ("lr", "overfit-one-batch", "batch-size")

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
    """``results`` with the advice of each training check that did not pass led by the
    failed data checks (:data:`_DATA_FAULTS`), which can cause its reading by themselves."""
    failed = [r.name for r in results if r.name in _DATA_FAULTS and r.status == "fail"]
    if not failed:
        return list(results)
    one = len(failed) == 1
    first = (f"first fix what the {' and '.join(failed)} check{'' if one else 's'} found, "
             f"which can cause this reading by {'itself' if one else 'themselves'}; then ")
    return [replace(r, advice=first + r.advice)
            if r.name in _TRAININGS and r.status != "pass" else r for r in results]


def _function(name: str) -> Check:
    module, attribute = _FUNCTIONS[name]
    return getattr(importlib.import_module(module), attribute)
