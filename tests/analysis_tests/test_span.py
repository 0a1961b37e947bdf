"""The parameter counts at the compared widths: the trials' own, the quadratic through them, or
an interpolation that the answer marks approximate."""

from __future__ import annotations

import pandas as pd
import pytest

from study.analysis.answer import headline
from study.analysis.span import SizeMap, compare_span


def _counts(width: int) -> int:
    """A small CNN's parameter count, from its layers (3x3 convs on 1 channel, 10 classes)."""
    conv1, conv2 = 9 * width + width, 9 * width * 2 * width + 2 * width
    return conv1 + conv2 + 2 * width * 10 + 10


def _sizes(widths: list[int]) -> SizeMap:
    rows = pd.DataFrame({"width": widths, "n_params": [_counts(w) for w in widths]})
    return SizeMap.from_trials(rows)


def test_a_width_some_trial_ran_has_that_trials_count():
    span = compare_span(_sizes([4, 8]), (4, 8))
    assert span.n_params == (_counts(4), _counts(8)) and span.exact == (True, True)


def test_three_widths_give_the_exact_quadratic_elsewhere():
    span = compare_span(_sizes([4, 6, 8]), (2, 16))
    assert span.n_params == pytest.approx((_counts(2), _counts(16)), rel=1e-9)
    assert span.exact == (True, True)


def test_two_widths_interpolate_and_say_so():
    """Found by a first user: "4.34k parameters" for a width-8 model of 4,370."""
    span = compare_span(_sizes([4, 6]), (4, 8))
    assert span.exact == (True, False)
    assert span.n_params[1] != _counts(8)
    block = {"question": "early", "verdict": {"code": "penalty"}, "n_trials_used": 8,
             "reference": {"widths": [4, 8], "n_params": list(span.n_params),
                           "span": span.to_dict()},
             "decomposition": {f"width_effect_{k}": {"estimate": 0.1, "ci95": [0.05, 0.15]}
                               for k in ("total", "data", "penalty")}}
    assert f"width 4 to 8, {_counts(4)} to about " in headline(block)
