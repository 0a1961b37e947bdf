"""``study status`` on a real SQLite storage: RUNNING trials of live and dead workers apart."""

from __future__ import annotations

import datetime
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from study.config import StudyConfig
from study.keys import CONFIG_ATTR, FAILURE_ATTR, INTERRUPTED, WORKER_ATTR
from study.runtime.recovery import worker_stamp
from study.runtime.status import study_status


def test_status_tells_live_running_trials_from_stale_ones(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    config = StudyConfig(study_name="s", storage=storage)
    study = optuna.create_study(study_name="s", storage=storage)
    study.set_user_attr(CONFIG_ATTR, config.study_settings())
    dead = subprocess.run([sys.executable, "-c", "from study.runtime.recovery import "
                           "worker_stamp; print(worker_stamp())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    for stamp in (worker_stamp(), worker_stamp(), dead):
        study.ask().set_user_attr(WORKER_ATTR, stamp)
    lines = study_status(config).splitlines()
    (running,) = [line for line in lines if line.startswith("running:")]
    assert running == ("running: 2 live trial(s) on 1 worker(s), 1 stale [2] (worker process "
                       "gone; the next `study run` or `study worker` re-queues them)")


def _study_with(tmp_path, states: list[TrialState]) -> StudyConfig:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    config = StudyConfig(study_name="s", storage=storage)
    study = optuna.create_study(study_name="s", storage=storage)
    study.set_user_attr(CONFIG_ATTR, config.study_settings())
    for state in states:
        trial = study.ask()
        time.sleep(0.05)  # every trial takes time: a span to divide by
        study.tell(trial, 1.0 if state is TrialState.COMPLETE else None, state=state)
    return config


def _throughput(config: StudyConfig) -> str:
    (line,) = [x for x in study_status(config).splitlines() if x.startswith("throughput:")]
    return line


def test_failed_trials_alone_give_no_throughput(tmp_path):
    config = _study_with(tmp_path, [TrialState.FAIL, TrialState.FAIL])

    assert _throughput(config) == "throughput: no finished trials yet"


def test_throughput_counts_finished_trials_over_the_time_trials_ran(tmp_path):
    config = _study_with(tmp_path, [TrialState.FAIL, TrialState.COMPLETE, TrialState.PRUNED])
    trials = optuna.load_study(study_name="s", storage=config.storage).trials
    hours = (trials[-1].datetime_complete - trials[0].datetime_start).total_seconds() / 3600

    assert _throughput(config).startswith(f"throughput: {2 / hours:.1f} finished trials per "
                                          f"hour (")


def _timed(study: optuna.Study, start_minute: float, minutes: float, *,
           worker: str | None = None) -> None:
    """A COMPLETE trial that ran from ``start_minute`` for ``minutes`` (in process
    ``worker``: its stamp, none when ``None``)."""
    from optuna.trial import FrozenTrial

    t0 = datetime.datetime(2026, 1, 1) + datetime.timedelta(minutes=start_minute)
    study.add_trial(FrozenTrial(
        number=0, state=TrialState.COMPLETE, value=1.0, datetime_start=t0,
        datetime_complete=t0 + datetime.timedelta(minutes=minutes), params={},
        distributions={}, user_attrs={WORKER_ATTR: worker} if worker else {},
        system_attrs={}, intermediate_values={}, trial_id=0))


@pytest.mark.parametrize(("pause", "busy_minutes"), [
    (0.5, 6.5),  # a pause under a minute inside a session counts as busy
    (90.0, 6.0),  # a session 90 minutes later: the idle stretch is left out
])
def test_throughput_leaves_out_idle_time_between_sessions(tmp_path, pause, busy_minutes):
    """Found by a first user: 4 trials with a 6-minute break read 43 trials per hour, where
    they ran at about 500."""
    config = _study_with(tmp_path, [])
    study = optuna.load_study(study_name="s", storage=config.storage)
    for k in range(3):
        _timed(study, k, 1.0)
    _timed(study, 3 + pause, 3.0)

    rate = 4 / (busy_minutes / 60)
    assert _throughput(config) == (f"throughput: {rate:.1f} finished trials per hour "
                                   f"({busy_minutes:.1f} min of running trials)")


@pytest.mark.parametrize(("second", "busy_minutes"), [
    ("host:1:a", 6.5),  # the same process: its work between two trials counts
    ("host:2:b", 6.0),  # another process half a minute later: a resumed session
])
def test_a_quick_resume_leaves_out_the_gap_between_the_sessions(tmp_path, second, busy_minutes):
    """Found by a new user: a resume 37 s later read 659 trials per hour, where they ran at
    about 3,500: the gap between the two processes counted as running time."""
    config = _study_with(tmp_path, [])
    study = optuna.load_study(study_name="s", storage=config.storage)
    for k in range(3):
        _timed(study, k, 1.0, worker="host:1:a")
    _timed(study, 3.5, 3.0, worker=second)

    rate = 4 / (busy_minutes / 60)
    assert _throughput(config) == (f"throughput: {rate:.1f} finished trials per hour "
                                   f"({busy_minutes:.1f} min of running trials)")


@pytest.mark.parametrize(("third", "busy_minutes"), [
    ("host:2:b", 4.5),  # the overlapping worker's next trial: its gap counts
    ("host:3:c", 4.0),  # a process that ran nothing before: a new session, the gap left out
])
def test_overlapping_workers_count_their_union_once(tmp_path, third, busy_minutes):
    config = _study_with(tmp_path, [])
    study = optuna.load_study(study_name="s", storage=config.storage)
    _timed(study, 0, 2.0, worker="host:1:a")
    _timed(study, 1, 2.0, worker="host:2:b")  # runs beside the first: minutes 0 to 3 busy
    _timed(study, 3.5, 1.0, worker=third)  # half a minute after both

    assert _throughput(config).endswith(f"({busy_minutes:.1f} min of running trials)")


@pytest.mark.parametrize(("minutes", "shown"), [(59 / 60, "59.0 s"), (61 / 60, "1.0 min"),
                                              (61.0, "1.0 h")])
def test_the_running_time_is_shown_in_a_unit_that_is_not_zero(tmp_path, minutes, shown):
    """Found by a new user: six trials of a quarter second each read '0.0 min'."""
    config = _study_with(tmp_path, [])
    _timed(optuna.load_study(study_name="s", storage=config.storage), 0, minutes)
    assert _throughput(config).endswith(f"({shown} of running trials)")


def test_the_trials_line_says_how_many_failures_were_interrupts(tmp_path):
    config = _study_with(tmp_path, [])
    study = optuna.load_study(study_name="s", storage=config.storage)
    for reason in (INTERRUPTED, "ValueError: boom", INTERRUPTED):
        trial = study.ask()
        trial.set_user_attr(FAILURE_ATTR, reason)
        study.tell(trial, state=TrialState.FAIL)
    (line,) = [x for x in study_status(config).splitlines() if x.startswith("trials:")]
    assert "3 fail (2 interrupted)" in line


def test_the_trials_line_of_failures_without_interrupts_is_unchanged(tmp_path):
    config = _study_with(tmp_path, [TrialState.FAIL])
    (line,) = [x for x in study_status(config).splitlines() if x.startswith("trials:")]
    assert "1 fail," in line and "interrupted" not in line


def _diagnoses(config: StudyConfig) -> str:
    (line,) = [x for x in study_status(config).splitlines() if x.startswith("diagnoses:")]
    return line


def test_the_diagnoses_are_counted_by_code_most_common_first(tmp_path):
    """Found by a new user: `study status` said nothing of the trials' diagnoses."""
    config = _study_with(tmp_path, [])
    study = optuna.load_study(study_name="s", storage=config.storage)
    for codes in ("penalty-dominated,mode-gap", "mode-gap", None, "mode-gap,slow-validation"):
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.COMPLETE, value=1.0,
            user_attrs={"diagnosis": codes} if codes else {}))
    assert _diagnoses(config) == ("diagnoses: 3 mode-gap, 1 penalty-dominated, "
                                  "1 slow-validation (of 4 trials; which, and why: "
                                  "study report)")


def test_a_study_of_healthy_trials_says_none(tmp_path):
    assert _diagnoses(_study_with(tmp_path, [TrialState.COMPLETE])) == "diagnoses: none"
