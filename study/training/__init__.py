"""Training: data, models, the penalty, the training loop and the diagnosis of its curve.

Nothing here imports Optuna or MLflow: the :class:`Trainer` reports each epoch to callbacks,
so the same loop serves a study's trials, ``study trial``, the benchmark's baseline and the
landscape probe.
"""

from study.training.data import (
    DATASETS,
    TensorData,
    check_dataset_spec,
    check_image_size,
    load_dataset,
)
from study.training.diagnostics import Diagnosis, curve_record, curve_rows, diagnose
from study.training.factory import ModelCheck, check_model, is_factory, model_sha256
from study.training.models import (
    DEFAULT_DEPTH,
    INITS,
    MODELS,
    RESNETS,
    build_model,
    check_model_spec,
    count_parameters,
)
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
    "DEFAULT_DEPTH",
    "INITS",
    "INIT_SAMPLES",
    "KERNEL_MODULES",
    "MODELS",
    "RESNETS",
    "Diagnosis",
    "EpochReport",
    "HParams",
    "InitReport",
    "ModelCheck",
    "PenaltyMode",
    "TensorData",
    "Trainer",
    "build_model",
    "check_dataset_spec",
    "check_image_size",
    "check_model",
    "check_model_spec",
    "count_parameters",
    "curve_record",
    "curve_rows",
    "diagnose",
    "early_losses",
    "is_factory",
    "load_dataset",
    "make_optimizer",
    "model_sha256",
    "penalized_parameters",
    "penalty_term",
    "resolve_device",
    "weight_sq_norm",
]
