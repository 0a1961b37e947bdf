"""The study configuration: one frozen dataclass, validated field by field.

A config is resolved once from defaults, an optional TOML/YAML file and explicit flags (flags win).
Fields marked ``scope="study"`` define the study and are stored with it: a resumed run or a worker
takes them from the storage, and an explicit value that differs is an error, not a silent change.
Fields marked ``scope="session"`` (budget, storage, device, ...) may change from run to run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from study._choices import option_values, search_spec
from study._coerce import as_bool, as_float, as_int, as_list
from study._config_file import read_settings_file
from study._validation import check_choice, check_positive, check_range, fail
from study.errors import ConfigError
from study.storages import check_storage_url
from study.tracking import check_tracking_uri
from study.training.specs import (
    INITS,
    OPTIMIZERS,
    PenaltyMode,
    check_dataset_spec,
    check_image_size,
    check_model_spec,
    check_optimizer_mode,
)

__all__ = ["DEVICES", "OBJECTIVES", "PRUNERS", "SAMPLERS", "TRAINING_OPTIONS", "StudyConfig",
           "load_config_file", "resolve_config"]

OBJECTIVES = ("val_loss", "val_error", "early_loss")
# The training options a trial may search beside its hyperparameters (HParams fields).
TRAINING_OPTIONS = ("optimizer", "momentum", "dropout", "bn_momentum")
SAMPLERS = ("tpe", "random", "gp", "qmc")
PRUNERS = ("median", "hyperband", "none")
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _opt(default: Any, help: str, *, scope: str = "study", **kwargs: Any) -> Any:
    return dataclasses.field(default=default, metadata={"help": help, "scope": scope, **kwargs})


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """Everything that defines a study and one session of it. Field names are the CLI flags."""

    study_name: str = _opt("cnn-width", "Name of the Optuna study (created or resumed).",
                           scope="session")
    storage: str = _opt(
        "sqlite:///optuna.db",
        "Optuna storage URL: sqlite:///FILE, journal:PATH or postgresql://...",
        scope="session", envvar="STUDY_STORAGE",
    )
    tracking_uri: str | None = _opt(
        None, "MLflow tracking URI (default: MLflow's own, sqlite:///mlflow.db).",
        scope="session", envvar="MLFLOW_TRACKING_URI",
    )
    experiment: str = _opt("study", "MLflow experiment of the study's runs.",
                           envvar="MLFLOW_EXPERIMENT_NAME")
    dataset: str = _opt(
        "digits", "digits, volumes3d, npz:PATH, imagefolder:PATH, or a loader "
        "pkg.module:callable / path/file.py:callable returning (X, y).",
    )
    image_size: str | None = _opt(
        None, "imagefolder only: resize to S or HxW pixels (default: the most common size).",
    )
    model: str = _opt(
        "cnn", "cnn, vgg, resnet, resnet-noskip, or a factory pkg.module:callable / "
        "path/file.py:callable called as f(width, *, input_shape, n_classes).",
    )
    depth: int | None = _opt(
        None, "resnet and resnet-noskip only: basic blocks per stage (default: 2).",
    )
    # Keras-style L2 in the loss is the default: it is the behaviour the product explains.
    penalty_mode: tuple[str, ...] = _opt(
        (PenaltyMode.L2_IN_LOSS.value,),
        "l2-in-loss, coupled, decoupled or none; several (comma-separated) are searched.",
    )
    init: str = _opt("torch", "Weight initialization: torch, glorot or he.")
    optimizer: tuple[str, ...] = _opt(
        ("adam",), "adam, sgd or adamw; several (comma-separated) are searched.")
    # SGD's usual momentum; a list (0.5,0.9) or a range LO:HI is searched.
    momentum: tuple[str, ...] = _opt(
        ("0.9",), "SGD's momentum: a value, several (comma-separated) or a range LO:HI, "
        "searched.")
    dropout: tuple[str, ...] = _opt(
        ("0.0",), "Dropout rate before the classifier of the built-in models: a value, several "
        "or a range LO:HI, searched (0: no dropout layer).")
    # PyTorch's default. Keras weighs the old statistics (0.99), PyTorch the new batch: 0.01.
    bn_momentum: tuple[str, ...] = _opt(
        ("0.1",), "BatchNorm momentum in PyTorch's convention: keras (Keras's 0.99) = 0.01, "
        "pytorch = 0.1; several (comma-separated) are searched.")
    # Three epochs show the early-loss effect and keep the default study to minutes on 2 cores.
    epochs: int = _opt(3, "Training epochs per trial.")
    early_epochs: int = _opt(1, "Epochs averaged into the early training loss.")
    objective: str = _opt("val_loss", "What Optuna minimizes: val_loss, val_error or early_loss.")
    # 4..32 spans about two decades of parameters for the cnn, the range the question needs.
    width_min: int = _opt(4, "Smallest width (filters in the first block).")
    width_max: int = _opt(32, "Largest width.")
    lr_min: float = _opt(1e-4, "Smallest learning rate (log scale).")
    lr_max: float = _opt(1e-2, "Largest learning rate.")
    batch_sizes: tuple[int, ...] = _opt((32, 64, 128), "Batch sizes to choose from.")
    weight_decay_min: float = _opt(1e-5, "Smallest weight decay (log scale).")
    weight_decay_max: float = _opt(1e-2, "Largest weight decay.")
    sampler: str = _opt("tpe", "Optuna sampler: tpe, random, gp or qmc (space-filling).")
    pruner: str = _opt("median", "Optuna pruner: median, hyperband or none.")
    seed: int = _opt(0, "Seed of the sampler, the data split and every trial's training.")
    # Twenty trials fit a few minutes on a laptop CPU and give the regression enough rows.
    n_trials: int = _opt(20, "Finished (complete + pruned) trials the study should reach.",
                         scope="session")
    timeout: float | None = _opt(None, "Stop this session after so many seconds.",
                                 scope="session")
    device: str = _opt("auto", "auto (CUDA when present), cpu, cuda, cuda:N or mps.",
                       scope="session")
    heartbeat_interval: int = _opt(
        60, "Seconds between trial heartbeats (RDB storages); stale trials are retried.",
        scope="session",
    )
    # Off by default: compiling costs tens of seconds per trial, repaid only by long GPU trials.
    compile: bool = _opt(False, "torch.compile each trial's model (GPU trials of minutes).",
                         scope="session")
    # Two minutes ride out a database restart or failover; longer would hide a dead server.
    storage_timeout: float = _opt(
        120.0, "Seconds to keep retrying a lost database connection (RDB storages) before "
        "stopping.", scope="session",
    )
    # Two minutes ride out a tracking-server restart; longer would train trials blind.
    tracking_timeout: float = _opt(
        120.0, "Seconds to keep retrying an unreachable MLflow server before stopping.",
        scope="session",
    )

    def __post_init__(self) -> None:
        self._validate()

    # ----------------------------------------------------------------------------------------
    def _validate(self) -> None:
        if not self.study_name.strip():
            fail("study_name", self.study_name, "a non-empty name")
        check_storage_url(self.storage)
        check_tracking_uri(self.tracking_uri)
        if not self.experiment.strip():
            fail("experiment", self.experiment, "a non-empty name")
        check_dataset_spec(self.dataset)
        check_image_size(self.dataset, self.image_size)
        check_model_spec(self.model, depth=self.depth)
        check_choice("init", self.init, INITS)
        if not self.penalty_mode:
            fail("penalty_mode", ",".join(self.penalty_mode), "at least one mode")
        for mode in self.penalty_mode:
            check_choice("penalty_mode", mode, [m.value for m in PenaltyMode])
        if len(set(self.penalty_mode)) != len(self.penalty_mode):
            fail("penalty_mode", ",".join(self.penalty_mode), "a list without repeats")
        self._validate_training_options()
        check_positive("epochs", self.epochs)
        check_positive("early_epochs", self.early_epochs)
        if self.early_epochs > self.epochs:
            fail("early_epochs", self.early_epochs, f"<= epochs ({self.epochs})")
        check_choice("objective", self.objective, OBJECTIVES)
        check_positive("width_min", self.width_min)
        check_range("width_min", self.width_min, "width_max", self.width_max)
        check_positive("lr_min", self.lr_min)
        check_range("lr_min", self.lr_min, "lr_max", self.lr_max)
        if not self.batch_sizes:
            fail("batch_sizes", "", "at least one batch size")
        for size in self.batch_sizes:
            if size < 2:  # BatchNorm cannot train on a batch of one sample
                fail("batch_sizes", size, ">= 2")
        check_positive("weight_decay_min", self.weight_decay_min, allow_zero=True)
        check_range("weight_decay_min", self.weight_decay_min,
                    "weight_decay_max", self.weight_decay_max)
        if self.weight_decay_min == 0 and self.weight_decay_max > 0:
            fail("weight_decay_min", self.weight_decay_min,
                 "> 0 when weight decay is searched on a log scale (or set both to 0)")
        check_choice("sampler", self.sampler, SAMPLERS)
        check_choice("pruner", self.pruner, PRUNERS)
        check_positive("seed", self.seed, allow_zero=True)
        check_positive("n_trials", self.n_trials)
        if self.timeout is not None:
            check_positive("timeout", self.timeout)
        if not _DEVICE_RE.match(self.device):
            fail("device", self.device, "one of " + ", ".join(DEVICES))
        check_positive("heartbeat_interval", self.heartbeat_interval)
        check_positive("tracking_timeout", self.tracking_timeout, allow_zero=True)
        check_positive("storage_timeout", self.storage_timeout, allow_zero=True)

    def _validate_training_options(self) -> None:
        if not self.optimizer:
            fail("optimizer", "", f"one or more of {', '.join(OPTIMIZERS)}")
        for name in self.optimizer:
            check_choice("optimizer", name, OPTIMIZERS)
        if len(set(self.optimizer)) != len(self.optimizer):
            fail("optimizer", ",".join(self.optimizer), "a list without repeats")
        for name in self.optimizer:
            for mode in self.penalty_mode:
                check_optimizer_mode(name, mode)
        # Canonical values (a frozen field set once, here): a stored study compares equal to
        # the same flags however they were spelled (0.90, keras).
        for field in ("momentum", "dropout", "bn_momentum"):
            object.__setattr__(self, field, option_values(field, as_list(getattr(self, field))))

    def training_options(self) -> dict[str, Any]:
        """The single values of ``optimizer``, ``momentum``, ``dropout`` and ``bn_momentum``.

        Raises:
            ConfigError: One of them is a list or a range.
        """
        options: dict[str, Any] = {}
        for field in TRAINING_OPTIONS:
            values = getattr(self, field)
            kind, value = ("fixed", values[0]) if field == "optimizer" else search_spec(values)
            if kind != "fixed" or len(values) != 1:
                fail(field, ",".join(values), "a single value for one configuration")
            options[field] = value
        return options

    # ----------------------------------------------------------------------------------------
    @classmethod
    def field_names(cls, scope: str | None = None) -> tuple[str, ...]:
        """Names of the fields, optionally only those of ``scope`` ("study" or "session")."""
        return tuple(
            f.name for f in dataclasses.fields(cls)
            if scope is None or f.metadata["scope"] == scope
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    def to_params(self) -> dict[str, str]:
        """The config flattened for MLflow params: lists comma-joined, unset values omitted."""
        return {k: _flat(v) for k, v in dataclasses.asdict(self).items() if v is not None}

    def study_settings(self) -> dict[str, Any]:
        """The study-defining fields, as stored with the Optuna study."""
        data = self.to_dict()
        return {k: data[k] for k in self.field_names("study")}

    def to_json(self) -> str:
        """The study-defining settings as canonical JSON."""
        return json.dumps(self.study_settings(), sort_keys=True)

    def replace(self, **changes: Any) -> StudyConfig:
        """A validated copy with ``changes`` coerced like any other input."""
        return dataclasses.replace(self, **coerce_values(changes))

    @property
    def fixed_dimensions(self) -> dict[str, Any]:
        """Search dimensions whose bounds collapse to one value (fixed, not searched)."""
        fixed: dict[str, Any] = {}
        if self.width_min == self.width_max:
            fixed["width"] = self.width_min
        if self.lr_min == self.lr_max:
            fixed["lr"] = self.lr_min
        if len(self.batch_sizes) == 1:
            fixed["batch_size"] = self.batch_sizes[0]
        if self.weight_decay_min == self.weight_decay_max:
            fixed["weight_decay"] = self.weight_decay_min
        if len(self.penalty_mode) == 1:
            fixed["penalty_mode"] = self.penalty_mode[0]
        if len(self.optimizer) == 1:
            fixed["optimizer"] = self.optimizer[0]
        for field in ("momentum", "dropout", "bn_momentum"):
            kind, value = search_spec(getattr(self, field))
            if kind == "fixed":
                fixed[field] = value
        return fixed


_FIELDS = {f.name: f for f in dataclasses.fields(StudyConfig)}
_INT_FIELDS = {"epochs", "early_epochs", "width_min", "width_max", "seed", "n_trials",
               "heartbeat_interval"}
_FLOAT_FIELDS = {"lr_min", "lr_max", "weight_decay_min", "weight_decay_max", "timeout",
                 "tracking_timeout", "storage_timeout"}


def coerce_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Turn raw values (strings from flags or MLproject, lists from files) into field types.

    Raises:
        ConfigError: A key is unknown or a value has the wrong type.
    """
    out: dict[str, Any] = {}
    for raw_key, value in values.items():
        key = raw_key.replace("-", "_")
        if key not in _FIELDS:
            raise ConfigError(
                f"unknown setting `{raw_key}`; allowed: {', '.join(sorted(_FIELDS))}."
            )
        if key == "compile":
            out[key] = as_bool(key, value)
        elif key in _INT_FIELDS:
            out[key] = as_int(key, value)
        elif key == "timeout":
            out[key] = None if value in (None, "", 0, "0") else as_float(key, value)
        elif key == "depth":
            out[key] = None if value in (None, "") else as_int(key, value)
        elif key in ("tracking_uri", "image_size"):
            out[key] = str(value).strip() if value not in (None, "") else None
        elif key in _FLOAT_FIELDS:
            out[key] = as_float(key, value)
        elif key == "batch_sizes":
            out[key] = tuple(as_int(key, v) for v in as_list(value))
        elif key == "penalty_mode":
            out[key] = tuple(str(v) for v in as_list(value))
        elif key == "optimizer":
            out[key] = tuple(str(v).strip().lower() for v in as_list(value))
        elif key in ("momentum", "dropout", "bn_momentum"):
            out[key] = option_values(key, as_list(value))
        else:
            out[key] = str(value)
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file of flat settings.

    Raises:
        ConfigError: The file is missing, unparsable, not a mapping, or of another type.
    """
    return coerce_values(read_settings_file(path))


def resolve_config(
    *,
    explicit: Mapping[str, Any],
    config_file: str | Path | None = None,
    base: StudyConfig | None = None,
) -> tuple[StudyConfig, dict[str, Any]]:
    """Resolve a config from ``base`` (defaults), a file and explicit flags, flags winning.

    Args:
        explicit: Values the user gave as flags (only those, not click's defaults).
        config_file: Optional TOML or YAML file with the same keys.
        base: The config to start from (defaults when ``None``).

    Returns:
        The validated config, and every value the user set explicitly (file or flag), coerced.
    """
    given: dict[str, Any] = {}
    if config_file is not None:
        given.update(load_config_file(config_file))
    given.update(coerce_values(explicit))
    base = base if base is not None else StudyConfig()
    return dataclasses.replace(base, **given), given


def config_from_stored(stored: Mapping[str, Any], session: StudyConfig) -> StudyConfig:
    """Rebuild the config of a resumed study: stored study fields, this session's fields.

    Raises:
        ConfigError: The stored settings are not a config this version understands.
    """
    known = {k: v for k, v in stored.items() if k in _FIELDS}
    values = coerce_values(known)
    session_values = {k: getattr(session, k) for k in StudyConfig.field_names("session")}
    return StudyConfig(**{**values, **session_values})


def check_no_conflict(stored: StudyConfig, given: Mapping[str, Any], *, study_name: str) -> None:
    """Refuse explicit study-defining values that differ from the stored ones.

    Raises:
        ConfigError: Names the first conflicting field with both values.
    """
    for key in StudyConfig.field_names("study"):
        if key in given and given[key] != getattr(stored, key):
            how = (f"drop -P {key} or set a new -P study_name=NAME" if os.environ.get(
                "MLFLOW_RUN_ID") else "drop the flag or use a new --study-name")  # mlflow run
            raise ConfigError(f"`{key}` conflicts with study {study_name!r}: it was created with "
                              f"{key}={_show(getattr(stored, key))}, but got "
                              f"{key}={_show(given[key])}; {how}.")


def _flat(value: Any) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, (tuple, list)) else str(value)


def _show(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, tuple):
        return repr(",".join(str(v) for v in value))
    return repr(value)
