"""Small, exact numerical cores: quasi-binomial GLM, OLS, Welch t, Benjamini-Hochberg, DeLong, ridge logistic.

Plain numpy/scipy on plain arrays, so that thousands of fits (the validity
benchmark) stay cheap; each is tested against statsmodels/scipy on the same data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special as _sp
from scipy import stats as _st

__all__ = [
    "LinearFit",
    "bh_qvalues",
    "delong",
    "empirical_logit",
    "hierarchical_qvalues",
    "logit_normal",
    "manova_one_df",
    "ols",
    "penalized_logistic",
    "RandomEffectsFit",
    "reml_tau2",
    "ridge_newton",
    "quasi_binomial",
    "welch_t",
]


# Beyond this on the logit scale a coefficient is a fit running away on separated data.
_MAX_ABS_COEF = 15.0


@dataclass(frozen=True)
class LinearFit:
    """Coefficients of a fitted linear predictor with Wald/t inference.

    Attributes
    ----------
    params, bse, tvalues, pvalues : ndarray of float64, shape (p,)
    df_resid : int
    scale : float
        Dispersion (quasi-binomial: Pearson chi2 / df; OLS: residual variance).
    converged : bool
    cov : ndarray of float64, shape (p, p), optional
        Covariance of ``params`` (the one ``bse`` comes from).
    """

    params: np.ndarray
    bse: np.ndarray
    tvalues: np.ndarray
    pvalues: np.ndarray
    df_resid: int
    scale: float
    converged: bool
    cov: np.ndarray | None = None

    def conf_int(self, j: int, level: float = 0.95) -> tuple[float, float]:
        """Return the t-based confidence interval of coefficient ``j``."""
        t = _st.t.ppf(0.5 + level / 2, self.df_resid)
        return float(self.params[j] - t * self.bse[j]), float(self.params[j] + t * self.bse[j])


def _finish(beta: np.ndarray, cov: np.ndarray, df: int, scale: float, *, converged: bool) -> LinearFit:
    bse = np.sqrt(np.clip(np.diag(cov), 0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = beta / bse
    p = 2 * _st.t.sf(np.abs(t), df)
    return LinearFit(beta, bse, t, p, df, float(scale), converged, cov)


def quasi_binomial(
    x: np.ndarray,
    successes: np.ndarray,
    trials: np.ndarray,
    *,
    max_iter: int = 50,
    tol: float = 1e-10,
    robust: bool = False,
) -> LinearFit:
    """Fit a quasi-binomial GLM (logit link) by IRLS; dispersion from Pearson chi2.

    Equivalent to ``statsmodels.GLM(successes / trials, x, family=Binomial(),
    var_weights=trials).fit(scale="X2")``; inference uses the t distribution
    with ``n - p`` degrees of freedom (quasi-likelihood).

    Parameters
    ----------
    x : ndarray of float64, shape (n, p)
        Design matrix, with an intercept column.
    successes, trials : ndarray, shape (n,)
        Counts and parent counts (trials > 0).
    robust : bool, default False
        Sandwich covariance instead of the model-based one: statsmodels'
        ``fit(cov_type="HC0")`` of the same GLM times ``n / (n - p)`` (the HC1
        small-sample factor), with t inference on ``n - p`` degrees of freedom.

    Returns
    -------
    LinearFit
        ``converged`` is False when the iterations did not settle, or settled on
        a non-finite or absurd estimate (a coefficient beyond +-15 on the logit
        scale: an odds ratio of 3e6, the mark of a fit running off to infinity
        on separated data, e.g. a plate whose women all have 0 events).
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(trials, dtype=np.float64)
    y = np.asarray(successes, dtype=np.float64) / w
    n, p = x.shape
    # start from a weighted least squares fit of the empirical logits
    ys = np.clip(y, 0.5 / w, 1 - 0.5 / w)
    eta = np.log(ys / (1 - ys))
    beta = np.linalg.lstsq(x * np.sqrt(w)[:, None], eta * np.sqrt(w), rcond=None)[0]
    converged = False
    dev_old = np.inf
    for _ in range(max_iter):
        eta = x @ beta
        mu = 1 / (1 + np.exp(-eta))
        mu = np.clip(mu, 1e-12, 1 - 1e-12)
        v = mu * (1 - mu)
        wz = w * v
        z = eta + (y - mu) / v
        sw = np.sqrt(wz)
        beta = np.linalg.lstsq(x * sw[:, None], z * sw, rcond=None)[0]
        mu = np.clip(1 / (1 + np.exp(-(x @ beta))), 1e-12, 1 - 1e-12)
        with np.errstate(divide="ignore", invalid="ignore"):
            dev = 2 * np.sum(
                w
                * (
                    np.where(y > 0, y * np.log(y / mu), 0)
                    + np.where(y < 1, (1 - y) * np.log((1 - y) / (1 - mu)), 0)
                )
            )
        if abs(dev - dev_old) <= tol * (abs(dev) + 0.1):
            converged = True
            break
        dev_old = dev
    v = mu * (1 - mu)
    df = n - p
    scale = float(np.sum(w * (y - mu) ** 2 / v) / df) if df > 0 else float("nan")
    xtwx = x.T @ (x * (w * v)[:, None])
    bread = np.linalg.pinv(xtwx)
    if robust:
        u = x * (w * (y - mu))[:, None]
        cov = bread @ (u.T @ u) @ bread * (n / df if df > 0 else np.nan)
    else:
        cov = scale * bread
    if not (np.all(np.isfinite(beta)) and np.all(np.abs(beta) < _MAX_ABS_COEF)):
        converged = False
    return _finish(beta, cov, df, scale, converged=converged)


