"""The first pregnancy's outcome as competing events: cause-specific Cox hazards and cumulative incidence.

Outcome ``first_pregnancy`` of :func:`~flowtools.stats.survival_outcomes.derive_outcomes`:
the first pregnancy after recruitment ends in a live birth (cause 1) or a loss
or stillbirth (cause 2) at ``fp_months``; 0 = censored. One Cox model per cause
(the cause-specific hazard: the other cause's events are censored at their
time, which is what each cause's partial likelihood is; Efron ties, the ridge
of :func:`~flowtools.stats._cox.cox_ridge`, equal to
``lifelines.CoxPHFitter(penalizer=...)`` on that cause's data), Breslow
baseline hazard increments ``dH_k(s) = d_k(s) / sum_{T_j >= s} exp(z_j b_k)``,
and the cumulative incidence of live birth by the product-integral
(Aalen-Johansen-type) combination of both

    ``F_1(t | z) = sum_{s <= t} S(s- | z) dH_1(s) exp(z b_1)``,
    ``S(s | z) = prod_{u <= s} (1 - dH_1(u) exp(z b_1) - dH_2(u) exp(z b_2))``

(each factor clipped to [0, 1]). With no covariates this is exactly the
Aalen-Johansen estimator (tested against ``lifelines.AalenJohansenFitter``).
A woman at high hazard of loss has a lower probability of a live birth from her
first pregnancy even at the same live-birth hazard: that is what the
combination adds over ``1 - exp(-H_1)``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flowtools.provenance import atomic_write_text, provenance_record
from flowtools.stats._cox import _fit_one, _prep, cox_ridge
from flowtools.stats._cox_tuning import _tuned_fit

__all__ = [
    "CAUSES",
    "CompetingRiskModel",
    "bootstrap_refits",
    "cif_from_hazards",
    "fit_cause_specific",
    "fit_competing_model",
    "json_value",
    "prediction_table",
    "standardize",
    "write_model_json",
]

CAUSES = (1, 2)  # 1 = live birth, 2 = loss or stillbirth (fp_event of derive_outcomes)
_FORMAT = "flowtools-competing-model/1"


def _jumps(z: np.ndarray, t: np.ndarray, ev: np.ndarray, betas: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Breslow baseline hazard increments of each cause at the times ``grid``, shape (len(grid), n_causes).

    A grid time without an event of a cause gets 0 (a bootstrap resample on its training women's grid).
    """
    order = np.argsort(t, kind="stable")
    ts = t[order]
    pos = np.searchsorted(ts, grid, side="left")  # first woman with T >= s: the risk set
    out = np.zeros((grid.size, len(betas)))
    for k, b in enumerate(betas):
        r = np.exp(z @ b)[order]
        tail = np.r_[np.cumsum(r[::-1])[::-1], 0.0]
        y = tail[pos]
        te = t[ev == CAUSES[k]]
        gi = np.searchsorted(grid, te)
        ok = gi < grid.size
        ok[ok] = grid[gi[ok]] == te[ok]
        d = np.bincount(gi[ok], minlength=grid.size).astype(float)
        out[:, k] = np.where(y > 0, d / np.where(y > 0, y, 1.0), 0.0)
    return out


def cif_from_hazards(
    grid: np.ndarray, dh0: np.ndarray, lp: np.ndarray, horizons: Sequence[float], *, cause: int = 1
) -> np.ndarray:
    """Cumulative incidence of ``cause`` at ``horizons`` from cause-specific hazards (product integral).

    Parameters
    ----------
    grid : ndarray, shape (m,)
        Increasing event times.
    dh0 : ndarray, shape (m, n_causes)
        Baseline hazard increments of each cause at ``grid``.
    lp : ndarray, shape (n, n_causes)
        Each woman's linear predictor of each cause.
    horizons : sequence of float
    cause : int, default 1

    Returns
    -------
    ndarray, shape (n, len(horizons))
    """
    dh = dh0[None, :, :] * np.exp(lp)[:, None, :]
    s = np.cumprod(np.clip(1.0 - dh.sum(2), 0.0, 1.0), axis=1)
    s_prev = np.hstack([np.ones((s.shape[0], 1)), s[:, :-1]])
    f = np.cumsum(s_prev * dh[:, :, CAUSES.index(cause)], axis=1)
    idx = np.searchsorted(grid, np.asarray(horizons, float), side="right") - 1
    f = np.hstack([np.zeros((f.shape[0], 1)), f])
    return f[:, idx + 1]


