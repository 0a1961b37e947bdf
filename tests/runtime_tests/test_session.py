"""A study session end to end through the library: real Optuna SQLite storage, real MLflow
SQLite store, real training on digits. MLflow is checked through MlflowClient."""

from __future__ import annotations

import io
import logging
import math
import signal
import sys

import optuna
import pytest

from study._signals import Interrupts
from study.config import StudyConfig
from study.errors import StudyError
from study.keys import CONFIG_ATTR, PARENT_RUN_ATTR
from study.runtime import session
from study.runtime._optuna_logs import optuna_quiet
from study.runtime.lifecycle import load_study, prepare_study
from study.runtime.session import run_session
from study.storages import create_storage

TRIAL_PARAMS = {"width", "lr", "batch_size", "weight_decay", "penalty_mode", "model", "dataset",
                "seed", "device", "n_params"}
EPOCH_METRICS = {"train/loss", "train/data_loss", "train/penalty", "train/weight_sq_norm",
                 "val/loss", "val/accuracy", "train/samples_per_s"}
SUMMARY_METRICS = {"n_params", "early/loss", "early/data_loss", "early/penalty",
                   "final/val_loss", "final/val_accuracy"}

pytestmark = pytest.mark.usefixtures("clean_env")


def small_config(storage_url: str, tracking_uri: str, **overrides) -> StudyConfig:
    """A study that trains in about a second per trial on 2 CPU cores."""
    values = dict(study_name="s", storage=storage_url, tracking_uri=tracking_uri,
                  experiment="exp", epochs=2, width_min=4, width_max=8, batch_sizes=(64,),
                  lr_min=1e-3, lr_max=1e-2, n_trials=3, device="cpu")
    values.update(overrides)
    return StudyConfig(**values)


def runs_by_role(client, role: str) -> list:
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, f"tags.`study.role` = '{role}'")


def create_with_queue(config: StudyConfig, queued: list[dict]) -> optuna.Study:
    """Create the study as `study run` would, then enqueue fixed trials (Optuna's own API)."""
    study = load_study(prepare_study(config)).study
    for params in queued:
        study.enqueue_trial(params)
    return study


def test_session_logs_one_parent_and_one_nested_run_per_trial(storage_url, tracking_uri,
                                                              mlflow_client):
    result = run_session(small_config(storage_url, tracking_uri))

    (parent,) = runs_by_role(mlflow_client, "parent")
    trials = sorted(runs_by_role(mlflow_client, "trial"), key=lambda r: r.info.run_name)
    assert result.parent_run_id == parent.info.run_id
    assert parent.info.run_name == "s"
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["study.name"] == "s"
    assert parent.data.tags["study.storage"] == storage_url
    assert parent.data.params["epochs"] == "2"
    assert parent.data.params["batch_sizes"] == "64"
    assert parent.data.metrics["study/n_complete"] == 3
    assert parent.data.metrics["study/n_failed"] == 0
    assert math.isfinite(parent.data.metrics["study/best_value"])
    assert [r.info.run_name for r in trials] == ["trial-0000", "trial-0001", "trial-0002"]
    for run in trials:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["optuna.study_name"] == "s"
        assert run.data.tags["optuna.trial_state"] == "COMPLETE"
        assert run.info.status == "FINISHED"
        assert set(run.data.params) >= TRIAL_PARAMS
        assert set(run.data.metrics) >= EPOCH_METRICS | SUMMARY_METRICS


def test_trials_and_runs_link_both_ways(storage_url, tracking_uri, mlflow_client):
    config = small_config(storage_url, tracking_uri, n_trials=2)
    run_session(config)

    study = optuna.load_study(study_name="s", storage=storage_url)
    for trial in study.trials:
        run = mlflow_client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.data.tags["optuna.trial_number"] == str(trial.number)
        assert int(run.data.params["n_params"]) == trial.user_attrs["n_params"]
        assert run.data.metrics["early/loss"] == pytest.approx(trial.user_attrs["early_loss"])
        assert run.data.metrics["early/penalty"] == pytest.approx(
            trial.user_attrs["early_penalty"])
        assert "early_data_loss" in trial.user_attrs
    assert study.user_attrs[CONFIG_ATTR]["epochs"] == 2
    assert study.user_attrs[PARENT_RUN_ATTR] == runs_by_role(mlflow_client, "parent")[0].info.run_id


