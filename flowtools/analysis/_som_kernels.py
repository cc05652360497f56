"""Numba kernels of the self-organising map (SOM): best-matching units, online and batch training.

Imported lazily by :mod:`flowtools.analysis.som` (never at package import).
Every kernel takes plain C-contiguous arrays; randomness comes in explicitly
(the event order of online training is drawn by the caller from a seeded
:class:`numpy.random.Generator`), so a kernel is a pure function of its inputs.
Kernels that parallelise exist as a serial and a ``prange`` version, compiled on
first use and cached on disk when ``FLOWTOOLS_NUMBA_CACHE`` is on. Plain-numpy
references live in ``tests/reference/som_ref.py``.

Online training (``som_online``) is Kohonen's rule as FlowSOM runs it: for each
drawn event, the node nearest to it (squared Euclidean distance, first index on
ties) is found, and every node whose grid distance to that node is at most the
current radius moves towards the event by the current learning rate; rate and
radius fall linearly from their start to their end value over the steps.

Batch training (``som_batch_epoch``) replaces the per-event moves by one update
per pass: each node becomes the mean of the events whose best-matching unit lies
within the radius on the grid (a "bubble" neighbourhood); with radius 0 this is
a k-means step. Nodes with no such event keep their code.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from flowtools._config import NUMBA_CACHE

__all__ = ["bmu", "bmu_parallel", "node_sums", "node_sums_parallel", "som_batch_update", "som_online"]

_CHUNK = 4096
_BLOCK = 8192  # online steps whose events are gathered at once


@njit(cache=NUMBA_CACHE, nogil=True)
def _nearest_t(x: np.ndarray, i: int, ct: np.ndarray, dist: np.ndarray) -> tuple[int, float]:
    # Distances to all k codes at once over the transposed codes ``ct`` (d, k):
    # the inner loop runs over nodes and vectorises. Summed marker by marker,
    # in order, and the lowest index wins ties: the plain per-node rule exactly.
    d, k = ct.shape
    dist[:] = 0.0
    for c in range(d):
        xc = x[i, c]
        row = ct[c]
        for j in range(k):
            u = xc - row[j]
            dist[j] += u * u
    best = 0
    best_d = np.inf  # NaN distances never win; an all-NaN row gives node 0 at inf
    for j in range(k):
        if dist[j] < best_d:
            best_d = dist[j]
            best = j
    return best, best_d


@njit(cache=NUMBA_CACHE, nogil=True)
def bmu(x: np.ndarray, codes: np.ndarray, out_idx: np.ndarray, out_dist: np.ndarray) -> None:
    """Best-matching unit of every event (serial).

    Parameters
    ----------
    x : ndarray of float64, shape (n, d)
    codes : ndarray of float64, shape (k, d), k >= 1
    out_idx : ndarray of int64, shape (n,)
        Receives the index of the nearest code (the lowest index on ties).
    out_dist : ndarray of float64, shape (n,)
        Receives the squared Euclidean distance to it (NaN rows: node 0, distance inf).
    """
    ct = np.ascontiguousarray(codes.T)
    dist = np.empty(codes.shape[0])
    for i in range(x.shape[0]):
        j, dd = _nearest_t(x, i, ct, dist)
        out_idx[i] = j
        out_dist[i] = dd


@njit(cache=NUMBA_CACHE, nogil=True, parallel=True)
def bmu_parallel(x: np.ndarray, codes: np.ndarray, out_idx: np.ndarray, out_dist: np.ndarray) -> None:
    """Best-matching unit of every event (parallel over chunks of events); see :func:`bmu`."""
    n = x.shape[0]
    k = codes.shape[0]
    ct = np.ascontiguousarray(codes.T)
    n_chunks = (n + _CHUNK - 1) // _CHUNK
    for b in prange(n_chunks):
        dist = np.empty(k)
        for i in range(b * _CHUNK, min(n, (b + 1) * _CHUNK)):
            j, dd = _nearest_t(x, i, ct, dist)
            out_idx[i] = j
            out_dist[i] = dd


@njit(cache=NUMBA_CACHE, nogil=True)
def som_online(
    x: np.ndarray,
    codes: np.ndarray,
    grid_dist: np.ndarray,
    order: np.ndarray,
    alpha_start: float,
    alpha_end: float,
    radius_start: float,
    radius_end: float,
) -> None:
    """Kohonen online training, in place on ``codes``.

    Parameters
    ----------
    x : ndarray of float64, shape (n, d)
    codes : ndarray of float64, shape (k, d)
        Initial codes; updated in place.
    grid_dist : ndarray of float64, shape (k, k)
        Distance between nodes on the map grid.
    order : ndarray of int64, shape (n_steps,)
        Event drawn at each step (the caller's seeded draw).
    alpha_start, alpha_end : float
        Learning rate at the first and after the last step (linear in between).
    radius_start, radius_end : float
        Neighbourhood radius (grid distance, inclusive), linear likewise.
    """
    n_steps = order.shape[0]
    k, d = codes.shape
    # Node-major inner loops vectorise (SIMD over the k nodes): codes are worked on
    # transposed, distances summed marker by marker in the same order as
    # ``_nearest_t`` and the neighbourhood applied as a 0/1 factor (``c + 0*(..)``
    # is ``c``), so the result is bit-identical to the per-node rule above.
    ct = np.ascontiguousarray(codes.T)
    dist = np.empty(k)
    wt = np.empty(k)
    # The drawn events are gathered a block at a time first: independent loads
    # overlap, where one random row per step would stall on memory.
    buf = np.empty((min(n_steps, _BLOCK), d))
    for s0 in range(0, n_steps, _BLOCK):
        nb = min(_BLOCK, n_steps - s0)
        for t in range(nb):
            i = order[s0 + t]
            for c in range(d):
                buf[t, c] = x[i, c]
        for t in range(nb):
            s = s0 + t
            frac = s / n_steps
            alpha = alpha_start - (alpha_start - alpha_end) * frac
            radius = radius_start - (radius_start - radius_end) * frac
            best, _ = _nearest_t(buf, t, ct, dist)
            g = grid_dist[best]
            for j in range(k):
                wt[j] = alpha if g[j] <= radius else 0.0
            for c in range(d):
                xc = buf[t, c]
                row = ct[c]
                for j in range(k):
                    row[j] += wt[j] * (xc - row[j])
    codes[:, :] = ct.T


@njit(cache=NUMBA_CACHE, nogil=True)
def node_sums(x: np.ndarray, codes: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> None:
    """Per node, the sum and number of the events it is the best-matching unit of (serial).

    Parameters
    ----------
    x : ndarray of float64, shape (n, d)
    codes : ndarray of float64, shape (k, d)
    sums : ndarray of float64, shape (k, d)
        Receives the sums (overwritten).
    counts : ndarray of float64, shape (k,)
        Receives the counts (overwritten).
    """
    sums[:] = 0.0
    counts[:] = 0.0
    d = x.shape[1]
    ct = np.ascontiguousarray(codes.T)
    dist = np.empty(codes.shape[0])
    for i in range(x.shape[0]):
        j, _ = _nearest_t(x, i, ct, dist)
        counts[j] += 1.0
        for c in range(d):
            sums[j, c] += x[i, c]


@njit(cache=NUMBA_CACHE, nogil=True, parallel=True)
def node_sums_parallel(x: np.ndarray, codes: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> None:
    """Per-node sums and counts (parallel over chunks of events); see :func:`node_sums`."""
    n, d = x.shape
    k = codes.shape[0]
    n_chunks = (n + _CHUNK - 1) // _CHUNK
    part_s = np.zeros((n_chunks, k, d))
    part_n = np.zeros((n_chunks, k))
    ct = np.ascontiguousarray(codes.T)
    for b in prange(n_chunks):
        lo = b * _CHUNK
        hi = min(n, lo + _CHUNK)
        dist = np.empty(k)
        for i in range(lo, hi):
            j, _ = _nearest_t(x, i, ct, dist)
            part_n[b, j] += 1.0
            for c in range(d):
                part_s[b, j, c] += x[i, c]
    sums[:] = 0.0
    counts[:] = 0.0
    for b in range(n_chunks):
        for j in range(k):
            counts[j] += part_n[b, j]
            for c in range(d):
                sums[j, c] += part_s[b, j, c]


@njit(cache=NUMBA_CACHE, nogil=True)
def som_batch_update(
    codes: np.ndarray, sums: np.ndarray, counts: np.ndarray, grid_dist: np.ndarray, radius: float
) -> None:
    """One batch-SOM update from per-node sums, in place on ``codes`` (bubble neighbourhood).

    Parameters
    ----------
    codes : ndarray of float64, shape (k, d)
    sums : ndarray of float64, shape (k, d)
    counts : ndarray of float64, shape (k,)
    grid_dist : ndarray of float64, shape (k, k)
    radius : float
        Nodes within this grid distance (inclusive) share their events.
    """
    k, d = codes.shape
    acc = np.zeros(d)
    for j in range(k):
        acc[:] = 0.0
        w = 0.0
        for m in range(k):
            if grid_dist[j, m] <= radius and counts[m] > 0:
                w += counts[m]
                for c in range(d):
                    acc[c] += sums[m, c]
        if w > 0:
            for c in range(d):
                codes[j, c] = acc[c] / w
