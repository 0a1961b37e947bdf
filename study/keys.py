"""Names every layer shares: attributes kept in the Optuna storage, MLflow tags and artifacts,
and the layout of a trial's per-epoch curve.

Plain constants, no imports: the training loop, the storages, tracking, the runtime and the
analysis all read and write these names, so each is defined here once.
"""

from __future__ import annotations

__all__ = [
    "BUDGET_ATTR",
    "CONFIG_ATTR",
    "CURVE_ATTR",
    "CURVE_FIELDS",
    "FAILURE_ATTR",
    "HPARAMS_ATTR",
    "INTERRUPTED",
    "LANDSCAPE_ATTR_PREFIX",
    "LOCAL_WORKER_ENV",
    "MODEL_SHA_ATTR",
    "MODEL_SHA_TAG",
    "PARENT_RUN_ATTR",
    "PARENT_STORE_ATTR",
    "RUN_ID_ATTR",
    "TRAIN_SEED_ATTR",
    "WEIGHTS_ARTIFACT",
    "WORKER_ATTR",
]

# -- study user attrs (Optuna) -----------------------------------------------------------------
CONFIG_ATTR = "study_config"
"""The study-defining settings, stored when the study is created."""
BUDGET_ATTR = "n_trials"
"""The budget of finished trials set by the last ``study run`` (workers take it)."""
PARENT_RUN_ATTR = "mlflow_parent_run_id"
"""The MLflow run every trial run nests under."""
PARENT_STORE_ATTR = "mlflow_tracking_uri"
"""The tracking store of that run (passwords redacted): where workers must log."""
LANDSCAPE_ATTR_PREFIX = "landscape_trial_"
"""``landscape_trial_<number>``: a probe's figures for a (finished, hence immutable) trial."""
MODEL_SHA_ATTR = "model_sha256"
"""SHA-256 of a model factory's source file when the study was created (built-ins: absent)."""

# -- trial user attrs (Optuna) -----------------------------------------------------------------
RUN_ID_ATTR = "mlflow_run_id"
HPARAMS_ATTR = "hparams"
FAILURE_ATTR = "failure"
INTERRUPTED = "interrupted"
"""The ``failure`` of a trial stopped by Ctrl-C or SIGTERM (it is queued again)."""
TRAIN_SEED_ATTR = "train_seed"
"""The trial's own training seed (weights and batch order); a retried trial keeps it."""
WORKER_ATTR = "worker"
"""``host:pid`` of the process that runs the trial (crash recovery reads it)."""
CURVE_ATTR = "curve"
"""One row per epoch, the values of :data:`CURVE_FIELDS` in that order."""
CURVE_FIELDS = ("loss", "data_loss", "penalty", "val_loss", "val_accuracy")

# -- MLflow tags -------------------------------------------------------------------------------
MODEL_SHA_TAG = "study.model_sha256"
"""On the parent run: SHA-256 of the model factory's source file this session trains."""

# -- MLflow artifacts --------------------------------------------------------------------------
WEIGHTS_ARTIFACT = "weights/final.pt"
"""Final weights of every finished trial (a ``state_dict``, loaded with ``weights_only``)."""
# In the environment of the workers `study run --workers` starts: that process's pid (it says
# for all of them how a signal ended the study).
LOCAL_WORKER_ENV = "STUDY_WORKER_OF"
