"""Time to the next pregnancy and live birth: outcomes from the follow-up database, Cox models, honest CV.

Outcomes (:func:`derive_outcomes`, one row per woman; times in months of
30.4375 days from recruitment)
    ``time_to_live_birth`` (``ttlb_months``, ``ttlb_event``)
        Event: the first live birth after recruitment (``episode_date`` of the
        first ``live_birth`` episode). Censored at ``followup_end`` otherwise
        (loss to follow-up, end of study, a pregnancy still ongoing). Losses
        and stillbirths are not competing events here: a woman may conceive
        again, so they only delay the event. The cumulative incidence is
        ``1 - KM``.
    ``first_pregnancy`` (``fp_months``, ``fp_event``)
        The outcome of the first pregnancy after recruitment, at its end date:
        1 = live birth, 2 = loss or stillbirth (competing events), 0 =
        censored (no pregnancy ended by ``followup_end``; an ongoing pregnancy
        is censored at its last visit). Cumulative incidence of each cause by
        Aalen-Johansen. Modelled (``outcome="first_pregnancy"`` of
        :func:`evaluate_survival` / :func:`fit_survival_model`) by one Cox
        model per cause and the cumulative incidence of live birth from both
        (:mod:`flowtools.stats.survival_competing`); its C is Wolbers'
        (:func:`wolbers_c`).
    ``time_to_pregnancy`` (``ttp_months``, ``ttp_event``)
        Event: conception of the first pregnancy after recruitment, estimated
        as ``episode_date - (gestational_weeks - 2)`` weeks (gestational age
        counts from the last period, two weeks before conception), not before
        recruitment. Censored at ``followup_end``.
    ``first_pregnancy_loss``
        Binary, among women whose first pregnancy after recruitment ended by
        follow-up end: 1 = loss or stillbirth, 0 = live birth; NaN otherwise
        (no pregnancy, or ongoing). For RM women this is the binary task of
        :func:`flowtools.stats.predict.evaluate_models` (:func:`binary_clinical`).

Models: Cox proportional hazards on ``clinical`` (age, BMI, prior losses,
prior live births, PCOS, current smoking, RM group), ``immune``
(:func:`~flowtools.stats.predict.build_features`) and ``clinical + immune``.
Every learned step is inside the training folds: median imputation,
standardisation, and the ridge penalties chosen by an inner CV on held-out
partial log-likelihood (Verweij and van Houwelingen): first the clinical
block's, on the clinical columns alone (``CLINICAL_PENALIZERS``), then the
immune block's with the clinical one fixed (``DEFAULT_PENALIZERS``), so the
clinical + immune model shrinks its clinical part as the clinical model does.
Unlike :mod:`flowtools.stats.predict` the clinical features are penalised: left
nearly unpenalised (``clinical_penalizers=(CLINICAL_PENALIZER,)``), seven
clinical features at 200 women were over-fitted (external calibration slope
0.72; ``benchmarks/bench_survival_validity.py``).
The penalty is lifelines' ``CoxPHFitter(penalizer=...)`` convention:
``n * penalizer * beta^2 / 2`` on standardised features, Efron ties. The fits
inside the CV use :func:`cox_ridge` (damped Newton on the same objective, about
20 times faster; equal to lifelines' coefficients, tested and benchmarked) or
lifelines itself (``engine="lifelines"``).

Metrics: Harrell's C (pairs with the earlier time an event; ties in the risk
score count one half) and Uno's C (the same pairs weighted by
``1 / G(T_i-)^2``, ``G`` the Kaplan-Meier estimate of the censoring
distribution, up to ``tau``), time-dependent cumulative/dynamic AUC at 12 and
24 months (cases ``T <= t`` with an event weighted by ``1 / G(T_i-)``, controls
``T > t``), all on each repeat's stacked out-of-fold predicted cumulative
incidence at the last horizon and averaged over repeats. Intervals
(``ci="bootstrap"``, the default): women resampled with replacement and the
whole nested CV (one repeat, inner tuning included) re-run on each replicate,
with outer and inner folds over distinct women so a woman's copies never
straddle training and test; estimate +- 1.96 bootstrap SE, as
:func:`flowtools.stats.predict.evaluate_models` (issue 22 showed this is what
covers). ``ci="fixed"`` keeps the cheap percentile bootstrap of the
repeat-averaged out-of-fold predictions treated as fixed (narrower: it ignores
the refitting). Coverage of both: ``benchmarks/bench_survival_validity.py``.
Calibration at each
horizon: predicted cumulative incidence ``1 - S(t | x)`` against the observed
``1 - KM(t)`` by tertile of predicted risk, and observed / expected overall.

The implementation lives in :mod:`flowtools.stats.survival_outcomes` (outcomes),
:mod:`flowtools.stats.survival_metrics` (C, AUC, calibration), :mod:`flowtools.stats._cox`
(the Newton solver), :mod:`flowtools.stats.survival_cv` (folds and tuning),
:mod:`flowtools.stats.survival_eval` (:func:`evaluate_survival`),
:mod:`flowtools.stats.survival_model` (the final model and :func:`predict_live_birth`) and
:mod:`flowtools.stats.survival_competing` (cause-specific hazards of the first pregnancy's
outcome); this module keeps the public API.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from flowtools.stats._cox import _breslow_h0, _efron_parts, _fit_one, _prep, cox_ridge
from flowtools.stats._cox_tuning import (
    CLINICAL_PENALIZER,
    CLINICAL_PENALIZERS,
    DEFAULT_PENALIZERS,
    _folds,
    _grouped_folds,
)
from flowtools.stats.survival_competing import CompetingRiskModel, fit_cause_specific
from flowtools.stats.survival_cv import (
    HORIZONS,
    MODELS,
)
from flowtools.stats.survival_eval import SurvivalEvaluation, evaluate_survival
from flowtools.stats.survival_metrics import _km, aalen_johansen, harrell_c, td_auc, uno_c, wolbers_c
from flowtools.stats.survival_model import (
    LIVE_BIRTH_OUTCOMES,
    SurvivalModel,
    fit_survival_model,
    is_survival_model_file,
    load_survival_model,
    model_features,
    predict_live_birth,
)
from flowtools.stats.survival_outcomes import (
    CLINICAL_FEATURES,
    COMPETING_OUTCOMES,
    MONTH_DAYS,
    OUTCOMES,
    binary_clinical,
    clinical_features,
    derive_outcomes,
)

if TYPE_CHECKING:
    from flowtools.io.clinical_db import FollowupDB

__all__ = [
    "CLINICAL_FEATURES",
    "CLINICAL_PENALIZER",
    "CLINICAL_PENALIZERS",
    "COMPETING_OUTCOMES",
    "DEFAULT_PENALIZERS",
    "HORIZONS",
    "LIVE_BIRTH_OUTCOMES",
    "MODELS",
    "MONTH_DAYS",
    "OUTCOMES",
    "CompetingRiskModel",
    "SurvivalEvaluation",
    "SurvivalModel",
    "aalen_johansen",
    "binary_clinical",
    "clinical_features",
    "cox_ridge",
    "derive_outcomes",
    "evaluate_survival",
    "fit_cause_specific",
    "fit_survival_model",
    "harrell_c",
    "is_survival_model_file",
    "load_survival_model",
    "model_features",
    "predict_live_birth",
    "run_survival_stage",
    "td_auc",
    "uno_c",
    "wolbers_c",
]
# private helpers re-exported for the tests and benchmarks that compare them with lifelines
_PRIVATE = (_breslow_h0, _efron_parts, _fit_one, _folds, _grouped_folds, _km, _prep)


def run_survival_stage(
    counts: pd.DataFrame,
    db: FollowupDB,
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    n_repeats: int = 2,
    n_bootstrap: int = 50,
) -> dict[str, Any]:
    """Evaluate the three models for time to live birth, write tables, figures and a model; return a summary.

    Used by ``flowtools demo`` (through ``survival_stage`` in the pipeline
    layer, which also builds the synthetic follow-up database). Women without
    immune data (a failed gate) are left out and listed (``dropped_women``).
    """
    from flowtools.io.clinical_db import FollowupDB
    from flowtools.stats.survival_figures import survival_figures

    have = set(counts["woman_id"].astype(str))
    dropped = sorted(set(db.women["woman_id"]) - have)
    if dropped:
        db = FollowupDB(
            db.women[db.women["woman_id"].isin(have)].reset_index(drop=True),
            db.episodes[db.episodes["woman_id"].isin(have)].reset_index(drop=True),
            db.source,
        )
    counts = counts[counts["woman_id"].astype(str).isin(set(db.women["woman_id"]))]

    out = Path(out_dir)
    ev = evaluate_survival(counts, db, n_repeats=n_repeats, n_splits=3, n_bootstrap=n_bootstrap, seed=seed)
    files = ev.to_files(out)
    figs = survival_figures(derive_outcomes(db), ev, out)
    model = fit_survival_model(counts, db, n_bootstrap=50, seed=seed)
    mpath = model.save(out / "survival_model.json")
    s = ev.summary()
    return {
        "outcome": ev.outcome,
        "harrell_c": s["harrell_c"],
        "uno_c": s["uno_c"],
        "auc_12": s.get("auc_12", {}),
        "gain_harrell_c": ev.gain.get("harrell_c", {}),
        "n_women": int(ev.concordance["n"].iloc[0]),
        "dropped_women": dropped,
        "n_events": int(ev.concordance["n_events"].iloc[0]),
        "paths": [str(p) for p in [*files, *figs, mpath]],
    }
