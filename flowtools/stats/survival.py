"""Time to the next pregnancy and live birth: outcomes from the follow-up database, Cox models, honest CV.

Outcomes (:func:`derive_outcomes`, one row per woman; times in months of
30.4375 days from recruitment)
    ``time_to_live_birth`` (``ttlb_months``, ``ttlb_event``)
        Event: the first live birth after recruitment (``episode_date`` of the
        first ``live_birth`` episode). Censored at ``followup_end`` otherwise
        (loss to follow-up, end of study, a pregnancy still ongoing). Losses
        and stillbirths are not competing events here: a woman may conceive
        again, so they only delay the event. The cumulative incidence is
        ``1 - KM``.
    ``first_pregnancy`` (``fp_months``, ``fp_event``)
        The outcome of the first pregnancy after recruitment, at its end date:
        1 = live birth, 2 = loss or stillbirth (competing events), 0 =
        censored (no pregnancy ended by ``followup_end``; an ongoing pregnancy
        is censored at its last visit). Cumulative incidence of each cause by
        Aalen-Johansen (lifelines).
    ``time_to_pregnancy`` (``ttp_months``, ``ttp_event``)
        Event: conception of the first pregnancy after recruitment, estimated
        as ``episode_date - (gestational_weeks - 2)`` weeks (gestational age
        counts from the last period, two weeks before conception), not before
        recruitment. Censored at ``followup_end``.
    ``first_pregnancy_loss``
        Binary, among women whose first pregnancy after recruitment ended by
        follow-up end: 1 = loss or stillbirth, 0 = live birth; NaN otherwise
        (no pregnancy, or ongoing). For RM women this is the binary task of
        :func:`flowtools.stats.predict.evaluate_models` (:func:`binary_clinical`).

Models: Cox proportional hazards on ``clinical`` (age, BMI, prior losses,
prior live births, PCOS, current smoking, RM group), ``immune``
(:func:`~flowtools.stats.predict.build_features`) and ``clinical + immune``.
Every learned step is inside the training folds: median imputation,
standardisation, and the ridge penalties chosen by an inner CV on held-out
partial log-likelihood (Verweij and van Houwelingen): first the clinical
block's, on the clinical columns alone (``CLINICAL_PENALIZERS``), then the
immune block's with the clinical one fixed (``DEFAULT_PENALIZERS``), so the
clinical + immune model shrinks its clinical part as the clinical model does.
Unlike :mod:`flowtools.stats.predict` the clinical features are penalised: left
nearly unpenalised (``clinical_penalizers=(CLINICAL_PENALIZER,)``), seven
clinical features at 200 women were over-fitted (external calibration slope
0.72; ``benchmarks/bench_survival_validity.py``).
The penalty is lifelines' ``CoxPHFitter(penalizer=...)`` convention:
``n * penalizer * beta^2 / 2`` on standardised features, Efron ties. The fits
inside the CV use :func:`cox_ridge` (damped Newton on the same objective, about
20 times faster; equal to lifelines' coefficients, tested and benchmarked) or
lifelines itself (``engine="lifelines"``).

Metrics: Harrell's C (pairs with the earlier time an event; ties in the risk
score count one half) and Uno's C (the same pairs weighted by
``1 / G(T_i-)^2``, ``G`` the Kaplan-Meier estimate of the censoring
distribution, up to ``tau``), time-dependent cumulative/dynamic AUC at 12 and
24 months (cases ``T <= t`` with an event weighted by ``1 / G(T_i-)``, controls
``T > t``), all on each repeat's stacked out-of-fold predicted cumulative
incidence at the last horizon and averaged over repeats. Intervals
(``ci="bootstrap"``, the default): women resampled with replacement and the
whole nested CV (one repeat, inner tuning included) re-run on each replicate,
with outer and inner folds over distinct women so a woman's copies never
straddle training and test; estimate +- 1.96 bootstrap SE, as
:func:`flowtools.stats.predict.evaluate_models` (issue 22 showed this is what
covers). ``ci="fixed"`` keeps the cheap percentile bootstrap of the
repeat-averaged out-of-fold predictions treated as fixed (narrower: it ignores
the refitting). Coverage of both: ``benchmarks/bench_survival_validity.py``.
Calibration at each
horizon: predicted cumulative incidence ``1 - S(t | x)`` against the observed
``1 - KM(t)`` by tertile of predicted risk, and observed / expected overall.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from flowtools.provenance import atomic_write_text, provenance_record

if TYPE_CHECKING:
    from flowtools.io.clinical_db import FollowupDB

__all__ = [
    "CLINICAL_FEATURES",
    "OUTCOMES",
    "SurvivalEvaluation",
    "SurvivalModel",
    "binary_clinical",
    "clinical_features",
    "cox_ridge",
    "derive_outcomes",
    "evaluate_survival",
    "fit_survival_model",
    "harrell_c",
    "load_survival_model",
    "run_survival_stage",
    "td_auc",
    "uno_c",
]

MONTH_DAYS = 30.4375
OUTCOMES = {
    "time_to_live_birth": ("ttlb_months", "ttlb_event"),
    "time_to_pregnancy": ("ttp_months", "ttp_event"),
}
CLINICAL_FEATURES = ("age", "bmi", "prior_losses", "prior_live_births", "pcos", "current_smoker", "rm")
MODELS = ("clinical", "immune", "clinical + immune")
CLINICAL_PENALIZER = 0.01
# Ridge grid of the clinical block. Left nearly unpenalised (0.01 only), the 7 clinical features at 200
# women gave an external calibration slope of 0.72 (median, 12 planted cohorts; Riley's criterion asks
# for about 700 women); chosen from this grid by the inner CV, 1.05.
CLINICAL_PENALIZERS = (0.003, 0.01, 0.03, 0.1, 0.3)
# Ridge grid of the immune block (lifelines convention). On planted cohorts of 200 the inner CV chose
# the top of a grid ending at 1.0 every time (external slope 0.67); the grid reaches 30 (immune nearly off).
DEFAULT_PENALIZERS = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
HORIZONS = (12.0, 24.0)
_LIBRARIES = ("numpy", "scipy", "pandas", "lifelines", "sqlalchemy")
_FORMAT = "flowtools-survival-model/1"
ProgressCallback = Callable[[int, int], None]


# ------------------------------------------------------------------------------------------ outcomes


def derive_outcomes(db: FollowupDB) -> pd.DataFrame:
    """One row per woman: the outcomes of the module docstring, derived from the episodes.

    Parameters
    ----------
    db : FollowupDB
        A validated database (:func:`flowtools.io.clinical_db.read_followup`).

    Returns
    -------
    pandas.DataFrame
        Index ``woman_id``; columns ``group``, ``followup_months``,
        ``n_episodes``, ``ttlb_months``, ``ttlb_event``, ``fp_months``,
        ``fp_event`` (0/1/2), ``ttp_months``, ``ttp_event``,
        ``first_pregnancy_loss`` (float, NaN where undefined).
    """
    w = db.women.set_index("woman_id")
    e = db.episodes.sort_values(["woman_id", "episode_date"], kind="stable")
    rec, end = w["recruitment_date"], w["followup_end"]
    fu = (end - rec).dt.days.to_numpy(float) / MONTH_DAYS
    out = pd.DataFrame(
        {"group": w["group"].to_numpy(), "followup_months": fu}, index=pd.Index(w.index, name="woman_id")
    )
    out["n_episodes"] = e.groupby("woman_id").size().reindex(w.index).fillna(0).astype(int).to_numpy()
    months = ((e["episode_date"] - e["woman_id"].map(rec)).dt.days / MONTH_DAYS).to_numpy(float)
    e = e.assign(months=months)
    lb = e[e["outcome"] == "live_birth"].groupby("woman_id")["months"].min().reindex(w.index)
    out["ttlb_event"] = lb.notna().astype(int).to_numpy()
    out["ttlb_months"] = np.where(lb.notna(), lb.to_numpy(float), fu)
    first = e.groupby("woman_id").first().reindex(w.index)
    ended = first["outcome"].isin(["loss", "stillbirth", "live_birth"]).to_numpy()
    out["fp_event"] = np.where(ended, np.where(first["outcome"] == "live_birth", 1, 2), 0).astype(int)
    out["fp_months"] = np.where(
        ended,
        first["months"].to_numpy(float),
        np.where(first["months"].notna(), first["months"].to_numpy(float), fu),
    )
    conc = first["months"].to_numpy(float) - (first["gestational_weeks"].to_numpy(float) - 2) * 7 / MONTH_DAYS
    has = first["outcome"].notna().to_numpy()
    # at least one day after recruitment: a duration of zero is no time at risk
    out["ttp_months"] = np.where(has, np.maximum(conc, 1 / MONTH_DAYS), fu)
    out["ttp_event"] = has.astype(int)
    out["first_pregnancy_loss"] = np.where(ended, (first["outcome"] != "live_birth").astype(float), np.nan)
    return out


def clinical_features(db: FollowupDB) -> pd.DataFrame:
    """The clinical feature block (index ``woman_id``, float64, NaN for missing BMI/smoking)."""
    w = db.women.set_index("woman_id")
    smoke = w["smoking"].astype(str)
    out = pd.DataFrame(
        {
            "age": w["age"].astype(float),
            "bmi": w["bmi"].astype(float),
            "prior_losses": w["prior_losses"].astype(float),
            "prior_live_births": w["prior_live_births"].astype(float),
            "pcos": w["pcos"].astype(float),
            "current_smoker": np.where(smoke == "", np.nan, (smoke == "current").astype(float)),
            "rm": (w["group"] == "rm").astype(float),
        },
        index=w.index,
    )
    return out[list(CLINICAL_FEATURES)]


def binary_clinical(db: FollowupDB) -> pd.DataFrame:
    """A clinical table for :func:`~flowtools.stats.predict.evaluate_models` (task ``next_loss``).

    ``next_pregnancy_loss`` is ``first_pregnancy_loss`` of :func:`derive_outcomes`;
    women without a completed first pregnancy are left out (their outcome is unknown).
    """
    o = derive_outcomes(db)
    w = db.women.set_index("woman_id")
    keep = o["first_pregnancy_loss"].notna()
    out = pd.DataFrame(
        {
            "woman_id": w.index[keep],
            "group": np.where(w["group"][keep] == "rm", "RM", "control"),
            "age": w["age"][keep].to_numpy(),
            "bmi": w["bmi"][keep].to_numpy(),
            "n_prior_losses": w["prior_losses"][keep].to_numpy(),
            "next_pregnancy_loss": o["first_pregnancy_loss"][keep].astype(int).to_numpy(),
        }
    )
    out.attrs["source"] = db.source
    return out


# ------------------------------------------------------------------------------------------ metrics


def _km(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier product-limit estimate at the distinct times (numpy; equals lifelines', tested).

    The bootstrap of the metrics fits it hundreds of times, where lifelines' pandas-based fit
    dominated the run time.
    """
    t = np.asarray(time, float)
    d = np.asarray(event, float) > 0
    ut, inv = np.unique(t, return_inverse=True)
    deaths = np.bincount(inv, weights=d, minlength=ut.size)
    leaving = np.bincount(inv, minlength=ut.size)
    at_risk = t.size - np.r_[0, np.cumsum(leaving)[:-1]]
    return ut, np.cumprod(1.0 - deaths / at_risk)


