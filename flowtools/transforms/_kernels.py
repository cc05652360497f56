"""Numba kernels of the scale transforms (logicle, hyperlog, asinh).

Imported lazily by :mod:`flowtools.transforms.scales` (never at package import).
Every kernel takes plain C-contiguous float64 arrays and writes into ``out``;
each exists as a serial and a parallel (``prange``) version, compiled on first
use and cached on disk when ``FLOWTOOLS_NUMBA_CACHE`` is on. Plain-numpy
references live in ``tests/reference/transforms_ref.py``.

Exact path
    Two passes. Pass 1 (vectorised, no transcendental call): the value's table
    cell (below) gives the node ``X``, its display value ``Y`` (with a low part
    ``Y_lo``: ``Y + Y_lo`` is the root to ~2**-64) and ``B_+'(Y), B_-'(Y)``; from
    the interpolated ``h0 = y0 - Y``, ``B(Y + h) - |x|`` and its two
    derivatives follow from ``expm1(b h)`` and ``expm1(-d h)`` as short
    polynomials (``|b h| < 1e-2`` over the parameter domain), and one
    third-order (Chebyshev) step takes the interpolation error (<= 2.5e-7) to
    ~``K e**3 < 1e-18``; the sum
    ``Y + (Y_lo + h)`` is rounded once, so results are monotonic across cell
    boundaries. Working with ``B(Y + h) - B(Y)`` needs no Taylor series near
    ``x1`` (no cancellation against ``f``). ``|x| = T`` gives exactly 1 and 0
    gives ``x1``. Pass 2: Halley's method on the biexponential (Taylor series of
    ``B`` around ``x1`` near data zero, as in Moore & Parks (2012) and flowutils'
    C code) for values beyond the table (``|x| >= 2**6 T``), NaN and inf; it
    stops when the step is below ``3 eps`` (``3 eps y`` above 1) or stops
    shrinking at rounding-noise level.

Fast path (lookup table)
    The table holds the exact ``y`` at nodes spaced ``2**-k`` octaves apart in
    ``|x|`` (``k = TABLE_BITS``): the node of a value and its position between
    two nodes are read straight from the bits of the float64 (exponent and top
    ``k`` mantissa bits), so a lookup costs no search and no transcendental
    function. ``y`` is interpolated linearly in ``|x|``. Below the first node
    (``|x| < 2**-40 T``) ``y = x1 + x / B'(x1)``; above the last node
    (``|x| >= 2**6 T``), NaN and inf use the exact path. Error bound: linear
    interpolation in a cell ``[x, x (1 + 2**-k)]`` errs by at most
    ``h**2 max|y''| / 8``; on the log-like part ``|y''| <= 1/(b x**2)``, so the
    error is about ``2**(-2k) / (8 b)`` with ``b = ln 10 (M + A)``; ``k`` (9 or
    more) is chosen per parameter set so that this is <= 1e-7. Measured against
    the exact path the error stays below 2.5e-7 (the bound is not tight in the
    transition region); the test suite checks ``<= 1e-6`` on dense grids over
    the whole parameter domain.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from flowtools._config import NUMBA_CACHE
from flowtools._numba import NOALIAS as _NOALIAS
from flowtools.transforms._params import (
    KIND_LOGICLE,
    P_A,
    P_B,
    P_C,
    P_D,
    P_F,
    P_HINV,
    P_KIND,
    P_TAYLOR,
    P_W,
    P_X1,
    P_XTAYLOR,
    TAYLOR_LENGTH,
)

__all__ = [
    "TABLE_BITS",
    "asinh_parallel",
    "asinh_serial",
    "build_table",
    "exact_masked",
    "exact_parallel",
    "exact_serial",
    "fast_parallel",
    "fast_serial",
]

TABLE_BITS = 9
"""Least table nodes per octave of ``|x|`` (as a power of two)."""
TABLE_OCTAVES_BELOW_T = 40
TABLE_OCTAVES_ABOVE_T = 6




_MAX_ITER = 50
_EPS = np.finfo(np.float64).eps
_ABS_MASK = np.int64(0x7FFFFFFFFFFFFFFF)
_ROW = 6
"""Exact-path table row: node X, display value Y + Y_lo, cell slope S, B_+'(Y), B_-'(Y)."""
# phi(z) = expm1(z) / z = 1 + z/2 + z**2/6 + ... (degree 6 kept)
_C2, _C3, _C4, _C5, _C6, _C7 = 1 / 2, 1 / 6, 1 / 24, 1 / 120, 1 / 720, 1 / 5040


@njit(cache=NUMBA_CACHE, nogil=True, inline="always")
def _series(p, x):
    """Taylor series of B around x1 (B(x1) = 0)."""
    u = x - p[P_X1]
    s = p[P_TAYLOR + TAYLOR_LENGTH - 1] * u
    for i in range(TAYLOR_LENGTH - 2, -1, -1):
        s = (s + p[P_TAYLOR + i]) * u
    return s


@njit(cache=NUMBA_CACHE, nogil=True)
def _solve(p, value, guess):
    """Display value y with B(y) = value, for value > 0 (Halley iteration)."""
    a = p[P_A]
    b = p[P_B]
    c = p[P_C]
    d = p[P_D]
    f = p[P_F]
    x_taylor = p[P_XTAYLOR]
    logicle = p[P_KIND] == KIND_LOGICLE
    x = guess
    from_table = math.isfinite(x)
    if not from_table:
        if logicle:
            if value < f:
                x = p[P_X1] + value / p[P_TAYLOR]
            else:
                x = math.log(value / a) / b
        else:
            if value < p[P_HINV]:
                x = p[P_X1] + value * p[P_W] / p[P_HINV]
            else:
                x = math.log(value / a) / b
        # B is convex above x1, so the root lies in [x1, x1 + value / B'(x1)]: a
        # log guess far below it (tiny values, W = 0) made the iteration stall
        x = min(max(x, p[P_X1]), p[P_X1] + value / p[P_TAYLOR])
    tolerance = 3.0 * _EPS
    if x > 1.0:
        tolerance = 3.0 * x * _EPS
    last = np.inf
    for _ in range(_MAX_ITER):
        ae2bx = a * math.exp(b * x)
        if logicle:
            ce2mdx = c * math.exp(-d * x)
            if x < x_taylor:
                y = _series(p, x) - value
            else:
                y = (ae2bx + f) - (ce2mdx + value)
            abe2bx = b * ae2bx
            cde2mdx = d * ce2mdx
            dy = abe2bx + cde2mdx
            ddy = b * abe2bx - d * cde2mdx
        else:
            if x < x_taylor:
                y = _series(p, x) - value
            else:
                y = (ae2bx + c * x) - (f + value)
            abe2bx = b * ae2bx
            dy = abe2bx + c
            ddy = b * abe2bx
        # Halley's step y / (dy (1 - y ddy / (2 dy^2))), written so that dy^2 cannot overflow
        delta = y / (dy - y * (ddy / (2.0 * dy)))
        x -= delta
        step = abs(delta)
        if step < tolerance:
            return x
        if step >= last and step < 1e-9 * max(1.0, abs(x)):
            # no progress at the level of rounding noise: the cancellation in
            # B(x) - value exceeds 3 eps (small b, d with large a, c, f)
            return x
        last = step
        if from_table and abs(delta) < 1e-6:
            # the table guess was within 1e-6: after one Halley step the error is
            # ~ K delta**3 (K ~ b**2 < 1e3), below 1e-15; a second step would not move x
            return x
        from_table = False
    return np.nan


@njit(cache=NUMBA_CACHE, nogil=True, inline="always")
def _lookup(xi, xbits, x1, slope0, table, lo_bits, hi_bits, shift, cell_mask, inv_cell):
    """Fast-path value of one input and its bits (int64); NaN when outside the table.

    All bit arithmetic is in int64: numba's uint64 arithmetic is many times slower.
    """
    ab = xbits & _ABS_MASK
    if ab >= hi_bits:
        return np.nan
    if ab < lo_bits:
        return x1 + xi * slope0
    rel = ab - lo_bits
    j = rel >> shift
    t = np.float64(rel & cell_mask) * inv_cell
    y0 = table[j]
    y = y0 + t * (table[j + 1] - y0)
    if xbits < 0:
        return 2.0 * x1 - y
    return y


@njit(cache=NUMBA_CACHE, nogil=True, inline="always")
def _one_exact_guess(xi, p, guess):
    if xi == 0.0:
        return p[P_X1]
    if xi != xi:
        return np.nan
    if math.isinf(xi):
        return xi
    if xi < 0.0:
        return 2.0 * p[P_X1] - _solve(p, -xi, 2.0 * p[P_X1] - guess)
    return _solve(p, xi, guess)


@njit(cache=NUMBA_CACHE, nogil=True)
def _fix_outside(x, xb, p, hi_bits, out):
    """Second pass of the fast path: exact values where the table does not reach."""
    for i in range(x.shape[0]):
        if (xb[i] & _ABS_MASK) >= hi_bits:
            out[i] = _one_exact_guess(x[i], p, np.nan)


@njit(cache=NUMBA_CACHE, nogil=True)
def fast_serial(x, p, table, lo_bits, hi_bits, shift, cell_mask, inv_cell, rows, top, tilt, out):
    """Fast (table) path, serial. ``x``, ``out``: float64 (n,); ``rows, top, tilt`` unused."""
    xb = x.view(np.int64)
    x1 = p[P_X1]
    slope0 = 1.0 / p[P_TAYLOR]
    for i in range(x.shape[0]):
        out[i] = _lookup(x[i], xb[i], x1, slope0, table, lo_bits, hi_bits, shift, cell_mask, inv_cell)
    _fix_outside(x, xb, p, hi_bits, out)
    return out


@njit(cache=NUMBA_CACHE, nogil=True, parallel=True)
def fast_parallel(x, p, table, lo_bits, hi_bits, shift, cell_mask, inv_cell, rows, top, tilt, out):
    """Fast (table) path, parallel over values."""
    xb = x.view(np.int64)
    x1 = p[P_X1]
    slope0 = 1.0 / p[P_TAYLOR]
    for i in prange(x.shape[0]):
        out[i] = _lookup(x[i], xb[i], x1, slope0, table, lo_bits, hi_bits, shift, cell_mask, inv_cell)
    _fix_outside(x, xb, p, hi_bits, out)
    return out


@njit(cache=NUMBA_CACHE, nogil=True, inline="always")
def _refine(xi, xbits, rows, lo_bits, hi_bits, shift, last_row, b, d, x1, top):
    """Exact path for one value from its table cell: one Chebyshev step, no exp call.

    With ``v = |x|`` in the cell of row ``j`` (node ``X``, display value ``Y``):
    ``B(Y + h) - v = Ab h phi(b h) + Cd h phi(-d h) - (v - X)`` exactly, where
    ``phi(z) = expm1(z) / z``, ``Ab = B_+'(Y)`` and ``Cd = B_-'(Y)`` (logicle:
    ``a b e^(bY)`` and ``c d e^(-dY)``; hyperlog: ``a b e^(bY)``, ``c`` and
    ``d = 0``). ``v - X`` is exact (Sterbenz), ``|b h| <= z_max`` is small, so a
    degree-6 polynomial gives ``phi`` and ``e^z = 1 + z phi(z)`` to double
    precision and no cancellation against ``f`` occurs (no Taylor series needed
    near ``x1``). Returns NaN/inf only where the table does not apply (a second
    pass recomputes those values).
    """
    ab = xbits & _ABS_MASK
    j = ((ab - lo_bits) >> shift) + 1
    if ab < lo_bits:
        j = 0
    if j > last_row:
        j = last_row
    k = _ROW * j
    v = abs(xi)
    dv = v - rows[k]
    h = dv * rows[k + 3]
    zb = b * h
    zd = -d * h
    pb = 1.0 + zb * (_C2 + zb * (_C3 + zb * (_C4 + zb * (_C5 + zb * (_C6 + zb * _C7)))))
    pd = 1.0 + zd * (_C2 + zd * (_C3 + zd * (_C4 + zd * (_C5 + zd * (_C6 + zd * _C7)))))
    gb = rows[k + 4] * (1.0 + zb * pb)  # B_+'(Y + h)
    gd = rows[k + 5] * (1.0 + zd * pd)  # B_-'(Y + h)
    g = (rows[k + 4] * pb + rows[k + 5] * pd) * h - dv
    g1 = gb + gd
    g2 = b * gb - d * gd
    r = 1.0 / g1
    q = g * r
    # Chebyshev's method (third order like Halley's): q (1 + q B'' / (2 B'))
    y = rows[k + 1] + (rows[k + 2] + (h - q * (1.0 + 0.5 * q * g2 * r)))
    if v == top:
        y = 1.0  # T maps to 1 by definition (B(1) = T up to the rounding of a, c, f)
    if xbits < 0:
        y = 2.0 * x1 - y
    if ab >= hi_bits:
        y = np.nan
    return y


@njit(cache=NUMBA_CACHE, nogil=True)
def _fix_nonfinite(x, p, tilt, out):
    """Second pass of the exact path: exact solver where the table did not apply.

    ``tilt``: the same correction as in the table rows (:func:`exact_rows`).
    """
    x1 = p[P_X1]
    for i in range(x.shape[0]):
        if not math.isfinite(out[i]):
            y = _one_exact_guess(x[i], p, np.nan)
            if math.isfinite(y):
                y -= tilt * (y - x1)
            out[i] = y


@njit(cache=NUMBA_CACHE, nogil=True, error_model="numpy", **_NOALIAS)
def _exact_pass(x, rows, lo_bits, hi_bits, shift, b, d, x1, top, out):
    """Pass 1 of the exact path, serial: branch-free, vectorised (AVX2/AVX-512 gathers).

    ``error_model="numpy"``: ``1 / 0`` gives inf instead of raising, so the loop
    has no exception exit (a row with a zero derivative gives a non-finite
    value, which pass 2 recomputes).
    """
    xb = x.view(np.int64)
    last_row = rows.shape[0] // _ROW - 1
    for i in range(x.shape[0]):
        out[i] = _refine(x[i], xb[i], rows, lo_bits, hi_bits, shift, last_row, b, d, x1, top)


@njit(cache=NUMBA_CACHE, nogil=True)
def _overlap(x, out):
    """Whether ``x`` and ``out`` share memory without being the same array."""
    a = x.ctypes.data
    b = out.ctypes.data
    return a != b and a < b + 8 * out.shape[0] and b < a + 8 * x.shape[0]


@njit(cache=NUMBA_CACHE, nogil=True)
def exact_serial(x, p, table, lo_bits, hi_bits, shift, cell_mask, inv_cell, rows, top, tilt, out):
    """Exact path, serial. ``x``, ``out``: float64 (n,).

    Pass 1 (:func:`_exact_pass`): one Chebyshev step from the table cell using
    the biexponential's terms stored at the nodes (:func:`_refine`); pass 2: the
    Halley solver for values outside the table, NaN and inf.
    """
    if _overlap(x, out):
        x = x.copy()
    _exact_pass(x, rows, lo_bits, hi_bits, shift, p[P_B], p[P_D], p[P_X1], top, out)
    _fix_nonfinite(x, p, tilt, out)
    return out


@njit(cache=NUMBA_CACHE, nogil=True, parallel=True)
def exact_parallel(x, p, table, lo_bits, hi_bits, shift, cell_mask, inv_cell, rows, top, tilt, out):
    """Exact path, parallel over values (numba gives the loop body ``noalias``)."""
    if _overlap(x, out):
        x = x.copy()
    xb = x.view(np.int64)
    b = p[P_B]
    d = p[P_D]
    x1 = p[P_X1]
    last_row = rows.shape[0] // _ROW - 1
    for i in prange(x.shape[0]):
        out[i] = _refine(x[i], xb[i], rows, lo_bits, hi_bits, shift, last_row, b, d, x1, top)
    _fix_nonfinite(x, p, tilt, out)
    return out


@njit(cache=NUMBA_CACHE, nogil=True, error_model="numpy", **_NOALIAS)
def _masked_pass(x, rows, lo_bits, hi_bits, shift, b, d, x1, top, need, done, out):
    """Pass 1 on every entry, stored where ``need`` and not ``done``: branch-free, vectorised."""
    xb = x.view(np.int64)
    last_row = rows.shape[0] // _ROW - 1
    for i in range(x.shape[0]):
        y = _refine(x[i], xb[i], rows, lo_bits, hi_bits, shift, last_row, b, d, x1, top)
        out[i] = y if need[i] > done[i] else out[i]


@njit(cache=NUMBA_CACHE, nogil=True, error_model="numpy", **_NOALIAS)
def _gathered_pass(x, idx, rows, lo_bits, hi_bits, shift, b, d, x1, top, vals):
    """Pass 1 on the entries ``idx`` of ``x``, into ``vals`` (vectorised with gathers)."""
    xb = x.view(np.int64)
    last_row = rows.shape[0] // _ROW - 1
    for j in range(idx.shape[0]):
        i = idx[j]
        vals[j] = _refine(x[i], xb[i], rows, lo_bits, hi_bits, shift, last_row, b, d, x1, top)


@njit(cache=NUMBA_CACHE, nogil=True, error_model="numpy")
def exact_masked(x, p, table, lo_bits, hi_bits, shift, cell_mask, inv_cell, rows, top, tilt, need, done, out):
    """Exact path on the entries where ``need`` is set and ``done`` is not; sets ``done`` there.

    Block-wise gating transforms a dimension only on its gates' parent events,
    in place of a gather, a transform and a scatter. Per value it runs
    :func:`exact_serial`'s two passes (:func:`_refine`, then the solver where
    that is not finite), so every value is bit-identical to it. Other entries
    of ``out`` are left as they are. When most entries are wanted, pass 1 runs
    vectorised over all of them and keeps the wanted ones (``x`` must then hold
    numbers everywhere, which any float64 does); otherwise a scalar loop visits
    the wanted ones only.
    """
    n = x.shape[0]
    b = p[P_B]
    d = p[P_D]
    x1 = p[P_X1]
    # Branch-free counting and compaction (``a > b`` on bools is ``a and not b``): the masks
    # of unordered events are random, and a branch per entry would mispredict half the time.
    want = 0
    for i in range(n):
        want += need[i] > done[i]
    if want == 0:
        return out
    idx = np.empty(want, dtype=np.intp)
    k = 0
    for i in range(n):
        idx[k] = i
        k += need[i] > done[i]
        if k == want:
            break
    if 5 * want >= 4 * n:  # nearly all: one vectorised pass over everything, stored where wanted
        _masked_pass(x, rows, lo_bits, hi_bits, shift, b, d, x1, top, need, done, out)
    else:  # transform the wanted entries as a vector (gathers), scatter back
        vals = np.empty(want, dtype=np.float64)
        _gathered_pass(x, idx, rows, lo_bits, hi_bits, shift, b, d, x1, top, vals)
        for j in range(want):
            out[idx[j]] = vals[j]
    for j in range(want):
        i = idx[j]
        if not math.isfinite(out[i]):
            y = _one_exact_guess(x[i], p, np.nan)
            if math.isfinite(y):
                y -= tilt * (y - x1)
            out[i] = y
        done[i] = True
    return out


@njit(cache=NUMBA_CACHE, nogil=True)
def build_table(nodes, p, out):
    """Exact ``y`` at the table nodes (positive, increasing float64 (n,))."""
    for i in range(nodes.shape[0]):
        out[i] = _one_exact_guess(nodes[i], p, np.nan)
    return out


@njit(cache=NUMBA_CACHE, nogil=True)
def asinh_serial(x, scale, shift, divisor, out):
    """``(asinh(x * scale) + shift) / divisor``, serial. ``x``, ``out``: float64 (n,)."""
    inv = 1.0 / divisor
    for i in range(x.shape[0]):
        out[i] = (math.asinh(x[i] * scale) + shift) * inv
    return out


@njit(cache=NUMBA_CACHE, nogil=True, parallel=True)
def asinh_parallel(x, scale, shift, divisor, out):
    """``(asinh(x * scale) + shift) / divisor``, parallel."""
    inv = 1.0 / divisor
    for i in prange(x.shape[0]):
        out[i] = (math.asinh(x[i] * scale) + shift) * inv
    return out


def make_table(p: np.ndarray, T: float, *, bits: int | None = None) -> tuple:
    """Build the fast-path table of one parameter set.

    Parameters
    ----------
    p : ndarray of float64, shape (N_PARAMS,)
        Packed constants from :mod:`flowtools.transforms._params`.
    T : float
        Top of scale; the table spans ``[2**-40, 2**6] * 2**floor(log2 T)``.
    bits : int, optional
        Nodes per octave as a power of two; default: enough for an error bound
        ``2**(-2 bits) / (8 b) <= 1e-7`` (at least ``TABLE_BITS``, at most 14).

    Returns
    -------
    tuple
        ``(table, lo_bits, hi_bits, shift, cell_mask, inv_cell, rows, T, tilt)``:
        the exact ``y`` at the nodes (float64, shape ``(octaves * 2**bits + 1,)``),
        the int64/float constants the kernels use to index it, and the
        exact-path rows, ``T`` and correction (:func:`exact_rows`).
    """
    if bits is None:
        # error bound 2**(-2 bits) / (8 b) <= 1e-7 (measured error stays within 2.5x of it)
        need = 0.5 * math.log2(1.0 / (8.0 * p[P_B] * 1e-7))
        bits = min(max(TABLE_BITS, math.ceil(need)), 14)
    e_top = int(math.floor(math.log2(T)))
    e_lo = max(e_top - TABLE_OCTAVES_BELOW_T + 1023, 1)
    e_hi = min(e_top + TABLE_OCTAVES_ABOVE_T + 1023, 2046)
    shift = 52 - bits
    n = ((e_hi - e_lo) << bits) + 1
    lo_bits = np.uint64(e_lo << 52)
    node_bits = lo_bits + (np.arange(n, dtype=np.uint64) << np.uint64(shift))
    nodes = node_bits.view(np.float64)
    table = build_table(nodes, p, np.empty(n))
    return (
        table,
        np.int64(e_lo << 52),
        np.int64(e_hi << 52),
        np.int64(shift),
        np.int64((1 << shift) - 1),
        float(2.0**-shift),
        *exact_rows(p, nodes, table, T),
    )


def exact_rows(p: np.ndarray, nodes: np.ndarray, table: np.ndarray, T: float) -> tuple:
    """Rows of the exact path: float64 ``(n + 1) * _ROW``, read-only; ``T``; ``tilt``.

    Row 0 is data value 0 (display value ``x1``, the cell below the first node),
    row ``j + 1`` is node ``j``: ``X, Y, Y_lo, S, B_+'(Y), B_-'(Y)``. ``Y + Y_lo``
    is the root of ``B(y) = X`` to about 2**-64 relative (one Newton correction
    of the table value with the residual computed in ``np.longdouble``; where
    that is plain double, ``Y_lo`` is only as good as double rounding allows):
    the kernel adds its step to ``Y_lo`` first and rounds once, so results do
    not jump by an ulp at cell boundaries and stay monotonic. ``S`` is the
    slope of the chord to the next node (0 in the last row). Rows whose
    derivative terms are not finite and positive (extreme ``T``) get NaN, so
    that the kernel hands their values to the exact solver.

    With the rounded constants ``a, c, f`` the root of ``B(y) = T`` is ``1 + e``
    with ``|e|`` of an ulp or two, not 1: ``y`` is tilted by
    ``-tilt (y - x1)``, ``tilt = e / (1 - x1)`` (at most a few 1e-16, monotonic),
    so that ``x1`` stays exact and ``T`` maps to exactly 1 without a jump next
    to ``T``; pass 2 of the kernel applies the same tilt.
    """
    a, b, c, d, f = (float(p[i]) for i in (P_A, P_B, P_C, P_D, P_F))
    x1 = float(p[P_X1])
    logicle = p[P_KIND] == KIND_LOGICLE
    x = np.concatenate([[0.0], nodes])
    y = np.concatenate([[x1], table])
    ld = np.longdouble
    with np.errstate(all="ignore"):
        yl = y.astype(ld)
        eb = ld(a) * np.exp(ld(b) * yl)
        if logicle:
            ed = ld(c) * np.exp(-ld(d) * yl)
            value = (eb - ed) + ld(f)
            gb = ld(b) * eb
            gd = ld(d) * ed
        else:
            value = (eb + ld(c) * yl) - ld(f)
            gb = ld(b) * eb
            gd = np.full_like(yl, ld(c))
        # near x1 B is its Taylor series (as in _solve): no cancellation against f
        u = yl - ld(x1)
        series = np.zeros_like(yl)
        for k in range(TAYLOR_LENGTH - 1, -1, -1):
            series = (series + ld(float(p[P_TAYLOR + k]))) * u
        near = y < p[P_XTAYLOR]
        value[near] = series[near]
        y_lo = (-(value - x.astype(ld)) / (gb + gd)).astype(np.float64)
        y_lo[0] = 0.0  # data value 0 is x1 by definition
        # root of B(y) = T by one Newton step from 1 (long double), see the tilt above
        one = ld(1.0)
        if logicle:
            b1 = (ld(a) * np.exp(ld(b)) - ld(c) * np.exp(-ld(d))) + ld(f)
            db1 = ld(a) * ld(b) * np.exp(ld(b)) + ld(c) * ld(d) * np.exp(-ld(d))
        else:
            b1 = (ld(a) * np.exp(ld(b)) + ld(c)) - ld(f)
            db1 = ld(a) * ld(b) * np.exp(ld(b)) + ld(c)
        tilt = float(-((b1 - ld(T)) / db1) / (one - ld(x1))) if x1 < 1.0 else 0.0
        if not (math.isfinite(tilt) and abs(tilt) < 1e-12):  # pragma: no cover - defensive
            tilt = 0.0
        y_lo = (y_lo.astype(ld) - ld(tilt) * (yl + y_lo.astype(ld) - ld(x1))).astype(np.float64)
        slope = np.zeros_like(x)
        slope[:-1] = np.diff(y) / np.diff(x)
        gb = gb.astype(np.float64)
        gd = gd.astype(np.float64)
        bad = ~(np.isfinite(gb) & np.isfinite(gd) & (gb + gd > 0) & np.isfinite(slope) & np.isfinite(y_lo))
    h_max = float(np.max(np.diff(y)))
    z_max = max(b, d) * h_max
    # phi is cut after z**6/5040: relative error <= z**7/40320 (e^z < 1.1), which
    # moves y by at most h z**7/40320 (< 1e-22 for z < 0.02, h < 1e-3; measured
    # over the parameter domain: z <= 7.1e-3, h <= 5e-4)
    if not h_max * z_max**7 / 40320.0 < 1e-20:  # pragma: no cover - cells are ~1e-3 wide in b y
        bad[:] = True
    rows = np.stack([x, y, y_lo, slope, gb, gd], axis=1)
    rows[bad, 2:] = np.nan
    rows = np.ascontiguousarray(rows).reshape(-1)
    rows.setflags(write=False)
    return rows, float(T), tilt
