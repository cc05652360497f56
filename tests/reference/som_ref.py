"""Plain-numpy references of the SOM kernels (flowtools.analysis._som_kernels)."""

from __future__ import annotations

import numpy as np


def bmu_ref(x: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest code (lowest index on ties) and squared distance; NaN rows give (0, inf)."""
    if x.size:
        d2 = ((x[:, None, :] - codes[None, :, :]) ** 2).sum(axis=2)
    else:
        d2 = np.zeros((x.shape[0], codes.shape[0]))
    d2 = np.where(np.isnan(d2), np.inf, d2)
    idx = np.argmin(d2, axis=1).astype(np.int64) if x.shape[0] else np.zeros(0, np.int64)
    dist = d2[np.arange(x.shape[0]), idx] if x.shape[0] else np.zeros(0)
    return idx, dist


def som_online_ref(
    x, codes, grid_dist, order, alpha_start, alpha_end, radius_start, radius_end
) -> np.ndarray:
    """Kohonen online training, one step at a time (returns new codes)."""
    codes = np.array(codes, dtype=np.float64, copy=True)
    n_steps = order.shape[0]
    for s, i in enumerate(order):
        frac = s / n_steps
        alpha = alpha_start - (alpha_start - alpha_end) * frac
        radius = radius_start - (radius_start - radius_end) * frac
        best = int(np.argmin(((x[i] - codes) ** 2).sum(axis=1)))
        near = grid_dist[best] <= radius
        codes[near] += alpha * (x[i] - codes[near])
    return codes


def node_sums_ref(x: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx, _ = bmu_ref(x, codes)
    k, d = codes.shape
    sums = np.zeros((k, d))
    np.add.at(sums, idx, x)
    return sums, np.bincount(idx, minlength=k).astype(np.float64)


def som_batch_update_ref(codes, sums, counts, grid_dist, radius) -> np.ndarray:
    """Batch SOM update with a bubble neighbourhood (returns new codes)."""
    h = (grid_dist <= radius).astype(np.float64)
    w = h @ counts
    acc = h @ sums
    out = np.array(codes, dtype=np.float64, copy=True)
    ok = w > 0
    out[ok] = acc[ok] / w[ok, None]
    return out
