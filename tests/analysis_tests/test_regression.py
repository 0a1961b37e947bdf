"""OLS with robust small-sample intervals (study.analysis.regression)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from study.analysis.regression import SMALL_SAMPLE_ROWS, fit


def design(x: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"const": np.ones(len(x)), "x": x})


def test_a_noise_free_line_is_recovered_exactly():
    x = np.linspace(0, 1, 12)
    model = fit(2.0 + 3.0 * x, design(x), name="m", formula="y ~ x")
    assert model.usable
    assert model.params == pytest.approx([2.0, 3.0])
    assert model.coefficients["x"]["ci95"] == pytest.approx([3.0, 3.0], abs=1e-9)


def test_as_many_rows_as_coefficients_is_unusable_and_one_more_is_not():
    x = np.array([0.0, 1.0])
    assert not fit(x, design(x), name="m", formula="f").usable
    x3 = np.array([0.0, 1.0, 2.0])
    assert fit(np.array([0.0, 1.1, 1.9]), design(x3), name="m", formula="f").usable


def test_a_singular_design_is_unusable_with_a_reason():
    x = np.arange(6.0)
    X = pd.DataFrame({"const": np.ones(6), "a": x, "b": 2 * x})
    model = fit(x, X, name="m", formula="f")
    assert not model.usable and "singular" in model.note


def test_independent_trials_get_hc2_and_shared_seeds_get_cr2():
    rng = np.random.default_rng(0)
    x = np.repeat(np.linspace(0, 1, 8), 2)
    y = x + rng.normal(0, 0.1, len(x))
    alone = fit(y, design(x), name="m", formula="f")
    paired = fit(y, design(x), name="m", formula="f", clusters=np.repeat(np.arange(8), 2))
    assert alone.cov_type == "HC2" and paired.cov_type == "CR2"
    assert "clustered (8 seeds)" in paired.note
    # a size effect read from 8 clusters has fewer effective degrees of freedom than 16 rows
    assert paired.combine({"x": 1.0}).df < alone.combine({"x": 1.0}).df <= len(x) - 2


def test_bell_mccaffrey_df_shrink_when_an_estimate_leans_on_few_trials():
    x = np.linspace(0, 1, 20)
    y = x + np.random.default_rng(1).normal(0, 0.1, 20)
    X = pd.DataFrame({"const": 1.0, "x": x, "x2": x**2, "x3": x**3})
    model = fit(y, X, name="m", formula="f")
    middle = model.combine([1, 0.5, 0.25, 0.125]).df
    edge = model.combine([1, 1, 1, 1]).df
    assert edge < middle <= 20 - 4


def test_a_combination_matches_the_coefficient_table():
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, 30)
    model = fit(1 + x + rng.normal(0, 0.2, 30), design(x), name="m", formula="f")
    lo, hi = model.combine({"x": 1.0}).ci95
    assert [lo, hi] == pytest.approx(model.coefficients["x"]["ci95"])


def test_large_studies_use_hc3_on_residual_df():
    n = SMALL_SAMPLE_ROWS + 1
    x = np.linspace(0, 1, n)
    model = fit(x + np.random.default_rng(3).normal(0, 0.1, n), design(x), name="m",
                formula="f")
    assert model.cov_type == "HC3" and model.df == n - 2


def test_large_clustered_studies_keep_their_clusters():
    n = SMALL_SAMPLE_ROWS + 100
    rng = np.random.default_rng(5)
    x = np.repeat(np.linspace(0, 1, n // 2), 2)
    shared = np.repeat(rng.normal(0, 0.3, n // 2), 2)  # pairs share most of their noise
    y = x + shared + rng.normal(0, 0.05, n)
    clustered = fit(y, design(x), name="m", formula="f", clusters=np.repeat(np.arange(n // 2), 2))
    alone = fit(y, design(x), name="m", formula="f")
    assert clustered.cov_type == "CR1" and clustered.df == n // 2 - 1
    assert alone.cov_type == "HC3"
    # Each pair is one piece of evidence: the clustered interval is wider by about sqrt(2).
    ratio = clustered.combine({"x": 1.0}).se / alone.combine({"x": 1.0}).se
    assert 1.2 < ratio < 1.7


def test_two_fits_on_the_same_trials_report_their_correlation():
    rng = np.random.default_rng(6)
    x = rng.uniform(0, 1, 40)
    common = rng.normal(0, 1, 40)
    X = design(x)
    a = fit(x + common, X, name="a", formula="f")
    b = fit(2 * x + common + rng.normal(0, 0.1, 40), X, name="b", formula="f")
    c = fit(2 * x - common + rng.normal(0, 0.1, 40), X, name="c", formula="f")
    C = np.array([[0.0, 1.0]])
    assert a.correlation(C, b, C)[0] > 0.9
    assert a.correlation(C, c, C)[0] < -0.9
    unrelated = fit(x + rng.normal(0, 1, 40), X, name="d", formula="f")
    assert abs(a.correlation(C, unrelated, C)[0]) < 0.5

