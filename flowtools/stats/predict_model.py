"""The final model of :mod:`flowtools.stats.predict`: fit on all women, save, load, apply to new women."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flowtools.provenance import atomic_write_text, provenance_record
from flowtools.stats._predict_features import _STATS_LIBRARIES, _blocks, _task_frames
from flowtools.stats._predict_models import (
    DEFAULT_CS,
    DEFAULT_L1_RATIOS,
    _pipeline,
    _quiet_fit,
    _tuned,
    _unpenalized_idx,
)
from flowtools.stats.errors import ModelFileError, OutOfRangeError

_FORMAT = "flowtools-stats-model/1"


@dataclass(frozen=True)
class FittedModel:
    """A fitted linear-logistic model in raw feature units, with bootstrap refits and training ranges.

    ``logit p = intercept + features @ weights``; the bootstrap sets give the
    interval of a prediction. Learned attributes carry no trailing underscore
    because the object is a frozen record, not an estimator.

    Attributes
    ----------
    task, model, transform : str
    features : tuple of str
        Clinical features first, then immune features.
    intercept : float
    weights : ndarray of float64, shape (n_features,)
    boot_intercepts : ndarray, shape (B,)
    boot_weights : ndarray, shape (B, n_features)
    train_min, train_max : ndarray, shape (n_features,)
    margin : float
        Allowed excursion beyond the training range, as a fraction of it.
    penalty : dict
        The chosen C and l1_ratio.
    n_train, n_events : int
    provenance : dict
    """

    task: str
    model: str
    transform: str
    features: tuple[str, ...]
    intercept: float
    weights: np.ndarray
    boot_intercepts: np.ndarray
    boot_weights: np.ndarray
    train_min: np.ndarray
    train_max: np.ndarray
    margin: float
    penalty: dict[str, float]
    n_train: int
    n_events: int
    provenance: dict[str, Any]


def _raw_linear(pipe: Any) -> tuple[float, np.ndarray]:
    scale = pipe.named_steps["scale"]
    clf = pipe.named_steps["clf"]
    s = np.where(scale.scale_ > 0, scale.scale_, 1.0)
    w = clf.coef_[0] / s
    return float(clf.intercept_[0] - np.sum(w * scale.mean_)), w


def fit_model(
    counts: pd.DataFrame,
    clinical: pd.DataFrame,
    *,
    task: str = "next_loss",
    model: str = "clinical + immune",
    transform: str = "logit",
    missing: str = "error",
    margin: float = 0.1,
    n_bootstrap: int = 200,
    seed: int = 0,
) -> FittedModel:
    """Fit the final model on all women (penalty by CV), with bootstrap refits for intervals.

    The clinical features are not penalised, the immune features are (ridge,
    strength chosen by 3-fold CV on log-loss), as in :func:`evaluate_models`.

    Parameters
    ----------
    counts, clinical : pandas.DataFrame
    task : {"next_loss", "rm_vs_control"}
    model : {"clinical", "immune", "clinical + immune"}
    transform : {"logit", "clr"}
    missing : {"error", "drop", "impute"}
    margin : float, default 0.1
        :func:`apply_model` refuses features beyond the training range by more
        than this fraction of the range.
    n_bootstrap : int, default 200
        Refits on resampled women (penalty fixed) for the prediction interval.
    seed : int

    Returns
    -------
    FittedModel
    """
    xc, imm, y, dropped = _task_frames(
        counts, clinical, task=task, transform=transform, missing=missing, need_outcome=True
    )
    x_df = _blocks(xc, imm, [model])[model]
    x = x_df.to_numpy(float)
    if np.isnan(x).any():
        med = np.nanmedian(x, axis=0)
        x = np.where(np.isnan(x), med, x)
    free = _unpenalized_idx(list(x_df.columns), list(xc.columns))
    grid = _quiet_fit(_tuned(DEFAULT_CS, DEFAULT_L1_RATIOS, 3, seed, free), x, y)
    best = {"C": float(grid.best_params_["clf__C"]), "l1_ratio": float(grid.best_params_["clf__l1_ratio"])}
    b0, w = _raw_linear(grid.best_estimator_)
    rng = np.random.default_rng(seed)
    bi, bw = [], []
    while len(bi) < n_bootstrap:
        idx = rng.integers(0, y.size, y.size)
        if y[idx].min() == y[idx].max():
            continue
        pipe = _quiet_fit(_pipeline(best["C"], best["l1_ratio"], seed, free), x[idx], y[idx])
        a, v = _raw_linear(pipe)
        bi.append(a)
        bw.append(v)
    prov = provenance_record(
        libraries=_STATS_LIBRARIES,
        parameters={
            "task": task,
            "model": model,
            "transform": transform,
            "missing": missing,
            "margin": margin,
            "n_bootstrap": n_bootstrap,
            "penalty": best,
            "unpenalized": [x_df.columns[j] for j in free],
            "dropped_women": sorted(set(dropped)),
        },
        seed=seed,
        command="flowtools predict fit",
    )
    return FittedModel(
        task=task,
        model=model,
        transform=transform,
        features=tuple(x_df.columns),
        intercept=b0,
        weights=w,
        boot_intercepts=np.asarray(bi),
        boot_weights=np.asarray(bw).reshape(-1, w.size),
        train_min=np.nanmin(x_df.to_numpy(float), axis=0),
        train_max=np.nanmax(x_df.to_numpy(float), axis=0),
        margin=float(margin),
        penalty=best,
        n_train=int(y.size),
        n_events=int(y.sum()),
        provenance=prov,
    )


def _body(m: FittedModel) -> dict[str, Any]:
    return {
        "format": _FORMAT,
        "task": m.task,
        "model": m.model,
        "transform": m.transform,
        "features": list(m.features),
        "intercept": m.intercept,
        "weights": m.weights.tolist(),
        "boot_intercepts": m.boot_intercepts.tolist(),
        "boot_weights": m.boot_weights.tolist(),
        "train_min": m.train_min.tolist(),
        "train_max": m.train_max.tolist(),
        "margin": m.margin,
        "penalty": m.penalty,
        "n_train": m.n_train,
        "n_events": m.n_events,
        "provenance": m.provenance,
    }


def save_model(model: FittedModel, path: str | os.PathLike[str]) -> Path:
    """Save a fitted model as JSON (no pickle), with its provenance and a SHA-256 of its content.

    Returns
    -------
    pathlib.Path
    """
    body = _body(model)
    text = json.dumps(body, sort_keys=True)
    doc = {"sha256": hashlib.sha256(text.encode()).hexdigest(), "model": body}
    p = Path(path)
    atomic_write_text(p, json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return p


def load_model(path: str | os.PathLike[str]) -> FittedModel:
    """Load a model written by :func:`save_model`, checking its format and hash.

    Raises
    ------
    ModelFileError
    """
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
        body = doc["model"]
        digest = doc["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        msg = f"{p}: not a flowtools model file ({exc})"
        raise ModelFileError(msg) from None
    if body.get("format") != _FORMAT:
        msg = f"{p}: unknown model format {body.get('format')!r} (expected {_FORMAT})"
        raise ModelFileError(msg)
    if hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest() != digest:
        msg = f"{p}: content does not match its SHA-256 (edited or corrupted)"
        raise ModelFileError(msg)
    arr = {
        k: np.asarray(body[k], dtype=np.float64)
        for k in ("weights", "boot_intercepts", "boot_weights", "train_min", "train_max")
    }
    return FittedModel(
        task=body["task"],
        model=body["model"],
        transform=body["transform"],
        features=tuple(body["features"]),
        intercept=float(body["intercept"]),
        weights=arr["weights"],
        boot_intercepts=arr["boot_intercepts"],
        boot_weights=arr["boot_weights"].reshape(-1, arr["weights"].size),
        train_min=arr["train_min"],
        train_max=arr["train_max"],
        margin=float(body["margin"]),
        penalty=body["penalty"],
        n_train=int(body["n_train"]),
        n_events=int(body["n_events"]),
        provenance=body["provenance"],
    )


def apply_model(
    model: FittedModel,
    counts: pd.DataFrame,
    clinical: pd.DataFrame,
    *,
    refuse: str = "raise",
    level: float = 0.95,
) -> pd.DataFrame:
    """Predict for new women: probability with a bootstrap interval; refuse out-of-range women.

    Parameters
    ----------
    model : FittedModel
    counts, clinical : pandas.DataFrame
        The new women's count table and clinical rows (no outcome needed).
    refuse : {"raise", "mark"}, default "raise"
        ``raise``: :class:`OutOfRangeError` naming every refused woman and
        feature; ``mark``: return them with NaN probability and the reason.
    level : float, default 0.95
        Interval level (percentiles of the bootstrap refits).

    Returns
    -------
    pandas.DataFrame
        woman_id, probability, ci_low, ci_high, refused (empty string when accepted).

    Raises
    ------
    OutOfRangeError
    """
    if refuse not in ("raise", "mark"):
        msg = f"refuse must be 'raise' or 'mark', not {refuse!r}"
        raise ValueError(msg)
    if model.task == "next_loss":
        clinical = clinical.assign(group="RM") if "group" not in clinical else clinical
    xc, imm, _, _ = _task_frames(
        counts, clinical, task=model.task, transform=model.transform, missing="error", need_outcome=False
    )
    full = pd.concat([xc, imm], axis=1)
    x_df = full.reindex(columns=list(model.features))
    x = x_df.to_numpy(float)
    span = model.train_max - model.train_min
    lo, hi = model.train_min - model.margin * span, model.train_max + model.margin * span
    refused: dict[str, list[str]] = {}
    for i, wid in enumerate(x_df.index):
        reasons = []
        for j, f in enumerate(model.features):
            v = x[i, j]
            if np.isnan(v):
                reasons.append(f"{f} is missing")
            elif v < lo[j] or v > hi[j]:
                reasons.append(
                    f"{f} = {v:.3g} outside the training range {model.train_min[j]:.3g}.."
                    f"{model.train_max[j]:.3g} (+/- {model.margin:.0%} margin)"
                )
        if reasons:
            refused[str(wid)] = reasons
    if refused and refuse == "raise":
        raise OutOfRangeError(refused)
    with np.errstate(invalid="ignore"):
        eta = model.intercept + x @ model.weights
        boot = model.boot_intercepts[:, None] + model.boot_weights @ x.T
    prob = 1 / (1 + np.exp(-eta))
    bp = 1 / (1 + np.exp(-boot))
    a = (1 - level) / 2
    out = pd.DataFrame(
        {
            "woman_id": x_df.index.astype(str),
            "probability": prob,
            "ci_low": np.quantile(bp, a, axis=0),
            "ci_high": np.quantile(bp, 1 - a, axis=0),
        }
    )
    out["refused"] = ["; ".join(refused.get(w, [])) for w in out["woman_id"]]
    bad = out["refused"] != ""
    out.loc[bad, ["probability", "ci_low", "ci_high"]] = np.nan
    return out
