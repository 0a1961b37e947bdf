"""The bench's floor trial keeps the contract it claims to be the least of (checked through
``MlflowClient`` and Optuna on tmp SQLite stores), makes no store call the service does not make
as often (counted on the real stores), and is read against the service's fixed cost as a
ratio."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from bench import floor
from bench.harness import Workspace, interleaved
from bench.results import floor_figures

WIDTHS = (4, 6)


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
        assert set(trial.user_attrs) == set(floor.SPEC_ATTRS)
        run = by_id[trial.user_attrs["mlflow_run_id"]]
        assert run.info.status == "FINISHED"
        assert run.data.tags["study.state"] == run.data.tags["optuna.trial_state"] == "COMPLETE"
        assert run.data.tags["optuna.trial_number"] == str(trial.number)
        assert "mlflow.parentRunId" in run.data.tags
        assert {"n_params", "init/loss", "early/loss", "final/val_loss"} <= set(run.data.metrics)
        assert {"width", "lr", "batch_size", "weight_decay", "n_params"} <= set(run.data.params)


def test_without_the_close_the_floor_only_opens_its_runs(workspace: Workspace) -> None:
    trials, runs = _stores(workspace, "floor-open", close=False)

    assert len(runs) == len(trials) == len(WIDTHS)
    assert {run.info.status for run in runs} == {"RUNNING"}
    assert not any(run.data.params or run.data.metrics for run in runs)
    assert not any("study.state" in run.data.tags for run in runs)


class _Counts:
    """Calls of every public method of the service's Optuna storage and of ``MlflowClient``'s
    writes, counted by wrapping the real methods (they still run)."""

    _MLFLOW = ("create_run", "log_batch", "set_terminated", "set_tag", "log_metric",
               "log_param", "update_run")

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:  # undone by monkeypatch
        import optuna
        from mlflow import MlflowClient

        from study.storages import StudyRDBStorage

        self.calls: Counter[str] = Counter()
        storage_methods = [n for n in dir(optuna.storages.BaseStorage) if not n.startswith("_")]
        for cls, names in ((StudyRDBStorage, storage_methods), (MlflowClient, self._MLFLOW)):
            for name in names:
                original = getattr(cls, name, None)
                if callable(original):
                    monkeypatch.setattr(cls, name, self._counted(f"{cls.__name__}.{name}",
                                                                 original))

    def _counted(self, key: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[key] += 1
            return original(*args, **kwargs)
        return counted

    def per_trial(self, study: Callable[[tuple[int, ...]], Any]) -> Counter[str]:
        """The calls of a study of three trials less those of a study of two (both search the
        width: a single width would be fixed, not searched)."""
        self.calls.clear()
        study(WIDTHS)
        two = Counter(self.calls)
        self.calls.clear()
        study((*WIDTHS, max(WIDTHS) + 2))
        return self.calls - two


@pytest.fixture(scope="module")
def counted(workspace: Workspace) -> dict[str, Any]:
    """Per-trial store calls of the service and of the floor (with its close), and the
    service's last config."""
    import torch

    from bench.overhead import prepare_service, run_service
    from study.training.data import load_dataset

    data = load_dataset("digits", seed=0, device=torch.device("cpu"))
    configs: list[Any] = []

    def service(widths: tuple[int, ...]) -> None:
        configs.append(prepare_service(workspace, widths, "cpu", "floor-service", epochs=1))
        run_service(configs[-1], data)

    def floor_with_close(widths: tuple[int, ...]) -> None:
        _, storage, tracking = workspace.fresh("floor-counted")
        floor.floor_study(storage, tracking, widths, close=True)

    with pytest.MonkeyPatch.context() as monkeypatch:
        counts = _Counts(monkeypatch)
        return {"service": counts.per_trial(service), "floor": counts.per_trial(floor_with_close),
                "config": configs[-1]}


def test_the_floor_makes_no_store_call_the_service_does_not_make_as_often(
        counted: dict[str, Any]) -> None:
    theirs, ours = counted["service"], counted["floor"]

    assert ours["StudyRDBStorage.set_trial_user_attr"] == len(floor.SPEC_ATTRS)
    assert ours["MlflowClient.create_run"] == ours["MlflowClient.set_terminated"] == 1
    more = {k: (n, theirs[k]) for k, n in ours.items() if n > theirs[k]}
    assert not more, f"calls the floor makes more often than the service (floor, service): {more}"


def test_the_floors_attrs_and_params_are_among_the_services(workspace: Workspace,
                                                             counted: dict[str, Any]) -> None:
    import optuna

    config = counted["config"]
    service = optuna.load_study(study_name=config.study_name, storage=config.storage).trials[0]
    floor_trials, _ = _stores(workspace, "floor-params", close=False)

    assert set(floor.SPEC_ATTRS) <= set(service.user_attrs)
    assert set(floor_trials[0].params) == set(service.params) == {"width"}


def test_the_floor_variants_interleave_with_others_and_give_seconds_per_trial(
        workspace: Workspace) -> None:
    times = interleaved(floor.floor_variants(workspace, WIDTHS), 1, warmup=0)
    result = floor.floor_result(times, len(WIDTHS))

    assert set(result["per_trial"]) == set(floor.VARIANTS)
    assert result["per_trial_median"] == times["floor"][0] / len(WIDTHS) > 0
    assert result["per_trial_median_with_close"] == times["floor_with_close"][0] / len(WIDTHS)


def _doc(fixed: float, floor_seconds: float | None) -> dict[str, Any]:
    doc: dict[str, Any] = {"overhead": {"decomposition": {"per_trial_fixed": fixed}}}
    if floor_seconds is not None:
        doc["floor"] = {"per_trial_median": floor_seconds,
                        "per_trial_median_with_close": floor_seconds * 2}
    return doc


def test_the_fixed_cost_is_read_against_the_floor_of_the_trials_path() -> None:
    assert floor_figures(_doc(0.060, 0.040)) == [
        ("floor_fixed_ms_per_trial", 40.0), ("floor_with_close_ms_per_trial", 80.0),
        ("fixed_over_floor", pytest.approx(1.5))]
    note = floor.floor_note(_doc(0.060, 0.040))
    assert "**1.50x** the floor" in note and "80 ms with the run's close" in note


def test_results_without_a_floor_print_no_floor_figures() -> None:
    assert floor_figures(_doc(0.060, None)) == []
    assert "not measured" in floor.floor_note(_doc(0.060, None))
