"""Landscape results across trials: kept with the Optuna study and read back.

:func:`store_probe_results` keeps a probe's figures; :func:`landscape_rows` reads them back for
reports (:func:`study.landscape.plots.sharpness_figure` plots them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from study.errors import StorageError
from study.keys import HPARAMS_ATTR, LANDSCAPE_ATTR_PREFIX
from study.redact import one_line

__all__ = [
    "ATTR_FLATNESS",
    "ATTR_SHARPNESS",
    "STUDY_ATTR_PREFIX",
    "landscape_rows",
    "store_probe_results",
]

ATTR_SHARPNESS = "landscape_sharpness"
ATTR_FLATNESS = "landscape_flatness_radius"
STUDY_ATTR_PREFIX = LANDSCAPE_ATTR_PREFIX


def store_probe_results(study: optuna.Study, trial: FrozenTrial, attrs: Mapping[str, Any]) -> None:
    """Keep ``attrs`` (a probe's figures) for ``trial`` in the study's user attr
    ``landscape_trial_<number>``.

    A finished trial is immutable in Optuna (``UpdateFinishedTrialError`` in every storage), so
    the figures go to the study, through its public API, in every storage alike; a later probe
    of the same trial replaces them. The MLflow run holds the same as metrics.

    Raises:
        StorageError: The storage refused the write.
    """
    try:
        study.set_user_attr(f"{STUDY_ATTR_PREFIX}{trial.number}", dict(attrs))
    except Exception as exc:  # StorageInternalError, driver errors
        raise StorageError(f"could not keep the landscape figures of trial {trial.number}: "
                           f"{one_line(exc)}") from None


# -- across trials -------------------------------------------------------------------------------
def landscape_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per probed trial, from the study's attrs (or, for probes of earlier versions, the
    trial's own user attrs)."""
    rows = []
    study_attrs = study.user_attrs
    for trial in study.get_trials(deepcopy=False):
        attrs = dict(trial.user_attrs)
        stored = study_attrs.get(f"{STUDY_ATTR_PREFIX}{trial.number}")
        if isinstance(stored, Mapping):
            attrs.update(stored)
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