def test_l2_in_loss_total_is_data_plus_penalty_every_epoch(storage_url, tracking_uri,
                                                           mlflow_client):
    run_session(small_config(storage_url, tracking_uri, n_trials=1, epochs=3))

    (run,) = runs_by_role(mlflow_client, "trial")
    history = {
        key: {m.step: m.value for m in mlflow_client.get_metric_history(run.info.run_id, key)}
        for key in ("train/loss", "train/data_loss", "train/penalty")
    }
    assert sorted(history["train/loss"]) == [1, 2, 3]
    for step, total in history["train/loss"].items():
        assert history["train/penalty"][step] > 0
        assert total == pytest.approx(
            history["train/data_loss"][step] + history["train/penalty"][step], rel=1e-12)


def test_resume_reuses_parent_and_adds_only_missing_trials(storage_url, tracking_uri,
                                                           mlflow_client):
    first = run_session(small_config(storage_url, tracking_uri, n_trials=2))
    second = run_session(small_config(storage_url, tracking_uri, n_trials=4))

    assert second.parent_run_id == first.parent_run_id
    assert len(runs_by_role(mlflow_client, "parent")) == 1
    names = sorted(r.info.run_name for r in runs_by_role(mlflow_client, "trial"))
    assert names == ["trial-0000", "trial-0001", "trial-0002", "trial-0003"]
    assert second.n_finished == 4


def test_met_budget_runs_no_trial(storage_url, tracking_uri, mlflow_client):
    run_session(small_config(storage_url, tracking_uri, n_trials=1))
    again = run_session(small_config(storage_url, tracking_uri, n_trials=1))

    assert again.n_finished == 1
    assert len(runs_by_role(mlflow_client, "trial")) == 1


def test_a_checkpoint_that_raises_before_the_first_trial_runs_none(storage_url, tracking_uri,
                                                                    mlflow_client):
    class Latched(Interrupts):
        def check(self, *_):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_session(small_config(storage_url, tracking_uri, n_trials=2),
                    interrupts=Latched(KeyboardInterrupt))

    study = optuna.load_study(study_name="s", storage=storage_url)
    assert study.trials == []
    assert runs_by_role(mlflow_client, "trial") == []


@pytest.fixture
def installed_interrupts():
    """The command's real SIGINT/SIGTERM handlers, installed for one test, then taken out."""
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM),
              sys.unraisablehook)
    interrupts = Interrupts(KeyboardInterrupt)
    interrupts.install()
    yield interrupts
    signal.signal(signal.SIGINT, before[0])
    signal.signal(signal.SIGTERM, before[1])
    sys.unraisablehook = before[2]


def test_a_signal_while_the_stores_open_is_held_and_closes_the_parent_killed(
        storage_url, tracking_uri, mlflow_client, installed_interrupts, monkeypatch):
    opened = session.open_parent_run

    def open_then_signal(*args, **kwargs):
        found = opened(*args, **kwargs)
        signal.raise_signal(signal.SIGINT)  # Ctrl-C once the parent run exists
        return found

    monkeypatch.setattr(session, "open_parent_run", open_then_signal)
    with pytest.raises(session.Interrupted,
                       match=r"^interrupted; run the same command to resume$"):
        run_session(small_config(storage_url, tracking_uri, n_trials=2),
                    interrupts=installed_interrupts)

    assert optuna.load_study(study_name="s", storage=storage_url).trials == []
    assert [r.info.status for r in runs_by_role(mlflow_client, "parent")] == ["KILLED"]
    assert runs_by_role(mlflow_client, "trial") == []


