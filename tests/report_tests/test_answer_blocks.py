"""The report's part-by-part threshold line writes weight decays as the verdict does."""

from __future__ import annotations

from study.analysis.answer import weight_decay_text
from study.report.answer_blocks import _threshold_text


def test_the_threshold_is_written_like_the_verdicts_weight_decays():
    """Found by a new user: the verdict said 2.0e-04 (95% CI up to 1.0e-03), the report's
    part-by-part section 0.0002, 95% CI up to 0.001."""
    line = _threshold_text({"status": "inside", "estimate": 2e-4, "ci95": [None, 1e-3],
                            "basis": "exact"})
    assert f"{weight_decay_text(2e-4)}, 95% CI up to {weight_decay_text(1e-3)};" in line
    assert line.startswith("Threshold weight decay (the total turns positive above it): "
                           "2.0e-04, 95% CI up to 1.0e-03; inside the studied range.")


def test_both_ends_of_the_interval_and_an_extrapolation_are_written_the_same_way():
    both = _threshold_text({"status": "inside", "estimate": 3.2e-4, "ci95": [1.1e-4, 9e-4],
                            "basis": "exact"})
    assert "3.2e-04, 95% CI 1.1e-04 to 9.0e-04;" in both
    none = _threshold_text({"status": "never", "estimate": None, "reason": "no rise",
                            "extrapolated": 0.0191})
    assert none.endswith("Extrapolated (data part and ||w||² as at the edge): about 1.9e-02.")
