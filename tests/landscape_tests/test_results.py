"""Landscape results on finished trials (RDB and journal storages) and the sharpness figure."""

from __future__ import annotations

import optuna
import pytest

from study.landscape.plots import build_sharpness_figure, sharpness_figure
from study.landscape.results import (
    ATTR_FLATNESS,
    ATTR_SHARPNESS,
    landscape_rows,
    store_probe_results,
)
from study.storages import create_storage

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _tiny_study(storage) -> optuna.Study:
    study = optuna.create_study(storage=storage, study_name="tiny")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    return study


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_probe_results_of_a_finished_trial_are_kept_and_replaced(tmp_path, kind):
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'tiny.db'}"
        storage = create_storage(url)  # the service's RDB storage
    else:
        url = f"journal:{tmp_path / 'journal.log'}"
        storage = create_storage(url)
    study = _tiny_study(storage)
    store_probe_results(study, study.trials[0], {ATTR_SHARPNESS: 0.5, ATTR_FLATNESS: 0.25})
    store_probe_results(study, study.trials[0], {ATTR_SHARPNESS: 0.75, ATTR_FLATNESS: 0.3})
    fresh = optuna.load_study(study_name="tiny", storage=create_storage(url))
    (row,) = landscape_rows(fresh)
    assert (row["trial_number"], row["sharpness"], row["flatness_radius"]) == (0, 0.75, 0.3)
    assert row["width"] is None and fresh.trials[0].state.is_finished()


def test_rows_still_read_probes_kept_on_the_trial_by_earlier_versions(tmp_path):
    study = optuna.create_study(storage=create_storage(f"sqlite:///{tmp_path / 'old.db'}"))
    trial = study.ask()
    trial.set_user_attr(ATTR_SHARPNESS, 0.1)  # written while it ran, as old probes did
    study.tell(trial, 1.0)
    assert [r["sharpness"] for r in landscape_rows(study)] == [0.1]


def test_the_code_uses_no_private_optuna_session():
    from tests.conftest import REPO

    hits = [p for p in (REPO / "study").rglob("*.py") if "_create_scoped_session" in p.read_text()]
    assert hits == []


def test_sharpness_figure_accepts_rows_and_empty_input():
    rows = [{"trial_number": 0, "sharpness": 0.01, "batch_size": 32, "weight_decay": 1e-4,
             "penalty_mode": "coupled"},
            {"number": 1, "sharpness": 0.02, "batch_size": 128, "weight_decay": 0.0},
            {"trial_number": 2, "sharpness": None, "batch_size": 64, "weight_decay": 1e-3}]
    assert sharpness_figure(rows).startswith(PNG_MAGIC)
    assert sharpness_figure([]).startswith(PNG_MAGIC)
    pandas = pytest.importorskip("pandas")
    assert sharpness_figure(pandas.DataFrame(rows)).startswith(PNG_MAGIC)


def test_the_sharpness_figure_plots_each_trial_where_its_figures_say():
    rows = [{"trial_number": 0, "sharpness": 0.01, "batch_size": 32, "weight_decay": 1e-4,
             "penalty_mode": "coupled"},
            {"trial_number": 1, "sharpness": 0.02, "batch_size": 128, "weight_decay": 1e-2,
             "penalty_mode": "l2-in-loss"},
            {"trial_number": 2, "sharpness": None, "batch_size": 64, "weight_decay": 1e-3}]
    fig = build_sharpness_figure(rows)
    by_size, by_decay = fig.axes
    for ax, column in ((by_size, "batch_size"), (by_decay, "weight_decay")):
        points = sorted(tuple(p) for c in ax.collections for p in c.get_offsets())
        assert points == sorted((r[column], r["sharpness"]) for r in rows[:2])
        assert ax.get_xscale() == "log"
        assert sorted(t.get_text() for t in ax.texts) == ["0", "1"]  # trial numbers
    assert [t.get_text() for t in by_size.get_xticklabels()] == ["32", "128"]
    assert fig._suptitle.get_text().endswith("(2 trials)")
