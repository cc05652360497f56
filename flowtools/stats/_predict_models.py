"""The penalised logistic models of :mod:`flowtools.stats.predict` and the fast ridge path of their nested CV.

:class:`PenalizedLogisticRegression` (ridge or elastic net, chosen columns left
unpenalised), the scikit-learn pipelines tuned by an inner CV, and the same
steps re-done in numpy for ridge (``_fold_predict``), which is what makes the
bootstrap around the whole nested CV affordable.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as _st
from sklearn.base import BaseEstimator, ClassifierMixin

from flowtools.stats._glm import penalized_logistic, ridge_newton

# Inverse penalty strengths of the inner CV (standardised features). Reaching down to 0.001
# changed nothing for clinical + immune on 60 planted cohorts (AUC 0.611 either way) and
# gave fully penalised models more near-constant fits, so the grid stays here.
DEFAULT_CS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
# Ridge by default. With an L1 part and a penalised clinical block the inner CV (log-loss)
# often picked the all-zero model, whose out-of-fold predictions are the training prevalence
# of each fold and so anti-correlate with the outcome (calibration slope mean -0.01).
DEFAULT_L1_RATIOS = (0.0,)
# Interval methods of the AUCs and the gain (see cross_validate_models), and the bootstrap size.
# An unpenalised column, on the elastic-net (saga) path only, is multiplied by this factor
# after standardisation: its L2 weight drops by the factor squared, its L1 weight by the factor.
_UNPENALIZED_SCALE = 100.0


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
