"""The bench's floor trial keeps the contract it claims to be the least of (checked through
``MlflowClient`` and Optuna on tmp SQLite stores), names only attrs the service really writes, and
is read against the service's fixed cost as a ratio."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from bench import floor
from bench.harness import QUICK, Workspace
from bench.results import floor_figures

WIDTHS = (4, 6)


@pytest.fixture(scope="module")
def workspace() -> Iterator[Workspace]:
    ws = Workspace()
    yield ws
    ws.close()


def _stores(ws: Workspace, tag: str, *, close: bool) -> tuple[Any, list[Any]]:
    import optuna
    from mlflow import MlflowClient

    _, storage, tracking = ws.fresh(tag)
    floor.floor_study(storage, tracking, WIDTHS, close=close)
    trials = optuna.load_study(study_name=floor.STUDY, storage=storage).trials
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name(floor.STUDY)
    runs = client.search_runs([experiment.experiment_id], "tags.`study.role` = 'trial'")
    return trials, runs


def test_a_floor_trial_writes_the_contracts_attrs_and_closes_its_nested_run(
        workspace: Workspace) -> None:
    trials, runs = _stores(workspace, "floor-close", close=True)

    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert sorted(t.params["width"] for t in trials) == list(WIDTHS)
    by_id = {run.info.run_id: run for run in runs}
    for trial in trials:
        assert set(floor.SPEC_ATTRS) <= set(trial.user_attrs)
        run = by_id[trial.user_attrs["mlflow_run_id"]]
        assert run.info.status == "FINISHED"
        assert run.data.tags["study.state"] == run.data.tags["optuna.trial_state"] == "COMPLETE"
        assert run.data.tags["optuna.trial_number"] == str(trial.number)
        assert "mlflow.parentRunId" in run.data.tags
        assert {"n_params", "init/loss", "early/loss", "final/val_loss"} <= set(run.data.metrics)
        assert {"width", "lr", "batch_size", "weight_decay", "n_params"} <= set(run.data.params)


def test_without_the_close_the_floor_leaves_its_runs_open(workspace: Workspace) -> None:
    trials, runs = _stores(workspace, "floor-open", close=False)

    assert len(runs) == len(trials) == len(WIDTHS)
    assert {run.info.status for run in runs} == {"RUNNING"}
    assert not any("study.state" in run.data.tags for run in runs)


def test_the_floors_attrs_are_attrs_the_service_writes(workspace: Workspace) -> None:
    import optuna
    import torch

    from bench.overhead import prepare_service, run_service
    from study.training.data import load_dataset

    data = load_dataset("digits", seed=0, device=torch.device("cpu"))
    config = prepare_service(workspace, WIDTHS[:1], "cpu", "floor-service", epochs=1)
    run_service(config, data)
    (trial,) = optuna.load_study(study_name=config.study_name, storage=config.storage).trials

    assert set(floor.SPEC_ATTRS) <= set(trial.user_attrs)
    # The service writes more than the floor: the floor is the contract's least, not a copy.
    assert len(trial.user_attrs) > len(floor.SPEC_ATTRS)


def test_bench_floor_reports_both_variants_per_trial(workspace: Workspace) -> None:
    plan = dataclasses.replace(QUICK, widths=WIDTHS[:1], overhead_repeats=1)
    result = floor.bench_floor(workspace, plan)

    assert set(result["per_trial"]) == {"with_close", "without_close"}
    assert all(len(v) == 1 and v[0] > 0 for v in result["per_trial"].values())
    assert result["per_trial_median"] == result["per_trial"]["with_close"][0]


def _doc(fixed: float, floor_seconds: float | None) -> dict[str, Any]:
    doc: dict[str, Any] = {"overhead": {"decomposition": {"per_trial_fixed": fixed}}}
    if floor_seconds is not None:
        doc["floor"] = {"per_trial_median": floor_seconds,
                        "per_trial_median_without_close": floor_seconds / 2}
    return doc


def test_the_fixed_cost_is_read_as_a_ratio_to_the_floor() -> None:
    assert floor_figures(_doc(0.060, 0.040)) == [("floor_fixed_ms_per_trial", 40.0),
                                                 ("fixed_over_floor", pytest.approx(1.5))]
    assert "**1.50x** the floor" in floor.floor_note(_doc(0.060, 0.040))
    assert "20 ms without the run's close" in floor.floor_note(_doc(0.060, 0.040))


def test_results_without_a_floor_print_no_floor_figures() -> None:
    assert floor_figures(_doc(0.060, None)) == []
    assert "not measured" in floor.floor_note(_doc(0.060, None))
