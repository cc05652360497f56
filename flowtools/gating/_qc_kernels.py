"""Numba kernels of the ``qc`` and ``mindensity`` methods: fused elementwise passes, bit for bit numpy's.

Imported lazily by :mod:`flowtools.gating._methods` (numba stays out of ``import flowtools``).
Each kernel repeats, per element, the IEEE operations of the numpy expression it
replaces, in the same order (no fast-math: no contraction, no reassociation), so
the results are the same bits. The plain-numpy references are in
``tests/gating/test_methods_speed_paths.py``.

interp
    ``np.interp(x, xp, fp)`` of unsorted ``x`` against a strictly increasing ``xp``:
    numpy's bisection per value mispredicts on unsorted input (~25x slower than on
    sorted input); here a lookup table over ``[xp[0], xp[-1]]`` gives a starting index
    and a short scan finds the same interval numpy's search finds.
restrict
    ``x[(x >= lo) & (x <= hi)]`` in one pass.
density_hist
    The binned counts of ``_Density``: ``np.bincount`` of ``floor((x - lo) / dx + 0.5)``
    over the indices in ``[0, grid)``, as float64, without the four temporaries.
prominences
    The prominences of ``_Density.peaks`` (one scan per peak instead of numpy calls on slices).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from flowtools._config import NUMBA_CACHE

__all__ = ["density_hist", "interp", "prominences", "restrict"]


@njit(cache=NUMBA_CACHE, nogil=True)
def interp(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """``np.interp(x, xp, fp)`` for 1-D float64 ``x`` and strictly increasing ``xp`` (length >= 2).

    numpy's ``arr_interp``: the interval is the last ``j`` with ``xp[j] <= x`` (-1 below
    ``xp[0]``: ``fp[0]``; above ``xp[-1]``: ``fp[-1]``); ``x == xp[j]`` or ``j`` the last
    point gives ``fp[j]``; otherwise ``slope * (x - xp[j]) + fp[j]`` with
    ``slope = (fp[j+1] - fp[j]) / (xp[j+1] - xp[j])``, retried from the right end when
    that is NaN (and ``fp[j]`` when still NaN over a flat step). NaN x stays NaN.
    """
    n_p = xp.shape[0]
    out = np.empty(x.shape[0])
    lo, top = xp[0], xp[n_p - 1]
    # Lookup table: cells of equal width over [lo, top]; cell c holds the last xp <= its left
    # edge. It only picks where the scan starts (the scans below make the index exact); fine
    # cells keep the scans short, hence cheap in mispredicted branches.
    cells = 32 * n_p if x.shape[0] >= 32 * n_p else 8 * n_p
    span = top - lo
    scale = cells / span if span > 0.0 and math.isfinite(span) else 0.0
    lut = np.empty(cells, dtype=np.int32)
    j = 0
    for c in range(cells):
        edge = lo + c / scale if scale > 0.0 else lo
        while j + 1 < n_p and xp[j + 1] <= edge:
            j += 1
        lut[c] = j
    slopes = np.empty(n_p - 1)  # numpy precomputes them too (same expression)
    for k in range(n_p - 1):
        slopes[k] = (fp[k + 1] - fp[k]) / (xp[k + 1] - xp[k])
    for i in range(x.shape[0]):
        v = x[i]
        if math.isnan(v):
            out[i] = v
            continue
        if v > top:
            out[i] = fp[n_p - 1]
            continue
        if v < lo:
            out[i] = fp[0]
            continue
        t = (v - lo) * scale
        c = int(t) if t < cells else cells - 1
        j = np.intp(lut[c])
        while j + 1 < n_p and xp[j + 1] <= v:
            j += 1
        while j > 0 and xp[j] > v:
            j -= 1
        if j == n_p - 1 or xp[j] == v:
            out[i] = fp[j]
            continue
        slope = slopes[j]
        r = slope * (v - xp[j]) + fp[j]
        if math.isnan(r):  # numpy: NaN one way, try the other
            r = slope * (v - xp[j + 1]) + fp[j + 1]
            if math.isnan(r) and fp[j] == fp[j + 1]:
                r = fp[j]
        out[i] = r
    return out


@njit(cache=NUMBA_CACHE, nogil=True)
def restrict(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``x[(x >= lo) & (x <= hi)]`` of a 1-D float64 array (a view of a buffer of x's length)."""
    out = np.empty(x.shape[0])
    m = 0
    for i in range(x.shape[0]):
        v = x[i]
        if v >= lo and v <= hi:
            out[m] = v
            m += 1
    return out[:m]


@njit(cache=NUMBA_CACHE, nogil=True)
def density_hist(x: np.ndarray, lo: float, dx: float, grid: int) -> np.ndarray:
    """Counts of ``floor((x - lo) / dx + 0.5)`` over the indices ``0 .. grid - 1``, as float64.

    The numpy it replaces::

        idx = np.floor((x - lo) / dx + 0.5)
        idx = idx[(idx >= 0) & (idx < grid)].astype(np.intp)
        np.bincount(idx, minlength=grid).astype(np.float64)
    """
    counts = np.zeros(grid, dtype=np.int64)
    for i in range(x.shape[0]):
        k = np.floor((x[i] - lo) / dx + 0.5)
        if k >= 0 and k < grid:
            counts[int(k)] += 1
    return counts.astype(np.float64)


@njit(cache=NUMBA_CACHE, nogil=True)
def prominences(d: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Prominence of each peak ``idx[j]`` of a NaN-free density ``d`` (``_Density.peaks``' loop).

    Left base: the lowest point from the nearest point on the left higher than the
    peak (or the start) to the peak; right base: the same to the right (or the end);
    prominence: the peak's height minus the higher base (``max(left, right)``).
    """
    n = d.shape[0]
    prom = np.empty(idx.shape[0])
    for j in range(idx.shape[0]):
        i = idx[j]
        top = d[i]
        a = 0
        for t in range(i - 1, -1, -1):
            if d[t] > top:
                a = t
                break
        left = d[a]
        for t in range(a + 1, i + 1):
            if d[t] < left:
                left = d[t]
        b = n - 1
        for t in range(i + 1, n):
            if d[t] > top:
                b = t
                break
        right = d[i]
        for t in range(i + 1, b + 1):
            if d[t] < right:
                right = d[t]
        prom[j] = top - (right if right > left else left)
    return prom
