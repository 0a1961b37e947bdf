"""The shared short phrases."""

from __future__ import annotations

import pytest

from study._text import finished_of, flag_text, settings_of


def test_finished_of_reads_as_a_fraction_up_to_the_budget():
    assert finished_of(0, 20) == "0/20 finished"
    assert finished_of(20, 20) == "20/20 finished"


def test_finished_of_past_the_budget_names_both_numbers():
    assert finished_of(21, 20) == "21 finished, budget 20"


def test_settings_of_rounds_floats_and_drops_momentum_outside_sgd():
    adam = {"width": 20, "lr": 0.005495716186411619, "optimizer": "adam", "momentum": 0.9,
            "penalty_mode": "l2-in-loss"}
    assert settings_of(adam) == "width=20 lr=0.0055 optimizer=adam penalty_mode=l2-in-loss"


def test_settings_of_keeps_momentum_for_sgd():
    assert settings_of({"optimizer": "sgd", "momentum": 0.5}) == "optimizer=sgd momentum=0.5"


def test_an_interval_keeps_one_number_of_decimals_for_its_three_numbers():
    from study._text import interval_formatter

    fmt = interval_formatter([-0.07, -0.19, 0.052])
    assert [fmt(v) for v in (-0.07, -0.19, 0.052)] == ["-0.07", "-0.19", "+0.05"]
    unsigned = interval_formatter([-0.34, -0.58, -0.089], signed=False)
    assert [unsigned(v) for v in (-0.34, -0.58, -0.089, 0.2)] == ["-0.34", "-0.58", "-0.09",
                                                                  "0.20"]
    assert interval_formatter([0.0, -0.001, 0.001], signed=False)(-0.0) == "0.0000"  # not -0


def test_replicates_whose_narrowest_intervals_straddle_a_power_of_ten_print_alike():
    """Found by a user reading three replicate studies side by side: seed 1 printed "+0.40
    [+0.38, +0.41]" (its narrowest half-width 0.0103), seeds 0 and 2 "+0.402 [+0.389, +0.415]"
    (0.0098)."""
    from study._text import interval_formatter

    seed0 = [0.4016, 0.3886, 0.4147, -0.0287, -0.0385, -0.0189, 0.4303, 0.4173, 0.4434]
    seed1 = [0.3964, 0.3785, 0.4143, -0.0335, -0.0483, -0.0187, 0.4299, 0.4196, 0.4402]
    assert interval_formatter(seed1)(0.4143) == "+0.41"  # two digits by default
    steady0 = interval_formatter(seed0, significant=3)
    steady1 = interval_formatter(seed1, significant=3)
    assert [steady0(v) for v in seed0[:3]] == ["+0.402", "+0.389", "+0.415"]
    assert [steady1(v) for v in seed1[:3]] == ["+0.396", "+0.379", "+0.414"]
    # No more digits than the narrowest interval carries: a wide one keeps the default's.
    wide = [0.01, -0.0113, 0.0313]
    assert interval_formatter(wide, significant=3)(0.01) == interval_formatter(wide)(0.01) \
        == "+0.010"


@pytest.mark.parametrize(("mlflow_run", "value", "expected"), [
    (False, 8, "--n-trials 8"), (True, 8, "-P n_trials=8"),
    (False, None, "--n-trials"), (True, None, "-P n_trials"),
])
def test_a_flag_is_written_as_the_users_command_line_takes_it(mlflow_run, value, expected):
    assert flag_text("n_trials", value, mlflow_run=mlflow_run) == expected


def test_a_flag_under_mlflow_run_is_its_parameter(monkeypatch):
    """Found by a new user: the budget line under `mlflow run` advised `--n-trials 8`."""
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    assert flag_text("n_trials", 8) == "--n-trials 8"
    monkeypatch.setenv("MLFLOW_RUN_ID", "0" * 32)  # what `mlflow run` sets for its entry point
    assert flag_text("n_trials", 8) == "-P n_trials=8"
