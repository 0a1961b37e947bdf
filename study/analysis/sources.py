"""A study's trials as one table, read from its Optuna storage or, when that is gone, rebuilt
from its MLflow runs."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import optuna
import pandas as pd

from study.config import StudyConfig
from study.errors import StorageError
from study.keys import CONFIG_ATTR, PARENT_RUN_ATTR
from study.runtime import count_states, open_study_trials
from study.tracking import Tracker, find_parent_run

__all__ = ["StudyData", "early_epochs", "load_study_data", "trials_from_table"]


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
        study, trials = open_study_trials(config)
    except StorageError as missing:
        if tracker is None:
            raise
        parent = find_parent_run(tracker, config.experiment, config.study_name)
        if parent is None:
            raise StorageError(
                f"{missing} No parent run tagged study.name={config.study_name!r} in "
                f"experiment {config.experiment!r} either."
            ) from None
        # Said, not silent: a mistyped --storage would otherwise look like the study.
        print(f"note: {missing} Reading study {config.study_name!r} from its MLflow runs "
              f"instead (parent run {parent.info.run_id}).", file=sys.stderr)
        table = trial_table_from_mlflow(tracker.client, parent.info.experiment_id,
                                        parent_run_id=parent.info.run_id)
        counts = table["state"].value_counts().to_dict() if len(table) else {}
        return StudyData(config.study_name, table, None, dict(parent.data.params),
                         {str(k): int(v) for k, v in counts.items()}, parent.info.run_id,
                         "mlflow")
    return StudyData(study.study_name, trial_table(study, trials=trials), trials,
                     dict(study.user_attrs.get(CONFIG_ATTR, {})), count_states(trials),
                     study.user_attrs.get(PARENT_RUN_ATTR), "optuna")


def early_epochs(data: StudyData) -> int:
    try:
        return int(float(data.settings.get("early_epochs", 1)))
    except (TypeError, ValueError):
        return 1


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
