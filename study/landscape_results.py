"""Landscape results across trials: stored on finished Optuna trials, read back, plotted.

:func:`set_finished_trial_user_attrs` attaches a probe's figures to an already finished trial;
:func:`landscape_rows` reads them back for reports; :func:`sharpness_figure` plots sharpness
against batch size and weight decay (the report's landscape figure).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import optuna
from matplotlib.figure import Figure
from optuna.trial import FrozenTrial

from study.errors import StorageError
from study.landscape import SHARPNESS_DISTANCE
from study.redact import one_line

__all__ = [
    "ATTR_FLATNESS",
    "ATTR_SHARPNESS",
    "STUDY_ATTR_PREFIX",
    "landscape_rows",
    "set_finished_trial_user_attrs",
    "sharpness_figure",
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
        hp = attrs.get("hparams") if isinstance(attrs.get("hparams"), Mapping) else trial.params
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


def _rows(results_or_table: Any) -> list[dict[str, Any]]:
    if results_or_table is None:
        return []
    if hasattr(results_or_table, "to_dict") and hasattr(results_or_table, "columns"):
        return list(results_or_table.to_dict("records"))  # a pandas DataFrame
    rows = []
    for item in results_or_table if isinstance(results_or_table, Iterable) else []:
        if isinstance(item, Mapping):
            rows.append(dict(item))
        elif hasattr(item, "to_dict"):  # a ProbeResult
            rows.append(item.to_dict())
    return rows


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def sharpness_figure(results_or_table: Any) -> bytes:
    """Sharpness against batch size and against weight decay (log x), as PNG bytes.

    Args:
        results_or_table: :class:`study.probe.ProbeResult` objects, mappings or a DataFrame with the
            columns ``sharpness``, ``batch_size``, ``weight_decay`` (and optionally
            ``trial_number``/``number`` and ``penalty_mode``), e.g. :func:`landscape_rows`.
    """
    rows = _rows(results_or_table)
    fig = Figure(figsize=(10.0, 4.2))
    axes = fig.subplots(1, 2, sharey=True)
    sharp = np.array([_number(r.get("sharpness")) for r in rows], dtype=float)
    modes = [str(r.get("penalty_mode") or "unknown") for r in rows]
    palette = {"l2-in-loss": "tab:red", "coupled": "tab:blue", "decoupled": "tab:green",
               "none": "tab:gray"}
    for ax, column, label in ((axes[0], "batch_size", "batch size"),
                              (axes[1], "weight_decay", "weight decay")):
        x = np.array([_number(r.get(column)) for r in rows], dtype=float)
        ok = np.isfinite(x) & (x > 0) & np.isfinite(sharp)
        ax.set_xlabel(f"{label} (log scale)")
        ax.grid(True, which="both", alpha=0.3)
        if not ok.any():
            ax.text(0.5, 0.5, "no probed trials", ha="center", va="center",
                    transform=ax.transAxes, color="0.4")
            ax.set_xscale("log")
            continue
        seen: set[str] = set()
        for i in np.flatnonzero(ok):
            mode = modes[i]
            ax.scatter(x[i], sharp[i], s=36, color=palette.get(mode, "tab:orange"),
                       label=None if mode in seen else mode, zorder=3)
            seen.add(mode)
            number = rows[i].get("trial_number", rows[i].get("number"))
            if number is not None:
                ax.annotate(str(number), (x[i], sharp[i]), textcoords="offset points",
                            xytext=(4, 3), fontsize=7, color="0.3")
        ax.set_xscale("log", base=2 if column == "batch_size" else 10)
        if column == "batch_size":
            ticks = sorted({float(v) for v in x[ok]})
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
        if len(set(x[ok])) == 1:  # one value: give the log axis some room
            ax.set_xlim(x[ok][0] / 2, x[ok][0] * 2)
        ax.margins(x=0.15, y=0.15)
        ax.legend(fontsize=8, title="penalty mode", title_fontsize=8)
    axes[0].set_ylabel(f"sharpness (loss rise at ±{SHARPNESS_DISTANCE:g})")
    fig.suptitle("Loss-landscape sharpness of probed trials "
                 f"({int(np.isfinite(sharp).sum())} trials)", fontsize=11)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
