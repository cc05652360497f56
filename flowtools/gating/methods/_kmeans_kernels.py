"""Numba kernels of the k-means that starts the ``gmm`` fit: Lloyd iterations and k-means++ distances.

Imported lazily by :mod:`flowtools.gating.methods.mixture` (numba stays out of ``import
flowtools``); the plain-numpy references are in ``tests/reference/methods_ref.py``.

:func:`kmeans_lloyd` is scikit-learn's ``KMeans(n_init=1, algorithm="lloyd")`` iteration
(``_kmeans_single_lloyd`` with unit sample weights, one thread), a Python driver of the
njit step `_lloyd_step`, which works on the events transposed, (d, n), so every loop over
the events is contiguous. `center_columns` and `kpp_sq_dist` are the per-row (d <= 3) numpy
steps of the centring and of the k-means++ seeding, with numpy's operations and summation
order.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from flowtools._config import NUMBA_CACHE

__all__ = ["center_columns", "kmeans_lloyd", "kpp_sq_dist"]


@njit(cache=NUMBA_CACHE, nogil=True)
def _lloyd_step(xt: np.ndarray, centers_old: np.ndarray, centers_new: np.ndarray, weight: np.ndarray,
                labels: np.ndarray, near: np.ndarray, best: np.ndarray, shift: np.ndarray,
                update: int) -> int:
    """One Lloyd iteration: each event's nearest centre; if ``update``, new centres and their shifts.

    ``xt`` is x transposed (d, n); ``near`` (int64) and ``best`` (float64), length n, are scratch.
    ``labels`` receives the labels; returns how many of them differ from what ``labels`` held.
    """
    d, n = xt.shape
    k_n = centers_old.shape[0]
    # Nearest centre by ||c||^2 - 2 x.c (||x||^2 does not change the argmin; ties: the lowest
    # index), one centre at a time so that the loops over the events vectorise.
    for j in range(k_n):
        sq = 0.0
        for a in range(d):
            sq += centers_old[j, a] * centers_old[j, a]
        if d == 1:
            c0 = centers_old[j, 0]
            for i in range(n):
                dist = sq - 2.0 * (xt[0, i] * c0)
                if j == 0 or dist < best[i]:
                    best[i] = dist
                    near[i] = j
        elif d == 2:
            c0, c1 = centers_old[j, 0], centers_old[j, 1]
            for i in range(n):
                dist = sq - 2.0 * (xt[0, i] * c0 + xt[1, i] * c1)
                if j == 0 or dist < best[i]:
                    best[i] = dist
                    near[i] = j
        elif d == 3:
            c0, c1, c2 = centers_old[j, 0], centers_old[j, 1], centers_old[j, 2]
            for i in range(n):
                dist = sq - 2.0 * (xt[0, i] * c0 + xt[1, i] * c1 + xt[2, i] * c2)
                if j == 0 or dist < best[i]:
                    best[i] = dist
                    near[i] = j
        else:
            for i in range(n):
                dot = 0.0
                for a in range(d):
                    dot += xt[a, i] * centers_old[j, a]
                dist = sq - 2.0 * dot
                if j == 0 or dist < best[i]:
                    best[i] = dist
                    near[i] = j
    changed = 0
    for i in range(n):
        changed += near[i] != labels[i]
        labels[i] = near[i]
    if not update:
        return changed
    centers_new[:, :] = 0.0
    weight[:] = 0.0
    for i in range(n):
        label = near[i]
        weight[label] += 1.0
        for a in range(d):
            centers_new[label, a] += xt[a, i]
    # Empty clusters take the events farthest from their centres (scikit-learn's relocation;
    # ties: the lowest index).
    n_empty = 0
    for j in range(k_n):
        if weight[j] == 0.0:
            n_empty += 1
    if n_empty:
        far = np.empty(n)
        top = 0.0
        for i in range(n):
            s = 0.0
            for a in range(d):
                t = xt[a, i] - centers_old[near[i], a]
                s += t * t
            far[i] = s
            top = max(top, s)
        if top > 0.0:
            taken = np.zeros(n, dtype=np.bool_)
            for j in range(k_n):
                if weight[j] != 0.0:
                    continue
                # the farthest event not yet moved (ties: the lowest index)
                i = -1
                for t in range(n):
                    if not taken[t] and (i < 0 or far[t] > far[i]):
                        i = t
                taken[i] = True
                old = near[i]
                for a in range(d):
                    centers_new[old, a] -= xt[a, i]
                    centers_new[j, a] = xt[a, i]
                weight[j] = 1.0
                weight[old] -= 1.0
    big = 0
    for j in range(k_n):
        if weight[j] > weight[big]:
            big = j
    for j in range(k_n):
        if weight[j] > 0.0:
            alpha = 1.0 / weight[j]
            for a in range(d):
                centers_new[j, a] *= alpha
        else:
            for a in range(d):
                centers_new[j, a] = centers_new[big, a]
    for j in range(k_n):
        s = 0.0
        for a in range(d):
            t = centers_new[j, a] - centers_old[j, a]
            s += t * t
        shift[j] = math.sqrt(s)
    return changed


def kmeans_lloyd(x: np.ndarray, centers: np.ndarray, tol: float, max_iter: int,
                 labels: np.ndarray) -> int:
    """k-means by Lloyd's algorithm from initial centres, as scikit-learn's ``_kmeans_single_lloyd``.

    Parameters
    ----------
    x : ndarray of float64, shape (n, d)
        Events (scikit-learn centres them on their mean first; so should the caller).
    centers : ndarray of float64, shape (k, d)
        Initial centres; receive the final ones.
    tol : float
        Stop when the sum of squared centre shifts is at most this (scikit-learn:
        ``tol * mean(var(x, axis=0))``), or when no label changes.
    max_iter : int
    labels : ndarray of int64, shape (n,)
        Receive each event's cluster, consistent with the final centres.

    Returns
    -------
    int
        Iterations run.
    """
    k_n = centers.shape[0]
    xt = np.ascontiguousarray(np.asarray(x, dtype=np.float64).T)  # (d, n): the event loops vectorise
    n = xt.shape[1]
    cur = np.array(centers, dtype=np.float64, order="C")
    new = np.empty_like(cur)
    weight = np.empty(k_n)
    shift = np.zeros(k_n)
    near = np.empty(n, dtype=np.int64)
    best = np.empty(n)
    labels[:] = -1
    strict = False
    it = 0
    while it < max_iter:
        it += 1
        changed = _lloyd_step(xt, cur, new, weight, labels, near, best, shift, 1)
        cur, new = new, cur
        if changed == 0:
            strict = True
            break
        if float((shift**2).sum()) <= tol:
            break
    if not strict:
        _lloyd_step(xt, cur, cur, weight, labels, near, best, shift, 0)
    centers[:, :] = cur
    return it


@njit(cache=NUMBA_CACHE, nogil=True)
def center_columns(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``z - z.mean(axis=0)``, ``np.var(z, axis=0)`` and the rows' squared norms, for d >= 2.

    numpy reduces a C-contiguous (n, d >= 2) array over axis 0 row by row: every column's
    sum starts at 0.0 and adds the rows in order (no pairwise summation; a (n, 1) array
    is summed pairwise instead, so d = 1 is left to numpy). Mean and variance divide by n
    as ``np.mean`` / ``np.var`` do. ``sq_norms`` is ``einsum("ij,ij->i", xc, xc)`` for d = 2
    only (``p0 + p1``); einsum's SIMD sum for d = 3 adds ``(p0 + p2) + p1``, so callers take
    einsum's own there. Returns ``(xc, var, sq_norms)``.
    """
    n, d = z.shape
    mean = np.zeros(d)
    for i in range(n):
        for j in range(d):
            mean[j] += z[i, j]
    for j in range(d):
        mean[j] /= n
    var = np.zeros(d)
    xc = np.empty((n, d))
    sq = np.empty(n)
    for i in range(n):
        s = 0.0
        for j in range(d):
            e = z[i, j] - mean[j]
            xc[i, j] = e
            var[j] += e * e
            s = e * e if j == 0 else s + e * e
        sq[i] = s
    for j in range(d):
        var[j] /= n
    return xc, var, sq


@njit(cache=NUMBA_CACHE, nogil=True)
def kpp_sq_dist(dot: np.ndarray, c_norms: np.ndarray, sq_norms: np.ndarray, closest: np.ndarray,
                use_closest: int) -> None:
    """The k-means++ squared distances from ``dot = c @ x.T`` (t, n), in place.

    Element for element, the numpy of scikit-learn's ``_euclidean_distances`` then the
    running minimum::

        d = -2 * dot; d += c_norms[:, None]; d += sq_norms[None, :]; np.maximum(d, 0, out=d)
        if use_closest: np.minimum(closest, d, out=d)

    (``np.maximum`` / ``np.minimum`` propagate NaN; on equal values ``np.minimum`` keeps
    ``closest``.)
    """
    t_n, n = dot.shape
    for t in range(t_n):
        cn = c_norms[t]
        row = dot[t]
        for i in range(n):
            v = (-2.0 * row[i] + cn) + sq_norms[i]
            if not (v >= 0.0 or v != v):
                v = 0.0
            if use_closest:
                c = closest[i]
                if not (c <= v or c != c):
                    c = v
                v = c
            row[i] = v
