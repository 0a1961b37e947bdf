"""The trial table: one row per trial, rebuilt from Optuna or from MLflow, and its usable rows.

Both stores give the same columns (:data:`TABLE_COLUMNS`), so the analysis runs on either. The
table is built column-wise from plain lists (one DataFrame at the end): 10,000 trials take a
fraction of a second.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from study.errors import ConfigError
from study.keys import CONFIG_ATTR, LANDSCAPE_ATTR_PREFIX, TRAIN_SEED_ATTR
from study.tracking.filters import tag_equals
from study.training.diagnostics import curve_rows

if TYPE_CHECKING:
    import optuna

__all__ = [
    "EARLY_COLUMNS",
    "HPARAM_COLUMNS",
    "INIT_COLUMNS",
    "TABLE_COLUMNS",
    "TRAINING_DEFAULTS",
    "USABLE_STATES",
    "fixed_dimensions",
    "gap_records",
    "numeric",
    "to_float",
    "trial_table",
    "trial_table_from_mlflow",
    "usable_trials",
]

TABLE_COLUMNS = (
    "number", "state", "width", "lr", "batch_size", "weight_decay", "penalty_mode", "n_params",
    "train_seed", "init_loss", "init_data_loss", "init_penalty", "init_weight_sq_norm",
    "early_loss", "early_data_loss", "early_penalty", "final_val_loss", "final_val_accuracy",
    "value", "mlflow_run_id", "curve", "failure", "diagnosis", "diagnosis_detail",
    "landscape_sharpness", "landscape_flatness_radius",
    "optimizer", "momentum", "dropout", "bn_momentum", "gap_curve",
)
HPARAM_COLUMNS = ("width", "lr", "batch_size", "weight_decay", "penalty_mode")
# The training options beside the hyperparameters, and what trials trained with before they
# existed (HParams' defaults).
TRAINING_DEFAULTS = {"optimizer": "adam", "momentum": 0.9, "dropout": 0.0, "bn_momentum": 0.1}
# The per-epoch figures of the gap question kept from a trial's curve (``gap_curve``).
_GAP_KEYS = ("epoch", "data_loss", "val_loss", "gap_timing", "gap_mode", "gap_generalization",
             "gap_mode_batchnorm", "gap_mode_dropout")
# The MLflow metric of each key of a gap record but the epoch (its step).
_GAP_METRICS = {"data_loss": "train/data_loss", "val_loss": "val/loss",
                **{k: f"gap/{k.removeprefix('gap_')}" for k in _GAP_KEYS[3:]}}
EARLY_COLUMNS = ("early_loss", "early_data_loss", "early_penalty")
INIT_COLUMNS = ("init_loss", "init_data_loss", "init_penalty")
# Pruned trials count only with early values: the pruners never stop a trial inside the window.
USABLE_STATES = ("COMPLETE", "PRUNED")
# The loss at initialization is measured before the first update, so how the trial ended later
# does not matter: a trial that diverged or failed still measured its start.
INIT_STATES = ("COMPLETE", "PRUNED", "FAIL")

_INT_COLUMNS = ("number", "width", "batch_size", "n_params", "train_seed")
_FLOAT_COLUMNS = ("lr", "weight_decay", *INIT_COLUMNS, "init_weight_sq_norm", *EARLY_COLUMNS,
                  "final_val_loss",
                  "final_val_accuracy", "value", "landscape_sharpness",
                  "landscape_flatness_radius", "momentum", "dropout", "bn_momentum")
# Optional per-trial findings: user attr on the Optuna trial <-> tag or metric on its run.
_FINDING_ATTRS = {"failure": "study.failure", "diagnosis": "study.diagnosis",
                  "diagnosis_detail": "study.diagnosis.detail"}
_FINDING_METRICS = {"landscape_sharpness": "landscape/sharpness",
                    "landscape_flatness_radius": "landscape/flatness_radius"}
# user attr / MLflow metric holding each summary column.
_SUMMARY_ATTRS = ("init_loss", "init_data_loss", "init_penalty", "init_weight_sq_norm",
                  "early_loss", "early_data_loss", "early_penalty", "final_val_loss",
                  "final_val_accuracy")
_SUMMARY_METRICS = {
    "init_loss": "init/loss", "init_data_loss": "init/data_loss",
    "init_penalty": "init/penalty", "init_weight_sq_norm": "init/weight_sq_norm",
    "early_loss": "early/loss", "early_data_loss": "early/data_loss",
    "early_penalty": "early/penalty", "final_val_loss": "final/val_loss",
    "final_val_accuracy": "final/val_accuracy",
}
# MLflow run status -> Optuna state, for a trial run that never got its state tag (every run
# a trial closes has one: `study.state`, or `optuna.trial_state` in studies of earlier versions,
# whose pruned runs were KILLED). A KILLED run without one was interrupted.
_STATUS_STATE = {"RUNNING": "RUNNING", "SCHEDULED": "WAITING", "FINISHED": "COMPLETE",
                 "KILLED": "FAIL", "FAILED": "FAIL"}
_STATE_TAGS = ("study.state", "optuna.trial_state")
# objective -> metric holding the value of a (COMPLETE, PRUNED) trial; val_error is 1 - it.
_VALUE_METRICS = {
    "val_loss": ("final/val_loss", "val/loss"),
    "val_error": ("final/val_accuracy", "val/accuracy"),
    "early_loss": ("early/loss", "early/loss"),
}
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_PAGE_SIZE = 1000


def fixed_dimensions(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The search dimensions a stored study config fixes (min == max, or a single choice).

    Args:
        config: The study's stored ``study_config`` user attr (``None`` or empty: nothing fixed).

    Returns:
        ``{column: value}`` for each fixed dimension among :data:`HPARAM_COLUMNS`.
    """
    if not config:
        return {}
    fixed: dict[str, Any] = {}
    for name, low, high in (("width", "width_min", "width_max"), ("lr", "lr_min", "lr_max"),
                            ("weight_decay", "weight_decay_min", "weight_decay_max")):
        if low in config and config[low] == config.get(high):
            fixed[name] = config[low]
    for name, key in (("batch_size", "batch_sizes"), ("penalty_mode", "penalty_mode")):
        choices = config.get(key)
        if isinstance(choices, (str, int)):
            choices = [choices]
        if isinstance(choices, (list, tuple)) and len(choices) == 1:
            fixed[name] = choices[0]
    return fixed


