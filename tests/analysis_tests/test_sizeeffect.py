"""The size effect of each question, split into parts (study.analysis.sizeeffect), and the
threshold weight decay (study.analysis.threshold), on tables built from the simulation's
noise-free truth (the real architecture's parameter counts and ||w||^2, curved data losses)."""

from __future__ import annotations

import itertools
import math

import pandas as pd
import pytest

from study.analysis.simulation import (
    SCENARIOS,
    Truth,
    _architecture,  # the real cnn's counts, cached
    simulate,
)
from study.analysis.sizeeffect import L2, fit_size_model
from study.analysis.table import TABLE_COLUMNS, usable_trials
from study.analysis.threshold import threshold

WIDTHS = (2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64)


def truth_table(*, lr=(1e-5,), decays=(1e-5, 1e-4, 1e-3, 1e-2), modes=(L2,),
                data_shift=None) -> pd.DataFrame:
    """Every combination, valued by the noise-free truth (``data_shift(x)`` added to the data
    loss of both questions, to make it rise with size)."""
    truth, rows = Truth(), []
    for number, (w, r, wd, mode) in enumerate(itertools.product(WIDTHS, lr, decays, modes)):
        n_params = _architecture(w)[0]
        shift = data_shift(math.log10(n_params)) if data_shift else 0.0
        row = {"number": number, "state": "COMPLETE", "width": w, "lr": r, "batch_size": 64,
               "weight_decay": wd, "penalty_mode": mode, "n_params": n_params,
               "train_seed": number}
        for q in ("init", "early"):
            data = truth.data_loss(q, w, r, 64, wd, mode) + shift
            penalty = wd * truth.weight_sq_norm(q, w, r, wd, mode) if mode == L2 else 0.0
            row.update({f"{q}_data_loss": data, f"{q}_penalty": penalty,
                        f"{q}_loss": data + penalty})
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.reindex(columns=list(TABLE_COLUMNS))


def model_of(table: pd.DataFrame, question: str):
    return fit_size_model(usable_trials(table, question), question)


@pytest.mark.parametrize("question", ["init", "early"])
def test_the_total_is_the_data_part_plus_the_penalty_part(question):
    model = model_of(simulate(SCENARIOS[2], 3), question)
    for mode in model.modes:
        e = model.effects(1e-3, mode)
        assert e.total.estimate == pytest.approx(e.data.estimate + e.penalty.estimate,
                                                 abs=1e-12)
        # Fitted on the same trials, the parts' errors correlate; the total's variance holds
        # their covariance (a correlation within [-1, 1]).
        if e.penalty.se > 0:
            rho = (e.total.se**2 - e.data.se**2 - e.penalty.se**2) / (2 * e.data.se
                                                                      * e.penalty.se)
            assert -1 - 1e-9 <= rho <= 1 + 1e-9
        else:
            assert e.total.se == pytest.approx(e.data.se)


def test_outside_l2_in_loss_the_penalty_part_is_exactly_zero():
    model = model_of(simulate(SCENARIOS[2], 3), "early")
    penalty = model.effects(1e-3, "none").penalty
    assert (penalty.estimate, penalty.ci95) == (0.0, (0.0, 0.0))


def test_at_initialization_the_penalty_part_is_proportional_to_the_weight_decay():
    model = model_of(simulate(SCENARIOS[1], 4), "init")
    one, two = (model.effects(wd, L2).penalty for wd in (1e-3, 2e-3))
    assert two.estimate == pytest.approx(2 * one.estimate, rel=1e-9)
    assert two.se == pytest.approx(2 * one.se, rel=1e-9)


def test_at_initialization_every_mode_shares_one_data_part():
    model = model_of(simulate(SCENARIOS[2], 5), "init")
    assert model.data["none"] is model.data[L2]


