"""The gap figure (study.report.gap_figure), read as data: its bars, lines, marks and labels."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import BarContainer, ErrorbarContainer

from study.analysis.gap import GapTrial, gap_block
from study.analysis.gap_simulation import GAP_SCENARIOS, simulate_gap
from study.report.gap_figure import PART_LABELS, build_gap_figure, gap_figure

SCENARIO = {s.name: s for s in GAP_SCENARIOS}


def _block(name: str, seed: int = 1) -> dict:
    return gap_block(simulate_gap(SCENARIO[name], seed)[0])


@pytest.fixture(scope="module")
def keras() -> dict:
    return _block("keras batchnorm")


def _bars(ax) -> dict[str, BarContainer]:
    return {c.get_label(): c for c in ax.containers if isinstance(c, BarContainer)}


def _estimates(block: dict, key: str) -> list[float]:
    return [e[key]["estimate"] for e in block["epochs"]]


def test_bar_heights_are_the_blocks_part_estimates(keras):
    (ax,) = build_gap_figure(keras).axes
    bars = _bars(ax)
    assert list(bars) == [PART_LABELS[k] for k in ("timing", "mode_batchnorm",
                                                   "generalization")]
    for key in ("timing", "mode_batchnorm", "generalization"):
        heights = [p.get_height() for p in bars[PART_LABELS[key]]]
        assert np.allclose(heights, _estimates(keras, key))
        assert [p.get_x() + p.get_width() / 2 for p in bars[PART_LABELS[key]]] == [
            e["epoch"] for e in keras["epochs"]]


def test_negative_parts_stack_below_zero_and_positive_ones_above(keras):
    (ax,) = build_gap_figure(keras).axes
    for container in _bars(ax).values():
        for patch in container:
            if patch.get_height() < 0:
                assert patch.get_y() <= 0
            else:
                assert patch.get_y() >= 0
    # at each epoch the stacks reach the sums of the positive and of the negative parts
    patches = [p for c in _bars(ax).values() for p in c]
    for i, entry in enumerate(ax.containers[0]):
        x = entry.get_x()
        column = [p for p in patches if p.get_x() == x]
        top = max(p.get_y() + max(p.get_height(), 0) for p in column)
        parts = [keras["epochs"][i][k]["estimate"] for k in ("timing", "mode_batchnorm",
                                                               "generalization")]
        assert top == pytest.approx(sum(v for v in parts if v > 0))


def test_the_loss_lines_are_the_mean_losses(keras):
    (ax,) = build_gap_figure(keras).axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    epochs = [e["epoch"] for e in keras["epochs"]]
    train = lines["training data loss (epoch mean)"]
    val = lines["validation loss"]
    assert list(train.get_xdata()) == epochs and list(val.get_xdata()) == epochs
    assert np.allclose(train.get_ydata(), _estimates(keras, "train_data_loss"))
    assert np.allclose(val.get_ydata(), _estimates(keras, "val_loss"))
    assert train.get_linestyle() == "-" and val.get_linestyle() == "--"


def test_the_gap_is_drawn_with_its_interval(keras):
    (ax,) = build_gap_figure(keras).axes
    (marks,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    point, _, (bars,) = marks.lines
    assert np.allclose(point.get_ydata(), _estimates(keras, "gap"))
    segments = bars.get_segments()
    for segment, entry in zip(segments, keras["epochs"], strict=True):
        assert np.allclose(sorted(segment[:, 1]), entry["gap"]["ci95"])


def test_the_closing_epoch_is_marked(keras):
    (ax,) = build_gap_figure(keras).axes
    closes = keras["closes_at_epoch"]
    assert closes is not None
    (mark,) = [line for line in ax.get_lines() if line.get_label().startswith("lag")]
    assert list(mark.get_xdata()) == [closes, closes]
    assert f"lag closes at epoch {closes}" in ax.get_title()


def test_title_legend_and_labels_are_there(keras):
    fig = build_gap_figure(keras)
    (ax,) = fig.axes
    assert fig._suptitle.get_text() == "Why does validation lag training?"
    assert keras["verdict"]["code"] in ax.get_title()
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("epoch", "loss (nats)")
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:3] == [PART_LABELS[k] for k in ("timing", "mode_batchnorm",
                                                   "generalization")]
    assert "validation loss" in legend and "gap = validation − training (95% CI)" in legend


def test_a_split_draws_batchnorm_and_dropout_in_place_of_mode():
    block = _block("keras batchnorm and dropout")
    (ax,) = build_gap_figure(block).axes
    bars = _bars(ax)
    assert PART_LABELS["mode"] not in bars
    heights = [p.get_height() for p in bars[PART_LABELS["mode_dropout"]]]
    assert np.allclose(heights, _estimates(block, "mode_dropout"))
    assert all(h < 0 for h in heights)


def test_a_model_without_either_layer_draws_mode_itself():
    (ax,) = build_gap_figure(_block("overfitting late")).axes
    assert PART_LABELS["mode"] in _bars(ax)


def test_one_panel_per_group_titled_by_its_setting():
    trials = []
    for name in ("keras batchnorm", "dropout", "no gap"):
        trials += [GapTrial(t.curve, t.has_batchnorm, t.has_dropout, name)
                   for t in simulate_gap(SCENARIO[name], 3)[0]]
    block = gap_block(trials)
    fig = build_gap_figure(block)
    visible = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]  # not right axes
    assert len(visible) == 3
    for ax, (label, group) in zip(visible, block["groups"].items(), strict=True):
        assert ax.get_title().startswith(f"{label}: {group['verdict']['code']} (16 trials)\n")
        heights = [p.get_height() for p in _bars(ax)[PART_LABELS["timing"]]]
        assert np.allclose(heights, _estimates(group, "timing"))


def test_every_text_stays_inside_the_figure():
    trials = []
    for name in ("keras batchnorm", "pytorch batchnorm", "dropout", "no gap"):
        trials += [GapTrial(t.curve, t.has_batchnorm, t.has_dropout, f"adam, {name}")
                   for t in simulate_gap(SCENARIO[name], 2)[0]]
    for block in (gap_block(trials), _block("keras batchnorm")):
        fig = build_gap_figure(block)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        box = fig.bbox
        parts = [ax.get_tightbbox(renderer) for ax in fig.axes if ax.get_visible()]
        parts += [legend.get_window_extent(renderer) for legend in fig.legends]
        parts.append(fig._suptitle.get_window_extent(renderer))
        assert all(p.x0 >= box.x0 - 1 and p.x1 <= box.x1 + 1 and p.y0 >= box.y0 - 1
                   and p.y1 <= box.y1 + 1 for p in parts)
        # the legend sits below every panel, never over data
        legend = fig.legends[0].get_window_extent(renderer)
        assert all(legend.y1 <= ax.get_tightbbox(renderer).y0 + 1
                   for ax in fig.axes if ax.get_visible())


def test_one_trial_draws_its_estimates_without_intervals():
    trials, _ = simulate_gap(SCENARIO["keras batchnorm"], 4)
    block = gap_block(trials[:1])
    (ax,) = build_gap_figure(block).axes
    heights = [p.get_height() for p in _bars(ax)[PART_LABELS["mode_batchnorm"]]]
    assert np.allclose(heights, _estimates(block, "mode_batchnorm"))


@pytest.mark.parametrize("block", [None, {}, gap_block([])])
def test_nothing_to_draw_gives_no_figure_and_a_message_png(block):
    assert build_gap_figure(block) is None
    assert gap_figure(block).startswith(b"\x89PNG")


def test_the_png_is_a_png(keras):
    assert gap_figure(keras).startswith(b"\x89PNG")


def test_a_title_says_unclear_where_a_later_epoch_cannot_tell_as_the_table_does():
    """Found by a user: titles read "no lag shown; epoch 3 cannot tell" beside a table's "no
    lag": a last epoch that cannot tell is "lag unclear at epoch 3" in both."""
    from study.analysis.gap_text import gap_table_rows
    from tests.analysis_tests.test_gap import _below_then_unsure

    block = gap_block(_below_then_unsure())
    ax = build_gap_figure(block).axes[0]
    assert ax.get_title().endswith("; lag unclear at epoch 3)")
    assert gap_table_rows(block)[0]["lag"] == "lag unclear at epoch 3"
    assert "no lag" not in ax.get_title()
    _, labels = ax.get_legend_handles_labels()
    assert not any("closes" in label for label in labels)  # no closing line is drawn either


