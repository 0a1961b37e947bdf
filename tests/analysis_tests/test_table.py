"""The trial table from a real Optuna study and a real MLflow store, and its usable rows."""

from __future__ import annotations

import math
import time

import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from study.analysis import table as table_module
from study.analysis.table import (
    TABLE_COLUMNS,
    fixed_dimensions,
    trial_table,
    trial_table_from_mlflow,
    usable_trials,
)
from study.errors import ConfigError
from study.tracking import Tracker, claim_parent_run, end_trial_run, start_trial_run

optuna.logging.set_verbosity(optuna.logging.WARNING)

# batch size, weight decay and penalty mode fixed; width and lr searched.
STUDY_CONFIG = {
    "width_min": 4, "width_max": 32, "lr_min": 1e-4, "lr_max": 1e-2, "batch_sizes": [64],
    "weight_decay_min": 1e-4, "weight_decay_max": 1e-4, "penalty_mode": ["l2-in-loss"],
    "early_epochs": 1, "objective": "val_loss",
}
DISTRIBUTIONS = {"width": IntDistribution(4, 32, log=True),
                 "lr": FloatDistribution(1e-4, 1e-2, log=True)}
EARLY = {"early_loss": 1.25, "early_data_loss": 1.0, "early_penalty": 0.25}
FINAL = {"final_val_loss": 0.5, "final_val_accuracy": 0.875}


def _trial_specs() -> list[dict]:
    """Five trials as the objective leaves them: complete (with and without ``hparams``),
    pruned after and before the early window, failed."""
    hparams = {"width": 16, "lr": 0.003, "batch_size": 64, "weight_decay": 1e-4,
               "penalty_mode": "l2-in-loss"}
    return [
        {"state": TrialState.COMPLETE, "value": 0.5, "params": {"width": 16, "lr": 0.003},
         "attrs": {"hparams": hparams, "n_params": 12345, **EARLY, **FINAL,
                   "curve": [[1.25, 1.0, 0.25, 0.6, 0.8], [0.9, 0.7, 0.2, 0.5, 0.875]]}},
        {"state": TrialState.COMPLETE, "value": 0.75, "params": {"width": 8, "lr": 0.0005},
         "attrs": {"n_params": 3456, "early_loss": 1.5, "early_data_loss": 1.375,
                   "early_penalty": 0.125, "final_val_loss": 0.75, "final_val_accuracy": 0.75}},
        {"state": TrialState.PRUNED, "value": 0.9, "params": {"width": 32, "lr": 0.001},
         "attrs": {"hparams": {**hparams, "width": 32, "lr": 0.001}, "n_params": 45678,
                   "early_loss": 2.0, "early_data_loss": 1.5, "early_penalty": 0.5},
         "val_losses": [1.1, 0.9]},  # pruned at epoch 2: Optuna keeps its last value
        {"state": TrialState.PRUNED, "value": None, "params": {"width": 4, "lr": 0.01},
         "attrs": {"hparams": {**hparams, "width": 4, "lr": 0.01}, "n_params": 1000}},
        {"state": TrialState.FAIL, "value": None, "params": {"width": 8, "lr": 0.002},
         "attrs": {"hparams": {**hparams, "width": 8, "lr": 0.002}, "n_params": 3456,
                   "failure": "NonFiniteLossError: loss is nan"}},
    ]


def _study(run_ids: list[str] | None = None) -> optuna.Study:
    study = optuna.create_study()
    study.set_user_attr("study_config", STUDY_CONFIG)
    for i, spec in enumerate(_trial_specs()):
        attrs = dict(spec["attrs"])
        if run_ids is not None:
            attrs["mlflow_run_id"] = run_ids[i]
        study.add_trial(create_trial(
            state=spec["state"], value=spec["value"], params=spec["params"],
            distributions=DISTRIBUTIONS, user_attrs=attrs,
            intermediate_values=dict(enumerate(spec.get("val_losses", []), start=1)),
        ))
    return study


@pytest.fixture
def table() -> pd.DataFrame:
    return trial_table(_study())


# -- trial_table --------------------------------------------------------------------------------
def test_trial_table_has_the_columns_in_order(table: pd.DataFrame) -> None:
    assert tuple(table.columns) == TABLE_COLUMNS


def test_trial_table_has_one_row_per_trial_of_any_state(table: pd.DataFrame) -> None:
    assert table["number"].tolist() == [0, 1, 2, 3, 4]
    assert table["state"].tolist() == ["COMPLETE", "COMPLETE", "PRUNED", "PRUNED", "FAIL"]


def test_hyperparameters_come_from_the_hparams_user_attr(table: pd.DataFrame) -> None:
    row = table.iloc[0]
    assert (row["width"], row["lr"], row["batch_size"]) == (16, 0.003, 64)
    assert (row["weight_decay"], row["penalty_mode"]) == (1e-4, "l2-in-loss")


