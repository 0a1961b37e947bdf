"""Analysis of a study: the trial table, the size effect of each question split into its data
and penalty parts, the threshold weight decay, the verdict, importance, ``study analyze``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from study._lazy import lazy_exports

# The statistics load at once (numpy, pandas, SciPy; tests/test_layering.py keeps torch, MLflow
# and Optuna out of them); and `analyze` and `threshold` must be bound here, or the submodules
# of the same names would shadow the functions.
from study.analysis.analyze import SCHEMA, SCHEMAS, analyze, write_analysis
from study.analysis.estimate import Estimate
from study.analysis.regression import ModelFit, fit
from study.analysis.sizeeffect import QUESTIONS, SizeModel, fit_size_model
from study.analysis.table import TABLE_COLUMNS, trial_table, trial_table_from_mlflow, usable_trials
from study.analysis.threshold import threshold
from study.analysis.verdict import CODES, MIN_TRIALS, decide

if TYPE_CHECKING:
    from study.analysis.command import analyze_study
    from study.analysis.sources import StudyData, load_study_data

__all__ = [
    "CODES",
    "MIN_TRIALS",
    "QUESTIONS",
    "SCHEMA",
    "SCHEMAS",
    "TABLE_COLUMNS",
    "Estimate",
    "ModelFit",
    "SizeModel",
    "StudyData",
    "analyze",
    "analyze_study",
    "decide",
    "fit",
    "fit_size_model",
    "load_study_data",
    "threshold",
    "trial_table",
    "trial_table_from_mlflow",
    "usable_trials",
    "write_analysis",
]

# The store readers load on first use: they bring Optuna and MLflow.
_EXPORTS = {
    "analyze_study": "study.analysis.command",
    "StudyData": "study.analysis.sources",
    "load_study_data": "study.analysis.sources",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
