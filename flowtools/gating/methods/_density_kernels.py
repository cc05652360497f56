"""Numba kernels of the density methods (``mindensity``, ``tail``, ``quad``), bit for bit numpy's.

Imported lazily by :mod:`flowtools.gating.methods.density` (numba stays out of ``import
flowtools``). Each kernel repeats, per element, the IEEE operations of the numpy expression
it stands for, in the same order (no fast-math), so the results are the same bits; the
plain-numpy references are in ``tests/reference/methods_ref.py``.

restrict
    ``x[(x >= lo) & (x <= hi)]`` in one pass.
density_hist
    The binned counts of ``_Density``: ``np.bincount`` of ``floor((x - lo) / dx + 0.5)``
    over the indices in ``[0, grid)``, as float64, without temporaries.
prominences
    The prominences of ``_Density.peaks``: one scan per peak.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flowtools._config import NUMBA_CACHE

__all__ = ["density_hist", "prominences", "restrict"]


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

    In numpy::

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
