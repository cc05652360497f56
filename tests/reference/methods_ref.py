"""Plain scipy references for the data-driven gating methods (a second algorithm for the same job)."""

from __future__ import annotations

import math

import numpy as np
from numba import njit


def mindensity_ref(x: np.ndarray, *, min_peak_height: float = 0.05) -> float:
    """Valley between the two most prominent peaks of scipy's gaussian_kde (Scott's rule)."""
    from scipy.signal import find_peaks
    from scipy.stats import gaussian_kde

    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    grid = np.linspace(x.min(), x.max(), 2001)
    dens = gaussian_kde(x[:: max(1, x.size // 20000)])(grid)
    idx, props = find_peaks(np.r_[0.0, dens, 0.0], prominence=min_peak_height * dens.max())
    idx -= 1
    if idx.size < 2:
        msg = "one peak"
        raise ValueError(msg)
    top = np.sort(idx[np.argsort(-props["prominences"])[:2]])
    return float(grid[top[0] + np.argmin(dens[top[0] : top[1] + 1])])


def chi2_ppf_ref(p: float, d: int) -> float:
    """Chi-square quantile from scipy."""
    from scipy.stats import chi2

    return float(chi2.ppf(p, d))


def mixture_valley(weights, means, sds, lo: float, hi: float) -> float:
    """The lowest point of a 1-D normal mixture density between lo and hi (the true cut)."""
    grid = np.linspace(lo, hi, 200_001)
    pdf = sum(
        w / s * np.exp(-0.5 * ((grid - m) / s) ** 2) for w, m, s in zip(weights, means, sds, strict=True)
    )
    return float(grid[np.argmin(pdf)])


# singlet's per-iteration kernels before singlet_step / singlet_kept_sorted replaced them: the
# references those are compared with, bit for bit (tests/gating/test_methods_speed_paths.py).
@njit(cache=False, nogil=True)
def singlet_band(a: np.ndarray, h: np.ndarray, c: float, b: float, s0: float, s1: float, floor: float,
                 new: np.ndarray, design: np.ndarray, rhs: np.ndarray) -> int:
    """Events inside the 3-sigma band of the line ``h = c + b a`` and the weighted least-squares system.

    Elementwise, exactly the numpy of ``singlet``::

        e = h - (c + b * a); s = np.maximum(s0 + s1 * a, floor); new = np.abs(e) <= 3.0 * s
        sw = np.sqrt(1.0 / s[new]); design = [sw, a[new] * sw]; rhs = h[new] * sw

    ``new`` (bool, n) receives the band; ``design`` (n, 2) and ``rhs`` (n,) receive the
    system in their first m rows (event order). Returns m.
    """
    m = 0
    for i in range(a.shape[0]):
        e = h[i] - (c + b * a[i])
        s = s0 + s1 * a[i]
        if s < floor:  # np.maximum(s, floor) (a NaN stays NaN)
            s = floor
        ok = abs(e) <= 3.0 * s
        new[i] = ok
        if ok:
            sw = math.sqrt(1.0 / s)
            design[m, 0] = sw
            design[m, 1] = a[i] * sw
            rhs[m] = h[i] * sw
            m += 1
    return m


@njit(cache=False, nogil=True)
def singlet_kept(a: np.ndarray, h: np.ndarray, order: np.ndarray, new: np.ndarray, c: float, b: float,
                 a_kept: np.ndarray, e_kept: np.ndarray) -> int:
    """The band's events in ``order`` (area ascending): their area and residual ``h - (c + b a)``.

    Fills the first m entries of ``a_kept`` and ``e_kept``; returns m.
    """
    m = 0
    for t in range(order.shape[0]):
        i = order[t]
        if new[i]:
            a_kept[m] = a[i]
            e_kept[m] = h[i] - (c + b * a[i])
            m += 1
    return m
