"""Every verdict code from constructed trial tables, through analyze()."""

from __future__ import annotations

import re

import numpy as np
import pytest
import statsmodels.api as sm

from study.analysis.analyze import analyze
from study.analysis.verdict import (
    MIN_TRIALS,
    MORE_TRIALS_CAP,
    no_increase_tolerance,
    trials_needed,
    verdict,
)
from tests.analysis_tests.synth import data_effect_at, synthetic_table


def _analyze(table) -> dict:
    return analyze(table, study_name="s", early_epochs=1)


def _effect(estimate: float, lo: float, hi: float) -> dict:
    return {"estimate": estimate, "ci95": [lo, hi]}


def _block(total, data, penalty) -> dict:
    return {"width_effect_total": _effect(*total), "width_effect_data": _effect(*data),
            "width_effect_penalty": _effect(*penalty), "penalty_share": None}


# -- the decisive codes -----------------------------------------------------------------------
def test_penalty_when_the_penalty_carries_the_rise_and_data_loss_falls() -> None:
    document = _analyze(synthetic_table(60, seed=1, data_size=-0.1, penalty_size=0.3))
    assert document["verdict"]["code"] == "penalty"
    assert "data loss falls" in document["verdict"]["text"]


def test_penalty_when_the_data_loss_does_not_change() -> None:
    document = _analyze(synthetic_table(60, seed=1, data_size=0.0, penalty_size=0.3))
    assert document["verdict"]["code"] == "penalty"


def test_optimization_when_only_the_data_loss_rises() -> None:
    table = synthetic_table(60, seed=2, data_size=0.2, penalty_noise=0.0, modes=("coupled",))
    assert _analyze(table)["verdict"]["code"] == "optimization"


def test_both_when_data_loss_and_penalty_rise() -> None:
    document = _analyze(synthetic_table(60, seed=3, data_size=0.15, penalty_size=0.2))
    assert document["verdict"]["code"] == "both"


def test_no_increase_when_the_total_falls() -> None:
    document = _analyze(synthetic_table(60, seed=4, data_size=-0.2, penalty_size=0.05))
    assert document["verdict"]["code"] == "no-increase"


def test_no_increase_when_the_interval_is_narrow_around_zero() -> None:
    table = synthetic_table(400, seed=5, data_size=0.0, penalty_size=0.0, noise=0.01,
                            penalty_noise=0.001)
    document = _analyze(table)
    lo, hi = document["decomposition"]["width_effect_total"]["ci95"]
    assert lo < 0 < hi
    assert document["verdict"]["code"] == "no-increase"
    assert "below" in document["verdict"]["text"]


# -- the no-increase tolerance, both sides ----------------------------------------------------
def test_tolerance_is_one_percent_of_the_typical_loss() -> None:
    assert no_increase_tolerance(2.0) == pytest.approx(0.02)


def test_upper_bound_just_below_the_tolerance_is_no_increase() -> None:
    block = _block((0.0, -0.0099, 0.0099), (0.0, -0.01, 0.01), (0.0, -0.001, 0.001))
    assert verdict(block, n=40, typical_loss=1.0)["code"] == "no-increase"


def test_upper_bound_just_above_the_tolerance_is_inconclusive() -> None:
    block = _block((0.0, -0.0101, 0.0101), (0.0, -0.01, 0.01), (0.0, -0.001, 0.001))
    assert verdict(block, n=40, typical_loss=1.0)["code"] == "inconclusive"


# -- inconclusive ----------------------------------------------------------------------------
def _small_table(n: int):
    # Fixed batch size and weight decay: 4 coefficients, so 8 trials leave 4 residual df.
    return synthetic_table(n, seed=9, data_size=-0.1, penalty_size=0.3, noise=0.005,
                           batch_sizes=(64,), weight_decay_range=(-4, -4))


def test_one_trial_below_min_trials_is_inconclusive() -> None:
    document = _analyze(_small_table(MIN_TRIALS - 1))
    assert document["verdict"]["code"] == "inconclusive"
    assert f"at least {MIN_TRIALS}" in document["verdict"]["text"]
    assert "1 more" in document["verdict"]["text"]


def test_min_trials_decide() -> None:
    assert _analyze(_small_table(MIN_TRIALS))["verdict"]["code"] == "penalty"