def trial_table(study: optuna.Study, *,
                trials: Sequence[optuna.trial.FrozenTrial] | None = None) -> pd.DataFrame:
    """One row per trial of ``study``, of any state, in trial-number order.

    Hyperparameters come from the user attr ``hparams`` the objective writes; a trial without
    it falls back to ``trial.params`` plus the dimensions the stored ``study_config`` fixes.

    Args:
        study: The Optuna study.
        trials: Its trials, already read (by the storage's fast reader, say); ``None`` reads
            them through ``study``.

    Returns:
        A DataFrame with :data:`TABLE_COLUMNS`.
    """
    study_attrs = study.user_attrs
    fixed = fixed_dimensions(study_attrs.get(CONFIG_ATTR))
    columns: dict[str, list[Any]] = {name: [] for name in TABLE_COLUMNS}
    if trials is None:
        trials = study.get_trials(deepcopy=False)
    for trial in trials:
        attrs = trial.user_attrs
        probe = study_attrs.get(f"{LANDSCAPE_ATTR_PREFIX}{trial.number}")
        if isinstance(probe, Mapping):  # a landscape probe of the finished trial
            attrs = {**attrs, **probe}
        hparams = attrs.get("hparams")
        if not isinstance(hparams, Mapping):
            hparams = {**fixed, **trial.params}
        columns["number"].append(trial.number)
        columns["state"].append(trial.state.name)
        for name in HPARAM_COLUMNS:
            columns[name].append(hparams.get(name, fixed.get(name)))
        columns["n_params"].append(attrs.get("n_params"))
        columns["train_seed"].append(attrs.get(TRAIN_SEED_ATTR))
        for name in _SUMMARY_ATTRS:
            columns[name].append(attrs.get(name))
        values = trial.values
        columns["value"].append(values[0] if values else None)
        columns["mlflow_run_id"].append(attrs.get("mlflow_run_id"))
        columns["curve"].append(curve_rows(attrs.get("curve")))
        columns["gap_curve"].append(gap_records(attrs.get("curve")))
        for name, default in TRAINING_DEFAULTS.items():
            columns[name].append(hparams.get(name, default))
        for name in (*_FINDING_ATTRS, *_FINDING_METRICS):
            columns[name].append(attrs.get(name) or None)
    return _frame(columns)


