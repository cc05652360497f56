"""Does the immune profile predict better than the clinical record? Honest, nested, calibrated.

Tasks
-----
``next_loss``
    Next-pregnancy loss among RM women (``next_pregnancy_loss``); clinical
    features: age and number of prior losses.
``rm_vs_control``
    RM versus control; clinical features: age and BMI (prior losses define the
    groups and would leak the answer).

Models: ``clinical``, ``immune`` (empirical logit of every population's share of
its parent, or CLR within partitions) and ``clinical + immune``; each a
scikit-learn pipeline (median imputation -> standardisation -> penalised
logistic regression, :class:`PenalizedLogisticRegression`; ridge by default,
elastic-net via ``l1_ratios``) whose penalty is chosen by an inner
cross-validation on log-loss (never on the evaluation folds). The clinical
features are not penalised (as glmnet's ``penalty.factor = 0``): they are the
established predictors the immune profile must add to, so ``clinical + immune``
nests the ``clinical`` model (a very strong penalty returns it exactly) and
the gain measures what the immune features add.
:func:`evaluate_models` runs repeated nested cross-validation, so every learned
step (imputation, scaling, feature choice by the L1 part, penalty) is learned
inside the training folds only; with ``missing="impute"`` the clinical gaps stay
missing until then. The 95% intervals of the AUCs and of the gain come from a
bootstrap over women around the whole nested CV (``ci="bootstrap"``), which
carries the variability of the procedure itself; DeLong on the out-of-fold
predictions (``ci="delong"``, reported beside it) treats them as fixed and is
too narrow (``benchmarks/bench_predict_coverage.py``).

The code lives in ``_predict_features`` (features, task frames), ``_predict_models``
(the estimator, its pipelines and the fast ridge path), ``_predict_cv``
(:func:`cross_validate_models`), ``predict_intervals`` (the bootstrap) and
``predict_model`` (:func:`fit_model`, :func:`apply_model`); this module is the
public face and re-exports them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import pandas as pd

# the private names are re-exported: other modules, benchmarks and tests import them from here
from flowtools.stats._predict_cv import (  # noqa: F401
    Evaluation,
    ProgressCallback,
    _calibration,
    cross_validate_models,
)
from flowtools.stats._predict_features import (  # noqa: F401
    CLINICAL_FEATURES,
    MODELS,
    TASKS,
    _blocks,
    _join_extra,
    _task_frames,
    build_features,
)
from flowtools.stats._predict_models import (  # noqa: F401
    DEFAULT_CS,
    DEFAULT_L1_RATIOS,
    PenalizedLogisticRegression,
    _auc,
    _fold_predict,
    _impute_scale,
    _inner_splits,
    _pipeline,
    _quiet_fit,
    _ridge_tuned_predict,
    _tuned,
    _unpenalized_idx,
)
from flowtools.stats.errors import LeakageWarning
from flowtools.stats.predict_intervals import (  # noqa: F401
    CI_METHODS,
    DEFAULT_N_BOOTSTRAP,
    _bootstrap_cv,
    _grouped_splits,
)
from flowtools.stats.predict_model import FittedModel, apply_model, fit_model, load_model, save_model

__all__ = [
    "CLINICAL_FEATURES",
    "TASKS",
    "Evaluation",
    "FittedModel",
    "PenalizedLogisticRegression",
    "apply_model",
    "build_features",
    "cross_validate_models",
    "evaluate_models",
    "fit_model",
    "load_model",
    "save_model",
]


def evaluate_models(
    counts: pd.DataFrame,
    clinical: pd.DataFrame,
    *,
    task: str = "next_loss",
    models: Sequence[str] = MODELS,
    transform: str = "logit",
    missing: str = "error",
    n_splits: int = 5,
    n_repeats: int = 5,
    n_permutations: int = 0,
    ci: str = "bootstrap",
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    extra_immune: pd.DataFrame | None = None,
) -> Evaluation:
    """Repeated nested cross-validation of clinical, immune and clinical + immune models.

    Parameters
    ----------
    counts : pandas.DataFrame
        Count table.
    clinical : pandas.DataFrame
        Clinical record (validated here). Pass it with its gaps (e.g. the raw
        CSV as strings): a table already imputed by
        ``read_clinical(missing="impute")`` was filled with the median of all
        women before CV, which :class:`LeakageWarning` reports.
    task : {"next_loss", "rm_vs_control"}, default "next_loss"
    models : sequence of str
        Subset of ``("clinical", "immune", "clinical + immune")``.
    transform : {"logit", "clr"}
    missing : {"error", "drop", "impute"}
        ``impute``: missing clinical features stay missing until the
        cross-validation, whose pipelines impute the median of each training
        fold (counts in ``parameters["missing_clinical"]``).
    n_splits, n_repeats : int
        Outer folds and repeats.
    n_permutations : int, default 0
        Permutations of the immune features for the test of the gain.
    ci : {"bootstrap", "delong"}, default "bootstrap"
        Interval method of the AUCs and the gain (:func:`cross_validate_models`).
    n_bootstrap : int, default 200
        Bootstrap replicates of the whole nested CV.
    seed : int
    progress : callable(done, total), optional
    extra_immune : pandas.DataFrame, optional
        More immune features per woman (index or column ``woman_id``), e.g. log10 bead-array
        concentrations (:func:`flowtools.stats.analytes.analyte_wide`): joined to the cell
        features of the immune block (women without them get NaN, imputed inside each
        training fold like any gap) and permuted with them in the test of the gain.

    Notes
    -----
    The clinical features are left unpenalised in every model (see the module
    docstring); only the immune features are shrunk. The intervals are for the
    expected AUC of the procedure on new women (see :func:`cross_validate_models`).

    Returns
    -------
    Evaluation
        AUC with 95% CI per model, the gain of clinical + immune over clinical
        with its CI and permutation p-value, calibration (intercept, slope,
        Brier, curve). Emits :class:`LeakageWarning` for an AUC above 0.80.
    """
    xc, imm, y, dropped = _task_frames(
        counts,
        clinical,
        task=task,
        transform=transform,
        missing=missing,
        need_outcome=True,
        keep_missing=True,
    )
    if extra_immune is not None:
        imm = _join_extra(imm, extra_immune)
    ev = cross_validate_models(
        _blocks(xc, imm, models),
        y,
        task=task,
        permute=list(imm.columns),
        unpenalized=list(xc.columns),
        n_splits=n_splits,
        n_repeats=n_repeats,
        n_permutations=n_permutations,
        ci=ci,
        n_bootstrap=n_bootstrap,
        seed=seed,
        progress=progress,
    )
    before = xc.attrs["imputed_before"]
    if before:
        text = (
            f"clinical features {before} were imputed before cross-validation (read_clinical(missing="
            "'impute')), with the median of all women: pass the table with its gaps and missing='impute' "
            "so each training fold imputes its own median"
        )
        ev.warnings.append(text)
        warnings.warn(text, LeakageWarning, stacklevel=2)
    ev.parameters.update(
        {
            "transform": transform,
            "missing": missing,
            "missing_clinical": dict(xc.attrs["missing"]),
            "clinical_imputation": "median of each training fold (inside the CV pipelines)",
            "imputed_before_cv": dict(before),
            "dropped_women": sorted(set(dropped)),
        }
    )
    return ev
