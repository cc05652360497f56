"""Ridge Cox proportional hazards (Efron ties) by damped Newton, and the pieces the nested CV needs.

:func:`cox_ridge` maximises the same objective as ``lifelines.CoxPHFitter(penalizer=...)``
(tested to 1e-6 against it, and benchmarked), about 20 times faster inside the CV.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["cox_ridge"]


def _efron_setup(x: np.ndarray, t: np.ndarray, e: np.ndarray) -> dict[str, Any]:
    """The data-only part of the Efron likelihood (sort order, tie groups), computed once per fit."""
    order = np.argsort(-t, kind="stable")
    xs, ts, es = x[order], t[order], e[order].astype(bool)
    # groups of equal times, in decreasing time
    _, first = np.unique(-ts, return_index=True)
    bounds = np.append(first, ts.size)
    last = bounds[1:] - 1
    grp = np.repeat(np.arange(first.size), np.diff(bounds))
    d_cnt = np.bincount(grp, weights=es, minlength=first.size)
    dg = grp[es]  # one entry per death: its group (non-decreasing)
    starts = np.flatnonzero(np.diff(dg, prepend=-1))  # first death of each group with deaths
    rank = np.arange(dg.size) - np.repeat(starts, np.diff(np.append(starts, dg.size)))
    return {
        "xs": xs,
        "x1": np.hstack([np.ones((xs.shape[0], 1)), xs]),  # a column of ones: s0 and s1 in one cumsum
        "es": es,
        "last": last,
        "dg": dg,
        "starts": starts,
        "ug": dg[starts],
        "frac": rank / d_cnt[dg],
        "xd_sum": xs[es].sum(0),
    }


def _efron_sorted(
    pre: Mapping[str, Any], beta: np.ndarray, *, hessian: bool = True
) -> tuple[float, np.ndarray, np.ndarray | None]:
    """Efron partial log-likelihood, gradient and Hessian from :func:`_efron_setup` (vectorised)."""
    xs, es, last, dg, starts, ug, frac = (pre[k] for k in ("xs", "es", "last", "dg", "starts", "ug", "frac"))
    eta = xs @ beta
    shift = eta.max()
    w = np.exp(eta - shift)
    # risk set sums at each distinct time (all with T >= t): cumulative sums in decreasing time;
    # column 0 is s0 (sum of w), the others s1 (sum of w x)
    w1 = w[:, None] * pre["x1"]
    s01 = np.cumsum(w1, axis=0)[last]
    # sums over the deaths of each tied group (deaths are contiguous per group)
    d01 = np.zeros_like(s01)
    d01[ug] = np.add.reduceat(w1[es], starts, axis=0)
    m01 = s01[dg] - frac[:, None] * d01[dg]
    phi = m01[:, 0]
    a = m01[:, 1:] / phi[:, None]
    wx = w1[:, 1:]
    # eta was shifted by its max: add the shift back (each death's log phi shifts by the same amount)
    ll = float(eta[es].sum() - (np.log(phi) + shift).sum())
    grad = pre["xd_sum"] - a.sum(0)
    if not hessian:
        return ll, grad, None
    wxx = wx[:, :, None] * xs[:, None, :]
    s2 = np.cumsum(wxx, axis=0)[last]
    d2 = np.zeros_like(s2)
    d2[ug] = np.add.reduceat(wxx[es], starts, axis=0)
    m2 = (s2[dg] - frac[:, None, None] * d2[dg]) / phi[:, None, None]
    hess = -(m2.sum(0) - a.T @ a)
    return ll, grad, hess


def _efron_parts(
    x: np.ndarray, t: np.ndarray, e: np.ndarray, beta: np.ndarray, *, hessian: bool = True
) -> tuple[float, np.ndarray, np.ndarray | None]:
    """Efron partial log-likelihood, gradient and Hessian (vectorised over the deaths)."""
    if not np.asarray(e).astype(bool).any():
        return 0.0, np.zeros(x.shape[1]), np.zeros((x.shape[1], x.shape[1])) if hessian else None
    return _efron_sorted(_efron_setup(x, t, e), beta, hessian=hessian)


def cox_ridge(
    x: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    penalty: np.ndarray | float,
    *,
    max_iter: int = 50,
    beta0: np.ndarray | None = None,
) -> tuple[np.ndarray, bool]:
    """Ridge Cox (Efron ties) by damped Newton: maximise ``ll(beta) - sum(penalty * beta^2) / 2``.

    lifelines' ``CoxPHFitter(penalizer=p)`` on a frame ``x`` equals
    ``penalty = n * p * var(x, ddof=1)`` here (lifelines penalises the
    coefficients of its internally standardised columns), on centred ``x``.
    ``beta0`` starts Newton elsewhere than 0 (a neighbouring penalty's
    solution along a grid: the optimum is the same, reached in fewer steps).

    Returns
    -------
    beta : ndarray, shape (p,)
    converged : bool
    """
    x = np.asarray(x, float)
    t, e = np.asarray(time, float), np.asarray(event, float)
    pen = np.broadcast_to(np.asarray(penalty, float), (x.shape[1],))
    beta = np.zeros(x.shape[1]) if beta0 is None else np.asarray(beta0, float).copy()
    if not e.any():
        return np.zeros(x.shape[1]), True
    pre = _efron_setup(x, t, e)

    def parts(b: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        ll, g, h = _efron_sorted(pre, b)
        assert h is not None
        return ll - 0.5 * float(np.sum(pen * b * b)), g - pen * b, h - np.diag(pen)

    # each accepted point's gradient and Hessian are reused by the next step (one evaluation per step)
    f, g, h = parts(beta)
    for _ in range(max_iter):
        try:
            step = np.linalg.solve(-h, g)
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(-h, g, rcond=None)[0]
        if np.max(np.abs(step)) < 1e-9:  # converged: the last Newton step needs no evaluation
            return beta + step, True
        s = 1.0
        while True:
            nb = beta + s * step
            nf, ng, nh = parts(nb)
            if nf >= f - 1e-12 or s < 1e-8:
                break
            s /= 2
        if s < 1e-8:
            return beta, False
        beta, f_old, f, g, h = nb, f, nf, ng, nh
        if np.max(np.abs(s * step)) < 1e-9 or abs(f - f_old) < 1e-12 * (1 + abs(f)):
            return beta, True
    return beta, False


def _breslow_h0(
    x: np.ndarray, t: np.ndarray, e: np.ndarray, beta: np.ndarray, at: Sequence[float]
) -> np.ndarray:
    """Breslow baseline cumulative hazard at the times ``at`` (x centred as in the fit)."""
    r = np.exp(x @ beta)
    ut = np.unique(t[e > 0])
    order = np.argsort(t)
    ts, rs = t[order], r[order]
    risk = np.cumsum(rs[::-1])[::-1]
    at_risk = risk[np.searchsorted(ts, ut, side="left")]
    d = np.array([np.sum((t == u) & (e > 0)) for u in ut], float)
    hz = np.cumsum(d / at_risk)
    idx = np.searchsorted(ut, np.asarray(at, float), side="right") - 1
    return np.where(idx >= 0, hz[np.clip(idx, 0, None)], 0.0)


def _prep(x_tr: np.ndarray, x_te: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Median imputation and standardisation with training statistics (no intercept)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing column is filled with 0
        med = np.nanmedian(x_tr, axis=0) if x_tr.size else np.zeros(x_tr.shape[1])
    med = np.where(np.isnan(med), 0.0, med)
    a = np.where(np.isnan(x_tr), med, x_tr)
    b = np.where(np.isnan(x_te), med, x_te)
    mean, sd = a.mean(0), a.std(0)
    sd = np.where(sd < 1e-12, 1.0, sd)
    return (a - mean) / sd, (b - mean) / sd, {"median": med, "mean": mean, "sd": sd}


def _fit_one(
    z: np.ndarray,
    t: np.ndarray,
    e: np.ndarray,
    pen: np.ndarray,
    engine: str,
    l1_ratio: float = 0.0,
    beta0: np.ndarray | None = None,
) -> np.ndarray:
    """Coefficients on standardised ``z`` with lifelines-convention penalizers ``pen`` (one per column)."""
    n = z.shape[0]
    if engine == "lifelines" or l1_ratio > 0:
        from lifelines import CoxPHFitter

        cols = [f"x{j}" for j in range(z.shape[1])]
        df = pd.DataFrame(z, columns=cols).assign(T=t, E=e)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # lifelines' convergence advice; the fit is still returned
            m = CoxPHFitter(penalizer=np.asarray(pen, float), l1_ratio=l1_ratio).fit(df, "T", "E")
        return m.params_.to_numpy(float)
    var1 = z.var(0, ddof=1) if n > 1 else np.ones(z.shape[1])
    return cox_ridge(z, t, e, n * pen * var1, beta0=beta0)[0]


def _heldout_ll(
    z_tr: np.ndarray,
    t_tr: np.ndarray,
    e_tr: np.ndarray,
    z_te: np.ndarray,
    t_te: np.ndarray,
    e_te: np.ndarray,
    beta: np.ndarray,
) -> float:
    """Held-out partial log-likelihood per event (Verweij-van Houwelingen cross-validated form)."""
    z = np.vstack([z_tr, z_te])
    t, e = np.r_[t_tr, t_te], np.r_[e_tr, e_te]
    full = _efron_parts(z, t, e, beta, hessian=False)[0]
    train = _efron_parts(z_tr, t_tr, e_tr, beta, hessian=False)[0]
    return (full - train) / max(float(e_te.sum()), 1.0)
