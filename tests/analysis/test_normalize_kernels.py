"""Numba kernels of batch normalisation against their plain-numpy references."""

from __future__ import annotations

import numpy as np
import pytest

from flowtools.analysis import _normalize_kernels as K
from flowtools.analysis.normalize_model import (
    TABLE,
    _quantiles,
    _Spline,
    blend_share_ref,
    build_tables,
    quantiles_t,
    soft_weights_ref,
)


def _quantile_pairs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Batch and goal quantiles of several kinds: smooth, with ties, two distinct values, a constant."""
    q = 41
    xs, ys = [], []
    for kind in range(6):
        x = np.sort(rng.normal(0, 1 + kind, q))
        y = np.sort(rng.normal(0.5, 2, q))
        if kind == 1:
            x[:12] = x[0]  # a pile of equal values
        elif kind == 2:
            x = np.r_[np.zeros(20), np.ones(21)]  # two distinct values
        elif kind == 3:
            x = np.full(q, 2.5)  # one value: a shift
        elif kind == 4:
            y[5:30] = y[5]  # flat goal
            y[30] = y[29] - 0.1  # and a dip the build removes
        xs.append(x)
        ys.append(y)
    return np.array(xs), np.array(ys)


def test_build_tables_matches_spline_reference() -> None:
    xq, yq = _quantile_pairs(np.random.default_rng(0))
    x0, xn, inv, slo, shi, blo, bhi, tab = build_tables(xq[None], yq[None], limit=0.3, max_slope=3.0)
    assert tab.shape == (1, len(xq), TABLE)
    for s in range(len(xq)):
        sp = _Spline.build(xq[s], yq[s], limit=0.3, max_slope=3.0)
        r0, rn, rinv, rlo, rhi, rtab = sp.table()
        np.testing.assert_allclose([x0[0, s], xn[0, s], inv[0, s], slo[0, s], shi[0, s]],
                                   [r0, rn, rinv, rlo, rhi], rtol=1e-12, atol=1e-12)
        assert (blo[0, s], bhi[0, s]) == pytest.approx((sp.lo, sp.hi), abs=1e-12)
        np.testing.assert_allclose(tab[0, s], rtab, rtol=0, atol=1e-12)


def test_apply_tables_matches_spline_calls() -> None:
    rng = np.random.default_rng(1)
    xq, yq = _quantile_pairs(rng)
    tabs = build_tables(xq[:, None], yq[:, None], limit=0.5, max_slope=4.0)  # 6 slots x 1 marker
    v = np.r_[rng.normal(0, 3, 500), [np.nan, -1e6, 1e6]]
    labels = rng.integers(-1, len(xq), v.size)
    out = np.empty((1, v.size))
    K.apply_tables(v[None].copy(), labels, *tabs, out)
    for e in range(v.size):
        c = labels[e]
        want = v[e] if c < 0 else _Spline.build(xq[c], yq[c], limit=0.5, max_slope=4.0)(v[e:e + 1])[0]
        np.testing.assert_allclose(out[0, e], want, rtol=0, atol=1e-12, equal_nan=True)


def _nodes(rng: np.random.Generator, d: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    codes = rng.normal(0, 1, (9, d))
    node_cluster = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    v = rng.normal(0, 1.2, (400, d))
    return codes, node_cluster, v


@pytest.mark.parametrize("sigma2", [0.02, 0.3, 5.0])
def test_soft_weights_match_reference(sigma2: float) -> None:
    codes, nc, v = _nodes(np.random.default_rng(2))
    d2 = np.empty((codes.shape[0], v.shape[0]))
    K.node_d2(np.ascontiguousarray(v.T), codes, d2)
    np.testing.assert_allclose(d2.T, ((v[:, None] - codes[None]) ** 2).sum(axis=2), rtol=1e-12)
    w = np.empty((3, v.shape[0]))
    K.soft_weights(d2, nc, 0.5 / sigma2, w)
    ref = soft_weights_ref(v, codes, nc, 3, sigma2)
    np.testing.assert_allclose(w.T, ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(w.sum(axis=0), 1.0)
    assert not np.any((w > 0) & (w < K.MIN_WEIGHT))  # negligible clusters are dropped
    assert K.blend_share(d2, nc, 3, 0.5 / sigma2, 0.1) == pytest.approx(
        blend_share_ref(v, codes, nc, 3, sigma2, 0.1))


def test_quantiles_match_numpy() -> None:
    rng = np.random.default_rng(3)
    x = rng.gamma(2.0, 1.0, (3001, 4))
    probs = np.linspace(0.001, 0.999, 101)
    want = np.quantile(x, probs, axis=0)
    np.testing.assert_allclose(_quantiles(x, probs), want, rtol=1e-6)  # float32 sort: 7 digits
    np.testing.assert_allclose(quantiles_t(np.ascontiguousarray(x.T), probs), want.T, rtol=1e-6)


def test_transform_in_chunks_equals_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    from flowtools.analysis import normalize_estimator as N

    rng = np.random.default_rng(4)
    a = {b: [np.concatenate([rng.normal(1 + s, 0.3, (1500, 2)), rng.normal(3 + s, 0.3, (1500, 2))])]
         for b, s in (("A", 0.0), ("B", 0.4))}
    x = np.concatenate([rng.normal(1.4, 0.5, (777, 2)), [[np.nan, 1.0]]])
    for soft in (0.0, 0.3):
        model = N.CytoNorm(n_clusters=2, xdim=3, ydim=3, rlen=5, n_resamples=5, soft=soft)
        model.fit(a, ["m1", "m2"])
        whole = model.transform(x, "B")
        monkeypatch.setattr(N, "_CHUNK", 100)
        np.testing.assert_array_equal(model.transform(x, "B"), whole)
        monkeypatch.setattr(N, "_CHUNK", 65_536)


def test_apply_blend_matches_spline_calls_and_keeps_nan() -> None:
    rng = np.random.default_rng(5)
    xq, yq = _quantile_pairs(rng)
    tabs = build_tables(xq[:, None], yq[:, None], limit=0.5, max_slope=4.0)  # 6 slots x 1 marker
    v = np.r_[rng.normal(0, 3, 300), [np.nan, -1e6, 1e6]]
    w = rng.random((len(xq), v.size)) * (rng.random((len(xq), v.size)) > 0.5)
    w[0, w.sum(axis=0) == 0] = 1.0
    w /= w.sum(axis=0)
    out = np.empty((1, v.size))
    K.apply_blend(v[None].copy(), w, *tabs, out)
    want = sum(w[c] * _Spline.build(xq[c], yq[c], limit=0.5, max_slope=4.0)(v) for c in range(len(xq)))
    want[np.isnan(v)] = np.nan
    np.testing.assert_allclose(out[0], want, rtol=0, atol=1e-12, equal_nan=True)


def test_blend_share_counts_the_weights_soft_weights_leaves() -> None:
    """An event whose second weight reaches the threshold only once negligible clusters are dropped.

    Raw weights (0.8975, 0.0998, 3 x 0.0009): the second is below 0.1 of the total, but 0.10007 of
    what ``soft_weights`` keeps (the three under ``MIN_WEIGHT`` dropped, the rest renormalised).
    """
    w = np.array([0.8975, 0.0998, 0.0009, 0.0009, 0.0009])
    d2 = (-np.log(w / w.max()))[:, None].copy()  # one node per cluster, inv2s = 1
    nodes = np.arange(5, dtype=np.int64)
    out = np.empty((5, 1))
    K.soft_weights(d2, nodes, 1.0, out)
    second = np.sort(out[:, 0])[-2]
    assert second > 0.1 > w[1] / w.sum()
    assert K.blend_share(d2, nodes, 5, 1.0, 0.1) == 1.0
    # and an event whose second weight stays below the threshold either way
    w2 = np.array([0.95, 0.05, 0.0, 0.0, 0.0]) + 1e-12
    d2b = (-np.log(w2 / w2.max()))[:, None].copy()
    assert K.blend_share(d2b, nodes, 5, 1.0, 0.1) == 0.0
