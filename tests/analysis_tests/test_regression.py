"""The early-loss regressions recover known effects from synthetic trial tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from study.analysis.regression import (
    INTERACTION,
    SIZE,
    design_matrix,
    fit,
    fit_decomposition,
)
from tests.analysis_tests.synth import LR_REF, data_effect_at, synthetic_table

TRUTH = {"data_size": 0.15, "size_x_lr": -0.3, "data_lr": -0.2, "data_bs": 0.05,
         "penalty_size": 0.25}


def _inside(coefficient: dict, value: float) -> bool:
    lo, hi = coefficient["ci95"]
    return lo <= value <= hi


@pytest.fixture(scope="module")
def known() -> tuple[pd.DataFrame, dict]:
    table = synthetic_table(400, seed=11, **TRUTH)
    return table, fit_decomposition(table)


def test_size_effect_on_data_loss_is_recovered_at_the_median_lr(known) -> None:
    table, fitted = known
    median = float(np.median(np.log10(table["lr"])))
    truth = data_effect_at(median, data_size=0.15, size_x_lr=-0.3)
    assert _inside(fitted["models"]["data"].coefficients[SIZE], truth)


def test_size_x_lr_interaction_is_recovered(known) -> None:
    _, fitted = known
    assert _inside(fitted["models"]["data"].coefficients[INTERACTION], -0.3)


def test_lr_effect_is_recovered_at_the_median_size(known) -> None:
    table, fitted = known
    median_size = float(np.median(np.log10(table["n_params"])))
    truth = -0.2 + -0.3 * median_size  # d(data)/d(log10 lr) at the median log10(n_params)
    assert _inside(fitted["models"]["data"].coefficients["log10_lr"], truth)


def test_batch_size_effect_is_recovered(known) -> None:
    _, fitted = known
    assert _inside(fitted["models"]["data"].coefficients["log10_batch_size"], 0.05)


def test_penalty_size_effect_is_recovered(known) -> None:
    _, fitted = known
    assert _inside(fitted["models"]["penalty"].coefficients[SIZE], 0.25)


def test_weight_decay_without_effect_is_not_significant(known) -> None:
    _, fitted = known
    assert _inside(fitted["models"]["data"].coefficients["log10_weight_decay"], 0.0)


def test_size_coefficients_add_up_exactly(known) -> None:
    _, fitted = known
    models = fitted["models"]
    total, data, penalty = (models[k].coefficients[SIZE]["estimate"]
                            for k in ("total", "data", "penalty"))
    assert abs(total - (data + penalty)) < 1e-9


def test_decomposition_block_holds_the_three_size_effects(known) -> None:
    _, fitted = known
    block = fitted["decomposition"]
    assert block["width_effect_penalty"]["estimate"] == \
        fitted["models"]["penalty"].coefficients[SIZE]["estimate"]
    total = block["width_effect_total"]["estimate"]
    assert block["penalty_share"] == pytest.approx(
        block["width_effect_penalty"]["estimate"] / total)


def test_penalty_share_is_none_when_the_total_effect_is_not_positive() -> None:
    table = synthetic_table(60, seed=3, data_size=-0.3, penalty_size=0.1)
    assert fit_decomposition(table)["decomposition"]["penalty_share"] is None


def test_size_effect_is_reported_at_the_median_lr_not_the_mean() -> None:
    # lr skewed towards low values: median log10(lr) ~ -3.5, mean ~ -3.3, reference -3.
    rng = np.random.default_rng(5)
    llr = -4 + 2 * rng.uniform(0, 1, 300) ** 2
    table = synthetic_table(300, seed=7, data_size=0.1, size_x_lr=-0.5, log10_lr=llr)
    effect = fit_decomposition(table)["models"]["data"].coefficients[SIZE]
    at_median = data_effect_at(float(np.median(llr)), data_size=0.1, size_x_lr=-0.5)
    at_mean = data_effect_at(float(np.mean(llr)), data_size=0.1, size_x_lr=-0.5)
    assert _inside(effect, at_median)
    assert not _inside(effect, at_mean)
    assert not _inside(effect, data_effect_at(LR_REF, data_size=0.1, size_x_lr=-0.5))


def test_controls_are_centred_at_their_medians() -> None:
    table = synthetic_table(31, seed=2)
    X, _, centers = design_matrix(table)
    for name in ("log10_lr", "log10_batch_size", "log10_weight_decay"):
        assert np.median(X[name]) == pytest.approx(0.0, abs=1e-12)
    assert centers["log10_lr"] == pytest.approx(np.median(np.log10(table["lr"])))
    assert X[SIZE].tolist() == pytest.approx(np.log10(table["n_params"]).tolist())


def test_fixed_batch_size_is_dropped_not_fatal() -> None:
    table = synthetic_table(40, seed=4, batch_sizes=(64,), penalty_size=0.2)
    X, dropped, _ = design_matrix(table)
    assert "log10_batch_size" in dropped and "log10_batch_size" not in X.columns
    total = fit_decomposition(table)["models"]["total"]
    assert total.usable and "log10_batch_size" in total.dropped


def test_fixed_lr_drops_lr_and_the_interaction() -> None:
    table = synthetic_table(40, seed=4, lr_range=(-3, -3))
    X, dropped, _ = design_matrix(table)
    assert {"log10_lr", INTERACTION} <= set(dropped)
    assert not {"log10_lr", INTERACTION} & set(X.columns)


def test_zero_weight_decay_is_dropped() -> None:
    table = synthetic_table(40, seed=4)
    table["weight_decay"] = 0.0
    X, dropped, _ = design_matrix(table)
    assert "log10_weight_decay" in dropped and "log10_weight_decay" not in X.columns


def test_several_penalty_modes_give_indicators_against_none() -> None:
    shifts = {"coupled": 0.1, "l2-in-loss": -0.05}
    table = synthetic_table(300, seed=8, modes=("none", "coupled", "l2-in-loss"),
                            mode_shift=shifts)
    X, _, _ = design_matrix(table)
    assert [c for c in X.columns if c.startswith("mode[")] == ["mode[coupled]",
                                                               "mode[l2-in-loss]"]
    fitted = fit_decomposition(table)
    assert fitted["mode_reference"] == "none"
    for mode, shift in shifts.items():
        assert _inside(fitted["models"]["data"].coefficients[f"mode[{mode}]"], shift)


def test_without_none_the_reference_mode_is_the_alphabetically_first() -> None:
    table = synthetic_table(60, seed=8, modes=("l2-in-loss", "decoupled"))
    X, _, _ = design_matrix(table)
    assert [c for c in X.columns if c.startswith("mode[")] == ["mode[l2-in-loss]"]


def test_a_single_penalty_mode_gives_no_indicator() -> None:
    X, dropped, _ = design_matrix(synthetic_table(30, seed=8))
    assert "penalty_mode" in dropped
    assert not [c for c in X.columns if c.startswith("mode[")]


def test_fit_with_as_many_rows_as_coefficients_is_unusable() -> None:
    table = synthetic_table(20, seed=1, data_size=0.1)
    X, _, _ = design_matrix(table)
    k = X.shape[1]
    result = fit(table["early_loss"].iloc[:k], X.iloc[:k], name="total", formula="f")
    assert not result.usable and result.coefficients == {} and "coefficients" in result.note


def test_fit_with_one_row_more_than_coefficients_is_usable() -> None:
    table = synthetic_table(20, seed=1, data_size=0.1)
    X, _, _ = design_matrix(table)
    k = X.shape[1]
    result = fit(table["early_loss"].iloc[:k + 1], X.iloc[:k + 1], name="total", formula="f")
    assert result.usable and set(result.coefficients) == set(X.columns)


def test_singular_design_is_unusable_not_an_error() -> None:
    table = synthetic_table(40, seed=1)
    table["lr"] = table["batch_size"] * 1e-5  # lr tied to batch size: collinear
    total = fit_decomposition(table)["models"]["total"]
    assert not total.usable and "singular" in total.note


def test_leverage_one_falls_back_to_hc1_and_says_so() -> None:
    table = synthetic_table(30, seed=2, data_size=0.1, penalty_size=0.2)
    table.loc[5, "penalty_mode"] = "none"  # the only trial of its mode: leverage 1
    total = fit_decomposition(table)["models"]["total"]
    assert total.cov_type == "HC1" and "HC1" in total.note
    assert all(np.isfinite(v["ci95"]).all() for v in total.coefficients.values())


def test_usual_fits_use_hc3(known) -> None:
    _, fitted = known
    assert {m.cov_type for m in fitted["models"].values()} == {"HC3"}


def test_constant_response_gives_none_not_nan() -> None:
    table = synthetic_table(30, seed=2, data_size=0.1, penalty_noise=0.0, modes=("none",))
    penalty = fit_decomposition(table)["models"]["penalty"]
    assert penalty.r2 is None
    assert penalty.coefficients[SIZE]["p_value"] is None
    assert penalty.coefficients[SIZE]["ci95"] == [0.0, 0.0]


def test_explain_model_is_pooled_with_the_penalty_and_no_interaction(known) -> None:
    _, fitted = known
    explain = fitted["models"]["explain"]
    assert "early_penalty" in explain.coefficients
    assert INTERACTION not in explain.coefficients
    assert explain.formula.startswith("early_loss ~ log10_n_params + early_penalty")
