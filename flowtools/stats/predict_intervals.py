"""Intervals of the cross-validated AUCs and gain: a bootstrap over women around the whole nested CV.

See :func:`flowtools.stats.predict.cross_validate_models` for what the
intervals are for, and ``benchmarks/bench_predict_coverage.py`` for their coverage.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from flowtools.stats._predict_models import _auc, _fold_predict

CI_METHODS = ("bootstrap", "delong")
DEFAULT_N_BOOTSTRAP = 200
_CI_TEXT = {
    "bootstrap": "95%: estimate +- 1.96 SD of the mean outer-fold AUC (gain: of the paired difference) over "
    "bootstrap replicates of the whole nested CV (women resampled within outcome class; one repeat per "
    "replicate; folds over distinct women so copies stay in one fold); interval for the expected AUC of "
    "the procedure on new women",
    "delong": "95%: DeLong on repeat-averaged out-of-fold predictions, centred on the estimate (treats the "
    "predictions as fixed: too narrow)",
}


def _grouped_splits(
    ids: np.ndarray, y_rows: np.ndarray, n_folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds over women, not rows: every copy of a resampled woman lands in one fold."""
    from sklearn.model_selection import StratifiedKFold

    u, first, inv = np.unique(ids, return_index=True, return_inverse=True)
    yu = y_rows[first]
    k = max(min(n_folds, int(yu.sum()), int((1 - yu).sum())), 2)
    out = []
    with warnings.catch_warnings():
        # a class with fewer distinct women than folds (tiny cohorts): folds without it score NaN
        warnings.simplefilter("ignore", UserWarning)
        folds = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(u.size), yu))
    for _, te_u in folds:
        test = np.zeros(u.size, dtype=bool)
        test[te_u] = True
        rows = test[inv]
        out.append((np.flatnonzero(~rows), np.flatnonzero(rows)))
    return out


def _bootstrap_cv(
    xs: Mapping[str, np.ndarray],
    y: np.ndarray,
    free: Mapping[str, Sequence[int]],
    *,
    n_splits: int,
    inner_folds: int,
    cs: Sequence[float],
    l1_ratios: Sequence[float],
    n_bootstrap: int,
    seed: int,
    tick: Callable[[], None] | None = None,
) -> np.ndarray:
    """The whole nested CV (one repeat) re-run on women resampled with replacement.

    Women are resampled within each outcome class (the event count is kept);
    outer and inner folds are drawn over the distinct women of the resample, so
    the copies of a woman are never split between training and test (which
    would inflate the AUC). Returns the mean outer-fold AUC of each model in
    each replicate, shape ``(n_bootstrap, len(xs))``, in the order of ``xs``.
    """
    names = list(xs)
    rng = np.random.default_rng([int(seed), 22])
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    out = np.full((n_bootstrap, len(names)), np.nan)
    for b in range(n_bootstrap):
        while True:  # redraw the rare resample with a single distinct woman in a class (tiny cohorts)
            draw = rng.choice(pos, pos.size), rng.choice(neg, neg.size)
            if min(np.unique(d).size for d in draw) >= 2:
                break
        idx = np.concatenate(draw)
        yb = y[idx]
        fold_seed = int(rng.integers(2**31 - 1))
        xb = {m: xs[m][idx] for m in names}
        aucs = []
        for f, (tr, te) in enumerate(_grouped_splits(idx, yb, n_splits, fold_seed)):
            inner = _grouped_splits(idx[tr], yb[tr], inner_folds, fold_seed + 1 + f)
            row = []
            for m in names:
                x = xb[m]
                p = _fold_predict(x[tr], yb[tr], x[te], inner, cs, l1_ratios, fold_seed + f, free[m])
                row.append(_auc(yb[te], p))
            aucs.append(row)
        out[b] = np.nanmean(np.asarray(aucs), axis=0)
        if tick is not None:
            tick()
    return out
