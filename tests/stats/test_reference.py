"""The numerical cores against statsmodels and scipy on the same data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from flowtools.stats._glm import bh_qvalues, delong, ols, quasi_binomial, welch_t

sm = pytest.importorskip("statsmodels.api")


def _data(seed=0, n=60):
    rng = np.random.default_rng(seed)
    x = np.column_stack([np.ones(n), rng.integers(0, 2, n), rng.normal(size=n), rng.normal(size=n)])
    trials = rng.integers(200, 5000, n)
    eta = -2 + 0.3 * x[:, 1] + 0.1 * x[:, 2] + rng.normal(0, 0.3, n)
    k = rng.binomial(trials, 1 / (1 + np.exp(-eta)))
    return x, k, trials


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quasi_binomial_matches_statsmodels(seed):
    x, k, n = _data(seed)
    ours = quasi_binomial(x, k, n)
    # proportions with var_weights (a two-column count input gives a wrong quasi scale)
    ref = sm.GLM(k / n, x, family=sm.families.Binomial(), var_weights=n).fit(scale="X2")
    np.testing.assert_allclose(ours.params, ref.params, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours.bse, ref.bse, rtol=1e-6)
    np.testing.assert_allclose(ours.scale, ref.scale, rtol=1e-6)
    # t-based p with n - p df
    ref_t = sm.GLM(k / n, x, family=sm.families.Binomial(), var_weights=n).fit(scale="X2", use_t=True)
    np.testing.assert_allclose(ours.pvalues, ref_t.pvalues, rtol=1e-5)
    lo, hi = ours.conf_int(1)
    np.testing.assert_allclose([lo, hi], ref_t.conf_int()[1], rtol=1e-6)


def test_binomial_ignoring_overdispersion_is_what_we_avoid():
    x, k, n = _data(3)
    plain = sm.GLM(np.column_stack([k, n - k]), x, family=sm.families.Binomial()).fit()
    ours = quasi_binomial(x, k, n)
    assert ours.scale > 10  # between-woman variation
    assert np.all(ours.bse > 3 * plain.bse)


def test_ols_matches_statsmodels():
    rng = np.random.default_rng(4)
    x = np.column_stack([np.ones(50), rng.normal(size=(50, 3))])
    y = x @ [1, 0.5, 0, -1] + rng.normal(size=50)
    ours, ref = ols(x, y), sm.OLS(y, x).fit()
    np.testing.assert_allclose(ours.params, ref.params, rtol=1e-10)
    np.testing.assert_allclose(ours.bse, ref.bse, rtol=1e-10)
    np.testing.assert_allclose(ours.pvalues, ref.pvalues, rtol=1e-8)


def test_welch_matches_scipy():
    rng = np.random.default_rng(5)
    a, b = rng.normal(0.3, 1, 30), rng.normal(0, 2, 45)
    d, lo, hi, p = welch_t(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False)
    np.testing.assert_allclose(p, ref.pvalue, rtol=1e-10)
    ci = ref.confidence_interval()
    np.testing.assert_allclose([lo, hi], [ci.low, ci.high], rtol=1e-8)


def test_bh_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(6)
    p = np.concatenate([rng.uniform(size=40), rng.uniform(0, 0.01, 5), [0.02, 0.02]])
    np.testing.assert_allclose(bh_qvalues(p), multipletests(p, method="fdr_bh")[1], rtol=1e-12)
    q = bh_qvalues(np.array([0.01, np.nan, 0.04]))
    assert np.isnan(q[1]) and np.allclose(q[[0, 2]], [0.02, 0.04])


def test_delong_auc_matches_sklearn_and_bootstrap_scale():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 200)
    s1 = y + rng.normal(0, 1.5, 200)
    s2 = np.round(y * 0.5 + rng.normal(0, 1, 200), 1)  # with ties
    auc, cov = delong(y, np.vstack([s1, s2]))
    np.testing.assert_allclose(auc, [roc_auc_score(y, s1), roc_auc_score(y, s2)], rtol=1e-12)
    boots = []
    for _ in range(400):
        i = rng.integers(0, 200, 200)
        boots.append(roc_auc_score(y[i], s1[i]))
    assert 0.7 < np.sqrt(cov[0, 0]) / np.std(boots) < 1.4