def test_wide_interval_is_inconclusive_and_says_how_many_more_trials() -> None:
    table = synthetic_table(16, seed=10, data_size=0.2, penalty_size=0.0, noise=0.2,
                            penalty_noise=0.0, modes=("coupled",), batch_sizes=(64,))
    document = _analyze(table)
    assert document["verdict"]["code"] == "inconclusive"
    effect = document["decomposition"]["width_effect_total"]
    lo, hi = effect["ci95"]
    assert lo < 0 < hi
    match = re.search(r"About (\d+) more trials \((\d+) in total\)", document["verdict"]["text"])
    assert match, document["verdict"]["text"]
    tolerance = document["thresholds"]["no_increase_tolerance"]
    half = (hi - lo) / 2
    expected = min(trials_needed(16, half_width=half, gap=gap)
                   for gap in (effect["estimate"], tolerance - effect["estimate"]) if gap > 0)
    assert int(match.group(2)) == expected
    assert int(match.group(1)) == expected - 16


def test_hopelessly_wide_interval_caps_the_trial_estimate() -> None:
    block = _block((0.001, -0.5, 0.502), (0.0, -0.5, 0.5), (0.001, -0.01, 0.012))
    text = verdict(block, n=20, typical_loss=1.0)["text"]
    assert f"More than {MORE_TRIALS_CAP * 20} trials" in text


def test_significant_total_without_a_significant_part_is_inconclusive() -> None:
    block = _block((0.2, 0.05, 0.35), (0.1, -0.1, 0.3), (0.1, -0.05, 0.25))
    result = verdict(block, n=40, typical_loss=1.0)
    assert result["code"] == "inconclusive" and "more trials" in result["text"]


def test_fixed_width_is_inconclusive_not_a_crash() -> None:
    table = synthetic_table(30, seed=11, size_range=(4, 4), penalty_size=0.2)
    document = _analyze(table)
    assert document["verdict"]["code"] == "inconclusive"
    assert "parameter count" in document["verdict"]["text"]


def test_singular_fit_is_inconclusive_not_a_crash() -> None:
    table = synthetic_table(30, seed=11, data_size=0.1)
    table["lr"] = table["batch_size"] * 1e-5
    document = _analyze(table)
    assert document["verdict"]["code"] == "inconclusive"
    assert "singular" in document["verdict"]["text"]


def test_text_is_one_paragraph_with_the_numbers() -> None:
    document = _analyze(synthetic_table(60, seed=1, data_size=-0.1, penalty_size=0.3))
    text = document["verdict"]["text"]
    assert "\n" not in text
    assert "60 trials" in text and "median lr" in text and "batch size" in text
    estimate = document["decomposition"]["width_effect_penalty"]["estimate"]
    assert f"{estimate:.2f}" in text


# -- a pooled fit without the size x lr interaction misleads -----------------------------------
def test_pooled_fit_misleads_where_the_size_effect_depends_on_lr() -> None:
    """Size effect on data loss: +0.3 per decade at lr 1e-4, -0.5 at lr 1e-2, -0.1 at 1e-3.
    Big models only at low lr, small models everywhere: a pooled slope follows the low-lr
    trials and says the data loss rises; at the median lr it falls."""
    rng = np.random.default_rng(3)
    n = 200
    llr = rng.uniform(-4, -2, n)
    top = 3.5 + 2.0 * (-2 - llr) / 2  # the largest size sampled: 5.5 at lr 1e-4, 3.5 at 1e-2
    lp = 3.5 + (top - 3.5) * rng.uniform(0, 1, n)
    table = synthetic_table(n, seed=4, data_size=-0.1, size_x_lr=-0.4, penalty_size=0.2,
                            log10_lr=llr, log10_n_params=lp)
    truth = data_effect_at(float(np.median(llr)), data_size=-0.1, size_x_lr=-0.4)

    X = sm.add_constant(np.column_stack([np.log10(table[c]) for c in (
        "n_params", "lr", "batch_size", "weight_decay")]))
    pooled = sm.OLS(table["early_data_loss"].to_numpy(), X).fit(cov_type="HC3")
    pooled_lo, pooled_hi = pooled.conf_int()[1]
    assert pooled_lo > 0  # pooled: "the data loss rises with size" -> would say "both"
    assert not pooled_lo <= truth <= pooled_hi

    document = _analyze(table)
    data = document["decomposition"]["width_effect_data"]
    assert data["ci95"][0] <= truth <= data["ci95"][1]
    assert document["verdict"]["code"] == "penalty"
