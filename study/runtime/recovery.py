"""Crash safety: trials whose worker died are failed, closed in MLflow and retried.

Two detectors feed one handler:

- Optuna's heartbeat (RDB storages): a RUNNING trial whose heartbeat is older than the grace
  period is failed by Optuna, which then calls :class:`StaleTrialHandler`; the storage of
  :func:`study.storage.create_storage` (:class:`study.rdb.StudyRDBStorage`) records the reason
  on the trial just before.
- The worker stamp (every storage): each trial records ``host:pid:start`` of its worker; a
  RUNNING trial stamped by a process of *this* host that no longer exists (its PID free, or
  reused by a process with another start time) is dead at once, with no grace period (SQLite
  and journal storages have no heartbeat at all).

The handler closes the trial's MLflow run as FAILED with ``study.failure`` and enqueues a retry
with the same parameters. While a dead trial is still RUNNING (the only time Optuna lets it be
annotated), it is linked to its run (``mlflow_run_id``): the run its worker opened, found by its
tags when the worker died before linking it, or a new one when the worker died before opening
it. So every trial keeps exactly one run in MLflow, and knows which. A session also closes any
trial run left RUNNING whose trial is finished, so no run stays RUNNING after a resume.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from study.keys import FAILURE_ATTR, RUN_ID_ATTR, TRAIN_SEED_ATTR, WORKER_ATTR
from study.tracking import end_trial_run, start_trial_run

if TYPE_CHECKING:
    from study.tracking import Tracker

__all__ = [
    "DEAD_PROCESS_REASON",
    "HEARTBEAT_REASON",
    "MAX_RETRY",
    "StaleTrialHandler",
    "close_orphan_runs",
    "dead_here",
    "dead_reason",
    "fail_dead_trials",
    "mark_dead",
    "mark_heartbeat_dead",
    "retry_trial",
    "worker_stamp",
]

# Why Optuna's heartbeat check fails a trial (another host's worker, or any RDB storage).
HEARTBEAT_REASON = "worker stopped sending heartbeats"
# Why a trial stamped by a process of this host that no longer exists is failed.
DEAD_PROCESS_REASON = "its worker process died"
# A trial whose worker died is re-run at most this many times (then left failed).
MAX_RETRY = 3


def worker_stamp() -> str:
    """``host:pid:start`` of this process, stored on each trial it runs. ``start`` (boot id
    and start time, Linux) tells a reused PID from the worker; where it cannot be read the
    stamp is ``host:pid``."""
    start = _process_start(os.getpid())
    base = f"{socket.gethostname()}:{os.getpid()}"
    return f"{base}:{start}" if start else base


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        return ""


def _process_start(pid: int) -> str | None:
    """``<boot id>-<start ticks>`` of process ``pid`` (Linux), ``None`` when it does not exist
    or ``/proc`` cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: fields resume after the last
    # ")"; the start time is field 22 of proc(5), the 20th after it.
    fields = stat.rpartition(")")[2].split()
    if len(fields) < 20 or not fields[19].isdigit():
        return None
    return f"{_boot_id()}-{fields[19]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def dead_here(stamp: Any) -> bool:
    """Whether ``stamp`` (see :func:`worker_stamp`) names a process of this host that no longer
    exists: its PID is free, or now belongs to a process that started at another time (other
    hosts' processes cannot be judged: ``False``)."""
    if not isinstance(stamp, str) or ":" not in stamp:
        return False
    host, pid, *rest = stamp.split(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    start = rest[0] if rest else None
    if start and _process_start(int(pid)) is not None:
        return _process_start(int(pid)) != start
    if int(pid) == os.getpid():  # an old-style stamp of our own PID: we are alive
        return False
    return not _pid_alive(int(pid))


class StaleTrialHandler:
    """Called with each trial failed because its worker died: close its run, retry it.

    The failure reason is recorded on the trial by :func:`mark_dead` while it is still RUNNING
    (Optuna refuses to annotate a finished trial); this handler only reads it back.

    Args:
        reason: Why the trial is considered dead (recorded as ``study.failure``).
        tracker: MLflow access; ``None`` until a session attaches it with :meth:`attach`
            (the storage is created before the tracker, and Optuna takes the callback at
            storage creation).
        experiment_id: The study's experiment, where a run the trial never linked is looked up.
        parent_run_id: The study's parent run, under which a trial that died before opening
            its run gets one.
    """

    def __init__(self, reason: str = HEARTBEAT_REASON, tracker: Tracker | None = None, *,
                 experiment_id: str | None = None, parent_run_id: str | None = None) -> None:
        self.reason = reason
        self.tracker = tracker
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.study_name: str | None = None

    def attach(self, tracker: Tracker, *, study_name: str, experiment_id: str,
               parent_run_id: str) -> None:
        """Give the handler the session's MLflow access and the study's runs."""
        self.tracker = tracker
        self.study_name = study_name
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id

    def link_run(self, storage: optuna.storages.BaseStorage, trial_id: int) -> None:
        """Link a dead, still RUNNING trial to its run (found by its tags, or opened now when
        its worker died before opening one). Without a session attached, nothing happens:
        the next session's :func:`close_orphan_runs` closes what is left."""
        if self.tracker is None or self.experiment_id is None or self.parent_run_id is None \
                or self.study_name is None:
            return
        trial = storage.get_trial(trial_id)
        if trial.state.is_finished() or trial.user_attrs.get(RUN_ID_ATTR):
            return
        study_name = self.study_name
        run_id = _find_trial_run(self.tracker, self.experiment_id, study_name, trial.number) \
            or start_trial_run(self.tracker, self.experiment_id, parent_run_id=self.parent_run_id,
                               study_name=study_name, trial_number=trial.number)
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            storage.set_trial_user_attr(trial_id, RUN_ID_ATTR, run_id)

    def mark_stale(self, storage: optuna.storages.BaseStorage, trial_id: int) -> None:
        """The storage's ``on_stale``: a trial whose heartbeat went stale, still RUNNING, gets
        its failure reason and its run link before Optuna fails it."""
        mark_heartbeat_dead(storage, trial_id)
        self.link_run(storage, trial_id)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        reason = trial.user_attrs.get(FAILURE_ATTR) or dead_reason(trial, self.reason)
        if self.tracker is not None:
            _close_trial_run(self.tracker, study, trial, "FAIL", reason,
                             experiment_id=self.experiment_id)
        retry_trial(study, trial)


def dead_reason(trial: FrozenTrial, reason: str) -> str:
    """The one-line failure of a trial whose worker died."""
    return f"{reason} (trial {trial.number}, worker {trial.user_attrs.get(WORKER_ATTR, '?')})"


def mark_dead(storage: optuna.storages.BaseStorage, trial_id: int, reason: str) -> None:
    """Record why a RUNNING trial is about to be failed as dead (user attr ``failure``).

    A trial another process has failed meanwhile is left as it is (that process marked it).
    """
    trial = storage.get_trial(trial_id)
    if trial.state.is_finished():
        return
    with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_user_attr(trial_id, FAILURE_ATTR, dead_reason(trial, reason))


def mark_heartbeat_dead(storage: optuna.storages.BaseStorage, trial_id: int) -> None:
    """:func:`mark_dead` for a trial whose heartbeat went stale (the storage's ``on_stale``)."""
    mark_dead(storage, trial_id, HEARTBEAT_REASON)


def retry_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Enqueue the same parameters (and training seed) again, at most :data:`MAX_RETRY` times
    per original."""
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if len(history) > MAX_RETRY:
        return
    seed = trial.user_attrs.get(TRAIN_SEED_ATTR)
    study.add_trial(optuna.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs={"retried_from": trial.number,
                    **({TRAIN_SEED_ATTR: seed} if seed is not None else {})},
        system_attrs={"failed_trial": history[0], "retry_history": history},
    ))


def _find_trial_run(tracker: Tracker, experiment_id: str, study_name: str,
                    number: int) -> str | None:
    """The run opened for trial ``number``, found by its tags (a worker may die between
    opening the run and linking it to the trial)."""
    runs = tracker.find_runs(
        experiment_id,
        f"tags.`optuna.study_name` = '{study_name}' and "
        f"tags.`optuna.trial_number` = '{number}' and tags.`study.role` = 'trial'",
    )
    return runs[0].info.run_id if runs else None


def _trial_run(tracker: Tracker, study: optuna.Study, trial: FrozenTrial,
               experiment_id: str | None = None) -> str | None:
    run_id = trial.user_attrs.get(RUN_ID_ATTR)
    if run_id:
        return run_id
    if experiment_id is None:
        return None
    return _find_trial_run(tracker, experiment_id, study.study_name, trial.number)


def _close_trial_run(tracker: Tracker, study: optuna.Study, trial: FrozenTrial, state: str,
                     reason: str | None, *, experiment_id: str | None = None) -> None:
    # A run missing altogether was opened by StaleTrialHandler.link_run while the trial was
    # still RUNNING; here it is only found and closed.
    run_id = _trial_run(tracker, study, trial, experiment_id)
    if run_id is None:
        return
    run = tracker.get_run(run_id)
    if run is not None and run.info.status == "RUNNING":
        end_trial_run(tracker, run_id, state=state, failure=reason)


def fail_dead_trials(study: optuna.Study, handler: StaleTrialHandler) -> list[int]:
    """Fail RUNNING trials whose worker process on this host is gone; returns their numbers."""
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not dead_here(trial.user_attrs.get(WORKER_ATTR)):
            continue
        mark_dead(study._storage, trial._trial_id, DEAD_PROCESS_REASON)
        handler.link_run(study._storage, trial._trial_id)
        try:
            if not study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process got there first
        dead = study._storage.get_trial(trial._trial_id)
        StaleTrialHandler(DEAD_PROCESS_REASON, handler.tracker,
                          experiment_id=handler.experiment_id)(study, dead)
        failed.append(trial.number)
    return failed


def close_orphan_runs(study: optuna.Study, tracker: Tracker, experiment_id: str) -> int:
    """Close trial runs left RUNNING whose Optuna trial has finished; returns how many."""
    runs = tracker.find_runs(
        experiment_id,
        f"tags.`optuna.study_name` = '{study.study_name}' and attributes.status = 'RUNNING'",
    )
    if not runs:
        return 0
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    closed = 0
    for run in runs:
        number = run.data.tags.get("optuna.trial_number", "")
        trial = by_number.get(int(number)) if number.isdigit() else None
        if trial is None or trial.state in (TrialState.RUNNING, TrialState.WAITING):
            continue
        state = trial.state.name if trial.state.name in ("COMPLETE", "PRUNED") else "FAIL"
        reason = trial.user_attrs.get(FAILURE_ATTR) or (
            "the run was left open when its worker stopped" if state == "FAIL" else None)
        end_trial_run(tracker, run.info.run_id, state=state, failure=reason)
        closed += 1
    return closed
