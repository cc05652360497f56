"""Numba kernel of the ``qc`` method: ``np.interp`` of unsorted values, bit for bit numpy's.

Imported lazily by :mod:`flowtools.gating.methods.qc` (numba stays out of ``import flowtools``).
The kernel repeats, per element, the IEEE operations of ``np.interp`` in the same order (no
fast-math: no contraction, no reassociation), so the results are the same bits; reference:
``np.interp`` itself (``tests/reference/methods_ref.py``).

interp
    ``np.interp(x, xp, fp)`` of unsorted ``x`` against a strictly increasing ``xp``: a
    lookup table over ``[xp[0], xp[-1]]`` gives a starting index and a short scan finds
    the interval numpy's bisection finds (a bisection per value mispredicts its branches
    on unsorted input).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from flowtools._config import NUMBA_CACHE

__all__ = ["interp"]


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
    # cells keep the scans short.
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
    slopes = np.empty(n_p - 1)  # numpy's own precomputed slopes (same expression)
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
