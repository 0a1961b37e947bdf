"""One session of a study: open both stores, run trials until the budget is met, summarize; the
one way through (ARCHITECTURE.md): config -> data -> stores -> optimize -> summary."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState

from study._text import finished_of, flag_text
from study._validation import check_new_study_name
from study.config import StudyConfig
from study.errors import StudyError, TrackingError, TrialFailedError
from study.keys import BUDGET_ATTR, FAILURE_ATTR
from study.redact import redact
from study.runtime._interrupted import interrupt_summary, interrupted_trials
from study.runtime._optuna_logs import optuna_quiet
from study.runtime.explain import QueuedTrial, missing
from study.runtime.inputs import CheckedInputs, check_inputs, record_model_source
from study.runtime.lifecycle import (
    FINISHED_STATES,
    PreparedStudy,
    TrialCounter,
    check_store_folder,
    load_study,
    missing_local_store,
    n_finished,
    prepare_study,
)
from study.runtime.objective import EpochHook, Objective
from study.runtime.parent import (
    adopt_orphaned_parent,
    check_parent_store,
    entry_run_id,
    open_parent_run,
    study_metrics,
)
from study.runtime.progress import Progress
from study.runtime.recovery import (
    StaleTrialHandler,
    close_orphan_runs,
    fail_dead_trials,
    worker_identity,
    worker_salt,
    worker_stamp,
)
from study.runtime.result import SessionResult, session_result
from study.tracking import Tracker
from study.training import TensorData, resolve_device

if TYPE_CHECKING:
    from study._signals import Interrupts

__all__ = ["Interrupted", "SessionResult", "run_session", "run_with_workers"]

# A study whose trials keep failing is broken (bad data, bad bounds): stop instead of looping.
MAX_CONSECUTIVE_FAILURES = 5


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the session, after its clean-up.

    Attributes:
        summary: One line saying what became of the running trials and how to resume.
        signum: The signal, where known (``None``: Ctrl-C, or the caller knows).
    """

    def __init__(self, summary: str, *, signum: int | None = None) -> None:
        super().__init__(summary)
        self.summary = summary
        self.signum = signum


