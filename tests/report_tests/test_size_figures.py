"""The answer's figures, read as data: their axes, lines, labels and where their text lands."""

from __future__ import annotations

import re

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from study.report.size_figures import build_size_effect_figure, build_threshold_figure, log_ticks
from tests.report_tests.factory import make_analysis, make_analysis_v1


@pytest.fixture(scope="module")
def analysis() -> dict:
    return make_analysis()


@pytest.fixture(scope="module")
def size_figure(analysis):
    return build_size_effect_figure(analysis)


@pytest.fixture(scope="module")
def threshold_fig(analysis):
    return build_threshold_figure(analysis)


def _texts_inside(figure) -> list[str]:
    """The parts of the figure (each axes with its drawn titles, labels and tick labels; the
    legends; the title) that stick out of it."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    box = figure.bbox
    parts = {f"axes {i} ({ax.get_title()[:30]})": ax.get_tightbbox(renderer)
             for i, ax in enumerate(figure.axes)}
    parts.update({f"legend {i}": legend.get_window_extent(renderer)
                  for i, legend in enumerate(figure.legends)})
    parts.update({f"text {t.get_text()[:30]}": t.get_window_extent(renderer)
                  for t in figure.texts if t.get_text()})
    if figure._suptitle is not None:
        parts["title"] = figure._suptitle.get_window_extent(renderer)
    return [name for name, extent in parts.items()
            if extent.x0 < box.x0 - 1 or extent.x1 > box.x1 + 1 or extent.y0 < box.y0 - 1
            or extent.y1 > box.y1 + 1]


def test_two_questions_by_three_parts_on_log_axes(size_figure):
    axes = size_figure.axes
    assert len(axes) == 6
    assert all(ax.get_xscale() == "log" for ax in axes)
    titles = [ax.get_title() for ax in axes]
    for title in titles[:3]:
        assert "at initialization" in title and "per decade (95% CI" in title
    for title in titles[3:]:
        assert "over the first epoch" in title
    assert [t.split(",")[0] for t in titles[:3]] == ["Total loss (what is reported)",
                                                    "Data loss", "L2 penalty in the loss"]


def test_every_group_has_its_curve_in_every_panel(size_figure, analysis):
    labels = [g["label"] for g in analysis["curves"]["groups"]]
    for ax in size_figure.axes[3:]:
        assert [line.get_label() for line in ax.get_lines()] == labels
    legend = [t.get_text() for t in size_figure.legends[0].get_texts()]
    assert set(labels) <= set(legend)


def test_the_penalty_curves_never_go_below_zero(size_figure):
    for ax in (size_figure.axes[2], size_figure.axes[5]):
        for line in ax.get_lines():
            assert np.all(np.asarray(line.get_ydata()) >= 0), line.get_label()


def test_a_curve_runs_through_its_own_trials(size_figure, analysis):
    # the data panel of the early window: each group's adjusted trials sit around its curve
    points = analysis["curves"]["points"]
    ax = size_figure.axes[4]
    for g, line in enumerate(ax.get_lines()):
        xs = np.asarray(points["n_params"])[np.asarray(points["group"]) == g]
        ys = np.asarray(points["data"])[np.asarray(points["group"]) == g]
        curve = np.interp(np.log10(xs), np.log10(line.get_xdata()), line.get_ydata())
        assert abs(np.median(ys - curve)) < 0.5 * np.std(ys) + 1e-9, line.get_label()


TICK = re.compile(r"(\d(\.\d+)?×)?10[⁻⁰¹²³⁴⁵⁶⁷⁸⁹]+")


def test_log_axis_labels_are_powers_of_ten_that_do_not_crowd(size_figure):
    canvas = FigureCanvasAgg(size_figure)
    canvas.draw()
    for ax in size_figure.axes:
        shown = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        lo, hi = ax.get_xlim()
        assert 2 <= len(shown) <= 7, shown
        assert all(TICK.fullmatch(t) for t in shown), shown
        assert all(lo <= x <= hi for x in ax.get_xticks())


@pytest.mark.parametrize(("lo", "hi", "expected"), [
    (1.5e3, 7e5, [1e4, 1e5]),                       # two powers of ten in view: only those
    (1.79e3, 6.18e4, [2e3, 5e3, 1e4, 2e4, 5e4]),    # one: 1-2-5 multiples
    (282, 885, [300, 500, 700]),                    # none, under half a decade: finer
    (1e-5, 1e-2, [1e-5, 1e-4, 1e-3, 1e-2]),         # the ends themselves count
])
def test_log_ticks_show_at_least_two_labels_at_any_range(lo, hi, expected):
    assert np.allclose(log_ticks(lo, hi), expected)


def test_log_ticks_never_crowd_over_many_decades():
    ticks = log_ticks(1e-12, 1e12)
    assert 2 <= len(ticks) <= 7 and all(np.isclose(np.log10(t) % 1, 0) for t in ticks)


@pytest.mark.parametrize(("lo", "hi"), [(0, 10), (5, 5), (10, 1)])
def test_log_ticks_of_an_empty_or_invalid_range_are_none(lo, hi):
    assert log_ticks(lo, hi) == []


@pytest.fixture(scope="module")
def small_analysis() -> dict:
    from study.analysis import analyze
    from study.analysis.simulation import SCENARIOS, simulate

    return analyze(simulate(SCENARIOS[0], 0).head(4), study_name="small", early_epochs=1,
                   sampler="random")


def test_panels_without_a_fit_say_why_on_bare_axes(small_analysis):
    figure = build_size_effect_figure(small_analysis)
    assert figure is not None
    empty = [ax for ax in figure.axes if not ax.get_lines()]
    assert empty
    for ax in empty:
        assert [t.get_text() for t in ax.texts] == ["4 usable trials: too few to fit"]
        assert list(ax.get_xticks()) == [] and list(ax.get_yticks()) == []


def test_a_threshold_legend_entry_only_when_a_threshold_is_drawn(analysis, threshold_fig):
    import copy

    entry = "threshold: total turns positive (95% CI)"
    drawn = [t.get_text() for t in threshold_fig.legends[0].get_texts()]
    assert (entry in drawn) == any(ax.texts for ax in threshold_fig.axes)
    none_found = copy.deepcopy(analysis)
    for block in (none_found, none_found["init"]):
        block["threshold"]["estimate"] = None
    figure = build_threshold_figure(none_found)
    assert entry not in [t.get_text() for t in figure.legends[0].get_texts()]
    assert not any(ax.texts for ax in figure.axes)


def test_the_threshold_label_sits_on_a_box_over_the_curves(threshold_fig):
    # Found by a first user: a curve crossing "threshold 1.8e-02" made it unreadable.
    labels = [t for ax in threshold_fig.axes for t in ax.texts
              if t.get_text().startswith("threshold ")]
    assert labels
    for label in labels:
        box = label.get_bbox_patch()
        assert box is not None and box.get_facecolor()[:3] == (1.0, 1.0, 1.0)
        assert label.get_zorder() > max(line.get_zorder() for line in label.axes.get_lines())


def test_no_text_is_clipped(size_figure, threshold_fig):
    assert _texts_inside(size_figure) == []
    assert _texts_inside(threshold_fig) == []


def test_the_threshold_is_marked_where_the_analysis_found_it(threshold_fig, analysis):
    for ax, block in zip(threshold_fig.axes, (analysis["init"], analysis), strict=True):
        found = block["threshold"]
        verticals = [line.get_xdata()[0] for line in ax.get_lines()
                     if len(set(np.atleast_1d(line.get_xdata()))) == 1]
        if found["estimate"] is not None:
            assert any(np.isclose(v, found["estimate"]) for v in verticals)
            assert any("threshold" in t.get_text() for t in ax.texts)
        assert ax.get_xscale() == "log"
        total = ax.get_lines()[0]
        assert np.allclose(total.get_xdata(), block["effect_curve"]["weight_decay"])


def test_the_threshold_figure_names_every_part_in_its_legend(threshold_fig):
    legend = [t.get_text() for t in threshold_fig.legends[0].get_texts()]
    assert {"total, with 95% CI", "data part", "L2 penalty part"} <= set(legend)


def test_an_old_analysis_has_no_answer_figures():
    assert build_size_effect_figure(make_analysis_v1()) is None
    assert build_threshold_figure(make_analysis_v1()) is None


def _measured_points(ax) -> list[tuple[float, float, float]]:
    """``(weight decay, lo, hi)`` of each measured point's error bar."""
    out = []
    for collection in ax.collections:
        for segment in getattr(collection, "get_segments", lambda: [])():
            if len(segment) == 2 and np.isclose(segment[0][0], segment[1][0]):
                out.append((segment[0][0], min(segment[0][1], segment[1][1]),
                            max(segment[0][1], segment[1][1])))
    return out


