"""Hypothesis properties of the scale transforms over their valid parameter domains."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from reference.transforms_ref import hyperlog_ref, logicle_ref

from flowtools.transforms import AsinhTransform, HyperlogTransform, LogicleTransform

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def biex_params(draw, *, w_positive: bool):
    T = draw(st.floats(1.0, 1e7))
    M = draw(st.floats(0.5, 7.0))
    lo = 0.01 if w_positive else 0.0
    W = draw(st.floats(lo, M / 2))
    A = draw(st.floats(-W, M - 2 * W))
    return T, W, M, A


def values(T: float, seed: int, n: int = 400) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mags = T * 10.0 ** rng.uniform(-8, 0.7, n)
    signs = np.where(rng.random(n) < 0.3, -1.0, 1.0)
    return np.concatenate([signs * mags, rng.uniform(-T / 100, T / 100, n // 4), [0.0, T]])


def _check(xf, ref, params, seed):
    x = np.sort(values(params[0], seed))
    exact = xf.apply(x)
    fast = xf.apply(x, exact=False)
    assert np.all(np.isfinite(exact))
    assert np.all(np.diff(exact) >= 0), "exact path not monotonic"
    assert np.all(np.diff(fast) >= 0), "fast path not monotonic"
    assert np.max(np.abs(fast - exact)) <= 1e-6
    back = xf.inverse(exact)
    np.testing.assert_allclose(back, x, rtol=1e-9, atol=1e-9 * params[0])
    sub = x[:: max(1, x.size // 60)]
    np.testing.assert_allclose(xf.apply(sub), ref(sub, *params), rtol=0, atol=1e-10)


@SETTINGS
@given(params=biex_params(w_positive=False), seed=st.integers(0, 2**16))
def test_logicle_properties(params, seed):
    _check(LogicleTransform(*params), logicle_ref, params, seed)


@SETTINGS
@given(params=biex_params(w_positive=True), seed=st.integers(0, 2**16))
def test_hyperlog_properties(params, seed):
    _check(HyperlogTransform(*params), hyperlog_ref, params, seed)


@SETTINGS
@given(
    T=st.floats(1.0, 1e7),
    M=st.floats(0.5, 7.0),
    A=st.floats(0.0, 3.0),
    seed=st.integers(0, 2**16),
)
def test_asinh_properties(T, M, A, seed):
    xf = AsinhTransform(T, M, A)
    x = np.sort(values(T, seed))
    y = xf.apply(x)
    assume(np.all(np.isfinite(y)))
    assert np.all(np.diff(y) >= 0)
    np.testing.assert_allclose(xf.inverse(y), x, rtol=1e-9, atol=1e-9 * T)
