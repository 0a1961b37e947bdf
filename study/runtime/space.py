"""The search space: what Optuna samples for one trial, its training seed, and what a trial run
logs as params."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from study._choices import search_spec
from study.training import HParams

if TYPE_CHECKING:
    import optuna

    from study.config import StudyConfig

__all__ = ["suggest_hparams", "suggest_training_options", "train_seed", "trial_params"]


def suggest_hparams(trial: optuna.Trial, config: StudyConfig) -> HParams:
    """Sample one point of the search space; a dimension whose bounds meet is fixed."""
    fixed = config.fixed_dimensions
    width = fixed.get("width") or trial.suggest_int(
        "width", config.width_min, config.width_max, log=True
    )
    lr = fixed.get("lr") or trial.suggest_float("lr", config.lr_min, config.lr_max, log=True)
    batch_size = fixed.get("batch_size") or trial.suggest_categorical(
        "batch_size", list(config.batch_sizes)
    )
    if "weight_decay" in fixed:
        weight_decay = fixed["weight_decay"]
    else:
        weight_decay = trial.suggest_float(
            "weight_decay", config.weight_decay_min, config.weight_decay_max, log=True
        )
    penalty_mode = fixed.get("penalty_mode") or trial.suggest_categorical(
        "penalty_mode", list(config.penalty_mode)
    )
    return HParams(width=int(width), lr=float(lr), batch_size=int(batch_size),
                   weight_decay=float(weight_decay), penalty_mode=str(penalty_mode),
                   **suggest_training_options(trial, config))


def suggest_training_options(trial: optuna.Trial, config: StudyConfig) -> dict[str, Any]:
    """The optimizer, SGD's momentum (suggested only for a trial that uses SGD: Adam ignores
    it), the dropout rate and the BatchNorm momentum: each fixed, a category or a range."""
    optimizer = config.optimizer[0] if len(config.optimizer) == 1 else \
        trial.suggest_categorical("optimizer", list(config.optimizer))
    options: dict[str, Any] = {"optimizer": str(optimizer)}
    for field in ("momentum", "dropout", "bn_momentum"):
        kind, value = search_spec(getattr(config, field))
        if kind == "fixed" or (field == "momentum" and optimizer != "sgd"):
            options[field] = value if kind == "fixed" else HParams.momentum
        elif kind == "categorical":
            options[field] = float(trial.suggest_categorical(field, value))
        else:
            options[field] = trial.suggest_float(field, *value)
    return options


def train_seed(study_seed: int, trial_number: int) -> int:
    """The training seed of trial ``trial_number``: independent streams for different trials
    (and studies), the same for the same pair, so a retry or a re-run trains identically.

    The data split stays the study's (``study_seed``): trials differ in their weights and batch
    order, not in what they are evaluated on.
    """
    return int(np.random.SeedSequence([study_seed, trial_number]).generate_state(1)[0])


def trial_params(hp: HParams, config: StudyConfig, *, device: str, n_params: int | None,
                 seed: int, input_shape: tuple[int, ...] | None = None) -> dict:
    """The params of a trial run (SPEC sections 5 and 9); ``seed`` is its training seed and
    ``input_shape`` the ``(C, H, W)`` the model was built for (an image folder's resolved
    size). ``n_params`` is ``None`` (left out) for a model that was never built."""
    shape = {"input_shape": "x".join(str(s) for s in input_shape)} if input_shape else {}
    return {**shape,
        "width": hp.width, "lr": hp.lr, "batch_size": hp.batch_size,
        "weight_decay": hp.weight_decay, "penalty_mode": hp.penalty_mode,
        "optimizer": hp.optimizer, **({"momentum": hp.momentum} if hp.optimizer == "sgd" else {}),
        "dropout": hp.dropout, "bn_momentum": hp.bn_momentum,
        "model": config.model, "dataset": config.dataset, "init": config.init,
        "epochs": config.epochs, "seed": config.seed, "train_seed": seed, "device": device,
        "n_params": n_params,
        **{k: v for k, v in (("depth", config.depth), ("image_size", config.image_size))
           if v is not None},
    }
