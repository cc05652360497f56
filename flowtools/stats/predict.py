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
"""

from __future__ import annotations

import hashlib
import json
import logging
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
from sklearn.base import BaseEstimator, ClassifierMixin

from flowtools.provenance import atomic_write_text, provenance_record
from flowtools.stats._glm import delong, penalized_logistic, quasi_binomial, ridge_newton
from flowtools.stats.errors import LeakageWarning, ModelFileError, OutOfRangeError
from flowtools.stats.tables import join_women, validate_clinical

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

_log = logging.getLogger(__name__)
# libraries whose versions go into the provenance record (as flowtools.stats.comparison.STATS_LIBRARIES)
_STATS_LIBRARIES = ("numpy", "scipy", "pandas", "statsmodels", "scikit-learn", "pyarrow")

TASKS = ("next_loss", "rm_vs_control")
CLINICAL_FEATURES: dict[str, tuple[str, ...]] = {
    "next_loss": ("age", "n_prior_losses"),
    "rm_vs_control": ("age", "bmi"),
}
MODELS = ("clinical", "immune", "clinical + immune")
_FORMAT = "flowtools-stats-model/1"
_HONEST_AUC_WARNING = 0.80
# Inverse penalty strengths of the inner CV (standardised features). Reaching down to 0.001
# changed nothing for clinical + immune on 60 planted cohorts (AUC 0.611 either way) and
# gave fully penalised models more near-constant fits, so the grid stays here.
DEFAULT_CS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
# Ridge by default. With an L1 part and a penalised clinical block the inner CV (log-loss)
# often picked the all-zero model, whose out-of-fold predictions are the training prevalence
# of each fold and so anti-correlate with the outcome (calibration slope mean -0.01).
DEFAULT_L1_RATIOS = (0.0,)
# Interval methods of the AUCs and the gain (see cross_validate_models), and the bootstrap size.
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
# An unpenalised column, on the elastic-net (saga) path only, is multiplied by this factor
# after standardisation: its L2 weight drops by the factor squared, its L1 weight by the factor.
_UNPENALIZED_SCALE = 100.0
ProgressCallback = Callable[[int, int], None]


# ------------------------------------------------------------------------------------------ features


def build_features(counts: pd.DataFrame, *, transform: str = "logit") -> pd.DataFrame:
    """Per-woman immune features from a count table.

    Parameters
    ----------
    counts : pandas.DataFrame
        Count table (:func:`~flowtools.stats.tables_from_gate`, :func:`~flowtools.stats.tables_from_truth`).
    transform : {"logit", "clr"}, default "logit"
        ``logit``: empirical logit ``log((count + 0.5) / (parent_count - count + 0.5))``;
        ``clr``: centred log-ratio within sibling groups that partition their
        parent (3+ children), logit elsewhere.

    Returns
    -------
    pandas.DataFrame
        Index ``woman_id``; one float64 column per feature (``tube|path``); NaN
        where the parent had no events.
    """
    if transform not in ("logit", "clr"):
        msg = f"transform must be 'logit' or 'clr', not {transform!r}"
        raise ValueError(msg)
    c = counts[counts["parent_count"] > 0]
    k, n = c["count"].to_numpy(float), c["parent_count"].to_numpy(float)
    val = np.log((k + 0.5) / (n - k + 0.5))
    wide = c.assign(v=val).pivot_table(index="woman_id", columns="feature", values="v", aggfunc="first")
    if transform == "clr":
        from flowtools.stats.comparison import _partitions

        for feats in _partitions(c).values():
            sub = c[c["feature"].isin(feats)].pivot_table(
                index="woman_id", columns="feature", values="count", aggfunc="first"
            )
            lc = np.log(sub.to_numpy(float) + 0.5)
            wide.loc[sub.index, list(sub.columns)] = lc - lc.mean(axis=1, keepdims=True)
    wide = wide.reindex(sorted(wide.columns), axis=1)
    wide.columns.name = None
    return wide.astype("float64")


def _task_frames(
    counts: pd.DataFrame,
    clinical: pd.DataFrame,
    *,
    task: str,
    transform: str,
    missing: str,
    need_outcome: bool,
    keep_missing: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray | None, list[str]]:
    """Clinical features, immune features, outcome and dropped women of one task.

    With ``missing="impute"`` and ``keep_missing`` the clinical table is still
    validated (and its gaps counted, ``xc.attrs["missing"]``), but the gaps of
    the clinical features stay NaN, for the median imputer inside each training
    fold; otherwise :func:`validate_clinical` fills them with the median of all
    women. ``xc.attrs["imputed_before"]`` holds the gaps a caller's
    ``read_clinical(missing="impute")`` had already filled (not recoverable).
    """
    from flowtools.stats.tables import _blank

    if task not in TASKS:
        msg = f"task must be one of {TASKS}, not {task!r}"
        raise ValueError(msg)
    clin_cols = list(CLINICAL_FEATURES[task])
    source = clinical.attrs.get("source", "<clinical table>")
    required = clin_cols + (["next_pregnancy_loss"] if task == "next_loss" and need_outcome else [])
    before = {c: int(v) for c, v in dict(clinical.attrs.get("imputed", {})).items() if c in clin_cols and v}
    if task == "next_loss":
        rm_only = clinical[clinical["group"].astype(str).str.strip() == "RM"]
        rm_only.attrs.update(clinical.attrs)
        clinical = rm_only
    gaps: dict[str, set[str]] = {}
    if missing == "impute" and keep_missing:
        wid = clinical["woman_id"].astype(str).str.strip()
        gaps = {c: set(wid[_blank(clinical[c])]) for c in clin_cols if c in clinical.columns}
    clin = validate_clinical(clinical, missing=missing, required=required, source=source)
    counts = counts[counts["woman_id"].isin(clin["woman_id"])] if task == "next_loss" else counts
    counts, clin, dropped = join_women(counts, clin, missing=missing, source=source)
    imm = build_features(counts, transform=transform)
    clin = clin.set_index("woman_id").loc[imm.index]
    xc = clin[clin_cols].astype("float64")
    for c, women in gaps.items():
        xc.loc[xc.index.isin(women), c] = np.nan
    xc.attrs["missing"] = {c: int(v) for c, v in xc.isna().sum().items() if v}
    xc.attrs["imputed_before"] = before
    y = None
    if need_outcome:
        y = (clin["next_pregnancy_loss"] if task == "next_loss" else (clin["group"] == "RM")).to_numpy(float)
        y = y.astype(int)
    return xc, imm, y, list(clinical.attrs.get("dropped", [])) + list(clin.attrs.get("dropped", [])) + dropped


# ------------------------------------------------------------------------------------------ models


class PenalizedLogisticRegression(ClassifierMixin, BaseEstimator):
    """Binary logistic regression with a ridge (or elastic-net) penalty that spares chosen columns.

    Ridge (``l1_ratio == 0``, the default) is solved exactly by damped Newton
    steps (:func:`flowtools.stats._glm.penalized_logistic`); with one penalty
    for every column it equals ``sklearn.linear_model.LogisticRegression(C=C)``.
    With ``l1_ratio > 0`` scikit-learn's ``saga`` solver is used and the
    unpenalised columns are scaled up by 100 first (penalty weight 1e-4 on the
    L2 part, 1e-2 on the L1 part: nearly, not exactly, unpenalised).

    Parameters
    ----------
    C : float, default 1.0
        Inverse penalty strength (scikit-learn's convention: the penalty is
        ``||w||^2 / (2 C)`` beside the summed log-loss).
    l1_ratio : float, default 0.0
        Elastic-net mixing (0: ridge, 1: lasso).
    unpenalized : tuple of int, default ()
        Column indices left unpenalised (maximum likelihood for them).
    random_state : int, default 0
        Seed of the ``saga`` solver (unused by ridge).

    Attributes
    ----------
    classes_ : ndarray, shape (2,)
    coef_ : ndarray of float64, shape (1, n_features)
    intercept_ : ndarray of float64, shape (1,)
    converged_ : bool

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 1.0], [3.0, 0.0]])
    >>> m = PenalizedLogisticRegression(C=0.1, unpenalized=(0,)).fit(x, [0, 0, 1, 1])
    >>> m.predict_proba(x).shape
    (4, 2)
    """

    def __init__(
        self, C: float = 1.0, l1_ratio: float = 0.0, unpenalized: tuple[int, ...] = (), random_state: int = 0
    ) -> None:
        self.C = C
        self.l1_ratio = l1_ratio
        self.unpenalized = unpenalized
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray) -> PenalizedLogisticRegression:  # noqa: N803
        """Fit on features ``X`` (n, p) and binary labels ``y`` (n,); returns self."""
        from sklearn.exceptions import ConvergenceWarning

        x = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        if self.classes_.size != 2:
            msg = f"need two classes to fit, got {self.classes_.size}"
            raise ValueError(msg)
        if not self.C > 0:
            msg = f"C must be positive, not {self.C!r}"
            raise ValueError(msg)
        if not 0.0 <= float(self.l1_ratio) <= 1.0:
            msg = f"l1_ratio must be in [0, 1], not {self.l1_ratio!r}"
            raise ValueError(msg)
        yy = (y == self.classes_[1]).astype(np.float64)
        free = np.zeros(x.shape[1], dtype=bool)
        free[list(self.unpenalized)] = True
        if float(self.l1_ratio) == 0.0:
            b0, w, ok = penalized_logistic(x, yy, np.where(free, 0.0, 1.0 / float(self.C)))
            if not ok:
                warnings.warn(
                    "penalized_logistic did not converge (separated data on unpenalised columns?)",
                    ConvergenceWarning,
                    stacklevel=2,
                )
        else:
            from sklearn.linear_model import LogisticRegression

            mult = np.where(free, _UNPENALIZED_SCALE, 1.0)
            m = LogisticRegression(
                C=float(self.C),
                l1_ratio=float(self.l1_ratio),
                solver="saga",
                max_iter=5000,
                tol=1e-4,
                random_state=self.random_state,
            ).fit(x * mult, yy)
            b0, w, ok = float(m.intercept_[0]), m.coef_[0] * mult, bool(m.n_iter_[0] < 5000)
        self.intercept_ = np.array([b0])
        self.coef_ = np.asarray(w, dtype=np.float64).reshape(1, -1)
        self.converged_ = bool(ok)
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """Linear predictor (log-odds of ``classes_[1]``), shape (n,)."""
        return np.asarray(X, dtype=np.float64) @ self.coef_[0] + self.intercept_[0]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """Probabilities of ``classes_[0]`` and ``classes_[1]``, shape (n, 2)."""
        from scipy.special import expit

        p = expit(self.decision_function(X))
        return np.column_stack([1 - p, p])

    def predict(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """Class with the higher probability, shape (n,)."""
        return self.classes_[(self.decision_function(X) > 0).astype(int)]


def _pipeline(c: float = 1.0, l1_ratio: float = 0.0, seed: int = 0, unpenalized: Sequence[int] = ()) -> Any:
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline(
        [
            # keep_empty_features: an all-missing column stays (as zeros), so column indices hold
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler()),
            (
                "clf",
                PenalizedLogisticRegression(
                    C=c, l1_ratio=l1_ratio, unpenalized=tuple(int(j) for j in unpenalized), random_state=seed
                ),
            ),
        ]
    )


def _tuned(
    cs: Sequence[float],
    l1_ratios: Sequence[float],
    inner_folds: int,
    seed: int,
    unpenalized: Sequence[int] = (),
) -> Any:
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    return GridSearchCV(
        _pipeline(seed=seed, unpenalized=unpenalized),
        {"clf__C": list(cs), "clf__l1_ratio": list(l1_ratios)},
        cv=StratifiedKFold(inner_folds, shuffle=True, random_state=seed),
        scoring="neg_log_loss",
        refit=True,
        error_score="raise",
    )


def _unpenalized_idx(columns: Sequence[str], unpenalized: Sequence[str]) -> tuple[int, ...]:
    keep = set(unpenalized)
    return tuple(j for j, c in enumerate(columns) if c in keep)


def _quiet_fit(est: Any, x: np.ndarray, y: np.ndarray) -> Any:
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        # saga (elastic net) can stop at max_iter on a weak-penalty grid point; the inner CV scores it anyway
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(x, y)


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    """AUC by midranks (``sklearn.metrics.roc_auc_score``, ties counted half); NaN with one class."""
    pos = np.asarray(y).astype(bool)
    m = int(pos.sum())
    n0 = pos.size - m
    if m == 0 or n0 == 0:
        return float("nan")
    r = _st.rankdata(p)
    return float((r[pos].sum() - m * (m + 1) / 2) / (m * n0))


# ------------------------------------------------------------------------------------------ fast ridge path
# The nested CV of a ridge model (l1_ratio 0) runs here without scikit-learn's per-fit overhead:
# the same steps as ``_tuned`` (median imputation, standardisation, penalised logistic regression,
# penalty by inner CV on mean log-loss, refit on the whole training part), about 20 times faster,
# which is what makes the bootstrap around the whole procedure affordable. Each step equals its
# scikit-learn counterpart; ``tests/stats/test_predict_intervals.py`` checks the predictions agree.


def _impute_scale(x_tr: np.ndarray, x_te: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median-impute and standardise with training statistics; intercept column prepended."""
    if np.isnan(x_tr).any() or np.isnan(x_te).any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-missing column: filled with 0 below
            med = np.nanmedian(x_tr, axis=0)
        med = np.where(np.isnan(med), 0.0, med)  # SimpleImputer(keep_empty_features=True)
        x_tr = np.where(np.isnan(x_tr), med, x_tr)
        x_te = np.where(np.isnan(x_te), med, x_te)
    mean = x_tr.mean(axis=0)
    sd = x_tr.std(axis=0)
    sd = np.where(sd < 10 * np.finfo(np.float64).eps, 1.0, sd)  # StandardScaler's zero-variance rule
    a = np.empty((x_tr.shape[0], x_tr.shape[1] + 1))
    b = np.empty((x_te.shape[0], x_te.shape[1] + 1))
    a[:, 0] = b[:, 0] = 1.0
    a[:, 1:] = (x_tr - mean) / sd
    b[:, 1:] = (x_te - mean) / sd
    return a, b


