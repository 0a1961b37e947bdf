"""Training: data, models, the penalty, the training loop and the diagnosis of its curve.

Nothing here imports Optuna or MLflow: the :class:`Trainer` reports each epoch to callbacks,
so the same loop serves a study's trials, ``study trial``, the benchmark's baseline and the
landscape probe.
"""

from study.training.data import DATASETS, TensorData, check_dataset_spec, load_dataset
from study.training.diagnostics import Diagnosis, diagnose
from study.training.models import INITS, MODELS, build_model, count_parameters
from study.training.penalty import (
    KERNEL_MODULES,
    PenaltyMode,
    make_optimizer,
    penalized_parameters,
    penalty_term,
    weight_sq_norm,
)
from study.training.trainer import (
    INIT_SAMPLES,
    EpochReport,
    HParams,
    InitReport,
    Trainer,
    early_losses,
    resolve_device,
)

__all__ = [
    "DATASETS",
    "INITS",
    "INIT_SAMPLES",
    "KERNEL_MODULES",
    "MODELS",
    "Diagnosis",
    "EpochReport",
    "HParams",
    "InitReport",
    "PenaltyMode",
    "TensorData",
    "Trainer",
    "build_model",
    "check_dataset_spec",
    "count_parameters",
    "diagnose",
    "early_losses",
    "load_dataset",
    "make_optimizer",
    "penalized_parameters",
    "penalty_term",
    "resolve_device",
    "weight_sq_norm",
]
