"""Derived constants of the logicle and hyperlog scales (pure Python; no numba).

Both scales are the inverse of a biexponential-type function ``B(y)`` of the
display value ``y``; the constants below (Gating-ML 2.0 names ``a, b, c, d, f,
w, x0, x1, x2``) are computed once per parameter set and packed into one
float64 vector that the numba kernels read.

Layout of the packed vector (``P_*`` are the indices):

=====  =====================================================================
index  meaning
=====  =====================================================================
0..4   a, b, c, d, f   (hyperlog: d = 0)
5..9   w, x0, x1, x2, x_taylor (Taylor series used below x_taylor)
10     kind: 0 logicle, 1 hyperlog
11     hyperlog only: data value at x0, the switch point of the initial guess
12..27 16 Taylor coefficients of B around x1 (logicle: taylor[1] == 0)
=====  =====================================================================
"""

from __future__ import annotations

import math
import sys

import numpy as np

__all__ = ["hyperlog_params", "logicle_params", "solve_d"]

P_A, P_B, P_C, P_D, P_F = 0, 1, 2, 3, 4
P_W, P_X0, P_X1, P_X2, P_XTAYLOR = 5, 6, 7, 8, 9
P_KIND, P_HINV = 10, 11
P_TAYLOR = 12
TAYLOR_LENGTH = 16
N_PARAMS = P_TAYLOR + TAYLOR_LENGTH

KIND_LOGICLE = 0.0
KIND_HYPERLOG = 1.0

_EPS = sys.float_info.epsilon


def solve_d(b: float, w: float) -> float:
    """Root ``d`` of ``2 (ln d - ln b) + w (b + d) = 0`` on ``(0, b]``.

    Safeguarded Newton iteration (Newton inside a shrinking bracket, bisection
    when Newton would leave it), as in Moore & Parks (2012).

    Parameters
    ----------
    b : float
        ``(M + A) ln 10``.
    w : float
        ``W / (M + A)``; ``w == 0`` gives ``d = b`` (the arcsinh limit).

    Returns
    -------
    float
    """
    if w == 0.0:
        return b
    tolerance = 2.0 * b * _EPS
    lo, hi = 0.0, b
    d = 0.5 * (lo + hi)
    last_delta = hi - lo
    f_b = -2.0 * math.log(b) + w * b
    f = 2.0 * math.log(d) + w * d + f_b
    last_f = math.nan
    for _ in range(1, 100):
        df = 2.0 / d + w
        if ((d - hi) * df - f) * ((d - lo) * df - f) >= 0 or abs(1.9 * f) > abs(last_delta * df):
            delta = 0.5 * (hi - lo)
            d = lo + delta
            if d == lo:
                return d
        else:
            delta = f / df
            previous = d
            d -= delta
            if d == previous:
                return d
        if abs(delta) < tolerance:
            return d
        last_delta = delta
        f = 2.0 * math.log(d) + w * d + f_b
        if f == 0 or f == last_f:
            return d
        last_f = f
        if f < 0:
            lo = d
        else:
            hi = d
    return d


def _layout(W: float, M: float, A: float) -> tuple[float, float, float, float, float]:
    """``w, x0, x1, x2, b`` shared by logicle and hyperlog (Gating-ML 2.0 sections 6.6-6.7)."""
    w = W / (M + A)
    x2 = A / (M + A)
    x1 = x2 + w
    x0 = x2 + 2.0 * w
    return w, x0, x1, x2, (M + A) * math.log(10.0)


def logicle_params(T: float, W: float, M: float, A: float) -> np.ndarray:
    """Pack the logicle constants (Moore & Parks 2012; Gating-ML 2.0 section 6.6).

    Returns
    -------
    ndarray of float64, shape (N_PARAMS,)
    """
    p = np.zeros(N_PARAMS)
    w, x0, x1, x2, b = _layout(W, M, A)
    d = solve_d(b, w)
    c_a = math.exp(x0 * (b + d))
    mf_a = math.exp(b * x1) - c_a / math.exp(d * x1)
    a = T / ((math.exp(b) - mf_a) - c_a / math.exp(d))
    c = c_a * a
    f = -mf_a * a
    p[[P_A, P_B, P_C, P_D, P_F]] = a, b, c, d, f
    p[[P_W, P_X0, P_X1, P_X2, P_XTAYLOR]] = w, x0, x1, x2, x1 + w / 4.0
    p[P_KIND] = KIND_LOGICLE
    pos = a * math.exp(b * x1)
    neg = -c / math.exp(d * x1)
    for i in range(TAYLOR_LENGTH):
        pos *= b / (i + 1)
        neg *= -d / (i + 1)
        p[P_TAYLOR + i] = pos + neg
    p[P_TAYLOR + 1] = 0.0  # exact: the logicle condition B''(x1) = 0
    return p


def hyperlog_params(T: float, W: float, M: float, A: float) -> np.ndarray:
    """Pack the hyperlog constants (Bagwell 2005; Gating-ML 2.0 section 6.7).

    Returns
    -------
    ndarray of float64, shape (N_PARAMS,)
    """
    p = np.zeros(N_PARAMS)
    w, x0, x1, x2, b = _layout(W, M, A)
    e0 = math.exp(b * x0)
    c_a = e0 / w
    f_a = math.exp(b * x1) + c_a * x1
    a = T / (math.exp(b) + c_a - f_a)
    c = c_a * a
    f = f_a * a
    p[[P_A, P_B, P_C, P_D, P_F]] = a, b, c, 0.0, f
    p[[P_W, P_X0, P_X1, P_X2, P_XTAYLOR]] = w, x0, x1, x2, x1 + w / 4.0
    p[P_KIND] = KIND_HYPERLOG
    coef = a * math.exp(b * x1)
    for i in range(TAYLOR_LENGTH):
        coef *= b / (i + 1)
        p[P_TAYLOR + i] = coef
    p[P_TAYLOR] += c
    # data value at x0 (>= x1 always, since W > 0): below it the initial guess is linear
    p[P_HINV] = a * math.exp(b * x0) + c * x0 - f
    return p


def biexponential(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Evaluate ``B(y)`` (logicle) or ``EH(y)`` (hyperlog): the inverse transform.

    Uses the Taylor series around ``x1`` below ``x_taylor`` (round-off), the
    closed form above, and odd symmetry about ``x1`` for ``y < x1``.

    Parameters
    ----------
    p : ndarray of float64, shape (N_PARAMS,)
    y : ndarray of float64, any shape

    Returns
    -------
    ndarray of float64, same shape as ``y``
    """
    a, b, c, d, f = p[P_A], p[P_B], p[P_C], p[P_D], p[P_F]
    x1, x_taylor = p[P_X1], p[P_XTAYLOR]
    y = np.asarray(y, dtype=np.float64)
    negative = y < x1
    v = np.where(negative, 2.0 * x1 - y, y)
    out = np.empty_like(v)
    near = v < x_taylor
    far = ~near
    u = v[near] - x1
    s = np.zeros_like(u)
    for k in range(TAYLOR_LENGTH - 1, -1, -1):
        s = (s + p[P_TAYLOR + k]) * u
    out[near] = s
    vf = v[far]
    with np.errstate(over="ignore", invalid="ignore"):
        if p[P_KIND] == KIND_LOGICLE:
            out[far] = (a * np.exp(b * vf) + f) - c / np.exp(d * vf)
        else:
            out[far] = (a * np.exp(b * vf) + c * vf) - f
    nan = np.isnan(y)
    out[nan] = np.nan
    return np.where(negative, -out, out)
