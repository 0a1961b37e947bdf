"""``study analyze`` and ``study report``: read a finished (or running) study from either store,
explain its early loss, and log the results to the study's parent run."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from study.config import StudyConfig
from study.errors import StorageError, TrackingError
from study.redact import redact
from study.search import CONFIG_ATTR, PARENT_RUN_ATTR, count_states, open_study
from study.tracking import Tracker

__all__ = ["StudyData", "load_study_data", "publish_analysis", "publish_report"]


@dataclasses.dataclass(frozen=True)
class StudyData:
    """A study's trials as a table, with where they came from."""

    study_name: str
    table: pd.DataFrame
    trials: list[optuna.trial.FrozenTrial] | None  # None when read from MLflow
    settings: dict[str, Any]
    counts: dict[str, int]
    parent_run_id: str | None
    source: str  # "optuna" or "mlflow"


def load_study_data(config: StudyConfig, tracker: Tracker | None) -> StudyData:
    """Read the study from its Optuna storage, or from MLflow when the storage lacks it.

    Raises:
        StorageError: Neither store holds the study.
    """
    from study.analysis.table import trial_table, trial_table_from_mlflow

    try:
        study = open_study(config)
    except StorageError as missing:
        if tracker is None:
            raise
        parent = _find_parent(tracker, config)
        if parent is None:
            raise StorageError(
                f"{missing} No parent run tagged study.name={config.study_name!r} in "
                f"experiment {config.experiment!r} either."
            ) from None
        table = trial_table_from_mlflow(tracker.client, parent.info.experiment_id,
                                        parent_run_id=parent.info.run_id)
        counts = table["state"].value_counts().to_dict() if len(table) else {}
        return StudyData(config.study_name, table, None, dict(parent.data.params),
                         {str(k): int(v) for k, v in counts.items()}, parent.info.run_id,
                         "mlflow")
    trials = study.get_trials(deepcopy=False)
    return StudyData(study.study_name, trial_table(study), trials,
                     dict(study.user_attrs.get(CONFIG_ATTR, {})), count_states(study),
                     study.user_attrs.get(PARENT_RUN_ATTR), "optuna")


def _find_parent(tracker: Tracker, config: StudyConfig) -> Any | None:
    experiment = tracker.client.get_experiment_by_name(config.experiment)
    if experiment is None:
        return None
    runs = tracker.find_runs(
        experiment.experiment_id,
        f"tags.`study.role` = 'parent' and tags.`study.name` = '{config.study_name}'",
    )
    return runs[0] if runs else None


def _early_epochs(data: StudyData) -> int:
    try:
        return int(float(data.settings.get("early_epochs", 1)))
    except (TypeError, ValueError):
        return 1


def _log_dir(tracker: Tracker | None, data: StudyData, local: Path, artifact_path: str) -> str:
    """Log ``local`` (a file or folder) to the parent run; returns where, for the user."""
    if tracker is None:
        return "not logged (no tracking store)"
    run_id = data.parent_run_id
    if not run_id or tracker.get_run(run_id) is None:
        return f"not logged: the parent run {run_id} is not in {redact(tracker.tracking_uri)}"
    try:
        if local.is_dir():
            tracker.client.log_artifacts(run_id, str(local), artifact_path=artifact_path)
        else:
            tracker.client.log_artifact(run_id, str(local), artifact_path=artifact_path)
    except Exception as exc:  # artifact stores raise their own types (OSError, boto, ...)
        raise TrackingError(f"could not log {local} to run {run_id}: {exc}") from None
    entry = os.environ.get("MLFLOW_RUN_ID")
    if entry and entry != run_id:
        tracker.set_tags(entry, {"study.role": "session", "study.name": data.study_name,
                                 "study.parent_run_id": run_id})
    return f"run {run_id}, artifacts {artifact_path}/"


def _open_tracker(config: StudyConfig) -> Tracker | None:
    try:
        return Tracker(config.tracking_uri)
    except TrackingError as exc:
        print(f"warning: {exc}; results are written locally only.", file=sys.stderr)
        return None


def _analyzed(config: StudyConfig) -> tuple[Tracker | None, StudyData, dict]:
    from study.analysis.analyze import analyze

    tracker = _open_tracker(config)
    data = load_study_data(config, tracker)
    document = analyze(data.table, study_name=data.study_name,
                       early_epochs=_early_epochs(data))
    return tracker, data, document


