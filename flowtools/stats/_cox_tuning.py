"""Folds and the inner tuning of the Cox penalties, shared by the single-event and the competing-risk fits.

Kept apart from :mod:`flowtools.stats.survival_cv` (the outer, repeated CV) so that the competing-risk
model can tune its per-cause penalties without importing the CV that evaluates it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from flowtools.stats._cox import _fit_one, _heldout_ll, _prep

CLINICAL_PENALIZER = 0.01
# Ridge grid of the clinical block. Left nearly unpenalised (0.01 only), the 7 clinical features at 200
# women gave an external calibration slope of 0.72 (median, 12 planted cohorts; Riley's criterion asks
# for about 700 women); chosen from this grid by the inner CV, 1.05.
CLINICAL_PENALIZERS = (0.003, 0.01, 0.03, 0.1, 0.3)
# Ridge grid of the immune block (lifelines convention). On planted cohorts of 200 the inner CV chose
# the top of a grid ending at 1.0 every time (external slope 0.67); the grid reaches 30 (immune nearly off).
DEFAULT_PENALIZERS = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)


def _folds(n: int, e: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    # stratified by the event code (0/1, or 0/1/2 with competing events); k capped by the events
    ev = np.asarray(e) > 0
    k = max(2, min(k, int(ev.sum()), int((~ev).sum()) or k, n))
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
