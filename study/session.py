"""One session of a study: open both stores, run trials until the budget is met, summarize.

This is the one way through (ARCHITECTURE.md): config -> data -> stores -> optimize -> summary.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState

from study.config import StudyConfig
from study.data import TensorData, load_dataset
from study.errors import StudyError, TrialFailedError
from study.objective import Objective, failure_reason, train_logged
from study.progress import Progress
from study.redact import redact
from study.search import PARENT_RUN_ATTR, count_states, load_study, n_finished, prepare_study
from study.tracking import Tracker
from study.train import HParams, early_losses, resolve_device

__all__ = ["SessionResult", "SingleTrialResult", "run_session", "run_single_trial"]

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
    tracker: Tracker, study: optuna.Study, config: StudyConfig
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
    })
    tracker.log_params(run_id, config.to_params())
    study.set_user_attr(PARENT_RUN_ATTR, run_id)
    return run_id, experiment_id, created_here


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
    data: TensorData | None = None,
) -> SessionResult:
    """Create or resume the study and run trials until ``n_trials`` of them have finished.

    Args:
        config: The resolved config (flags and file over defaults).
        given: The values the user set explicitly (checked against a stored config).
        out: Where progress goes (stderr by default).
        data: A dataset already loaded for this process (loaded here when ``None``).

    Raises:
        StudyError: Bad input, an unreachable store, or a study whose trials keep failing.
    """
    out = out or sys.stderr
    device = resolve_device(config.device)
    tracker = Tracker(config.tracking_uri)
    entry = _entry_run_id()
    if entry and "experiment" not in (given or {}):
        entry_run = tracker.get_run(entry)
        if entry_run is not None:  # `mlflow run` chose the experiment; the study records it
            config = config.replace(
                experiment=tracker.experiment_name(entry_run.info.experiment_id)
            )
    prepared = prepare_study(config, given=given)
    config = prepared.config
    if data is None:
        data = load_dataset(config.dataset, seed=config.seed, device=device)
    study = load_study(prepared).study
    parent_run_id, experiment_id, owns_parent = open_parent_run(tracker, study, config)
    status = "FAILED"
    try:
        _optimize(study, config, data, tracker, experiment_id=experiment_id,
                  parent_run_id=parent_run_id, device=str(device), out=out)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        metrics = study_metrics(study)
        tracker.log_metrics(parent_run_id, metrics)
        if entry and entry != parent_run_id:
            tracker.log_metrics(entry, metrics)
        if owns_parent:
            tracker.end_run(parent_run_id, status)
    best = _best(study)
    return SessionResult(
        study_name=study.study_name, parent_run_id=parent_run_id, counts=count_states(study),
        n_finished=n_finished(study), n_trials=config.n_trials,
        best_value=None if best is None else best.value,
        best_params=None if best is None else dict(best.user_attrs.get("hparams", best.params)),
    )


def _optimize(
    study: optuna.Study, config: StudyConfig, data: TensorData, tracker: Tracker, *,
    experiment_id: str, parent_run_id: str, device: str, out: TextIO,
) -> None:
    done = n_finished(study)
    if done >= config.n_trials:
        print(f"study {study.study_name!r}: budget met ({done}/{config.n_trials} finished "
              f"trials); nothing to run.", file=out)
        return
    objective = Objective(config, data, tracker, experiment_id=experiment_id,
                          parent_run_id=parent_run_id, device=device)
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
            if finished >= config.n_trials or len(failures) >= MAX_CONSECUTIVE_FAILURES:
                study.stop()

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


def run_single_trial(config: StudyConfig, hp: HParams) -> SingleTrialResult:
    """Train one fixed configuration and log it as one MLflow run (no Optuna study).

    Under ``mlflow run`` the entry point's run is used; otherwise a run named after the
    configuration is created in ``config.experiment``.

    Raises:
        StudyError: Bad input or an unreachable tracking store (the trial's own failure is
            returned, with the run closed as FAILED).
    """
    device = resolve_device(config.device)
    tracker = Tracker(config.tracking_uri)
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
    try:
        history = train_logged(hp, config, data, tracker, run_id, device=str(device),
                               on_start=n_params.append)
    except Exception as exc:
        reason = failure_reason(exc)
        tracker.end_trial_run(run_id, state="FAIL", failure=reason)
        return SingleTrialResult(run_id, "FAIL", n_params[0] if n_params else None,
                                 None, None, None, reason)
    except BaseException:
        tracker.end_trial_run(run_id, state="FAIL", failure="interrupted")
        raise
    tracker.set_tags(run_id, {"optuna.trial_state": "COMPLETE"})
    if not entry:
        tracker.end_run(run_id, "FINISHED")
    return SingleTrialResult(
        run_id, "COMPLETE", n_params[0], history[-1].val_loss, history[-1].val_accuracy,
        early_losses(history, config.early_epochs), None,
    )
