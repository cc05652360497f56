"""Evaluation of the Cox models in repeated nested CV: C-indices, td-AUC, calibration, gain, intervals."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flowtools.provenance import atomic_write_text, provenance_record
from flowtools.stats._cox_tuning import (
    CLINICAL_PENALIZERS,
    DEFAULT_PENALIZERS,
    _folds,
)
from flowtools.stats.survival_competing import json_value
from flowtools.stats.survival_cv import (
    _LIBRARIES,
    HORIZONS,
    MODELS,
    ProgressCallback,
    _bootstrap_cv,
    _cv_predict,
    _frames,
    _nanmean,
)
from flowtools.stats.survival_metrics import _calibration, harrell_c, td_auc, uno_c, wolbers_c
from flowtools.stats.survival_outcomes import CLINICAL_FEATURES, COMPETING_OUTCOMES

__all__ = ["SurvivalEvaluation", "evaluate_survival"]


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
        text = json.dumps(doc, indent=2, default=json_value) + "\n"
        atomic_write_text(out / "survival_evaluation.json", text)
        return [*paths, out / "survival_evaluation.json"]


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
    outcome : {"time_to_live_birth", "time_to_pregnancy", "first_pregnancy"}
        ``first_pregnancy``: the first pregnancy's outcome as competing events
        (live birth vs loss or stillbirth): one Cox model per cause, both
        tuned in the inner folds, and the risk is the predicted cumulative
        incidence of live birth from both (:mod:`~flowtools.stats.survival_competing`).
        Its C is Wolbers' (:func:`~flowtools.stats.survival_metrics.wolbers_c`):
        of two women, is the one whose first pregnancy ends earlier in a live
        birth (or in one at all, where the other's is lost) predicted the
        higher probability of live birth; Uno's C and the AUC use the same
        pairs with censoring weights; calibration observes the Aalen-Johansen
        cumulative incidence.
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
    competing = outcome in COMPETING_OUTCOMES
    for code in (1, 2) if competing else (1,):
        k_ev = int(np.sum(e == code))
        if k_ev < 4:
            what = {1: "events", 2: "competing events"}[code]
            msg = f"{outcome}: only {k_ev} {what}; at least 4 are needed for cross-validation"
            raise ValueError(msg)
    hz = [float(h) for h in horizons]
    kw = {
        "penalizers": penalizers,
        "inner_folds": inner_folds,
        "engine": engine,
        "l1_ratio": l1_ratio,
        "horizons": hz,
        "clinical_penalizers": clinical_penalizers,
        "competing": competing,
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
        if competing:
            # competing events never have the event of interest: time infinity (Wolbers' C); the
            # censoring distribution G from the observed times, any event uncensored (Blanche et al. 2013)
            t_inf = np.where(ee == 2, np.inf, tt)
            e1 = (ee == 1).astype(float)
            g = {"train_time": tt, "train_event": (ee > 0).astype(float)}
            return [wolbers_c(tt, ee, risk), uno_c(t_inf, e1, risk, **g)] + [
                td_auc(t_inf, e1, risk, h, **g) for h in hz
            ]
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
        row["n"], row["n_events"] = int(t.size), int(np.sum(e == 1))
        if competing:
            row["n_competing"] = int(np.sum(e == 2))
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
                null.append(metrics(t, e, p[:, last])[0] - c_base)
                done += 1
                if progress is not None:
                    progress(done, total)
            gain["p_permutation"] = float(
                (1 + np.sum(np.asarray(null) >= obs - 1e-12)) / (1 + n_permutations)
            )
            gain["harrell_c_repeat0"] = float(obs)
    cal = _calibration(t, e, {m: preds[m][0] for m in models}, hz, competing=competing)
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
        "risk_score": f"out-of-fold predicted cumulative incidence at {hz[-1]:g} months"
        + (
            " of live birth from the first pregnancy (cause-specific Cox, Aalen-Johansen-type)"
            if competing
            else ""
        ),
        "c_index": (
            "Wolbers' C: competing events (losses) ranked below every live birth; Harrell's pairs otherwise"
            if competing
            else "Harrell's C"
        ),
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