def test_without_hparams_fixed_dimensions_come_from_the_study_config(
    table: pd.DataFrame,
) -> None:
    row = table.iloc[1]
    assert (row["width"], row["lr"]) == (8, 0.0005)  # searched: trial.params
    assert (row["batch_size"], row["weight_decay"], row["penalty_mode"]) == (
        64, 1e-4, "l2-in-loss")  # fixed: study_config


def test_fixed_dimensions_are_those_whose_bounds_meet() -> None:
    assert fixed_dimensions(STUDY_CONFIG) == {
        "batch_size": 64, "weight_decay": 1e-4, "penalty_mode": "l2-in-loss"}
    searched = {**STUDY_CONFIG, "batch_sizes": [32, 64],
                "penalty_mode": ["none", "l2-in-loss"], "weight_decay_max": 1e-3}
    assert fixed_dimensions(searched) == {}


def test_summary_values_value_and_curve_are_kept(table: pd.DataFrame) -> None:
    row = table.iloc[0]
    assert (row["n_params"], row["early_loss"], row["early_penalty"]) == (12345, 1.25, 0.25)
    assert (row["final_val_loss"], row["value"]) == (0.5, 0.5)
    assert row["curve"][1] == [0.9, 0.7, 0.2, 0.5, 0.875]
    assert table.iloc[1]["curve"] is None


def test_missing_values_are_nan_not_errors(table: pd.DataFrame) -> None:
    pruned_early = table.iloc[3]
    assert math.isnan(pruned_early["early_loss"]) and math.isnan(pruned_early["value"])


def test_trial_table_of_an_empty_study_has_the_columns() -> None:
    empty = trial_table(optuna.create_study())
    assert tuple(empty.columns) == TABLE_COLUMNS and len(empty) == 0


def test_trial_table_of_10000_trials_is_fast() -> None:
    study = optuna.create_study()
    attrs = {"hparams": {"width": 8, "lr": 1e-3, "batch_size": 64, "weight_decay": 1e-4,
                         "penalty_mode": "l2-in-loss"}, "n_params": 3456, **EARLY, **FINAL,
             "curve": [[1.25, 1.0, 0.25, 0.6, 0.8]] * 3}
    trials = [create_trial(value=0.5, params={"width": 8}, user_attrs=attrs,
                           distributions={"width": DISTRIBUTIONS["width"]})
              for _ in range(10_000)]
    study.add_trials(trials)
    start = time.perf_counter()
    big = trial_table(study)
    print(f"trial_table of 10,000 trials: {time.perf_counter() - start:.3f} s")
    assert len(big) == 10_000


# -- usable_trials ------------------------------------------------------------------------------
def test_usable_trials_are_complete_or_pruned_with_early_values(table: pd.DataFrame) -> None:
    assert usable_trials(table)["number"].tolist() == [0, 1, 2]


def test_failed_trials_are_never_usable(table: pd.DataFrame) -> None:
    failed = table.copy()
    failed.loc[4, ["early_loss", "early_data_loss", "early_penalty"]] = [1.0, 0.9, 0.1]
    assert 4 not in usable_trials(failed)["number"].tolist()


