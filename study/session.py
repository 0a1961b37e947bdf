"""One session of a study: open both stores, run trials until the budget is met, summarize.

This is the one way through (ARCHITECTURE.md): config -> data -> stores -> optimize -> summary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState

from study.config import StudyConfig
from study.data import TensorData, load_dataset
from study.diagnostics import Diagnosis, diagnose
from study.errors import NonFiniteLossError, StudyError, TrackingError, TrialFailedError
from study.objective import (
    EpochHook,
    Objective,
    diagnosis_tags,
    failure_reason,
    train_logged,
)
from study.progress import Progress
from study.recovery import (
    DEAD_PROCESS_REASON,
    HEARTBEAT_REASON,
    WORKER_ATTR,
    StaleTrialHandler,
    close_orphan_runs,
    dead_here,
    fail_dead_trials,
    worker_stamp,
)
from study.redact import redact
from study.search import (
    BUDGET_ATTR,
    PARENT_RUN_ATTR,
    count_states,
    load_study,
    n_finished,
    prepare_study,
)
from study.tracking import Tracker
from study.train import HParams, early_losses, resolve_device

__all__ = [
    "SessionResult",
    "SingleTrialResult",
    "run_session",
    "run_single_trial",
    "run_with_workers",
]

# The parent run's tag naming the process (host:pid) that must close it.
OWNER_TAG = "study.owner"
# A study whose trials keep failing is broken (bad data, bad bounds): stop instead of looping.
MAX_CONSECUTIVE_FAILURES = 5


@dataclasses.dataclass(frozen=True)
class SessionResult:
    """What one session did and where the study stands."""

    study_name: str
    parent_run_id: str
    counts: dict[str, int]
    n_finished: int
    n_trials: int
    best_value: float | None
    best_params: dict[str, Any] | None


def _entry_run_id() -> str | None:
    """The run ``mlflow run`` opened for this entry point, if it launched us."""
    return os.environ.get("MLFLOW_RUN_ID") or None


def open_parent_run(
    tracker: Tracker, study: optuna.Study, config: StudyConfig, *, create: bool = True
) -> tuple[str, str, bool]:
    """Find or create the study's parent run.

    The first ``mlflow run`` entry-point run of a new study becomes its parent; a later one is
    tagged as a session of the study. Outside ``mlflow run`` the parent is created here.

    Returns:
        ``(parent_run_id, experiment_id, created_here)``; ``created_here`` means this process
        owns the run's lifecycle and must terminate it.
    """
    entry = _entry_run_id()
    stored_id = study.user_attrs.get(PARENT_RUN_ATTR)
    parent = tracker.get_run(stored_id) if stored_id else None
    if parent is not None:
        if entry and entry != parent.info.run_id:
            tracker.set_tags(entry, {"study.role": "session", "study.name": study.study_name,
                                     "study.parent_run_id": parent.info.run_id})
        return parent.info.run_id, parent.info.experiment_id, False
    if not create:
        raise TrackingError(
            f"study {study.study_name!r} has no parent run in {redact(tracker.tracking_uri)}"
            f" yet; start it with `study run` (workers join a running study)."
        )
    if stored_id:
        print(f"warning: parent run {stored_id} of study {study.study_name!r} is not in "
              f"{redact(tracker.tracking_uri)}; starting a new parent run.", file=sys.stderr)
    created_here = entry is None
    if entry:
        run = tracker.get_run(entry)
        run_id, experiment_id = entry, run.info.experiment_id
    else:
        experiment_id = tracker.experiment_id(config.experiment)
        run_id = tracker.create_run(experiment_id, name=study.study_name, tags={})
    tracker.set_tags(run_id, {
        "mlflow.runName": study.study_name,
        "study.role": "parent",
        "study.name": study.study_name,
        "study.storage": redact(config.storage),
        **({OWNER_TAG: worker_stamp()} if created_here else {}),
    })
    tracker.log_params(run_id, config.to_params())
    study.set_user_attr(PARENT_RUN_ATTR, run_id)
    return run_id, experiment_id, created_here


def _adopt_orphaned_parent(tracker: Tracker, study: optuna.Study, run_id: str) -> bool:
    """Take over a parent run left RUNNING by a session whose process is gone (killed, or
    stopped by a tracking outage before it could close the run), so that this session closes
    it. Gone means: a process of this host that no longer exists, or one whose trial was
    failed as dead (its heartbeat went stale). A live owner, or ``mlflow run``, keeps it."""
    parent = tracker.get_run(run_id)
    owner = parent.data.tags.get(OWNER_TAG) if parent is not None else None
    if parent is None or parent.info.status != "RUNNING" or not owner:
        return False
    died = dead_here(owner) or any(
        t.user_attrs.get(WORKER_ATTR) == owner
        and str(t.user_attrs.get("failure", "")).startswith((HEARTBEAT_REASON,
                                                              DEAD_PROCESS_REASON))
        for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    )
    if died:
        tracker.set_tags(run_id, {OWNER_TAG: worker_stamp()})
    return died


def study_metrics(study: optuna.Study) -> dict[str, float]:
    """The parent run's summary metrics."""
    counts = count_states(study)
    metrics = {
        "study/n_complete": counts["COMPLETE"],
        "study/n_pruned": counts["PRUNED"],
        "study/n_failed": counts["FAIL"],
    }
    best = _best(study)
    if best is not None and best.value is not None and math.isfinite(best.value):
        metrics["study/best_value"] = best.value
    return metrics