def test_a_signal_while_the_stores_open_for_workers_starts_no_worker(
        tmp_path, tracking_uri, mlflow_client, installed_interrupts, monkeypatch):
    """run_with_workers: the signal held while the stores opened is raised before any worker
    process starts (none would hear it: they start after the command's handlers ran)."""
    from study.runtime import workers

    started = []
    monkeypatch.setattr(workers, "start_workers", lambda *a, **k: started.append(a) or [0])
    opened = session.open_parent_run

    def open_then_signal(*args, **kwargs):
        found = opened(*args, **kwargs)
        signal.raise_signal(signal.SIGTERM)  # as Kubernetes or Slurm stop a job
        return found

    monkeypatch.setattr(session, "open_parent_run", open_then_signal)
    storage = f"journal:{tmp_path / 'journal.log'}"
    with pytest.raises(session.Interrupted,
                       match=r"^interrupted; run the same command to resume$"):
        session.run_with_workers(small_config(storage, tracking_uri, n_trials=2), 2,
                                 interrupts=installed_interrupts)

    assert started == []
    assert optuna.load_study(study_name="s", storage=create_storage(storage)).trials == []
    assert [r.info.status for r in runs_by_role(mlflow_client, "parent")] == ["KILLED"]


def test_a_signal_while_the_data_loads_is_raised_at_once_and_creates_nothing(
        tmp_path, installed_interrupts, monkeypatch):
    from study.runtime import inputs

    loaded = inputs.load_data

    def signal_then_load(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)
        return loaded(*args, **kwargs)

    monkeypatch.setattr(inputs, "load_data", signal_then_load)
    with pytest.raises(KeyboardInterrupt) as caught:
        run_session(small_config(f"sqlite:///{tmp_path / 'o.db'}",
                                 f"sqlite:///{tmp_path / 'm.db'}"),
                    interrupts=installed_interrupts)

    assert not isinstance(caught.value, session.Interrupted)  # no session to speak of
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_checkpoint_that_raises_after_a_trial_stops_with_that_trial_complete(
        storage_url, tracking_uri, mlflow_client):
    calls = []

    class SecondCheckRaises(Interrupts):
        def check(self, *_):
            calls.append(1)
            # On entering _optimize; before any trial; entering trial 0; after trial 0.
            if len(calls) == 4:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_session(small_config(storage_url, tracking_uri, n_trials=3),
                    interrupts=SecondCheckRaises(KeyboardInterrupt))

    study = optuna.load_study(study_name="s", storage=storage_url)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE]
    assert [r.info.status for r in runs_by_role(mlflow_client, "trial")] == ["FINISHED"]


def test_a_smaller_budget_on_resume_says_how_many_finished_and_the_budget(storage_url,
                                                                         tracking_uri):
    run_session(small_config(storage_url, tracking_uri, n_trials=2))
    out = io.StringIO()
    again = run_session(small_config(storage_url, tracking_uri, n_trials=1), out=out)

    assert again.n_finished == 2
    assert "budget met (2 finished, budget 1); nothing to run." in out.getvalue()
    assert "--n-trials 3 would run 1 more." in out.getvalue()
    assert "2/1" not in out.getvalue()


def test_a_design_whose_budget_is_met_suggests_no_n_trials(storage_url, tracking_uri):
    """`study explain` runs a queue: its size comes from the design (--replicates, --n-widths),
    and the command has no --n-trials to suggest."""
    from study.runtime.explain import CELL_ATTR, QueuedTrial

    run_session(small_config(storage_url, tracking_uri, n_trials=2))
    out = io.StringIO()
    run_session(small_config(storage_url, tracking_uri, n_trials=1), out=out,
                queue=[QueuedTrial({"width": 8}, {CELL_ATTR: "w8-r0-none"})])

    assert "budget met (2 finished, budget 1); nothing to run." in out.getvalue()
    assert "--n-trials" not in out.getvalue()


