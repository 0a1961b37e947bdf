"""Report writers: the HTML, Markdown, JSON and CSV outputs of ``study report`` (SPEC section 7)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from study.report.command import report_study
    from study.report.figures import curves_figure, importance_figure
    from study.report.size_figures import size_effect_figure, threshold_figure
    from study.report.writers import REPORT_SCHEMA, write_report

__all__ = [
    "REPORT_SCHEMA",
    "curves_figure",
    "importance_figure",
    "report_study",
    "size_effect_figure",
    "threshold_figure",
    "write_report",
]

_EXPORTS = {
    "report_study": "study.report.command",
    "curves_figure": "study.report.figures",
    "importance_figure": "study.report.figures",
    "size_effect_figure": "study.report.size_figures",
    "threshold_figure": "study.report.size_figures",
    "REPORT_SCHEMA": "study.report.writers",
    "write_report": "study.report.writers",
}


def __getattr__(name: str) -> Any:
    # PEP 562: a name is imported on first use, so importing the package loads none of them.
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
