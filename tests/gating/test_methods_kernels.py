"""Kernels of ``gmm`` and ``singlet`` against references; the mixture fit against scikit-learn.

- ``_mixture_kernels`` (EM), ``_kmeans_kernels`` (Lloyd, k-means++ distances, centring) and
  ``_singlet_kernels.line_lstsq`` against their references in ``tests/reference/methods_ref.py``:
  bit for bit where a kernel repeats numpy's operations in numpy's order, to rounding where it
  sums in another order;
- k-means++ seeding, the mixture fit and the ``gmm`` gate against scikit-learn itself (the same
  draws: bit for bit for the seeding, to rounding for the fit);
- the ``gmm`` method on awkward events: a valid ellipse or a named GatingError, whatever the layout.

The kernels of ``mindensity``, ``qc`` and the singlet band are checked in test_methods_speed_paths.py.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import methods_ref as R

from flowtools.errors import GatingError
from flowtools.gating.methods import Ellipse, MethodContext, get_method
from flowtools.gating.methods import _kmeans_kernels as KM
from flowtools.gating.methods import _mixture_kernels as K
from flowtools.gating.methods import _singlet_kernels as SK
from flowtools.gating.methods import mixture as MX


def _blobs(n: int, d: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(k, d))
    which = rng.integers(0, k, n)
    scales = rng.uniform(0.3, 1.5, size=(k, d))
    return np.ascontiguousarray(centers[which] + rng.normal(size=(n, d)) * scales[which])


def _bits(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float64)).view(np.int64)


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
    r_status, r_iter, rw, rm, rc = R.gmm_em_ref(x, labels, k)
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
    # and bit for bit the per-event loop of the reference, whatever the dimension's code path
    want_lp, want_top = R.log_prob_ref(x, w, means, prec, log_det)
    np.testing.assert_array_equal(top, want_top)
    np.testing.assert_array_equal(lp, want_lp)


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
    ok = K._m_step(np.ascontiguousarray(x.T), resp, sums, int(normalise), 1e-4, R.EPS10, w, means, covs,
                   prec, log_det)
    want = raw / raw.sum(axis=0) if normalise else raw
    if normalise:
        np.testing.assert_allclose(sums, raw.sum(axis=0), rtol=1e-14)
    np.testing.assert_allclose(resp, want, rtol=1e-14)
    nk, r_means, r_covs = R.m_step_ref(x, want.T, 1e-4)
    np.testing.assert_allclose(w, nk, rtol=1e-12)
    np.testing.assert_allclose(means, r_means, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(covs, r_covs, rtol=1e-10, atol=1e-12)
    assert ok
    r_prec = np.array([np.linalg.inv(np.linalg.cholesky(c)).T for c in r_covs])
    np.testing.assert_allclose(prec, r_prec, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(log_det, [np.log(np.diag(p)).sum() for p in r_prec], rtol=1e-8, atol=1e-10)


def test_m_step_raises_on_a_zero_column_sum():
    x = np.ones((2, 3))
    resp = np.zeros((2, 3))
    resp[0, 1] = 1.0  # events 0 and 2 have no responsibility at all
    params = (np.empty(2), np.empty((2, 2)), np.empty((2, 2, 2)), np.empty((2, 2, 2)), np.empty(2))
    with pytest.raises(ZeroDivisionError):
        K._m_step(np.ascontiguousarray(x.T), resp, np.empty(3), 1, 1e-4, R.EPS10, *params)


# ------------------------------------------------------------------------------------------ k-means


@pytest.mark.parametrize(("d", "k", "seed"), [(1, 3, 0), (2, 3, 1), (2, 4, 2), (3, 5, 3), (4, 3, 4)])
def test_kmeans_lloyd_matches_numpy_reference(d, k, seed):
    x = _blobs(4000, d, k, seed)
    x = x - x.mean(axis=0)
    init = x[np.random.default_rng(seed).choice(x.shape[0], k, replace=False)]
    tol = float(np.mean(np.var(x, axis=0))) * 1e-4
    centers = init.copy()
    labels = np.empty(x.shape[0], dtype=np.int64)
    n_iter = KM.kmeans_lloyd(x, centers, tol, 300, labels)
    r_labels, r_centers, r_iter = R.kmeans_lloyd_ref(x, init.copy(), tol)
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
    changed = KM._lloyd_step(np.ascontiguousarray(x.T), centers, new, weight, labels,
                            np.empty(n, dtype=np.int64), np.empty(n), shift, int(update))
    want = R.lloyd_assign_ref(x, centers)
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
    n_iter = KM.kmeans_lloyd(x, centers, tol, 300, labels)
    r_labels, r_centers, r_iter = R.kmeans_lloyd_ref(x, init.copy(), tol)
    s_labels, _, s_centers, s_iter = _kmeans_single_lloyd(
        x, np.ones(x.shape[0]), init.copy(), tol=tol, n_threads=1)
    assert n_iter == r_iter == s_iter
    np.testing.assert_array_equal(labels, r_labels)
    np.testing.assert_array_equal(labels, s_labels)
    np.testing.assert_allclose(centers, s_centers, rtol=1e-12, atol=1e-12)


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


@settings(max_examples=60, deadline=None)
@given(t=st.integers(1, 4), n=st.integers(1, 500), first=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_kpp_sq_dist_kernel(t, n, first, seed):
    rng = np.random.default_rng(seed)
    dot = rng.normal(size=(t, n)) * rng.choice([1.0, 1e3])
    dot[rng.random((t, n)) < 0.05] = np.nan
    cn, sq = rng.uniform(0.0, 5.0, t), rng.uniform(0.0, 5.0, n)
    closest = rng.uniform(0.0, 10.0, n)
    closest[rng.random(n) < 0.05] = np.nan
    want = R.kpp_sq_dist_ref(dot, cn, sq, closest, int(not first))
    got = dot.copy()
    KM.kpp_sq_dist(got, cn, sq, closest, int(not first))
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(_bits(got[~np.isnan(got)]), _bits(want[~np.isnan(want)]))


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 3000), d=st.integers(1, 3), kind=st.sampled_from(["blobs", "ties", "zeros", "const",
       "normal"]), seed=st.integers(0, 2**32 - 1))
def test_standardize_and_center_columns_kernels(n, d, kind, seed):
    rng = np.random.default_rng(seed)
    x = _awkward(rng, n, d, kind)
    center, scale = rng.normal(size=d), rng.uniform(0.1, 3.0, d)
    z = K.standardize(x, center, scale)
    assert z.flags.c_contiguous
    assert np.array_equal(_bits(z), _bits(R.standardize_ref(x, center, scale)))
    if d >= 2:
        for v in (z, np.full((n, d), -0.0)):  # all -0.0: numpy's sums start at +0.0
            got, want = KM.center_columns(v), R.center_columns_ref(v)
            assert np.array_equal(_bits(got[0]), _bits(want[0]))
            assert np.array_equal(_bits(got[1]), _bits(want[1]))
            if d == 2:  # (d = 3 takes einsum's own summation order in the caller)
                assert np.array_equal(_bits(got[2]), _bits(want[2]))


@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 600), d=st.integers(1, 3), k=st.integers(1, 7), levels=st.integers(1, 4),
       special=st.sampled_from(["none", "nan", "zeros"]), seed=st.integers(0, 2**32 - 1))
def test_distinct_rows_kernel(n, d, k, levels, special, seed):
    rng = np.random.default_rng(seed)
    z = rng.integers(0, levels, (n, d)).astype(float)
    if special == "nan" and n:
        z[rng.random((n, d)) < 0.01] = np.nan
    elif special == "zeros" and n:
        z[z == 0.0] = np.where(rng.random(int((z == 0.0).sum())) < 0.5, -0.0, 0.0)
    assert MX._has_distinct_rows(z, k) == R.distinct_rows_ref(z, k)
    if special != "nan":  # without NaN: at least k distinct rows
        assert MX._has_distinct_rows(z, k) == (np.unique(z, axis=0).shape[0] >= k)


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 600), d=st.integers(1, 3), k=st.integers(1, 6), levels=st.integers(1, 4),
       seed=st.integers(0, 2**32 - 1))
def test_has_distinct_rows_scans_past_alike_first_rows(n, d, k, levels, seed):
    z = np.random.default_rng(seed).integers(0, levels, size=(n, d)).astype(float)
    if n > 300:
        z[:290] = z[0]  # the first rows alike: the full scan decides
    assert MX._has_distinct_rows(z, k) == (np.unique(z, axis=0).shape[0] >= k)


# ------------------------------------------------------------------------------------------ vs scikit-learn


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 2000), d=st.integers(1, 3), k=st.integers(1, 6),
       kind=st.sampled_from(["blobs", "ties", "zeros", "const"]), seed=st.integers(0, 2**32 - 1))
def test_kmeans_plusplus_is_sklearns(n, d, k, kind, seed):
    from sklearn.cluster._kmeans import _kmeans_plusplus

    x = _awkward(np.random.default_rng(seed), n, d, kind)
    xc = x - x.mean(axis=0)
    sq = np.einsum("ij,ij->i", xc, xc)
    got = MX._kmeans_plusplus(xc, k, sq, np.random.RandomState(seed))
    if k > n:  # scikit-learn takes k <= n only
        assert got.shape == (k, d)
        return
    want, _ = _kmeans_plusplus(xc, k, x_squared_norms=sq, sample_weight=np.ones(n),
                               random_state=np.random.RandomState(seed))
    assert np.array_equal(_bits(got), _bits(want))  # same draws, same distances, same centres


@pytest.mark.parametrize(("n", "d", "k", "seed"),
                         [(5000, 1, 2, 0), (8000, 2, 3, 1), (20000, 2, 4, 2), (6000, 3, 3, 3),
                          (3000, 2, 5, 4), (4000, 2, 3, 11), (3000, 2, 1, 5)])
def test_fit_mixture_matches_sklearn_gaussian_mixture(n, d, k, seed):
    from sklearn.cluster import KMeans
    from sklearn.mixture import GaussianMixture

    z = _blobs(n, d, k, seed)
    status, n_iter, w, m, c = MX._fit_mixture(z, k, seed)
    gm = GaussianMixture(k, covariance_type="full", reg_covar=1e-4, max_iter=300, random_state=seed).fit(z)
    assert status == int(gm.converged_)
    assert n_iter == gm.n_iter_
    np.testing.assert_allclose(w, gm.weights_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(m, gm.means_, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(c, gm.covariances_, rtol=1e-9, atol=1e-10)
    # The initial labels are scikit-learn's k-means labels, event for event.
    km = KMeans(k, n_init=1, random_state=np.random.RandomState(seed)).fit(z)
    xc = z - z.mean(axis=0)
    centers = MX._kmeans_plusplus(xc, k, np.einsum("ij,ij->i", xc, xc), np.random.RandomState(seed))
    labels = np.empty(n, dtype=np.int64)
    KM.kmeans_lloyd(xc, centers, float(np.mean(np.var(z, axis=0))) * 1e-4, 300, labels)
    np.testing.assert_array_equal(labels, km.labels_)


@pytest.mark.parametrize("seed", [0, 3])
def test_gmm_gate_matches_the_sklearn_gate(seed):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal([55000, 14000], [6000, 3000], (30000, 2)),
                        rng.normal([90000, 60000], [15000, 20000], (15000, 2)),
                        rng.normal([20000, 8000], [5000, 3000], (8000, 2))])
    c = MethodContext("Root/lymphocytes", ("FSC-A", "SSC-A"), ((0.0, 262144.0),) * 2, seed)
    args = {"k": 3, "target": (55000.0, 14000.0), "level": 0.999, "max_events": 20_000}
    g = get_method("gmm").fn(x, c, **args)
    mean, cov = R.gmm_gate_ref(x, c.seed, k=3, target=args["target"], max_events=args["max_events"])
    np.testing.assert_allclose(g.mean, mean, rtol=1e-10)
    np.testing.assert_allclose(g.covariance, cov, rtol=1e-9)
    assert get_method("gmm").fn(x, c, **args) == g  # deterministic for a seed


@pytest.mark.parametrize(("d", "k", "target", "seed"),
                         [(1, 2, "largest", 0), (1, 3, "lowest_x", 1), (2, 3, "highest_y", 2),
                          (2, 2, (0.0, 0.0), 3), (3, 3, "highest_z", 4), (3, 2, "largest", 5)])
def test_gmm_gate_matches_the_sklearn_gate_for_every_target(d, k, target, seed):
    x = _blobs(6000, d, k, seed) * 1e4 + 5e4
    if isinstance(target, tuple):
        target = tuple(float(v) for v in x[0])
    c = MethodContext("Root/x", tuple("abc"[:d]), ((0.0, 262144.0),) * d, seed)
    g = get_method("gmm").fn(x, c, k=k, target=target, level=0.95, max_events=4000)
    mean, cov = R.gmm_gate_ref(x, seed, k=k, target=target, max_events=4000)
    np.testing.assert_allclose(g.mean, mean, rtol=1e-9)
    np.testing.assert_allclose(g.covariance, cov, rtol=1e-8, atol=1e-8 * np.abs(cov).max())
    assert g.distance_square == pytest.approx(R.chi2_ppf_ref(0.95, d), rel=1e-9)


_GMM_FAILURES = ("no spread", "fewer distinct events than components", "not positive definite",
                 "finite event(s)", "no events")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 3000), d=st.integers(1, 3), k=st.integers(1, 5),
       kind=st.sampled_from(["blobs", "ties", "zeros", "const"]),
       max_events=st.sampled_from([100, 1000, 20_000]),
       target=st.sampled_from(["largest", "highest_x", "lowest_y", "point"]), seed=st.integers(0, 2**32 - 1))
def test_gmm_on_awkward_events_gives_an_ellipse_or_a_named_error(n, d, k, kind, max_events, target, seed):
    rng = np.random.default_rng(seed)
    x = _awkward(rng, n, d, kind)
    tgt = tuple(float(v) for v in rng.normal(size=d)) if target == "point" else target
    if target == "lowest_y" and d < 2:
        tgt = "lowest_x"
    ctx = MethodContext("Root/x", tuple(f"d{i}" for i in range(d)), ((0.0, 1.0),) * d, int(seed % 5))
    args = {"k": k, "target": tgt, "level": 0.95, "max_events": max_events}
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            g = get_method("gmm").fn(x, ctx, **args)
        except GatingError as e:
            assert str(e).startswith("population 'Root/x': method 'gmm' cannot compute a gate: ")
            assert any(why in str(e) for why in _GMM_FAILURES), str(e)
            if n >= max(10, 5 * k) and kind == "const":
                assert "no spread" in str(e)
            return
        # the same ellipse, bit for bit, from the events in the other memory layout
        assert get_method("gmm").fn(np.asfortranarray(x), ctx, **args) == g
    assert isinstance(g, Ellipse)
    cov = np.array(g.covariance)
    assert np.isfinite(g.mean).all() and np.isfinite(cov).all()
    assert np.array_equal(cov, cov.T) and np.all(np.linalg.eigvalsh(cov) > 0)
    assert len(g.mean) == d and g.distance_square == pytest.approx(R.chi2_ppf_ref(0.95, d), rel=1e-9)
    sub = R.subsample_ref(x, max_events, ctx.seed)
    lo, hi = np.min(sub, axis=0), np.max(sub, axis=0)
    slack = 1e-9 * np.maximum(hi - lo, np.abs(sub).max(axis=0))  # a mean within the events' span
    assert np.all(lo - slack <= g.mean) and np.all(g.mean <= hi + slack)


def test_gmm_seed_out_of_range_is_a_gating_error():
    from flowtools.errors import GatingError

    x = _blobs(500, 2, 2, 0)
    c = MethodContext("Root/x", ("a", "b"), ((0.0, 1.0),) * 2, 2**40)
    with pytest.raises(GatingError, match="mixture fit failed"):
        get_method("gmm").fn(x, c, k=2, target="largest", level=0.9, max_events=1000)


# ------------------------------------------------------------------------------------------ singlet line fit


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 400), offset=st.floats(-1e5, 1e5), spread=st.floats(1e-2, 1e5),
       weighted=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_line_lstsq_is_about_as_accurate_as_the_svd(n, offset, spread, weighted, seed):
    rng = np.random.default_rng(seed)
    a = offset + spread * rng.random(n)
    if np.ptp(a) <= 1e-6 * max(1.0, abs(offset)):
        return  # (nearly) collinear: covered below
    sw = np.sqrt(1.0 / rng.uniform(0.5, 5.0, n)) if weighted else np.ones(n)
    design = np.column_stack([sw, a * sw])
    rhs = (3.0 + 0.9 * a + rng.normal(0, spread / 10 + 1, n)) * sw
    ok, x0, x1 = SK.line_lstsq(design, rhs, n)
    if not ok:  # declined: only nearly collinear columns, which go to the SVD
        v = design[:, 1] - design[:, 0] * (design[:, 0] @ design[:, 1]) / (design[:, 0] @ design[:, 0])
        assert v @ v <= 1.01e-8 * (design[:, 1] @ design[:, 1])
        return
    exact = R.line_lstsq_ref(design, rhs)
    svd = np.linalg.lstsq(design, rhs, rcond=None)[0]
    scale = np.abs(exact) + np.abs(exact[1]) * abs(offset) + 1e-300  # x0's conditioning grows with the offset
    ours_err = np.abs(np.array([x0, x1]) - exact) / scale
    svd_err = np.abs(svd - exact) / scale
    # Within a small factor of the SVD where x0 is ill-conditioned (a far offset), as good elsewhere.
    assert np.all(ours_err <= np.maximum(50 * svd_err, 1e-13))


def test_line_lstsq_uses_only_the_first_m_rows_and_declines_collinear_columns():
    a = np.array([1.0, 2.0, 3.0, 4.0, 1e9])
    design = np.column_stack([np.ones(5), a])
    rhs = 2.0 + 3.0 * a
    ok, x0, x1 = SK.line_lstsq(design, rhs, 4)
    assert ok and abs(x0 - 2.0) < 1e-12 and abs(x1 - 3.0) < 1e-12
    same = np.column_stack([np.ones(4), np.full(4, 7.0)])  # one area value
    assert SK.line_lstsq(same, np.arange(4.0), 4)[0] is False
    assert SK.line_lstsq(np.zeros((3, 2)), np.ones(3), 3)[0] is False
    assert SK.line_lstsq(design, rhs, 0)[0] is False
