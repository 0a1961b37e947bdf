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
