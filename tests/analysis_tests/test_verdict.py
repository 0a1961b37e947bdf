"""The verdict rules (study.analysis.verdict), each just on both sides of its boundary, with
hand-made estimates; and the verdict's words on simulated studies."""

from __future__ import annotations

import math
import re

import pytest

from study.analysis import analyze
from study.analysis.estimate import Estimate
from study.analysis.simulation import SCENARIOS, simulate
from study.analysis.verdict import MIN_TRIALS, decide, no_increase_tolerance, penalty_share

TOL = 0.02
N = 30


def est(lo: float, hi: float, df: float = math.inf) -> Estimate:
    """An estimate whose 95% interval is exactly [lo, hi] (normal quantile)."""
    half = (hi - lo) / 2
    return Estimate((lo + hi) / 2, half / Estimate(0, 1, df).t_crit, df)


def parts(total, data, penalty) -> dict[str, Estimate]:
    return {"total": est(*total), "data": est(*data), "penalty": est(*penalty)}


def code(total, data, penalty, n: int = N) -> str:
    return decide(parts(total, data, penalty), n=n, tolerance=TOL)["code"]


def test_penalty_when_the_penalty_rises_and_the_data_part_is_ruled_out():
    assert code((0.3, 0.5), (-0.2, -0.1), (0.5, 0.6)) == "penalty"


# The total (0.3, 0.5) rises by 0.4: a part is small at most a fifth of that, 0.08.
FIFTH = 0.2 * 0.4


def test_data_upper_bound_just_below_a_fifth_of_the_rise_says_penalty():
    assert code((0.3, 0.5), (-0.1, FIFTH - 1e-6), (0.3, 0.4)) == "penalty"


def test_data_upper_bound_just_above_a_fifth_of_the_rise_is_inconclusive_not_penalty():
    decision = decide(parts((0.3, 0.5), (-0.1, FIFTH + 1e-6), (0.3, 0.4)), n=N, tolerance=TOL)
    assert decision["code"] == "inconclusive"
    assert "more than a fifth of the rise" in decision["why"]


def test_a_small_rise_judges_the_data_part_by_the_tolerance_instead():
    # rise 0.03: a fifth is 0.006, below the negligible tolerance 0.02, which then applies
    assert code((0.01, 0.05), (-0.1, TOL - 1e-6), (0.02, 0.04)) == "penalty"
    assert code((0.01, 0.05), (-0.1, TOL + 1e-6), (0.02, 0.04)) == "inconclusive"


def test_both_when_each_part_carries_at_least_a_fifth():
    assert code((0.3, 0.5), (0.1, 0.2), (0.2, 0.3)) == "both"


def test_a_data_part_that_rises_but_carries_under_a_fifth_is_not_both():
    assert code((0.3, 0.5), (0.01, 0.1), (0.2, 0.3)) == "inconclusive"


def test_optimization_when_the_penalty_part_is_at_most_a_fifth():
    assert code((0.3, 0.5), (0.3, 0.5), (-0.01, FIFTH - 1e-6)) == "optimization"
    assert code((0.3, 0.5), (0.3, 0.5), (-0.01, FIFTH + 1e-6)) == "inconclusive"


def test_the_penalty_share_is_the_ratio_with_a_fieller_interval():
    share = penalty_share(parts((0.3, 0.5), (-0.1, 0.1), (0.35, 0.45)))
    assert share["estimate"] == pytest.approx(1.0)
    lo, hi = share["ci95"]
    assert lo < 1.0 < hi and hi - lo < 0.8
    # the same share at a tenth of the noise: a tenth of the width, about
    narrow = penalty_share(parts((0.39, 0.41), (-0.01, 0.01), (0.395, 0.405)))
    assert (narrow["ci95"][1] - narrow["ci95"][0]) < (hi - lo) / 5


def test_no_share_of_a_rise_that_is_not_shown():
    assert penalty_share(parts((-0.01, 0.5), (-0.1, 0.1), (0.2, 0.3))) is None
    assert penalty_share(parts((1e-6, 0.5), (-0.1, 0.1), (0.2, 0.3))) is not None


def test_total_upper_bound_just_below_the_tolerance_is_no_increase():
    assert code((-0.1, TOL - 1e-6), (-0.1, 0.0), (0.0, 0.01)) == "no-increase"


def test_total_upper_bound_just_above_the_tolerance_with_zero_inside_is_inconclusive():
    assert code((-0.1, TOL + 1e-6), (-0.1, 0.0), (0.0, 0.01)) == "inconclusive"


def test_total_lower_bound_just_above_zero_is_a_rise():
    assert code((1e-6, 0.2), (-0.1, -0.05), (0.1, 0.25)) == "penalty"


