"""The first-screen line of each size question (study.analysis.answer.headline): its words
follow the interval, never say more than it does."""

from __future__ import annotations

from study.analysis.answer import headline, paragraph
from study.analysis.verdict import MIN_TRIALS


def _block(total: tuple[float, float, float], *, data: tuple[float, float, float],
           code: str = "no-increase", tolerance: float | None = 0.0235) -> dict:
    def effect(values):
        return {"estimate": values[0], "ci95": [values[1], values[2]]}

    penalty = tuple(t - d for t, d in zip(total, data, strict=True))
    verdict = {"code": code, **({"tolerance": tolerance} if tolerance is not None else {})}
    return {"question": "init", "n_trials_used": MIN_TRIALS, "verdict": verdict,
            "decomposition": {"width_effect_total": effect(total),
                              "width_effect_data": effect(data),
                              "width_effect_penalty": effect(penalty)}}


def test_no_increase_whose_interval_allows_a_small_rise_does_not_say_lower():
    line = headline(_block((-0.02, -0.0613, 0.0213), data=(-0.026, -0.067, 0.015)))
    assert line.startswith("At initialization: no increase. Bigger models start lower or "
                           "negligibly higher (-0.0200 [-0.0613, +0.0213] per decade; a rise "
                           "under +0.024, 1% of the loss, is negligible)")  # the verdict's digits
    assert "start lower (" not in line
    rising = headline(_block((0.01, -0.0113, 0.0313), data=(0.004, -0.037, 0.045)))
    assert "Bigger models start at most negligibly higher (+0.010 [-0.011, +0.031]" in rising


def test_a_falling_data_part_at_initialization_is_a_lower_start_not_a_faster_fit():
    # Found by a first user: nothing is fitted before the first update.
    block = _block((-0.05, -0.08, -0.01), data=(-0.06, -0.09, -0.02))
    assert headline(block).endswith("per decade): their data loss starts lower; the L2 penalty "
                                    "adds +0.0100.")
    early = headline({**block, "question": "early"})
    assert "per decade): they fit the data faster; the L2 penalty" in early


def test_no_increase_whose_interval_lies_below_zero_says_lower():
    line = headline(_block((-0.05, -0.08, -0.01), data=(-0.06, -0.09, -0.02)))
    assert "Bigger models start lower (-0.0500 [-0.0800, -0.0100] per decade)" in line
    assert "negligibly" not in line


def _short_of_the_sizes(block: dict) -> dict:
    return {**block, "reference": {"span": {"extrapolated": [True, True],
                                            "shortfall_decades": 0.58,
                                            "reached_widths": [5, 20]}}}


def test_the_paragraph_says_the_trials_fell_short_only_of_an_estimated_effect():
    estimated = _short_of_the_sizes(_block((0.1, 0.05, 0.15), data=(0.02, -0.03, 0.07),
                                           code="inconclusive"))
    none = {**_short_of_the_sizes(estimated), "decomposition": {},
            "verdict": {"code": "inconclusive", "why": "no size effect could be estimated"}}
    assert "extrapolated over 0.58 decades" in paragraph({"init": estimated}, early_epochs=1,
                                                           design={})
    text = paragraph({"init": none}, early_epochs=1, design={})
    assert "no size effect could be estimated" in text and "extrapolated" not in text


def test_the_paragraph_names_the_verdict_in_words():
    text = paragraph({"init": _block((-0.05, -0.08, -0.01), data=(-0.06, -0.09, -0.02))},
                     early_epochs=1, design={})
    assert "No increase: " in text and "no-increase" not in text


def test_an_unsettled_size_effect_still_names_the_threshold_weight_decay():
    block = {**_block((-0.017, -0.059, 0.025), data=(-0.022, -0.064, 0.02),
                      code="inconclusive"),
             "threshold": {"status": "inside", "estimate": 7.7e-4, "ci95": [None, 2.1e-3]}}
    line = headline(block)
    assert line.startswith("At initialization: inconclusive. Cannot tell yet whether bigger "
                           "models start higher: -0.0170 [-0.0590, +0.0250] per decade holds "
                           "both a fall and a rise.")
    # With its interval, as the paragraph gives it (found by a new user: a bare threshold
    # read as settled after "inconclusive").
    assert line.endswith(" They would start higher above weight decay 7.7e-04 (95% CI up to "
                         "2.1e-03).")


