"""Kernels and fast paths of the gating methods against plain-numpy references and scikit-learn.

- ``gmm_em`` / ``kmeans_lloyd`` (numba) against plain-numpy EM / Lloyd written from
  scikit-learn's formulas, and ``_fit_mixture`` against ``GaussianMixture`` itself
  (the same k-means++ draws, Lloyd iterations and EM: equal to rounding);
- the sorted-order shortcuts of ``singlet`` (``_scale_model``) and ``qc`` (``_ranks``)
  against the straightforward code they replaced: bit-for-bit equal.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowtools.errors import GatingError
from flowtools.gating import _methods as M
from flowtools.gating import _methods_kernels as K
from flowtools.gating.methods import Ellipse, MethodContext, get_method

_EPS10 = 10 * np.finfo(np.float64).eps


def _blobs(n: int, d: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(k, d))
    which = rng.integers(0, k, n)
    scales = rng.uniform(0.3, 1.5, size=(k, d))
    return np.ascontiguousarray(centers[which] + rng.normal(size=(n, d)) * scales[which])


# ------------------------------------------------------------------------------------------ references


def _m_step_ref(x, resp, reg):
    nk = resp.sum(axis=0) + _EPS10
    means = resp.T @ x / nk[:, None]
    d = x.shape[1]
    covs = np.empty((resp.shape[1], d, d))
    for j in range(resp.shape[1]):
        diff = x - means[j]
        covs[j] = (resp[:, j] * diff.T) @ diff / nk[j]
        covs[j].flat[:: d + 1] += reg
    return nk, means, covs


def gmm_em_ref(x, labels, k, reg=1e-4, tol=1e-3, max_iter=300):
    """Plain-numpy EM of a full-covariance mixture from hard labels (scikit-learn's formulas)."""
    n, d = x.shape
    resp = np.zeros((n, k))
    resp[np.arange(n), labels] = 1.0
    nk, means, covs = _m_step_ref(x, resp, reg)
    w = nk / n
    lower = -np.inf
    for it in range(1, max_iter + 1):
        prev = lower
        prec = [np.linalg.inv(np.linalg.cholesky(c)).T for c in covs]
        logp = np.stack(
            [-0.5 * (d * math.log(2 * math.pi) + (((x - means[j]) @ prec[j]) ** 2).sum(axis=1))
             + np.log(np.diag(prec[j])).sum() for j in range(k)], axis=1) + np.log(w)
        top = logp.max(axis=1)
        norm = top + np.log(np.exp(logp - top[:, None]).sum(axis=1))
        lower = norm.mean()
        nk, means, covs = _m_step_ref(x, np.exp(logp - norm[:, None]), reg)
        w = nk / nk.sum()
        if abs(lower - prev) < tol:
            return 1, it, w, means, covs
    return 0, max_iter, w, means, covs


def kmeans_lloyd_ref(x, centers, tol, max_iter=300):
    """Plain-numpy Lloyd iterations (scikit-learn's ``_kmeans_single_lloyd``, unit weights)."""
    k = centers.shape[0]
    labels = np.full(x.shape[0], -1)
    old = labels.copy()
    strict = False

    def assign(c):
        return np.argmin((c**2).sum(axis=1)[None, :] - 2.0 * (x @ c.T), axis=1)

    it = 0
    while it < max_iter:
        it += 1
        labels = assign(centers)
        counts = np.bincount(labels, minlength=k).astype(float)
        sums = np.zeros_like(centers)
        np.add.at(sums, labels, x)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            far = ((x - centers[labels]) ** 2).sum(axis=1)
            order = np.argsort(-far, kind="stable")
            for e, j in enumerate(empty):
                i = order[e]
                sums[labels[i]] -= x[i]
                sums[j] = x[i]
                counts[labels[i]] -= 1
                counts[j] = 1
        new = sums / counts[:, None]
        shift = np.sqrt(((new - centers) ** 2).sum(axis=1))
        centers = new
        if np.array_equal(labels, old):
            strict = True
            break
        if (shift**2).sum() <= tol:
            break
        old = labels
    if not strict:
        labels = assign(centers)
    return labels, centers, it


# ------------------------------------------------------------------------------------------ EM


@pytest.mark.parametrize(("d", "k", "seed"),
                         [(1, 2, 0), (1, 3, 1), (2, 1, 2), (2, 3, 3), (2, 4, 4), (3, 3, 5), (2, 6, 6),
                          (4, 3, 7)])
def test_gmm_em_matches_numpy_reference(d, k, seed):
    x = _blobs(3000, d, k, seed)
    labels = np.random.default_rng(seed).integers(0, k, x.shape[0])
    labels[:k] = np.arange(k)  # every component starts with members
    w, m, c = np.empty(k), np.empty((k, d)), np.empty((k, d, d))
    status, n_iter, _ = K.gmm_em(x, labels, 1e-4, 1e-3, 300, w, m, c)
    r_status, r_iter, rw, rm, rc = gmm_em_ref(x, labels, k)
    assert (status, n_iter) == (r_status, r_iter)
    np.testing.assert_allclose(w, rw, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(m, rm, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c, rc, rtol=1e-10, atol=1e-12)


def test_gmm_em_reports_a_singular_covariance():
    x = np.zeros((50, 2))
    x[25:] = 1.0
    w, m, c = np.empty(2), np.empty((2, 2)), np.empty((2, 2, 2))
    status, _, _ = K.gmm_em(x, np.repeat([0, 1], 25), 0.0, 1e-3, 300, w, m, c)
    assert status == -1


def _mixture_params(d, k, rng):
    """Random weights, means and precision Cholesky factors (upper triangular, as the kernels keep them)."""
    w = rng.uniform(0.2, 1.0, k)
    w /= w.sum()
    means = rng.normal(scale=2.0, size=(k, d))
    covs = np.empty((k, d, d))
    for j in range(k):
        a = rng.normal(size=(d, d))
        covs[j] = a @ a.T + 0.3 * np.eye(d)
    prec = np.array([np.linalg.inv(np.linalg.cholesky(c)).T for c in covs])
    log_det = np.array([np.log(np.diag(p)).sum() for p in prec])
    return w, means, covs, prec, log_det


def _log_prob_loop(x, w, means, prec, log_det):
    """The per-event loop the d <= 3 fast paths write out: same operations, same order (so same bits)."""
    n, d = x.shape
    k = means.shape[0]
    out = np.empty((k, n))
    for j in range(k):
        const = -0.5 * (d * math.log(2.0 * math.pi)) + log_det[j] + math.log(w[j])
        for i in range(n):
            q = 0.0
            for c in range(d):
                s = 0.0
                for a in range(c + 1):
                    s += (x[i, a] - means[j, a]) * prec[j, a, c]
                q += s * s
            out[j, i] = const - 0.5 * q
    return out


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 200), d=st.integers(1, 5), k=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
def test_log_prob_kernel_matches_numpy(n, d, k, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=3.0, size=(n, d))
    w, means, _, prec, log_det = _mixture_params(d, k, rng)
    lp, top = np.empty((k, n)), np.empty(n)
    K._log_prob(np.ascontiguousarray(x.T), w, means, prec, log_det, lp, top)
    # numpy: log(w_j) + log N(x | mu_j, S_j), then minus the column maximum
    ref = np.stack([-0.5 * (d * math.log(2 * math.pi) + (((x - means[j]) @ prec[j]) ** 2).sum(axis=1))
                    + log_det[j] + np.log(w[j]) for j in range(k)])
    np.testing.assert_allclose(top, ref.max(axis=0), rtol=1e-12, atol=1e-12)
    shifted = ref - ref.max(axis=0)
    tiny = shifted < math.log(np.finfo(np.float64).tiny) + 1e-9  # exp() subnormal: flushed to -inf
    np.testing.assert_allclose(lp[~tiny], shifted[~tiny], rtol=1e-12, atol=1e-10)
    assert np.all((lp[tiny] == -np.inf) | (lp[tiny] < math.log(np.finfo(np.float64).tiny) + 1e-6))
    # and bit for bit the per-event loop, whatever the dimension's code path
    loop = _log_prob_loop(x, w, means, prec, log_det)
    loop_top = loop.max(axis=0)
    loop = loop - loop_top
    loop[loop < K._LOG_TINY] = -np.inf
    np.testing.assert_array_equal(top, loop_top)
    np.testing.assert_array_equal(lp, loop)


def test_log_prob_flushes_subnormal_responsibilities():
    x = np.array([[0.0], [40.0]])  # the second event is ~40 sd from component 0
    w = np.array([0.5, 0.5])
    means = np.array([[0.0], [40.0]])
    prec = np.ones((2, 1, 1))
    lp, top = np.empty((2, 2)), np.empty(2)
    K._log_prob(np.ascontiguousarray(x.T), w, means, prec, np.zeros(2), lp, top)
    assert lp[0, 0] == lp[1, 1] == 0.0
    assert lp[1, 0] == lp[0, 1] == -np.inf  # -800: exp() would be 0 or subnormal
    assert np.exp(-800.0) < np.finfo(np.float64).tiny


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 300), d=st.integers(1, 5), k=st.integers(1, 6), normalise=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_m_step_kernel_matches_numpy(n, d, k, normalise, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=3.0, size=(n, d))
    raw = rng.uniform(0.0, 1.0, (k, n))
    raw[rng.integers(0, k, n), np.arange(n)] = 1.0  # as exp(log_prob - top): the largest is 1
    resp = raw.copy()
    sums = np.full(n, np.nan)
    w, means, covs = np.empty(k), np.empty((k, d)), np.empty((k, d, d))
    prec, log_det = np.empty((k, d, d)), np.empty(k)
    ok = K._m_step(np.ascontiguousarray(x.T), resp, sums, int(normalise), 1e-4, _EPS10, w, means, covs, prec,
                   log_det)
    want = raw / raw.sum(axis=0) if normalise else raw
    if normalise:
        np.testing.assert_allclose(sums, raw.sum(axis=0), rtol=1e-14)
    np.testing.assert_allclose(resp, want, rtol=1e-14)
    nk, r_means, r_covs = _m_step_ref(x, want.T, 1e-4)
    np.testing.assert_allclose(w, nk, rtol=1e-12)
    np.testing.assert_allclose(means, r_means, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(covs, r_covs, rtol=1e-10, atol=1e-12)
    assert ok
    r_prec = np.array([np.linalg.inv(np.linalg.cholesky(c)).T for c in r_covs])
    np.testing.assert_allclose(prec, r_prec, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(log_det, [np.log(np.diag(p)).sum() for p in r_prec], rtol=1e-8, atol=1e-10)


def test_m_step_zero_column_sum_raises_as_before():
    x = np.ones((2, 3))
    resp = np.zeros((2, 3))
    resp[0, 1] = 1.0  # events 0 and 2 have no responsibility at all
    params = (np.empty(2), np.empty((2, 2)), np.empty((2, 2, 2)), np.empty((2, 2, 2)), np.empty(2))
    with pytest.raises(ZeroDivisionError):
        K._m_step(np.ascontiguousarray(x.T), resp, np.empty(3), 1, 1e-4, _EPS10, *params)


# ------------------------------------------------------------------------------------------ k-means


@pytest.mark.parametrize(("d", "k", "seed"), [(1, 3, 0), (2, 3, 1), (2, 4, 2), (3, 5, 3), (4, 3, 4)])
def test_kmeans_lloyd_matches_numpy_reference(d, k, seed):
    x = _blobs(4000, d, k, seed)
    x = x - x.mean(axis=0)
    init = x[np.random.default_rng(seed).choice(x.shape[0], k, replace=False)]
    tol = float(np.mean(np.var(x, axis=0))) * 1e-4
    centers = init.copy()
    labels = np.empty(x.shape[0], dtype=np.int64)
    n_iter = K.kmeans_lloyd(x, centers, tol, 300, labels)
    r_labels, r_centers, r_iter = kmeans_lloyd_ref(x, init.copy(), tol)
    assert n_iter == r_iter
    np.testing.assert_array_equal(labels, r_labels)
    np.testing.assert_allclose(centers, r_centers, rtol=1e-12, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 400), d=st.integers(1, 5), k=st.integers(1, 6), update=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_lloyd_step_kernel_matches_numpy(n, d, k, update, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=3.0, size=(n, d))
    centers = x[rng.integers(0, n, k)] + rng.normal(scale=0.1, size=(k, d))
    prev = rng.integers(-1, k, n)
    labels = prev.copy()
    new, weight, shift = np.full((k, d), np.nan), np.empty(k), np.empty(k)
    changed = K._lloyd_step(np.ascontiguousarray(x.T), centers, new, weight, labels,
                            np.empty(n, dtype=np.int64), np.empty(n), shift, int(update))
    dist = (centers**2).sum(axis=1)[None, :] - 2.0 * (x @ centers.T)
    want = np.argmin(dist, axis=1)
    np.testing.assert_array_equal(labels, want)
    assert changed == int((want != prev).sum())
    if not update:
        assert np.isnan(new).all()
        return
    counts = np.bincount(want, minlength=k)
    if (counts == 0).any():  # relocation: see test_kmeans_lloyd_relocates_an_empty_cluster_like_sklearn
        return
    sums = np.zeros((k, d))
    np.add.at(sums, want, x)
    np.testing.assert_array_equal(weight, counts)
    np.testing.assert_allclose(new, sums / counts[:, None], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(shift, np.sqrt(((new - centers) ** 2).sum(axis=1)), rtol=1e-12, atol=1e-12)


def test_kmeans_lloyd_relocates_an_empty_cluster_like_sklearn():
    from sklearn.cluster._kmeans import _kmeans_single_lloyd

    x = _blobs(2000, 2, 3, 7)
    x = x - x.mean(axis=0)
    init = np.array([x[0], x[1], [1e3, 1e3]])  # the far centre wins no event at first
    tol = float(np.mean(np.var(x, axis=0))) * 1e-4
    centers = init.copy()
    labels = np.empty(x.shape[0], dtype=np.int64)
    n_iter = K.kmeans_lloyd(x, centers, tol, 300, labels)
    r_labels, r_centers, r_iter = kmeans_lloyd_ref(x, init.copy(), tol)
    s_labels, _, s_centers, s_iter = _kmeans_single_lloyd(
        x, np.ones(x.shape[0]), init.copy(), tol=tol, n_threads=1)
    assert n_iter == r_iter == s_iter
    np.testing.assert_array_equal(labels, r_labels)
    np.testing.assert_array_equal(labels, s_labels)
    np.testing.assert_allclose(centers, s_centers, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------ vs scikit-learn


@pytest.mark.parametrize(("n", "d", "k", "seed"),
                         [(5000, 1, 2, 0), (8000, 2, 3, 1), (20000, 2, 4, 2), (6000, 3, 3, 3),
                          (3000, 2, 5, 4), (4000, 2, 3, 11), (3000, 2, 1, 5)])
def test_fit_mixture_matches_sklearn_gaussian_mixture(n, d, k, seed):
    from sklearn.cluster import KMeans
    from sklearn.mixture import GaussianMixture

    z = _blobs(n, d, k, seed)
    status, n_iter, w, m, c = M._fit_mixture(z, k, seed)
    gm = GaussianMixture(k, covariance_type="full", reg_covar=1e-4, max_iter=300, random_state=seed).fit(z)
    assert status == int(gm.converged_)
    assert n_iter == gm.n_iter_
    np.testing.assert_allclose(w, gm.weights_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(m, gm.means_, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(c, gm.covariances_, rtol=1e-9, atol=1e-10)
    # The initial labels are scikit-learn's k-means labels, event for event.
    km = KMeans(k, n_init=1, random_state=np.random.RandomState(seed)).fit(z)
    xc = z - z.mean(axis=0)
    centers = M._kmeans_plusplus(xc, k, np.einsum("ij,ij->i", xc, xc), np.random.RandomState(seed))
    labels = np.empty(n, dtype=np.int64)
    K.kmeans_lloyd(xc, centers, float(np.mean(np.var(z, axis=0))) * 1e-4, 300, labels)
    np.testing.assert_array_equal(labels, km.labels_)


def _gmm_sklearn_ref(values, ctx, *, k, target, level, max_events):
    """The gmm method as it was with scikit-learn's GaussianMixture (same standardisation and pick)."""
    from sklearn.mixture import GaussianMixture

    x = M._subsample(np.asarray(values, dtype=np.float64), max_events, ctx.seed)
    center = np.median(x, axis=0)
    scale = np.array([M._robust_center_scale(x[:, j])[1] or float(np.std(x[:, j]))
                      for j in range(x.shape[1])])
    z = (x - center) / scale
    gm = GaussianMixture(k, covariance_type="full", reg_covar=1e-4, max_iter=300, random_state=ctx.seed)
    gm.fit(z)
    means = gm.means_ * scale + center
    pick = int(np.argmin(((means - np.asarray(target)) ** 2).sum(axis=1)))
    return means[pick], gm.covariances_[pick] * np.outer(scale, scale)


@pytest.mark.parametrize("seed", [0, 3])
def test_gmm_gate_matches_the_sklearn_gate(seed):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal([55000, 14000], [6000, 3000], (30000, 2)),
                        rng.normal([90000, 60000], [15000, 20000], (15000, 2)),
                        rng.normal([20000, 8000], [5000, 3000], (8000, 2))])
    c = MethodContext("Root/lymphocytes", ("FSC-A", "SSC-A"), ((0.0, 262144.0),) * 2, seed)
    args = {"k": 3, "target": (55000.0, 14000.0), "level": 0.999, "max_events": 20_000}
    g = get_method("gmm").fn(x, c, **args)
    mean, cov = _gmm_sklearn_ref(x, c, **args)
    np.testing.assert_allclose(g.mean, mean, rtol=1e-10)
    np.testing.assert_allclose(g.covariance, cov, rtol=1e-9)
    assert get_method("gmm").fn(x, c, **args) == g  # deterministic for a seed


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 600), d=st.integers(1, 3), k=st.integers(1, 6), levels=st.integers(1, 4),
       seed=st.integers(0, 2**32 - 1))
def test_has_distinct_rows_counts_like_unique(n, d, k, levels, seed):
    z = np.random.default_rng(seed).integers(0, levels, size=(n, d)).astype(float)
    if n > 300:
        z[:290] = z[0]  # the first rows alike: the full scan decides
    assert M._has_distinct_rows(z, k) == (np.unique(z, axis=0).shape[0] >= k)


# ------------------------------------------------------------------------------------------ medians, sorting


@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 2000), ties=st.booleans(), special=st.sampled_from(["none", "nan", "inf", "zeros"]),
       seed=st.integers(0, 2**32 - 1))
