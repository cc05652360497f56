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
def _spline_at(v: float, c: int, m: int, x0: np.ndarray, xn: np.ndarray, inv: np.ndarray, slo: np.ndarray,
               shi: np.ndarray, blo: np.ndarray, bhi: np.ndarray,
               tab: np.ndarray) -> float:  # pragma: no cover
    """Spline ``(c, m)`` at ``v``: table lookup inside, linear ends outside, clipped to ``[blo, bhi]``."""
    g = tab.shape[2]
    a = x0[c, m]
    if v < a:
        r = tab[c, m, 0] + slo[c, m] * (v - a)
    elif v > xn[c, m]:
        r = tab[c, m, g - 1] + shi[c, m] * (v - xn[c, m])
    else:
        t = (v - a) * inv[c, m]
        k = int(t)
        if k > g - 2:
            k = g - 2
        f = t - k
        r = tab[c, m, k] + f * (tab[c, m, k + 1] - tab[c, m, k])
    if r < blo[c, m]:
        r = blo[c, m]
    elif r > bhi[c, m]:
        r = bhi[c, m]
    return r


@njit(cache=NUMBA_CACHE, nogil=True)
def apply_tables(
    x: np.ndarray, labels: np.ndarray, x0: np.ndarray, xn: np.ndarray, inv: np.ndarray, slo: np.ndarray,
    shi: np.ndarray, blo: np.ndarray, bhi: np.ndarray, tab: np.ndarray, out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """``out[e, m]`` = spline ``(labels[e], m)`` at ``x[e, m]``; label < 0 or NaN: copied unchanged."""
    n, nm = x.shape
    for e in range(n):
        c = labels[e]
        for m in range(nm):
            v = x[e, m]
            if c < 0 or v != v:
                out[e, m] = v
                continue
            out[e, m] = _spline_at(v, c, m, x0, xn, inv, slo, shi, blo, bhi, tab)


@njit(cache=NUMBA_CACHE, nogil=True)
def apply_blend(
    x: np.ndarray, weights: np.ndarray, x0: np.ndarray, xn: np.ndarray, inv: np.ndarray, slo: np.ndarray,
    shi: np.ndarray, blo: np.ndarray, bhi: np.ndarray, tab: np.ndarray, out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """``out[e, m]`` = sum over slots ``c`` of ``weights[e, c]`` x spline ``(c, m)`` at ``x[e, m]``.

    Weights of a row sum to 1 (soft cluster membership); a NaN value is copied unchanged.
    """
    n, nm = x.shape
    k = weights.shape[1]
    for e in range(n):
        for m in range(nm):
            v = x[e, m]
            if v != v:
                out[e, m] = v
                continue
            acc = 0.0
            for c in range(k):
                w = weights[e, c]
                if w == 0.0:
                    continue
                acc += w * _spline_at(v, c, m, x0, xn, inv, slo, shi, blo, bhi, tab)
            out[e, m] = acc
