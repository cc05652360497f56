"""Plain-numpy references of the scale transforms: slow, obviously correct.

Written from the Gating-ML 2.0 formulas only (no code shared with
flowtools.transforms): constants from the spec's definitions, ``d`` and the
forward transform found by bisection. Used by tests/transforms to check the
numba kernels.
"""

from __future__ import annotations

import math

import numpy as np

LN10 = math.log(10.0)


def _bisect_scalar(fun, lo: float, hi: float, iters: int = 200) -> float:
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if fun(mid) < 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def logicle_constants(T, W, M, A):
    """Gating-ML 2.0 logicle constants a, b, c, d, f, x1 (d by bisection)."""
    w = W / (M + A)
    x2 = A / (M + A)
    x1 = x2 + w
    x0 = x2 + 2 * w
    b = (M + A) * LN10
    if w == 0:
        d = b
    else:
        # d solves w = 2 ln(d / b) / (b + d), 0 < d <= b
        d = _bisect_scalar(lambda d: 2 * math.log(d / b) + w * (b + d), 1e-300, b)
    c_a = math.exp(x0 * (b + d))
    mf_a = math.exp(b * x1) - c_a / math.exp(d * x1)
    a = T / ((math.exp(b) - mf_a) - c_a / math.exp(d))
    # Gating-ML: f = a (e^(b x1) - c_a e^(-d x1)), so that B(x1) = 0
    return a, b, c_a * a, d, mf_a * a, x1


def hyperlog_constants(T, W, M, A):
    """Gating-ML 2.0 hyperlog constants a, b, c, f, x1."""
    w = W / (M + A)
    x2 = A / (M + A)
    x1 = x2 + w
    x0 = x2 + 2 * w
    b = (M + A) * LN10
    e0 = math.exp(b * x0)
    c_a = e0 / w
    f_a = math.exp(b * x1) + c_a * x1
    a = T / (math.exp(b) + c_a - f_a)
    return a, b, c_a * a, f_a * a, x1


def logicle_B(y, T, W, M, A):
    """B(y): the logicle inverse, straight from the formula, odd about x1."""
    a, b, c, d, f, x1 = logicle_constants(T, W, M, A)
    y = np.asarray(y, dtype=np.float64)
    v = np.where(y >= x1, y, 2 * x1 - y)
    val = a * np.exp(b * v) - c * np.exp(-d * v) - f
    return np.where(y >= x1, val, -val)


def hyperlog_EH(y, T, W, M, A):
    """EH(y): the hyperlog inverse, straight from the formula, odd about x1."""
    a, b, c, f, x1 = hyperlog_constants(T, W, M, A)
    y = np.asarray(y, dtype=np.float64)
    v = np.where(y >= x1, y, 2 * x1 - y)
    val = a * np.exp(b * v) + c * v - f
    return np.where(y >= x1, val, -val)


def _root(inverse, x, x1, iters=120):
    """Vectorised bisection: y with inverse(y) = x (inverse increasing)."""
    x = np.asarray(x, dtype=np.float64)
    lo = np.full(x.shape, x1 - 1.0)
    hi = np.full(x.shape, x1 + 1.0)
    for _ in range(200):  # widen the bracket until it holds every value
        grow_hi = inverse(hi) < x
        grow_lo = inverse(lo) > x
        if not (grow_hi.any() or grow_lo.any()):
            break
        hi = np.where(grow_hi, hi + 2 * (hi - x1), hi)
        lo = np.where(grow_lo, lo - 2 * (x1 - lo), lo)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        below = inverse(mid) < x
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return 0.5 * (lo + hi)


def logicle_ref(x, T, W, M, A):
    """Logicle by bisection on B(y) = x (finite x only)."""
    x1 = logicle_constants(T, W, M, A)[-1]
    with np.errstate(over="ignore", invalid="ignore"):
        return _root(lambda y: logicle_B(y, T, W, M, A), x, x1)


def hyperlog_ref(x, T, W, M, A):
    """Hyperlog by bisection on EH(y) = x (finite x only)."""
    x1 = hyperlog_constants(T, W, M, A)[-1]
    with np.errstate(over="ignore", invalid="ignore"):
        return _root(lambda y: hyperlog_EH(y, T, W, M, A), x, x1)


def asinh_ref(x, T, M, A):
    """Gating-ML fasinh, term by term."""
    x = np.asarray(x, dtype=np.float64)
    return (np.arcsinh(x * np.sinh(M * LN10) / T) + A * LN10) / ((M + A) * LN10)
