"""Crash safety: a worker killed mid-trial, a study stopped by SIGTERM or Ctrl-C, trials that
raise, diverge or run out of memory, a tracking server that goes away mid-study, and passwords
that must never be written anywhere.

Real parts only: the ``study`` command in subprocesses (sent real signals), an
``mlflow server`` process stopped and restarted on the same port, PostgreSQL databases made and
dropped per test, real (tiny) training on digits. Both stores are read back afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from study.config import StudyConfig
from study.keys import PARENT_RUN_ATTR
from study.runtime.lifecycle import load_study, prepare_study
from study.runtime.parent import adopt_orphaned_parent
from study.runtime.session import Interrupted, run_session
from study.tracking import Tracker, start_trial_run
from tests.conftest import cli_env, run_cli
from tests.servers import (
    STUDY_EXE,
    MlflowServer,
    experiment_runs,
    n_finished,
    poll_trials,
    postgres_url,
    runs_per_trial,
    stamp_of_an_exited_process,
    stderr_lines,
    study_trials,
    study_user_attrs,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("clean_env")]

SECRET = "S3cr3tPw"




@contextlib.contextmanager
def study_process(args: list[str], cwd: Path, *, host: str | None = None) -> subprocess.Popen:
    """``study ARGS`` running in the background (output in files under ``cwd``); killed on
    the way out if the test left it running. With ``host``, it runs in a UTS namespace of its
    own under that host name: to the study it is a worker on another machine (its pid means
    nothing here), while still being a process the test can SIGKILL (``exec`` keeps the pid)."""
    command = [str(STUDY_EXE), *args]
    if host is not None:
        command = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', host, *command]
    with (cwd / "first.out").open("w") as out, (cwd / "first.err").open("w") as err:
        proc = subprocess.Popen(command, cwd=cwd, env=cli_env(), stdout=out, stderr=err)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def _timeline(trials: list[optuna.trial.FrozenTrial]) -> str:
    return json.dumps([(t.number, t.state.name, t.params, t.user_attrs.get("failure"),
                        t.user_attrs.get("retried_from")) for t in trials], indent=1)


def _retries_of(trials: list, number: int) -> list:
    return [t for t in trials if t.user_attrs.get("retried_from") == number]


# --- SIGKILL mid-trial --------------------------------------------------------------------------


def _other_hosts_supported() -> bool:
    try:
        return subprocess.run(["unshare", "--uts", "sh", "-c", "hostname other-machine"],
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


# sqlite: the default storage; the dead-pid stamp finds the trial at once (same host).
# postgresql: the killed worker runs as another machine, so its pid cannot be judged here and
#   only the heartbeat (1 s, stale after 2 s) finds it: Optuna's stale-trial path, for real.
@pytest.mark.parametrize(("kind", "cause"), [("sqlite", "its worker process died"),
                                             ("postgresql", "worker stopped sending heartbeats")])
def test_sigkilled_trial_is_failed_closed_and_retried_on_resume(kind, cause, server, tmp_path,
                                                                new_postgres_database):
    host = None
    if kind == "postgresql":
        if not _other_hosts_supported():
            # Like the PostgreSQL and Chromium tests: CI must run it, a laptop may not.
            reason = "`unshare --uts` is not permitted here: no second host to kill"
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(reason + " (CI=true: this real-component test must run)")
            pytest.skip(reason)
        storage, extra = postgres_url(new_postgres_database()), ["--heartbeat-interval", "1"]
        host = "other-machine"
    else:
        storage, extra = f"sqlite:///{tmp_path / 'optuna.db'}", []
    experiment = f"sigkill-{kind}"
    # 8 epochs of a width-8 CNN: a second or more per trial (three of them), time enough for
    # the 0.1 s poll to catch one mid-way.
    args = ["run", "--storage", storage, "--study-name", "k", "--tracking-uri", server.uri,
            "--experiment", experiment, "--n-trials", "3", "--epochs", "8", "--width-min", "8",
            "--width-max", "8", "--batch-sizes", "64", "--device", "cpu", "--pruner", "none",
            *extra]

    with study_process(args, tmp_path, host=host) as proc:
        running = poll_trials(
            storage, "k", lambda ts: [t for t in ts if t.state == TrialState.RUNNING
                                      and "mlflow_run_id" in t.user_attrs],
            proc=proc, timeout=120, what="a RUNNING trial linked to its MLflow run")
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        killed_at = time.monotonic()
    if host is not None:
        # Another machine's trial is judged by its heartbeat alone, stale 2 s after the last
        # beat: a restart sooner than that finds the trial only later, in Optuna's own check.
        time.sleep(max(0.0, 3.0 - (time.monotonic() - killed_at)))
    (killed,) = running
    stamp_host, stamp_pid, *_ = killed.user_attrs["worker"].split(":")
    assert (stamp_host, stamp_pid) == (host or socket.gethostname(), str(proc.pid))

    resumed = run_cli(args, cwd=tmp_path, env=cli_env(), timeout=300)

    assert resumed.returncode == 0, resumed.stderr
    assert "recovered: 1 trial(s) of dead workers failed and queued again" in resumed.stderr
    trials = study_trials(storage, "k")
    assert n_finished(trials) == 3, _timeline(trials)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    dead = trials[killed.number]
    assert dead.state == TrialState.FAIL
    why = f"{cause} (trial {killed.number}, worker {killed.user_attrs['worker']})"
    if kind == "sqlite":  # failed by the session's own check, while it could be annotated
        assert dead.user_attrs["failure"] == why
    else:  # failed by Optuna's heartbeat check: Optuna annotates no finished trial
        assert "failure" not in dead.user_attrs
    (retry,) = _retries_of(trials, killed.number)
    assert retry.user_attrs["retry_reason"] == why
    assert retry.number > killed.number
    assert retry.params == killed.params and retry.params  # lr and weight decay are searched
    assert retry.state == TrialState.COMPLETE

    runs = experiment_runs(server.uri, experiment)
    assert runs_per_trial(runs, "k") == {t.number: 1 for t in trials}
    assert [(r.info.run_name, r.data.tags.get("study.role")) for r in runs
            if r.info.status == "RUNNING"] == []
    killed_run = next(r for r in runs if r.info.run_id == killed.user_attrs["mlflow_run_id"])
    assert killed_run.info.status == "FAILED"
    assert killed_run.data.tags["optuna.trial_state"] == "FAIL"
    assert killed_run.data.tags["study.failure"] == why


def test_workers_dead_before_opening_or_linking_their_runs_leave_one_linked_run_each(
        storage_url, tracking_uri, mlflow_client, capsys):
    config = StudyConfig(study_name="early", storage=storage_url, tracking_uri=tracking_uri,
                         experiment="early", epochs=1, width_min=4, width_max=4,
                         batch_sizes=(64,), n_trials=1, device="cpu", pruner="none")
    run_session(config)
    # What workers leave when they die (the database went down under them): trial 1 died
    # between Optuna's ask and opening its MLflow run; trial 2 opened its run but died before
    # linking it. Both are RUNNING, stamped by a process that is gone.
    study = load_study(prepare_study(config)).study
    dead = stamp_of_an_exited_process()
    unopened, unlinked = study.ask(), study.ask()
    for trial in (unopened, unlinked):
        trial.set_user_attr("worker", dead)
    parent = study.user_attrs[PARENT_RUN_ATTR]
    experiment_id = mlflow_client.get_experiment_by_name("early").experiment_id
    opened = start_trial_run(Tracker(tracking_uri), experiment_id, parent_run_id=parent,
                             study_name="early", trial_number=unlinked.number)

    run_session(config.replace(n_trials=2))

    assert "recovered: 2 trial(s) of dead workers failed and queued again [1, 2], their runs " \
           "closed; " in capsys.readouterr().err
    trials = study_trials(storage_url, "early")
    assert [t.state.name for t in trials[:3]] == ["COMPLETE", "FAIL", "FAIL"], _timeline(trials)
    started = [t for t in trials if t.state.name != "WAITING"]  # a queued retry has no run yet
    runs = mlflow_client.search_runs([experiment_id])
    assert runs_per_trial(runs, "early") == {t.number: 1 for t in started}
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in runs
                 if r.data.tags.get("study.role") == "trial"}
    assert by_number[2].info.run_id == opened  # found by its tags, not opened twice
    for trial in started:
        assert trial.user_attrs["mlflow_run_id"] == by_number[trial.number].info.run_id
    for number in (1, 2):
        run = by_number[number]
        assert run.info.status == "FAILED"
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.data.tags["study.failure"] == trials[number].user_attrs["failure"]
        assert run.data.tags["study.failure"].startswith(
            f"its worker process died (trial {number}")


# --- SIGTERM and Ctrl-C ---------------------------------------------------------------------------


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_fails_and_requeues_the_running_trial_and_says_so_in_one_line(
        signum, code, tmp_path, tracking_uri, mlflow_client):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    # A trial far longer than the test waits (it is signalled within its first epochs): with 8
    # epochs, a loaded CI machine once saw the trial end between the poll and the signal.
    args = ["run", "--storage", storage, "--study-name", "t", "--tracking-uri", tracking_uri,
            "--experiment", "stopped", "--n-trials", "3", "--epochs", "300", "--width-min", "8",
            "--width-max", "8", "--batch-sizes", "64", "--device", "cpu", "--pruner", "none"]

    with study_process(args, tmp_path) as proc:
        (running,) = poll_trials(
            storage, "t", lambda ts: [t for t in ts if t.state == TrialState.RUNNING
                                      and "mlflow_run_id" in t.user_attrs],
            proc=proc, timeout=120, what="a RUNNING trial linked to its MLflow run")
        proc.send_signal(signum)
        returncode = proc.wait(timeout=60)

    stderr = (tmp_path / "first.err").read_text()
    trials = study_trials(storage, "t")
    # Once seen on a loaded CI machine, not here: the shorter line. The stored trials (state,
    # failure, worker stamp) say which of the summary's conditions was not met.
    seen = stderr + "\n" + json.dumps([(t.number, t.state.name, t.user_attrs.get("failure"),
                                        t.user_attrs.get("worker")) for t in trials])
    assert returncode == code, seen
    assert "Traceback" not in stderr
    assert stderr_lines(stderr)[-1] == (f"interrupted: trial {running.number} failed and queued "
                                        f"again; run the same command to resume"), seen
    stopped = trials[running.number]
    assert stopped.state == TrialState.FAIL and stopped.user_attrs["failure"] == "interrupted"
    (retry,) = _retries_of(trials, running.number)
    assert retry.state == TrialState.WAITING and retry.params == stopped.params
    assert retry.user_attrs["train_seed"] == stopped.user_attrs["train_seed"]
    run = mlflow_client.get_run(stopped.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["study.failure"] == "interrupted"
    parent = mlflow_client.get_run(study_user_attrs(storage, "t")[PARENT_RUN_ATTR])
    assert parent.info.status == "KILLED"


def test_a_sigterm_to_local_workers_is_told_in_one_line(server, new_postgres_database,
                                                        tmp_path):
    """Found by a user: `study run --workers 2` answered SIGTERM with three lines (each
    worker's, then its own); the README says one."""
    storage = postgres_url(new_postgres_database())
    args = ["run", "--storage", storage, "--study-name", "w", "--tracking-uri", server.uri,
            "--experiment", "workers-stopped", "--n-trials", "4", "--epochs", "300",
            "--width-min", "8", "--width-max", "8", "--batch-sizes", "64", "--device", "cpu",
            "--pruner", "none", "--workers", "2"]

    with study_process(args, tmp_path) as proc:
        poll_trials(storage, "w", lambda ts: len([t for t in ts if t.state == TrialState.RUNNING
                                                  and "mlflow_run_id" in t.user_attrs]) == 2,
                    proc=proc, timeout=180, what="two RUNNING trials linked to their runs")
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(timeout=120)

    stderr = (tmp_path / "first.err").read_text()
    assert returncode == 143, stderr
    assert "Traceback" not in stderr
    told = [line for line in stderr_lines(stderr) if line.startswith("interrupted")]
    assert told == [stderr_lines(stderr)[-1]], stderr
    assert told[0].startswith("interrupted: trials ") and told[0].endswith(
        "failed and queued again; run the same command to resume"), told


def _interrupt_once_at_attr(monkeypatch, key: str) -> list[int]:
    """Raise KeyboardInterrupt the first time a trial sets user attr ``key`` (through the real
    ``optuna.Trial.set_user_attr`` otherwise); returns the numbers of the trials it hit."""
    set_user_attr = optuna.Trial.set_user_attr
    interrupted: list[int] = []

    def interrupted_once(self, name, value):
        if name == key and not interrupted:
            interrupted.append(self.number)
            raise KeyboardInterrupt
        return set_user_attr(self, name, value)

    monkeypatch.setattr(optuna.Trial, "set_user_attr", interrupted_once)
    return interrupted


def _closing_config(storage_url: str, tracking_uri: str) -> StudyConfig:
    return StudyConfig(study_name="closing", storage=storage_url, tracking_uri=tracking_uri,
                       experiment="closing", epochs=1, width_min=4, width_max=4,
                       batch_sizes=(64,), n_trials=2, device="cpu", pruner="none")


def _assert_interrupted_and_requeued(storage_url: str, mlflow_client) -> None:
    trials = study_trials(storage_url, "closing")
    stopped = trials[0]
    assert stopped.state == TrialState.FAIL and stopped.user_attrs["failure"] == "interrupted"
    assert "curve" in stopped.user_attrs  # its figures are kept however it ended
    (retry,) = _retries_of(trials, 0)
    assert retry.state == TrialState.WAITING and retry.params == stopped.params
    run = mlflow_client.get_run(stopped.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["study.state"] == "FAIL"


def test_an_interrupt_while_a_complete_trials_run_closes_fails_requeues_and_kills_it(
        storage_url, tracking_uri, mlflow_client, monkeypatch):
    close_run = Tracker.close_run
    interrupted: list[str] = []

    def interrupted_once(self, run_id, status, **kwargs):
        # Ctrl-C lands as the trained trial's run is being closed FINISHED.
        if status == "FINISHED" and not interrupted:
            interrupted.append(run_id)
            raise KeyboardInterrupt
        return close_run(self, run_id, status, **kwargs)

    monkeypatch.setattr(Tracker, "close_run", interrupted_once)
    with pytest.raises(Interrupted, match="trial 0 failed and queued again"):
        run_session(_closing_config(storage_url, tracking_uri))

    assert interrupted
    _assert_interrupted_and_requeued(storage_url, mlflow_client)


def _interrupted_first_session(storage_url: str, tracking_uri: str, monkeypatch) -> str:
    """Run the closing study's first session, interrupted in its first trial; its parent run's
    id (the run is KILLED)."""
    with monkeypatch.context() as patched:
        _interrupt_once_at_attr(patched, "curve")
        with pytest.raises(Interrupted):
            run_session(_closing_config(storage_url, tracking_uri))
    return study_user_attrs(storage_url, "closing")[PARENT_RUN_ATTR]


def test_a_resumed_session_reopens_the_parent_an_interrupt_killed_and_closes_it_finished(
        storage_url, tracking_uri, mlflow_client, monkeypatch):
    parent_id = _interrupted_first_session(storage_url, tracking_uri, monkeypatch)
    assert mlflow_client.get_run(parent_id).info.status == "KILLED"

    result = run_session(_closing_config(storage_url, tracking_uri))

    assert result.n_finished == 2 and result.parent_run_id == parent_id
    parent = mlflow_client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["study/n_complete"] == 2


def test_a_worker_that_completes_the_study_closes_the_parent_an_interrupt_left(
        storage_url, tracking_uri, mlflow_client, monkeypatch):
    # Found by a user: workers finished the study and its parent stayed KILLED (or RUNNING,
    # after a kill -9) until another `study run` came along.
    parent_id = _interrupted_first_session(storage_url, tracking_uri, monkeypatch)

    result = run_session(_closing_config(storage_url, tracking_uri), worker=True)

    assert result.n_finished == 2
    parent = mlflow_client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["study/n_complete"] == 2


def test_a_worker_leaves_an_unfinished_study_s_parent_as_it_is(storage_url, tracking_uri,
                                                                mlflow_client, monkeypatch):
    parent_id = _interrupted_first_session(storage_url, tracking_uri, monkeypatch)

    run_session(_closing_config(storage_url, tracking_uri).replace(n_trials=1), worker=True,
                given={"n_trials": 1})  # its own smaller budget: the study's is not met

    assert mlflow_client.get_run(parent_id).info.status == "KILLED"


def test_a_parent_that_mlflow_run_opened_is_left_to_it(storage_url, tracking_uri,
                                                       mlflow_client):
    tracker = Tracker(tracking_uri, retry_seconds=0)
    experiment_id = tracker.experiment_id("closing")
    entry = tracker.create_run(experiment_id, name="entry", tags={})  # no owner: not ours
    tracker.end_run(entry, "KILLED")
    study = optuna.create_study(storage=storage_url, study_name="closing")
    study.set_user_attr(PARENT_RUN_ATTR, entry)

    assert not adopt_orphaned_parent(tracker, study, entry)
    assert mlflow_client.get_run(entry).info.status == "KILLED"


def test_an_interrupt_while_a_complete_trials_figures_are_kept_fails_requeues_and_kills_it(
        storage_url, tracking_uri, mlflow_client, monkeypatch):
    # Ctrl-C lands as the trained trial's curve is being written.
    interrupted = _interrupt_once_at_attr(monkeypatch, "curve")
    with pytest.raises(Interrupted, match="trial 0 failed and queued again"):
        run_session(_closing_config(storage_url, tracking_uri))

    assert interrupted == [0]
    _assert_interrupted_and_requeued(storage_url, mlflow_client)


def test_an_interrupt_before_training_fails_and_requeues_the_trial_without_a_run(
        storage_url, tracking_uri, mlflow_client, monkeypatch):
    # Ctrl-C lands between Optuna's ask and the training: as the worker is recorded.
    interrupted = _interrupt_once_at_attr(monkeypatch, "worker")
    with pytest.raises(Interrupted, match="trial 0 failed and queued again"):
        run_session(_closing_config(storage_url, tracking_uri))

    assert interrupted == [0]
    trials = study_trials(storage_url, "closing")
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs["failure"] == "interrupted"
    (retry,) = _retries_of(trials, 0)
    assert retry.state == TrialState.WAITING
    experiment = mlflow_client.get_experiment_by_name("closing")
    runs = mlflow_client.search_runs([experiment.experiment_id],
                                     filter_string="tags.`study.role` = 'trial'")
    assert runs == []  # it never trained: no trial run to close


def test_a_ctrl_c_during_optunas_tell_lets_the_trial_finish_then_stops(
        storage_url, tracking_uri, mlflow_client, monkeypatch, installed_interrupts):
    from study.storages import StudyRDBStorage

    tell = StudyRDBStorage.set_trial_state_values
    hit: list[int] = []

    def ctrl_c_while_telling(self, trial_id, state, values=None):
        if state.is_finished() and not hit:
            hit.append(trial_id)
            signal.raise_signal(signal.SIGINT)  # its handler runs here, inside Optuna's tell
        return tell(self, trial_id, state, values)

    monkeypatch.setattr(StudyRDBStorage, "set_trial_state_values", ctrl_c_while_telling)
    with pytest.raises(Interrupted, match=r"^interrupted; run the same command to resume$"):
        run_session(_closing_config(storage_url, tracking_uri), interrupts=installed_interrupts)

    assert len(hit) == 1
    assert [t.state for t in study_trials(storage_url, "closing")] == [TrialState.COMPLETE]
    experiment = mlflow_client.get_experiment_by_name("closing")
    runs = mlflow_client.search_runs([experiment.experiment_id],
                                     filter_string="tags.`study.role` = 'trial'")
    assert [r.info.status for r in runs] == ["FINISHED"]


def test_a_ctrl_c_latched_between_trials_fails_and_requeues_the_next_one_at_its_start(
        storage_url, tracking_uri, mlflow_client, monkeypatch, installed_interrupts):
    # The signal lands in Optuna's ask (deferred there): the trial it created is the one stopped.
    ask = optuna.Study.ask
    hit: list[int] = []

    def ctrl_c_while_asking(self, *args, **kwargs):
        trial = ask(self, *args, **kwargs)
        if not hit:
            hit.append(trial.number)
            signal.raise_signal(signal.SIGINT)
        return trial

    monkeypatch.setattr(optuna.Study, "ask", ctrl_c_while_asking)
    with pytest.raises(Interrupted, match="trial 0 failed and queued again"):
        run_session(_closing_config(storage_url, tracking_uri), interrupts=installed_interrupts)

    trials = study_trials(storage_url, "closing")
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs["failure"] == "interrupted"
    assert [t.state for t in _retries_of(trials, 0)] == [TrialState.WAITING]


# --- exceptions, NaN, out of memory -------------------------------------------------------------


def test_raising_diverging_and_out_of_memory_trials_fail_and_the_study_goes_on(
        storage_url, tracking_uri, mlflow_client):
    config = StudyConfig(study_name="faults", storage=storage_url, tracking_uri=tracking_uri,
                         experiment="faults", epochs=1, width_min=4, width_max=8,
                         batch_sizes=(64,), lr_min=1e-3, lr_max=1e20, n_trials=3, device="cpu",
                         pruner="none")
    study = load_study(prepare_study(config)).study
    good = {"width": 4, "lr": 1e-2, "weight_decay": 1e-4}
    for params in [{**good, "lr": 1e20, "weight_decay": 1e-2}, *[good] * 5]:
        study.enqueue_trial(params)
    faults = {1: RuntimeError("a custom stopping rule broke"),
              3: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")}

    def faulty(history, report) -> None:
        (trial,) = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if trial.number in faults:
            raise faults[trial.number]

    result = run_session(config, hooks=[faulty])

    trials = study_trials(storage_url, "faults")
    assert [t.state.name for t in trials] == ["FAIL", "FAIL", "COMPLETE", "FAIL", "COMPLETE",
                                              "COMPLETE"], _timeline(trials)
    assert result.n_finished == 3 and result.counts["FAIL"] == 3
    expected = {0: r"^training loss became (nan|inf|-inf)",
                1: r"^RuntimeError: a custom stopping rule broke$",
                3: r"^out of memory \(OutOfMemoryError\): CUDA out of memory\. Tried to allocate"}
    for number, pattern in expected.items():
        trial = trials[number]
        assert re.search(pattern, trial.user_attrs["failure"]), trial.user_attrs["failure"]
        run = mlflow_client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.info.status == "FAILED"
        assert run.data.tags["optuna.trial_state"] == "FAIL"
        assert run.data.tags["study.failure"] == trial.user_attrs["failure"]
    for trial in trials:
        if trial.state == TrialState.COMPLETE:
            assert mlflow_client.get_run(trial.user_attrs["mlflow_run_id"]).info.status == \
                "FINISHED"


# --- the tracking server goes away mid-study ----------------------------------------------------


def test_tracking_outage_stops_the_study_in_one_line_and_a_rerun_completes_it(
        tmp_path, mlflow_template_db, capsys):
    timeout = 6
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    server = MlflowServer(tmp_path / "mlflow", mlflow_template_db)
    try:
        server.start()
        args = ["run", "--storage", storage, "--study-name", "o", "--tracking-uri", server.uri,
                "--experiment", "outage", "--tracking-timeout", str(timeout), "--n-trials", "6",
                "--epochs", "3", "--width-min", "4", "--width-max", "8", "--batch-sizes", "64",
                "--device", "cpu", "--pruner", "none"]
        with study_process(args, tmp_path) as proc:
            poll_trials(storage, "o",
                        lambda ts: any(t.state == TrialState.COMPLETE for t in ts),
                        proc=proc, timeout=120, what="a COMPLETE trial")
            server.stop()
            stopped = time.monotonic()
            try:
                code = proc.wait(timeout=timeout + 30)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the study still ran {timeout + 30} s after the server stopped")
            waited = time.monotonic() - stopped
        stderr = (tmp_path / "first.err").read_text()
        assert code == 1, stderr
        last = stderr_lines(stderr)[-1]
        assert last.startswith("error: MLflow tracking store "), stderr
        assert "unreachable" in last
        assert "Traceback" not in stderr
        first = study_trials(storage, "o")
        assert n_finished(first) < 6, "the study finished before the outage"

        server.start()  # same port, same backend
        rerun = run_cli(args, cwd=tmp_path, env=cli_env(), timeout=300)
        runs = experiment_runs(server.uri, "outage")
    finally:
        server.stop()

    assert rerun.returncode == 0, rerun.stderr
    trials = study_trials(storage, "o")
    assert n_finished(trials) == 6, _timeline(trials)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    (cut,) = [t for t in trials if t.user_attrs.get("failure", "").startswith(
        "MLflow tracking unavailable")]
    assert cut.state == TrialState.FAIL
    (retry,) = _retries_of(trials, cut.number)
    assert retry.params == cut.params and retry.state == TrialState.COMPLETE

    per_trial = runs_per_trial(runs, "o")
    assert max(per_trial.values()) == 1, per_trial  # no trial logged twice
    for trial in trials:
        if trial.state != TrialState.FAIL:
            assert per_trial[trial.number] == 1, (trial.number, per_trial)
    assert [(r.info.run_name, r.data.tags.get("study.role")) for r in runs
            if r.info.status == "RUNNING"] == []
    cut_runs = [r for r in runs if r.data.tags.get("optuna.trial_number") == str(cut.number)]
    for run in cut_runs:
        assert run.info.status == "FAILED"
        assert run.data.tags["study.failure"].startswith("MLflow tracking unavailable")
    assert waited < timeout + 30
    with capsys.disabled():
        print(f"\n[recovery] the study exited {waited:.1f} s after the tracking server stopped "
              f"(--tracking-timeout {timeout})")


# --- passwords ----------------------------------------------------------------------------------


def test_passwords_reach_no_param_tag_output_report_or_stored_config(server, tmp_path,
                                                                     new_postgres_database):
    database = new_postgres_database()
    storage = postgres_url(database, password=SECRET)
    tracking = server.uri.replace("http://", f"http://user:{SECRET}@")
    where = ["--storage", storage, "--study-name", "p", "--tracking-uri", tracking,
             "--experiment", "passwords"]

    run = run_cli(["run", *where, "--n-trials", "2", "--epochs", "1", "--width-min", "4",
                   "--width-max", "8", "--batch-sizes", "64", "--device", "cpu"],
                  cwd=tmp_path, env=cli_env(), timeout=300)
    report = run_cli(["report", *where, "--output-dir", str(tmp_path / "rep"),
                      "--n-bootstrap", "5"], cwd=tmp_path, env=cli_env(), timeout=300)

    assert run.returncode == 0, run.stderr
    assert report.returncode == 0, report.stderr
    for proc in (run, report):
        assert SECRET not in proc.stdout + proc.stderr
    runs = experiment_runs(server.uri, "passwords")
    assert len(runs) == 3
    for r in runs:
        for key, value in {**r.data.params, **r.data.tags}.items():
            assert SECRET not in value, (r.info.run_name, key)
    (parent,) = [r for r in runs if r.data.tags.get("study.role") == "parent"]
    assert parent.data.tags["study.storage"] == storage.replace(SECRET, "***")
    written = [p for p in (tmp_path / "rep").rglob("*") if p.is_file()]
    assert any(p.name == "report.html" for p in written)
    uploaded = [p for p in server.artifacts.rglob("*") if p.is_file()]
    assert any(p.name == "report.html" for p in uploaded)
    for path in written + uploaded:
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in json.dumps(study_user_attrs(postgres_url(database), "p"))
    trials = study_trials(postgres_url(database), "p")
    assert SECRET not in json.dumps([(t.user_attrs, t.system_attrs) for t in trials])


def test_tracking_uri_password_is_redacted_from_the_error(tmp_path):
    proc = run_cli(["run", "--storage", f"sqlite:///{tmp_path / 'optuna.db'}",
                    "--tracking-uri", f"http://user:{SECRET}@127.0.0.1:1",
                    "--tracking-timeout", "0", "--n-trials", "1", "--device", "cpu"],
                   cwd=tmp_path, env=cli_env(), timeout=120)

    assert proc.returncode == 1, proc.stderr
    (line,) = stderr_lines(proc.stderr)
    assert line.startswith("error: `tracking_uri` could not be opened: "
                           "http://user:***@127.0.0.1:1")
    assert SECRET not in proc.stdout + proc.stderr
    assert not (tmp_path / "optuna.db").exists()
