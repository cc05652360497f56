"""The final Cox model on all women, saved as JSON, and a new woman's probability of live birth."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from flowtools.provenance import provenance_record
from flowtools.stats._cox import _breslow_h0, _prep, cox_ridge
from flowtools.stats._cox_tuning import (
    CLINICAL_PENALIZERS,
    DEFAULT_PENALIZERS,
    _tuned_fit,
)
from flowtools.stats.survival_competing import _FORMAT as _CR_FORMAT
from flowtools.stats.survival_competing import (
    CompetingRiskModel,
    bootstrap_refits,
    fit_competing_model,
    prediction_table,
    standardize,
    write_model_json,
)
from flowtools.stats.survival_competing import _load as _load_competing
from flowtools.stats.survival_cv import (
    _LIBRARIES,
    HORIZONS,
    _frames,
)
from flowtools.stats.survival_outcomes import CLINICAL_FEATURES, COMPETING_OUTCOMES, clinical_features

if TYPE_CHECKING:
    from flowtools.io.clinical_db import FollowupDB

__all__ = [
    "LIVE_BIRTH_OUTCOMES",
    "SurvivalModel",
    "fit_survival_model",
    "is_survival_model_file",
    "load_survival_model",
    "model_features",
    "predict_live_birth",
]
# the outcomes whose model predicts a probability of live birth
LIVE_BIRTH_OUTCOMES = ("time_to_live_birth", "first_pregnancy")

_FORMAT = "flowtools-survival-model/1"


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

    def standardized(self, features: pd.DataFrame) -> np.ndarray:
        """The model's features, gaps filled with the training medians, standardised.

        ``standardized(features) @ beta`` is the linear predictor (the log relative hazard).
        """
        return standardize(self, features)

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
        z = self.standardized(features)
        p = 1 - np.exp(-np.outer(np.exp(z @ self.beta), self.h0))
        bp = 1 - np.exp(-np.exp(z @ self.boot_beta.T)[:, :, None] * self.boot_h0[None, :, :])
        return prediction_table(features.index, self.horizons, p, bp.transpose(1, 0, 2), level)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model as JSON (no pickle)."""
        return write_model_json(
            self,
            path,
            _FORMAT,
            scalars=("outcome", "model", "transform", "penalizer", "n_train", "n_events", "provenance"),
            tuples=("features", "horizons"),
            arrays=("median", "mean", "sd", "beta", "h0", "boot_beta", "boot_h0"),
        )


