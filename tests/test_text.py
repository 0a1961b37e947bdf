"""The shared short phrases."""

from __future__ import annotations

from study._text import finished_of, settings_of


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
