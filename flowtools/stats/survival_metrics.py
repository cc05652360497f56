"""Discrimination and calibration of survival predictions: Kaplan-Meier, Harrell's and Uno's C, td-AUC."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["aalen_johansen", "harrell_c", "td_auc", "uno_c", "wolbers_c"]


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


def wolbers_c(time: np.ndarray, event: np.ndarray, risk: np.ndarray, *, cause: int = 1) -> float:
    """Wolbers et al. 2009's C for one cause of competing events: Harrell's C with competing events kept.

    ``event`` codes 0 (censored), ``cause`` and any other positive value (a
    competing event). A woman with a competing event never has the event of
    interest, so she is comparable with (and should be ranked below) every
    woman who has it: her time is set to infinity and she counts as a
    non-event; censored women are treated as in Harrell's C. ``risk`` is the
    predicted cumulative incidence of ``cause`` (higher = earlier).
    """
    t, e = np.asarray(time, float), np.asarray(event, float)
    comp = (e > 0) & (e != cause)
    return harrell_c(np.where(comp, np.inf, t), (e == cause).astype(float), risk)


def aalen_johansen(
    time: np.ndarray, event: np.ndarray, at: Sequence[float], *, cause: int = 1
) -> np.ndarray:
    """Aalen-Johansen cumulative incidence of ``cause`` at the times ``at`` (numpy; equals lifelines').

    ``F(t) = sum_{s <= t} S(s-) d_cause(s) / Y(s)``, ``S`` the Kaplan-Meier
    estimate of any event; ``event`` codes 0 (censored) and the causes (> 0).
    Tied times are handled exactly (lifelines jitters them).
    """
    t, e = np.asarray(time, float), np.asarray(event, float)
    if t.size == 0:
        return np.full(len(at), np.nan)
    ut, inv = np.unique(t, return_inverse=True)
    d_all = np.bincount(inv, weights=e > 0, minlength=ut.size)
    d_k = np.bincount(inv, weights=e == cause, minlength=ut.size)
    y = t.size - np.r_[0, np.cumsum(np.bincount(inv, minlength=ut.size))[:-1]]
    s = np.cumprod(1.0 - d_all / y)
    f = np.cumsum(np.r_[1.0, s[:-1]] * d_k / y)
    i = np.searchsorted(ut, np.asarray(at, float), side="right") - 1
    return np.where(i >= 0, f[np.clip(i, 0, None)], 0.0)


def _km_at(t: np.ndarray, e: np.ndarray, h: float) -> float:
    from lifelines import KaplanMeierFitter

    if t.size == 0:
        return float("nan")
    km = KaplanMeierFitter().fit(t, e)
    return float(km.survival_function_at_times([h]).iloc[0])


def _calibration(
    t: np.ndarray,
    e: np.ndarray,
    preds: Mapping[str, np.ndarray],
    hz: Sequence[float],
    *,
    competing: bool = False,
) -> pd.DataFrame:
    """Mean predicted against observed cumulative incidence by tertile of predicted risk.

    Observed: ``1 - KM``; the Aalen-Johansen estimate of cause 1 where ``competing``.
    """

    def observed(mask: np.ndarray, h: float) -> float:
        if competing:
            return float(aalen_johansen(t[mask], e[mask], [h])[0]) if mask.any() else float("nan")
        return 1.0 - _km_at(t[mask], e[mask], h)

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
                        "observed": observed(mask, h),
                        "n": int(mask.sum()),
                    }
                )
    return pd.DataFrame(rows)