@pytest.mark.parametrize("question", ["init", "early"])
@pytest.mark.parametrize("decay", [1e-5, 1e-3, 1e-2])
def test_noise_free_effects_are_the_true_secants(question, decay):
    model = model_of(truth_table(), question)
    found = model.effects(decay, L2)
    true = Truth().effects(question, widths=(2, 64), lr=1e-5, batch_size=64,
                           weight_decay=decay, mode=L2)
    assert found.data.estimate == pytest.approx(true["data"], abs=2e-3)
    assert found.penalty.estimate == pytest.approx(true["penalty"], rel=5e-3)


@pytest.mark.parametrize("question", ["init", "early"])
def test_noise_free_threshold_is_the_true_one(question):
    table = truth_table()
    model = model_of(table, question)
    found = threshold(model, studied=(1e-5, 1e-2), varied=True)
    true = Truth().threshold(question, widths=(2, 64), lr=1e-5, batch_size=64)
    assert found["status"] == "inside"
    assert found["estimate"] == pytest.approx(true, rel=0.05)


def test_a_data_part_that_rises_makes_the_total_rise_at_every_weight_decay():
    table = truth_table(data_shift=lambda x: 0.1 * x)
    found = threshold(model_of(table, "early"), studied=(1e-5, 1e-2), varied=True)
    assert found["status"] == "always" and found["estimate"] is None
    assert found["significant"] is True


def test_a_threshold_above_the_studied_range_is_extrapolated_not_invented():
    table = truth_table(lr=(1e-2,), decays=(1e-5, 3e-5, 1e-4))
    found = threshold(model_of(table, "early"), studied=(1e-5, 1e-4), varied=True)
    assert found["status"] == "never" and found["estimate"] is None
    assert found["extrapolated"] > 1e-4
    assert found["ci95"][0] is None or found["ci95"][0] >= 1e-5


@pytest.mark.parametrize(("question", "extrapolated"), [("init", False), ("early", True)])
def test_a_crossing_outside_a_fixed_weight_decay_is_extrapolated_over_the_early_window_only(
        question, extrapolated):
    """With one weight decay studied, a crossing elsewhere assumes the data part does not
    change with it over the early window; at initialization nothing but the penalty does."""
    table = truth_table(decays=(1e-5,))
    found = threshold(model_of(table, question), studied=(1e-5, 1e-5), varied=False)
    assert found["status"] == "outside"
    assert (found["extrapolated"] == found["estimate"]) is extrapolated
    assert (found["extrapolated"] is None) is not extrapolated


def test_without_l2_in_loss_no_weight_decay_makes_the_loss_rise():
    model = model_of(truth_table(modes=("none",)), "early")
    found = threshold(model, studied=None, varied=False)
    assert found["status"] == "none" and "no l2-in-loss" in found["reason"]


def test_the_reference_is_the_median_control_and_the_extreme_sizes():
    model = model_of(truth_table(lr=(1e-5, 1e-4, 1e-3)), "early")
    assert model.reference.median("lr") == pytest.approx(1e-4)
    assert 10**model.reference.x_lo == pytest.approx(_architecture(2)[0])
    assert 10**model.reference.x_hi == pytest.approx(_architecture(64)[0])
    assert model.reference.span.source == "drawn"


def test_compared_widths_beyond_the_trials_are_extrapolated_with_wider_intervals():
    table = simulate(SCENARIOS[1], 7)
    narrow = table[table["width"].between(4, 16)]
    inside = fit_size_model(usable_trials(narrow, "init"), "init", compare_widths=(4, 16))
    beyond = fit_size_model(usable_trials(narrow, "init"), "init", compare_widths=(2, 64))
    assert beyond.reference.span.extrapolated == (True, True)
    assert inside.reference.span.extrapolated == (False, False)
    # the counts at the compared widths are the architecture's, though no trial had them
    assert 10**beyond.reference.x_hi == pytest.approx(_architecture(64)[0])
    a, b = (m.effects(1e-2, L2).penalty for m in (inside, beyond))
    assert b.se > a.se
    truth = Truth().effects("init", widths=(2, 64), lr=1e-5, batch_size=64, weight_decay=1e-2,
                            mode=L2)["penalty"]
    assert b.ci95[0] <= truth <= b.ci95[1]
