"""OLS with robust small-sample intervals (study.analysis.regression).

HC2, CR2 and the Bell-McCaffrey degrees of freedom are pinned to an independent implementation
of the textbook formulas (plain numpy, below), to closed forms where they exist, and to
reference numbers computed once from that implementation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from study.analysis.regression import SMALL_SAMPLE_ROWS, fit

# A fixed small data set: 12 trials, two regressors, six clusters of unequal size.
X1 = np.array([0.1, 0.4, 0.5, 0.9, 1.3, 1.7, 2.0, 2.2, 2.9, 3.1, 3.6, 4.0])
X2 = np.array([1.0, 0.0, 2.0, 1.0, 3.0, 0.0, 2.0, 1.0, 0.0, 3.0, 2.0, 1.0])
Y = np.array([1.2, 1.9, 2.4, 2.7, 4.1, 3.8, 5.2, 5.0, 5.9, 7.3, 7.6, 8.4])
CLUSTERS = np.array([0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4, 5])
# Each coefficient alone, and a combination of all three.
COMBINATIONS = (*np.eye(3), np.array([1.0, 2.5, -1.5]))
RTOL = 1e-10


def design(x: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"const": np.ones(len(x)), "x": x})


def fixed_design() -> pd.DataFrame:
    return pd.DataFrame({"const": np.ones(len(X1)), "x1": X1, "x2": X2})


# -- the independent implementation -----------------------------------------------------------
def _inverse_sqrt(a: np.ndarray) -> np.ndarray:
    """A symmetric positive definite matrix to the power -1/2, by SVD."""
    u, s, _ = np.linalg.svd(a)
    return u @ np.diag(s**-0.5) @ u.T


def _ols(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    bread = np.linalg.inv(X.T @ X)
    beta = bread @ X.T @ y
    return bread, beta, y - X @ beta


def reference_hc2(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(beta, V)``, V = (X'X)^-1 X' diag(e_i^2 / (1 - h_ii)) X (X'X)^-1."""
    bread, beta, e = _ols(X, y)
    h = np.diag(X @ bread @ X.T)
    return beta, bread @ X.T @ np.diag(e**2 / (1 - h)) @ X @ bread


