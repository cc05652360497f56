"""Repeated nested cross-validation of several feature sets (:func:`cross_validate_models`)."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize as _opt
from scipy import stats as _st

from flowtools.provenance import atomic_write_text, provenance_record
from flowtools.stats._glm import delong, quasi_binomial
from flowtools.stats._predict_features import _STATS_LIBRARIES
from flowtools.stats._predict_models import (
    DEFAULT_CS,
    DEFAULT_L1_RATIOS,
    _auc,
    _fold_predict,
    _inner_splits,
    _unpenalized_idx,
)
from flowtools.stats.errors import LeakageWarning
from flowtools.stats.predict_intervals import _CI_TEXT, CI_METHODS, DEFAULT_N_BOOTSTRAP, _bootstrap_cv

_HONEST_AUC_WARNING = 0.80

ProgressCallback = Callable[[int, int], None]


@dataclass
class Evaluation:
    """Result of :func:`evaluate_models` / :func:`cross_validate_models`.

    Attributes
    ----------
    task : str
    auc : pandas.DataFrame
        One row per model: model, auc (mean over outer folds and repeats),
        ci_low, ci_high (95%, by ``ci_method``: ``bootstrap`` around the whole
        nested CV by default, or ``delong``; see :func:`cross_validate_models`),
        se (the standard error the interval uses), ci_width, ci_method,
        ci_low_delong, ci_high_delong (DeLong on repeat-averaged out-of-fold
        predictions, always, for comparison), auc_pooled (AUC of those
        predictions), sd_folds, sd_repeats (SD of the per-repeat mean AUC),
        brier, calibration_intercept, calibration_slope, n, n_events.
        Brier and calibration are computed per repeat on its stacked out-of-fold
        predictions (slope: logistic regression of the outcome on their logit;
        intercept: with that slope fixed at 1) and averaged over repeats.
    gain : dict
        ``baseline``, ``augmented``, ``estimate`` (AUC gain), ``ci_low``,
        ``ci_high`` (by ``ci_method``: bootstrap of the paired difference, or
        paired DeLong), ``se``, ``ci_method``, ``ci_low_delong``,
        ``ci_high_delong``, ``sd_repeats``, ``p_permutation``, ``n_permutations``.
    calibration_curve : pandas.DataFrame
        model, bin, mean_predicted, observed, n (quantile bins).
    predictions : pandas.DataFrame
        woman_id, y, and the repeat-averaged out-of-fold probability of each model.
    parameters : dict
    warnings : list of str
    bootstrap : pandas.DataFrame
        One row per bootstrap replicate, one column per model: the mean
        outer-fold AUC of the nested CV re-run on that resample (empty with
        ``ci="delong"``); not written by :meth:`to_files`.
    """

    task: str
    auc: pd.DataFrame
    gain: dict[str, Any]
    calibration_curve: pd.DataFrame
    predictions: pd.DataFrame
    parameters: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    bootstrap: pd.DataFrame = field(default_factory=pd.DataFrame)

    def to_files(
        self, out_dir: str | os.PathLike[str], *, inputs: Mapping[str, str | os.PathLike[str]] | None = None
    ) -> list[Path]:
        """Write the evaluation tables (csv + parquet) and ``evaluation.json``.

        Tables: ``evaluation_auc``, ``evaluation_calibration``, ``evaluation_predictions``;
        ``evaluation.json`` holds the gain, warnings, parameters and provenance.
        """
        from flowtools.io.tables import write_table

        out = Path(out_dir)
        prov = provenance_record(
            inputs=inputs,
            parameters=self.parameters,
            seed=self.parameters.get("seed"),
            command="flowtools predict evaluate",
            libraries=_STATS_LIBRARIES,
        )
        paths = []
        for table, stem in (
            (self.auc, "evaluation_auc"),
            (self.calibration_curve, "evaluation_calibration"),
            (self.predictions.reset_index(drop=True), "evaluation_predictions"),
        ):
            paths += write_table(table, out / stem, prov, provenance_file=True)[:2]
        doc = {
            "task": self.task,
            "auc": self.auc.to_dict(orient="records"),
            "gain": self.gain,
            "warnings": self.warnings,
            "provenance": prov,
        }
        atomic_write_text(out / "evaluation.json", json.dumps(doc, indent=2, default=float) + "\n")
        return [*paths, out / "evaluation.json"]


def _calibration(y: np.ndarray, p: np.ndarray) -> tuple[float, float, float]:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    lp = np.log(p / (1 - p))
    slope = float(
        quasi_binomial(np.column_stack([np.ones_like(lp), lp]), y.astype(float), np.ones_like(lp)).params[1]
    )

    def score(a: float) -> float:
        return float(np.sum(y - 1 / (1 + np.exp(-(a + lp)))))

    try:
        intercept = float(_opt.brentq(score, -20, 20))
    except ValueError:
        intercept = float("nan")
    brier = float(np.mean((p - y) ** 2))
    return intercept, slope, brier


def cross_validate_models(
    blocks: Mapping[str, pd.DataFrame],
    y: np.ndarray,
    *,
    task: str = "custom",
    baseline: str | None = "clinical",
    augmented: str | None = "clinical + immune",
    permute: Sequence[str] = (),
    n_splits: int = 5,
    n_repeats: int = 5,
    inner_folds: int = 3,
    cs: Sequence[float] = DEFAULT_CS,
    l1_ratios: Sequence[float] = DEFAULT_L1_RATIOS,
    unpenalized: Sequence[str] = (),
    n_permutations: int = 0,
    permutation_repeats: int = 1,
    ci: str = "bootstrap",
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    n_bins: int = 5,
    seed: int = 0,
    progress: ProgressCallback | None = None,
) -> Evaluation:
    """Repeated nested cross-validation of several feature sets on the same folds.

    Parameters
    ----------
    blocks : mapping of str to pandas.DataFrame
        Model name -> feature frame (rows: women, same order for every block).
        Missing values (NaN) are imputed inside each training fold (median).
    y : ndarray of {0, 1}, shape (n,)
    task : str
        Label stored with the result.
    baseline, augmented : str or None
        The two models whose AUC difference (augmented - baseline) is the gain.
    permute : sequence of str
        Columns of the augmented block that the permutation test shuffles
        together across women (the immune features).
    n_splits, n_repeats : int, default 5, 5
        Outer stratified folds and repeats.
    inner_folds : int, default 3
        Inner stratified folds choosing the penalty (``cs`` x ``l1_ratios``).
    cs, l1_ratios : sequence of float
        Penalty grid (inverse strength, elastic-net mixing).
    unpenalized : sequence of str, default ()
        Columns left unpenalised in every block that has them (the clinical
        features in :func:`evaluate_models`).
    n_permutations : int, default 0
        Permutations of the gain test (each re-runs ``permutation_repeats``
        repeats of the nested CV of the augmented model).
    ci : {"bootstrap", "delong"}, default "bootstrap"
        The 95% intervals of the AUCs and of the gain (see Notes).
    n_bootstrap : int, default 200
        Bootstrap replicates of the whole nested CV (``ci="bootstrap"``).
    n_bins : int
        Quantile bins of the calibration curve.
    seed : int
    progress : callable(done, total), optional

    Returns
    -------
    Evaluation

    Notes
    -----
    What the interval is for: the AUC (and the gain) that this modelling
    procedure reaches on new women from the same population, trained on a cohort
    of this size -- the expected AUC of the procedure, which is what a
    cross-validated AUC estimates (Bates, Hastie & Tibshirani, JASA 2023), not the
    AUC of the one model fitted on these women.

    ``ci="bootstrap"`` (default): women are resampled with replacement (within
    outcome class) and the whole nested CV is re-run on each resample (one
    repeat; outer and inner folds drawn over the distinct women, so copies of a
    woman never sit on both sides of a split); the interval is the estimate
    +- 1.96 bootstrap standard deviations of the replicates' mean outer-fold
    AUC (of the paired difference for the gain). It carries the variability of
    the CV procedure itself: training sets, penalty choice, correlated folds.
    Its coverage of the AUC and gain measured on independent women is measured by
    ``benchmarks/bench_predict_coverage.py`` (the README gives the figures).
    ``ci="delong"``: DeLong on the repeat-averaged out-of-fold predictions,
    which treats them as fixed predictions and is too narrow (on null cohorts of
    120 women the immune model's interval covered 0.5 in about 82% of cohorts;
    ``benchmarks/bench_predict_coverage.py``). The DeLong bounds are reported
    beside the bootstrap ones in either case (``ci_low_delong``, ``ci_high_delong``).

    The calibration slope is that of each repeat's stacked out-of-fold
    predictions, averaged over repeats. On small cohorts with weak signal it is
    both noisy and biased low as an estimate of the slope the same fold models
    reach on new women: pooling folds mixes coefficient vectors that are
    smaller exactly where the held-out fold carries more signal. A uniform
    shrinkage of the linear predictor (heuristic or inner-CV factor) raises
    this number but over-shrinks the fitted model on independent data
    (``benchmarks/bench_stats_validity.py``, external check), so none is applied.
    """
    from sklearn.model_selection import RepeatedStratifiedKFold

    if ci not in CI_METHODS:
        msg = f"ci must be one of {CI_METHODS}, not {ci!r}"
        raise ValueError(msg)
    if ci == "bootstrap" and n_bootstrap < 2:
        msg = f"n_bootstrap must be at least 2 for ci='bootstrap', not {n_bootstrap}"
        raise ValueError(msg)
    y = np.asarray(y).astype(int)
    names = list(blocks)
    xs = {m: blocks[m].to_numpy(float) for m in names}
    free = {m: _unpenalized_idx(list(blocks[m].columns), unpenalized) for m in names}
    n = y.size
    n_events = int(y.sum())
    k = min(n_splits, n_events, n - n_events)
    if k < 2:
        msg = f"too few events for cross-validation: {n_events} of {n} (need at least 2 in each class)"
        raise ValueError(msg)
    outer = RepeatedStratifiedKFold(n_splits=k, n_repeats=n_repeats, random_state=seed)
    splits = list(outer.split(np.zeros(n), y))
    oof = {m: np.full((n_repeats, n), np.nan) for m in names}
    fold_auc = {m: [] for m in names}
    n_boot = n_bootstrap if ci == "bootstrap" else 0
    n_sp = min(permutation_repeats * k, len(splits))
    # progress counts fits of one model on one outer fold
    total = len(names) * (len(splits) + n_boot * k) + (n_permutations * n_sp if augmented in names else 0)
    done = 0

    def tick(units: int = 1) -> None:
        nonlocal done
        done = min(done + units, total)
        if progress is not None:
            progress(done, total)

    inner_of = [_inner_splits(y[tr], inner_folds, seed + i) for i, (tr, _) in enumerate(splits)]
    for i, (tr, te) in enumerate(splits):
        r = i // k
        for m in names:
            p = _fold_predict(xs[m][tr], y[tr], xs[m][te], inner_of[i], cs, l1_ratios, seed + i, free[m])
            oof[m][r, te] = p
            fold_auc[m].append(_auc(y[te], p))
        tick(len(names))
    mean_p = {m: oof[m].mean(axis=0) for m in names}
    aucs_delong, cov = delong(y, np.vstack([mean_p[m] for m in names]))
    z = _st.norm.ppf(0.975)
    boot = np.empty((0, len(names)))
    if n_boot:
        boot = _bootstrap_cv(
            xs,
            y,
            free,
            n_splits=k,
            inner_folds=inner_folds,
            cs=cs,
            l1_ratios=l1_ratios,
            n_bootstrap=n_boot,
            seed=seed,
            tick=lambda: tick(k * len(names)),
        )
    rows = []
    emitted: list[str] = []
    for j, m in enumerate(names):
        est_auc = float(np.nanmean(fold_auc[m]))
        per_repeat = np.nanmean(np.reshape(fold_auc[m], (n_repeats, k)), axis=1)
        se_delong = float(np.sqrt(cov[j, j]))
        se = float(np.nanstd(boot[:, j], ddof=1)) if n_boot else se_delong
        lo, hi = max(0.0, est_auc - z * se), min(1.0, est_auc + z * se)
        # Calibration per repeat, on that repeat's stacked out-of-fold predictions (each from one
        # fitted model, as a deployed model is), then averaged over repeats. Recalibrating the
        # repeat-averaged predictions instead would judge an average of n_repeats models, which
        # nobody deploys (and reads about 0.03 higher on planted cohorts).
        ci_, cs_, b = (
            float(v) for v in np.mean([_calibration(y, oof[m][r]) for r in range(n_repeats)], axis=0)
        )
        rows.append(
            {
                "model": m,
                "auc": est_auc,
                "ci_low": lo,
                "ci_high": hi,
                "se": se,
                "ci_width": hi - lo,
                "ci_method": ci,
                "ci_low_delong": max(0.0, est_auc - z * se_delong),
                "ci_high_delong": min(1.0, est_auc + z * se_delong),
                "auc_pooled": float(aucs_delong[j]),
                "sd_folds": float(np.nanstd(fold_auc[m])),
                "sd_repeats": float(np.std(per_repeat, ddof=1)) if n_repeats > 1 else float("nan"),
                "brier": b,
                "calibration_intercept": ci_,
                "calibration_slope": cs_,
                "n": n,
                "n_events": n_events,
            }
        )
        if est_auc > _HONEST_AUC_WARNING:
            text = (
                f"{m}: honest cross-validated AUC {est_auc:.2f} > {_HONEST_AUC_WARNING:.2f}; real studies "
                "report 0.57-0.72: look for leakage (an outcome proxy among the features) or batch effects"
            )
            emitted.append(text)
            warnings.warn(text, LeakageWarning, stacklevel=2)
    auc_table = pd.DataFrame(rows)
    gain: dict[str, Any] = {"baseline": baseline, "augmented": augmented}
    if baseline in names and augmented in names:
        a, b = names.index(augmented), names.index(baseline)
        g_fold = np.asarray(fold_auc[augmented]) - np.asarray(fold_auc[baseline])
        g = float(np.nanmean(g_fold))
        se_delong = float(np.sqrt(max(cov[a, a] + cov[b, b] - 2 * cov[a, b], 0.0)))
        se = float(np.nanstd(boot[:, a] - boot[:, b], ddof=1)) if n_boot else se_delong
        gain.update(
            {
                "estimate": g,
                "ci_low": float(g - z * se),
                "ci_high": float(g + z * se),
                "se": se,
                "ci_method": ci,
                "ci_low_delong": float(g - z * se_delong),
                "ci_high_delong": float(g + z * se_delong),
                "sd_repeats": float(np.std(np.nanmean(np.reshape(g_fold, (n_repeats, k)), axis=1), ddof=1))
                if n_repeats > 1
                else float("nan"),
            }
        )
        if n_permutations > 0:
            cols = [blocks[augmented].columns.get_loc(c) for c in permute]
            rng = np.random.default_rng(seed)
            obs = float(np.nanmean(g_fold[:n_sp]))
            base = np.asarray(fold_auc[baseline][:n_sp])
            hits = 0
            for _ in range(n_permutations):
                xp = xs[augmented].copy()
                perm = rng.permutation(n)
                xp[:, cols] = xp[perm][:, cols]
                fa = []
                for i, (tr, te) in enumerate(splits[:n_sp]):
                    p = _fold_predict(
                        xp[tr], y[tr], xp[te], inner_of[i], cs, l1_ratios, seed + i, free[augmented]
                    )
                    fa.append(_auc(y[te], p))
                    tick()
                hits += float(np.nanmean(np.asarray(fa) - base)) >= obs
            gain.update(
                {
                    "p_permutation": (1 + hits) / (1 + n_permutations),
                    "n_permutations": n_permutations,
                    "permutation_repeats": permutation_repeats,
                    "gain_on_permutation_folds": obs,
                }
            )
        else:
            gain.update({"p_permutation": None, "n_permutations": 0})
    curves = []
    for m in names:
        p = mean_p[m]
        edges = np.unique(np.quantile(p, np.linspace(0, 1, n_bins + 1)))
        idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(len(edges) - 2, 0))
        for bi in np.unique(idx):
            sel = idx == bi
            curves.append(
                {
                    "model": m,
                    "bin": int(bi),
                    "mean_predicted": float(p[sel].mean()),
                    "observed": float(y[sel].mean()),
                    "n": int(sel.sum()),
                }
            )
    index = next(iter(blocks.values())).index
    preds = pd.DataFrame({"woman_id": np.asarray(index), "y": y, **{m: mean_p[m] for m in names}})
    params = {
        "task": task,
        "n_splits": k,
        "n_repeats": n_repeats,
        "inner_folds": inner_folds,
        "cs": list(cs),
        "l1_ratios": list(l1_ratios),
        "unpenalized": {m: [blocks[m].columns[j] for j in free[m]] for m in names},
        "n_permutations": n_permutations,
        "seed": seed,
        "features": {m: list(blocks[m].columns) for m in names},
        "auc_estimate": "mean of outer-fold AUCs over folds and repeats",
        "ci": ci,
        "n_bootstrap": n_boot,
        "auc_ci": _CI_TEXT[ci],
        "calibration": "logistic recalibration (intercept with the slope fixed at 1; slope) and Brier "
        "of each repeat's stacked out-of-fold predictions, averaged over repeats",
    }
    return Evaluation(
        task=task,
        auc=auc_table,
        gain=gain,
        calibration_curve=pd.DataFrame(curves),
        predictions=preds,
        parameters=params,
        warnings=emitted,
        bootstrap=pd.DataFrame(boot, columns=names),
    )
