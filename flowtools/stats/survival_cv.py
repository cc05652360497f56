"""The repeated nested CV of penalised Cox models: outer folds, bootstrap refits (tuning: _cox_tuning)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from flowtools.stats._cox import _breslow_h0, _prep
from flowtools.stats._cox_tuning import (
    _grouped_folds,
    _tuned_fit,
)
from flowtools.stats.survival_competing import CAUSES, _cif_cv
from flowtools.stats.survival_metrics import harrell_c
from flowtools.stats.survival_outcomes import OUTCOMES, clinical_features, derive_outcomes

MODELS = ("clinical", "immune", "clinical + immune")
HORIZONS = (12.0, 24.0)
_LIBRARIES = ("numpy", "scipy", "pandas", "lifelines", "sqlalchemy")
ProgressCallback = Callable[[int, int], None]


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
    competing: bool = False,
) -> tuple[np.ndarray, list[float], list[tuple[float, float]]]:
    """Out-of-fold cumulative incidence (n, n_horizons), per-fold C and chosen penalizers.

    ``groups`` (woman of each row, for bootstrap resamples) keeps a woman's copies in one inner fold.
    ``competing``: ``e`` codes 0/1/2; one tuned Cox model per cause (the other cause censored) and
    the cumulative incidence of cause 1 from both (:mod:`flowtools.stats.survival_competing`); the
    fold C is Wolbers' and the penalizers are those of cause 1.
    """
    from flowtools.stats.survival_metrics import wolbers_c

    pred = np.full((t.size, len(horizons)), np.nan)
    cs, lams = [], []
    for f, (tr, te) in enumerate(folds):
        fits = [
            _tuned_fit(
                x[tr],
                t[tr],
                (e[tr] == c).astype(float) if competing else e[tr],
                free,
                penalizers,
                inner_folds,
                seed + 1 + f + 7919 * k,
                engine,
                l1_ratio,
                clinical_penalizers,
                None if groups is None else groups[tr],
                memo,
            )
            for k, c in enumerate(CAUSES if competing else CAUSES[:1])
        ]
        beta, stats, lam = fits[0]
        z_tr, z_te, _ = _prep(x[tr], x[te])
        if competing:
            betas = np.asarray([b for b, _, _ in fits])
            pred[te] = _cif_cv(z_tr, t[tr], e[tr], betas, z_te, horizons)
            cs.append(wolbers_c(t[te], e[te], pred[te, -1]))
        else:
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