@pytest.mark.parametrize("column", ["early_loss", "early_data_loss", "early_penalty"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_early_value_makes_a_row_unusable(
    table: pd.DataFrame, column: str, bad: float
) -> None:
    broken = table.copy()
    broken.loc[0, column] = bad
    assert usable_trials(broken)["number"].tolist() == [1, 2]


@pytest.mark.parametrize(("n_params", "usable"), [(0, False), (1, True)])
def test_n_params_must_be_positive(table: pd.DataFrame, n_params: int, usable: bool) -> None:
    edited = table.copy()
    edited.loc[0, "n_params"] = n_params
    assert (0 in usable_trials(edited)["number"].tolist()) is usable


def test_usable_trials_keeps_the_index_and_copies(table: pd.DataFrame) -> None:
    usable = usable_trials(table)
    usable.loc[0, "lr"] = 1.0
    assert table.loc[0, "lr"] == 0.003


# -- trial_table_from_mlflow --------------------------------------------------------------------
def _log_trial_runs(tracker: Tracker, experiment_id: str, parent: str) -> list[str]:
    """One nested trial run per spec, written by the tracking code the service uses."""
    run_ids = []
    for number, spec in enumerate(_trial_specs()):
        attrs = spec["attrs"]
        hp = attrs.get("hparams") or {**fixed_dimensions(STUDY_CONFIG), **spec["params"]}
        run_id = start_trial_run(tracker, experiment_id, parent_run_id=parent, study_name="s",
                                 trial_number=number)
        metrics = {"n_params": attrs["n_params"]}
        metrics.update({f"early/{k[6:]}": attrs[k] for k in EARLY if k in attrs})
        metrics.update({f"final/{k[6:]}": attrs[k] for k in FINAL if k in attrs})
        tracker.log_params(run_id, {**hp, "model": "cnn", "dataset": "digits",
                                    "n_params": attrs["n_params"]},
                           metrics=metrics, new_run=True)
        for step, value in enumerate(spec.get("val_losses", []), start=1):
            tracker.log_metrics(run_id, {"val/loss": value}, step=step)
        end_trial_run(tracker, run_id, state=spec["state"].name, failure=attrs.get("failure"))
        run_ids.append(run_id)
    return run_ids


@pytest.fixture
def mlflow_setup(tracking_uri: str) -> tuple[MlflowClient, str, str, list[str]]:
    tracker = Tracker(tracking_uri)
    experiment_id = tracker.experiment_id("study")
    parent_id = tracker.create_run(experiment_id, name="s", tags={})
    claim_parent_run(tracker, parent_id, study_name="s", storage="sqlite:///x.db",
                     params={"objective": "val_loss"}, owner=None)
    run_ids = _log_trial_runs(tracker, experiment_id, parent_id)
    # Another study's trial in the same experiment, under another parent.
    other = tracker.create_run(experiment_id, name="other", tags={})
    claim_parent_run(tracker, other, study_name="other", storage="sqlite:///x.db", params={},
                     owner=None)
    start_trial_run(tracker, experiment_id, parent_run_id=other, study_name="other",
                    trial_number=0)
    return tracker.client, experiment_id, parent_id, run_ids


def test_mlflow_table_equals_the_optuna_table(mlflow_setup) -> None:
    client, experiment_id, parent_id, run_ids = mlflow_setup
    from_mlflow = trial_table_from_mlflow(client, experiment_id, parent_run_id=parent_id)
    from_optuna = trial_table(_study(run_ids))
    columns = [c for c in TABLE_COLUMNS if c != "curve"]
    pd.testing.assert_frame_equal(from_mlflow[columns], from_optuna[columns], check_exact=True)


def test_mlflow_table_has_no_curves(mlflow_setup) -> None:
    client, experiment_id, parent_id, _ = mlflow_setup
    from_mlflow = trial_table_from_mlflow(client, experiment_id, parent_run_id=parent_id)
    assert from_mlflow["curve"].isna().all()


def test_mlflow_table_has_no_gap_curves_where_the_runs_logged_no_gap_parts(mlflow_setup):
    """Runs of an earlier version: no per-epoch gap/* metrics, so no gap question to answer
    (a study's runs that logged them: test_command's twin of the Optuna analysis)."""
    client, experiment_id, parent_id, _ = mlflow_setup
    from_mlflow = trial_table_from_mlflow(client, experiment_id, parent_run_id=parent_id)
    assert from_mlflow["gap_curve"].isna().all()


def test_mlflow_table_without_parent_has_every_trial_run(mlflow_setup) -> None:
    client, experiment_id, _, _ = mlflow_setup
    assert len(trial_table_from_mlflow(client, experiment_id)) == 6


def test_mlflow_table_pages_through_all_results(
    mlflow_setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, experiment_id, parent_id, _ = mlflow_setup
    monkeypatch.setattr(table_module, "_PAGE_SIZE", 2)
    paged = trial_table_from_mlflow(client, experiment_id, parent_run_id=parent_id)
    assert paged["number"].tolist() == [0, 1, 2, 3, 4]


def test_mlflow_state_falls_back_to_the_run_status(mlflow_setup) -> None:
    client, experiment_id, _, _ = mlflow_setup
    table = trial_table_from_mlflow(client, experiment_id)
    untagged = table[table["mlflow_run_id"].notna() & table["width"].isna()]
    assert untagged["state"].tolist() == ["RUNNING"]


@pytest.mark.parametrize(("status", "tags", "state"), [
    ("FINISHED", {"study.state": "PRUNED", "optuna.trial_state": "PRUNED"}, "PRUNED"),
    ("KILLED", {"optuna.trial_state": "PRUNED"}, "PRUNED"),  # pruned, by an earlier version
    ("KILLED", {"study.state": "FAIL", "optuna.trial_state": "FAIL"}, "FAIL"),  # interrupted
    ("KILLED", {}, "FAIL"),  # closed by someone else: not a pruned trial
], ids=["pruned", "pruned-before", "interrupted", "untagged-killed"])
def test_mlflow_state_reads_the_state_tags_of_this_and_earlier_versions(
        tracking_uri, status, tags, state) -> None:
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment("e")
    run_id = client.create_run(experiment_id, tags={"study.role": "trial", **tags}).info.run_id
    client.set_terminated(run_id, status)
    assert trial_table_from_mlflow(client, experiment_id)["state"].tolist() == [state]


def test_mlflow_parent_run_id_must_be_a_run_id(mlflow_setup) -> None:
    client, experiment_id, _, _ = mlflow_setup
    with pytest.raises(ConfigError, match="parent_run_id"):
        trial_table_from_mlflow(client, experiment_id, parent_run_id="x' or '1'='1")


def test_a_landscape_probe_kept_with_the_study_reaches_the_table(tmp_path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    study.set_user_attr("landscape_trial_1", {"landscape_sharpness": 0.25,
                                              "landscape_flatness_radius": 0.5})
    table = trial_table(study)
    assert table["landscape_sharpness"].isna().tolist() == [True, False]
    assert table.loc[1, "landscape_sharpness"] == 0.25