def _start(y: np.ndarray, p: int) -> np.ndarray:
    beta = np.zeros(p + 1)
    ybar = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
    beta[0] = np.log(ybar / (1 - ybar))
    return beta


def _ridge_tuned_predict(
    x_tr: np.ndarray,
    y_tr: np.ndarray,
    x_te: np.ndarray,
    inner: Sequence[tuple[np.ndarray, np.ndarray]],
    cs: Sequence[float],
    free: Sequence[int],
) -> np.ndarray:
    """Probabilities for ``x_te`` of the ridge pipeline whose C the inner splits chose (mean log-loss)."""
    from scipy.special import expit

    p = x_tr.shape[1]
    penalised = np.ones(p + 1)
    penalised[0] = 0.0
    penalised[[j + 1 for j in free]] = 0.0
    yf = y_tr.astype(np.float64)
    # grid points in order of decreasing penalty, each Newton run warm-started from the previous one
    order = sorted(range(len(cs)), key=lambda j: float(cs[j]))
    loss = np.zeros(len(cs))
    eps = np.finfo(np.float64).eps
    for itr, ite in inner:
        a, b = _impute_scale(x_tr[itr], x_tr[ite])
        beta = _start(yf[itr], p)
        yi = yf[ite]
        fold = np.empty(len(cs))
        for j in order:
            beta = ridge_newton(a, yf[itr], penalised / float(cs[j]), beta)[0]
            q = np.clip(expit(b @ beta), eps, 1 - eps)
            fold[j] = -np.mean(yi * np.log(q) + (1 - yi) * np.log1p(-q))
        loss += fold
    # GridSearchCV keeps the first of equal mean scores, in grid order
    best = int(np.argmin(loss / len(inner)))
    a, b = _impute_scale(x_tr, x_te)
    beta = ridge_newton(a, yf, penalised / float(cs[best]), _start(yf, p))[0]
    return expit(b @ beta)


