"""Landscape results on finished trials (RDB and journal storages) and the sharpness figure."""

from __future__ import annotations

import optuna
import pytest
from matplotlib.collections import PathCollection
from matplotlib.container import ErrorbarContainer

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
        points = sorted(tuple(p) for c in ax.collections if isinstance(c, PathCollection)
                        for p in c.get_offsets())
        assert points == sorted((r[column], r["sharpness"]) for r in rows[:2])
        assert ax.get_xscale() == "log"
        assert sorted(t.get_text() for t in ax.texts) == ["0", "1"]  # trial numbers
    assert [t.get_text() for t in by_size.get_xticklabels()] == ["32", "128"]
    assert fig._suptitle.get_text().endswith("(2 trials, 0 settings with replicates)")


def test_replicates_of_one_setting_get_their_mean_and_interval():
    """Three seeds of (batch 32, wd 0) and two of (batch 512, wd 5e-4), as Li et al. compare."""
    small = [0.010, 0.012, 0.014]
    large = [0.030, 0.034]
    rows = [{"trial_number": i, "sharpness": v, "batch_size": 32, "weight_decay": 0.0,
             "penalty_mode": "coupled"} for i, v in enumerate(small)]
    rows += [{"trial_number": 3 + i, "sharpness": v, "batch_size": 512, "weight_decay": 5e-4,
              "penalty_mode": "coupled"} for i, v in enumerate(large)]
    fig = build_sharpness_figure(rows)
    by_size, by_decay = fig.axes
    assert by_decay.get_xscale() == "symlog"  # weight decay 0 is on the axis
    for ax, xs in ((by_size, (32, 512)), (by_decay, (0.0, 5e-4))):
        bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        means = sorted((float(b.lines[0].get_xdata()[0]), float(b.lines[0].get_ydata()[0]))
                       for b in bars)
        assert [m[0] for m in means] == pytest.approx(list(xs))
        assert [m[1] for m in means] == pytest.approx([0.012, 0.032])
        (low, high) = sorted(bars, key=lambda b: b.lines[0].get_xdata()[0])[0].lines[1]
        # t(0.975, 2) * sd / sqrt(3) around 0.012, computed here without the code under test
        half = 4.302653 * 0.002 / 3**0.5
        assert (low.get_ydata()[0], high.get_ydata()[0]) == pytest.approx(
            (0.012 - half, 0.012 + half), rel=1e-4)
    assert "2 settings with replicates" in fig._suptitle.get_text()