def test_pruned_trial_is_a_finished_run_tagged_pruned_and_study_continues(storage_url,
                                                                          tracking_uri,
                                                                          mlflow_client):
    config = small_config(storage_url, tracking_uri, n_trials=7, pruner="median",
                          lr_min=1e-7, lr_max=1e-2)
    good = {"width": 4, "lr": 1e-2, "weight_decay": 1e-4}
    create_with_queue(config, [good] * 5 + [{**good, "lr": 1e-7}, good])

    result = run_session(config)

    study = optuna.load_study(study_name="s", storage=storage_url)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    # trial 5 (lr 1e-7) is far worse than the median; the good ones differ only by their seeds
    assert 5 in [t.number for t in pruned]
    run = mlflow_client.get_run(study.trials[5].user_attrs["mlflow_run_id"])
    assert run.info.status == "FINISHED"  # it ran as asked: not drawn as a failure
    assert run.data.tags["study.state"] == run.data.tags["optuna.trial_state"] == "PRUNED"
    assert "early/loss" in run.data.metrics  # pruned after the early window, still usable
    assert "final/val_loss" not in run.data.metrics
    assert result.n_finished == 7  # the study went on after the pruned trial
    assert study.trials[6].state in (optuna.trial.TrialState.COMPLETE,
                                     optuna.trial.TrialState.PRUNED)