def test_median_is_numpy_median_bit_for_bit(n, ties, special, seed):
    rng = np.random.default_rng(seed)
    v = rng.integers(-3, 4, n).astype(float) if ties else rng.normal(size=n) * 1e3
    if n and special == "nan":
        v[rng.integers(0, n)] = np.nan
    elif n and special == "inf":
        v[rng.random(n) < 0.2] = np.inf
        v[rng.random(n) < 0.1] = -np.inf
    elif special == "zeros":
        v[rng.random(n) < 0.5] = 0.0
        v[rng.random(n) < 0.5] *= -1.0
    with np.errstate(invalid="ignore"):
        want = float(np.median(v)) if n else math.nan
    got = M._median(v)
    assert (math.isnan(got) and math.isnan(want)) or got == want
    assert math.copysign(1.0, got) == math.copysign(1.0, want) or math.isnan(want)




# ------------------------------------------------------------------------------------------ singlet / qc


def _scale_model_old(a, e, floor):
    """``_scale_model`` before it took pre-sorted input (argsort and np.median of every bin)."""
    order = np.argsort(a, kind="stable")
    a_s, e_s = a[order], e[order]
    edges = np.quantile(a_s, np.linspace(0.0, 1.0, 17))
    which = np.clip(np.searchsorted(edges, a_s, side="right") - 1, 0, 15)
    bounds = np.searchsorted(which, np.arange(17), side="left")
    mids, scales = [], []
    for b in range(16):
        lo, hi = bounds[b], bounds[b + 1]
        if hi - lo >= 10:
            eb = e_s[lo:hi]
            mids.append(float(np.median(a_s[lo:hi])))
            scales.append(M._MAD_SD * float(np.median(np.abs(eb - np.median(eb)))))
    if len(mids) < 2 or np.ptp(mids) == 0:
        return max(M._robust_center_scale(e)[1], floor), 0.0
    c1, c0 = np.polyfit(np.asarray(mids), np.asarray(scales), 1)
    return float(c0), float(c1)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(5, 3000), ties=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_scale_model_on_sorted_subsets_is_bit_identical(n, ties, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(-3, 30, n).astype(float) if ties else rng.lognormal(10, 1, n)
    a[rng.random(n) < 0.2] *= -1.0  # -0.0 among the ties
    e = rng.normal(size=n) * (1 + a / a.max())
    keep = rng.random(n) < 0.8
    order = np.argsort(a, kind="stable")
    kept = order[keep[order]]  # what singlet passes
    assert _scale_model_old(a[keep], e[keep], 1e-9) == M._scale_model(a[kept], e[kept], 1e-9)


def _ranks_old(v):
    q = np.quantile(np.sort(v[:: max(1, v.size // 200_000)]), np.linspace(0.0, 1.0, 1001))
    xp, inv = np.unique(q, return_inverse=True)
    fp = np.bincount(inv, weights=np.linspace(0.0, 1.0, 1001)) / np.bincount(inv)
    if xp.size == 1:
        return np.full(v.size, 0.5)
    return np.interp(v, xp, fp)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 5000), ties=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_ranks_in_sorted_order_are_bit_identical(n, ties, seed):
    rng = np.random.default_rng(seed)
    v = rng.integers(-3, 4, n).astype(float) if ties else rng.normal(size=n)
    if ties:
        v[rng.random(n) < 0.3] *= -1.0  # -0.0 beside 0.0
    np.testing.assert_array_equal(M._ranks(v), _ranks_old(v))


def test_qc_same_windows_for_events_in_time_order_or_not():
    rng = np.random.default_rng(5)
    n = 30000
    t = np.sort(rng.uniform(0, 600, n))
    sig = rng.normal(size=(n, 2))
    sig[(t > 200) & (t < 230)] += 3.0  # a signal shift
    x = np.column_stack([t, sig])
    c = MethodContext("Root/qc", ("Time", "a", "b"), ((0.0, 600.0),) * 3, 0)
    args = {"bins": 100, "binning": "count", "z": 4.0, "min_events": 20, "min_run": 1}
    ordered = get_method("qc").fn(x, c, **args)
    shuffled = get_method("qc").fn(x[rng.permutation(n)], c, **args)
    assert ordered == shuffled
    assert len(ordered.windows) >= 2


def test_gmm_seed_out_of_range_is_a_gating_error():
    from flowtools.errors import GatingError

    x = _blobs(500, 2, 2, 0)
    c = MethodContext("Root/x", ("a", "b"), ((0.0, 1.0),) * 2, 2**40)
    with pytest.raises(GatingError, match="mixture fit failed"):
        get_method("gmm").fn(x, c, k=2, target="largest", level=0.9, max_events=1000)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 3000),
    ties=st.booleans(),
    zeros=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_quantiles_sorted_equal_np_quantile_bit_for_bit(n, ties, zeros, seed):
    from flowtools.gating._methods import _quantiles_sorted

    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, n).astype(float) if ties else rng.normal(0, 1e3, n)
    if zeros:
        x[rng.random(n) < 0.2] = -0.0
    q = np.concatenate([[0.0, 1.0, 0.5, 0.001, 0.999], rng.random(20), np.linspace(0, 1, 17)])
    got = _quantiles_sorted(np.sort(x), q, unsorted=x)
    want = np.quantile(x, q)
    assert np.array_equal(got.view(np.int64), want.view(np.int64))  # same bits, signed zeros included
    s = np.sort(x)  # callers that hold only the sorted values: np.quantile of those
    assert np.array_equal(_quantiles_sorted(s, q).view(np.int64), np.quantile(s, q).view(np.int64))


def test_quantiles_sorted_nan_and_empty_go_to_numpy():
    from flowtools.gating._methods import _quantiles_sorted

    s = np.array([1.0, 2.0, np.nan])
    assert np.isnan(_quantiles_sorted(s, np.array([0.5]))).all()
    with pytest.raises((ValueError, IndexError)):  # as np.quantile of nothing
        _quantiles_sorted(np.array([]), np.array([0.5]))


def _exact_line(design: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """The least-squares solution of a two-column system in rationals (normal equations, exact)."""
    from fractions import Fraction

    d = [[Fraction(float(v)) for v in col] for col in design.T]
    y = [Fraction(float(v)) for v in rhs]
    a11 = sum(u * u for u in d[0])
    a12 = sum(u * w for u, w in zip(d[0], d[1], strict=True))
    a22 = sum(u * u for u in d[1])
    b1 = sum(u * w for u, w in zip(d[0], y, strict=True))
    b2 = sum(u * w for u, w in zip(d[1], y, strict=True))
    det = a11 * a22 - a12 * a12
    return np.array([float((b1 * a22 - a12 * b2) / det), float((a11 * b2 - a12 * b1) / det)])


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 400), offset=st.floats(-1e5, 1e5), spread=st.floats(1e-2, 1e5),
       weighted=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_line_lstsq_is_about_as_accurate_as_the_svd(n, offset, spread, weighted, seed):
    from flowtools.gating._methods_kernels import line_lstsq

    rng = np.random.default_rng(seed)
    a = offset + spread * rng.random(n)
    if np.ptp(a) <= 1e-6 * max(1.0, abs(offset)):
        return  # (nearly) collinear: covered below
    sw = np.sqrt(1.0 / rng.uniform(0.5, 5.0, n)) if weighted else np.ones(n)
    design = np.column_stack([sw, a * sw])
    rhs = (3.0 + 0.9 * a + rng.normal(0, spread / 10 + 1, n)) * sw
    ok, x0, x1 = line_lstsq(design, rhs, n)
    if not ok:  # declined: only nearly collinear columns, which go to the SVD
        v = design[:, 1] - design[:, 0] * (design[:, 0] @ design[:, 1]) / (design[:, 0] @ design[:, 0])
        assert v @ v <= 1.01e-8 * (design[:, 1] @ design[:, 1])
        return
    exact = _exact_line(design, rhs)
    svd = np.linalg.lstsq(design, rhs, rcond=None)[0]
    scale = np.abs(exact) + np.abs(exact[1]) * abs(offset) + 1e-300  # x0's conditioning grows with the offset
    ours_err = np.abs(np.array([x0, x1]) - exact) / scale
    svd_err = np.abs(svd - exact) / scale
    # Within a small factor of the SVD where x0 is ill-conditioned (a far offset), as good elsewhere.
    assert np.all(ours_err <= np.maximum(50 * svd_err, 1e-13))


def test_line_lstsq_uses_only_the_first_m_rows_and_declines_collinear_columns():
    from flowtools.gating._methods_kernels import line_lstsq

    a = np.array([1.0, 2.0, 3.0, 4.0, 1e9])
    design = np.column_stack([np.ones(5), a])
    rhs = 2.0 + 3.0 * a
    ok, x0, x1 = line_lstsq(design, rhs, 4)
    assert ok and abs(x0 - 2.0) < 1e-12 and abs(x1 - 3.0) < 1e-12
    same = np.column_stack([np.ones(4), np.full(4, 7.0)])  # one area value
    assert line_lstsq(same, np.arange(4.0), 4)[0] is False
    assert line_lstsq(np.zeros((3, 2)), np.ones(3), 3)[0] is False
    assert line_lstsq(design, rhs, 0)[0] is False


# ------------------------------------------------------------------------------------------ gmm fast paths
# Verbatim copies of gmm and its helpers before the center_columns / kpp_sq_dist / standardize
# kernels (``*_prev``); the new code must return the same ellipse, float for float.


def _bits(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float64)).view(np.int64)


def _has_distinct_rows_prev(z, k):
    if k <= 1:
        return z.shape[0] > 0
    if z.shape[0] > 256 and np.unique(z[:256], axis=0).shape[0] >= k:
        return True
    rest = z
    for _ in range(k - 1):
        if rest.shape[0] == 0:
            return False
        rest = rest[(rest != rest[0]).any(axis=1)]
    return rest.shape[0] > 0


def _kmeans_plusplus_prev(x, k, sq_norms, rs):
    n = x.shape[0]
    weight = np.ones(n)
    trials = 2 + int(np.log(k))
    centers = np.empty((k, x.shape[1]))
    first = rs.choice(n, p=weight / weight.sum())
    centers[0] = x[first]

    def sq_dist(c):
        d = -2 * (c @ x.T)
        d += np.einsum("ij,ij->i", c, c)[:, None]
        d += sq_norms[None, :]
        return np.maximum(d, 0, out=d)

    closest = sq_dist(centers[0, np.newaxis])
    pot = closest @ weight
    for c in range(1, k):
        draws = rs.uniform(size=trials) * pot
        cand = np.searchsorted(np.cumsum(weight * closest), draws)
        np.clip(cand, None, closest.size - 1, out=cand)
        dist = sq_dist(x[cand])
        np.minimum(closest, dist, out=dist)
        cand_pot = dist @ weight.reshape(-1, 1)
        best = np.argmin(cand_pot)
        pot = cand_pot[best]
        closest = dist[best]
        centers[c] = x[cand[best]]
    return centers


def _fit_mixture_prev(z, k, seed):
    rs = np.random.RandomState(seed)
    z = np.ascontiguousarray(z, dtype=np.float64)
    tol = float(np.mean(np.var(z, axis=0))) * M._KMEANS_TOL
    xc = z - z.mean(axis=0)
    centers = _kmeans_plusplus_prev(xc, k, np.einsum("ij,ij->i", xc, xc), rs)
    labels = np.empty(z.shape[0], dtype=np.int64)
    K.kmeans_lloyd(xc, centers, tol, M._KMEANS_MAX_ITER, labels)
    d = z.shape[1]
    weights, means, covs = np.empty(k), np.empty((k, d)), np.empty((k, d, d))
    status, n_iter, _ = K.gmm_em(z, labels, M._GMM_REG_COVAR, M._GMM_TOL, M._GMM_MAX_ITER, weights, means,
                                 covs)
    return int(status), int(n_iter), weights, means, covs


def gmm_prev(values, ctx, *, k, target, level, max_events):
    full = M._finite_rows(values, ctx, "gmm", min_n=max(10, 5 * k))
    d = full.shape[1]
    if isinstance(target, tuple) and len(target) != d:
        raise M._fail(
            ctx, "gmm", f"target point {list(target)} has {len(target)} coordinates for {d} dimensions"
        )
    if isinstance(target, str) and target != "largest" and "xyz".index(target[-1]) >= d:
        raise M._fail(ctx, "gmm",
                      f"target {target!r} needs {'xyz'.index(target[-1]) + 1} dimensions, got {d}")
    x = M._subsample(full, max_events, ctx.seed)
    center = np.array([M._median(x[:, j]) for j in range(d)])
    scale = np.array([M._robust_center_scale(x[:, j])[1] or float(np.std(x[:, j])) for j in range(d)])
    if not np.all(scale > 0):
        raise M._fail(ctx, "gmm", "a dimension has no spread (all values identical)")
    z = (x - center) / scale
    if not _has_distinct_rows_prev(z, k):
        raise M._fail(ctx, "gmm", f"fewer distinct events than components (k={k})")
    try:
        status, n_iter, weights, mix_means, mix_covs = _fit_mixture_prev(z, k, ctx.seed)
    except ValueError as exc:
        raise M._fail(ctx, "gmm", f"the mixture fit failed ({exc})") from None
    if status < 0:
        raise M._fail(ctx, "gmm",
                      "the mixture fit failed (a component's covariance is not positive definite)")
    means = mix_means * scale + center
    if isinstance(target, tuple):
        pick = int(np.argmin(((means - np.asarray(target)) ** 2).sum(axis=1)))
    elif target == "largest":
        pick = int(np.argmax(weights))
    else:
        col = means[:, "xyz".index(target[-1])]
        pick = int(np.argmax(col) if target.startswith("highest") else np.argmin(col))
    cov = mix_covs[pick] * np.outer(scale, scale)
    return Ellipse(
        tuple(float(m) for m in means[pick]),
        tuple(tuple(float(c) for c in row) for row in cov),
        M._chi2_ppf(level, d),
    )


def _awkward(rng, n, d, kind):
    """Events with ties, signed zeros, constant columns or clusters, as gmm may get them."""
    if kind == "blobs":
        return _blobs(n, d, 3, int(rng.integers(0, 2**31))) * rng.choice([1.0, 1e4])
    if kind == "ties":
        return rng.integers(-2, 3, (n, d)).astype(float)
    if kind == "zeros":
        x = rng.normal(size=(n, d))
        x[rng.random((n, d)) < 0.3] = 0.0
        x[rng.random((n, d)) < 0.2] = -0.0
        return x
    if kind == "normal":  # columns of one magnitude: every rounding step shows
        return rng.normal(size=(n, d)) * 1e3
    x = rng.normal(size=(n, d))  # "const": one constant column
    x[:, int(rng.integers(0, d))] = rng.choice([0.0, -0.0, 2.5])
    return x


def _same_or_same_error(new, old):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            want = old()
        except GatingError as e:
            with pytest.raises(GatingError) as got:
                new()
            assert str(got.value) == str(e)
            return
        got = new()
    assert got == want
    assert np.array_equal(_bits([*got.mean, *np.ravel(got.covariance), got.distance_square]),
                          _bits([*want.mean, *np.ravel(want.covariance), want.distance_square]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 3000), d=st.integers(1, 3), k=st.integers(1, 5),
       kind=st.sampled_from(["blobs", "ties", "zeros", "const"]),
       max_events=st.sampled_from([100, 1000, 20_000]),
       target=st.sampled_from(["largest", "highest_x", "lowest_y", "point"]), seed=st.integers(0, 2**32 - 1))
def test_gmm_matches_the_previous_gmm_bit_for_bit(n, d, k, kind, max_events, target, seed):
    rng = np.random.default_rng(seed)
    x = _awkward(rng, n, d, kind)
    tgt = tuple(float(v) for v in rng.normal(size=d)) if target == "point" else target
    if target == "lowest_y" and d < 2:
        tgt = "lowest_x"
    ctx = MethodContext("Root/x", tuple(f"d{i}" for i in range(d)), ((0.0, 1.0),) * d, int(seed % 5))
    args = {"k": k, "target": tgt, "level": 0.95, "max_events": max_events}
    _same_or_same_error(lambda: get_method("gmm").fn(x, ctx, **args), lambda: gmm_prev(x, ctx, **args))


def test_gmm_matches_the_previous_gmm_on_cohort_like_events():
    for seed in range(6):
        x = _blobs(30_000, 2, 3, seed) * 1e4 + 5e4
        ctx = MethodContext("Root/x", ("a", "b"), ((0.0, 262144.0),) * 2, seed)
        for args in ({"k": 3, "target": (55000.0, 14000.0), "level": 0.999, "max_events": 10_000},
                     {"k": 2, "target": "largest", "level": 0.95, "max_events": 20_000}):
            _same_or_same_error(functools.partial(M.gmm, x, ctx, **args),
                                functools.partial(gmm_prev, x, ctx, **args))


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 3000), d=st.integers(1, 3), kind=st.sampled_from(["blobs", "ties", "zeros", "const",
       "normal"]), seed=st.integers(0, 2**32 - 1))
