"""bench/coverage.py's replicate check and threshold-openness column, on a small real run."""

from __future__ import annotations

import pytest

from bench import coverage


@pytest.fixture(scope="module")
def result() -> dict:
    return coverage.run(2)


def test_the_replicates_are_summarized_per_question_and_part(result):
    rep = result["replicates"]
    assert rep["studies"] == 8  # fewer than 8 replicates tell no spread
    for question in ("init", "early"):
        for part in ("total", "data", "penalty"):
            row = rep[f"{question}/{part}"]
            assert 0 <= row["coverage"] <= 1 and row["sd"] >= 0 and row["mean_se"] > 0
            assert row["ratio"] == pytest.approx(row["sd"] / row["mean_se"])
    lines = coverage.replicate_lines(result)
    assert lines[0].startswith("| question/part | coverage of the common truth")
    assert len([line for line in lines if line.startswith("| init/") or
                line.startswith("| early/")]) == 6
    assert lines[-1].startswith("Verdict `penalty` in init ")


def test_open_threshold_intervals_are_counted_beside_their_coverage(result):
    for question in ("init", "early"):
        opened = result["overall"][f"{question}/threshold_open"]
        counted = result["overall"][f"{question}/threshold"]
        assert opened["n"] == counted["n"] and 0 <= opened["coverage"] <= 1
    assert "init/threshold_open" in coverage.table_lines(result)[0]
    names = dict(coverage.figures(result))
    assert "coverage_init_threshold_open" in names
    assert "replicate_sd_se_ratio_early_penalty" in names


def test_a_result_without_replicates_says_so():
    assert coverage.replicate_lines({"scenarios": {}})[0].startswith("Not measured")
