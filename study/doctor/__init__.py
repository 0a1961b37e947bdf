"""Why is my training loss rising? The checklist as checks run on the user's own data and model.

Each check (:data:`CHECKS`) measures one cause (labels, preprocessing, duplicates, outliers,
initialization, a batch that cannot be overfitted, the learning rate, the batch size, the
training order) on the data and model a study would train, and says ``pass``, ``warn`` or
``fail`` with its evidence in numbers and what to do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from study._lazy import lazy_exports

if TYPE_CHECKING:
    from study.doctor.base import CheckResult, DoctorInputs
    from study.doctor.command import DoctorOutcome, run_doctor
    from study.doctor.names import CHECKS
    from study.doctor.output import table_text
    from study.doctor.runner import run_checks

__all__ = ["CHECKS", "CheckResult", "DoctorInputs", "DoctorOutcome", "run_checks", "run_doctor",
           "summary_text", "table_text"]

_EXPORTS = {
    "CHECKS": "study.doctor.names",
    "CheckResult": "study.doctor.base",
    "DoctorInputs": "study.doctor.base",
    "DoctorOutcome": "study.doctor.command",
    "run_checks": "study.doctor.runner",
    "run_doctor": "study.doctor.command",
    "summary_text": "study.doctor.output",
    "table_text": "study.doctor.output",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
