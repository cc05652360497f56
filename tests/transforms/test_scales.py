"""Scale transforms against flowutils, FlowKit and the plain-numpy references."""

from __future__ import annotations

import numpy as np
import pytest
from reference.transforms_ref import asinh_ref, hyperlog_ref, logicle_ref

from flowtools.transforms import (
    AsinhTransform,
    FlowJoBiexTransform,
    FlowJoLinearTransform,
    FlowJoLogTransform,
    HyperlogTransform,
    LinearTransform,
    LogicleTransform,
    LogTransform,
    RatioTransform,
    estimate_logicle,
)

ft = pytest.importorskip("flowutils.transforms")

# Gating-ML compliance-suite parameters (shared/data/README.md) plus FlowJo/edge cases
LOGICLE_PARAMS = [
    (10000, 0.5, 4.5, 0),
    (10000, 1, 4, 0.5),
    (262144, 0.5, 4.5, 0),
    (262144, 1, 4.418539922, 0),
    (262144, 0, 4.5, 0),  # W = 0: the arcsinh limit
    (262144, 2, 4.5, -2),  # A = -W
    (262144, 1, 4.5, 2.5),  # A = M - 2W
    (1.0, 0.1, 0.5, 0.3),
]
HYPERLOG_PARAMS = [p for p in LOGICLE_PARAMS if p[1] > 0]


def grid(T: float) -> np.ndarray:
    """Negatives, zero, tiny, values near and above T."""
    lin = np.linspace(-T / 10, T / 10, 2001)
    logs = np.geomspace(T * 1e-9, T * 4, 2001)
    near_t = T * np.linspace(0.99, 1.01, 101)
    return np.concatenate([lin, logs, -logs[::7], near_t, [0.0, T, -T]])


@pytest.mark.parametrize("params", LOGICLE_PARAMS)
def test_logicle_matches_flowutils(params):
    T, W, M, A = params
    x = grid(T)
    ours = LogicleTransform(T, W, M, A).apply(x)
    theirs = ft.logicle(x, None, t=T, m=M, w=W, a=A)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-13)  # in fact to round-off
    y = np.linspace(-0.3, 1.2, 1501)
    back = LogicleTransform(T, W, M, A).inverse(y)
    ref = ft.logicle_inverse(y, None, t=T, m=M, w=W, a=A)
    np.testing.assert_allclose(back, ref, rtol=1e-12, atol=1e-9 * T)


@pytest.mark.parametrize("params", HYPERLOG_PARAMS)
def test_hyperlog_matches_flowutils(params):
    T, W, M, A = params
    x = grid(T)
    ours = HyperlogTransform(T, W, M, A).apply(x)
    theirs = ft.hyperlog(x, None, t=T, m=M, w=W, a=A)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)
    y = np.linspace(-0.3, 1.2, 1501)
    back = HyperlogTransform(T, W, M, A).inverse(y)
    ref = ft.hyperlog_inverse(y, None, t=T, m=M, w=W, a=A)
    np.testing.assert_allclose(back, ref, rtol=1e-12, atol=1e-9 * T)


