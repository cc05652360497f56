"""Numba kernels of batch normalisation: spline tables, node distances, soft cluster weights, splines.

Imported lazily by :mod:`flowtools.analysis.normalize`. A spline is tabulated on a uniform
grid between its first and last knot (``x0``, ``xn``; ``inv`` = points per unit), extended
linearly beyond them (``slo``, ``shi``) and clipped to ``[blo, bhi]``. Plain-numpy references
live in :mod:`flowtools.analysis.normalize_model` (``_Spline``, ``soft_weights_ref``,
``blend_share_ref``); ``tests/analysis/test_normalize_kernels.py`` compares them.

Event arrays are marker-major (``xt[m, e]``, C-contiguous): the inner loops run over events
and read memory in order, with one marker's few tables in cache.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from flowtools._config import NUMBA_CACHE

#: Soft weights below this are dropped (and the others renormalised).
MIN_WEIGHT = 1e-3

__all__ = ["MIN_WEIGHT", "apply_blend", "apply_tables", "blend_share", "build_tables", "node_d2",
           "soft_weights"]


@njit(cache=NUMBA_CACHE, nogil=True, inline="always")
def _lookup(v: float, a: float, b: float, iv: float, sl: float, sh: float, lo: float, hi: float,
            row: np.ndarray) -> float:  # pragma: no cover
    """One spline at ``v``: table ``row`` on ``[a, b]`` (``iv`` points per unit), linear ends, clipped."""
    g = row.shape[0]
    if v < a:
        r = row[0] + sl * (v - a)
    elif v > b:
        r = row[g - 1] + sh * (v - b)
    else:
        t = (v - a) * iv
        k = int(t)
        if k > g - 2:
            k = g - 2
        f = t - k
        r = row[k] + f * (row[k + 1] - row[k])
    if r < lo:
        r = lo
    elif r > hi:
        r = hi
    return r


@njit(cache=NUMBA_CACHE, nogil=True)
def apply_tables(
    xt: np.ndarray, labels: np.ndarray, x0: np.ndarray, xn: np.ndarray, inv: np.ndarray, slo: np.ndarray,
    shi: np.ndarray, blo: np.ndarray, bhi: np.ndarray, tab: np.ndarray, out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """``out[m, e]`` = spline ``(labels[e], m)`` at ``xt[m, e]``; label < 0 or NaN: copied unchanged."""
    nm, n = xt.shape
    for m in range(nm):
        xm = xt[m]
        om = out[m]
        for e in range(n):
            c = labels[e]
            v = xm[e]
            if c < 0 or v != v:
                om[e] = v
                continue
            om[e] = _lookup(v, x0[c, m], xn[c, m], inv[c, m], slo[c, m], shi[c, m], blo[c, m], bhi[c, m],
                            tab[c, m])


@njit(cache=NUMBA_CACHE, nogil=True)
def apply_blend(
    xt: np.ndarray, wt: np.ndarray, x0: np.ndarray, xn: np.ndarray, inv: np.ndarray, slo: np.ndarray,
    shi: np.ndarray, blo: np.ndarray, bhi: np.ndarray, tab: np.ndarray, out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """``out[m, e]`` = sum over slots ``c`` of ``wt[c, e]`` x spline ``(c, m)`` at ``xt[m, e]``.

    Weights of an event sum to 1 (soft cluster membership); a NaN value is copied unchanged.
    Each ``out[m, e]`` sums its non-zero slots in slot order from 0.0. The events of every slot
    with a non-zero weight are listed first (slot by slot), so that the loop over a slot's events
    has its spline in registers and no test per weight.
    """
    nm, n = xt.shape
    k = wt.shape[0]
    start = np.zeros(k + 1, dtype=np.int64)
    for c in range(k):
        cnt = 0
        for e in range(n):
            if wt[c, e] != 0.0:
                cnt += 1
        start[c + 1] = start[c] + cnt
    ev = np.empty(start[k], dtype=np.int64)
    wv = np.empty(start[k])
    for c in range(k):
        p = start[c]
        for e in range(n):
            w = wt[c, e]
            if w != 0.0:
                ev[p] = e
                wv[p] = w
                p += 1
    for m in range(nm):
        xm = xt[m]
        om = out[m]
        for e in range(n):
            om[e] = 0.0
        for c in range(k):
            a, b, iv, sl, sh = x0[c, m], xn[c, m], inv[c, m], slo[c, m], shi[c, m]
            lo, hi = blo[c, m], bhi[c, m]
            row = tab[c, m]
            for p in range(start[c], start[c + 1]):
                e = ev[p]
                v = xm[e]
                if v == v:  # a NaN would index the table out of bounds
                    om[e] += wv[p] * _lookup(v, a, b, iv, sl, sh, lo, hi, row)
        for e in range(n):
            v = xm[e]
            if v != v:
                om[e] = v


@njit(cache=NUMBA_CACHE, nogil=True)
def node_d2(xt: np.ndarray, codes: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """``out[j, e]``: squared distance of event ``e`` (marker-major ``xt``) to SOM node ``j``.

    Summed marker by marker in order, as the SOM's best-matching-unit kernel sums them.
    """
    d, n = xt.shape
    for j in range(codes.shape[0]):
        oj = out[j]
        for e in range(n):
            oj[e] = 0.0
        for t in range(d):
            c = codes[j, t]
            xr = xt[t]
            for e in range(n):
                u = xr[e] - c
                oj[e] += u * u


@njit(cache=NUMBA_CACHE, nogil=True, inline="always")
def _cluster_mass(d2: np.ndarray, e: int, node_cluster: np.ndarray, inv2s: float,
                  w: np.ndarray) -> None:  # pragma: no cover - compiled
    """Unnormalised cluster weights ``w[c]`` of event ``e``: its nodes' kernels summed per cluster.

    ``exp(-(d2[j, e] - min_j d2[:, e]) * inv2s)``; a node with exponent above 40 adds less than
    1e-17 and is skipped without its ``exp``. Shared by :func:`soft_weights` and :func:`blend_share`.
    """
    nn = d2.shape[0]
    mn = np.inf
    for j in range(nn):
        if d2[j, e] < mn:
            mn = d2[j, e]
    for c in range(w.shape[0]):
        w[c] = 0.0
    for j in range(nn):
        a = (d2[j, e] - mn) * inv2s
        if a <= 40.0:
            w[node_cluster[j]] += math.exp(-a)


@njit(cache=NUMBA_CACHE, nogil=True)
def soft_weights(d2: np.ndarray, node_cluster: np.ndarray, inv2s: float,
                 out: np.ndarray) -> None:  # pragma: no cover - compiled
    """Soft cluster membership ``out[c, e]`` from the node distances ``d2[j, e]`` (:func:`node_d2`).

    A Gaussian kernel of every node, ``exp(-(d2 - min_j d2) * inv2s)``, summed over the nodes of
    each cluster and normalised to sum 1 over the clusters; a cluster weighing less than
    ``MIN_WEIGHT`` is set to 0 and the rest renormalised (it would move a value by less than
    1e-6 of its spline's output, and skipping it halves the work of :func:`apply_blend`).
    A node with ``(d2 - min) * inv2s > 40`` adds less than 1e-17 and is skipped without its ``exp``.
    """
    n = d2.shape[1]
    k = out.shape[0]
    for e in range(n):
        _cluster_mass(d2, e, node_cluster, inv2s, out[:, e])
        tot = 0.0
        for c in range(k):
            tot += out[c, e]
        kept = 0.0
        for c in range(k):
            w = out[c, e] / tot
            if w < MIN_WEIGHT:
                w = 0.0
            out[c, e] = w
            kept += w
        for c in range(k):
            out[c, e] /= kept


@njit(cache=NUMBA_CACHE, nogil=True)
def blend_share(d2: np.ndarray, node_cluster: np.ndarray, k: int, inv2s: float,
                thr: float) -> float:  # pragma: no cover - compiled
    """Share of events whose second-largest :func:`soft_weights` weight is at least ``thr``."""
    n = d2.shape[1]
    w = np.empty(k)
    hits = 0
    for e in range(n):
        _cluster_mass(d2, e, node_cluster, inv2s, w)
        tot = 0.0
        first = 0.0
        second = 0.0
        for c in range(k):
            v = w[c]
            tot += v
            if v > first:
                second = first
                first = v
            elif v > second:
                second = v
        # the weights as soft_weights leaves them: clusters under MIN_WEIGHT dropped, the rest renormalised
        kept = 0.0
        for c in range(k):
            if w[c] >= MIN_WEIGHT * tot:
                kept += w[c]
        if second >= MIN_WEIGHT * tot and second >= thr * kept:
            hits += 1
    return hits / n if n else 0.0


@njit(cache=NUMBA_CACHE, nogil=True)
def _pchip_slopes(x: np.ndarray, y: np.ndarray, nu: int, d: np.ndarray) -> None:  # pragma: no cover
    """Fritsch-Butland PCHIP knot slopes (scipy's rule) of the first ``nu`` knots."""
    if nu == 2:
        m0 = (y[1] - y[0]) / (x[1] - x[0])
        d[0] = m0
        d[1] = m0
        return
    for i in range(1, nu - 1):
        h0, h1 = x[i] - x[i - 1], x[i + 1] - x[i]
        m0, m1 = (y[i] - y[i - 1]) / h0, (y[i + 1] - y[i]) / h1
        if m0 * m1 > 0:
            w1, w2 = 2 * h1 + h0, h1 + 2 * h0
            d[i] = (w1 + w2) / (w1 / m0 + w2 / m1)
        else:
            d[i] = 0.0
    for end in range(2):
        if end == 0:
            h0, h1 = x[1] - x[0], x[2] - x[1]
            m0, m1 = (y[1] - y[0]) / h0, (y[2] - y[1]) / h1
        else:
            h0, h1 = x[nu - 1] - x[nu - 2], x[nu - 2] - x[nu - 3]
            m0, m1 = (y[nu - 1] - y[nu - 2]) / h0, (y[nu - 2] - y[nu - 3]) / h1
        e = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
        if np.sign(e) != np.sign(m0):
            e = 0.0
        elif np.sign(m0) != np.sign(m1) and abs(e) > abs(3 * m0):
            e = 3 * m0
        d[0 if end == 0 else nu - 1] = e


@njit(cache=NUMBA_CACHE, nogil=True)
def build_tables(
    xq: np.ndarray, yq: np.ndarray, limit: float, max_slope: float, x0: np.ndarray, xn: np.ndarray,
    inv: np.ndarray, slo: np.ndarray, shi: np.ndarray, blo: np.ndarray, bhi: np.ndarray, tab: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Every spline ``s`` from its batch quantiles ``xq[s]`` to its goal quantiles ``yq[s]``, tabulated.

    ``_Spline.build`` followed by ``_Spline.table`` for many splines at once: goal quantiles made
    non-decreasing, tied batch quantiles merged into one knot (their goal values averaged), PCHIP
    through the knots tabulated on ``tab.shape[1]`` points and made non-decreasing, end slopes the
    secant over the outer tenth held in ``[1/max_slope, max_slope]``.
    """
    ns, nq = xq.shape
    g = tab.shape[1]
    xu = np.empty(nq)
    yu = np.empty(nq)
    d = np.empty(nq)
    ya = np.empty(nq)
    for s in range(ns):
        ya[0] = yq[s, 0]
        for i in range(1, nq):
            ya[i] = max(ya[i - 1], yq[s, i])
        # ties: runs of equal x (the quantiles are non-decreasing) -> one knot, the mean of their y
        nu = 0
        i = 0
        while i < nq:
            j = i
            acc = 0.0
            while j < nq and xq[s, j] == xq[s, i]:
                acc += ya[j]
                j += 1
            xu[nu] = xq[s, i]
            yu[nu] = acc / (j - i)
            nu += 1
            i = j
        span = ya[nq - 1] - ya[0]
        if not span > 0:
            span = 1.0
        blo[s] = ya[0] - limit * span
        bhi[s] = ya[nq - 1] + limit * span
        if nu == 1:  # a single distinct value: a shift
            x0[s] = xu[0]
            xn[s] = xu[0]
            inv[s] = 0.0
            slo[s] = 1.0
            shi[s] = 1.0
            for t in range(g):
                tab[s, t] = yu[0]
            continue
        a, b = xu[0], xu[nu - 1]
        x0[s] = a
        xn[s] = b
        inv[s] = (g - 1) / (b - a)
        _pchip_slopes(xu, yu, nu, d)
        step = (b - a) / (g - 1)
        k = 0
        prev = -np.inf
        for t in range(g):
            v = a + t * step if t < g - 1 else b  # as np.linspace: start + i * step, the last point exact
            while k < nu - 2 and xu[k + 1] <= v:
                k += 1
            h = xu[k + 1] - xu[k]
            u = (v - xu[k]) / h
            u2 = u * u
            u3 = u2 * u
            r = ((2 * u3 - 3 * u2 + 1) * yu[k] + (u3 - 2 * u2 + u) * h * d[k]
                 + (-2 * u3 + 3 * u2) * yu[k + 1] + (u3 - u2) * h * d[k + 1])
            if r < prev:
                r = prev
            tab[s, t] = r
            prev = r
        q = max(1, (nu - 1) // 10)
        lo_s = (yu[q] - yu[0]) / (xu[q] - xu[0])
        hi_s = (yu[nu - 1] - yu[nu - 1 - q]) / (xu[nu - 1] - xu[nu - 1 - q])
        slo[s] = min(max(lo_s, 1.0 / max_slope), max_slope)
        shi[s] = min(max(hi_s, 1.0 / max_slope), max_slope)