def _best(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None


def run_session(
    config: StudyConfig, *, given: Mapping[str, Any] | None = None, out: TextIO | None = None,
    data: TensorData | None = None, worker: bool = False, hooks: Sequence[EpochHook] = (),
) -> SessionResult:
    """Create or resume the study and run trials until ``n_trials`` of them have finished.

    Args:
        config: The resolved config (flags and file over defaults).
        given: The values the user set explicitly (checked against a stored config).
        out: Where progress goes (stderr by default).
        data: A dataset already loaded for this process (loaded here when ``None``).
        worker: Join an existing study only (``study worker``): never create it, and take the
            budget stored by ``study run`` unless ``n_trials`` is given explicitly.
        hooks: Extra per-epoch callbacks for every trial (see :class:`Objective`).

    Raises:
        StudyError: Bad input, an unreachable store, or a study whose trials keep failing.
    """
    out = out or sys.stderr
    ctx = _open_session(config, given=dict(given or {}), data=data, worker=worker, out=out)
    with _summarized(ctx):
        _optimize(ctx.study, ctx.config, ctx.data, ctx.tracker, experiment_id=ctx.experiment_id,
                  parent_run_id=ctx.parent_run_id, device=str(ctx.device), out=out, hooks=hooks)
    return _result(ctx)


def run_with_workers(
    config: StudyConfig, workers: int, *, given: Mapping[str, Any] | None = None,
    out: TextIO | None = None, trials_per_gpu: int | None = None,
) -> SessionResult:
    """Like :func:`run_session`, with ``workers`` local ``study worker`` processes doing the
    trials (journal or PostgreSQL storage); this process only prepares, waits and sums up.

    Raises:
        ConfigError: SQLite storage, or fewer than one worker.
        StudyError: As :func:`run_session`; or every worker failed.
    """
    from study.workers import MAX_ROUNDS, check_workers, start_workers, worker_devices

    devices = worker_devices(config.device, workers, trials_per_gpu)
    check_workers(config, len(devices))
    out = out or sys.stderr
    ctx = _open_session(config, given=dict(given or {}), data=None, worker=False, out=out)
    with _summarized(ctx):
        for _ in range(MAX_ROUNDS):
            codes = start_workers(ctx.config, devices, tracking_uri=ctx.tracker.tracking_uri)
            if n_finished(ctx.study) >= ctx.config.n_trials or all(codes):
                break
        if all(codes) and n_finished(ctx.study) < ctx.config.n_trials:
            raise StudyError(f"all {len(devices)} workers failed (exit codes {codes}); "
                             f"see above.")
    return _result(ctx)


@contextlib.contextmanager
def _summarized(ctx: _Session) -> Iterator[None]:
    """Log the study summary however the session ends; close a parent run we own with the
    matching status (FINISHED, KILLED on Ctrl-C/SIGTERM, FAILED otherwise)."""
    status = "FAILED"
    try:
        yield
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        _summarize(ctx, status)


@dataclasses.dataclass(frozen=True)
class _Session:
    config: StudyConfig
    study: optuna.Study
    tracker: Tracker
    data: TensorData
    device: Any
    parent_run_id: str
    experiment_id: str
    owns_parent: bool
    entry: str | None


def _open_session(config: StudyConfig, *, given: dict[str, Any], data: TensorData | None,
                  worker: bool, out: TextIO) -> _Session:
    """Validate everything, then open (or create) the study and its parent run, recovered."""
    device = resolve_device(config.device)
    tracker = Tracker(config.tracking_uri, retry_seconds=config.tracking_timeout)
    entry = _entry_run_id()
    if entry and "experiment" not in given and not worker:
        entry_run = tracker.get_run(entry)
        if entry_run is not None:  # `mlflow run` chose the experiment; the study records it
            config = config.replace(
                experiment=tracker.experiment_name(entry_run.info.experiment_id)
            )
    prepared = prepare_study(config, given=given, create=not worker)
    config = prepared.config
    if data is None:
        data = load_dataset(config.dataset, seed=config.seed, device=device)
    study = load_study(prepared, salt=os.getpid() if worker else 0).study
    if worker and "n_trials" not in given and BUDGET_ATTR in study.user_attrs:
        config = config.replace(n_trials=study.user_attrs[BUDGET_ATTR])
    elif not worker:
        study.set_user_attr(BUDGET_ATTR, config.n_trials)
    parent_run_id, experiment_id, owns_parent = open_parent_run(
        tracker, study, config, create=not worker)
    prepared.stale_handler.tracker = tracker
    _recover(study, prepared.stale_handler, tracker, experiment_id, out)
    if not worker and not owns_parent:
        owns_parent = _adopt_orphaned_parent(tracker, study, parent_run_id)
    return _Session(config, study, tracker, data, device, parent_run_id, experiment_id,
                    owns_parent, entry)


def _result(ctx: _Session) -> SessionResult:
    study = ctx.study
    best = _best(study)
    return SessionResult(
        study_name=study.study_name, parent_run_id=ctx.parent_run_id,
        counts=count_states(study), n_finished=n_finished(study), n_trials=ctx.config.n_trials,
        best_value=None if best is None else best.value,
        best_params=None if best is None else dict(best.user_attrs.get("hparams", best.params)),
    )


def _recover(study: optuna.Study, handler: StaleTrialHandler, tracker: Tracker,
             experiment_id: str, out: TextIO) -> None:
    """Fail trials whose worker died (and retry them); close runs left RUNNING."""
    dead = fail_dead_trials(study, handler)
    running = {t._trial_id for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    optuna.storages.fail_stale_trials(study)
    dead += [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
             if t._trial_id in running
             and str(t.user_attrs.get("failure", "")).startswith(HEARTBEAT_REASON)]
    closed = close_orphan_runs(study, tracker, experiment_id)
    if dead or closed:
        print(f"recovered: {len(dead)} trial(s) of dead workers failed and queued again "
              f"{dead}; {closed} run(s) left RUNNING closed.", file=out, flush=True)


def _summarize(ctx: _Session, status: str) -> None:
    """Write the summary metrics; during an outage they are skipped (the next session
    writes them), so the error that ended the session is the one the user sees."""
    tracker = ctx.tracker
    try:
        metrics = study_metrics(ctx.study)
        tracker.log_metrics(ctx.parent_run_id, metrics)
        if ctx.entry and ctx.entry != ctx.parent_run_id:
            tracker.log_metrics(ctx.entry, metrics)
        if ctx.owns_parent:
            tracker.end_run(ctx.parent_run_id, status)
    except TrackingError as exc:
        print(f"warning: study summary not logged: {exc}", file=sys.stderr)


class _StudyErrorsSaidOnce(logging.Filter):
    """Drop what Optuna logs about a trial failed by one of our errors (the parameters, the
    error with its traceback, then "failed with value None"): the progress line or the
    session's one-line error already says why, with the trial number."""

    def __init__(self) -> None:
        super().__init__()
        self._said: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and isinstance(record.exc_info[1], StudyError):
            self._said.add(message.split(" failed with parameters", 1)[0])  # "Trial 7"
            return False
        head, sep, _ = message.partition(" failed with value ")
        if sep and head in self._said:
            self._said.discard(head)
            return False
        return True


@contextlib.contextmanager
def _one_line_trial_failures() -> Iterator[None]:
    logger = logging.getLogger("optuna.study._optimize")  # where Optuna logs failed trials
    only_lines = _StudyErrorsSaidOnce()
    logger.addFilter(only_lines)
    try:
        yield
    finally:
        logger.removeFilter(only_lines)


def _optimize(
    study: optuna.Study, config: StudyConfig, data: TensorData, tracker: Tracker, *,
    experiment_id: str, parent_run_id: str, device: str, out: TextIO,
    hooks: Sequence[EpochHook] = (),
) -> None:
    done = n_finished(study)
    if done >= config.n_trials:
        print(f"study {study.study_name!r}: budget met ({done}/{config.n_trials} finished "
              f"trials); nothing to run.", file=out)
        return
    objective = Objective(config, data, tracker, experiment_id=experiment_id,
                          parent_run_id=parent_run_id, device=device, hooks=hooks)
    failures: list[str] = []
    with Progress(total=config.n_trials, initial=done, out=out,
                  label=study.study_name) as progress:

        def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
            finished = n_finished(study)
            progress.trial_done(trial, finished)
            if trial.state is TrialState.FAIL:
                failures.append(str(trial.user_attrs.get("failure", "unknown error")))
            elif trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
                failures.clear()
            # Trials other workers are running count: stopping here keeps the budget exact.
            running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
            if finished + running >= config.n_trials or len(failures) >= MAX_CONSECUTIVE_FAILURES:
                study.stop()

        with _one_line_trial_failures():
            study.optimize(objective, timeout=config.timeout, catch=(TrialFailedError,),
                           callbacks=[after_trial])
    if len(failures) >= MAX_CONSECUTIVE_FAILURES:
        raise StudyError(
            f"{len(failures)} trials failed in a row (last: {failures[-1]}); the study stopped "
            f"at {n_finished(study)}/{config.n_trials} finished trials."
        )


@dataclasses.dataclass(frozen=True)
class SingleTrialResult:
    """Outcome of ``study trial``."""

    run_id: str
    state: str
    n_params: int | None
    final_val_loss: float | None
    final_val_accuracy: float | None
    early: dict[str, float] | None
    failure: str | None
    diagnosis: Diagnosis = dataclasses.field(default_factory=Diagnosis)


def run_single_trial(config: StudyConfig, hp: HParams) -> SingleTrialResult:
    """Train one fixed configuration and log it as one MLflow run (no Optuna study).

    Under ``mlflow run`` the entry point's run is used; otherwise a run named after the
    configuration is created in ``config.experiment``.

    Raises:
        StudyError: Bad input or an unreachable tracking store (the trial's own failure is
            returned, with the run closed as FAILED).
    """
    device = resolve_device(config.device)
    tracker = Tracker(config.tracking_uri, retry_seconds=config.tracking_timeout)
    data = load_dataset(config.dataset, seed=config.seed, device=device)
    entry = _entry_run_id()
    name = (f"single-w{hp.width}-lr{hp.lr:g}-bs{hp.batch_size}-wd{hp.weight_decay:g}"
            f"-{hp.penalty_mode}")
    tags = {"study.role": "single", "mlflow.runName": name}
    if entry:
        run_id = entry
        tracker.set_tags(run_id, tags)
    else:
        run_id = tracker.create_run(tracker.experiment_id(config.experiment), name=name,
                                    tags=tags)
    n_params: list[int] = []
    seen: list[Any] = []
    try:
        history = train_logged(hp, config, data, tracker, run_id, device=str(device),
                               on_start=n_params.append,
                               hooks=[lambda _, report: seen.append(report)])
    except Exception as exc:
        reason = failure_reason(exc)
        found = diagnose([*seen, *([exc.report] if hasattr(exc, "report") else [])],
                         non_finite=isinstance(exc, NonFiniteLossError),
                         n_classes=data.n_classes)
        tracker.end_trial_run(run_id, state="FAIL", failure=reason, tags=diagnosis_tags(found))
        return SingleTrialResult(run_id, "FAIL", n_params[0] if n_params else None,
                                 None, None, None, reason, found)
    except BaseException:
        tracker.end_trial_run(run_id, state="FAIL", failure="interrupted")
        raise
    found = diagnose(history, n_classes=data.n_classes)
    tracker.set_tags(run_id, {"optuna.trial_state": "COMPLETE", **diagnosis_tags(found)})
    if not entry:
        tracker.end_run(run_id, "FINISHED")
    return SingleTrialResult(
        run_id, "COMPLETE", n_params[0], history[-1].val_loss, history[-1].val_accuracy,
        early_losses(history, config.early_epochs), None, found,
    )

