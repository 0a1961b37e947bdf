"""Landscape results across trials: stored on finished Optuna trials and read back.

:func:`set_finished_trial_user_attrs` attaches a probe's figures to an already finished trial;
:func:`landscape_rows` reads them back for reports (:func:`study.landscape.plots.sharpness_figure`
plots them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from study.errors import StorageError
from study.keys import HPARAMS_ATTR
from study.redact import one_line

__all__ = [
    "ATTR_FLATNESS",
    "ATTR_SHARPNESS",
    "STUDY_ATTR_PREFIX",
    "landscape_rows",
    "set_finished_trial_user_attrs",
]

ATTR_SHARPNESS = "landscape_sharpness"
ATTR_FLATNESS = "landscape_flatness_radius"
STUDY_ATTR_PREFIX = "landscape_trial_"  # study user attr, for storages that freeze trials


def set_finished_trial_user_attrs(
    study: optuna.Study, trial: FrozenTrial, attrs: Mapping[str, Any]
) -> str:
    """Attach ``attrs`` to a finished trial; returns where they went (``trial`` or ``study``).

    Optuna refuses ``storage.set_trial_user_attr`` on a finished trial
    (``UpdateFinishedTrialError``) in every storage. In an RDB storage (SQLite, PostgreSQL,
    MySQL) the rows are upserted directly, in one transaction. A journal (or in-memory) storage
    replays its log and drops any update to a finished trial, so there the values are kept in
    the study's user attr ``landscape_trial_<number>`` instead (:func:`landscape_rows` reads
    both).

    Raises:
        StorageError: The storage refused the write.
    """
    if not trial.state.is_finished():
        for key, value in attrs.items():
            study._storage.set_trial_user_attr(trial._trial_id, key, value)
        return "trial"
    backend = getattr(study._storage, "_backend", study._storage)  # unwrap _CachedStorage
    if isinstance(backend, optuna.storages.RDBStorage):
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        try:
            with _create_scoped_session(backend.scoped_session) as session:
                row = models.TrialModel.find_or_raise_by_id(trial._trial_id, session)
                for key, value in attrs.items():
                    attr = models.TrialUserAttributeModel.find_by_trial_and_key(row, key, session)
                    if attr is None:
                        session.add(models.TrialUserAttributeModel(
                            trial_id=trial._trial_id, key=key, value_json=json.dumps(value)))
                    else:
                        attr.value_json = json.dumps(value)
        except Exception as exc:  # StorageInternalError, driver errors
            raise StorageError(f"could not set user attrs of trial {trial.number}: "
                               f"{one_line(exc)}") from None
        return "trial"
    study.set_user_attr(f"{STUDY_ATTR_PREFIX}{trial.number}", dict(attrs))
    return "study"


# -- across trials -------------------------------------------------------------------------------
def landscape_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per probed trial, rebuilt from the Optuna user attrs (for reports)."""
    rows = []
    study_attrs = study.user_attrs
    for trial in study.get_trials(deepcopy=False):
        attrs = dict(trial.user_attrs)
        fallback = study_attrs.get(f"{STUDY_ATTR_PREFIX}{trial.number}")
        if ATTR_SHARPNESS not in attrs and isinstance(fallback, Mapping):
            attrs.update(fallback)
        if attrs.get(ATTR_SHARPNESS) is None:
            continue
        hp = attrs.get(HPARAMS_ATTR) if isinstance(attrs.get(HPARAMS_ATTR), Mapping) \
            else trial.params
        rows.append({
            "trial_number": trial.number,
            "sharpness": attrs.get(ATTR_SHARPNESS),
            "flatness_radius": attrs.get(ATTR_FLATNESS),
            "batch_size": hp.get("batch_size"),
            "weight_decay": hp.get("weight_decay"),
            "penalty_mode": hp.get("penalty_mode"),
            "width": hp.get("width"),
            "lr": hp.get("lr"),
        })
    return rows
