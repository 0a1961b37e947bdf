"""The study's run layout in MLflow (SPEC section 5): one parent run per study, one session run
per later ``mlflow run`` of it, one nested run per Optuna trial.

The tag names and roles live here, so every writer and reader of the layout agrees on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from study.redact import one_line

if TYPE_CHECKING:
    from study.tracking._tracker import Tracker

__all__ = [
    "NAME_TAG",
    "OWNER_TAG",
    "PARENT_TAG",
    "ROLE_TAG",
    "STATE_TAG",
    "TRIAL_STATUS",
    "claim_parent_run",
    "end_trial_run",
    "find_parent_run",
    "start_trial_run",
    "tag_session",
    "trial_run_name",
]

ROLE_TAG = "study.role"  # parent, session, trial or single
NAME_TAG = "study.name"
PARENT_TAG = "study.parent_run_id"
# The process (host:pid) that created a parent run outside `mlflow run`, and must close it.
OWNER_TAG = "study.owner"
# The trial's Optuna state on its run (COMPLETE, PRUNED or FAIL). A pruned trial ran as asked
# and its run is FINISHED (the MLflow UI draws KILLED and FAILED as failures): this tells them
# apart. Runs of earlier versions carry only `optuna.trial_state` (and KILLED when pruned).
STATE_TAG = "study.state"
# Optuna trial state -> MLflow run status; an interrupted trial's run is KILLED.
TRIAL_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED"}
INTERRUPTED_STATUS = "KILLED"
# MLflow caps a tag value at 5000 characters.
_TAG_LIMIT = 5000


def trial_run_name(number: int) -> str:
    """The run name of trial ``number``: ``trial-0007``."""
    return f"trial-{number:04d}"


def claim_parent_run(tracker: Tracker, run_id: str, *, study_name: str, storage: str,
                     params: Mapping[str, Any], owner: str | None,
                     new_run: bool = False) -> None:
    """Make ``run_id`` the parent run of study ``study_name``: its name, role tags, the
    (redacted) ``storage`` URL, the study's ``params``, and the ``owner`` that must close it
    (``None`` when ``mlflow run`` owns the run). ``new_run``: ``run_id`` was just created
    here, named ``study_name``, with no params (nothing to rename or look up)."""
    tracker.set_tags(run_id, {
        **({} if new_run else {"mlflow.runName": study_name}),
        ROLE_TAG: "parent",
        NAME_TAG: study_name,
        "study.storage": storage,
        **({OWNER_TAG: owner} if owner else {}),
    })
    tracker.log_params(run_id, params, new_run=new_run)


def tag_session(tracker: Tracker, run_id: str, *, study_name: str, parent_run_id: str) -> None:
    """Tag ``run_id`` (a later ``mlflow run`` of the study) as a session of its parent run;
    its description says where the study's settings are (MLflow logged the entry point's
    params, MLproject defaults included, before the study was read)."""
    note = (f"A session of study {study_name!r}: the study's settings, trials and answer are "
            f"on its parent run {parent_run_id}. The params here are this `mlflow run`'s, "
            f"MLproject defaults included: a resumed study keeps the settings it was created "
            f"with.")
    # Named after the study (MLflow gave it a random name, which the UI lists as if it were an
    # unrelated run).
    tracker.set_tags(run_id, {ROLE_TAG: "session", NAME_TAG: study_name,
                              PARENT_TAG: parent_run_id, "mlflow.note.content": note,
                              "mlflow.runName": f"{study_name}-session"})


def find_parent_run(tracker: Tracker, experiment_name: str, study_name: str) -> Any | None:
    """The parent run of study ``study_name`` in experiment ``experiment_name``, if any."""
    experiment = tracker.client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    runs = tracker.find_runs(experiment.experiment_id,
                             tags={ROLE_TAG: "parent", NAME_TAG: study_name})
    return runs[0] if runs else None


def start_trial_run(tracker: Tracker, experiment_id: str, *, parent_run_id: str,
                    study_name: str, trial_number: int) -> str:
    """Open the nested run of one Optuna trial, before training starts; returns its id."""
    return tracker.create_run(
        experiment_id,
        name=trial_run_name(trial_number),
        parent_run_id=parent_run_id,
        tags={
            ROLE_TAG: "trial",
            NAME_TAG: study_name,
            "optuna.study_name": study_name,
            "optuna.trial_number": str(trial_number),
        },
    )


def end_trial_run(tracker: Tracker, run_id: str, *, state: str, failure: str | None = None,
                  tags: Mapping[str, str] | None = None,
                  metrics: Mapping[str, float] | None = None, step: int = 0,
                  interrupted: bool = False) -> None:
    """Record the trial's Optuna ``state`` (tags ``study.state`` and ``optuna.trial_state``,
    with ``tags``, ``failure`` as ``study.failure``, and last ``metrics`` at ``step``, all in
    one write) and close the run with the matching status: FINISHED for COMPLETE and PRUNED,
    FAILED for FAIL, KILLED when the trial was ``interrupted`` (Ctrl-C, SIGTERM)."""
    tags = {**(tags or {}), STATE_TAG: state, "optuna.trial_state": state}
    if failure:
        tags["study.failure"] = one_line(failure)[:_TAG_LIMIT]
    status = INTERRUPTED_STATUS if interrupted else TRIAL_STATUS[state]
    tracker.close_run(run_id, status, tags=tags, metrics=metrics, step=step)
