"""Plain-numpy references for the gating kernels."""

from __future__ import annotations

import numpy as np


def polygon_ref(x: np.ndarray, y: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd rule, one edge at a time, vectorised over points."""
    inside = np.zeros(x.shape[0], dtype=bool)
    v = np.asarray(vertices, dtype=np.float64)
    m = len(v)
    for k in range(m):
        xi, yi = v[k]
        xj, yj = v[k - 1]
        straddle = (yi > y) != (yj > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = (xj - xi) * (y - yi) / (yj - yi) + xi
        inside ^= straddle & (x < xc)
    return inside


def ellipsoid_ref(values: np.ndarray, mean: np.ndarray, inv_cov: np.ndarray, dist2: float) -> np.ndarray:
    d = values - mean
    q = np.einsum("ij,jk,ik->i", d, inv_cov, d)
    return q <= dist2


def rectangle_ref(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.all((values >= lo) & ((values < hi) | (hi == np.inf)), axis=1)
