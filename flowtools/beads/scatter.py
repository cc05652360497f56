"""Bead groups by scatter: a Gaussian mixture on log10 scatter with a uniform background (EM).

Part of bead identification (:mod:`flowtools.beads.identify`, which re-exports these names and
describes the method).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flowtools.beads.peaks import _peaks

__all__ = ["scatter_groups"]

_EM_EVENTS = 2500


def scatter_groups(
    x: np.ndarray, y: np.ndarray, n_groups: int, *, radius: float = 3.0, n_iter: int = 40
) -> tuple[np.ndarray, dict[str, Any]]:
    """Split events into bead groups by log-scatter (GMM + uniform background).

    Parameters
    ----------
    x, y : ndarray
        Scatter values (linear), one per event.
    n_groups : int
    radius : float
        Mahalanobis radius kept around each group's centre.
    n_iter : int

    Returns
    -------
    labels : ndarray of int
        Group index (0 = smallest) per event, -1 for debris/doublets/background.
    info : dict
        Centres, weights, events per group, events left out.
    """
    pts = np.column_stack([np.log10(np.clip(x, 1.0, None)), np.log10(np.clip(y, 1.0, None))])
    n = len(pts)
    labels = np.full(n, -1, dtype=np.int64)
    if n < 10 * n_groups:
        return labels, {"events": n, "error": "too few events"}
    size = pts.sum(axis=1)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    area = float(np.prod(np.maximum(hi - lo, 1e-3)))
    # Start: the tallest peaks of the size axis (beads are tight clusters, debris is spread out);
    # equal-count slices of it when there are too few peaks.
    slices = _size_peaks(size, n_groups)
    if slices is None:
        order = np.argsort(size)
        slices = [
            c[len(c) // 4 : max(3 * len(c) // 4, len(c) // 4 + 1)] for c in np.array_split(order, n_groups)
        ]
    means = np.array([pts[c].mean(axis=0) for c in slices])
    covs = np.array([np.cov(pts[c].T) + 1e-4 * np.eye(2) if len(c) > 2 else 0.01 * np.eye(2) for c in slices])
    weights = np.full(n_groups + 1, 0.9 / n_groups)
    weights[-1] = 0.1
    # EM on an evenly strided subsample (deterministic; a few thousand events pin 2-D Gaussians
    # well), then one E-step on every event for the labels.
    fit = pts[:: max(1, n // _EM_EVENTS)]
    prev = -np.inf
    for _ in range(n_iter):
        r, tot = _responsibilities(fit, means, covs, weights, area)
        nk = r.sum(axis=0) + 1e-9
        ll = float(np.log(tot).sum())
        if abs(ll - prev) < 1e-6 * len(fit):
            break
        prev = ll
        weights = nk / len(fit)
        for k in range(n_groups):
            w = r[:, k]
            means[k] = (w[:, None] * fit).sum(axis=0) / nk[k]
            d = fit - means[k]
            covs[k] = (w[:, None] * d).T @ d / nk[k] + 1e-5 * np.eye(2)
    r, _ = _responsibilities(pts, means, covs, weights, area)
    order_k = np.argsort(means.sum(axis=1))
    best = np.argmax(r, axis=1)
    for new, k in enumerate(order_k):
        m2, _ = _mahalanobis2(pts, means[k], covs[k])
        labels[(best == k) & (m2 <= radius * radius)] = new
    info = {
        "events": int(n),
        "centres_log10": [[round(float(v), 4) for v in means[k]] for k in order_k],
        "weights": [round(float(weights[k]), 4) for k in order_k],
        "background_weight": round(float(weights[-1]), 4),
        "events_per_group": [int((labels == g).sum()) for g in range(n_groups)],
        "left_out": int((labels < 0).sum()),
    }
    return labels, info


def _responsibilities(
    pts: np.ndarray, means: np.ndarray, covs: np.ndarray, weights: np.ndarray, area: float
) -> tuple[np.ndarray, np.ndarray]:
    """E-step: responsibilities of the Gaussians and the uniform background, and each point's density."""
    dens = np.empty((len(pts), len(means) + 1))
    for k in range(len(means)):
        m2, det = _mahalanobis2(pts, means[k], covs[k])
        dens[:, k] = np.exp(-0.5 * m2) / (2 * np.pi * np.sqrt(max(det, 1e-300)))
    dens[:, -1] = 1.0 / area
    r = dens * weights
    tot = r.sum(axis=1, keepdims=True)
    tot[tot == 0] = 1.0
    return r / tot, tot


def _size_peaks(size: np.ndarray, n_groups: int) -> list[np.ndarray] | None:
    """Events near each of the ``n_groups`` most prominent peaks of ``size`` (ascending), or None."""
    hist, edges = np.histogram(size, bins=200)
    kern = np.exp(-0.5 * (np.arange(-6, 7) / 2.0) ** 2)
    h = np.convolve(hist.astype(float), kern / kern.sum(), mode="same")
    idx, prom = _peaks(h, 0.02 * h.max(), 3)
    if len(idx) < n_groups:
        return None
    top = np.sort(idx[np.argsort(prom)[::-1][:n_groups]])
    centres = 0.5 * (edges[top] + edges[top + 1])
    half = 0.25 * float(np.min(np.diff(centres))) if n_groups > 1 else 0.05
    half = min(half, 0.1)
    out = [np.flatnonzero(np.abs(size - c) <= half) for c in centres]
    return out if all(len(c) >= 3 for c in out) else None


def _mahalanobis2(pts: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, float]:
    """Squared Mahalanobis distance of 2-D points (closed-form 2x2 inverse) and the determinant."""
    dx, dy = pts[:, 0] - mean[0], pts[:, 1] - mean[1]
    sxx, sxy, syy = cov[0, 0], cov[0, 1], cov[1, 1]
    det = float(sxx * syy - sxy * sxy)
    return (syy * dx * dx - 2 * sxy * dx * dy + sxx * dy * dy) / det, det
