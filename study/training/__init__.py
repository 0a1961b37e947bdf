"""Training: data, models, the penalty, the training loop and the diagnosis of its curve.

Nothing here imports Optuna or MLflow: the :class:`Trainer` reports each epoch to callbacks,
so the same loop serves a study's trials, ``study trial``, the benchmark's baseline and the
landscape probe.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from study._lazy import lazy_exports

if TYPE_CHECKING:
    from study.training._rng import NoiseStream
    from study.training.data import TensorData, load_dataset
    from study.training.diagnostics import Diagnosis, curve_record, curve_rows, diagnose
    from study.training.factory import ModelCheck, check_model, is_factory, model_sha256
    from study.training.models import build_model, count_parameters, factory_defaults
    from study.training.penalty import (
        KERNEL_MODULES,
        make_optimizer,
        penalized_parameters,
        penalty_term,
        weight_sq_norm,
    )
    from study.training.reports import GAP_FIELDS, EpochReport, InitReport, early_losses
    from study.training.specs import (
        DATASETS,
        DEFAULT_DEPTH,
        INITS,
        MODELS,
        OPTIMIZERS,
        RESNETS,
        HParams,
        PenaltyMode,
        check_dataset_spec,
        check_image_size,
        check_model_spec,
        check_optimizer_mode,
        check_training_options,
    )
    from study.training.trainer import INIT_SAMPLES, Trainer, epoch_orders, resolve_device

__all__ = [
    "DATASETS",
    "DEFAULT_DEPTH",
    "GAP_FIELDS",
    "INITS",
    "INIT_SAMPLES",
    "KERNEL_MODULES",
    "MODELS",
    "OPTIMIZERS",
    "RESNETS",
    "Diagnosis",
    "EpochReport",
    "HParams",
    "InitReport",
    "ModelCheck",
    "NoiseStream",
    "PenaltyMode",
    "TensorData",
    "Trainer",
    "build_model",
    "check_dataset_spec",
    "check_image_size",
    "check_model",
    "check_model_spec",
    "check_optimizer_mode",
    "check_training_options",
    "count_parameters",
    "curve_record",
    "curve_rows",
    "diagnose",
    "early_losses",
    "epoch_orders",
    "factory_defaults",
    "is_factory",
    "load_dataset",
    "make_optimizer",
    "model_sha256",
    "penalized_parameters",
    "penalty_term",
    "resolve_device",
    "weight_sq_norm",
]

_EXPORTS = {
    "DATASETS": "study.training.specs",
    "TensorData": "study.training.data",
    "check_dataset_spec": "study.training.specs",
    "check_image_size": "study.training.specs",
    "load_dataset": "study.training.data",
    "Diagnosis": "study.training.diagnostics",
    "curve_record": "study.training.diagnostics",
    "curve_rows": "study.training.diagnostics",
    "diagnose": "study.training.diagnostics",
    "ModelCheck": "study.training.factory",
    "check_model": "study.training.factory",
    "is_factory": "study.training.factory",
    "model_sha256": "study.training.factory",
    "DEFAULT_DEPTH": "study.training.specs",
    "INITS": "study.training.specs",
    "MODELS": "study.training.specs",
    "RESNETS": "study.training.specs",
    "build_model": "study.training.models",
    "check_model_spec": "study.training.specs",
    "count_parameters": "study.training.models",
    "factory_defaults": "study.training.models",
    "KERNEL_MODULES": "study.training.penalty",
    "PenaltyMode": "study.training.specs",
    "make_optimizer": "study.training.penalty",
    "penalized_parameters": "study.training.penalty",
    "penalty_term": "study.training.penalty",
    "weight_sq_norm": "study.training.penalty",
    "OPTIMIZERS": "study.training.specs",
    "check_optimizer_mode": "study.training.specs",
    "check_training_options": "study.training.specs",
    "INIT_SAMPLES": "study.training.trainer",
    "GAP_FIELDS": "study.training.reports",
    "EpochReport": "study.training.reports",
    "HParams": "study.training.specs",
    "InitReport": "study.training.reports",
    "Trainer": "study.training.trainer",
    "early_losses": "study.training.reports",
    "epoch_orders": "study.training.trainer",
    "NoiseStream": "study.training._rng",
    "resolve_device": "study.training.trainer",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