def test_too_few_trials_say_how_many_more():
    decision = decide(parts((0.3, 0.5), (-0.2, -0.1), (0.5, 0.6)), n=MIN_TRIALS - 1,
                      tolerance=TOL)
    assert decision["code"] == "inconclusive"
    assert "run at least 1 more" in decision["why"]
    # Found by a first user: "5 more" read as --n-trials 5, which is a total, not an increment.
    assert decision["why"].endswith("(study run's --n-trials is the total of finished trials "
                                    "to reach; study explain's --replicates the seeds per "
                                    "width)")  # the second found by a later user
    assert code((0.3, 0.5), (-0.2, -0.1), (0.5, 0.6), n=MIN_TRIALS) == "penalty"


def test_a_wide_interval_says_how_many_trials_would_decide():
    decision = decide(parts((-0.125, 0.375), (-0.1, 0.0), (0.1, 0.2)), n=16, tolerance=TOL)
    # half-width 0.25 at estimate 0.125: (0.25 / 0.125)^2 * 16 = 64 trials in all, 48 more
    assert decision["code"] == "inconclusive"
    assert "about 48 more trials (64 in total)" in decision["why"]
    assert decision["trials_needed"] == 64  # the same number, for explain's --replicates


def test_one_more_trial_is_said_in_the_singular():
    from study.analysis.verdict import _more

    assert _more(22, [23]).startswith("about 1 more trial (23 in total) would decide")


def test_a_hopeless_interval_caps_the_estimate_of_trials():
    decision = decide(parts((-10.0, 10.1), (-1, 1), (0, 1)), n=20, tolerance=TOL)
    assert "more than 200 trials" in decision["why"]
    assert "trials_needed" not in decision  # no number to act on


def test_no_fit_is_inconclusive():
    assert decide(None, n=N, tolerance=TOL)["code"] == "inconclusive"


def test_the_tolerance_is_one_percent_of_the_typical_loss():
    assert no_increase_tolerance(2.3) == pytest.approx(0.023)
    assert no_increase_tolerance(None) == 0.01


# -- the words, on simulated studies --------------------------------------------------------
@pytest.fixture(scope="module")
def strong() -> dict:
    return analyze(simulate(SCENARIOS[3], 0), study_name="s", early_epochs=1, sampler="random")


def test_each_question_names_its_three_parts_with_95_percent_intervals(strong):
    text = strong["verdict"]["text"]
    assert text.count("95% CI") >= 7  # 3 parts x 2 questions + the threshold
    for part in ("the total loss changes", "= data part", "+ L2 penalty part"):
        assert text.count(part) == 2, part


def test_signs_are_shown_as_signs(strong):
    text = strong["verdict"]["text"]
    changes = re.findall(r"changes ([+-]\d\.\d+) \(95% CI ([+-]\d\.\d+) to ([+-]\d\.\d+)\)", text)
    assert len(changes) == 2 and all(float(lo) <= float(v) <= float(hi)
                                     for v, lo, hi in changes)
    assert "falls" not in text  # a magnitude is never printed next to a signed interval


def test_the_strong_penalty_study_says_penalty_and_where_it_begins(strong):
    assert strong["verdict"]["code"] == "penalty" == strong["verdict"]["init_code"]
    assert "start higher once the weight decay exceeds" in strong["verdict"]["text"]


def test_the_early_windows_threshold_is_not_said_of_the_start(strong):
    """Found by a new user: the first epoch's threshold read "Bigger models start higher"."""
    detail = strong["verdict"]["detail"]  # the paragraph: initialization, then the window
    init, early = detail.split("Over the first", 1)
    assert "Bigger models start higher once" in init
    assert "Bigger models are higher once" in early and "start higher once" not in early


@pytest.mark.parametrize(("sampler", "named"), [("tpe", True), ("gp", True), ("random", False),
                                                ("qmc", False)])
def test_an_adaptive_sampler_is_named_with_what_to_run_instead(sampler, named):
    document = analyze(simulate(SCENARIOS[0], 0), study_name="s", early_epochs=1,
                       sampler=sampler)
    assert ("study explain" in document["verdict"]["text"]) is named
    assert document["design"]["adaptive"] is named


@pytest.mark.parametrize(("significant", "expected"), [
    (True, "The total rises at every weight decay studied (1.0e-05 to 1.0e-02)."),
    (False, "The estimated total rises at every weight decay studied (1.0e-05 to 1.0e-02), though "
            "its 95% CI includes no change at some of them."),
])
def test_always_says_estimated_unless_every_interval_excludes_zero(significant, expected):
    from study.analysis.answer import _threshold

    block = {"status": "always", "studied_range": [1e-5, 1e-2], "significant": significant}
    assert _threshold(block, "early") == expected