def _gap() -> dict:
    from study.analysis.gap import GapTrial, gap_block

    def record(epoch: int, gap: float) -> dict:
        return {"epoch": epoch, "data_loss": 1.0, "val_loss": 1.0 + gap, "gap_timing": gap,
                "gap_mode": 0.0, "gap_generalization": 0.0}

    return gap_block([GapTrial([record(1, -0.5 + j)], False, False) for j in (-0.01, 0, 0.01)])


def test_the_gap_line_leads_where_the_size_question_was_not_asked():
    from study.analysis.command import answer_text
    from study.analysis.gap_text import short_line

    gap = _gap()
    asked = {"headline": "At initialization: x.\nOver the first epoch: y.", "detail": "d"}
    assert answer_text({**asked, "size_asked": True}, gap).splitlines()[:3] == [
        "At initialization: x.", "Over the first epoch: y.", short_line(gap)]
    one_size = {**asked, "size_asked": False, "why": "every trial has one size"}
    assert answer_text(one_size, gap).splitlines() == [
        short_line(gap), "Model size: not asked. Every trial has one size."]


def test_the_line_qualifies_a_threshold_as_the_paragraph_does():
    # Found by a first user: the line said "(extrapolated)" where the paragraph said "exact at
    # initialization", and named a threshold where the analysis found none.
    base = _block((-0.05, -0.08, -0.01), data=(-0.06, -0.09, -0.02))
    outside = {"status": "outside", "estimate": 2.2e-3, "ci95": [1e-3, 4e-3],
               "studied_range": [1e-5, 1e-4]}
    init = headline({**base, "threshold": outside})
    assert init.endswith("They would start higher above weight decay 2.2e-03 (95% CI 1.0e-03 "
                         "to 4.0e-03; outside the weight decays studied; exact at "
                         "initialization).")
    early = headline({**base, "question": "early", "threshold": outside})
    assert early.endswith("They would be higher above weight decay 2.2e-03 (95% CI 1.0e-03 to "
                          "4.0e-03; outside the weight decays studied; extrapolated).")
    never = {"status": "never", "estimate": None, "extrapolated": 2e-2,
             "studied_range": [1e-5, 1e-3]}
    line = headline({**base, "question": "early", "threshold": never})
    assert line.endswith("If the data part stayed as at weight decay 1.0e-03, they would be "
                         "higher above about 2.0e-02 (extrapolated).")
    assert "would be higher above weight decay" not in line
    assert "would" not in headline({**base, "threshold": {"status": "never"}})


def test_a_reference_batch_size_between_the_trained_ones_is_called_so():
    # Found by two users: "batch size 45.3" read as a size some trial used.
    from study.analysis.answer import where_text

    assert "batch size 45.3 (the geometric middle of the sizes trained)" in where_text(
        {"reference": {"batch_size": 45.2548}, "n_trials_used": 8})
    assert "batch size 64, 8 trials" in where_text(
        {"reference": {"batch_size": 64.0}, "n_trials_used": 8})


def test_a_penalty_line_opens_one_parenthesis_at_a_time():
    """Found by a first user: "carries 98% of it (95% CI 92% to 106%) (data part ...)"."""
    block = _block((0.2, 0.15, 0.25), data=(0.004, -0.01, 0.018), code="penalty")
    with_ci = {**block, "decomposition": {**block["decomposition"], "penalty_share": {
        "estimate": 0.98, "ci95": [0.92, 1.06]}}}
    line = headline(with_ci)
    assert "carries 98% of it (95% CI 92% to 106%); data part " in line
    assert ") (" not in line
    without = headline(block)  # no share: "most of it (data part ...)"
    assert "carries most of it (data part " in without
