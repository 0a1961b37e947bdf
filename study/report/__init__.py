"""Report writers: the HTML, Markdown, JSON and CSV outputs of ``study report`` (SPEC section 7)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from study._lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