def test_standardize_and_center_columns_are_numpy(n, d, kind, seed):
    rng = np.random.default_rng(seed)
    x = _awkward(rng, n, d, kind)
    center, scale = rng.normal(size=d), rng.uniform(0.1, 3.0, d)
    z = K.standardize(x, center, scale)
    assert z.flags.c_contiguous
    assert np.array_equal(_bits(z), _bits((x - center) / scale))
    if d >= 2:
        xc, var, sq = K.center_columns(z)
        want_xc = z - z.mean(axis=0)
        assert np.array_equal(_bits(xc), _bits(want_xc))
        assert np.array_equal(_bits(var), _bits(np.var(z, axis=0)))
        if d == 2:  # (d = 3 takes einsum's own)
            assert np.array_equal(_bits(sq), _bits(np.einsum("ij,ij->i", want_xc, want_xc)))
        neg = np.full((n, d), -0.0)  # all -0.0: numpy's sums start at +0.0
        xc, var, sq = K.center_columns(neg)
        assert np.array_equal(_bits(xc), _bits(neg - neg.mean(axis=0)))
        assert np.array_equal(_bits(var), _bits(np.var(neg, axis=0)))


@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 600), d=st.integers(1, 3), k=st.integers(1, 7), levels=st.integers(1, 4),
       special=st.sampled_from(["none", "nan", "zeros"]), seed=st.integers(0, 2**32 - 1))