def run_session(
    config: StudyConfig, *, given: Mapping[str, Any] | None = None, out: TextIO | None = None,
    data: TensorData | None = None, worker: bool = False, hooks: Sequence[EpochHook] = (),
    queue: Sequence[QueuedTrial] = (), interrupts: Interrupts | None = None,
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
        queue: A designed experiment (``study explain``): these trials are enqueued where the
            study lacks them, and the session runs the queue only, nothing sampled.
        interrupts: The command's Ctrl-C/SIGTERM handlers: checked before the first trial
            and after each one (a Ctrl-C that a finalizer swallowed ends the session there),
            deferred while Optuna's own code runs between trials (a trial's ``tell`` is
            never cut in half), live inside each trial.

    Raises:
        StudyError: Bad input, an unreachable store, or a study whose trials keep failing.
    """
    out = out or sys.stderr
    # A designed experiment (study explain) fixes one batch size, given as --batch-size.
    with contextlib.ExitStack() as summary:
        ctx = _open_session(config, given=dict(given or {}), data=data, worker=worker, out=out,
                            batch_field="batch_size" if queue else "batch_sizes",
                            interrupts=interrupts, summary=summary, own=worker_stamp())
        if queue:
            existing = [t.user_attrs for t in ctx.study.get_trials(deepcopy=False)]
            for trial in missing(queue, existing):
                ctx.study.enqueue_trial(trial.params, user_attrs=trial.user_attrs)
        _optimize(ctx.study, ctx.config, ctx.data, ctx.tracker, experiment_id=ctx.experiment_id,
                  parent_run_id=ctx.parent_run_id, device=str(ctx.device), out=out, hooks=hooks,
                  queue_only=bool(queue), sampler=ctx.sampler, interrupts=interrupts,
                  counter=ctx.counter, worker=worker)
    return _result(ctx)


def run_with_workers(
    config: StudyConfig, workers: int, *, given: Mapping[str, Any] | None = None,
    out: TextIO | None = None, trials_per_gpu: int | None = None, quiet: bool = False,
    interrupts: Interrupts | None = None,
) -> SessionResult:
    """Like :func:`run_session`, with ``workers`` local ``study worker`` processes doing the
    trials (journal or PostgreSQL storage); this process only prepares, waits and sums up.

    Raises:
        ConfigError: SQLite storage, or fewer than one worker.
        StudyError: As :func:`run_session`; or every worker failed.
        Interrupted: Ctrl-C or SIGTERM, passed on to the workers, stopped them.
    """
    from study.runtime.workers import MAX_ROUNDS, check_workers, start_workers, worker_devices

    devices = worker_devices(config.device, workers, trials_per_gpu)
    check_workers(config, len(devices))
    out = out or sys.stderr
    with contextlib.ExitStack() as summary:
        ctx = _open_session(config, given=dict(given or {}), data=None, worker=False, out=out,
                            interrupts=interrupts, summary=summary)
        if interrupts is not None:  # one held while the stores opened
            interrupts.check()
        idle = _nothing_to_run(ctx.study, ctx.config, ctx.counter)
        if idle:  # said once, without starting workers that would each say it
            print(idle, file=out)
        for _ in range(0 if idle else MAX_ROUNDS):
            codes = start_workers(ctx.config, devices, tracking_uri=ctx.tracker.tracking_uri,
                                  quiet=quiet)
            if n_finished(ctx.study) >= ctx.config.n_trials or all(codes):
                break
        if not idle and all(codes) and n_finished(ctx.study) < ctx.config.n_trials:
            raise StudyError(f"all {len(devices)} workers failed (exit codes {codes}); "
                             f"see above.")
    return _result(ctx)


@contextlib.contextmanager
def _summarized(ctx: _Session, *, own: str | None = None,
                failed: Mapping[int, bool] | None = None) -> Iterator[None]:
    """Log the study summary however the session ends; close a parent run we own with the
    matching status (FINISHED, KILLED on Ctrl-C/SIGTERM, FAILED otherwise). Ctrl-C/SIGTERM
    comes out as :class:`Interrupted`, saying which trials it failed and queued again: those
    of the process stamped ``own`` (a worker: not its neighbours'), else all, and ``failed``."""
    status = "FAILED"
    before = interrupted_trials(ctx.study, own)
    try:
        yield
        status = "FINISHED"
    except KeyboardInterrupt as exc:
        status = "KILLED"
        raise Interrupted(interrupt_summary(ctx.study, before, own, known=failed),
                          signum=getattr(exc, "signum", None)) from exc
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
    sampler: dict[str, Any]
    counter: TrialCounter


def _open_session(config: StudyConfig, *, given: dict[str, Any], data: TensorData | None,
                  worker: bool, out: TextIO, summary: contextlib.ExitStack,
                  batch_field: str = "batch_sizes", interrupts: Interrupts | None = None,
                  own: str | None = None) -> _Session:
    """Check every input, then open (or create) the study and its parent run, recovered, and
    enter its :func:`_summarized` (``own``) on ``summary``.

    A new study's inputs are checked before any store is opened, so a bad one leaves no file
    behind; a resumed study's (its stored config names its data) right after its storage.
    Once the inputs are checked, Ctrl-C and SIGTERM are held (``interrupts``) until the
    summary is entered (raised at the session's first check): a store is never left
    half-created (MLflow's first migration takes seconds) and the parent run is closed KILLED."""
    device = resolve_device(config.device)
    prepared = None
    if worker or not missing_local_store(config.storage):
        prepared = prepare_study(config, given=given, create=not worker)
        config = prepared.config
    else:
        check_new_study_name(config.study_name)
        check_store_folder(config.storage)
    inputs = check_inputs(config, data, device=device, out=out, batch_field=batch_field)
    with _held(interrupts):
        ctx = _open_stores(config, prepared, inputs, device=device, given=given,
                           worker=worker, out=out, pause=interrupts and interrupts.check)
        summary.enter_context(_summarized(ctx, own=own, failed=interrupts and interrupts.failed))
    return ctx


def _held(interrupts: Interrupts | None) -> contextlib.AbstractContextManager[None]:
    """Ctrl-C and SIGTERM latched, not raised, inside (nothing without ``interrupts``)."""
    return interrupts.deferred() if interrupts is not None else contextlib.nullcontext()


def _open_stores(config: StudyConfig, prepared: PreparedStudy | None,
                 inputs: CheckedInputs, *, device: Any, given: dict[str, Any], worker: bool,
                 out: TextIO, pause: Callable[[], None] | None = None) -> _Session:
    """The tracker, the study and its parent run, recovered (see :func:`_open_session`);
    ``pause``: the interrupt check, while the tracking store's opening waits (Tracker)."""
    known = prepared is not None and prepared.study_id is not None and check_parent_store(
        prepared.storage.get_study_user_attrs(prepared.study_id),
        study_name=config.study_name, tracking_uri=config.tracking_uri)
    # Trial runs close in the background: the next trial's sampling reads Optuna, not MLflow.
    tracker = Tracker(config.tracking_uri, retry_seconds=config.tracking_timeout,
                      close_in_background=True, known=known, pause=pause)
    entry = entry_run_id()
    if entry and "experiment" not in given and not worker and not (prepared and prepared.stored):
        entry_run = tracker.get_run(entry)
        if entry_run is not None:  # `mlflow run` chose the experiment; the study records it
            config = config.replace(
                experiment=tracker.experiment_name(entry_run.info.experiment_id)
            )
    prepared = prepare_study(config, given=given) if prepared is None \
        else dataclasses.replace(prepared, config=config)
    study, sampler = _load(prepared, worker=worker)
    config = prepared.config
    if worker and "n_trials" not in given and BUDGET_ATTR in study.user_attrs:
        config = config.replace(n_trials=study.user_attrs[BUDGET_ATTR])
    parent_run_id, experiment_id, owns_parent = open_parent_run(
        tracker, study, config, create=not worker)
    if not worker:  # once the parent run is found: a refused session changes nothing
        study.set_user_attr(BUDGET_ATTR, config.n_trials)
    record_model_source(study, tracker, parent_run_id, spec=config.model,
                        sha256=inputs.model_sha, out=out)
    prepared.stale_handler.attach(tracker, storage=prepared.storage,
                                  experiment_id=experiment_id, parent_run_id=parent_run_id)
    _recover(study, prepared.stale_handler, tracker, experiment_id, out)
    if not worker and not owns_parent:
        owns_parent = adopt_orphaned_parent(tracker, study, parent_run_id)
    return _Session(config, study, tracker, inputs.data, device, parent_run_id, experiment_id,
                    owns_parent, entry, sampler,
                    TrialCounter.of(prepared.storage, study.study_name))


def _load(prepared: PreparedStudy, *, worker: bool) -> tuple[optuna.Study, dict[str, Any]]:
    """The study, and its sampler's seed as each trial records it. Workers salt the seed with
    their identity (host name, PID and start, scheduler task ids; never the PID alone, which
    is 1 for every containerized worker), kept with the seed to explain it."""
    identity = worker_identity() if worker else None
    loaded = load_study(prepared, salt=worker_salt(identity) if identity else 0)
    sampler = {"seed": loaded.sampler_seed, **({"salt_of": identity} if identity else {})}
    return loaded.study, sampler


def _result(ctx: _Session) -> SessionResult:
    return session_result(ctx.study, ctx.config, parent_run_id=ctx.parent_run_id)


def _recover(study: optuna.Study, handler: StaleTrialHandler, tracker: Tracker,
             experiment_id: str, out: TextIO) -> None:
    """Fail trials whose worker died (and retry them); close runs left RUNNING."""
    before = len(handler.handled)
    fail_dead_trials(study, handler)
    optuna.storages.fail_stale_trials(study)  # calls the handler with each trial it fails
    dead = handler.handled[before:]
    closed = close_orphan_runs(study, tracker, experiment_id)
    if dead or closed:
        print(f"recovered: {len(dead)} trial(s) of dead workers failed and queued again "
              f"{dead}, their runs closed; {closed} other run(s) left RUNNING closed.",
              file=out, flush=True)


def _summarize(ctx: _Session, status: str) -> None:
    """Write the summary metrics; during an outage they are skipped (the next session
    writes them), so the error that ended the session is the one the user sees."""
    tracker = ctx.tracker
    try:
        tracker.wait_closed()  # the trial runs close before their parent run
        metrics = study_metrics(ctx.study)
        tracker.log_metrics(ctx.parent_run_id, metrics)
        if ctx.entry and ctx.entry != ctx.parent_run_id:
            tracker.log_metrics(ctx.entry, metrics)
        if ctx.owns_parent:
            tracker.end_run(ctx.parent_run_id, status)
        elif status == "FINISHED" and _completed(ctx) and \
                adopt_orphaned_parent(tracker, ctx.study, ctx.parent_run_id):
            # The session that owned the parent is gone (killed, or stopped by a signal) and
            # this one finished the study: its parent says so, not "RUNNING" for ever.
            tracker.end_run(ctx.parent_run_id, "FINISHED")
    except TrackingError as exc:
        print(f"warning: study summary not logged: {exc}", file=sys.stderr)


def _completed(ctx: _Session) -> bool:
    """Whether the study's own budget (not a worker's --n-trials) is met and none of its
    trials runs or waits anymore."""
    budget = int(ctx.study.user_attrs.get(BUDGET_ATTR, ctx.config.n_trials))
    return ctx.counter(*FINISHED_STATES) >= budget and \
        not ctx.counter(TrialState.RUNNING, TrialState.WAITING)


def _nothing_to_run(study: optuna.Study, config: StudyConfig, counter: TrialCounter, *,
                    queue_only: bool = False) -> str | None:
    """The line of a session with nothing to run (the budget met; a design's queue drained),
    else ``None``."""
    done = counter(*FINISHED_STATES)
    if queue_only and not counter(TrialState.WAITING):
        return f"study {study.study_name!r}: every designed trial has run; nothing to run."
    if done < config.n_trials:
        return None
    more = "" if queue_only else f" The budget counts the study's trials in all: " \
        f"{flag_text('n_trials', done + config.n_trials)} would run {config.n_trials} more."
    return (f"study {study.study_name!r}: budget met ({finished_of(done, config.n_trials)}); "
            f"nothing to run.{more}")


def _optimize(
    study: optuna.Study, config: StudyConfig, data: TensorData, tracker: Tracker, *,
    experiment_id: str, parent_run_id: str, device: str, out: TextIO,
    hooks: Sequence[EpochHook] = (), queue_only: bool = False,
    sampler: Mapping[str, Any] | None = None, interrupts: Interrupts | None = None,
    counter: TrialCounter, worker: bool = False,
) -> None:
    checkpoint = interrupts.check if interrupts is not None else (lambda: None)
    checkpoint()  # one held while the stores opened, or swallowed since: no trial starts
    idle = _nothing_to_run(study, config, counter, queue_only=queue_only)
    if idle:
        print(idle, file=out)
        return
    done = counter(*FINISHED_STATES)
    failures: list[str] = []
    # Workers side by side print the same line: which process says it tells them apart.
    who = f"worker pid {os.getpid()}, " if worker else ""
    start = (f"{done}/{config.n_trials} finished; running trials on {device} "
             f"({who}storage {redact(config.storage)}, {config.epochs} epoch(s) each)")
    with Progress(total=config.n_trials, initial=done, out=out, label=study.study_name,
                  start=start) as progress:
        objective = Objective(
            config, data, tracker, experiment_id=experiment_id, parent_run_id=parent_run_id,
            device=device, sampler=sampler, interrupts=interrupts,
            hooks=(*hooks, lambda h, r: progress.epoch(h, r, epochs=config.epochs,
                                                       trial=objective.number)))

        def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
            # Counted, not read: what finished (the budget) and what others still run.
            finished = counter(*FINISHED_STATES)
            progress.trial_done(trial, finished)
            if trial.state is TrialState.FAIL:
                failures.append(str(trial.user_attrs.get(FAILURE_ATTR, "unknown error")))
            elif trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
                failures.clear()
            # Trials other workers are running count: stopping here keeps the budget exact.
            running = counter(TrialState.RUNNING)
            drained = queue_only and not counter(TrialState.WAITING)
            if (finished + running >= config.n_trials or drained
                    or len(failures) >= MAX_CONSECUTIVE_FAILURES):
                study.stop()
            checkpoint()

        checkpoint()  # one swallowed while the objective was set up: no trial is created
        with optuna_quiet(), _held(interrupts):  # the progress lines say how each trial ended
            study.optimize(objective, timeout=config.timeout, catch=(TrialFailedError,),
                           callbacks=[after_trial])
        tracker.wait_closed()  # before the last progress line: every trial run is closed
    if len(failures) >= MAX_CONSECUTIVE_FAILURES:
        raise StudyError(
            f"{len(failures)} trials failed in a row (last: {failures[-1]}); the study stopped "
            f"with {finished_of(n_finished(study), config.n_trials)}."
        )


