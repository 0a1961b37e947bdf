"""The gap question's trials from a trial table: per-epoch parts, model contents, settings."""

from __future__ import annotations

import pandas as pd

from study.analysis.analyze import analyze
from study.analysis.gap_source import MAX_GROUPS, gap_trials, setting_label
from study.analysis.table import TABLE_COLUMNS, gap_records


def _record(epoch: int, *, split: bool = False) -> dict:
    parts = {"gap_timing": 0.1, "gap_mode": 0.3, "gap_generalization": 0.05}
    if split:
        parts.update(gap_mode_batchnorm=0.2, gap_mode_dropout=0.1)
    return {"epoch": epoch, "loss": 1.0, "data_loss": 0.9, "penalty": 0.1,
            "val_loss": 0.9 + 0.45, "val_accuracy": 0.5, **parts}


def _table(rows: list[dict]) -> pd.DataFrame:
    full = [{**{c: None for c in TABLE_COLUMNS}, "state": "COMPLETE", **row} for row in rows]
    return pd.DataFrame(full, columns=list(TABLE_COLUMNS))


def test_a_curve_of_an_earlier_version_has_no_gap_records():
    assert gap_records([{"epoch": 1, "loss": 1.0, "data_loss": 0.9}]) is None
    assert gap_records([[1.0, 0.9, 0.1, 1.2, 0.5]]) is None


def test_gap_records_keep_the_parts_and_the_losses_of_each_epoch():
    (row,) = gap_records([_record(1, split=True)])
    assert row == {"epoch": 1, "data_loss": 0.9, "val_loss": 1.35, "gap_timing": 0.1,
                   "gap_mode": 0.3, "gap_generalization": 0.05, "gap_mode_batchnorm": 0.2,
                   "gap_mode_dropout": 0.1}


def test_one_setting_makes_no_groups_and_failed_trials_are_left_out():
    curve = gap_records([_record(1)])
    trials = gap_trials(_table([{"gap_curve": curve}, {"gap_curve": curve},
                                {"gap_curve": curve, "state": "FAIL"}]))
    assert len(trials) == 2 and {t.group for t in trials} == {None}


def test_a_few_settings_are_groups_labelled_by_their_options():
    curve = gap_records([_record(1)])
    trials = gap_trials(_table([{"gap_curve": curve, "bn_momentum": 0.01},
                                {"gap_curve": curve, "bn_momentum": 0.1}]))
    assert [t.group for t in trials] == ["adam, bn 0.01, dropout 0", "adam, bn 0.1, dropout 0"]


def test_more_settings_than_the_limit_are_a_search_not_groups():
    curve = gap_records([_record(1)])
    rows = [{"gap_curve": curve, "dropout": i / 100} for i in range(MAX_GROUPS + 1)]
    assert {t.group for t in gap_trials(_table(rows))} == {None}


def test_sgd_momenta_enter_the_label_only_when_they_differ():
    row = {"optimizer": "sgd", "momentum": 0.5, "bn_momentum": 0.1, "dropout": 0.0}
    assert setting_label(row) == "sgd, bn 0.1, dropout 0"
    assert setting_label(row, with_momentum=True) == "sgd, bn 0.1, dropout 0, momentum 0.5"


def test_what_a_model_contains_is_read_from_its_dropout_and_its_split():
    plain, split = gap_records([_record(1)]), gap_records([_record(1, split=True)])
    trials = gap_trials(_table([{"gap_curve": plain, "dropout": 0.0},
                                {"gap_curve": plain, "dropout": 0.3},
                                {"gap_curve": split, "dropout": 0.3}]))
    assert [(t.has_batchnorm, t.has_dropout) for t in trials] == \
        [(True, False), (False, True), (True, True)]


def test_a_model_without_dropout_whose_mode_part_is_zero_has_no_batchnorm():
    """Found by a first user: a factory without BatchNorm had its (zero) mode part called
    BatchNorm statistics and its settings labelled with a BatchNorm momentum."""
    flat = [{**r, "gap_mode": 0.0} for r in gap_records([_record(1), _record(2)])]
    noise = [{**r, "gap_mode": 2.1e-08} for r in flat]  # an earlier version's rounding
    moving = gap_records([_record(1), _record(2)])
    for curve in (flat, noise):
        trials = gap_trials(_table([{"gap_curve": curve, "dropout": 0.0},
                                    {"gap_curve": curve, "dropout": 0.5}]))
        assert [(t.has_batchnorm, t.has_dropout) for t in trials] == [(False, False),
                                                                      (False, True)]
        assert [t.group for t in trials] == ["adam, dropout 0", "adam, dropout 0.5"]
    (trial,) = gap_trials(_table([{"gap_curve": moving, "dropout": 0.0}]))
    assert trial.has_batchnorm


def test_the_document_has_no_gap_block_without_measured_trials():
    table = _table([{"gap_curve": None}])
    assert analyze(table, study_name="s", early_epochs=1)["gap"] is None
