"""The report's training-curve and importance figures, read as data (lines, bars, labels)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from study.report.figures import build_curves_figure, build_importance_figure
from tests.report_tests.factory import make_importance, make_table


def _curve_rows(table: pd.DataFrame) -> list[np.ndarray]:
    return [np.asarray(c, dtype=float) for c in table["curve"] if c is not None]


def test_curves_draw_total_solid_and_data_dashed_for_each_chosen_trial():
    table = make_table(40)
    fig = build_curves_figure(table, max_trials=5)
    (ax, _colorbar) = fig.axes
    lines = ax.get_lines()
    solid = [line for line in lines if line.get_linestyle() == "-"]
    dashed = [line for line in lines if line.get_linestyle() == "--"]
    assert len(solid) == len(dashed) == 5
    curves = _curve_rows(table)
    for total, data in zip(solid, dashed, strict=True):
        # each drawn pair is one trial's (loss, data_loss) columns, epoch by epoch
        match = [c for c in curves if len(c) == len(total.get_ydata())
                 and np.allclose(c[:, 0], total.get_ydata())]
        assert match and np.allclose(match[0][:, 1], data.get_ydata())
        assert list(total.get_xdata()) == list(range(1, len(total.get_ydata()) + 1))
    assert ax.get_xlabel() == "epoch"
    assert "5 of" in ax.get_title()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["total (optimized)",
                                                                   "data loss"]


def test_curves_figure_is_none_without_curves():
    assert build_curves_figure(pd.DataFrame({"n_params": [10]})) is None
    assert build_curves_figure(None) is None


def test_importance_bars_are_the_importances_per_target_panel():
    frame = make_importance()
    fig = build_importance_figure(frame)
    panels = [ax for ax in fig.axes if ax.patches]
    assert len(panels) == 2  # objective and early_loss
    for ax in panels:
        target = ax.get_title().split()[1]  # "target: objective (n = 54 trials)"
        rows = frame[(frame["target"] == target) & frame["importance"].notna()]
        widths = sorted(round(p.get_width(), 9) for p in ax.patches if p.get_width() > 0)
        assert widths == sorted(round(v, 9) for v in rows["importance"])
        labels = {t.get_text() for t in ax.get_yticklabels()}
        assert {"lr", "width", "weight_decay", "batch_size"} <= {lab.split(" ")[0]
                                                                 for lab in labels}
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("fanova" in text for text in legend)
    assert "derived from width (not searched)" in legend


def test_curves_start_at_epoch_zero_with_the_loss_at_initialization():
    table = make_table(12)
    table["init_loss"] = 2.5 + 0.01 * table.index
    table["init_data_loss"] = 2.4 + 0.01 * table.index
    fig = build_curves_figure(table, max_trials=4)
    ax = fig.axes[0]
    solid = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    starts = set(np.round(table["init_loss"], 9))
    for total, data in zip(solid, dashed, strict=True):
        assert total.get_xdata()[0] == 0 and len(total.get_xdata()) >= 2  # never a lone dot
        assert round(float(total.get_ydata()[0]), 9) in starts
        assert round(float(data.get_ydata()[0] - total.get_ydata()[0]), 9) == -0.1
    assert ax.get_xlim()[0] < 0 < ax.get_xlim()[1]
    assert "initialization" in ax.get_xlabel()


def test_the_curves_legend_lies_outside_the_plotting_area():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = build_curves_figure(make_table(20), max_trials=5)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    plot = fig.axes[0].get_window_extent(renderer)
    legend = fig.axes[0].get_legend().get_window_extent(renderer)
    assert not plot.overlaps(legend)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["total (optimized)",
                                                                  "data loss"]


def test_importance_names_the_objective_and_a_deterministic_evaluator():
    fig = build_importance_figure(make_importance(), objective="val_loss")
    titles = [ax.get_title() for ax in fig.axes if ax.patches]
    assert any(t.startswith("target: val_loss (the objective)") for t in titles)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert not any("no seed" in text for text in legend)
    assert any(text.startswith("ped-anova (deterministic") for text in legend)
    assert all("sum to 1" in ax.get_xlabel() for ax in fig.axes if ax.patches)


def test_overlapping_intervals_say_no_ranking_can_be_read():
    frame = make_importance()
    wide = frame.assign(ci_lo=0.0, ci_hi=1.0)
    fig = build_importance_figure(wide)
    assert all("no ranking can be read" in ax.get_title() for ax in fig.axes if ax.patches)
    narrow = frame.assign(ci_lo=frame["importance"] - 1e-6, ci_hi=frame["importance"] + 1e-6)
    fig = build_importance_figure(narrow)
    assert not any("no ranking" in ax.get_title() for ax in fig.axes if ax.patches)


def test_an_evaluator_that_could_not_run_says_why_in_the_legend():
    frame = make_importance()
    short = "9 usable trials for objective, ped-anova needs at least 10"
    skipped = (frame["target"] == "objective") & (frame["evaluator"] == "ped-anova")
    frame.loc[skipped, ["importance", "ci_lo", "ci_hi"]] = math.nan
    frame.loc[skipped, "error"] = short
    fig = build_importance_figure(frame)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("ped-anova" in t and t.endswith(": not computed (9 usable trials, needs 10)")
               for t in legend), legend
    assert not any("failed" in t for t in legend)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "not computed (see legend)" in texts and "error (see table)" not in texts


def test_an_evaluator_that_could_not_run_at_all_draws_no_blank_row():
    frame = make_importance()
    skipped = (frame["target"] == "objective") & (frame["evaluator"] == "ped-anova")
    whole = frame[skipped].iloc[[0]].assign(param="", importance=math.nan, ci_lo=math.nan,
                                            ci_hi=math.nan, derived=False,
                                            error="5 usable trials for objective, ped-anova "
                                                  "needs at least 10")
    fig = build_importance_figure(pd.concat([frame[~skipped], whole], ignore_index=True))
    ticks = [t.get_text() for ax in fig.axes if ax.patches for t in ax.get_yticklabels()]
    assert "" not in ticks and "lr" in ticks
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(t.endswith(": not computed (5 usable trials, needs 10)") for t in legend), legend
    # Found by a first user: its swatch had the colour of the other panel's bars.
    swatches = dict(zip(legend, fig.legends[0].get_patches(), strict=True))
    hollow = next(p for t, p in swatches.items() if t.endswith("not computed (5 usable trials, "
                                                                "needs 10)"))
    drawn = next(p for t, p in swatches.items() if t.startswith("early_loss: ped-anova"))
    assert hollow.get_facecolor()[:3] == (1.0, 1.0, 1.0)
    assert hollow.get_edgecolor() == drawn.get_facecolor()
