"""Plain scipy references for the data-driven gating methods (a second algorithm for the same job)."""

from __future__ import annotations

import numpy as np


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