@pytest.mark.parametrize(("T", "M", "A"), [(10000, 4, 1), (262144, 4.5, 0), (262144, 1, 0), (100, 2, 0.5)])
def test_asinh_matches_flowutils_and_reference(T, M, A):
    x = grid(T)
    xf = AsinhTransform(T, M, A)
    np.testing.assert_allclose(xf.apply(x), ft.asinh(x, None, T, M, A), rtol=0, atol=1e-12)
    np.testing.assert_allclose(xf.apply(x), asinh_ref(x, T, M, A), rtol=0, atol=1e-12)
    y = np.linspace(-0.2, 1.1, 301)
    np.testing.assert_allclose(xf.inverse(y), ft.asinh_inverse(y, None, T, M, A), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("params", LOGICLE_PARAMS)
def test_logicle_matches_reference_and_fast_path(params):
    T, W, M, A = params
    x = grid(T)
    xf = LogicleTransform(T, W, M, A)
    exact = xf.apply(x)
    np.testing.assert_allclose(exact, logicle_ref(x, T, W, M, A), rtol=0, atol=1e-12)
    assert np.max(np.abs(xf.apply(x, exact=False) - exact)) <= 1e-6


@pytest.mark.parametrize("params", HYPERLOG_PARAMS)
def test_hyperlog_matches_reference_and_fast_path(params):
    T, W, M, A = params
    x = grid(T)
    xf = HyperlogTransform(T, W, M, A)
    exact = xf.apply(x)
    np.testing.assert_allclose(exact, hyperlog_ref(x, T, W, M, A), rtol=0, atol=1e-12)
    assert np.max(np.abs(xf.apply(x, exact=False) - exact)) <= 1e-6


@pytest.mark.parametrize("cls", [LogicleTransform, HyperlogTransform])
@pytest.mark.parametrize("exact", [True, False])
def test_biexponential_corner_cases(cls, exact):
    xf = cls(262144.0, 0.5, 4.5, 0.0)
    x1 = 0.5 / 4.5
    assert xf.apply(np.array([]), exact=exact).shape == (0,)
    one = xf.apply([0.0], exact=exact)
    assert one.dtype == np.float64
    assert one[0] == pytest.approx(x1, abs=1e-15)
    special = xf.apply([np.nan, np.inf, -np.inf], exact=exact)
    assert np.isnan(special[0])
    assert special[1] == np.inf
    assert special[2] == -np.inf
    assert xf.apply([262144.0], exact=exact)[0] == pytest.approx(1.0, abs=1e-6 if not exact else 1e-14)
    # huge values fall back to the exact solver (beyond the table)
    huge = xf.apply([1e12, -1e12, 1e300], exact=exact)
    assert np.all(np.isfinite(huge))
    assert huge[0] == pytest.approx(2 * x1 - huge[1])


@pytest.mark.parametrize("exact", [True, False])
def test_shapes_columns_dtypes_out_and_parallel(exact):
    rng = np.random.default_rng(3)
    events = rng.normal(100, 1000, size=(5000, 3))
    xf = LogicleTransform(262144.0, 0.5, 4.5, 0.0)
    column = events[:, 1]  # a strided view
    expected = xf.apply(np.ascontiguousarray(column), exact=exact)
    np.testing.assert_array_equal(xf.apply(column, exact=exact), expected)
    np.testing.assert_array_equal(xf.apply(events, exact=exact)[:, 1], expected)
    np.testing.assert_array_equal(xf.apply(column.astype(np.float32), exact=exact).dtype, np.float64)
    np.testing.assert_array_equal(xf.apply(column, exact=exact, parallel=True), expected)
    out = np.empty(5000)
    assert xf.apply(column, exact=exact, out=out) is not None
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(ValueError, match="out must be"):
        xf.apply(column, exact=exact, out=np.empty(10))
    a = AsinhTransform(262144.0, 4.5, 0.0)
    np.testing.assert_allclose(a.apply(column, parallel=True), a.apply(column, parallel=False), rtol=0,
                               atol=1e-15)


def test_linear_log_ratio_and_flowjo_simple_transforms():
    x = np.array([-100.0, 0.0, 1.0, 500.0, 10000.0])
    lin = LinearTransform(T=10000, A=500)
    np.testing.assert_allclose(lin.apply(x), (x + 500) / 10500)
    np.testing.assert_allclose(lin.inverse(lin.apply(x)), x)
    log = LogTransform(T=10000, M=5)
    y = log.apply(x)
    assert np.isnan(y[0]) and y[1] == -np.inf
    np.testing.assert_allclose(y[2:], np.log10(x[2:] / 10000) / 5 + 1)
    np.testing.assert_allclose(log.inverse(y[2:]), x[2:])
    ratio = RatioTransform(A=2.7, B=-100, C=-300)
    den = np.array([1.0, 2.0, -300.0, 4.0, 5.0])
    r = ratio.apply(x, den)
    assert np.isinf(r[2])
    np.testing.assert_allclose(ratio.inverse(r[[0, 1, 3, 4]], den[[0, 1, 3, 4]]), x[[0, 1, 3, 4]])
    fj_log = FlowJoLogTransform(offset=1.0, decades=4.5)
    np.testing.assert_allclose(fj_log.apply(x), np.log10(np.maximum(x, 1.0)) / 4.5)
    np.testing.assert_allclose(fj_log.inverse(fj_log.apply(x[2:])), x[2:])
    fj_lin = FlowJoLinearTransform(min_range=-200, max_range=262144)
    np.testing.assert_allclose(fj_lin.apply([-200.0, 262144.0]), [0.0, 1.0])
    np.testing.assert_allclose(fj_lin.inverse(fj_lin.apply(x)), x)


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: LogicleTransform(0, 0.5, 4.5, 0), "T > 0"),
        (lambda: LogicleTransform(1000, -0.1, 4.5, 0), "W >= 0"),
        (lambda: LogicleTransform(1000, 3, 4.5, 0), "W <= M/2"),
        (lambda: LogicleTransform(1000, 0.5, 4.5, -1), "-W <= A"),
        (lambda: LogicleTransform(1000, 0.5, 4.5, 4), "A <= M - 2W"),
        (lambda: LogicleTransform(1000, 0.5, 0, 0), "M > 0"),
        (lambda: LogicleTransform(float("nan"), 0.5, 4.5, 0), "finite"),
        (lambda: HyperlogTransform(1000, 0, 4.5, 0), "W > 0"),
        (lambda: LinearTransform(T=100, A=200), "0 <= A <= T"),
        (lambda: LogTransform(T=100, M=0), "M > 0"),
        (lambda: AsinhTransform(T=100, M=4, A=-1), "A >= 0"),
        (lambda: FlowJoBiexTransform(length=128), "length=256"),
        (lambda: FlowJoBiexTransform(width=0.5), "width <= -1"),
        (lambda: FlowJoLogTransform(offset=0), "offset > 0"),
        (lambda: FlowJoLinearTransform(min_range=5, max_range=5), "min_range < max_range"),
    ],
)
def test_parameter_validation(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_bool_parameter_rejected():
    with pytest.raises(TypeError):
        LogicleTransform(True, 0.5, 4.5, 0)


def test_transforms_are_frozen_and_hashable():
    xf = LogicleTransform(262144, 0.5, 4.5, 0)
    with pytest.raises(AttributeError):
        xf.T = 1  # type: ignore[misc]
    assert xf == LogicleTransform(262144, 0.5, 4.5, 0)
    assert len({xf, LogicleTransform(262144, 0.5, 4.5, 0)}) == 1


def test_estimate_logicle_follows_flowcore():
    rng = np.random.default_rng(11)
    data = np.concatenate([rng.normal(0, 50, 20000), rng.lognormal(8, 1, 20000)])
    xf = estimate_logicle(data, T=262144)
    negatives = data[data < 0]
    r = np.finfo(float).eps + np.quantile(negatives, 0.05)
    assert xf.W == pytest.approx((4.5 - np.log10(262144 / abs(r))) / 2)
    assert (xf.T, xf.M, xf.A) == (262144, 4.5, 0.0)
    # T defaults to the data maximum; no negatives -> W = 0
    pos = estimate_logicle(np.abs(data))
    assert pos.T == pytest.approx(np.abs(data).max())
    assert pos.W == 0.0
    # negatives tinier than T 10**-M give a negative W: clamped to 0
    assert estimate_logicle(np.array([-1e-6, 1.0, 1000.0]), T=1000.0).W == 0.0
    with pytest.raises(ValueError, match="exceeds M/2"):
        estimate_logicle(np.array([-1e6, 10.0]), T=10.0)
    with pytest.raises(ValueError, match="finite"):
        estimate_logicle(np.array([np.nan]))
    with pytest.raises(ValueError, match="T > 0"):
        estimate_logicle(np.array([-5.0, -1.0]))


# ---------------------------------------------------------------- FlowKit transform classes


@pytest.fixture(scope="module")
def fk():
    return pytest.importorskip("flowkit").transforms


def test_against_flowkit_classes(fk):
    x = grid(10000.0)
    pos = x[x > 0]
    cases = [
        (LinearTransform(T=10000, A=500), fk.LinearTransform(param_t=10000, param_a=500), x),
        (LogTransform(T=10000, M=5), fk.LogTransform(param_t=10000, param_m=5), pos),
        (AsinhTransform(T=10000, M=4, A=1), fk.AsinhTransform(param_t=10000, param_m=4, param_a=1), x),
        (
            LogicleTransform(T=10000, W=0.5, M=4.5, A=0),
            fk.LogicleTransform(param_t=10000, param_w=0.5, param_m=4.5, param_a=0),
            x,
        ),
        (
            LogicleTransform(T=10000, W=1, M=4, A=0.5),
            fk.LogicleTransform(param_t=10000, param_w=1, param_m=4, param_a=0.5),
            x,
        ),
        (
            HyperlogTransform(T=10000, W=1, M=4.5, A=0),
            fk.HyperlogTransform(param_t=10000, param_w=1, param_m=4.5, param_a=0),
            x,
        ),
        (FlowJoLogTransform(offset=0.5, decades=4.5), fk.WSPLogTransform(offset=0.5, decades=4.5), x),
        (FlowJoLinearTransform(min_range=0, max_range=262144),
         fk.LinearTransform(param_t=262144, param_a=0), x),
    ]
    for ours, theirs, data in cases:
        np.testing.assert_allclose(ours.apply(data), theirs.apply(data), rtol=0, atol=1e-9,
                                   err_msg=repr(ours))
        y = ours.apply(data)
        if hasattr(theirs, "inverse") and not isinstance(ours, FlowJoLogTransform):
            np.testing.assert_allclose(ours.inverse(y), theirs.inverse(y), rtol=1e-9, atol=1e-9,
                                       err_msg=repr(ours))


def test_flowjo_biex_against_flowkit(fk):
    x = np.concatenate([np.linspace(-2000, 2000, 4001), np.geomspace(1, 3e5, 2001)])
    for neg, width in [(0.0, -10.0), (1.0, -7.943282), (0.5, -100.0), (2.0, -1000.0)]:
        ours = FlowJoBiexTransform(neg=neg, width=width, pos=4.418540, max_value=262144.000029)
        theirs = fk.WSPBiexTransform(negative=neg, width=width, positive=4.418540, max_value=262144.000029)
        # same published algorithm; FlowKit's root finder stops at 1e-12, ours at round-off
        np.testing.assert_allclose(ours.apply(x), theirs.apply(x), rtol=0, atol=1e-6)
        y = np.linspace(0, 4096, 1001)
        np.testing.assert_allclose(ours.inverse(y), theirs.inverse(y), rtol=1e-8, atol=1e-6)
