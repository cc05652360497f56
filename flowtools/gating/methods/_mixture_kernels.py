"""Numba kernels of the ``gmm`` method: Gaussian-mixture EM and the per-row steps before it.

Imported lazily by :mod:`flowtools.gating.methods.mixture` (numba stays out of ``import
flowtools``); the plain-numpy references are in ``tests/reference/methods_ref.py``. The
k-means that gives the EM its initial labels is in
:mod:`flowtools.gating.methods._kmeans_kernels`.

:func:`gmm_em` is scikit-learn's ``GaussianMixture(covariance_type="full")`` EM
(``BaseMixture.fit_predict`` with one initialisation) for the few dimensions (1-3)
and components (<= 12) of a gate:

- initial parameters from hard labels (k-means in the caller): ``nk = sum resp
  + 10 eps``, means, covariances ``+ reg_covar`` on the diagonal, weights ``nk / n``;
- each iteration: E-step with the current parameters (log-likelihood of every
  event under every component, log-sum-exp over components; the lower bound is
  the mean of that), then M-step from the responsibilities (weights normalised
  to sum to 1); stop when the lower bound changes by less than ``tol``.

``gmm_em`` is a Python driver of njit step kernels, which work on the events transposed,
(d, n), and on responsibilities as (k, n), so every loop over the events is contiguous, with
d <= 3 written out; each sum runs over the events in order. Responsibilities that would be
subnormal (below 2.2e-308 before normalisation) are 0. Precisions are kept as the inverse of
the Cholesky factor of each covariance, as scikit-learn does; a covariance that is not
positive definite stops the fit with status -1 (scikit-learn raises ValueError there).

`standardize` and `distinct_rows_at_least` are the per-row (d <= 3) steps before the fit:
``(x - center) / scale`` with numpy's operations, and the "at least k distinct rows" test.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from flowtools._config import NUMBA_CACHE

__all__ = ["distinct_rows_at_least", "gmm_em", "standardize"]

_LOG_2PI = math.log(2.0 * math.pi)
# Below this, exp() is subnormal (< 2.2e-308). Such responsibilities are flushed to 0: they add
# nothing a float64 sum of the others can hold, and subnormal arithmetic is slow.
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


# error_model="numpy": divisions carry no zero test, so the loops vectorise; the one divisor that
# can be 0 (a column sum) is tested once, raising ZeroDivisionError as the python model would.
@njit(cache=NUMBA_CACHE, nogil=True, error_model="numpy")
def _m_step(xt: np.ndarray, resp: np.ndarray, sums: np.ndarray, normalise: int, reg_covar: float,
            eps10: float, weights: np.ndarray, means: np.ndarray, covs: np.ndarray, prec: np.ndarray,
            log_det: np.ndarray) -> bool:
    """M-step (sklearn's formulas) from ``resp`` (k, n), then the precisions' Cholesky factors.

    With ``normalise``, ``resp`` holds exp(log_prob - top) and is first divided by its column
    sums (kept in ``sums`` for the lower bound). Weights are left unnormalised (nk + 10 eps).
    Returns False when a covariance is not positive definite.

    Per component, one pass for nk and the means, one for the centred second moments, with the
    accumulators in registers (each sum runs over the events in order).
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

    The per-event work is in numba kernels; the exponentials and logarithms between them are
    numpy's vectorised ``np.exp`` / ``np.log``.

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
        lower = float(sums.mean())  # np.mean(np.log(sums) + top), computed in place in sums
        weights /= weights.sum()
        if not ok:
            return -1, it, lower
        if abs(lower - prev) < tol:
            return 1, it, lower
    return 0, max_iter, lower


@njit(cache=NUMBA_CACHE, nogil=True)
def standardize(x: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(x - center) / scale`` of events (n, d) by column, as a new C-contiguous array.

    The same two IEEE operations per element as the numpy expression (so the same bits), in
    one loop over the events rather than numpy's broadcast of the (d,) vectors row by row.
    """
    n, d = x.shape
    z = np.empty((n, d))
    for i in range(n):
        for j in range(d):
            z[i, j] = (x[i, j] - center[j]) / scale[j]
    return z


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