def test_has_distinct_rows_is_the_previous_one(n, d, k, levels, special, seed):
    rng = np.random.default_rng(seed)
    z = rng.integers(0, levels, (n, d)).astype(float)
    if special == "nan" and n:
        z[rng.random((n, d)) < 0.01] = np.nan
    elif special == "zeros" and n:
        z[z == 0.0] = np.where(rng.random(int((z == 0.0).sum())) < 0.5, -0.0, 0.0)
    assert M._has_distinct_rows(z, k) == _has_distinct_rows_prev(z, k)


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 3000), seed=st.integers(0, 2**32 - 1))
def test_uniform_choice_is_randomstate_choice(n, seed):
    a, b = np.random.RandomState(seed), np.random.RandomState(seed)
    w = np.ones(n)
    for _ in range(3):  # the cached cdf too
        assert M._uniform_choice(a, n) == b.choice(n, p=w / w.sum())
    assert np.array_equal(a.uniform(size=4), b.uniform(size=4))  # the same draws were taken


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 2000), d=st.integers(1, 3), k=st.integers(1, 6),
       kind=st.sampled_from(["blobs", "ties", "zeros", "const"]), seed=st.integers(0, 2**32 - 1))
def test_kmeans_plusplus_is_the_previous_one(n, d, k, kind, seed):
    x = _awkward(np.random.default_rng(seed), n, d, kind)
    xc = x - x.mean(axis=0)
    sq = np.einsum("ij,ij->i", xc, xc)
    got = M._kmeans_plusplus(xc, k, sq, np.random.RandomState(seed))
    want = _kmeans_plusplus_prev(xc, k, sq, np.random.RandomState(seed))
    assert np.array_equal(_bits(got), _bits(want))


@settings(max_examples=60, deadline=None)
@given(t=st.integers(1, 4), n=st.integers(1, 500), first=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_kpp_sq_dist_kernel_is_numpy(t, n, first, seed):
    rng = np.random.default_rng(seed)
    dot = rng.normal(size=(t, n)) * rng.choice([1.0, 1e3])
    dot[rng.random((t, n)) < 0.05] = np.nan
    cn, sq = rng.uniform(0.0, 5.0, t), rng.uniform(0.0, 5.0, n)
    closest = rng.uniform(0.0, 10.0, n)
    closest[rng.random(n) < 0.05] = np.nan
    want = -2 * dot
    want += cn[:, None]
    want += sq[None, :]
    np.maximum(want, 0, out=want)
    if not first:
        np.minimum(closest, want, out=want)
    got = dot.copy()
    K.kpp_sq_dist(got, cn, sq, closest, int(not first))
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(_bits(got[~np.isnan(got)]), _bits(want[~np.isnan(want)]))
