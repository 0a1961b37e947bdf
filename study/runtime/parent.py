"""The study's parent run for one session: found, created, or adopted from a dead session;
and the summary metrics written to it when the session ends."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from study.config import StudyConfig
from study.errors import TrackingError
from study.keys import PARENT_RUN_ATTR, PARENT_STORE_ATTR
from study.redact import redact
from study.runtime.lifecycle import count_states, missing_local_store
from study.runtime.recovery import dead_here, dead_workers, worker_stamp
from study.storages import shown_storage
from study.tracking import OWNER_TAG, Tracker, claim_parent_run, tag_session

__all__ = ["adopt_orphaned_parent", "best_trial", "check_parent_store", "entry_run_id",
           "open_parent_run", "parent_elsewhere", "study_metrics"]


def entry_run_id() -> str | None:
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
    entry = entry_run_id()
    stored_id = study.user_attrs.get(PARENT_RUN_ATTR)
    parent = tracker.get_run(stored_id) if stored_id else None
    if parent is not None:
        if entry and entry != parent.info.run_id:
            tag_session(tracker, entry, study_name=study.study_name,
                        parent_run_id=parent.info.run_id)
            _note_other_experiment(tracker, entry, parent, study.study_name)
        return parent.info.run_id, parent.info.experiment_id, False
    where = study.user_attrs.get(PARENT_STORE_ATTR)
    if stored_id and (_elsewhere(where, tracker.tracking_uri) or (not create and not where)):
        # Another store: a new parent run here would re-point the study, and every worker
        # given the right store would then be refused.
        raise TrackingError(parent_elsewhere(study.study_name, stored_id, where,
                                             tracker.tracking_uri))
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
    claim_parent_run(tracker, run_id, study_name=study.study_name,
                     storage=shown_storage(config.storage), params=config.to_params(),
                     owner=worker_stamp() if created_here else None, new_run=created_here)
    study.set_user_attr(PARENT_RUN_ATTR, run_id)
    study.set_user_attr(PARENT_STORE_ATTR, shown_storage(tracker.tracking_uri))
    return run_id, experiment_id, created_here


def parent_elsewhere(study_name: str, run_id: str, where: str | None, here: str) -> str:
    """The one line refusing a session whose tracking store lacks the study's parent run."""
    recorded = f" ({where})" if where else ""
    fix = f"--tracking-uri {where}" if where else "--tracking-uri"
    return (f"study {study_name!r} has its parent run {run_id} in another MLflow tracking "
            f"store{recorded} than {redact(here)}; pass the one it was created with ({fix}, or "
            f"MLFLOW_TRACKING_URI).")


def check_parent_store(attrs: Mapping[str, Any], *, study_name: str,
                       tracking_uri: str | None) -> bool:
    """Before the tracking store is opened: refuse a local SQLite store that does not exist
    when the study recorded its parent run in another one (opening it would create an empty
    ``mlflow.db`` and find no parent run there). ``tracking_uri`` ``None``: MLflow's own.

    Returns:
        Whether ``tracking_uri`` is the store the study recorded (a failure to reach it is an
        outage, not a typo: see ``Tracker(known=...)``).

    Raises:
        TrackingError: The line of :func:`parent_elsewhere`.
    """
    import mlflow

    tracking_uri = tracking_uri or mlflow.get_tracking_uri()
    run_id, where = attrs.get(PARENT_RUN_ATTR), attrs.get(PARENT_STORE_ATTR)
    if run_id and tracking_uri.startswith("sqlite:") and missing_local_store(tracking_uri) \
            and _elsewhere(where, tracking_uri):
        raise TrackingError(parent_elsewhere(study_name, run_id, where, tracking_uri))
    return bool(run_id) and where == shown_storage(tracking_uri)


def _elsewhere(where: str | None, tracking_uri: str) -> bool:
    """Whether the study recorded its parent run's store and it is not ``tracking_uri``."""
    return bool(where) and where != shown_storage(tracking_uri)


def _note_other_experiment(tracker: Tracker, entry: str, parent: Any,
                           study_name: str) -> None:
    """Say so when ``mlflow run`` opened this session's run in another experiment than the
    study's (it cannot be moved there: MLflow chose it before ``study`` started)."""
    run = tracker.get_run(entry)
    if run is None or run.info.experiment_id == parent.info.experiment_id:
        return
    here = tracker.experiment_name(run.info.experiment_id)
    there = tracker.experiment_name(parent.info.experiment_id)
    print(f"note: this `mlflow run` run is in experiment {here!r}, study {study_name!r} and its "
          f"runs in {there!r} (the run's tags link it to them; `mlflow run "
          f"--experiment-name {there}` keeps them together).", file=sys.stderr)


def adopt_orphaned_parent(tracker: Tracker, study: optuna.Study, run_id: str) -> bool:
    """Take over the study's parent run when no live session holds it, so that this session
    closes it with its own status: one left RUNNING by a session whose process is gone
    (killed, or stopped by a tracking outage before it could close the run: a process of this
    host that no longer exists, or one whose trial was failed as dead), or one an earlier
    session ended, reopened RUNNING (a resumed study's parent says how its last session ended,
    not that an earlier one was interrupted). A live owner, or ``mlflow run``, keeps it."""
    parent = tracker.get_run(run_id)
    owner = parent.data.tags.get(OWNER_TAG) if parent is not None else None
    if parent is None or not owner:
        return False
    running = parent.info.status == "RUNNING"
    if running and not (dead_here(owner) or owner in dead_workers(study.get_trials(
            deepcopy=False))):
        return False
    tracker.set_tags(run_id, {OWNER_TAG: worker_stamp()})
    if not running:
        tracker.end_run(run_id, "RUNNING")
    return True


def study_metrics(study: optuna.Study) -> dict[str, float]:
    """The parent run's summary metrics."""
    counts = count_states(study)
    metrics = {
        "study/n_complete": counts["COMPLETE"],
        "study/n_pruned": counts["PRUNED"],
        "study/n_failed": counts["FAIL"],
    }
    best = best_trial(study)
    if best is not None and best.value is not None and math.isfinite(best.value):
        metrics["study/best_value"] = best.value
    return metrics


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None
