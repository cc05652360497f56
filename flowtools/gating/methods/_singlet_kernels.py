"""Numba kernels of the ``singlet`` method: one trimmed least-squares iteration's elementwise steps.

Imported lazily by :mod:`flowtools.gating.methods.singlet` (numba stays out of ``import
flowtools``). `singlet_step` and `singlet_kept_sorted` repeat, per event, the IEEE operations
of the numpy expressions of ``tests/reference/methods_ref.py`` (``singlet_band_ref``,
``singlet_kept_ref``) in their order, so the results are the same bits; `line_lstsq` solves
the two-column weighted line fit; `bin_scales` the per-bin medians and MADs of the residual
scale model (as ``np.median`` computes them: same bits).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from flowtools._config import NUMBA_CACHE

__all__ = ["bin_scales", "line_lstsq", "singlet_kept_sorted", "singlet_step"]


@njit(cache=NUMBA_CACHE, nogil=True)
def line_lstsq(design: np.ndarray, rhs: np.ndarray, m: int) -> tuple[bool, float, float]:
    """Least squares ``min ||design[:m] @ (x0, x1) - rhs[:m]||`` for a two-column design.

    Gram-Schmidt on the two columns, orthogonalised twice ("twice is enough"), then the
    solve and one step of iterative refinement on the residuals: six passes over the rows, no
    copies. On singlet's weighted line fits (~47k rows) the solution is within 1e-13 of the
    exact (rational) one, as close as ``np.linalg.lstsq``'s SVD (3e-14 to 8e-13 there).
    Returns ``(ok, x0, x1)``; ``ok`` is False when the columns are
    nearly collinear (the second's part orthogonal to the first below 1e-4 of its norm), where
    the caller falls back to the SVD, which is more accurate there.
    """
    s11 = 0.0
    s12 = 0.0
    s22 = 0.0
    for i in range(m):
        d1 = design[i, 0]
        d2 = design[i, 1]
        s11 += d1 * d1
        s12 += d1 * d2
        s22 += d2 * d2
    if not (s11 > 0.0 and math.isfinite(s11) and math.isfinite(s22)):
        return False, 0.0, 0.0
    f = s12 / s11
    g = 0.0
    for i in range(m):  # what is left of column 2 along column 1 after one projection
        g += design[i, 0] * (design[i, 1] - f * design[i, 0])
    f += g / s11
    x0 = 0.0
    x1 = 0.0
    for _ in range(2):  # solve, then refine once on the residuals
        svv = 0.0
        svr = 0.0
        for i in range(m):
            r = rhs[i] - (design[i, 0] * x0 + design[i, 1] * x1)
            v = design[i, 1] - f * design[i, 0]
            svv += v * v
            svr += v * r
        if not svv > 1e-8 * s22:  # column 2 (nearly) a multiple of column 1: ill-conditioned, the SVD's job
            return False, 0.0, 0.0
        x1 += svr / svv
        s1r = 0.0
        for i in range(m):
            s1r += design[i, 0] * (rhs[i] - (design[i, 0] * x0 + design[i, 1] * x1))
        x0 += s1r / s11
    return True, x0, x1


# error_model="numpy": no zero test per division, so the first loop vectorises (s >= floor > 0
# or NaN: 1 / s never divides by zero).
@njit(cache=NUMBA_CACHE, nogil=True, error_model="numpy")
def singlet_step(a: np.ndarray, h: np.ndarray, c: float, b: float, s0: float, s1: float, floor: float,
                 new: np.ndarray, design: np.ndarray, rhs: np.ndarray, sw: np.ndarray) -> tuple[int, bool]:
    """The band of ``h = c + b a``, its weighted system, and whether ``new`` held that band already.

    ``sw`` (n) is scratch: ``sqrt(1 / s)`` of every event is taken in a first, branch-free
    loop that vectorises. Per event, the IEEE operations are those of the numpy expressions
    of ``tests/reference/methods_ref.py::singlet_band_ref``, in their order (so the same bits).
    Returns ``(m, same)``: the band's size and whether no event changed side.
    """
    n = a.shape[0]
    changed = 0
    for i in range(n):  # branch-free: vectorises
        e = h[i] - (c + b * a[i])
        s = s0 + s1 * a[i]
        if s < floor:  # np.maximum(s, floor) (a NaN stays NaN)
            s = floor
        sw[i] = math.sqrt(1.0 / s)
        ok = abs(e) <= 3.0 * s
        changed += new[i] != ok
        new[i] = ok
    m = 0
    for i in range(n):
        if new[i]:
            w = sw[i]
            design[m, 0] = w
            design[m, 1] = a[i] * w
            rhs[m] = h[i] * w
            m += 1
    same = changed == 0
    return m, same


@njit(cache=NUMBA_CACHE, nogil=True)
def singlet_kept_sorted(a_s: np.ndarray, h_s: np.ndarray, c_band: float, b_band: float, s0: float,
                        s1: float, floor: float, c: float, b: float, a_kept: np.ndarray,
                        e_kept: np.ndarray) -> int:
    """The band's events in area order, read from the events already sorted by area (``a_s``, ``h_s``).

    Membership is re-derived per event with the band's own operations (line ``c_band``,
    ``b_band``, scale ``s0 + s1 a`` floored): the same booleans as the band's ``new``.
    Residuals ``h - (c + b a)`` use the refitted line. Returns m.
    """
    m = 0
    for t in range(a_s.shape[0]):
        av = a_s[t]
        hv = h_s[t]
        s = s0 + s1 * av
        if s < floor:
            s = floor
        if abs(hv - (c_band + b_band * av)) <= 3.0 * s:
            a_kept[m] = av
            e_kept[m] = hv - (c + b * av)
            m += 1
    return m


@njit(cache=NUMBA_CACHE, nogil=True)
def _select(buf: np.ndarray, n: int, k: int) -> float:
    """The k-th smallest of ``buf[:n]`` (NaN-free), by in-place quickselect (median-of-three pivot).

    Afterwards ``buf[:k]`` holds values <= it (any order): the lower middle of an even count is
    their maximum.
    """
    lo = 0
    hi = n - 1
    while hi > lo:
        mid = (lo + hi) >> 1
        # median of three to buf[mid], then Hoare partition around it
        if buf[mid] < buf[lo]:
            buf[mid], buf[lo] = buf[lo], buf[mid]
        if buf[hi] < buf[lo]:
            buf[hi], buf[lo] = buf[lo], buf[hi]
        if buf[hi] < buf[mid]:
            buf[hi], buf[mid] = buf[mid], buf[hi]
        pivot = buf[mid]
        i = lo
        j = hi
        while i <= j:
            while buf[i] < pivot:
                i += 1
            while buf[j] > pivot:
                j -= 1
            if i <= j:
                buf[i], buf[j] = buf[j], buf[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return buf[k]


@njit(cache=NUMBA_CACHE, nogil=True)
def _median_of(buf: np.ndarray, n: int) -> float:
    """``np.median`` of ``buf[:n]`` (n > 0), reordering it: NaN if any is NaN, else the middle value(s).

    As numpy: one middle value for an odd count, ``(lower + upper) / 2`` for an even one.
    """
    for i in range(n):
        if buf[i] != buf[i]:
            return np.nan
    k = n // 2
    upper = _select(buf, n, k)
    if n % 2 == 1:
        return upper
    lower = buf[0]
    for i in range(1, k):
        if buf[i] > lower:
            lower = buf[i]
    return (lower + upper) / 2.0


@njit(cache=NUMBA_CACHE, nogil=True)
def bin_scales(a_s: np.ndarray, e_s: np.ndarray, bounds: np.ndarray, min_n: int, mids: np.ndarray,
               mads: np.ndarray, buf: np.ndarray) -> int:
    """Per bin ``[bounds[b], bounds[b + 1])`` with at least ``min_n`` events: median of a, MAD of e.

    ``mids[k]`` is ``np.median(a_s[lo:hi])`` and ``mads[k]`` ``np.median(|e - np.median(e)|)`` of
    the bin's residuals (unscaled), for the k-th bin kept; ``buf`` is scratch as long as the
    largest bin. ``a_s`` is ascending (NaN last), so its medians are read at the middle, not
    selected. Returns how many bins were kept.
    """
    k = 0
    for b in range(bounds.shape[0] - 1):
        lo = bounds[b]
        hi = bounds[b + 1]
        if hi - lo < min_n:
            continue
        m = hi - lo
        upper = a_s[lo + m // 2]
        if a_s[hi - 1] != a_s[hi - 1]:  # a NaN (sorted last): numpy's median is NaN
            mids[k] = np.nan
        else:
            mids[k] = upper if m % 2 == 1 else (a_s[lo + m // 2 - 1] + upper) / 2.0
        for i in range(m):
            buf[i] = e_s[lo + i]
        med = _median_of(buf, m)
        for i in range(m):
            buf[i] = abs(e_s[lo + i] - med)
        mads[k] = _median_of(buf, m)
        k += 1
    return k
