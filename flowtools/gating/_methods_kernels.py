"""Numba kernels of the data-driven gating methods: k-means (Lloyd), Gaussian-mixture EM, singlet band.

Imported lazily by :mod:`flowtools.gating._methods`. The plain-numpy reference
(and the comparison with scikit-learn's ``GaussianMixture`` from the same
initialisation) is in ``tests/gating/test_methods_kernels.py``.

:func:`gmm_em` is scikit-learn's ``GaussianMixture(covariance_type="full")`` EM
(sklearn 1.x ``BaseMixture.fit_predict`` with one initialisation), written as
one loop over the events per step instead of a dozen numpy passes, for the few
dimensions (1-3) and components (<= 12) of a gate:

- initial parameters from hard labels (k-means in the caller): ``nk = sum resp
  + 10 eps``, means, covariances ``+ reg_covar`` on the diagonal, weights ``nk / n``;
- each iteration: E-step with the current parameters (log-likelihood of every
  event under every component, log-sum-exp over components; the lower bound is
  the mean of that), then M-step from the responsibilities (weights normalised
  to sum to 1); stop when the lower bound changes by less than ``tol``.

`kmeans_lloyd` is scikit-learn's ``KMeans(n_init=1, algorithm="lloyd")`` iteration
(``_kmeans_single_lloyd`` with unit sample weights, one thread), which gives the
mixture its initial labels; the k-means++ seeding that feeds it, with the same
``RandomState`` draws as scikit-learn, is numpy code in :mod:`flowtools.gating._methods`.

`singlet_band` / `singlet_kept` fuse the elementwise steps of one trimmed
least-squares iteration of the ``singlet`` method (the same IEEE operations in
the same order as the numpy expressions they replace, so bit-identical).

``gmm_em`` and ``kmeans_lloyd`` are plain-Python drivers of a few iterations around the
njit step kernels (the exponentials go through numpy's SIMD ``np.exp``); ``stable_argsort``
is numpy only.

Precisions are kept as the inverse of the Cholesky factor of each covariance,
as scikit-learn does; a covariance that is not positive definite stops the fit
with status -1 (scikit-learn raises ValueError there).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from flowtools._config import NUMBA_CACHE

__all__ = ["gmm_em", "kmeans_lloyd", "singlet_band", "singlet_kept", "stable_argsort"]

_LOG_2PI = math.log(2.0 * math.pi)


@njit(cache=NUMBA_CACHE, nogil=True)
def _precision_cholesky(covs: np.ndarray, prec: np.ndarray, log_det: np.ndarray) -> bool:
    """prec[k] = inv(cholesky(covs[k])).T (upper triangular); log_det[k] = sum log diag(prec[k]).

    False when a covariance is not positive definite.
    """
    k_n, d, _ = covs.shape
    low = np.zeros((d, d))
    for k in range(k_n):
        # Cholesky: covs[k] = low @ low.T
        for i in range(d):
            for j in range(i + 1):
                s = covs[k, i, j]
                for m in range(j):
                    s -= low[i, m] * low[j, m]
                if i == j:
                    if not s > 0.0:
                        return False
                    low[i, i] = math.sqrt(s)
                else:
                    low[i, j] = s / low[j, j]
        # inv(low) by forward substitution; prec = inv(low).T
        ld = 0.0
        for c in range(d):
            for i in range(d):
                if i < c:
                    prec[k, c, i] = 0.0  # inv(low)[i, c] = 0 above the diagonal -> prec[c, i]
                    continue
                s = 1.0 if i == c else 0.0
                for m in range(c, i):
                    s -= low[i, m] * prec[k, c, m]
                prec[k, c, i] = s / low[i, i]
            ld += math.log(prec[k, c, c])
        log_det[k] = ld
    return True


@njit(cache=NUMBA_CACHE, nogil=True)
def _m_step(x: np.ndarray, resp: np.ndarray, reg_covar: float, eps10: float, weights: np.ndarray,
            means: np.ndarray, covs: np.ndarray) -> None:
    """Weights (unnormalised: nk), means and covariances from responsibilities (sklearn's formulas).

    Two passes over the events (sums and means, then centred second moments), every component at once.
    """
    n, d = x.shape
    k_n = resp.shape[1]
    weights[:] = 0.0
    means[:, :] = 0.0
    covs[:, :, :] = 0.0
    for i in range(n):
        for k in range(k_n):
            r = resp[i, k]
            weights[k] += r
            for a in range(d):
                means[k, a] += r * x[i, a]
    for k in range(k_n):
        weights[k] += eps10
        for a in range(d):
            means[k, a] /= weights[k]
    diff = np.empty(d)
    for i in range(n):
        for k in range(k_n):
            r = resp[i, k]
            for a in range(d):
                diff[a] = x[i, a] - means[k, a]
            for a in range(d):
                ra = r * diff[a]
                for b in range(a + 1):
                    covs[k, a, b] += ra * diff[b]
    for k in range(k_n):
        for a in range(d):
            for b in range(a + 1):
                v = covs[k, a, b] / weights[k]
                covs[k, a, b] = v
                covs[k, b, a] = v
            covs[k, a, a] += reg_covar


@njit(cache=NUMBA_CACHE, nogil=True)
def _shifted_log_prob(x: np.ndarray, weights: np.ndarray, means: np.ndarray, prec: np.ndarray,
                      log_det: np.ndarray, out: np.ndarray, top: np.ndarray) -> None:
    """out[i, k] = log(w_k N(x_i | mu_k, S_k)) - top[i], with top[i] the row maximum (0 if not finite)."""
    n, d = x.shape
    k_n = means.shape[0]
    const = np.empty(k_n)
    for k in range(k_n):
        const[k] = -0.5 * (d * _LOG_2PI) + log_det[k] + math.log(weights[k])
    for i in range(n):
        best = -np.inf
        for k in range(k_n):
            q = 0.0
            for c in range(d):
                s = 0.0
                for a in range(c + 1):  # prec[k] is upper triangular: column c has rows 0..c
                    s += (x[i, a] - means[k, a]) * prec[k, a, c]
                q += s * s
            lp = const[k] - 0.5 * q
            out[i, k] = lp
            if lp > best:
                best = lp
        if not np.isfinite(best):
            best = 0.0
        top[i] = best
        for k in range(k_n):
            out[i, k] -= best


@njit(cache=NUMBA_CACHE, nogil=True)
def _normalise_rows(resp: np.ndarray, sums: np.ndarray) -> None:
    """sums[i] = sum of row i; row i divided by it (responsibilities from exp(log_prob - top))."""
    n, k_n = resp.shape
    for i in range(n):
        s = 0.0
        for k in range(k_n):
            s += resp[i, k]
        sums[i] = s
        for k in range(k_n):
            resp[i, k] /= s


def gmm_em(x: np.ndarray, labels: np.ndarray, reg_covar: float, tol: float, max_iter: int,
           weights: np.ndarray, means: np.ndarray, covs: np.ndarray) -> tuple[int, int, float]:
    """Fit a full-covariance Gaussian mixture by EM from hard initial labels.

    The per-event work is in numba kernels; the exponentials go through numpy's
    vectorised ``np.exp`` (several times faster than a scalar ``exp`` per term).

    Parameters
    ----------
    x : ndarray of float64, shape (n, d)
    labels : ndarray of int, shape (n,)
        Initial component of every event, 0..k-1 (scikit-learn: k-means labels).
    reg_covar, tol : float
        Added to the covariances' diagonals; stop when the lower bound changes by less.
    max_iter : int
    weights, means, covs : ndarray of float64, shapes (k,), (k, d), (k, d, d)
        Receive the fitted parameters (k is taken from their shapes).

    Returns
    -------
    (status, n_iter, lower_bound)
        status 1 converged, 0 not converged in ``max_iter`` iterations, -1 a covariance
        was not positive definite (the parameters are then the last update's).
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    n, d = x.shape
    k_n = weights.shape[0]
    resp = np.zeros((n, k_n))
    resp[np.arange(n), labels] = 1.0
    eps10 = 10.0 * float(np.finfo(np.float64).eps)  # sklearn: nk + 10 eps
    _m_step(x, resp, reg_covar, eps10, weights, means, covs)
    weights /= n
    prec = np.empty((k_n, d, d))
    log_det = np.empty(k_n)
    top = np.empty(n)
    sums = np.empty(n)
    if not _precision_cholesky(covs, prec, log_det):
        return -1, 0, -np.inf
    lower = -np.inf
    for it in range(1, max_iter + 1):
        prev = lower
        # E-step: responsibilities and the mean log-likelihood (log-sum-exp over components).
        _shifted_log_prob(x, weights, means, prec, log_det, resp, top)
        np.exp(resp, out=resp)
        _normalise_rows(resp, sums)
        lower = float(np.mean(np.log(sums) + top))
        # M-step.
        _m_step(x, resp, reg_covar, eps10, weights, means, covs)
        weights /= weights.sum()
        if not _precision_cholesky(covs, prec, log_det):
            return -1, it, lower
        if abs(lower - prev) < tol:
            return 1, it, lower
    return 0, max_iter, lower


@njit(cache=NUMBA_CACHE, nogil=True)
def _lloyd_step(x: np.ndarray, centers_old: np.ndarray, centers_new: np.ndarray, weight: np.ndarray,
                labels: np.ndarray, shift: np.ndarray, update: int) -> None:
    """One Lloyd iteration: each event's nearest centre; if ``update``, new centres and their shifts."""
    n, d = x.shape
    k_n = centers_old.shape[0]
    sq = np.empty(k_n)
    for j in range(k_n):
        s = 0.0
        for a in range(d):
            s += centers_old[j, a] * centers_old[j, a]
        sq[j] = s
    if update:
        centers_new[:, :] = 0.0
        weight[:] = 0.0
    for i in range(n):
        label = 0
        best = 0.0
        for j in range(k_n):
            dot = 0.0
            for a in range(d):
                dot += x[i, a] * centers_old[j, a]
            dist = sq[j] - 2.0 * dot  # ||c||^2 - 2 x.c: ||x||^2 does not change the argmin
            if j == 0 or dist < best:
                best = dist
                label = j
        labels[i] = label
        if update:
            weight[label] += 1.0
            for a in range(d):
                centers_new[label, a] += x[i, a]
    if not update:
        return
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
                t = x[i, a] - centers_old[labels[i], a]
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
                old = labels[i]
                for a in range(d):
                    centers_new[old, a] -= x[i, a]
                    centers_new[j, a] = x[i, a]
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


def kmeans_lloyd(x: np.ndarray, centers: np.ndarray, tol: float, max_iter: int,
                 labels: np.ndarray) -> int:
    """k-means by Lloyd's algorithm from initial centres, as scikit-learn's ``_kmeans_single_lloyd``.

    Parameters
    ----------
    x : ndarray of float64, shape (n, d), C-contiguous
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
    cur = np.array(centers, dtype=np.float64, order="C")
    new = np.empty_like(cur)
    weight = np.empty(k_n)
    shift = np.zeros(k_n)
    labels[:] = -1
    old = labels.copy()
    strict = False
    it = 0
    while it < max_iter:
        it += 1
        _lloyd_step(x, cur, new, weight, labels, shift, 1)
        cur, new = new, cur
        if np.array_equal(labels, old):
            strict = True
            break
        if float((shift**2).sum()) <= tol:
            break
        old[:] = labels
    if not strict:
        _lloyd_step(x, cur, cur, weight, labels, shift, 0)
    centers[:, :] = cur
    return it


@njit(cache=NUMBA_CACHE, nogil=True)
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


@njit(cache=NUMBA_CACHE, nogil=True)
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


def stable_argsort(values: np.ndarray) -> np.ndarray:
    """``np.argsort(values, kind="stable")`` of a 1-D float array without NaN, about twice as fast.

    numpy's default argsort (SIMD quicksort) gives the same order except among equal values;
    those are put in index order by one integer sort of ``run * n + index`` (runs of equal
    values numbered along the sorted order), which leaves the runs in place.
    """
    order = np.argsort(values)
    n = order.size
    if n < 2:
        return order
    v = values[order]
    tie = v[1:] == v[:-1]
    if not tie.any():
        return order
    run = np.empty(n, dtype=np.int64)
    run[0] = 0
    np.cumsum(~tie, out=run[1:])
    key = run * n + order
    key.sort()
    return key % n
