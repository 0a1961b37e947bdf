"""Analysis of a study: the trial table, the early-loss decomposition and the verdict."""

from study.analysis.analyze import SCHEMA, analyze, write_analysis
from study.analysis.command import analyze_study
from study.analysis.regression import ModelFit, design_matrix, fit, fit_decomposition
from study.analysis.sources import StudyData, load_study_data
from study.analysis.table import TABLE_COLUMNS, trial_table, trial_table_from_mlflow, usable_trials
from study.analysis.verdict import CODES, MIN_TRIALS, verdict

__all__ = [
    "CODES",
    "MIN_TRIALS",
    "SCHEMA",
    "TABLE_COLUMNS",
    "ModelFit",
    "StudyData",
    "analyze",
    "analyze_study",
    "design_matrix",
    "fit",
    "fit_decomposition",
    "load_study_data",
    "trial_table",
    "trial_table_from_mlflow",
    "usable_trials",
    "verdict",
    "write_analysis",
]
