"""Report writers: the HTML, Markdown, JSON and CSV outputs of ``study report`` (SPEC section 7)."""

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