def test_every_measured_point_and_its_interval_lies_inside_the_y_axis(threshold_fig, analysis):
    for ax, block in zip(threshold_fig.axes, (analysis["init"], analysis), strict=True):
        bottom, top = ax.get_ylim()
        points = _measured_points(ax)
        assert len(points) == len(block["by_weight_decay"])
        for _, lo, hi in points:
            assert bottom <= lo and hi <= top
        assert bottom <= 0 <= top


def test_the_y_axis_is_not_much_wider_than_what_it_shows(threshold_fig):
    for ax in threshold_fig.axes:
        bottom, top = ax.get_ylim()
        band = [v[1] for c in ax.collections if hasattr(c, "get_paths")
                for p in c.get_paths() for v in p.vertices]
        data = list(np.atleast_1d(ax.get_lines()[1].get_ydata()))  # the data part's line
        shown = np.asarray([0.0, *band, *data], dtype=float)
        shown = shown[np.isfinite(shown)]
        # padded by 8% of what it shows, not scaled to a multiple of it
        assert top - bottom <= 1.2 * (shown.max() - shown.min())


def test_both_panels_share_one_weight_decay_axis(threshold_fig):
    left, right = threshold_fig.axes[:2]
    assert left.get_xlim() == pytest.approx(right.get_xlim())


def test_a_panel_without_a_threshold_says_so_in_its_title(analysis):
    import copy

    never = copy.deepcopy(analysis)
    never["threshold"].update(estimate=None, ci95=[None, None], status="never")
    figure = build_threshold_figure(never)
    assert "no threshold in the studied range" in figure.axes[1].get_title()
    assert "total never rises" in figure.axes[1].get_title()
    assert "no threshold" not in figure.axes[0].get_title() or \
        analysis["init"]["threshold"]["estimate"] is None