def publish_analysis(config: StudyConfig, *, output_dir: Path) -> tuple[dict, Path, str]:
    """Analyze the study, write ``analysis.json`` and log it to the parent run.

    Returns:
        The analysis document, the file written, and where it was logged.
    """
    from study.analysis.analyze import write_analysis

    tracker, data, document = _analyzed(config)
    path = write_analysis(document, Path(output_dir) / "analysis.json")
    logged = _log_dir(tracker, data, path, "analysis")
    return document, path, logged


def publish_report(
    config: StudyConfig, *, output_dir: Path, evaluators: Sequence[str], seed: int,
    n_bootstrap: int,
) -> tuple[dict, dict[str, Path], str]:
    """Write ``report.html``, ``report.md``, ``report.json`` and ``trials.csv`` (plus figures
    and ``analysis.json``) and log them to the parent run under ``report/``.

    Returns:
        The analysis document, the files written, and where they were logged.
    """
    from study.analysis.analyze import write_analysis
    from study.analysis.importance import importance_table
    from study.report import write_report

    tracker, data, document = _analyzed(config)
    trials = data.trials if data.trials is not None else trials_from_table(data.table)
    importance = importance_table(trials, evaluators=evaluators, seed=seed,
                                  n_bootstrap=n_bootstrap)
    out = Path(output_dir)
    meta = {
        "study_name": data.study_name,
        "storage": redact(config.storage),
        "tracking_uri": redact(tracker.tracking_uri) if tracker else None,
        "parent_run_id": data.parent_run_id,
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": data.source,
        "config": data.settings,
        "counts": data.counts,
    }
    files = write_report(out, analysis=document, table=data.table, importance=importance,
                         meta=meta, extra_figures=_landscape_figure(data))
    write_analysis(document, out / "analysis.json")
    logged = _log_dir(tracker, data, out, "report")
    return document, files, logged


def _landscape_figure(data: StudyData) -> dict[str, tuple[str, str, bytes]]:
    """Sharpness against batch size and weight decay, when `study landscape` probed trials."""
    from study.landscape_results import sharpness_figure

    probed = data.table[data.table["landscape_sharpness"].notna()]
    if probed.empty:
        return {}
    rows = probed.rename(columns={"landscape_sharpness": "sharpness"})
    return {"landscape": (
        "Loss-landscape sharpness",
        f"Sharpness (training-loss rise at a filter-normalized distance) of the {len(rows)} "
        f"probed trial(s), against batch size and weight decay.",
        sharpness_figure(rows),
    )}


def trials_from_table(table: pd.DataFrame) -> list[optuna.trial.FrozenTrial]:
    """Rebuild Optuna trials from an MLflow-only table so importance can still be computed;
    the distributions span the observed values (log scale, as the study searched them)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )
    from optuna.trial import TrialState, create_trial

    ok = table[table["state"].isin(["COMPLETE", "PRUNED"])]
    dists: dict[str, Any] = {}
    for name in ("width", "lr", "weight_decay"):
        values = pd.to_numeric(ok[name], errors="coerce").dropna()
        if len(values) and values.min() < values.max() and values.min() > 0:
            dists[name] = (IntDistribution(int(values.min()), int(values.max()), log=True)
                           if name == "width"
                           else FloatDistribution(float(values.min()), float(values.max()),
                                                  log=True))
    for name in ("batch_size", "penalty_mode"):
        choices = sorted({v for v in ok[name].dropna().tolist()}, key=str)
        if len(choices) > 1:
            dists[name] = CategoricalDistribution(choices)
    trials = []
    for row in ok.to_dict(orient="records"):
        params = {name: (int(row[name]) if name in ("width", "batch_size") else row[name])
                  for name in dists}
        if any(pd.isna(v) for v in params.values()):
            continue
        state = TrialState.COMPLETE if row["state"] == "COMPLETE" else TrialState.PRUNED
        value = row.get("value")
        attrs = {k: row[k] for k in ("n_params", "early_loss", "early_data_loss",
                                     "early_penalty") if not pd.isna(row.get(k))}
        trials.append(create_trial(
            state=state, params=params, distributions=dists, user_attrs=attrs,
            value=float(value) if state is TrialState.COMPLETE and not pd.isna(value) else None,
        ))
    return trials