def _fold_predict(
    x_tr: np.ndarray,
    y_tr: np.ndarray,
    x_te: np.ndarray,
    inner: Sequence[tuple[np.ndarray, np.ndarray]],
    cs: Sequence[float],
    l1_ratios: Sequence[float],
    seed: int,
    free: Sequence[int],
) -> np.ndarray:
    """One outer fold of the nested CV: tune on ``inner`` splits of the training part, predict ``x_te``."""
    if all(float(r) == 0.0 for r in l1_ratios):
        return _ridge_tuned_predict(x_tr, y_tr, x_te, inner, cs, free)
    from sklearn.model_selection import GridSearchCV

    est = GridSearchCV(
        _pipeline(seed=seed, unpenalized=free),
        {"clf__C": list(cs), "clf__l1_ratio": list(l1_ratios)},
        cv=list(inner),
        scoring="neg_log_loss",
        refit=True,
        error_score="raise",
    )
    return _quiet_fit(est, x_tr, y_tr).predict_proba(x_te)[:, 1]


def _inner_splits(y_tr: np.ndarray, inner_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The inner stratified splits ``_tuned`` uses (``StratifiedKFold(shuffle=True, random_state=seed)``)."""
    from sklearn.model_selection import StratifiedKFold

    k = max(min(inner_folds, int(y_tr.sum()), int((1 - y_tr).sum())), 2)
    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(y_tr.size), y_tr))


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
        # Calibration per repeat, on that repeat's stacked out-of-fold predictions (each from one
        # fitted model, as a deployed model is), then averaged over repeats. Recalibrating the
        # repeat-averaged predictions instead would judge an average of n_repeats models, which
        # nobody deploys (and reads about 0.03 higher on planted cohorts).
        ci_, cs_, b = (
            float(v) for v in np.mean([_calibration(y, oof[m][r]) for r in range(n_repeats)], axis=0)
        )
        lo, hi = max(0.0, est_auc - z * se), min(1.0, est_auc + z * se)
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


def _blocks(xc: pd.DataFrame, imm: pd.DataFrame, models: Sequence[str]) -> dict[str, pd.DataFrame]:
    all_blocks = {"clinical": xc, "immune": imm, "clinical + immune": pd.concat([xc, imm], axis=1)}
    unknown = [m for m in models if m not in all_blocks]
    if unknown:
        msg = f"unknown model(s) {unknown}; choose from {list(all_blocks)}"
        raise ValueError(msg)
    return {m: all_blocks[m] for m in models}


def _join_extra(imm: pd.DataFrame, extra: pd.DataFrame) -> pd.DataFrame:
    """The immune block with more per-woman features (the cell table's women, in its order)."""
    x = extra.set_index("woman_id") if "woman_id" in extra.columns else extra
    x.index = x.index.astype(str)
    clash = sorted(set(x.columns) & set(imm.columns))
    if clash:
        msg = f"extra immune features {clash} clash with the cell features"
        raise ValueError(msg)
    bad = [c for c in x.columns if not pd.api.types.is_numeric_dtype(x[c])]
    if bad:
        msg = f"extra immune features must be numbers; not {bad}"
        raise ValueError(msg)
    return pd.concat([imm, x.reindex(imm.index).astype("float64")], axis=1)


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


# ------------------------------------------------------------------------------------------ fitted model


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