def is_survival_model_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a model of :func:`fit_survival_model` (by its ``format``; unreadable: False)."""
    try:
        with open(path, encoding="utf-8") as fh:
            body = json.load(fh)
    except (OSError, ValueError):
        return False
    return isinstance(body, dict) and body.get("format") in (_FORMAT, _CR_FORMAT)


def load_survival_model(path: str | os.PathLike[str]) -> SurvivalModel | CompetingRiskModel:
    """Read a model written by :meth:`SurvivalModel.save` or :meth:`CompetingRiskModel.save`.

    Raises
    ------
    flowtools.stats.errors.ModelFileError
    """
    from flowtools.stats.errors import ModelFileError

    p = Path(path)
    try:
        body = json.loads(p.read_text(encoding="utf-8"))
        if isinstance(body, dict) and body.get("format") == _CR_FORMAT:
            return _load_competing(body)
        if not isinstance(body, dict) or body.get("format") != _FORMAT:
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
) -> SurvivalModel | CompetingRiskModel:
    """Fit the final Cox model on all women (penalty by 3-fold CV) with bootstrap refits for intervals.

    ``outcome="first_pregnancy"`` fits one Cox model per cause (live birth, loss) and returns a
    :class:`~flowtools.stats.survival_competing.CompetingRiskModel` (probability that the first
    pregnancy ends in a live birth by each horizon); the others a :class:`SurvivalModel`.
    """
    blocks, t, e, _ = _frames(counts, db_or_outcomes, outcome, [model], transform)
    x_df = blocks[model]
    x = x_df.to_numpy(float)
    free = np.isin(np.asarray(x_df.columns), CLINICAL_FEATURES)
    if outcome in COMPETING_OUTCOMES:
        return fit_competing_model(
            x_df,
            t,
            e,
            free,
            outcome=outcome,
            model=model,
            transform=transform,
            penalizers=penalizers,
            clinical_penalizers=clinical_penalizers,
            horizons=horizons,
            n_bootstrap=n_bootstrap,
            seed=seed,
            libraries=_LIBRARIES,
        )
    beta, stats, lam = _tuned_fit(x, t, e, free, penalizers, 3, seed, "fast", 0.0, clinical_penalizers)
    z, _, _ = _prep(x, x[:0])
    hz = [float(h) for h in horizons]
    h0 = _breslow_h0(z, t, e, beta, hz)
    pen = np.where(free, stats["clinical_penalizer"], lam)
    def refit(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        if e[idx].sum() < 2:
            return None
        # the bootstrap refit uses the training women's scaling, so its coefficients share beta's units
        var1 = z[idx].var(0, ddof=1)
        b, ok = cox_ridge(z[idx], t[idx], e[idx], t.size * pen * var1)
        if not ok or np.max(np.abs(b)) > 20:  # a resample with a monotone likelihood: drawn again
            return None
        return b, _breslow_h0(z[idx], t[idx], e[idx], b, hz)

    bb, bh = bootstrap_refits(t.size, n_bootstrap, np.random.default_rng([int(seed), 192]), refit,
                              outcome=outcome, n_events=int(e.sum()))
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


def model_features(
    model: SurvivalModel | CompetingRiskModel, counts: pd.DataFrame | None, db: FollowupDB
) -> pd.DataFrame:
    """The feature frame :meth:`SurvivalModel.apply` needs, from a count table and the women table."""
    parts = [clinical_features(db)]
    if counts is not None and any(f not in CLINICAL_FEATURES for f in model.features):
        from flowtools.stats.predict import build_features

        parts.append(build_features(counts, transform=model.transform))
    return pd.concat(parts, axis=1, join="inner")


def predict_live_birth(
    model: SurvivalModel | CompetingRiskModel | str | os.PathLike[str],
    women: FollowupDB | pd.DataFrame,
    counts: pd.DataFrame | None = None,
    *,
    level: float = 0.95,
) -> pd.DataFrame:
    """A new woman's predicted probability of live birth by each of the model's horizons, with an interval.

    Parameters
    ----------
    model : SurvivalModel, CompetingRiskModel or path
        From :func:`fit_survival_model` (or its saved JSON) for ``time_to_live_birth``
        (probability of a live birth by 12/24 months, any pregnancy) or ``first_pregnancy``
        (probability that the first pregnancy after sampling ends in a live birth by then,
        losses as competing events).
    women : FollowupDB or pandas.DataFrame
        The women table of a follow-up database (their episodes are not used), or a
        feature frame already built (index woman_id; :func:`model_features`).
    counts : pandas.DataFrame, optional
        Their count table (:func:`~flowtools.stats.tables_from_gate`); needed by an
        immune model when ``women`` is a database.
    level : float, default 0.95
        Of the bootstrap percentile interval (the model's refits, penalty fixed).

    Returns
    -------
    pandas.DataFrame
        ``woman_id``, and per horizon ``h``: ``p_<h>``, ``p_<h>_low``, ``p_<h>_high``
        (e.g. ``p_12``, ``p_24``); ``attrs`` holds outcome, model and level.

    Raises
    ------
    ValueError
        A model of another outcome (time to pregnancy), or features missing.
    flowtools.stats.errors.ModelFileError
        An unreadable model file.
    """
    m = model if isinstance(model, SurvivalModel | CompetingRiskModel) else load_survival_model(model)
    if m.outcome not in LIVE_BIRTH_OUTCOMES:
        msg = f"the model predicts {m.outcome!r}, not live birth (fit one for {list(LIVE_BIRTH_OUTCOMES)})"
        raise ValueError(msg)
    if not 0.0 < level < 1.0:
        msg = f"level must be in (0, 1), not {level}"
        raise ValueError(msg)
    if isinstance(women, pd.DataFrame):
        feats = women
    else:
        if counts is None and any(f not in CLINICAL_FEATURES for f in m.features):
            msg = f"the {m.model!r} model needs the women's immune counts"
            raise ValueError(msg)
        feats = model_features(m, counts, women)
    out = m.apply(feats, level=level)
    out.attrs.update({"outcome": m.outcome, "model": m.model, "level": level})
    return out
