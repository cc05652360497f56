"""The model behind ``compare``: design checks, the per-population fits and the CLR compositions.

Split from :mod:`flowtools.stats.comparison` (which documents the tests and their choice);
the functions here take plain arrays and frames, one population or one partition at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import special as _sp
from scipy import stats as _st

from flowtools.errors import SheetIssue
from flowtools.stats._glm import (
    LinearFit,
    empirical_logit,
    logit_normal,
    ols,
    quasi_binomial,
    welch_t,
)
from flowtools.stats.errors import ClinicalDataError

__all__ = ["RARE_PART_COUNT", "TESTS", "clr", "composition", "partitions"]

TESTS = {
    "logit-normal": (
        "logit-normal regression (REML between-woman variance, precision weights, Knapp-Hartung t)"
    ),
    "quasi-binomial": "quasi-binomial GLM (logit, Pearson dispersion)",
    "quasi-binomial-hc": "quasi-binomial GLM (logit, sandwich HC1 standard errors)",
    "ols-logit": "OLS on each woman's empirical logit",
}
#: Parts of a partition with a median count below this are left out of its composition.
RARE_PART_COUNT = 10
# Below this many residual degrees of freedom a row is noted as unstable.
_MIN_DF = 10
# A log odds ratio beyond this (an odds ratio of 2e8) is a fit running away, not a finding.
_MAX_LOG_OR = 19.0


# ------------------------------------------------------------------------------------------ design


def _covariate_block(clin: pd.DataFrame, name: str) -> tuple[list[np.ndarray], list[str]]:
    """Standardised numeric covariate, or treatment-coded dummies of a categorical one."""
    col = clin[name]
    num = pd.to_numeric(col, errors="coerce")
    if col.notna().all() and num.notna().all():
        v = num.to_numpy(dtype=float)
        sd = v.std()
        return [(v - v.mean()) / sd if sd > 0 else np.zeros_like(v)], [name]
    if pd.api.types.is_numeric_dtype(col) or num.notna().sum() > col.notna().sum() / 2:
        bad = col[col.notna() & num.isna()]
        shown = ", ".join(repr(str(b)) for b in bad.unique()[:3])
        raise ClinicalDataError(
            _source(clin),
            [SheetIssue(None, name, f"covariate {name!r} is numeric but holds {shown or 'blanks'}")],
        )
    if col.isna().any():
        raise ClinicalDataError(
            _source(clin),
            [SheetIssue(None, name, f"covariate {name!r} has missing values (use --missing drop)")],
        )
    levels = sorted(col.astype(str).unique())
    cols = [(col.astype(str) == lev).to_numpy(dtype=float) for lev in levels[1:]]
    return cols, [f"{name}={lev}" for lev in levels[1:]]


def _source(clin: pd.DataFrame) -> str:
    return str(clin.attrs.get("source", "<clinical table>"))


def _design(
    clin: pd.DataFrame, rm: np.ndarray, covariates: Sequence[str], batch: str | None
) -> tuple[np.ndarray, list[str]]:
    cols = [np.ones(len(clin)), rm.astype(float)]
    names = ["intercept", "RM"]
    for c in covariates:
        block, labels = _covariate_block(clin, c)
        cols += block
        names += labels
    if batch is not None:
        levels = sorted(clin[batch].astype(str).unique())
        for lev in levels[1:]:
            cols.append((clin[batch].astype(str) == lev).to_numpy(dtype=float))
            names.append(f"{batch}={lev}")
    return np.column_stack(cols), names


@dataclass
class _Design:
    x: np.ndarray
    names: list[str]
    reason: str | None = None
    notes: list[str] = field(default_factory=list)


def _check_design(x: np.ndarray, names: list[str], batch: str | None) -> _Design:
    """Drop columns the others already span; refuse when the group itself is not estimable.

    The group effect is estimable only if the RM column is not a linear
    combination of the intercept, covariates and batch columns (a plate holding
    one group only still leaves it estimable from the other plates; every plate
    holding one group does not). A variance inflation factor of the RM column
    above 10 means the group effect rests on few women: it is kept, with a note.
    """
    n = x.shape[0]
    keep = [0]
    for j in range(2, x.shape[1]):
        trial = x[:, [*keep, j]]
        if np.linalg.matrix_rank(trial) == len(keep) + 1:
            keep.append(j)
    others = x[:, keep]
    g = x[:, 1]
    coef, *_ = np.linalg.lstsq(others, g, rcond=None)
    resid = g - others @ coef
    ss_res = float(resid @ resid)
    ss_tot = float(((g - g.mean()) ** 2).sum())
    cols = [0, 1, *keep[1:]]
    d = _Design(x[:, cols], [names[j] for j in cols])
    if ss_tot == 0 or ss_res <= 1e-10 * max(ss_tot, 1.0):
        batched = batch and any(nm.startswith(f"{batch}=") for nm in names)
        what = f"{batch} (batch)" if batched else "covariates"
        d.reason = f"group effect not estimable: RM vs control is fully confounded with {what}"
        return d
    vif = ss_tot / ss_res
    if vif > 10:
        d.notes.append(
            f"group strongly confounded with the adjustment (variance inflation {vif:.0f}): "
            "the effect rests on few women"
        )
    df = n - d.x.shape[1]
    if df < 1:
        d.reason = f"no residual degrees of freedom ({n} women, {d.x.shape[1]} model terms)"
    elif df < _MIN_DF:
        d.notes.append(f"only {df} residual degrees of freedom: estimates and p-values are unstable")
    return d


# ------------------------------------------------------------------------------------------ fits


def _fit_pct(test: str, x: np.ndarray, k: np.ndarray, n: np.ndarray) -> tuple[LinearFit, float]:
    """The fit of the % of parent test, and the between-woman variance that averages its margins."""
    if test == "logit-normal":
        f = logit_normal(x, k, n)
        return f, f.tau2
    if test == "quasi-binomial":
        return quasi_binomial(x, k, n), 0.0
    if test == "quasi-binomial-hc":
        return quasi_binomial(x, k, n, robust=True), 0.0
    if test == "ols-logit":
        y, _ = empirical_logit(k, n)
        f = ols(x, y)
        return f, f.scale
    msg = f"test must be one of {sorted(TESTS)}, not {test!r}"
    raise ValueError(msg)


# Zeger, Liang & Albert (1988): E[expit(eta + u)], u ~ N(0, s2), is close to expit(eta / sqrt(1 + c2 s2)).
_ZEGER_C2 = (16 * np.sqrt(3) / (15 * np.pi)) ** 2


def _pct_difference(fit: LinearFit, x: np.ndarray, tau2: float) -> tuple[float, float, float]:
    """Covariate-adjusted RM - control difference in % of parent, with a delta-method 95% CI.

    The average over the women analysed of the model's mean share with the
    group set to RM minus the same with the group set to control (an average
    marginal effect); a between-woman variance on the logit scale is averaged
    over with Zeger's approximation.
    """
    a = 1.0 / np.sqrt(1.0 + _ZEGER_C2 * max(tau2, 0.0))
    x1, x0 = x.copy(), x.copy()
    x1[:, 1], x0[:, 1] = 1.0, 0.0
    p1, p0 = _sp.expit(a * (x1 @ fit.params)), _sp.expit(a * (x0 @ fit.params))
    diff = float(np.mean(p1 - p0)) * 100
    grad = a * ((p1 * (1 - p1))[:, None] * x1 - (p0 * (1 - p0))[:, None] * x0).mean(axis=0) * 100
    se = float(np.sqrt(max(grad @ fit.cov @ grad, 0.0)))
    t = _st.t.ppf(0.975, fit.df_resid)
    return diff, diff - t * se, diff + t * se


def _values(
    label: str, women: np.ndarray, group: pd.Series, feature: str, scale: str, value: np.ndarray
) -> pd.DataFrame:
    """Per-woman values of one row, for the distribution figures (:attr:`ComparisonResult.data`)."""
    return pd.DataFrame(
        {
            "subgroup": label,
            "woman_id": women,
            "group": group.to_numpy(),
            "population": feature,
            "scale": scale,
            "value": value,
        }
    )


def _row_checks(v_rm: np.ndarray, v_c: np.ndarray) -> tuple[float, float]:
    """Unadjusted two-group checks: Mann-Whitney on the values, Welch t on them."""
    if v_rm.size < 2 or v_c.size < 2:
        return float("nan"), float("nan")
    p_mw = float(_st.mannwhitneyu(v_rm, v_c, alternative="two-sided").pvalue)
    if np.ptp(np.concatenate([v_rm, v_c])) == 0:
        return p_mw, float("nan")
    return p_mw, welch_t(v_rm, v_c)[3]


_NAN_FIT = {
    "effect": np.nan,
    "ci_low": np.nan,
    "ci_high": np.nan,
    "ratio": np.nan,
    "p": np.nan,
    "diff_pct": np.nan,
    "diff_pct_ci_low": np.nan,
    "diff_pct_ci_high": np.nan,
    "dispersion": np.nan,
    "between_woman_sd": np.nan,
    "converged": False,
}


def _separation(k: np.ndarray, n: np.ndarray, rm: np.ndarray) -> str | None:
    """A group in which the population is absent (or the whole parent) in every woman: no finite log odds."""
    for mask, who in ((~rm, "control"), (rm, "RM")):
        if np.all(k[mask] == 0):
            return f"absent (0 events) in every {who} woman: the log odds ratio is not finite"
        if np.all(k[mask] == n[mask]):
            return f"the whole parent in every {who} woman: the log odds ratio is not finite"
    return None


def _finite_or_reason(fit: LinearFit) -> str | None:
    vals = [fit.params[1], fit.bse[1], fit.pvalues[1]]
    if not fit.converged:
        return "the fit did not converge (the estimate diverged): no p-value reported"
    if not np.all(np.isfinite(vals)) or fit.bse[1] <= 0:
        return "the fit gave a non-finite estimate or standard error: no p-value reported"
    if abs(fit.params[1]) > _MAX_LOG_OR:
        return f"absurd estimate (log odds ratio {fit.params[1]:.3g}): no p-value reported"
    return None


# ------------------------------------------------------------------------------------------ compositions


def partitions(counts: pd.DataFrame, min_children: int = 3) -> dict[tuple[str, str], list[str]]:
    """Sibling groups (tube, parent) of ``min_children``+ children summing to the parent (within 1%)."""
    out: dict[tuple[str, str], list[str]] = {}
    for (tube, parent), g in counts.groupby(["tube", "parent"], sort=True):
        if not parent:
            continue
        feats = sorted(g["feature"].unique())
        if len(feats) < min_children:
            continue
        s = g.groupby("woman_id").agg(total=("count", "sum"), parent_count=("parent_count", "first"))
        ok = s["parent_count"] > 0
        if ok.sum() == 0:
            continue
        rel = (s.loc[ok, "total"] - s.loc[ok, "parent_count"]).abs() / s.loc[ok, "parent_count"]
        if float(np.median(rel)) <= 0.01:
            out[(tube, parent)] = feats
    return out


def composition(counts: pd.DataFrame, feats: Sequence[str]) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Counts of a partition, one row per woman, ready for log-ratios.

    Women whose parent holds no event are left out (a 0/0 composition carries
    no information). Parts with a median count under :data:`RARE_PART_COUNT`
    are left out of the composition: with counts of 0-5, ``log(count + 0.5)``
    is counting noise, and through the geometric mean it would move every
    sibling's CLR coordinate. The remaining parts form a subcomposition (their
    CLR is relative to their own geometric mean); zeros among them are handled
    by adding 0.5 to every count.

    Returns
    -------
    wide : pandas.DataFrame
        Women x kept parts (counts).
    kept, rare : list of str
        Parts used, and parts left out as too rare.
    """
    sub = counts[counts["feature"].isin(feats) & (counts["parent_count"] > 0)]
    wide = sub.pivot_table(index="woman_id", columns="feature", values="count", aggfunc="first").dropna()
    med = wide.median(axis=0)
    rare = sorted(med.index[med < RARE_PART_COUNT])
    kept = [f for f in wide.columns if f not in rare]
    return wide[kept], kept, rare


def clr(wide: np.ndarray) -> np.ndarray:
    """Centred log-ratio of counts, zeros handled by a 0.5 pseudocount on every part."""
    lc = np.log(np.asarray(wide, dtype=float) + 0.5)
    return lc - lc.mean(axis=1, keepdims=True)