def trial_table_from_mlflow(
    client: Any, experiment_id: str, *, parent_run_id: str | None = None
) -> pd.DataFrame:
    """The trial table rebuilt from the trial runs of an MLflow experiment.

    ``state`` comes from the tag ``study.state`` (``optuna.trial_state`` in studies of earlier
    versions; else from the run status), ``curve`` is ``None``, ``gap_curve`` is read from the
    per-epoch metric histories of the runs that logged the gap's parts. ``value`` is derived
    as Optuna holds it (COMPLETE: from the ``final/*`` metrics; PRUNED: from the last epoch's
    ``val/*`` metrics, the last reported value) when the parent run records the study's
    ``objective`` param, else ``None``.

    Args:
        client: An :class:`mlflow.MlflowClient` on the tracking store.
        experiment_id: The experiment holding the runs.
        parent_run_id: Only the trials nested under this parent run (one study).

    Returns:
        A DataFrame with :data:`TABLE_COLUMNS`, in trial-number order.

    Raises:
        ConfigError: ``parent_run_id`` is not a run id.
    """
    filters = [tag_equals("study.role", "trial")]
    if parent_run_id is not None:
        if not _RUN_ID_RE.match(parent_run_id):
            raise ConfigError(f"`parent_run_id` must be an MLflow run id, but got "
                              f"parent_run_id={parent_run_id!r}.")
        filters.append(tag_equals("mlflow.parentRunId", parent_run_id))
    runs = _all_runs(client, experiment_id, " and ".join(filters))
    objectives = _parent_objectives(client, runs)
    rows = sorted(
        ({**_run_row(run, objectives), "gap_curve": _gap_history(client, run)} for run in runs),
        key=lambda row: (row["number"] is None, row["number"] or 0),
    )
    return _frame({name: [row[name] for row in rows] for name in TABLE_COLUMNS})


def gap_records(value: Any) -> list[dict[str, Any]] | None:
    """The epochs of a stored curve (the labelled entries of the trial attr ``curve``) that
    measured the gap's parts, with the keys the gap question reads; ``None`` when none did
    (a trial of an earlier version)."""
    if not isinstance(value, list) or not all(isinstance(row, Mapping) for row in value):
        return None
    rows = [{k: row[k] for k in _GAP_KEYS if k in row} for row in value if "gap_timing" in row]
    return rows or None


def usable_trials(table: pd.DataFrame, question: str = "early") -> pd.DataFrame:
    """The rows the analysis of ``question`` (``early`` or ``init``) may use.

    A row is usable when its losses of that question are finite, ``n_params > 0``, ``lr`` and
    ``batch_size`` are finite and > 0, ``weight_decay`` is finite and >= 0, and its penalty mode
    is known; for ``early`` its state is COMPLETE or PRUNED (pruned trials count only when they
    finished the early window: they have early values), for ``init`` any state that measured
    its start (COMPLETE, PRUNED or FAIL: the start is measured before anything can fail).

    Args:
        table: A trial table (:func:`trial_table` or :func:`trial_table_from_mlflow`).
        question: ``early`` or ``init``.

    Returns:
        The usable rows (a copy, original index kept).
    """
    states, columns = (INIT_STATES, INIT_COLUMNS) if question == "init" \
        else (USABLE_STATES, EARLY_COLUMNS)
    keep = np.array(table["state"].isin(states), dtype=bool)
    for name in columns:
        keep &= np.isfinite(numeric(table[name]))
    for name in ("n_params", "lr", "batch_size"):
        values = numeric(table[name])
        keep &= np.isfinite(values) & (values > 0)
    decay = numeric(table["weight_decay"])
    keep &= np.isfinite(decay) & (decay >= 0)
    keep &= table["penalty_mode"].notna().to_numpy(dtype=bool)
    return table.loc[keep].copy()


def numeric(column: pd.Series | Iterable[Any]) -> np.ndarray:
    """A column as float64, with anything missing or non-numeric as NaN."""
    series = column if isinstance(column, pd.Series) else pd.Series(list(column), dtype=object)
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