def empirical_logit(successes: np.ndarray, trials: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Empirical logit ``log((k + 0.5) / (n - k + 0.5))`` and its binomial sampling variance.

    The variance ``1 / (k + 0.5) + 1 / (n - k + 0.5)`` is the delta-method
    variance of the empirical logit (Cox & Snell 1989), finite at ``k = 0`` and
    ``k = n``.
    """
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    return np.log((k + 0.5) / (n - k + 0.5)), 1.0 / (k + 0.5) + 1.0 / (n - k + 0.5)


@dataclass(frozen=True)
class RandomEffectsFit(LinearFit):
    """:class:`LinearFit` of :func:`logit_normal`, with the between-woman variance.

    Attributes
    ----------
    tau2 : float
        REML estimate of the between-woman variance on the logit scale.
    weights : ndarray of float64, shape (n,)
        Precision weights ``1 / (tau2 + v_i)``.
    """

    tau2: float = float("nan")
    weights: np.ndarray | None = None


def _reml_objective(tau2: float, x: np.ndarray, y: np.ndarray, v: np.ndarray) -> float:
    w = 1.0 / (tau2 + v)
    xtwx = x.T @ (x * w[:, None])
    sign, logdet = np.linalg.slogdet(xtwx)
    if sign <= 0:
        return np.inf
    beta = np.linalg.solve(xtwx, x.T @ (w * y))
    r = y - x @ beta
    # minus twice the restricted log-likelihood, constants dropped
    return float(np.sum(np.log(tau2 + v)) + logdet + np.sum(w * r * r))


def reml_tau2(x: np.ndarray, y: np.ndarray, v: np.ndarray) -> float:
    """REML estimate of ``tau2`` in ``y_i = x_i b + u_i + e_i``, ``u_i ~ N(0, tau2)``, ``e_i ~ N(0, v_i)``.

    One-dimensional bounded minimisation of the restricted likelihood over
    ``[0, 4 * var(y) + max(v)]`` (the variance of the data bounds any sensible
    value), then a check of the boundary ``tau2 = 0``.
    """
    from scipy import optimize as _opt

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    hi = 4.0 * float(np.var(y)) + float(np.max(v))
    res = _opt.minimize_scalar(
        _reml_objective, bounds=(0.0, hi), args=(x, y, v), method="bounded", options={"xatol": 1e-10 * hi}
    )
    t = float(res.x)
    if _reml_objective(0.0, x, y, v) <= _reml_objective(t, x, y, v):
        return 0.0
    return t


def logit_normal(x: np.ndarray, successes: np.ndarray, trials: np.ndarray) -> RandomEffectsFit:
    """Logit-normal regression of counts with a between-woman variance component.

    Each woman's empirical logit ``y_i`` (:func:`empirical_logit`) has two
    sources of variance: binomial sampling, ``v_i`` (shrinks as her parent count
    grows), and biology, ``tau2`` (the same for every woman, however many cells
    were counted). The model ``y_i = x_i b + u_i + e_i`` is fitted by weighted
    least squares with precision weights ``w_i = 1 / (tau2 + v_i)`` (as
    limma-voom combines count and biological variance), ``tau2`` by REML
    (:func:`reml_tau2`), and inference by the Knapp-Hartung method: the
    covariance ``s2 (X'WX)^-1`` with ``s2`` the weighted residual mean square,
    t on ``n - p`` degrees of freedom (Knapp & Hartung 2003; the random-effects
    meta-regression of ``metafor::rma(method="REML", test="knha")``). A woman
    with 50k parent events then weighs ``(tau2 + v_2k) / (tau2 + v_50k)`` times
    one with 2k, close to 1 when biology dominates, instead of 25 times
    (quasi-binomial), and rare populations, where counting noise dominates,
    keep their binomial weights.

    Parameters
    ----------
    x : ndarray of float64, shape (n, p)
        Design matrix, with an intercept column.
    successes, trials : ndarray, shape (n,)
        Counts and parent counts (trials > 0).

    Returns
    -------
    RandomEffectsFit
        ``scale`` is the Knapp-Hartung factor ``s2``; ``converged`` is always True.
    """
    x = np.asarray(x, dtype=np.float64)
    y, v = empirical_logit(successes, trials)
    n, p = x.shape
    tau2 = reml_tau2(x, y, v)
    w = 1.0 / (tau2 + v)
    xtwx = x.T @ (x * w[:, None])
    beta = np.linalg.solve(xtwx, x.T @ (w * y))
    r = y - x @ beta
    df = n - p
    s2 = float(np.sum(w * r * r) / df) if df > 0 else float("nan")
    cov = s2 * np.linalg.inv(xtwx)
    f = _finish(beta, cov, df, s2, converged=True)
    return RandomEffectsFit(
        f.params, f.bse, f.tvalues, f.pvalues, f.df_resid, f.scale, f.converged, f.cov, tau2=tau2, weights=w
    )


def penalized_logistic(
    x: np.ndarray, y: np.ndarray, penalty: np.ndarray, *, max_iter: int = 100, tol: float = 1e-10
) -> tuple[float, np.ndarray, bool]:
    """Logistic regression with a per-coefficient ridge penalty, by damped Newton steps.

    Minimises ``-loglik(b0, b) + 0.5 * sum(penalty * b**2)``; the intercept
    ``b0`` is never penalised, and a zero ``penalty[j]`` leaves coefficient
    ``j`` unpenalised (maximum likelihood for it). With one penalty ``1 / C``
    for every column this is ``sklearn.linear_model.LogisticRegression(C=C)``;
    with all penalties zero it is the plain binomial GLM.

    Parameters
    ----------
    x : ndarray of float64, shape (n, p)
        Features (no intercept column).
    y : ndarray of {0, 1}, shape (n,)
    penalty : ndarray of float64, shape (p,)
        Non-negative ridge weight of each coefficient.
    max_iter : int, default 100
    tol : float, default 1e-10
        Stop when the objective changes by less than ``tol * (|objective| + 0.1)``.

    Returns
    -------
    intercept : float
    coef : ndarray of float64, shape (p,)
    converged : bool
        False when ``max_iter`` was reached. Data separated by unpenalised
        columns (no finite maximum) stop once the objective flattens, with
        large finite coefficients.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    lam = np.concatenate([[0.0], np.asarray(penalty, dtype=np.float64)])
    n, p = x.shape
    z = np.column_stack([np.ones(n), x])
    ybar = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
    beta = np.zeros(p + 1)
    beta[0] = np.log(ybar / (1 - ybar))
    beta, converged = ridge_newton(z, y, lam, beta, max_iter=max_iter, tol=tol)
    return float(beta[0]), beta[1:].copy(), converged


def ridge_newton(
    z: np.ndarray,
    y: np.ndarray,
    lam: np.ndarray,
    beta: np.ndarray,
    *,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> tuple[np.ndarray, bool]:
    """Minimise ``-loglik(beta) + 0.5 * sum(lam * beta**2)`` by damped Newton steps from ``beta``.

    The core of :func:`penalized_logistic`, for callers that hold the design
    with its intercept column (``z``) and a warm start (the nested CV's penalty
    path). Steps are halved until the objective does not rise; iterations stop
    when it changes by less than ``tol * (|objective| + 0.1)``.

    Returns
    -------
    beta : ndarray of float64
    converged : bool
        False when ``max_iter`` was reached.
    """
    eta = z @ beta
    # -loglik = sum(log(1 + exp(eta)) - y * eta), evaluated stably
    f = float(np.sum(np.logaddexp(0.0, eta) - y * eta) + 0.5 * np.sum(lam * beta * beta))
    diag = np.diag_indices(lam.size)
    for _ in range(max_iter):
        mu = _sp.expit(eta)
        grad = z.T @ (mu - y) + lam * beta
        hess = (z.T * (mu * (1.0 - mu))) @ z
        hess[diag] += lam
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(hess, grad, rcond=None)[0]
        t = 1.0
        while True:
            nb = beta - t * step
            ne = z @ nb
            f_new = float(np.sum(np.logaddexp(0.0, ne) - y * ne) + 0.5 * np.sum(lam * nb * nb))
            if f_new <= f or t < 1e-10:
                break
            t /= 2
        beta, eta = nb, ne
        done = abs(f - f_new) <= tol * (abs(f_new) + 0.1)
        f = f_new
        if done:
            return beta, True
    return beta, False


def ols(x: np.ndarray, y: np.ndarray) -> LinearFit:
    """Ordinary least squares with classical (t) inference, as ``statsmodels.OLS``.

    Parameters
    ----------
    x : ndarray of float64, shape (n, p)
    y : ndarray of float64, shape (n,)
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, p = x.shape
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ beta
    df = n - p
    s2 = float(resid @ resid / df) if df > 0 else float("nan")
    cov = s2 * np.linalg.pinv(x.T @ x)
    return _finish(beta, cov, df, s2, converged=True)


def welch_t(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float]:
    """Welch two-sample t-test of mean(a) - mean(b).

    Returns
    -------
    diff, ci_low, ci_high, p : float
        Difference of means with its 95% Welch CI and two-sided p-value
        (the p equals ``scipy.stats.ttest_ind(a, b, equal_var=False)``).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    d = float(a.mean() - b.mean())
    t = _st.t.ppf(0.975, df)
    p = float(2 * _st.t.sf(abs(d / se), df)) if se > 0 else float("nan")
    return d, float(d - t * se), float(d + t * se), p


def bh_qvalues(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values); NaN p-values stay NaN and are not counted.

    Equal to ``statsmodels.stats.multitest.multipletests(p, method="fdr_bh")[1]``.
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if m == 0:
        return q
    order = ok[np.argsort(p[ok], kind="mergesort")]
    ranked = p[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    q[order] = np.minimum(ranked, 1.0)
    return q


def manova_one_df(x: np.ndarray, y: np.ndarray, j: int = 1) -> tuple[float, float, int, int]:
    """Exact multivariate test of one coefficient (column ``j`` of ``x``) on all columns of ``y`` at once.

    Multivariate linear model ``Y = X B + E`` with normal rows of E; for a
    one-degree-of-freedom hypothesis Wilks, Pillai, Hotelling-Lawley and Roy
    agree and ``F = (n - p - d + 1) / d * T`` with ``T = b' E^-1 b / c`` follows
    F(d, n - p - d + 1) exactly (``b``: row j of the estimate, ``E``: residual
    SSCP, ``c = [(X'X)^-1]_jj``). Invariant to any invertible linear map of the
    columns of ``y``, so any basis of the CLR space (k - 1 coordinates) gives
    the same p-value. With ``d = 1`` it is the OLS t-test squared.

    Returns
    -------
    F, p, df1, df2
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    n, p = x.shape
    d = y.shape[1]
    df2 = n - p - d + 1
    if df2 < 1 or d < 1:
        return float("nan"), float("nan"), d, df2
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ beta
    e = resid.T @ resid
    c = float(np.linalg.pinv(x.T @ x)[j, j])
    b = beta[j]
    t = float(b @ np.linalg.pinv(e) @ b) / c
    f = t * df2 / d
    return f, float(_st.f.sf(f, d, df2)), d, df2


def hierarchical_qvalues(
    p: np.ndarray, groups: np.ndarray, p_group: dict[Any, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Two-level FDR control (Benjamini & Bogomolov 2014, Biometrics 70:708-718).

    Stage 1: BH over the groups' global p-values (one per group, testing that
    no hypothesis of the group is false). Stage 2: within each group selected
    at level q, BH at level ``q * R / m`` (R selected of m groups). This keeps
    the FDR over groups at q under any dependence *within* a group, which is
    what sibling populations need (their tests share a parent and, on the CLR
    scale, are negatively correlated and sum to zero, so BH's PRDS condition
    fails). A row is rejected at level q iff its returned value is <= q:

    ``q_row = min over r of max(s_r, q_group, m * q_within / r)``, ``s_r`` the
    r-th smallest group q-value, ``q_within`` the BH q-value within the group.

    Parameters
    ----------
    p : ndarray, shape (n,)
        Row p-values (NaN allowed; NaN rows get NaN).
    groups : ndarray, shape (n,)
        Group key of each row.
    p_group : mapping group key -> global p-value of that group

    Returns
    -------
    q_rows, q_group_of_rows : ndarray, ndarray
    """
    p = np.asarray(p, dtype=np.float64)
    keys = [k for k in dict.fromkeys(groups.tolist()) if np.isfinite(p_group.get(k, np.nan))]
    q_rows = np.full(p.shape, np.nan)
    q_grp = np.full(p.shape, np.nan)
    if not keys:
        return q_rows, q_grp
    qg = dict(zip(keys, bh_qvalues(np.array([p_group[k] for k in keys])), strict=True))
    m = len(keys)
    s = np.sort(np.array(list(qg.values())))
    r = np.arange(1, m + 1)
    for k in keys:
        idx = np.flatnonzero(groups == k)
        qw = bh_qvalues(p[idx])
        for i, w in zip(idx, qw, strict=True):
            q_grp[i] = qg[k]
            if np.isnan(w):
                continue
            q_rows[i] = min(1.0, float(np.min(np.maximum(np.maximum(s, qg[k]), m * w / r))))
    return q_rows, q_grp


def _midrank(x: np.ndarray) -> np.ndarray:
    return _st.rankdata(x)


def delong(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of several scores on the same women and their DeLong covariance.

    Parameters
    ----------
    y : ndarray of {0, 1}, shape (n,)
    scores : ndarray of float64, shape (k, n)

    Returns
    -------
    auc : ndarray, shape (k,)
    cov : ndarray, shape (k, k)
    """
    y = np.asarray(y).astype(bool)
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    pos, neg = scores[:, y], scores[:, ~y]
    m, n = pos.shape[1], neg.shape[1]
    k = scores.shape[0]
    v10 = np.empty((k, m))
    v01 = np.empty((k, n))
    auc = np.empty(k)
    for r in range(k):
        tx, ty, tz = _midrank(pos[r]), _midrank(neg[r]), _midrank(np.concatenate([pos[r], neg[r]]))
        auc[r] = (tz[:m].sum() - m * (m + 1) / 2) / (m * n)
        v10[r] = (tz[:m] - tx) / n
        v01[r] = 1.0 - (tz[m:] - ty) / m
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return auc, cov