def test_non_finite_trial_fails_in_both_stores_and_study_continues(storage_url, tracking_uri,
                                                                   mlflow_client):
    config = small_config(storage_url, tracking_uri, n_trials=2, pruner="none",
                          lr_min=1e-3, lr_max=1e20)
    create_with_queue(config, [{"width": 4, "lr": 1e20, "weight_decay": 1e-2},
                               {"width": 4, "lr": 1e-2, "weight_decay": 1e-4}])

    result = run_session(config)

    study = optuna.load_study(study_name="s", storage=storage_url)
    failed = study.trials[0]
    assert failed.state == optuna.trial.TrialState.FAIL
    assert "training loss became" in failed.user_attrs["failure"]
    run = mlflow_client.get_run(failed.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED"
    assert run.data.tags["optuna.trial_state"] == "FAIL"
    assert "training loss became" in run.data.tags["study.failure"]
    assert result.n_finished == 2
    assert result.counts["FAIL"] == 1


RAISES_AT_6 = """
from torch import nn

def build(width, *, input_shape, n_classes):
    if width == 6:
        raise ValueError("no six")
    return nn.Sequential(nn.Conv2d(input_shape[0], width, 3), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(width, n_classes))
"""


def test_a_trial_that_fails_before_its_model_is_built_logs_its_params(
        tmp_path, storage_url, tracking_uri, mlflow_client):
    # Found by a user: such runs had no params, so the failed configurations could not be
    # found in MLflow by their settings.
    (tmp_path / "net.py").write_text(RAISES_AT_6)
    config = small_config(storage_url, tracking_uri, n_trials=1, pruner="none",
                          model=f"{tmp_path / 'net.py'}:build", timeout=0.01)  # that trial only
    create_with_queue(config, [{"width": 6, "lr": 1e-2, "weight_decay": 1e-3}])

    run_session(config)

    failed = optuna.load_study(study_name="s", storage=storage_url).trials[0]
    assert failed.state == optuna.trial.TrialState.FAIL
    run = mlflow_client.get_run(failed.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and "no six" in run.data.tags["study.failure"]
    assert run.data.params["width"] == "6" and run.data.params["lr"] == "0.01"
    assert TRIAL_PARAMS - {"n_params"} <= set(run.data.params)
    assert "n_params" not in run.data.params  # never built: no count to give


def test_each_trial_keeps_its_curve_written_once_when_it_ends(tmp_path, tracking_uri):
    journal = tmp_path / "optuna.journal"  # a log of every storage write, so writes count
    config = small_config(f"journal:{journal}", tracking_uri, epochs=3, n_trials=2,
                          pruner="none", lr_min=1e-3, lr_max=1e20)
    create_with_queue(config, [{"width": 4, "lr": 1e-2, "weight_decay": 1e-4},
                               {"width": 4, "lr": 1e20, "weight_decay": 1e-2},
                               {"width": 5, "lr": 1e-2, "weight_decay": 1e-4}])

    second_epochs: list[int] = []

    def prune_the_second_to_reach_epoch_two(history, report):  # the third trial
        if report.epoch == 2:
            second_epochs.append(report.epoch)
            if len(second_epochs) == 2:
                raise optuna.TrialPruned("custom rule")

    run_session(config, hooks=[prune_the_second_to_reach_epoch_two])

    trials = optuna.load_study(study_name="s", storage=create_storage(config.storage)).trials
    states = [t.state.name for t in trials]
    assert states == ["COMPLETE", "FAIL", "PRUNED"], states
    complete, failed, pruned = trials
    assert len(complete.user_attrs["curve"]) == 3
    assert len(pruned.user_attrs["curve"]) == 2
    assert "curve" not in failed.user_attrs  # diverged in its first epoch: no epoch to keep
    assert complete.user_attrs["curve"][0]["loss"] == complete.user_attrs["early_loss"]
    assert [row["epoch"] for row in complete.user_attrs["curve"]] == [1, 2, 3]
    assert journal.read_text().count('"curve"') == 2  # once per trial that has one


def test_a_failed_trial_is_said_once_with_its_params(storage_url, tracking_uri, caplog):
    config = small_config(storage_url, tracking_uri, n_trials=1, pruner="none",
                          lr_min=1e-3, lr_max=1e20)
    create_with_queue(config, [{"width": 4, "lr": 1e20, "weight_decay": 1e-2},
                               {"width": 4, "lr": 1e-2, "weight_decay": 1e-4}])
    out = io.StringIO()

    with caplog.at_level(logging.WARNING, logger="optuna"):
        run_session(config, out=out)

    (line,) = [x for x in out.getvalue().splitlines() if "FAIL" in x]
    assert "trial 0 FAIL (training loss became" in line
    assert "with width=4 lr=1e+20 weight_decay=0.01" in line
    assert "trial 1 COMPLETE" in out.getvalue()
    optuna_said = [r.getMessage() for r in caplog.records if r.name.startswith("optuna")]
    assert not [m for m in optuna_said if m.startswith("Trial 0 failed")], optuna_said


def test_optuna_is_quiet_inside_a_session_and_as_it_was_after(caplog):
    study = optuna.create_study()
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)

    def broken(trial):
        raise ValueError("not ours")

    try:
        with caplog.at_level(logging.INFO, logger="optuna"):
            with optuna_quiet():
                study.optimize(lambda t: 1.0, n_trials=1)
                assert optuna.logging.get_verbosity() == optuna.logging.ERROR
            with pytest.raises(ValueError, match="not ours"), optuna_quiet():
                study.optimize(broken, n_trials=1)
            assert optuna.logging.get_verbosity() == optuna.logging.INFO
            study.optimize(lambda t: 2.0, n_trials=1)
    finally:
        optuna.logging.set_verbosity(before)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Trial")]
    assert [m.split(" finished")[0] for m in said] == ["Trial 2"], said


def test_repeated_failures_stop_the_session_with_one_error(storage_url, tracking_uri):
    config = small_config(storage_url, tracking_uri, n_trials=20, pruner="none",
                          lr_min=1e19, lr_max=1e20, weight_decay_min=1e-2,
                          weight_decay_max=1e-2)

    with pytest.raises(StudyError, match="5 trials failed in a row"):
        run_session(config)

    study = optuna.load_study(study_name="s", storage=storage_url)
    assert len(study.trials) == 5


@pytest.mark.parametrize("mode", ["coupled", "decoupled", "none"])
def test_modes_without_penalty_in_loss_log_zero_penalty(storage_url, tracking_uri,
                                                        mlflow_client, mode):
    run_session(small_config(storage_url, tracking_uri, n_trials=1, penalty_mode=(mode,)))

    (run,) = runs_by_role(mlflow_client, "trial")
    assert run.data.params["penalty_mode"] == mode
    for step in mlflow_client.get_metric_history(run.info.run_id, "train/penalty"):
        assert step.value == 0.0
    assert run.data.metrics["train/weight_sq_norm"] > 0
    assert run.data.metrics["train/loss"] == run.data.metrics["train/data_loss"]


def test_several_penalty_modes_are_a_searched_dimension(storage_url, tracking_uri):
    config = small_config(storage_url, tracking_uri, n_trials=2,
                          penalty_mode=("l2-in-loss", "none"))
    create_with_queue(config, [{"penalty_mode": "l2-in-loss"}, {"penalty_mode": "none"}])

    run_session(config)

    study = optuna.load_study(study_name="s", storage=storage_url)
    assert [t.params["penalty_mode"] for t in study.trials] == ["l2-in-loss", "none"]
    assert study.trials[0].user_attrs["early_penalty"] > 0
    assert study.trials[1].user_attrs["early_penalty"] == 0


def test_entry_point_run_becomes_parent_then_later_ones_are_sessions(
        storage_url, tracking_uri, mlflow_client, monkeypatch):
    experiment_id = mlflow_client.create_experiment("launched")
    entry = mlflow_client.create_run(experiment_id).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", entry)
    run_session(small_config(storage_url, tracking_uri, n_trials=1))
    later = mlflow_client.create_run(experiment_id).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", later)

    run_session(small_config(storage_url, tracking_uri, n_trials=2))

    parent = mlflow_client.get_run(entry)
    session = mlflow_client.get_run(later)
    assert parent.data.tags["study.role"] == "parent"
    assert parent.info.run_name == "s"
    assert session.data.tags["study.role"] == "session"
    assert session.info.run_name == "s-session"  # not MLflow's random name (found by a user)
    assert session.data.tags["study.parent_run_id"] == entry
    assert session.data.metrics["study/n_complete"] == 2
    # Its params are MLflow's own record of the entry point: the UI says where the study's are.
    assert session.data.tags["mlflow.note.content"].startswith(
        f"A session of study 's': the study's settings, trials and answer are on its parent run "
        f"{entry}.")
    trials = mlflow_client.search_runs([experiment_id], "tags.`study.role` = 'trial'")
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {entry}
    assert len(trials) == 2
    stored = optuna.load_study(study_name="s", storage=storage_url).user_attrs[CONFIG_ATTR]
    assert stored["experiment"] == "launched"


def test_a_session_run_in_another_experiment_is_said_once(
        storage_url, tracking_uri, mlflow_client, monkeypatch, capsys):
    run_session(small_config(storage_url, tracking_uri, n_trials=1))  # experiment "exp"
    same = mlflow_client.create_run(mlflow_client.get_experiment_by_name("exp").experiment_id)
    monkeypatch.setenv("MLFLOW_RUN_ID", same.info.run_id)
    capsys.readouterr()
    run_session(small_config(storage_url, tracking_uri, n_trials=1))
    assert "note: this `mlflow run` run" not in capsys.readouterr().err

    other = mlflow_client.create_run("0")  # what `mlflow run` without an experiment opens
    monkeypatch.setenv("MLFLOW_RUN_ID", other.info.run_id)
    run_session(small_config(storage_url, tracking_uri, n_trials=1))

    # (The settings the study keeps have a note of their own: test_kept_settings.py.)
    notes = [line for line in capsys.readouterr().err.splitlines()
             if line.startswith("note: this `mlflow run`")]
    assert notes == ["note: this `mlflow run` run is in experiment 'Default', study 's' and its "
                     "runs in 'exp' (the run's tags link it to them; `mlflow run "
                     "--experiment-name exp` keeps them together)."]
    assert mlflow_client.get_run(other.info.run_id).data.tags["study.role"] == "session"


def test_a_worker_says_only_its_own_interrupted_trial():
    # Found by a user: two workers stopped together each claimed both trials.
    from study.runtime._interrupted import interrupt_summary

    study = optuna.create_study()
    for number, stamp in ((0, "host:1:a"), (1, "host:2:b")):
        trial = study.ask()
        trial.set_user_attr("worker", stamp)
        trial.set_user_attr("failure", "interrupted")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        assert trial.number == number
    resume = "run the same command to resume"
    spent = "failed (retried too often to queue again)"  # nothing queued them again here
    assert interrupt_summary(study, set(), "host:2:b") == f"interrupted: trial 1 {spent}; {resume}"
    assert interrupt_summary(study, set(), None) == f"interrupted: trials 0, 1 {spent}; {resume}"
    assert interrupt_summary(study, {0, 1}, None) == f"interrupted; {resume}"


def test_a_relative_sqlite_storage_is_tagged_on_the_parent_as_the_report_shows_it(
        tmp_path, monkeypatch, tracking_uri, mlflow_client):
    """Found by a user: the tag said sqlite:///optuna.db, the report sqlite:////tmp/.../optuna.db
    (a relative path names a file relative to wherever the run is read)."""
    monkeypatch.chdir(tmp_path)
    run_session(small_config("sqlite:///optuna.db", tracking_uri, n_trials=1, epochs=1))
    (parent,) = runs_by_role(mlflow_client, "parent")
    assert parent.data.tags["study.storage"] == f"sqlite:///{tmp_path.resolve() / 'optuna.db'}"


@pytest.mark.parametrize(("known", "line"), [
    ({0: True}, "interrupted: trial 0 failed and queued again; run the same command to resume"),
    ({0: False}, "interrupted: trial 0 failed (retried too often to queue again); run the same "
                 "command to resume"),
    ({}, "interrupted; run the same command to resume"),
])
def test_the_interrupt_line_says_what_this_process_did_whatever_a_read_finds(known, line):
    """Seen in CI: the trial was failed and queued, stamped by the process, yet the summary's
    read of the storage found it not; the objective's own record now says it."""
    from study.runtime._interrupted import interrupt_summary

    empty = optuna.create_study()  # a read that finds no failed trial
    assert interrupt_summary(empty, set(), None, known=known) == line


def test_a_worker_says_which_process_it_is_and_a_study_run_does_not(storage_url, tracking_uri):
    """Found by a new user: `--workers 2` printed the same start line twice."""
    import os

    run, worker = io.StringIO(), io.StringIO()
    run_session(small_config(storage_url, tracking_uri, n_trials=1, epochs=1), out=run)
    run_session(small_config(storage_url, tracking_uri, n_trials=2, epochs=1), worker=True,
                given={"n_trials": 2}, out=worker)
    assert run.getvalue().splitlines()[0].startswith(
        "[s] 0/1 finished; running trials on cpu (storage ")
    assert worker.getvalue().splitlines()[0].startswith(
        f"[s] 1/2 finished; running trials on cpu (worker pid {os.getpid()}, storage ")


def test_a_signal_while_the_tracking_store_does_not_answer_stops_the_wait(
        tmp_path, installed_interrupts, monkeypatch, capsys):
    """Ctrl-C is held while the stores open, and the warning says Ctrl-C stops the wait for a
    store that does not answer: it does, before anything of the study is made."""
    import os
    import socket
    import threading

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed on exit: connecting is refused
    config = small_config(f"sqlite:///{tmp_path / 'o.db'}", f"http://127.0.0.1:{port}",
                          tracking_timeout=60)
    threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt) as caught:
        run_session(config, interrupts=installed_interrupts)

    assert not isinstance(caught.value, session.Interrupted)  # no session to speak of
    assert "unreachable" not in capsys.readouterr().err  # the wait did not run out
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_workers_on_a_study_whose_budget_is_met_start_no_process(tmp_path, tracking_uri,
                                                                 capsys):
    """Found by a user: `--workers 2` on a finished study started two workers (17 s) that
    each printed the same "budget met" line."""
    config = small_config(f"journal:{tmp_path / 'study.journal'}", tracking_uri, n_trials=1,
                          epochs=1)
    run_session(config, out=io.StringIO())
    capsys.readouterr()
    out = io.StringIO()

    result = session.run_with_workers(config, 2, out=out)

    assert result.n_finished == 1
    assert [line for line in out.getvalue().splitlines() if "budget met" in line] == [
        "study 's': budget met (1/1 finished); nothing to run. The budget counts the study's "
        "trials in all: --n-trials 2 would run 1 more."]
    assert "worker pid" not in capsys.readouterr().err  # no worker started
