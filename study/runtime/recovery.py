"""Crash safety: trials whose worker died are failed, closed in MLflow and retried.

Two detectors feed one handler, :class:`StaleTrialHandler`:

- Optuna's heartbeat (RDB storages with ``--heartbeat-interval``): Optuna fails a RUNNING trial
  whose heartbeat is older than the grace period, then calls the handler with the failed trial.
  Optuna refuses to annotate a finished trial, so the reason goes on the trial's MLflow run
  (``study.failure``) and on its retry (user attr ``retry_reason``).
- The worker stamp (every storage): each trial records ``host:pid:start`` of its worker; a
  RUNNING trial stamped by a process of *this* host that no longer exists (its PID free, or
  reused by a process with another start time) is dead at once, with no grace period (SQLite
  and journal storages have no heartbeat at all). While it is still RUNNING it records the
  reason (``failure``) and its run (``mlflow_run_id``); then it is failed and handed over.

The handler closes the trial's MLflow run as FAILED with ``study.failure``: the run its worker
opened, found by its tags when the worker died before linking it, or a new one when the worker
died before opening it, so every trial keeps exactly one run. It then queues the same parameters
and training seed again through Optuna's :class:`~optuna.storages.RetryHeartbeatStaleTrialCallback`
(at most :data:`MAX_RETRY` times per original). A session also closes any trial run left RUNNING
whose trial is finished, so no run stays RUNNING after a resume.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import os
import socket
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from study.keys import FAILURE_ATTR, RUN_ID_ATTR, TRAIN_SEED_ATTR, WORKER_ATTR
from study.tracking import end_trial_run, start_trial_run

if TYPE_CHECKING:
    from study.tracking import Tracker

__all__ = [
    "DEAD_PROCESS_REASON",
    "HEARTBEAT_REASON",
    "MAX_RETRY",
    "RETRIED_FROM_ATTR",
    "RETRY_REASON_ATTR",
    "StaleTrialHandler",
    "close_orphan_runs",
    "dead_here",
    "dead_reason",
    "dead_workers",
    "fail_dead_trials",
    "original_number",
    "retry_trial",
    "running_trial",
    "worker_identity",
    "worker_salt",
    "worker_stamp",
]

# Why Optuna's heartbeat check fails a trial (another host's worker, or any RDB storage).
HEARTBEAT_REASON = "worker stopped sending heartbeats"
# Why a trial stamped by a process of this host that no longer exists is failed.
DEAD_PROCESS_REASON = "its worker process died"
# A trial whose worker died is re-run at most this many times (then left failed).
MAX_RETRY = 3
# On a retry: the number of the trial it re-runs, and why that one failed.
RETRIED_FROM_ATTR = "retried_from"
RETRY_REASON_ATTR = "retry_reason"
# Scheduler task ids that tell apart workers sharing a host name and PID (PID 1 in containers).
_SCHEDULER_IDS = ("JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID", "SLURM_PROCID")


def worker_stamp() -> str:
    """``host:pid:start`` of this process, stored on each trial it runs. ``start`` (boot id
    and start time, Linux) tells a reused PID from the worker; where it cannot be read the
    stamp is ``host:pid``."""
    return _stamp_of(os.getpid())


@functools.lru_cache(maxsize=4)
def _stamp_of(pid: int) -> str:
    """:func:`worker_stamp` of process ``pid``, read once per process (keyed by the PID, so a
    forked child reads its own): reading ``/proc/PID/stat`` walks every thread of the process,
    about a millisecond per trial in a training process."""
    start = _process_start(pid)
    base = f"{socket.gethostname()}:{pid}"
    return f"{base}:{start}" if start else base


def worker_identity(environ: Mapping[str, str] | None = None) -> str:
    """This worker among its peers, the source of its sampler salt: its stamp
    (``host:pid:start``) and the task ids a scheduler sets (a Kubernetes indexed job's
    ``JOB_COMPLETION_INDEX``, Slurm's ``SLURM_ARRAY_TASK_ID`` and ``SLURM_PROCID``)."""
    environ = os.environ if environ is None else environ
    ids = [f"{name}={environ[name]}" for name in _SCHEDULER_IDS if environ.get(name)]
    return " ".join([worker_stamp(), *ids])


def worker_salt(identity: str) -> int:
    """A 32-bit salt for the sampler's seed, the same for the same ``identity``."""
    return int.from_bytes(hashlib.sha256(identity.encode()).digest()[:4], "big")


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

    Optuna calls it for trials its heartbeat check failed; :func:`fail_dead_trials` for trials
    of dead processes of this host. The numbers of the trials it handled are in ``handled``.

    Args:
        reason: Why a trial it is called with is considered dead (``study.failure`` on its run,
            ``retry_reason`` on its retry) when the trial does not record one.
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
        self.storage: optuna.storages.BaseStorage | None = None
        self.handled: list[int] = []

    def attach(self, tracker: Tracker, *, storage: optuna.storages.BaseStorage,
               experiment_id: str, parent_run_id: str) -> None:
        """Give the handler the session's MLflow access, its storage and the study's runs."""
        self.tracker = tracker
        self.storage = storage
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id

    def run_of(self, study_name: str, trial: FrozenTrial) -> str | None:
        """The run of a dead trial: its linked run, else the one found by its tags, else one
        opened now (its worker died before opening one). ``None`` without a session attached:
        the next session's :func:`close_orphan_runs` closes what is left."""
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if run_id or self.tracker is None or self.experiment_id is None \
                or self.parent_run_id is None:
            return run_id
        return _find_trial_run(self.tracker, self.experiment_id, study_name, trial.number) \
            or start_trial_run(self.tracker, self.experiment_id, parent_run_id=self.parent_run_id,
                               study_name=study_name, trial_number=trial.number)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.handle(study, trial, self.reason)

    def handle(self, study: optuna.Study, trial: FrozenTrial, reason: str) -> None:
        """Close the failed ``trial``'s run as FAILED with why, and queue it again."""
        why = trial.user_attrs.get(FAILURE_ATTR) or dead_reason(trial, reason)
        if self.tracker is not None:
            run_id = self.run_of(study.study_name, trial)
            run = self.tracker.get_run(run_id) if run_id else None
            if run is not None and run.info.status == "RUNNING":
                end_trial_run(self.tracker, run_id, state="FAIL", failure=why)
        retry_trial(study, trial, reason=why)
        self.handled.append(trial.number)


def dead_reason(trial: FrozenTrial, reason: str) -> str:
    """The one-line failure of a trial whose worker died."""
    return f"{reason} (trial {trial.number}, worker {trial.user_attrs.get(WORKER_ATTR, '?')})"


@contextlib.contextmanager
def _experimental_ok() -> Iterator[None]:
    # Optuna marks its retry readers experimental; they are its documented API for retries.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def original_number(trial: FrozenTrial) -> int:
    """The number of the first trial of ``trial``'s retry series (its own if not a retry)."""
    with _experimental_ok():
        first = RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
    return trial.number if first is None else first


def running_trial(study: optuna.Study, number: int) -> FrozenTrial | None:
    """Trial ``number`` as stored, while it is RUNNING (``None`` once it is not)."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return next((t for t in running if t.number == number), None)


def retry_trial(study: optuna.Study, trial: FrozenTrial, *, reason: str | None = None) -> bool:
    """Queue ``trial``'s parameters and training seed again, with ``retried_from`` and
    ``retry_reason``, through Optuna's retry callback, at most :data:`MAX_RETRY` times per
    original; returns whether it was queued.

    Only these user attrs go to the retry (the callback would copy all of them, the dead
    trial's run link included)."""
    with _experimental_ok():
        if len(RetryHeartbeatStaleTrialCallback.retry_history(trial)) >= MAX_RETRY:
            return False
    carried = copy.deepcopy(trial)  # the callback extends the retry history in place
    seed = trial.user_attrs.get(TRAIN_SEED_ATTR)
    carried.user_attrs = {RETRIED_FROM_ATTR: trial.number,
                          **({RETRY_REASON_ATTR: reason} if reason else {}),
                          **({TRAIN_SEED_ATTR: seed} if seed is not None else {})}
    RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, carried)
    return True


def _find_trial_run(tracker: Tracker, experiment_id: str, study_name: str,
                    number: int) -> str | None:
    """The run opened for trial ``number``, found by its tags (a worker may die between
    opening the run and linking it to the trial)."""
    runs = tracker.find_runs(experiment_id, tags={
        "optuna.study_name": study_name, "optuna.trial_number": str(number),
        "study.role": "trial"})
    return runs[0].info.run_id if runs else None


def _annotate(study: optuna.Study, storage: optuna.storages.BaseStorage | None,
              number: int, attrs: Mapping[str, Any]) -> None:
    """Set ``attrs`` on RUNNING trial ``number`` of another (dead) process: Optuna hands a
    :class:`~optuna.Trial` only to the process running it, so this goes through the storage's
    public interface. A trial finished meanwhile is left as it is (its finisher recorded it)."""
    if storage is None:
        return
    study_id = storage.get_study_id_from_name(study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    for key, value in attrs.items():
        if value is not None:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                storage.set_trial_user_attr(trial_id, key, value)


def fail_dead_trials(study: optuna.Study, handler: StaleTrialHandler) -> list[int]:
    """Fail RUNNING trials whose worker process on this host is gone, each first recording why
    and its run (while Optuna still lets it be annotated); returns their numbers."""
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not dead_here(trial.user_attrs.get(WORKER_ATTR)):
            continue
        _annotate(study, handler.storage, trial.number, {
            FAILURE_ATTR: dead_reason(trial, DEAD_PROCESS_REASON),
            RUN_ID_ATTR: handler.run_of(study.study_name, trial)})
        try:
            dead = study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another process failed it first
        handler.handle(study, dead, DEAD_PROCESS_REASON)
        failed.append(trial.number)
    return failed


def dead_workers(trials: list[FrozenTrial]) -> set[str]:
    """The stamps of workers known dead: those of trials failed because their worker died
    (said by the trial's ``failure``, or, when Optuna's heartbeat check failed it, by its
    retry's ``retry_reason``)."""
    def died(reason: Any) -> bool:
        return str(reason or "").startswith((HEARTBEAT_REASON, DEAD_PROCESS_REASON))

    by_number = {t.number: t for t in trials}
    dead = [t for t in trials
            if t.state is TrialState.FAIL and died(t.user_attrs.get(FAILURE_ATTR))]
    dead += [by_number[t.user_attrs[RETRIED_FROM_ATTR]] for t in trials
             if died(t.user_attrs.get(RETRY_REASON_ATTR))
             and t.user_attrs.get(RETRIED_FROM_ATTR) in by_number]
    return {str(t.user_attrs[WORKER_ATTR]) for t in dead if WORKER_ATTR in t.user_attrs}


def close_orphan_runs(study: optuna.Study, tracker: Tracker, experiment_id: str) -> int:
    """Close trial runs left RUNNING whose Optuna trial has finished; returns how many."""
    runs = tracker.find_runs(experiment_id, "attributes.status = 'RUNNING'",
                             tags={"optuna.study_name": study.study_name})
    if not runs:
        return 0
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    # A trial failed by Optuna's heartbeat check keeps no reason; its retry does.
    retry_reasons = {t.user_attrs[RETRIED_FROM_ATTR]: t.user_attrs.get(RETRY_REASON_ATTR)
                     for t in trials if RETRIED_FROM_ATTR in t.user_attrs}
    closed = 0
    for run in runs:
        number = run.data.tags.get("optuna.trial_number", "")
        trial = by_number.get(int(number)) if number.isdigit() else None
        if trial is None or trial.state in (TrialState.RUNNING, TrialState.WAITING):
            continue
        state = trial.state.name if trial.state.name in ("COMPLETE", "PRUNED") else "FAIL"
        reason = None if state != "FAIL" else (
            trial.user_attrs.get(FAILURE_ATTR) or retry_reasons.get(trial.number)
            or "the run was left open when its worker stopped")
        end_trial_run(tracker, run.info.run_id, state=state, failure=reason)
        closed += 1
    return closed
