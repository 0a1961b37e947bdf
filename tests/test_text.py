"""The shared short phrases."""

from __future__ import annotations

from study._text import finished_of


def test_finished_of_reads_as_a_fraction_up_to_the_budget():
    assert finished_of(0, 20) == "0/20 finished"
    assert finished_of(20, 20) == "20/20 finished"


def test_finished_of_past_the_budget_names_both_numbers():
    assert finished_of(21, 20) == "21 finished, budget 20"