# -- internals --------------------------------------------------------------------------------
def _frame(columns: dict[str, list[Any]]) -> pd.DataFrame:
    data: dict[str, Any] = {}
    for name in TABLE_COLUMNS:
        values = columns[name]
        if name in _INT_COLUMNS:
            data[name] = pd.array([_as_int(v) for v in values], dtype="Int64")
        elif name in _FLOAT_COLUMNS:
            data[name] = np.array([to_float(v) for v in values], dtype=float)
        elif name in ("curve", "gap_curve"):
            data[name] = pd.Series(values, dtype=object)
        else:
            data[name] = pd.array([None if v is None else str(v) for v in values],
                                  dtype=object)
    return pd.DataFrame(data, columns=list(TABLE_COLUMNS))


def to_float(value: Any) -> float:
    """``value`` as a float, NaN when it is missing, a bool or not a number."""
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _as_int(value: Any) -> int | None:
    number = to_float(value)
    if not math.isfinite(number) or number != int(number):
        return None
    return int(number)


def _all_runs(client: Any, experiment_id: str, filter_string: str) -> list[Any]:
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=_PAGE_SIZE,
                                  page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _gap_history(client: Any, run: Any) -> list[dict[str, Any]] | None:
    """A trial run's per-epoch records of the gap question (as :func:`gap_records` keeps them
    from a curve), read back from its metric histories (step = epoch); ``None`` when it logged
    no gap parts (a run of an earlier version)."""
    logged = run.data.metrics
    if "gap/timing" not in logged:
        return None
    epochs: dict[int, dict[str, Any]] = {}
    for name, key in _GAP_METRICS.items():
        if key in logged:
            for metric in client.get_metric_history(run.info.run_id, key):
                epochs.setdefault(int(metric.step), {"epoch": int(metric.step)})[name] = \
                    float(metric.value)
    return [epochs[e] for e in sorted(epochs) if "gap_timing" in epochs[e]] or None


def _parent_objectives(client: Any, runs: list[Any]) -> dict[str, str | None]:
    """``{parent run id: objective param}`` for the parents of ``runs`` (usually one)."""
    objectives: dict[str, str | None] = {}
    for run in runs:
        parent = run.data.tags.get("mlflow.parentRunId")
        if parent and parent not in objectives:
            try:
                objectives[parent] = client.get_run(parent).data.params.get("objective")
            except Exception:  # a deleted or foreign parent: values stay unknown
                objectives[parent] = None
    return objectives


def _objective_value(objective: str | None, metrics: Mapping[str, float],
                     state: str) -> float | None:
    """The value Optuna holds: the objective after the last epoch. A pruned trial keeps its
    last reported value, and MLflow's latest per-epoch metric is the last epoch's."""
    names = _VALUE_METRICS.get(objective or "")
    if names is None:
        return None
    value = metrics.get(names[0] if state == "COMPLETE" else names[1])
    if value is None:
        return None
    return 1.0 - value if objective == "val_error" else value


def _run_row(run: Any, objectives: Mapping[str, str | None]) -> dict[str, Any]:
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    status = run.info.status if isinstance(run.info.status, str) else str(run.info.status)
    state = next((tags[t] for t in _STATE_TAGS if tags.get(t)), None) \
        or _STATUS_STATE.get(status, status)
    row: dict[str, Any] = {
        "number": _as_int(tags.get("optuna.trial_number")),
        "state": state,
        "width": params.get("width"),
        "lr": params.get("lr"),
        "batch_size": params.get("batch_size"),
        "weight_decay": params.get("weight_decay"),
        "penalty_mode": params.get("penalty_mode"),
        "n_params": metrics.get("n_params", params.get("n_params")),
        "train_seed": params.get("train_seed"),
        "mlflow_run_id": run.info.run_id,
        "curve": None,
        "gap_curve": None,  # read from the metric histories (_gap_history)
        "value": None,
        **{name: params.get(name, default) for name, default in TRAINING_DEFAULTS.items()},
    }
    for name, metric in {**_SUMMARY_METRICS, **_FINDING_METRICS}.items():
        row[name] = metrics.get(metric)
    for name, tag in _FINDING_ATTRS.items():
        row[name] = tags.get(tag) or None
    if state in USABLE_STATES:
        objective = objectives.get(tags.get("mlflow.parentRunId", ""))
        row["value"] = _objective_value(objective, metrics, state)
    return row