def reference_cr2(X: np.ndarray, y: np.ndarray, groups: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``(beta, V)`` with Bell-McCaffrey's adjustment A_g = (I - H_gg)^-1/2:
    V = (X'X)^-1 [sum_g X_g' A_g e_g e_g' A_g X_g] (X'X)^-1."""
    bread, beta, e = _ols(X, y)
    M = np.eye(len(X)) - X @ bread @ X.T
    meat = np.zeros((X.shape[1], X.shape[1]))
    for g in np.unique(groups):
        s = groups == g
        u = X[s].T @ _inverse_sqrt(M[np.ix_(s, s)]) @ e[s]
        meat += np.outer(u, u)
    return beta, bread @ meat @ bread


def reference_bm_df(X: np.ndarray, groups: np.ndarray, c: np.ndarray) -> float:
    """Bell-McCaffrey df of c'beta (Imbens and Kolesar 2016, eq. for K_BM): G is N x S with
    column s = (I - P)_{.,s} A_s X_s (X'X)^-1 c; df = (sum lambda)^2 / sum lambda^2 over the
    eigenvalues lambda of G'G. Singleton groups give the HC2 version."""
    bread = np.linalg.inv(X.T @ X)
    M = np.eye(len(X)) - X @ bread @ X.T
    labels = np.unique(groups)
    G = np.empty((len(X), len(labels)))
    for j, g in enumerate(labels):
        s = groups == g
        G[:, j] = M[:, s] @ _inverse_sqrt(M[np.ix_(s, s)]) @ X[s] @ bread @ c
    lam = np.linalg.eigvalsh(G.T @ G)
    return float(lam.sum() ** 2 / np.sum(lam**2))


# -- pinned to the independent implementation -------------------------------------------------
def test_hc2_and_its_bell_mccaffrey_df_match_the_independent_implementation():
    model = fit(Y, fixed_design(), name="m", formula="y ~ x1 + x2")
    X = fixed_design().to_numpy()
    beta, V = reference_hc2(X, Y)
    assert model.cov_type == "HC2"
    for c in COMBINATIONS:
        found = model.combine(c)
        assert found.estimate == pytest.approx(c @ beta, rel=RTOL)
        assert found.se == pytest.approx(np.sqrt(c @ V @ c), rel=RTOL)
        assert found.df == pytest.approx(reference_bm_df(X, np.arange(len(X)), c), rel=RTOL)


def test_cr2_and_its_bell_mccaffrey_df_match_the_independent_implementation():
    model = fit(Y, fixed_design(), name="m", formula="f", clusters=CLUSTERS)
    X = fixed_design().to_numpy()
    beta, V = reference_cr2(X, Y, CLUSTERS)
    assert model.cov_type == "CR2"
    for c in COMBINATIONS:
        found = model.combine(c)
        assert found.estimate == pytest.approx(c @ beta, rel=RTOL)
        assert found.se == pytest.approx(np.sqrt(c @ V @ c), rel=RTOL)
        assert found.df == pytest.approx(reference_bm_df(X, CLUSTERS, c), rel=RTOL)


def test_hc2_cr2_and_df_match_reference_numbers():
    # Computed once with reference_hc2, reference_cr2 and reference_bm_df above (numpy 2.4).
    hc2 = fit(Y, fixed_design(), name="m", formula="f")
    cr2 = fit(Y, fixed_design(), name="m", formula="f", clusters=CLUSTERS)
    beta = [0.912523509955248, 1.750185557501208, 0.3012816078287248]
    hc2_se = [0.14020621794810376, 0.04794021939830184, 0.04122346006827718]
    hc2_df = [4.650949043702392, 5.327340374082628, 4.943098837317917]
    cr2_se = [0.0775186606598063, 0.03617427791823245, 0.04056936182827424]
    cr2_df = [2.255758761237019, 2.8997899415572252, 3.3416474285730993]
    for j, c in enumerate(np.eye(3)):
        a, b = hc2.combine(c), cr2.combine(c)
        assert a.estimate == pytest.approx(beta[j], rel=RTOL)
        assert b.estimate == pytest.approx(beta[j], rel=RTOL)
        assert (a.se, a.df) == pytest.approx((hc2_se[j], hc2_df[j]), rel=RTOL)
        assert (b.se, b.df) == pytest.approx((cr2_se[j], cr2_df[j]), rel=RTOL)


def test_a_difference_in_means_gets_welch_variance_and_bell_mccaffrey_closed_form_df():
    # Imbens and Kolesar 2016: for two groups, HC2 is s0^2/n0 + s1^2/n1 and the BM df are
    # (1/n0 + 1/n1)^2 / (1/(n0^2 (n0 - 1)) + 1/(n1^2 (n1 - 1))).
    a, b = np.array([1.0, 1.7, 0.6]), np.array([2.2, 3.9, 2.8, 3.1, 4.4])
    n0, n1 = len(a), len(b)
    group = np.r_[np.zeros(n0), np.ones(n1)]
    found = fit(np.r_[a, b], design(group), name="m", formula="f").combine({"x": 1.0})
    assert found.estimate == pytest.approx(b.mean() - a.mean(), rel=RTOL)
    assert found.se**2 == pytest.approx(a.var(ddof=1) / n0 + b.var(ddof=1) / n1, rel=RTOL)
    df = (1 / n0 + 1 / n1) ** 2 / (1 / (n0**2 * (n0 - 1)) + 1 / (n1**2 * (n1 - 1)))
    assert found.df == pytest.approx(df, rel=RTOL)


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


def test_the_coefficient_table_is_the_t_interval_of_the_independent_cr2():
    model = fit(Y, fixed_design(), name="m", formula="f", clusters=CLUSTERS)
    X = fixed_design().to_numpy()
    beta, V = reference_cr2(X, Y, CLUSTERS)
    for j, term in enumerate(("const", "x1", "x2")):
        se, df = np.sqrt(V[j, j]), reference_bm_df(X, CLUSTERS, np.eye(3)[j])
        half = stats.t.ppf(0.975, df) * se
        row = model.coefficients[term]
        assert row["ci95"] == pytest.approx([beta[j] - half, beta[j] + half], rel=RTOL)
        assert row["p_value"] == pytest.approx(2 * stats.t.sf(abs(beta[j]) / se, df), rel=1e-8)


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

