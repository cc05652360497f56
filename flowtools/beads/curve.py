"""Standard curves: weighted 5PL (and 4PL) fits, back-calculation with intervals, LLOQ/ULOQ.

Model (concentration ``x >= 0``, response ``y`` = reporter MFI)::

    5PL:  y = d + (a - d) / (1 + (x / c) ** b) ** g
    4PL:  the same with g = 1

``a`` is the response at zero (background), ``d`` the top asymptote, ``c`` the
inflection concentration, ``b`` the slope and ``g`` the asymmetry. Blanks enter the fit
as ``x = 0`` (``y = a``).

Weights
    :func:`fit_curve` minimises ``sum(((y - f(x)) / y) ** 2)``: weights ``1 / y**2``,
    i.e. a constant coefficient of variation, which is how bead MFIs behave (the spread of
    a median over a few hundred beads, and pipetting, scale with the signal). The
    observed ``y`` is used, not the fitted one, so the fit is one ordinary weighted
    least-squares problem that :func:`scipy.optimize.curve_fit` with ``sigma=y`` solves
    identically (that is the independent check in the tests). ``y`` below ``floor``
    (default 1) is taken as ``floor`` so a zero MFI cannot get an infinite weight.

Parameters are fitted as ``(a, d, log c, b, log g)`` with
:func:`scipy.optimize.least_squares` (``trf``, bounds ``0.05 <= b, g <= 20``), from
three starts of ``g`` for the 5PL (0.5, 1, 2; the best kept).

Back-calculation and intervals
    ``x = c * (((a - d) / (y - d)) ** (1 / g) - 1) ** (1 / b)`` for ``y`` strictly between
    ``a`` and ``d``. The interval is the delta method on ``log x``: the variance of one
    measured MFI (``(s * y)**2 / n``, ``s`` the fit's residual CV, ``n`` the replicate
    wells averaged) plus the parameters' covariance ``s**2 (J'J)^-1`` propagated through
    the numerical gradient of ``log x`` in the parameters; ``exp(log x +- z se)``.

LLOQ / ULOQ
    :func:`quantifiable_range`: the longest run of consecutive standard levels whose
    back-calculated recovery is within 80-120% and whose replicate CV is below 20%
    (at least 3 levels); LLOQ and ULOQ are the lowest and highest nominal concentration
    of that run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "MAX_REPLICATE_CV",
    "MIN_DYNAMIC",
    "MIN_LEVELS",
    "MIN_RHO",
    "CurveFit",
    "back_calculate",
    "fit_curve",
    "logistic",
    "quantifiable_range",
]

#: A standard curve needs this many usable levels (nominal concentrations) to be fitted.
MIN_LEVELS = 5
#: Replicate wells of a standard level with a higher CV of MFI (%) fail that level.
MAX_REPLICATE_CV = 20.0
#: Standards whose mean MFI ranks correlate less (Spearman) with concentration are not monotone.
MIN_RHO = 0.9
#: Standards whose top-to-bottom MFI ratio is below this have no dynamic range.
MIN_DYNAMIC = 3.0

_EPS = 1e-12


def logistic(x: np.ndarray, a: float, b: float, c: float, d: float, g: float = 1.0) -> np.ndarray:
    """The 5PL (4PL with ``g = 1``) response at concentration ``x >= 0``."""
    x = np.asarray(x, dtype=np.float64)
    t = np.where(x > 0, np.exp(b * (np.log(np.maximum(x, _EPS)) - math.log(c))), 0.0)
    return d + (a - d) / (1.0 + t) ** g


def _unpack(theta: np.ndarray, model: str) -> tuple[float, float, float, float, float]:
    a, d, logc, b = theta[:4]
    g = math.exp(theta[4]) if model == "5pl" else 1.0
    return float(a), float(b), math.exp(logc), float(d), g


@dataclass
class CurveFit:
    """A fitted standard curve.

    Attributes
    ----------
    model : {"5pl", "4pl"}
    params : dict
        ``a, b, c, d, g``.
    theta : ndarray
        Fitted vector ``(a, d, log c, b[, log g])``.
    cov : ndarray
        Covariance of ``theta`` (``s**2 (J'J)^-1``; NaN when singular).
    s : float
        Residual CV (weighted residual standard deviation).
    n : int
        Points fitted.
    success : bool
    r2 : float
        R² of ``log10`` MFI against its fitted value (points with MFI > 0).
    message : str
    """

    model: str
    params: dict[str, float]
    theta: np.ndarray
    cov: np.ndarray
    s: float
    n: int
    success: bool
    r2: float
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def increasing(self) -> bool:
        """Whether the curve rises with concentration (``d > a`` with ``b > 0``)."""
        return self.params["d"] > self.params["a"]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Fitted MFI at concentrations ``x``."""
        p = self.params
        return logistic(x, p["a"], p["b"], p["c"], p["d"], p["g"])

    def _log_inverse(self, y: np.ndarray, theta: np.ndarray | None = None) -> np.ndarray:
        a, b, c, d, g = _unpack(self.theta if theta is None else theta, self.model)
        y = np.asarray(y, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = (a - d) / (y - d)
            u = ratio ** (1.0 / g) - 1.0
            out = math.log(c) + np.log(u) / b
        inside = (y - a) * (d - y) > 0
        return np.where(inside & np.isfinite(out), out, np.nan)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Back-calculated concentration of MFI ``y`` (NaN outside the curve's range)."""
        return np.exp(self._log_inverse(y))

    def interval(
        self, y: np.ndarray, *, n_rep: int = 1, z: float = 1.959964
    ) -> tuple[np.ndarray, np.ndarray]:
        """Delta-method interval of the back-calculated concentration (see the module docstring)."""
        y = np.atleast_1d(np.asarray(y, dtype=np.float64))
        lx = self._log_inverse(y)
        h = 1e-6 * np.maximum(np.abs(y), 1.0)
        dldy = (self._log_inverse(y + h) - self._log_inverse(y - h)) / (2 * h)
        var = (dldy * self.s * y) ** 2 / max(n_rep, 1)
        if np.all(np.isfinite(self.cov)):
            grads = np.empty((len(y), len(self.theta)))
            for k in range(len(self.theta)):
                step = 1e-6 * max(abs(self.theta[k]), 1.0)
                tp, tm = self.theta.copy(), self.theta.copy()
                tp[k] += step
                tm[k] -= step
                grads[:, k] = (self._log_inverse(y, tp) - self._log_inverse(y, tm)) / (2 * step)
            var = var + np.einsum("ij,jk,ik->i", grads, self.cov, grads)
        se = np.sqrt(var)
        return np.exp(lx - z * se), np.exp(lx + z * se)


def _residuals(theta: np.ndarray, x: np.ndarray, y: np.ndarray, w: np.ndarray, model: str) -> np.ndarray:
    a, b, c, d, g = _unpack(theta, model)
    return (y - logistic(x, a, b, c, d, g)) / w


def fit_curve(
    x: np.ndarray, y: np.ndarray, *, model: str = "5pl", floor: float = 1.0, weighting: str = "cv"
) -> CurveFit:
    """Fit a weighted 5PL or 4PL curve (weights ``1 / y**2``; see the module docstring).

    Parameters
    ----------
    x : ndarray
        Concentrations (0 for blanks).
    y : ndarray
        MFIs, one per well (replicates as separate points).
    model : {"5pl", "4pl"}
    floor : float
        Smallest ``y`` used as a weight.
    weighting : {"cv", "none"}
        ``cv``: weights ``1 / y**2`` (constant CV, the bead-assay default); ``none``:
        ordinary least squares (as R's ``drc::drm`` fits ``LL.4``/``LL.5`` by default).

    Returns
    -------
    CurveFit
    """
    from scipy.optimize import least_squares

    if model not in ("5pl", "4pl"):
        msg = f"model must be '5pl' or '4pl', not {model!r}"
        raise ValueError(msg)
    if weighting not in ("cv", "none"):
        msg = f"weighting must be 'cv' or 'none', not {weighting!r}"
        raise ValueError(msg)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y) & (x >= 0)
    x, y = x[ok], y[ok]
    w = np.maximum(np.abs(y), floor) if weighting == "cv" else np.ones_like(y)
    k = 5 if model == "5pl" else 4
    pos = x[x > 0]
    if len(x) < k + 1 or len(pos) < 3:
        nan = np.full(k, np.nan)
        return CurveFit(
            model,
            dict.fromkeys("abcdg", float("nan")),
            nan,
            np.full((k, k), np.nan),
            float("nan"),
            len(x),
            False,  # noqa: FBT003 - dataclass field, positional
            float("nan"),
            "too few points to fit",
        )
    lo_x, hi_x = math.log(pos.min()), math.log(pos.max())
    mid = 0.5 * (y.min() + y.max())
    c0 = float(np.exp(np.interp(mid, np.sort(y[x > 0]), np.log(pos[np.argsort(y[x > 0])]))))
    lower = [-np.inf, -np.inf, lo_x - 10, 0.05] + ([math.log(0.05)] if k == 5 else [])
    upper = [np.inf, np.inf, hi_x + 10, 20.0] + ([math.log(20.0)] if k == 5 else [])
    starts = (0.5, 1.0, 2.0) if k == 5 else (1.0,)
    best = None
    for g0 in starts:
        # a (the response at zero) starts at the low end for a rising curve, the high end for a falling one
        rising = np.corrcoef(np.log(pos), y[x > 0])[0, 1] >= 0 if len(pos) > 1 and np.ptp(y) > 0 else True
        lo_y, hi_y = float(y.min()) * 0.95, float(y.max()) * 1.05
        t0 = [lo_y, hi_y, math.log(c0), 1.0] if rising else [hi_y, lo_y, math.log(c0), 1.0]
        if k == 5:
            t0.append(math.log(g0))
        t0 = np.clip(t0, np.array(lower) + 1e-9, np.array(upper) - 1e-9)
        res = least_squares(
            _residuals,
            t0,
            args=(x, y, w, model),
            bounds=(lower, upper),
            method="trf",
            x_scale="jac",
            xtol=1e-12,
            ftol=1e-12,
            gtol=1e-12,
            max_nfev=5000,
        )
        if best is None or res.cost < best.cost:
            best = res
    assert best is not None
    dof = max(len(x) - k, 1)
    s = math.sqrt(2 * best.cost / dof)
    jac = best.jac
    try:
        cov = np.linalg.inv(jac.T @ jac) * s * s
    except np.linalg.LinAlgError:
        cov = np.full((k, k), np.nan)
    a, b, c, d, g = _unpack(best.x, model)
    yhat = logistic(x, a, b, c, d, g)
    m = (y > 0) & (yhat > 0)
    ly, lf = np.log10(y[m]), np.log10(yhat[m])
    ss_tot = float(((ly - ly.mean()) ** 2).sum())
    r2 = 1.0 - float(((ly - lf) ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")
    return CurveFit(
        model,
        {"a": a, "b": b, "c": c, "d": d, "g": g},
        best.x.copy(),
        cov,
        s,
        len(x),
        bool(best.success),
        r2,
        str(best.message),
    )


def quantifiable_range(
    conc: np.ndarray,
    recovery: np.ndarray,
    cv: np.ndarray,
    *,
    recovery_limits: tuple[float, float] = (80.0, 120.0),
    max_cv: float = 20.0,
    min_levels: int = 3,
) -> tuple[float, float, np.ndarray]:
    """LLOQ and ULOQ from standard recovery and replicate CV.

    Parameters
    ----------
    conc : ndarray
        Nominal concentration per standard level.
    recovery : ndarray
        Back-calculated / nominal * 100 per level (NaN: not back-calculable).
    cv : ndarray
        Replicate CV (%) of the level's MFI (NaN for a single well: not held against it).
    recovery_limits, max_cv, min_levels

    Returns
    -------
    lloq, uloq : float
        NaN when no run of ``min_levels`` passing levels exists.
    passing : ndarray of bool
        Per level (in the input order), whether it passes.
    """
    conc = np.asarray(conc, dtype=float)
    rec = np.asarray(recovery, dtype=float)
    cvs = np.asarray(cv, dtype=float)
    passing = (rec >= recovery_limits[0]) & (rec <= recovery_limits[1]) & ~(cvs >= max_cv)
    order = np.argsort(conc)
    best_len, best = 0, (0, -1)
    run_start = None
    for i, o in enumerate([*order, -1]):
        good = o >= 0 and bool(passing[o])
        if good and run_start is None:
            run_start = i
        if not good and run_start is not None:
            if i - run_start > best_len:
                best_len, best = i - run_start, (run_start, i - 1)
            run_start = None
    if best_len < min_levels:
        return float("nan"), float("nan"), passing
    return float(conc[order[best[0]]]), float(conc[order[best[1]]]), passing


def back_calculate(
    fit: CurveFit, mfi: float, *, lloq: float, uloq: float, dilution: float = 1.0, n_rep: int = 1
) -> dict[str, Any]:
    """Back-calculate one sample; censor outside LLOQ-ULOQ (never extrapolated).

    Parameters
    ----------
    fit : CurveFit
    mfi : float
    lloq, uloq : float
        The quantifiable range in assay (well) units.
    dilution : float
        Multiplies the result (and the limits) to give sample units.
    n_rep : int
        Wells averaged into ``mfi`` (for the interval).

    Returns
    -------
    dict
        ``concentration`` (NaN unless within range), ``low``, ``high`` (95% interval),
        ``flag`` (``ok``, ``<LLOQ``, ``>ULOQ``, ``no_mfi``, ``no_range``) and ``limit``
        (the limit crossed, in sample units; NaN otherwise).
    """
    nan = float("nan")
    out = {"concentration": nan, "low": nan, "high": nan, "flag": "ok", "limit": nan}
    if not math.isfinite(mfi):
        out["flag"] = "no_mfi"
        return out
    if not (math.isfinite(lloq) and math.isfinite(uloq)):
        out["flag"] = "no_range"
        return out
    y_lo, y_hi = (float(v) for v in fit.predict(np.array([lloq, uloq])))
    if mfi < y_lo:
        out.update(flag="<LLOQ", limit=lloq * dilution)
        return out
    if mfi > y_hi:
        out.update(flag=">ULOQ", limit=uloq * dilution)
        return out
    x = float(fit.inverse(np.array([mfi]))[0])
    lo, hi = fit.interval(np.array([mfi]), n_rep=n_rep)
    out.update(concentration=x * dilution, low=float(lo[0]) * dilution, high=float(hi[0]) * dilution)
    return out