def test_the_reports_closing_text_says_why_the_last_epoch_cannot_tell():
    from study.report.gap_blocks import _closing_text
    from tests.analysis_tests.test_gap import _below_then_unsure

    text = _closing_text(gap_block(_below_then_unsure()))
    assert text.startswith("Lag unclear at epoch 3, the last any trial reached: whether "
                           "validation lags training there cannot be told (lag +0.10 [-0.20, "
                           "+0.40] against a threshold of 0.05, 3 trials: its interval "
                           "straddles it; ")
    assert "no lag" not in text.lower()


def test_losses_that_would_flatten_a_small_gap_are_left_out_and_named_in_the_title():
    """Found by a user: in a one-epoch size study the losses (2.3 nats) squashed a gap of -0.02
    and its parts into the zero line, under fractional epoch ticks."""
    block = _block("no gap")
    (ax,) = build_gap_figure(block).axes
    assert [line.get_label() for line in ax.get_lines()
            if line.get_label() in ("training data loss (epoch mean)", "validation loss")] == []
    level = block["epochs"][-1]["train_data_loss"]["estimate"]
    assert ax.get_title().endswith(f"; losses about {level:.2g}, off scale)")
    low, high = ax.get_ylim()
    assert high - low < 0.2 * level  # the axis is the gap's, not the losses'
    kept = build_gap_figure(_block("keras batchnorm")).axes[0]
    assert "off scale" not in kept.get_title()
    assert {"training data loss (epoch mean)", "validation loss"} <= {
        line.get_label() for line in kept.get_lines()}


def test_a_single_epoch_gets_one_integer_tick():
    block = _block("no gap")
    one = {**block, "epochs": block["epochs"][:1]}
    (ax,) = build_gap_figure(one).axes
    assert list(ax.get_xticks()) == [1.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1"]