def _censoring_km(time: np.ndarray, event: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """G(t-): Kaplan-Meier estimate of the censoring distribution, evaluated just before t."""
    ts, vs = _km(time, 1 - np.asarray(event, int))

    def g_left(t: np.ndarray) -> np.ndarray:
        i = np.searchsorted(ts, np.asarray(t, float), side="left") - 1
        return np.where(i >= 0, vs[np.clip(i, 0, None)], 1.0)

    return g_left


def harrell_c(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C of a risk score (higher = earlier event), as ``lifelines.utils.concordance_index``.

    Comparable pairs: ``T_i < T_j`` with an event at ``T_i``, and equal times
    where ``i`` has the event and ``j`` is censored; ties in ``risk`` count one half.
    NaN without a comparable pair.
    """
    t, e, r = (np.asarray(a, float) for a in (time, event, risk))
    ev = e > 0
    ti, ri = t[ev][:, None], r[ev][:, None]
    comp = (ti < t[None, :]) | ((ti == t[None, :]) & ~ev[None, :])
    num = np.sum(comp * ((ri > r[None, :]) + 0.5 * (ri == r[None, :])))
    den = comp.sum()
    return float(num / den) if den else float("nan")


def uno_c(
    time: np.ndarray,
    event: np.ndarray,
    risk: np.ndarray,
    *,
    tau: float | None = None,
    train_time: np.ndarray | None = None,
    train_event: np.ndarray | None = None,
) -> float:
    """Uno's C (Uno et al. 2011): Harrell's pairs weighted by ``1 / G(T_i-)^2``, events before ``tau``.

    Parameters
    ----------
    time, event, risk : array-like
    tau : float, optional
        Truncation time (default: the largest event time).
    train_time, train_event : array-like, optional
        Data for the censoring distribution ``G`` (default: ``time``, ``event``).
    """
    t, e, r = (np.asarray(a, float) for a in (time, event, risk))
    g = _censoring_km(
        t if train_time is None else np.asarray(train_time, float),
        e if train_event is None else np.asarray(train_event, float),
    )
    ev = e > 0
    if tau is None:
        tau = float(t[ev].max()) if ev.any() else 0.0
    use = ev & (t <= tau)
    gi = g(t[use])
    w = np.where(gi > 0, 1.0 / gi**2, 0.0)[:, None]
    comp = t[use][:, None] < t[None, :]
    ri = r[use][:, None]
    num = np.sum(w * comp * ((ri > r[None, :]) + 0.5 * (ri == r[None, :])))
    den = np.sum(w * comp)
    return float(num / den) if den else float("nan")


def td_auc(
    time: np.ndarray,
    event: np.ndarray,
    risk: np.ndarray,
    horizon: float,
    *,
    train_time: np.ndarray | None = None,
    train_event: np.ndarray | None = None,
) -> float:
    """Cumulative/dynamic AUC at ``horizon``, IPCW (Uno 2007; scikit-survival's ``cumulative_dynamic_auc``).

    Cases: event at ``T_i <= horizon``, weight ``1 / G(T_i-)``; controls:
    ``T_j > horizon`` (equal weights). NaN without cases or controls.
    """
    t, e, r = (np.asarray(a, float) for a in (time, event, risk))
    g = _censoring_km(
        t if train_time is None else np.asarray(train_time, float),
        e if train_event is None else np.asarray(train_event, float),
    )
    case = (e > 0) & (t <= horizon)
    ctrl = t > horizon
    if not case.any() or not ctrl.any():
        return float("nan")
    gi = g(t[case])
    w = np.where(gi > 0, 1.0 / gi, 0.0)
    rc, rk = r[case][:, None], r[ctrl][None, :]
    num = np.sum(w[:, None] * ((rc > rk) + 0.5 * (rc == rk)))
    return float(num / (w.sum() * ctrl.sum()))


# ------------------------------------------------------------------------------------------ Cox fits


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


def _folds(n: int, e: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    k = max(2, min(k, int(e.sum()), int((1 - e).sum()) or k, n))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(n), e))


def _grouped_folds(
    groups: np.ndarray, e: np.ndarray, k: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds over distinct women, stratified by their event: every copy of a resampled woman is in one fold.

    Used on bootstrap resamples (women drawn with replacement): a woman's copies
    split between training and test folds would be predicted from herself,
    which inflates C. Within each class the women are shuffled and dealt round
    robin, so fold sizes differ by at most one woman per class.
    """
    g = np.asarray(groups)
    _, first, inv = np.unique(g, return_index=True, return_inverse=True)
    ev = np.asarray(e, float)[first] > 0
    k = max(2, min(k, int(ev.sum()), int((~ev).sum()) or k, first.size))
    rng = np.random.default_rng(seed)
    fold_u = np.empty(first.size, int)
    offset = 0
    for cls in (np.flatnonzero(ev), np.flatnonzero(~ev)):
        perm = rng.permutation(cls)
        fold_u[perm] = (np.arange(perm.size) + offset) % k
        offset += perm.size
    fold = fold_u[inv.ravel()]
    return [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in range(k)]


def _choose(
    x_tr: np.ndarray,
    t_tr: np.ndarray,
    e_tr: np.ndarray,
    grid: Sequence[float],
    pen_of: Callable[[float], np.ndarray],
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    engine: str,
    l1_ratio: float,
) -> float:
    """The grid value with the best summed held-out partial log-likelihood over the inner folds."""
    if len(grid) == 1:
        return float(grid[0])
    score = np.zeros(len(grid))
    for itr, ite in folds:
        a, b, _ = _prep(x_tr[itr], x_tr[ite])
        beta = None
        for j, lam in enumerate(grid):
            # warm start from the neighbouring penalty's solution (same optimum, fewer Newton steps)
            beta = _fit_one(a, t_tr[itr], e_tr[itr], pen_of(float(lam)), engine, l1_ratio, beta)
            score[j] += _heldout_ll(a, t_tr[itr], e_tr[itr], b, t_tr[ite], e_tr[ite], beta)
    return float(grid[int(np.argmax(score))])


def _tuned_fit(
    x_tr: np.ndarray,
    t_tr: np.ndarray,
    e_tr: np.ndarray,
    free: np.ndarray,
    penalizers: Sequence[float],
    inner_folds: int,
    seed: int,
    engine: str,
    l1_ratio: float,
    clinical_penalizers: Sequence[float] = (CLINICAL_PENALIZER,),
    groups: np.ndarray | None = None,
    memo: dict[Any, float] | None = None,
) -> tuple[np.ndarray, dict[str, Any], float]:
    """Inner CV of the penalties (held-out partial likelihood), then a refit on all of ``x_tr``.

    The clinical penalty is chosen first, on the clinical columns alone (as
    the clinical model would choose it); the immune penalty then, with the
    clinical one fixed. ``stats["clinical_penalizer"]`` holds the former.
    """
    folds = (
        _folds(t_tr.size, e_tr, inner_folds, seed)
        if groups is None
        else _grouped_folds(groups, e_tr, inner_folds, seed)
    )
    lam_c = float(clinical_penalizers[0])
    # The clinical + immune model chooses its clinical penalty exactly as the clinical model does on the
    # same folds: the choice is kept (keyed by all its inputs, bytes included) and reused, not redone.
    key = None
    if memo is not None:
        key = (
            seed,
            inner_folds,
            engine,
            l1_ratio,
            tuple(clinical_penalizers),
            x_tr[:, free].tobytes(),
            t_tr.tobytes(),
            e_tr.tobytes(),
            None if groups is None else np.asarray(groups).tobytes(),
        )
    if free.any() and len(clinical_penalizers) > 1 and key is not None and key in memo:
        lam_c = memo[key]
    elif free.any() and len(clinical_penalizers) > 1:
        k = int(free.sum())
        lam_c = _choose(
            x_tr[:, free],
            t_tr,
            e_tr,
            clinical_penalizers,
            lambda lam: np.full(k, lam),
            folds,
            engine,
            l1_ratio,
        )
        if memo is not None:
            memo[key] = lam_c
    pen_of = lambda lam: np.where(free, lam_c, lam)  # noqa: E731
    best = float(penalizers[0])
    if (~free).any():
        best = _choose(x_tr, t_tr, e_tr, penalizers, pen_of, folds, engine, l1_ratio)
    z, _, stats = _prep(x_tr, x_tr[:0])
    beta = _fit_one(z, t_tr, e_tr, pen_of(best), engine, l1_ratio)
    return beta, {**stats, "clinical_penalizer": lam_c}, best


def _predict_ci(
    z_tr: np.ndarray,
    t_tr: np.ndarray,
    e_tr: np.ndarray,
    beta: np.ndarray,
    z_te: np.ndarray,
    horizons: Sequence[float],
) -> np.ndarray:
    """Predicted cumulative incidence ``1 - S(h | x)`` at each horizon, shape (n_test, n_horizons)."""
    h0 = _breslow_h0(z_tr, t_tr, e_tr, beta, horizons)
    return 1.0 - np.exp(-np.outer(np.exp(z_te @ beta), h0))


# ------------------------------------------------------------------------------------------ evaluation


@dataclass
class SurvivalEvaluation:
    """Result of :func:`evaluate_survival`.

    Attributes
    ----------
    outcome : str
    concordance : pandas.DataFrame
        One row per model: harrell_c, harrell_ci_low/high, uno_c, uno_ci_low/high,
        auc_<h> and its CI per horizon, harrell_c_folds (mean over outer
        folds), sd_repeats, penalizer and clinical_penalizer (medians of the
        values chosen in the outer folds), n, n_events, ci_method
        (``"bootstrap"`` or ``"fixed"``, see :func:`evaluate_survival`).
    gain : dict
        clinical + immune minus clinical: harrell_c (estimate, ci_low, ci_high),
        uno_c (same), auc_<h>, ci_method, p_permutation, n_permutations.
    calibration : pandas.DataFrame
        model, horizon, group (risk tertile 1-3 or ``all``), mean_predicted,
        observed (1 - KM), n; repeat 0 of the stacked out-of-fold predictions.
    predictions : pandas.DataFrame
        Index woman_id: time, event, and per model the repeat-averaged
        out-of-fold cumulative incidence at each horizon (``<model>@<h>``).
    parameters : dict
    warnings : list of str
    """

    outcome: str
    concordance: pd.DataFrame
    gain: dict[str, Any]
    calibration: pd.DataFrame
    predictions: pd.DataFrame
    parameters: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """C-indices and the AUC at the first horizon per model, and the gain (JSON-ready)."""
        h = self.parameters["horizons"][0]
        return {
            "outcome": self.outcome,
            "harrell_c": dict(
                zip(self.concordance["model"], self.concordance["harrell_c"].astype(float), strict=True)
            ),
            "uno_c": dict(
                zip(self.concordance["model"], self.concordance["uno_c"].astype(float), strict=True)
            ),
            f"auc_{h:g}": dict(
                zip(self.concordance["model"], self.concordance[f"auc_{h:g}"].astype(float), strict=True)
            ),
            "gain": self.gain,
        }

    def to_files(
        self, out_dir: str | os.PathLike[str], *, inputs: Mapping[str, str | os.PathLike[str]] | None = None
    ) -> list[Path]:
        """Write the tables (CSV) and ``survival_evaluation.json`` with provenance.

        Files: ``survival_concordance``, ``survival_calibration``,
        ``survival_predictions`` (each ``.csv`` + ``.parquet`` + ``.provenance.json``)
        and ``survival_evaluation.json`` (gain, summary, warnings, parameters, provenance).
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        prov = provenance_record(
            inputs=inputs,
            parameters=self.parameters,
            seed=self.parameters.get("seed"),
            command="flowtools survival evaluate",
            libraries=_LIBRARIES,
        )
        from flowtools.io.tables import write_table

        paths = []
        for df, stem in (
            (self.concordance, "survival_concordance"),
            (self.calibration, "survival_calibration"),
            (self.predictions.reset_index(), "survival_predictions"),
        ):
            # CSV + Parquet, the provenance in the Parquet metadata and beside them
            paths += write_table(df, out / stem, prov, provenance_file=True)[:2]
        doc = {
            "outcome": self.outcome,
            "summary": self.summary(),
            "concordance": self.concordance.to_dict(orient="records"),
            "gain": self.gain,
            "warnings": self.warnings,
            "provenance": prov,
        }
        atomic_write_text(out / "survival_evaluation.json", json.dumps(doc, indent=2, default=_json) + "\n")
        return [*paths, out / "survival_evaluation.json"]


def _json(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def _frames(
    counts: pd.DataFrame | None, db_or_outcomes: Any, outcome: str, models: Sequence[str], transform: str
) -> tuple[dict[str, pd.DataFrame], np.ndarray, np.ndarray, list[str]]:
    """Feature blocks (same women, same order), times and events."""
    from flowtools.io.clinical_db import FollowupDB

    if outcome not in OUTCOMES:
        msg = f"outcome must be one of {list(OUTCOMES)}, not {outcome!r}"
        raise ValueError(msg)
    if isinstance(db_or_outcomes, FollowupDB):
        out, clin = derive_outcomes(db_or_outcomes), clinical_features(db_or_outcomes)
    else:
        out, clin = db_or_outcomes
    ids = list(out.index)
    blocks: dict[str, pd.DataFrame] = {"clinical": clin.reindex(ids)}
    if any("immune" in m for m in models):
        if counts is None:
            msg = "the immune models need a count table"
            raise ValueError(msg)
        from flowtools.stats.predict import build_features

        imm = build_features(counts, transform=transform) if "count" in counts.columns else counts
        imm.index = imm.index.astype(str)
        missing = sorted(set(ids) - set(imm.index))
        extra = sorted(set(imm.index) - set(ids))
        if missing or extra:
            from flowtools.stats.errors import ClinicalDataError, SheetIssue

            issues = [SheetIssue(None, "woman_id", f"woman {w!r} has no immune data") for w in missing]
            issues += [
                SheetIssue(None, "woman_id", f"woman {w!r} is not in the follow-up database") for w in extra
            ]
            source = "<follow-up database / immune table>"
            raise ClinicalDataError(source, issues)
        blocks["immune"] = imm.reindex(ids)
        blocks["clinical + immune"] = pd.concat([blocks["clinical"], blocks["immune"]], axis=1)
    tcol, ecol = OUTCOMES[outcome]
    return {m: blocks[m] for m in models}, out[tcol].to_numpy(float), out[ecol].to_numpy(float), ids


def _cv_predict(
    x: np.ndarray,
    t: np.ndarray,
    e: np.ndarray,
    free: np.ndarray,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    penalizers: Sequence[float],
    inner_folds: int,
    seed: int,
    engine: str,
    l1_ratio: float,
    horizons: Sequence[float],
    clinical_penalizers: Sequence[float],
    groups: np.ndarray | None = None,
    memo: dict[Any, float] | None = None,
) -> tuple[np.ndarray, list[float], list[tuple[float, float]]]:
    """Out-of-fold cumulative incidence (n, n_horizons), per-fold Harrell C and chosen penalizers.

    ``groups`` (woman of each row, for bootstrap resamples) keeps a woman's copies in one inner fold.
    """
    pred = np.full((t.size, len(horizons)), np.nan)
    cs, lams = [], []
    for f, (tr, te) in enumerate(folds):
        beta, stats, lam = _tuned_fit(
            x[tr],
            t[tr],
            e[tr],
            free,
            penalizers,
            inner_folds,
            seed + 1 + f,
            engine,
            l1_ratio,
            clinical_penalizers,
            None if groups is None else groups[tr],
            memo,
        )
        z_tr, z_te, _ = _prep(x[tr], x[te])
        pred[te] = _predict_ci(z_tr, t[tr], e[tr], beta, z_te, horizons)
        cs.append(harrell_c(t[te], e[te], z_te @ beta))
        lams.append((lam, stats["clinical_penalizer"]))
    return pred, cs, lams


def _nanmean(a: np.ndarray, axis: int | None = None) -> Any:
    """``np.nanmean`` without the warning where a metric is undefined everywhere (NaN, as reported)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=axis)


def _bootstrap_cv(
    xs: Mapping[str, np.ndarray],
    t: np.ndarray,
    e: np.ndarray,
    frees: Mapping[str, np.ndarray],
    models: Sequence[str],
    n_splits: int,
    n_bootstrap: int,
    seed: int,
    metrics: Callable[[np.ndarray, np.ndarray, np.ndarray], list[float]],
    kw: Mapping[str, Any],
    tick: Callable[[], None] | None = None,
) -> np.ndarray:
    """The whole nested CV (one repeat) re-run on women resampled with replacement.

    As :func:`flowtools.stats.predict._bootstrap_cv`: women are drawn within
    the event and the censored women (the event count is kept); outer and
    inner folds are drawn over the distinct women of the resample
    (:func:`_grouped_folds`), so the copies of a woman are never split between
    training and test. Returns the metrics of each model's stacked
    out-of-fold risk in each replicate, shape ``(n_bootstrap, len(models),
    n_metrics)``.
    """
    rng = np.random.default_rng([int(seed), 23])
    ev, ce = np.flatnonzero(e > 0), np.flatnonzero(e <= 0)
    last = len(kw["horizons"]) - 1
    out = np.full((n_bootstrap, len(models), 2 + len(kw["horizons"])), np.nan)
    for b in range(n_bootstrap):
        while True:  # redraw the rare resample with a single distinct woman in a class (tiny cohorts)
            draw = rng.choice(ev, ev.size), rng.choice(ce, ce.size)
            if np.unique(draw[0]).size >= 2 and (ce.size == 0 or np.unique(draw[1]).size >= 2):
                break
        idx = np.concatenate(draw)
        tb, eb = t[idx], e[idx]
        fold_seed = int(rng.integers(2**31 - 1))
        folds = _grouped_folds(idx, eb, n_splits, fold_seed)
        memo: dict[Any, float] = {}
        for j, m in enumerate(models):
            p, _, _ = _cv_predict(
                xs[m][idx], tb, eb, frees[m], folds, seed=fold_seed, groups=idx, memo=memo, **kw
            )
            out[b, j] = metrics(tb, eb, p[:, last])
            if tick is not None:
                tick()
    return out


def evaluate_survival(
    counts: pd.DataFrame | None,
    db_or_outcomes: Any,
    *,
    outcome: str = "time_to_live_birth",
    models: Sequence[str] = MODELS,
    transform: str = "logit",
    n_splits: int = 5,
    n_repeats: int = 3,
    inner_folds: int = 3,
    penalizers: Sequence[float] = DEFAULT_PENALIZERS,
    clinical_penalizers: Sequence[float] = CLINICAL_PENALIZERS,
    l1_ratio: float = 0.0,
    horizons: Sequence[float] = HORIZONS,
    n_permutations: int = 0,
    n_bootstrap: int = 50,
    ci: str = "bootstrap",
    engine: str = "fast",
    seed: int = 0,
    progress: ProgressCallback | None = None,
) -> SurvivalEvaluation:
    """Repeated nested CV of penalised Cox models for a time-to-event outcome.

    Parameters
    ----------
    counts : pandas.DataFrame or None
        Count table (:func:`~flowtools.stats.tables_from_gate`) or an already
        built immune feature frame (index woman_id); None for clinical only.
    db_or_outcomes : FollowupDB or (outcomes, clinical features)
        The follow-up database, or the frames of :func:`derive_outcomes` and
        :func:`clinical_features` (or any feature frame with the same index).
    outcome : {"time_to_live_birth", "time_to_pregnancy"}
    models : sequence of str
    transform : {"logit", "clr"}
    n_splits, n_repeats, inner_folds : int
    penalizers : sequence of float
        Ridge penalty grid of the immune block (lifelines convention).
    clinical_penalizers : sequence of float
        Ridge grid of the clinical block, chosen first on the clinical
        columns alone; one value fixes it (``(CLINICAL_PENALIZER,)``: nearly
        unpenalised, as :mod:`flowtools.stats.predict` leaves them).
    l1_ratio : float, default 0
        Elastic-net mixing; > 0 fits with lifelines (slower).
    horizons : sequence of float, default (12, 24)
        Months for the time-dependent AUC and calibration.
    n_permutations : int, default 0
        Permutations of the immune block across women for the test of the gain.
    n_bootstrap : int, default 50
        Bootstrap replicates of the intervals (0: no intervals).
    ci : {"bootstrap", "fixed"}, default "bootstrap"
        ``"bootstrap"``: women resampled with replacement (within event /
        censored, as :func:`flowtools.stats.predict.evaluate_models` does) and
        the whole nested CV (one repeat, inner tuning included) re-run on each
        replicate, outer and inner folds drawn over distinct women so a woman's
        copies never straddle training and test; interval = estimate +- 1.96
        bootstrap SE (C and AUC clipped to [0, 1]), as ``predict``'s. This is
        the interval that covers (``benchmarks/bench_survival_validity.py``).
        ``"fixed"``: percentile bootstrap over women of the repeat-averaged
        out-of-fold predictions, treated as fixed: much faster and narrower,
        it ignores the refitting (a lower bound on the uncertainty).
    engine : {"fast", "lifelines"}
    seed : int
    progress : callable(done, total), optional

    Returns
    -------
    SurvivalEvaluation
    """
    if engine not in ("fast", "lifelines"):
        msg = f"engine must be 'fast' or 'lifelines', not {engine!r}"
        raise ValueError(msg)
    if ci not in ("bootstrap", "fixed"):
        msg = f"ci must be 'bootstrap' or 'fixed', not {ci!r}"
        raise ValueError(msg)
    blocks, t, e, ids = _frames(counts, db_or_outcomes, outcome, models, transform)
    if e.sum() < 4:
        msg = f"{outcome}: only {int(e.sum())} events; at least 4 are needed for cross-validation"
        raise ValueError(msg)
    hz = [float(h) for h in horizons]
    kw = {
        "penalizers": penalizers,
        "inner_folds": inner_folds,
        "engine": engine,
        "l1_ratio": l1_ratio,
        "horizons": hz,
        "clinical_penalizers": clinical_penalizers,
    }
    xs = {m: b.to_numpy(float) for m, b in blocks.items()}
    frees = {m: np.isin(np.asarray(b.columns), CLINICAL_FEATURES) for m, b in blocks.items()}
    n_boot_cv = n_bootstrap if ci == "bootstrap" else 0
    total = (n_repeats + n_boot_cv) * len(models) + n_permutations
    done = 0
    memo: dict[Any, float] = {}
    preds: dict[str, list[np.ndarray]] = {m: [] for m in models}
    fold_c: dict[str, list[float]] = {m: [] for m in models}
    lams: dict[str, list[tuple[float, float]]] = {m: [] for m in models}
    rep_folds = []
    for r in range(n_repeats):
        folds = _folds(t.size, e, n_splits, seed + 1000 * r)
        rep_folds.append(folds)
        for m in models:
            p, cs, lm = _cv_predict(xs[m], t, e, frees[m], folds, seed=seed + 1000 * r, memo=memo, **kw)
            preds[m].append(p)
            fold_c[m] += cs
            lams[m] += lm
            done += 1
            if progress is not None:
                progress(done, total)
    last = len(hz) - 1

    def metrics(tt: np.ndarray, ee: np.ndarray, risk: np.ndarray) -> list[float]:
        return [harrell_c(tt, ee, risk), uno_c(tt, ee, risk)] + [td_auc(tt, ee, risk, h) for h in hz]

    per_rep = {m: np.array([metrics(t, e, p[:, last]) for p in preds[m]]) for m in models}
    avg = {m: np.mean(preds[m], axis=0) for m in models}
    if ci == "fixed":
        rng = np.random.default_rng([int(seed), 19])
        boot = {m: [] for m in models}
        for _ in range(n_bootstrap):
            idx = rng.integers(0, t.size, t.size)
            if e[idx].sum() < 2:
                continue
            for m in models:
                boot[m].append(metrics(t[idx], e[idx], avg[m][idx, last]))
        bt = {m: np.asarray(boot[m]).reshape(-1, 2 + len(hz)) for m in models}
    else:

        def tick() -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, total)

        arr = _bootstrap_cv(xs, t, e, frees, models, n_splits, n_boot_cv, seed, metrics, kw, tick)
        bt = {m: arr[:, j] for j, m in enumerate(models)}
    z975 = 1.959963984540054

    def interval(est: float, reps: np.ndarray, *, clip: bool) -> tuple[float, float]:
        if reps.size == 0 or np.isnan(est) or np.isnan(reps).all():
            return float("nan"), float("nan")
        if ci == "fixed":
            lo, hi = np.nanpercentile(reps, [2.5, 97.5])
            return float(lo), float(hi)
        # predict's interval: estimate +- z * bootstrap SE of the whole procedure
        se = float(np.nanstd(reps, ddof=1)) if np.sum(~np.isnan(reps)) > 1 else float("nan")
        lo, hi = est - z975 * se, est + z975 * se
        return (max(0.0, lo), min(1.0, hi)) if clip else (lo, hi)

    names = ["harrell_c", "uno_c"] + [f"auc_{h:g}" for h in hz]
    rows = []
    for m in models:
        est = _nanmean(per_rep[m], axis=0)
        row: dict[str, Any] = {"model": m}
        for k, nm in enumerate(names):
            short = nm.replace("_c", "")
            lo, hi = interval(float(est[k]), bt[m][:, k], clip=True)
            row[nm] = float(est[k])
            row[f"{short}_ci_low"], row[f"{short}_ci_high"] = float(lo), float(hi)
        row["harrell_c_folds"] = float(np.nanmean(fold_c[m]))
        row["sd_repeats"] = float(np.nanstd(per_rep[m][:, 0], ddof=1)) if n_repeats > 1 else float("nan")
        chosen = np.asarray(lams[m], float).reshape(-1, 2)
        row["penalizer"] = float(np.median(chosen[:, 0])) if (~frees[m]).any() else float("nan")
        row["clinical_penalizer"] = float(np.median(chosen[:, 1])) if frees[m].any() else float("nan")
        row["n"], row["n_events"] = int(t.size), int(e.sum())
        row["ci_method"] = ci
        rows.append(row)
    conc = pd.DataFrame(rows)
    gain: dict[str, Any] = {}
    emitted: list[str] = []
    if "clinical" in models and "clinical + immune" in models:
        base, aug = "clinical", "clinical + immune"
        gain = {"baseline": base, "augmented": aug}
        diff_rep = per_rep[aug] - per_rep[base]
        diff_boot = bt[aug] - bt[base]
        for k, nm in enumerate(names):
            g_est = float(_nanmean(diff_rep[:, k]))
            lo, hi = interval(g_est, diff_boot[:, k], clip=False)
            gain[nm] = {"estimate": g_est, "ci_low": float(lo), "ci_high": float(hi)}
        gain["ci_method"] = ci
        gain["n_permutations"] = int(n_permutations)
        gain["p_permutation"] = None
        if n_permutations:
            prng = np.random.default_rng([int(seed), 191])
            imm_cols = ~frees[aug]
            c_base = per_rep[base][0, 0]
            obs = per_rep[aug][0, 0] - c_base
            null = []
            for _ in range(n_permutations):
                xp = xs[aug].copy()
                xp[:, imm_cols] = xp[prng.permutation(t.size)][:, imm_cols]
                p, _, _ = _cv_predict(xp, t, e, frees[aug], rep_folds[0], seed=seed, **kw)
                null.append(harrell_c(t, e, p[:, last]) - c_base)
                done += 1
                if progress is not None:
                    progress(done, total)
            gain["p_permutation"] = float(
                (1 + np.sum(np.asarray(null) >= obs - 1e-12)) / (1 + n_permutations)
            )
            gain["harrell_c_repeat0"] = float(obs)
    cal = _calibration(t, e, {m: preds[m][0] for m in models}, hz)
    pred_df = pd.DataFrame({"time": t, "event": e.astype(int)}, index=pd.Index(ids, name="woman_id"))
    for m in models:
        for j, h in enumerate(hz):
            pred_df[f"{m}@{h:g}"] = avg[m][:, j]
    if (conc["harrell_c"] > 0.8).any():
        text = "a cross-validated C above 0.80: on this kind of data that points at leakage or a batch effect"
        emitted.append(text)
    params = {
        "outcome": outcome,
        "models": list(models),
        "transform": transform,
        "n_splits": n_splits,
        "n_repeats": n_repeats,
        "inner_folds": inner_folds,
        "penalizers": [float(p) for p in penalizers],
        "clinical_penalizers": [float(p) for p in clinical_penalizers],
        "l1_ratio": float(l1_ratio),
        "horizons": hz,
        "n_bootstrap": n_bootstrap,
        "n_permutations": n_permutations,
        "engine": engine,
        "seed": seed,
        "ci": ci,
        "ci_description": (
            "estimate +- 1.96 SE of a bootstrap over women around the whole nested CV (one repeat, "
            "inner tuning included; a woman's copies never split across folds)"
            if ci == "bootstrap"
            else "percentile bootstrap over women of the repeat-averaged out-of-fold predictions, treated "
            "as fixed (narrower than a bootstrap around the whole nested CV)"
        ),
        "risk_score": f"out-of-fold predicted cumulative incidence at {hz[-1]:g} months",
        "clinical_features": list(blocks["clinical"].columns) if "clinical" in blocks else [],
    }
    return SurvivalEvaluation(
        outcome=outcome,
        concordance=conc,
        gain=gain,
        calibration=cal,
        predictions=pred_df,
        parameters=params,
        warnings=emitted,
    )


def _km_at(t: np.ndarray, e: np.ndarray, h: float) -> float:
    from lifelines import KaplanMeierFitter

    if t.size == 0:
        return float("nan")
    km = KaplanMeierFitter().fit(t, e)
    return float(km.survival_function_at_times([h]).iloc[0])


def _calibration(
    t: np.ndarray, e: np.ndarray, preds: Mapping[str, np.ndarray], hz: Sequence[float]
) -> pd.DataFrame:
    rows = []
    for m, p in preds.items():
        for j, h in enumerate(hz):
            q = p[:, j]
            ranks = pd.Series(q).rank(method="first").to_numpy()
            grp = np.minimum((3 * (ranks - 1) / q.size).astype(int) + 1, 3)
            for gname, mask in [*[(str(k), grp == k) for k in (1, 2, 3)], ("all", np.ones(q.size, bool))]:
                rows.append(
                    {
                        "model": m,
                        "horizon": h,
                        "group": gname,
                        "mean_predicted": float(q[mask].mean()) if mask.any() else float("nan"),
                        "observed": 1.0 - _km_at(t[mask], e[mask], h),
                        "n": int(mask.sum()),
                    }
                )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ fitted model


@dataclass(frozen=True)
class SurvivalModel:
    """A fitted Cox model with bootstrap refits, for a new woman's probability of the event by each horizon.

    Attributes
    ----------
    outcome, model, transform : str
    features : tuple of str
    median, mean, sd : ndarray
        Imputation and standardisation of the training women.
    beta : ndarray
        Coefficients on the standardised features.
    h0 : ndarray
        Baseline cumulative hazard at ``horizons`` (standardised features at 0).
    horizons : tuple of float
    boot_beta, boot_h0 : ndarray
        Bootstrap refits (penalty fixed), for the interval.
    penalizer : float
    n_train, n_events : int
    provenance : dict
    """

    outcome: str
    model: str
    transform: str
    features: tuple[str, ...]
    median: np.ndarray
    mean: np.ndarray
    sd: np.ndarray
    beta: np.ndarray
    h0: np.ndarray
    horizons: tuple[float, ...]
    boot_beta: np.ndarray
    boot_h0: np.ndarray
    penalizer: float
    n_train: int
    n_events: int
    provenance: dict[str, Any]

    def apply(self, features: pd.DataFrame, *, level: float = 0.95) -> pd.DataFrame:
        """Predicted probability of the event (live birth) by each horizon, with a bootstrap interval.

        Parameters
        ----------
        features : pandas.DataFrame
            Index woman_id; the model's feature columns (clinical, immune or
            both; :func:`clinical_features` and ``build_features``).
        level : float, default 0.95

        Returns
        -------
        pandas.DataFrame
            woman_id, and per horizon ``p_<h>``, ``p_<h>_low``, ``p_<h>_high``.
        """
        missing = [f for f in self.features if f not in features.columns]
        if missing:
            msg = f"the features lack the model's columns {missing}"
            raise ValueError(msg)
        x = features[list(self.features)].to_numpy(float)
        x = np.where(np.isnan(x), self.median, x)
        z = (x - self.mean) / self.sd
        p = 1 - np.exp(-np.outer(np.exp(z @ self.beta), self.h0))
        bp = 1 - np.exp(-np.exp(z @ self.boot_beta.T)[:, :, None] * self.boot_h0[None, :, :])
        a = (1 - level) / 2
        out = pd.DataFrame({"woman_id": features.index.astype(str)})
        for j, h in enumerate(self.horizons):
            out[f"p_{h:g}"] = p[:, j]
            out[f"p_{h:g}_low"] = np.quantile(bp[:, :, j], a, axis=1)
            out[f"p_{h:g}_high"] = np.quantile(bp[:, :, j], 1 - a, axis=1)
        return out

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model as JSON (no pickle)."""
        body = {
            "format": _FORMAT,
            **{
                k: getattr(self, k)
                for k in ("outcome", "model", "transform", "penalizer", "n_train", "n_events", "provenance")
            },
            "features": list(self.features),
            "horizons": list(self.horizons),
            **{
                k: np.asarray(getattr(self, k)).tolist()
                for k in ("median", "mean", "sd", "beta", "h0", "boot_beta", "boot_h0")
            },
        }
        p = Path(path)
        atomic_write_text(p, json.dumps(body, indent=1, default=_json) + "\n")
        return p


def load_survival_model(path: str | os.PathLike[str]) -> SurvivalModel:
    """Read a model written by :meth:`SurvivalModel.save`.

    Raises
    ------
    flowtools.stats.errors.ModelFileError
    """
    from flowtools.stats.errors import ModelFileError

    p = Path(path)
    try:
        body = json.loads(p.read_text(encoding="utf-8"))
        if body.get("format") != _FORMAT:
            msg = f"{p}: not a flowtools survival model (format {body.get('format')!r})"
            raise ModelFileError(msg)
        arr = {
            k: np.asarray(body[k], float)
            for k in ("median", "mean", "sd", "beta", "h0", "boot_beta", "boot_h0")
        }
        return SurvivalModel(
            outcome=body["outcome"],
            model=body["model"],
            transform=body["transform"],
            features=tuple(body["features"]),
            horizons=tuple(float(h) for h in body["horizons"]),
            penalizer=float(body["penalizer"]),
            n_train=int(body["n_train"]),
            n_events=int(body["n_events"]),
            provenance=body["provenance"],
            **arr,
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        msg = f"{p}: not a flowtools survival model file ({exc})"
        raise ModelFileError(msg) from None


def fit_survival_model(
    counts: pd.DataFrame | None,
    db_or_outcomes: Any,
    *,
    outcome: str = "time_to_live_birth",
    model: str = "clinical + immune",
    transform: str = "logit",
    penalizers: Sequence[float] = DEFAULT_PENALIZERS,
    clinical_penalizers: Sequence[float] = CLINICAL_PENALIZERS,
    horizons: Sequence[float] = HORIZONS,
    n_bootstrap: int = 100,
    seed: int = 0,
) -> SurvivalModel:
    """Fit the final Cox model on all women (penalty by 3-fold CV) with bootstrap refits for intervals."""
    blocks, t, e, _ = _frames(counts, db_or_outcomes, outcome, [model], transform)
    x_df = blocks[model]
    x = x_df.to_numpy(float)
    free = np.isin(np.asarray(x_df.columns), CLINICAL_FEATURES)
    beta, stats, lam = _tuned_fit(x, t, e, free, penalizers, 3, seed, "fast", 0.0, clinical_penalizers)
    z, _, _ = _prep(x, x[:0])
    hz = [float(h) for h in horizons]
    h0 = _breslow_h0(z, t, e, beta, hz)
    pen = np.where(free, stats["clinical_penalizer"], lam)
    rng = np.random.default_rng([int(seed), 192])
    bb, bh = [], []
    for _ in range(20 * n_bootstrap):
        if len(bb) >= n_bootstrap:
            break
        idx = rng.integers(0, t.size, t.size)
        if e[idx].sum() < 2:
            continue
        # the bootstrap refit uses the training women's scaling, so its coefficients share beta's units
        var1 = z[idx].var(0, ddof=1)
        b, ok = cox_ridge(z[idx], t[idx], e[idx], t.size * pen * var1)
        if not ok or np.max(np.abs(b)) > 20:  # a resample with a monotone likelihood: drawn again
            continue
        bb.append(b)
        bh.append(_breslow_h0(z[idx], t[idx], e[idx], b, hz))
    if not bb:
        msg = f"{outcome}: no bootstrap refit converged ({t.size} women, {int(e.sum())} events)"
        raise ValueError(msg)
    prov = provenance_record(
        parameters={
            "outcome": outcome,
            "model": model,
            "transform": transform,
            "penalizer": lam,
            "clinical_penalizer": stats["clinical_penalizer"],
            "n_bootstrap": n_bootstrap,
            "horizons": hz,
        },
        seed=seed,
        command="flowtools survival fit",
        libraries=_LIBRARIES,
    )
    return SurvivalModel(
        outcome=outcome,
        model=model,
        transform=transform,
        features=tuple(x_df.columns),
        median=stats["median"],
        mean=stats["mean"],
        sd=stats["sd"],
        beta=beta,
        h0=h0,
        horizons=tuple(hz),
        boot_beta=np.asarray(bb).reshape(-1, beta.size),
        boot_h0=np.asarray(bh).reshape(-1, len(hz)),
        penalizer=lam,
        n_train=int(t.size),
        n_events=int(e.sum()),
        provenance=prov,
    )


def model_features(model: SurvivalModel, counts: pd.DataFrame | None, db: FollowupDB) -> pd.DataFrame:
    """The feature frame :meth:`SurvivalModel.apply` needs, from a count table and the women table."""
    parts = [clinical_features(db)]
    if counts is not None and any(f not in CLINICAL_FEATURES for f in model.features):
        from flowtools.stats.predict import build_features

        parts.append(build_features(counts, transform=model.transform))
    return pd.concat(parts, axis=1, join="inner")


# ------------------------------------------------------------------------------------------ demo stage


def run_survival_stage(
    counts: pd.DataFrame,
    db: FollowupDB,
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    n_repeats: int = 2,
    n_bootstrap: int = 50,
) -> dict[str, Any]:
    """Evaluate the three models for time to live birth, write tables, figures and a model; return a summary.

    Used by ``flowtools demo`` (through ``survival_stage`` in the pipeline
    layer, which also builds the synthetic follow-up database). Women without
    immune data (a failed gate) are left out and listed (``dropped_women``).
    """
    from flowtools.io.clinical_db import FollowupDB
    from flowtools.stats.survival_figures import survival_figures

    have = set(counts["woman_id"].astype(str))
    dropped = sorted(set(db.women["woman_id"]) - have)
    if dropped:
        db = FollowupDB(
            db.women[db.women["woman_id"].isin(have)].reset_index(drop=True),
            db.episodes[db.episodes["woman_id"].isin(have)].reset_index(drop=True),
            db.source,
        )
    counts = counts[counts["woman_id"].astype(str).isin(set(db.women["woman_id"]))]

    out = Path(out_dir)
    ev = evaluate_survival(counts, db, n_repeats=n_repeats, n_splits=3, n_bootstrap=n_bootstrap, seed=seed)
    files = ev.to_files(out)
    figs = survival_figures(derive_outcomes(db), ev, out)
    model = fit_survival_model(counts, db, n_bootstrap=50, seed=seed)
    mpath = model.save(out / "survival_model.json")
    s = ev.summary()
    return {
        "outcome": ev.outcome,
        "harrell_c": s["harrell_c"],
        "uno_c": s["uno_c"],
        "auc_12": s.get("auc_12", {}),
        "gain_harrell_c": ev.gain.get("harrell_c", {}),
        "n_women": int(ev.concordance["n"].iloc[0]),
        "dropped_women": dropped,
        "n_events": int(ev.concordance["n_events"].iloc[0]),
        "paths": [str(p) for p in [*files, *figs, mpath]],
    }