def _cif_cv(
    z_tr: np.ndarray,
    t_tr: np.ndarray,
    ev_tr: np.ndarray,
    betas: np.ndarray,
    z_te: np.ndarray,
    horizons: Sequence[float],
) -> np.ndarray:
    """Predicted cumulative incidence of live birth of the test women (the CV's prediction step)."""
    grid = np.unique(t_tr[ev_tr > 0])
    dh0 = _jumps(z_tr, t_tr, ev_tr, betas, grid)
    return cif_from_hazards(grid, dh0, z_te @ betas.T, horizons)


def standardize(model: Any, features: pd.DataFrame) -> np.ndarray:
    """``model``'s feature columns of ``features``, NaN as the training median, standardised.

    ``model`` holds ``features`` (names), ``median``, ``mean`` and ``sd`` (a survival or
    competing-risk model); the result times the coefficients is the linear predictor.
    """
    missing = [f for f in model.features if f not in features.columns]
    if missing:
        msg = f"the features lack the model's columns {missing}"
        raise ValueError(msg)
    x = features[list(model.features)].to_numpy(float)
    x = np.where(np.isnan(x), model.median, x)
    return (x - model.mean) / model.sd


@dataclass(frozen=True)
class CompetingRiskModel:
    """Cause-specific Cox models of the first pregnancy's outcome, for the probability of live birth.

    Attributes
    ----------
    outcome, model, transform : str
    features : tuple of str
    median, mean, sd : ndarray
        Imputation and standardisation of the training women.
    betas : ndarray, shape (2, p)
        Coefficients of each cause (live birth, loss) on the standardised features.
    grid : ndarray
        The training women's event times (any cause) up to the last horizon.
    dh0 : ndarray, shape (len(grid), 2)
        Breslow baseline hazard increments of each cause.
    horizons : tuple of float
    boot_betas, boot_dh0 : ndarray
        Bootstrap refits (penalties fixed), for the interval; empty without.
    penalizers : tuple of float
        The ridge penalty of each cause's immune and clinical columns.
    n_train, n_events, n_competing : int
    provenance : dict
    """

    outcome: str
    model: str
    transform: str
    features: tuple[str, ...]
    median: np.ndarray
    mean: np.ndarray
    sd: np.ndarray
    betas: np.ndarray
    grid: np.ndarray
    dh0: np.ndarray
    horizons: tuple[float, ...]
    boot_betas: np.ndarray
    boot_dh0: np.ndarray
    penalizers: tuple[float, ...]
    n_train: int
    n_events: int
    n_competing: int
    provenance: dict[str, Any]

    @property
    def coef_(self) -> pd.DataFrame:
        """Coefficients per unit of each raw feature (rows: features; columns: the causes), as lifelines'."""
        return pd.DataFrame(
            (self.betas / self.sd).T, index=list(self.features), columns=["live_birth", "loss"]
        )

    def standardized(self, features: pd.DataFrame) -> np.ndarray:
        """The model's features, gaps filled with the training medians, standardised (:func:`standardize`)."""
        return standardize(self, features)

    def cif(self, features: pd.DataFrame, horizons: Sequence[float] | None = None) -> np.ndarray:
        """Cumulative incidence of live birth from the first pregnancy, shape (n, len(horizons))."""
        hz = self.horizons if horizons is None else tuple(float(h) for h in horizons)
        return cif_from_hazards(self.grid, self.dh0, self.standardized(features) @ self.betas.T, hz)

    def apply(self, features: pd.DataFrame, *, level: float = 0.95) -> pd.DataFrame:
        """Probability that the first pregnancy ends in a live birth by each horizon, with an interval.

        Returns
        -------
        pandas.DataFrame
            woman_id, and per horizon ``p_<h>``, ``p_<h>_low``, ``p_<h>_high``.
        """
        z = self.standardized(features)
        p = cif_from_hazards(self.grid, self.dh0, z @ self.betas.T, self.horizons)
        bp = (
            np.stack(
                [
                    cif_from_hazards(self.grid, dh, z @ b.T, self.horizons)
                    for b, dh in zip(self.boot_betas, self.boot_dh0, strict=True)
                ]
            )
            if len(self.boot_betas)
            else p[None]
        )
        return prediction_table(features.index, self.horizons, p, bp, level)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model as JSON (no pickle)."""
        return write_model_json(
            self,
            path,
            _FORMAT,
            scalars=("outcome", "model", "transform", "n_train", "n_events", "n_competing", "provenance"),
            tuples=("features", "horizons", "penalizers"),
            arrays=("median", "mean", "sd", "betas", "grid", "dh0", "boot_betas", "boot_dh0"),
        )


def json_value(v: Any) -> Any:
    """``json.dumps``' ``default`` for the models' and evaluations' files: numpy numbers as numbers.

    A numpy scalar (e.g. a provenance count) becomes its Python number, an array a list; anything
    else its ``str``.
    """
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def prediction_table(
    women: pd.Index, horizons: Sequence[float], p: np.ndarray, boot: np.ndarray, level: float
) -> pd.DataFrame:
    """woman_id, and per horizon ``h``: ``p_<h>`` and the bootstrap percentile interval ``p_<h>_low/_high``.

    ``p``: (n_women, n_horizons); ``boot``: the refits' probabilities, (n_refits, n_women, n_horizons).
    Shared by both survival models' ``apply``.
    """
    a = (1 - level) / 2
    out = pd.DataFrame({"woman_id": women.astype(str)})
    for j, h in enumerate(horizons):
        out[f"p_{h:g}"] = p[:, j]
        out[f"p_{h:g}_low"] = np.quantile(boot[:, :, j], a, axis=0)
        out[f"p_{h:g}_high"] = np.quantile(boot[:, :, j], 1 - a, axis=0)
    return out


def bootstrap_refits(
    n: int, n_bootstrap: int, rng: np.random.Generator, refit: Callable[[np.ndarray], Any], *,
    outcome: str, n_events: int,
) -> tuple[list[Any], list[Any]]:
    """Up to ``n_bootstrap`` accepted refits on resamples of ``n`` women (from ``20 * n_bootstrap`` draws).

    ``refit(idx)`` fits one resample (row indices drawn with replacement) and returns its
    result, a pair (coefficients, baseline), or None to reject it (too few events, no
    convergence): another resample is drawn. Returns the accepted coefficients and baselines;
    ValueError naming ``outcome`` and the ``n`` women's ``n_events`` events when none is. Shared by
    :func:`fit_competing_model` and the single-outcome survival model.
    """
    out: list[Any] = []
    for _ in range(20 * n_bootstrap):
        if len(out) >= n_bootstrap:
            break
        r = refit(rng.integers(0, n, n))
        if r is not None:
            out.append(r)
    if not out:
        msg = f"{outcome}: no bootstrap refit converged ({n} women, {n_events} events)"
        raise ValueError(msg)
    return [r[0] for r in out], [r[1] for r in out]


def write_model_json(
    model: Any,
    path: str | os.PathLike[str],
    fmt: str,
    *,
    scalars: Sequence[str],
    tuples: Sequence[str],
    arrays: Sequence[str],
) -> Path:
    """A fitted survival model's fields as one JSON file (atomically; no pickle), ``format`` first.

    Shared by :class:`CompetingRiskModel` and :class:`~flowtools.stats.survival_model.SurvivalModel`.
    """
    body = {
        "format": fmt,
        **{k: getattr(model, k) for k in scalars},
        **{k: list(getattr(model, k)) for k in tuples},
        **{k: np.asarray(getattr(model, k)).tolist() for k in arrays},
    }
    p = Path(path)
    atomic_write_text(p, json.dumps(body, indent=1, default=json_value) + "\n")
    return p


def _load(body: dict[str, Any]) -> CompetingRiskModel:
    """The model of a parsed JSON body written by :meth:`CompetingRiskModel.save`."""
    p = len(body["features"])
    m = len(body["grid"])
    arr = {k: np.asarray(body[k], float) for k in ("median", "mean", "sd", "betas", "grid", "dh0")}
    return CompetingRiskModel(
        outcome=body["outcome"],
        model=body["model"],
        transform=body["transform"],
        features=tuple(body["features"]),
        horizons=tuple(float(h) for h in body["horizons"]),
        penalizers=tuple(float(x) for x in body["penalizers"]),
        n_train=int(body["n_train"]),
        n_events=int(body["n_events"]),
        n_competing=int(body["n_competing"]),
        provenance=body["provenance"],
        boot_betas=np.asarray(body["boot_betas"], float).reshape(-1, len(CAUSES), p),
        boot_dh0=np.asarray(body["boot_dh0"], float).reshape(-1, m, len(CAUSES)),
        **arr,
    )


def fit_cause_specific(
    x: pd.DataFrame,
    time: np.ndarray,
    event: np.ndarray,
    *,
    penalizer: float | Sequence[float] = 0.0,
    horizons: Sequence[float] = (12.0, 24.0),
) -> CompetingRiskModel:
    """Cause-specific ridge Cox models on all rows (no tuning, no bootstrap).

    Parameters
    ----------
    x : pandas.DataFrame
        Features (index woman_id); missing values take the column median.
    time, event : array-like
        ``event`` codes 0 (censored), 1 (live birth), 2 (loss).
    penalizer : float or (float, float)
        lifelines' ``CoxPHFitter(penalizer=...)`` of each cause (one value: both).

    Returns
    -------
    CompetingRiskModel
        ``coef_`` equals ``CoxPHFitter(penalizer).fit(x, T, E == cause).params_`` for each cause.
    """
    t, ev = np.asarray(time, float), np.asarray(event, float)
    pens = np.broadcast_to(np.asarray(penalizer, float), (len(CAUSES),))
    z, _, stats = _prep(x.to_numpy(float), x.to_numpy(float)[:0])
    if z.shape[1] == 0:  # no covariates: the baseline alone (Aalen-Johansen)
        betas = np.zeros((len(CAUSES), 0))
    else:
        betas = np.array(
            [
                _fit_one(z, t, (ev == c).astype(float), np.full(z.shape[1], pens[k]), "fast")
                for k, c in enumerate(CAUSES)
            ]
        ).reshape(len(CAUSES), z.shape[1])
    hz = tuple(float(h) for h in horizons)
    grid = np.unique(t[(ev > 0) & (t <= max(hz))])
    return CompetingRiskModel(
        outcome="first_pregnancy",
        model="custom",
        transform="none",
        features=tuple(str(c) for c in x.columns),
        median=stats["median"],
        mean=stats["mean"],
        sd=stats["sd"],
        betas=betas,
        grid=grid,
        dh0=_jumps(z, t, ev, betas, grid),
        horizons=hz,
        boot_betas=np.zeros((0, len(CAUSES), z.shape[1])),
        boot_dh0=np.zeros((0, grid.size, len(CAUSES))),
        penalizers=tuple(float(v) for v in pens),
        n_train=int(t.size),
        n_events=int(np.sum(ev == 1)),
        n_competing=int(np.sum(ev == 2)),
        provenance={},
    )


def fit_competing_model(
    x_df: pd.DataFrame,
    t: np.ndarray,
    ev: np.ndarray,
    free: np.ndarray,
    *,
    outcome: str,
    model: str,
    transform: str,
    penalizers: Sequence[float],
    clinical_penalizers: Sequence[float],
    horizons: Sequence[float],
    n_bootstrap: int,
    seed: int,
    libraries: Sequence[str],
) -> CompetingRiskModel:
    """The final model on all women: each cause's penalties by 3-fold inner CV, bootstrap refits.

    Called by :func:`flowtools.stats.survival_model.fit_survival_model` for ``outcome="first_pregnancy"``.
    """
    x = x_df.to_numpy(float)
    betas, pens, lams = [], [], []
    for k, c in enumerate(CAUSES):
        b, stats, lam = _tuned_fit(
            x, t, (ev == c).astype(float), free, penalizers, 3, seed + k, "fast", 0.0, clinical_penalizers
        )
        betas.append(b)
        pens.append(np.where(free, stats["clinical_penalizer"], lam))
        lams += [lam, stats["clinical_penalizer"]]
    betas_a = np.asarray(betas)
    z, _, stats = _prep(x, x[:0])
    hz = [float(h) for h in horizons]
    grid = np.unique(t[(ev > 0) & (t <= max(hz))])
    dh0 = _jumps(z, t, ev, betas_a, grid)
    def refit(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        if min(np.sum(ev[idx] == c) for c in CAUSES) < 2:
            return None
        var1 = z[idx].var(0, ddof=1)
        fits = [
            cox_ridge(z[idx], t[idx], (ev[idx] == c).astype(float), t.size * pens[k] * var1)
            for k, c in enumerate(CAUSES)
        ]
        if not all(ok for _, ok in fits) or max(np.max(np.abs(b)) for b, _ in fits) > 20:
            return None  # a resample with a monotone likelihood: drawn again
        b = np.asarray([f[0] for f in fits])
        return b, _jumps(z[idx], t[idx], ev[idx], b, grid)

    bb, bh = bootstrap_refits(t.size, n_bootstrap, np.random.default_rng([int(seed), 193]), refit,
                              outcome=outcome, n_events=int(np.sum(ev > 0)))
    prov = provenance_record(
        parameters={
            "outcome": outcome,
            "model": model,
            "transform": transform,
            "penalizers_live_birth_loss": lams,
            "n_bootstrap": n_bootstrap,
            "horizons": hz,
        },
        seed=seed,
        command="flowtools survival fit",
        libraries=libraries,
    )
    return CompetingRiskModel(
        outcome=outcome,
        model=model,
        transform=transform,
        features=tuple(x_df.columns),
        median=stats["median"],
        mean=stats["mean"],
        sd=stats["sd"],
        betas=betas_a,
        grid=grid,
        dh0=dh0,
        horizons=tuple(hz),
        boot_betas=np.asarray(bb).reshape(-1, len(CAUSES), x.shape[1]),
        boot_dh0=np.asarray(bh).reshape(-1, grid.size, len(CAUSES)),
        penalizers=tuple(float(v) for v in lams),
        n_train=int(t.size),
        n_events=int(np.sum(ev == 1)),
        n_competing=int(np.sum(ev == 2)),
        provenance=prov,
    )
