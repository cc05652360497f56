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

`singlet_step` / `singlet_kept_sorted` fuse the elementwise steps of one trimmed
least-squares iteration of the ``singlet`` method (the same IEEE operations in
the same order as the numpy expressions they replace, so bit-identical).

`singlet_step` / `singlet_kept_sorted` are the same steps with the band's divisions and square
roots in a loop that vectorises, the "band unchanged" test folded in, and the kept events read
in area order without a gather. `standardize`, `center_columns`, `kpp_sq_dist` and
`distinct_rows_at_least` replace numpy's per-row (d <= 3) broadcasts and reductions around the
mixture fit, with numpy's operations and summation order (references in the tests).

``gmm_em`` and ``kmeans_lloyd`` are plain-Python drivers of a few iterations around the
njit step kernels (the exponentials and logarithms go through numpy's SIMD ``np.exp`` /
``np.log``, several times faster than numba's scalar ``math.exp``).
The kernels work on the events transposed, (d, n), and responsibilities as (k, n), so every
loop over the events is contiguous (the elementwise ones vectorise), with d <= 3 written out
and every sum's accumulator in a register; each sum still runs over the events in order, so
the results are those of the per-event loops, bit for bit. One exception: responsibilities that
would be subnormal (below 2.2e-308 before normalisation) are 0, since subnormal arithmetic is
~100x slower and such terms vanish in any sum with a normal one.

Precisions are kept as the inverse of the Cholesky factor of each covariance,
as scikit-learn does; a covariance that is not positive definite stops the fit
with status -1 (scikit-learn raises ValueError there).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from flowtools._config import NUMBA_CACHE

__all__ = [
    "center_columns",
    "distinct_rows_at_least",
    "gmm_em",
    "kmeans_lloyd",
    "kpp_sq_dist",
    "line_lstsq",
    "singlet_kept_sorted",
    "singlet_step",
    "standardize",
]

_LOG_2PI = math.log(2.0 * math.pi)
# Below this, exp() is subnormal (< 2.2e-308). Such responsibilities are flushed to 0: they add
# nothing a float64 sum of the others can hold, and subnormal arithmetic is ~100x slower.
_LOG_TINY = math.log(float(np.finfo(np.float64).tiny))


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
def _log_prob(xt: np.ndarray, weights: np.ndarray, means: np.ndarray, prec: np.ndarray,
              log_det: np.ndarray, lp: np.ndarray, top: np.ndarray) -> None:
    """lp[k, i] = log(w_k N(x_i | mu_k, S_k)) - top[i], with top[i] the maximum over k (0 if not finite).

    ``xt`` is x transposed (d, n) and ``lp`` is (k, n): every loop over the events is a contiguous
    one that vectorises. d <= 3 is written out with the operations (and their order) of the
    general loop, so every dimension gives the same bits.
    """
    d, n = xt.shape
    k_n = means.shape[0]
    for k in range(k_n):
        const = -0.5 * (d * _LOG_2PI) + log_det[k] + math.log(weights[k])
        row = lp[k]
        if d == 1:
            m0, p00 = means[k, 0], prec[k, 0, 0]
            for i in range(n):
                s0 = (xt[0, i] - m0) * p00
                row[i] = const - 0.5 * (s0 * s0)
        elif d == 2:
            m0, m1 = means[k, 0], means[k, 1]
            p00, p01, p11 = prec[k, 0, 0], prec[k, 0, 1], prec[k, 1, 1]
            for i in range(n):
                e0 = xt[0, i] - m0
                e1 = xt[1, i] - m1
                s0 = e0 * p00
                s1 = e0 * p01 + e1 * p11
                row[i] = const - 0.5 * (s0 * s0 + s1 * s1)
        elif d == 3:
            m0, m1, m2 = means[k, 0], means[k, 1], means[k, 2]
            p00, p01, p02 = prec[k, 0, 0], prec[k, 0, 1], prec[k, 0, 2]
            p11, p12, p22 = prec[k, 1, 1], prec[k, 1, 2], prec[k, 2, 2]
            for i in range(n):
                e0 = xt[0, i] - m0
                e1 = xt[1, i] - m1
                e2 = xt[2, i] - m2
                s0 = e0 * p00
                s1 = e0 * p01 + e1 * p11
                s2 = e0 * p02 + e1 * p12 + e2 * p22
                row[i] = const - 0.5 * (s0 * s0 + s1 * s1 + s2 * s2)
        else:
            for i in range(n):
                q = 0.0
                for c in range(d):
                    s = 0.0
                    for a in range(c + 1):  # prec[k] is upper triangular: column c has rows 0..c
                        s += (xt[a, i] - means[k, a]) * prec[k, a, c]
                    q += s * s
                row[i] = const - 0.5 * q
    for i in range(n):
        top[i] = -np.inf
    for k in range(k_n):
        row = lp[k]
        for i in range(n):
            if row[i] > top[i]:
                top[i] = row[i]
    for i in range(n):
        if not math.isfinite(top[i]):
            top[i] = 0.0
    for k in range(k_n):
        row = lp[k]
        for i in range(n):
            v = row[i] - top[i]
            if v < _LOG_TINY:
                v = -np.inf  # exp would be subnormal: 0 instead (NaN stays NaN)
            row[i] = v


# error_model="numpy": no zero test before every division (which kept the loops from vectorising);
# the one divisor that can be 0 (a column sum) is tested once, raising as the python model would.
@njit(cache=NUMBA_CACHE, nogil=True, error_model="numpy")
def _m_step(xt: np.ndarray, resp: np.ndarray, sums: np.ndarray, normalise: int, reg_covar: float,
            eps10: float, weights: np.ndarray, means: np.ndarray, covs: np.ndarray, prec: np.ndarray,
            log_det: np.ndarray) -> bool:
    """M-step (sklearn's formulas) from ``resp`` (k, n), then the precisions' Cholesky factors.

    With ``normalise``, ``resp`` holds exp(log_prob - top) and is first divided by its column
    sums (kept in ``sums`` for the lower bound). Weights are left unnormalised (nk + 10 eps).
    Returns False when a covariance is not positive definite.

    Per component, one pass for nk and the means, one for the centred second moments, with the
    accumulators in registers (each sum still runs over the events in order, as the per-event
    loop of the reference did).
    """
    d, n = xt.shape
    k_n = resp.shape[0]
    if normalise:
        for i in range(n):
            sums[i] = 0.0
        for k in range(k_n):
            row = resp[k]
            for i in range(n):
                sums[i] += row[i]
        zero = 0
        for i in range(n):
            zero += sums[i] == 0.0
        if zero:
            msg = "division by zero"
            raise ZeroDivisionError(msg)
        for k in range(k_n):
            row = resp[k]
            for i in range(n):
                row[i] /= sums[i]
    for k in range(k_n):
        row = resp[k]
        w = 0.0
        if d == 1:
            s0 = 0.0
            for i in range(n):
                r = row[i]
                w += r
                s0 += r * xt[0, i]
            w += eps10
            means[k, 0] = s0 / w
        elif d == 2:
            s0 = s1 = 0.0
            for i in range(n):
                r = row[i]
                w += r
                s0 += r * xt[0, i]
                s1 += r * xt[1, i]
            w += eps10
            means[k, 0] = s0 / w
            means[k, 1] = s1 / w
        elif d == 3:
            s0 = s1 = s2 = 0.0
            for i in range(n):
                r = row[i]
                w += r
                s0 += r * xt[0, i]
                s1 += r * xt[1, i]
                s2 += r * xt[2, i]
            w += eps10
            means[k, 0] = s0 / w
            means[k, 1] = s1 / w
            means[k, 2] = s2 / w
        else:
            for i in range(n):
                w += row[i]
            w += eps10
            for a in range(d):
                s = 0.0
                for i in range(n):
                    s += row[i] * xt[a, i]
                means[k, a] = s / w
        weights[k] = w
        # centred second moments: sum r (x_a - m_a)(x_b - m_b), b <= a
        if d == 1:
            m0 = means[k, 0]
            c00 = 0.0
            for i in range(n):
                e0 = xt[0, i] - m0
                c00 += (row[i] * e0) * e0
            covs[k, 0, 0] = c00
        elif d == 2:
            m0, m1 = means[k, 0], means[k, 1]
            c00 = c10 = c11 = 0.0
            for i in range(n):
                r = row[i]
                e0 = xt[0, i] - m0
                e1 = xt[1, i] - m1
                r0 = r * e0
                r1 = r * e1
                c00 += r0 * e0
                c10 += r1 * e0
                c11 += r1 * e1
            covs[k, 0, 0], covs[k, 1, 0], covs[k, 1, 1] = c00, c10, c11
        elif d == 3:
            m0, m1, m2 = means[k, 0], means[k, 1], means[k, 2]
            c00 = c10 = c11 = c20 = c21 = c22 = 0.0
            for i in range(n):
                r = row[i]
                e0 = xt[0, i] - m0
                e1 = xt[1, i] - m1
                e2 = xt[2, i] - m2
                r0 = r * e0
                r1 = r * e1
                r2 = r * e2
                c00 += r0 * e0
                c10 += r1 * e0
                c11 += r1 * e1
                c20 += r2 * e0
                c21 += r2 * e1
                c22 += r2 * e2
            covs[k, 0, 0], covs[k, 1, 0], covs[k, 1, 1] = c00, c10, c11
            covs[k, 2, 0], covs[k, 2, 1], covs[k, 2, 2] = c20, c21, c22
        else:
            for a in range(d):
                for b in range(a + 1):
                    s = 0.0
                    for i in range(n):
                        s += (row[i] * (xt[a, i] - means[k, a])) * (xt[b, i] - means[k, b])
                    covs[k, a, b] = s
        for a in range(d):
            for b in range(a + 1):
                v = covs[k, a, b] / w
                covs[k, a, b] = v
                covs[k, b, a] = v
            covs[k, a, a] += reg_covar
    return _precision_cholesky(covs, prec, log_det)


def gmm_em(x: np.ndarray, labels: np.ndarray, reg_covar: float, tol: float, max_iter: int,
           weights: np.ndarray, means: np.ndarray, covs: np.ndarray) -> tuple[int, int, float]:
    """Fit a full-covariance Gaussian mixture by EM from hard initial labels.

    The per-event work is in numba kernels; the exponentials and logarithms go through
    numpy's vectorised ``np.exp`` / ``np.log`` (several times faster than a scalar call per term).

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
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    k_n = weights.shape[0]
    xt = np.ascontiguousarray(x.T)  # events along the rows' contiguous axis: loops over them vectorise
    resp = np.zeros((k_n, n))  # responsibilities, component-major
    resp[labels, np.arange(n)] = 1.0
    eps10 = 10.0 * float(np.finfo(np.float64).eps)  # sklearn: nk + 10 eps
    prec = np.empty((k_n, d, d))
    log_det = np.empty(k_n)
    top = np.empty(n)
    sums = np.empty(n)
    ok = _m_step(xt, resp, sums, 0, reg_covar, eps10, weights, means, covs, prec, log_det)
    weights /= n
    if not ok:
        return -1, 0, -np.inf
    lower = -np.inf
    for it in range(1, max_iter + 1):
        prev = lower
        # E-step: responsibilities and the mean log-likelihood (log-sum-exp over components).
        _log_prob(xt, weights, means, prec, log_det, resp, top)
        np.exp(resp, out=resp)
        # M-step (normalises the responsibilities first, leaving their sums in `sums`).
        ok = _m_step(xt, resp, sums, 1, reg_covar, eps10, weights, means, covs, prec, log_det)
        np.log(sums, out=sums)
        sums += top
        lower = float(sums.mean())  # = np.mean(np.log(sums) + top), without the temporaries
        weights /= weights.sum()
        if not ok:
            return -1, it, lower
        if abs(lower - prev) < tol:
            return 1, it, lower
    return 0, max_iter, lower


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
def line_lstsq(design: np.ndarray, rhs: np.ndarray, m: int) -> tuple[bool, float, float]:
    """Least squares ``min ||design[:m] @ (x0, x1) - rhs[:m]||`` for a two-column design.

    Gram-Schmidt on the two columns, orthogonalised twice ("twice is enough"), then the
    solve and one step of iterative refinement on the residuals. On singlet's weighted line
    fits (~47k rows) the solution is within 1e-13 of the exact (rational) one, as close as
    ``np.linalg.lstsq``'s SVD (3e-14 to 8e-13 there), at ~40% of its time: six passes over
    the rows and no copies. Returns ``(ok, x0, x1)``; ``ok`` is False when the columns are
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


@njit(cache=NUMBA_CACHE, nogil=True)
def standardize(x: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(x - center) / scale`` of events (n, d) by column, as a new C-contiguous array.

    The same two IEEE operations per element as the numpy expression; numpy broadcasts the
    (d,) vectors with an inner loop of d elements per row, ~10x slower for d <= 3.
    """
    n, d = x.shape
    z = np.empty((n, d))
    for i in range(n):
        for j in range(d):
            z[i, j] = (x[i, j] - center[j]) / scale[j]
    return z


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
def distinct_rows_at_least(z: np.ndarray, k: int) -> bool:
    """Whether rows of ``z`` fall into at least ``k`` classes by elimination (k >= 2).

    The streaming form of: ``k - 1`` times, drop every row equal (``==`` on every column) to
    the first row left; true when rows are left. A row is dropped in the first round whose
    representative it equals; the first row to survive rounds ``0..t-1`` is round t's
    representative. A representative with a NaN is never dropped (it is unequal to itself),
    so every later round keeps it: true at once.
    """
    n, d = z.shape
    reps = np.empty((k - 1, d))
    n_rep = 0
    for i in range(n):
        survives = True
        for t in range(n_rep):
            same = True
            for j in range(d):
                if z[i, j] != reps[t, j]:
                    same = False
                    break
            if same:
                survives = False
                break
        if not survives:
            continue
        if n_rep == k - 1:
            return True
        for j in range(d):
            reps[n_rep, j] = z[i, j]
            if z[i, j] != z[i, j]:
                return True
        n_rep += 1
    return False


@njit(cache=NUMBA_CACHE, nogil=True)
def kpp_sq_dist(dot: np.ndarray, c_norms: np.ndarray, sq_norms: np.ndarray, closest: np.ndarray,
                use_closest: int) -> None:
    """The k-means++ squared distances from ``dot = c @ x.T`` (t, n), in place.

    Element for element the numpy it replaces (scikit-learn's ``_euclidean_distances``
    then the running minimum)::

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


# error_model="numpy": no zero test per division, so the first loop vectorises (s >= floor > 0
# or NaN: 1 / s never divides by zero).
@njit(cache=NUMBA_CACHE, nogil=True, error_model="numpy")
def singlet_step(a: np.ndarray, h: np.ndarray, c: float, b: float, s0: float, s1: float, floor: float,
                 new: np.ndarray, design: np.ndarray, rhs: np.ndarray, sw: np.ndarray) -> tuple[int, bool]:
    """The band of ``h = c + b a``, its weighted system, and whether ``new`` held that band already.

    ``sw`` (n) is scratch: ``sqrt(1 / s)`` of every event is taken in a first, branch-free
    loop that vectorises (a division and a square root per event dominate otherwise); the
    IEEE operations and their order per event are those of the numpy they replaced (reference:
    ``tests/reference/methods_ref.py::singlet_band``). Returns
    ``(m, same)``: the band's size and whether no event changed side.
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
