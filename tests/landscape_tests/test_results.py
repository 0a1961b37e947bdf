"""Landscape results on finished trials (RDB and journal storages) and the sharpness figure."""

from __future__ import annotations

import optuna
import pytest

from study.landscape.plots import sharpness_figure
from study.landscape.results import (
    ATTR_FLATNESS,
    ATTR_SHARPNESS,
    landscape_rows,
    set_finished_trial_user_attrs,
)
from study.storages import create_storage

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _tiny_study(storage) -> optuna.Study:
    study = optuna.create_study(storage=storage, study_name="tiny")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    return study


def test_user_attrs_of_finished_trials_in_rdb_and_journal_storages(tmp_path):
    url = f"sqlite:///{tmp_path / 'tiny.db'}"
    rdb = _tiny_study(create_storage(url))  # the service's RDB storage
    attrs = {ATTR_SHARPNESS: 0.5, ATTR_FLATNESS: 0.25}
    assert set_finished_trial_user_attrs(rdb, rdb.trials[0], attrs) == "trial"
    assert set_finished_trial_user_attrs(rdb, rdb.trials[0], {ATTR_SHARPNESS: 0.75}) == "trial"
    fresh = optuna.load_study(study_name="tiny", storage=url)
    assert fresh.trials[0].user_attrs[ATTR_SHARPNESS] == 0.75
    assert landscape_rows(fresh)[0]["flatness_radius"] == 0.25

    from optuna.storages.journal import JournalFileBackend, JournalStorage

    journal = _tiny_study(JournalStorage(JournalFileBackend(str(tmp_path / "journal.log"))))
    assert set_finished_trial_user_attrs(journal, journal.trials[0], attrs) == "study"
    (row,) = landscape_rows(journal)
    assert (row["sharpness"], row["flatness_radius"]) == (0.5, 0.25)


def test_sharpness_figure_accepts_rows_and_empty_input():
    rows = [{"trial_number": 0, "sharpness": 0.01, "batch_size": 32, "weight_decay": 1e-4,
             "penalty_mode": "coupled"},
            {"number": 1, "sharpness": 0.02, "batch_size": 128, "weight_decay": 0.0},
            {"trial_number": 2, "sharpness": None, "batch_size": 64, "weight_decay": 1e-3}]
    assert sharpness_figure(rows).startswith(PNG_MAGIC)
    assert sharpness_figure([]).startswith(PNG_MAGIC)
    pandas = pytest.importorskip("pandas")
    assert sharpness_figure(pandas.DataFrame(rows)).startswith(PNG_MAGIC)
