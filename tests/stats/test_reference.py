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


def _logistic_data(seed=8, n=90, p=6):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p))
    y = (rng.random(n) < 1 / (1 + np.exp(-(-0.6 + 0.8 * x[:, 0] - 0.5 * x[:, 1])))).astype(float)
    return x, y


@pytest.mark.parametrize("c", [0.001, 0.1, 10.0])
def test_penalized_logistic_matches_sklearn_ridge(c):
    from sklearn.linear_model import LogisticRegression

    from flowtools.stats._glm import penalized_logistic

    x, y = _logistic_data()
    b0, w, ok = penalized_logistic(x, y, np.full(x.shape[1], 1 / c))
    ref = LogisticRegression(C=c, tol=1e-12, max_iter=10_000).fit(x, y)
    assert ok
    np.testing.assert_allclose(b0, ref.intercept_[0], atol=1e-6)
    np.testing.assert_allclose(w, ref.coef_[0], atol=1e-6)


def test_penalized_logistic_unpenalised_is_the_glm_and_mixed_meets_kkt():
    from flowtools.stats._glm import penalized_logistic

    x, y = _logistic_data(9)
    b0, w, _ = penalized_logistic(x, y, np.zeros(x.shape[1]))
    ref = sm.GLM(y, sm.add_constant(x), family=sm.families.Binomial()).fit()
    np.testing.assert_allclose(np.r_[b0, w], ref.params, rtol=1e-7, atol=1e-9)
    # mixed: score equations are zero for the intercept and the free columns, lambda * b for the others
    lam = np.array([0.0, 0.0, 5.0, 5.0, 50.0, 50.0])
    b0, w, _ = penalized_logistic(x, y, lam)
    mu = 1 / (1 + np.exp(-(b0 + x @ w)))
    np.testing.assert_allclose(np.sum(y - mu), 0, atol=1e-8)
    np.testing.assert_allclose(x.T @ (y - mu), lam * w, atol=1e-8)
    # an overwhelming penalty on the others returns the GLM of the free columns alone
    b0, w, _ = penalized_logistic(x, y, np.r_[0.0, 0.0, np.full(4, 1e12)])
    ref2 = sm.GLM(y, sm.add_constant(x[:, :2]), family=sm.families.Binomial()).fit()
    np.testing.assert_allclose(np.r_[b0, w[:2]], ref2.params, rtol=1e-6)
    assert np.abs(w[2:]).max() < 1e-9


def test_calibration_slope_and_intercept_match_statsmodels():
    from flowtools.stats.predict import _calibration

    rng = np.random.default_rng(10)
    lp = rng.normal(-0.5, 1.0, 300)
    y = (rng.random(300) < 1 / (1 + np.exp(-(0.2 + 0.6 * lp)))).astype(float)
    p = 1 / (1 + np.exp(-lp))
    intercept, slope, brier = _calibration(y, p)
    ref = sm.GLM(y, sm.add_constant(lp), family=sm.families.Binomial()).fit()
    np.testing.assert_allclose(slope, ref.params[1], rtol=1e-7)
    # calibration-in-the-large: intercept with the linear predictor as offset (slope fixed at 1)
    ref_ci = sm.GLM(y, np.ones((300, 1)), family=sm.families.Binomial(), offset=lp).fit()
    np.testing.assert_allclose(intercept, ref_ci.params[0], rtol=1e-6)
    np.testing.assert_allclose(brier, np.mean((p - y) ** 2))


def test_penalized_logistic_separated_data_stays_finite_and_quiet():
    import warnings

    from flowtools.stats._glm import penalized_logistic

    x = np.r_[np.linspace(-2, -0.1, 20), np.linspace(0.1, 2, 20)][:, None]
    y = (x[:, 0] > 0).astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow in exp
        b0, w, _ = penalized_logistic(x, y, np.zeros(1))
        _, w_ridge, ok = penalized_logistic(x, y, np.ones(1))
    assert np.isfinite(b0) and w[0] > 50  # the MLE does not exist: large, finite, right sign
    assert ok and 0 < w_ridge[0] < w[0]
