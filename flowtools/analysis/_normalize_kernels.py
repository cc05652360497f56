"""Numba kernel of batch normalisation: every event through the spline table of its cluster.

Imported lazily by :mod:`flowtools.analysis.normalize`. A spline is tabulated on a uniform
grid between its first and last knot (``x0``, ``xn``; ``inv`` = points per unit), extended
linearly beyond them (``slo``, ``shi``) and clipped to ``[blo, bhi]``. The plain-numpy
reference is :meth:`flowtools.analysis.normalize._Spline.__call__` (the same arithmetic).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flowtools._config import NUMBA_CACHE

__all__ = ["apply_blend", "apply_tables"]


@njit(cache=NUMBA_CACHE, nogil=True, inline="always")
def _lookup(v: float, a: float, b: float, iv: float, sl: float, sh: float, lo: float, hi: float,
            row: np.ndarray) -> float:  # pragma: no cover
    """One spline at ``v``: table ``row`` on ``[a, b]`` (``iv`` points per unit), linear ends, clipped."""
    g = row.shape[0]
    if v < a:
        r = row[0] + sl * (v - a)
    elif v > b:
        r = row[g - 1] + sh * (v - b)
    else:
        t = (v - a) * iv
        k = int(t)
        if k > g - 2:
            k = g - 2
        f = t - k
        r = row[k] + f * (row[k + 1] - row[k])
    if r < lo:
        r = lo
    elif r > hi:
        r = hi
    return r


@njit(cache=NUMBA_CACHE, nogil=True)
def apply_tables(
    x: np.ndarray, labels: np.ndarray, x0: np.ndarray, xn: np.ndarray, inv: np.ndarray, slo: np.ndarray,
    shi: np.ndarray, blo: np.ndarray, bhi: np.ndarray, tab: np.ndarray, out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """``out[e, m]`` = spline ``(labels[e], m)`` at ``x[e, m]``; label < 0 or NaN: copied unchanged.

    Marker-major (one marker's few tables stay in cache), the spline's numbers read into locals
    once per lookup (``out`` could alias them, so numba reloads every array read otherwise).
    """
    n, nm = x.shape
    for m in range(nm):
        for e in range(n):
            c = labels[e]
            v = x[e, m]
            if c < 0 or v != v:
                out[e, m] = v
                continue
            out[e, m] = _lookup(v, x0[c, m], xn[c, m], inv[c, m], slo[c, m], shi[c, m], blo[c, m], bhi[c, m],
                                tab[c, m])


@njit(cache=NUMBA_CACHE, nogil=True)
def apply_blend(
    x: np.ndarray, weights: np.ndarray, x0: np.ndarray, xn: np.ndarray, inv: np.ndarray, slo: np.ndarray,
    shi: np.ndarray, blo: np.ndarray, bhi: np.ndarray, tab: np.ndarray, out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """``out[e, m]`` = sum over slots ``c`` of ``weights[e, c]`` x spline ``(c, m)`` at ``x[e, m]``.

    Weights of a row sum to 1 (soft cluster membership); a NaN value is copied unchanged. Loops
    marker, slot, event, with the spline's numbers in locals: ~8x faster than event-major, and
    each ``out[e, m]`` still sums its slots in slot order from 0.0 (the same numbers to the bit).
    """
    n, nm = x.shape
    k = weights.shape[1]
    for m in range(nm):
        for e in range(n):
            out[e, m] = 0.0
        for c in range(k):
            a, b, iv, sl, sh = x0[c, m], xn[c, m], inv[c, m], slo[c, m], shi[c, m]
            lo, hi = blo[c, m], bhi[c, m]
            row = tab[c, m]
            for e in range(n):
                v = x[e, m]
                w = weights[e, c]
                if w == 0.0 or v != v:
                    continue
                out[e, m] += w * _lookup(v, a, b, iv, sl, sh, lo, hi, row)
        for e in range(n):
            v = x[e, m]
            if v != v:
                out[e, m] = v
