"""RM versus control, population by population, with the woman as the unit.

Default test (``test="logit-normal"``): each woman's empirical logit of the
population's share of its parent is regressed on the group, the covariates
(age, BMI; categorical ones treatment-coded) and the plate as a batch factor,
by weighted least squares with precision weights ``1 / (tau2 + v_i)``: ``v_i``
is her binomial counting variance (shrinks with her parent count), ``tau2``
the between-woman (biological) variance on the logit scale, estimated by REML;
inference by Knapp-Hartung (t on n - p degrees of freedom). Biological
variation between women does not shrink when more cells are counted, so a
woman with 50k parent events must not weigh 25 times one with 2k, as she does
under the quasi-binomial GLM (kept as ``test="quasi-binomial"``; also
``"quasi-binomial-hc"``, sandwich standard errors, and ``"ols-logit"``,
unweighted OLS on the empirical logit). A rare population (median count under
:data:`RARE_PART_COUNT`) is fitted without precision weights (equal weights, the
same t inference): its ``v_i`` come from counts of a few events, so the weights
follow the response and the weighted test rejected too often (type-I 0.090-0.102
on the independent generator's 0-20-count population, 0.048-0.072 unweighted,
400 cohorts); the row's ``note`` says so. The choice was made by measurement
(``benchmarks/bench_stats_validity.py``, two independent generators; README,
"Statistics"). Beside the log odds ratio, every % of parent row carries the
covariate-adjusted difference in percentage points (``diff_pct``, an average
marginal effect with a delta-method CI).

Where the children of a parent form a partition (3 or more parts), their
composition is tested as well, on the CLR scale (OLS with the same
covariates). Parts with a median count under :data:`RARE_PART_COUNT` are left
out of the composition (their log counts are counting noise that would move
every sibling through the geometric mean), women with an empty parent are left
out, zeros among the remaining parts get a 0.5 pseudocount.

Degenerate cases never give a p-value: a group effect that the design cannot
estimate (plate fully confounded with group), a population absent in every
woman of one group (separation), a fit that diverged or gave a non-finite or
absurd estimate, too few women: the row has NaN and its ``note`` says why.
Strong confounding and few residual degrees of freedom are noted on the row
and in :attr:`ComparisonResult.warnings`.

Multiple testing (``correction="bh"``, the default): Benjamini-Hochberg within
each (subgroup, scale) family; it rejects everything Bonferroni rejects. The
two-level procedure of Benjamini & Bogomolov (2014), sibling groups first, is
kept as ``correction="two-level"``. The check columns
``p_mannwhitney_unadjusted`` and ``p_welch_t_unadjusted`` are plain two-group
tests that ignore covariates and plates: with plates confounded with group
they are not valid tests of the group effect.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flowtools.io.tables import write_table
from flowtools.provenance import provenance_record
from flowtools.stats._glm import (
    bh_qvalues,
    empirical_logit,
    hierarchical_qvalues,
    manova_one_df,
    ols,
    welch_t,
)
from flowtools.stats.comparison_model import (
    _NAN_FIT,
    RARE_PART_COUNT,
    TESTS,
    _check_design,
    _design,
    _finite_or_reason,
    _fit_pct,
    _pct_difference,
    _row_checks,
    _separation,
    _source,
    _values,
    clr,
    composition,
)
from flowtools.stats.comparison_model import partitions as _partitions
from flowtools.stats.tables import join_women, validate_clinical

__all__ = [
    "CORRECTIONS",
    "DEFAULT_TEST",
    "RARE_PART_COUNT",
    "SCALE_CLR",
    "SCALE_PCT",
    "STATS_LIBRARIES",
    "TESTS",
    "ComparisonResult",
    "compare",
]

_log = logging.getLogger(__name__)

SCALE_PCT = "% of parent"
SCALE_CLR = "composition (CLR)"
DEFAULT_TEST = "logit-normal"
CORRECTIONS = {
    "bh": "Benjamini-Hochberg within each family; family = (subgroup, scale)",
    "two-level": (
        "two-level FDR (Benjamini-Bogomolov 2014): BH over sibling groups' global tests "
        "(MANOVA on k-1 log-ratios for partitions, else Bonferroni), then BH at q*R/m within selected "
        "groups; "
        "family = (subgroup, scale)"
    ),
}
#: Libraries whose versions go into the provenance of statistics outputs.
STATS_LIBRARIES = ("numpy", "scipy", "pandas", "statsmodels", "scikit-learn", "pyarrow")
_TABLE_COLUMNS = [
    "subgroup",
    "population",
    "tube",
    "parent",
    "scale",
    "effect_measure",
    "effect",
    "ci_low",
    "ci_high",
    "ratio",
    "diff_pct",
    "diff_pct_ci_low",
    "diff_pct_ci_high",
    "p",
    "q",
    "p_group",
    "q_group",
    "correction",
    "test",
    "n_rm",
    "n_control",
    "mean_rm",
    "mean_control",
    "dispersion",
    "between_woman_sd",
    "p_mannwhitney_unadjusted",
    "p_welch_t_unadjusted",
    "converged",
    "note",
]


@dataclass
class ComparisonResult:
    """The comparison table and what produced it.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per (subgroup, population, scale): ``subgroup`` ("all RM" or
        e.g. "rm_type=primary"), ``population`` (``tube|path``), ``scale`` (``"% of
        parent"`` or ``"composition (CLR)"``), ``effect_measure``, ``effect`` with
        ``ci_low``/``ci_high`` (95%), ``ratio`` (odds ratio for % of parent),
        ``diff_pct`` with ``diff_pct_ci_low``/``diff_pct_ci_high`` (adjusted RM -
        control difference in percentage points; % of parent rows), ``p``, ``q``
        (within subgroup and scale, see the module docstring),
        ``p_group``/``q_group`` (two-level correction only), ``correction``,
        ``test``, ``n_rm``, ``n_control``, ``mean_rm``/``mean_control`` (mean %
        of parent, or mean CLR), ``dispersion`` (the test's scale factor),
        ``between_woman_sd`` (logit scale, logit-normal test),
        ``p_mannwhitney_unadjusted`` and ``p_welch_t_unadjusted`` (checks that
        ignore covariates and plates), ``converged``, and ``note`` (why a row
        has no estimate, or what to be wary of).
    data : pandas.DataFrame
        Per woman and population: woman_id, group, population, scale, value
        (% of parent or CLR), for the distribution figures.
    parameters : dict
        Covariates, batch, subgroup, test, correction, missing policy, dropped women.
    warnings : list of str
        Design problems and degenerate rows, one line each.
    """

    table: pd.DataFrame
    data: pd.DataFrame
    parameters: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def significant(self, *, q: float = 0.05) -> pd.DataFrame:
        """Return the rows with q below ``q``."""
        return self.table[self.table["q"] < q]

    def to_files(
        self, out_dir: str | os.PathLike[str], *, inputs: dict[str, str | os.PathLike[str]] | None = None
    ) -> list[Path]:
        """Write ``comparison.csv``, ``comparison.parquet`` and ``comparison.provenance.json`` atomically.

        Parameters
        ----------
        out_dir : str or PathLike
        inputs : mapping of str to path, optional
            Input files to hash into the provenance record (the clinical CSV and
            the immune table, e.g. ``populations.csv``).

        Returns
        -------
        list of pathlib.Path
        """
        out = Path(out_dir)
        prov = provenance_record(
            inputs=inputs,
            parameters={**self.parameters, "warnings": self.warnings},
            command="flowtools compare",
            libraries=STATS_LIBRARIES,
        )
        return write_table(self.table, out / "comparison", prov, provenance_file=True)


# ------------------------------------------------------------------------------------------ one comparison


def _compare_one(
    counts: pd.DataFrame,
    clin: pd.DataFrame,
    *,
    label: str,
    covariates: Sequence[str],
    batch: str | None,
    scales: Sequence[str],
    test: str,
    correction: str,
    warn: list[str],
) -> tuple[list[dict[str, Any]], list[pd.DataFrame], dict[tuple[str, str], float]]:
    cov_text = ", ".join([*covariates, *([f"{batch} (batch)"] if batch else [])]) or "nothing"
    rows: list[dict[str, Any]] = []
    data: list[pd.DataFrame] = []
    source = _source(clin)
    clin = clin.set_index("woman_id")
    clin.attrs["source"] = source
    cnt = counts[counts["woman_id"].isin(clin.index)]
    for feature, g in cnt.groupby("feature", sort=True):
        g = g[g["parent_count"] > 0]
        women = g["woman_id"].to_numpy()
        c = clin.loc[women]
        rm = (c["group"] == "RM").to_numpy()
        n_rm, n_c = int(rm.sum()), int((~rm).sum())
        pct = g["pct_parent"].to_numpy()
        row = {
            "subgroup": label,
            "population": feature,
            "tube": g["tube"].iloc[0],
            "parent": g["parent"].iloc[0],
            "scale": SCALE_PCT,
            "effect_measure": "log odds ratio (RM vs control)",
            "n_rm": n_rm,
            "n_control": n_c,
            "mean_rm": float(pct[rm].mean()) if n_rm else np.nan,
            "mean_control": float(pct[~rm].mean()) if n_c else np.nan,
            "test": f"{TESTS[test]}, woman as unit, adjusted for {cov_text}",
            "p_mannwhitney_unadjusted": np.nan,
            "p_welch_t_unadjusted": np.nan,
            "note": "",
        }
        data.append(_values(label, women, c["group"], feature, SCALE_PCT, pct))
        if SCALE_PCT not in scales:
            continue
        if n_rm < 2 or n_c < 2:
            rows.append({**row, **_NAN_FIT, "note": f"too few women ({n_rm} RM, {n_c} control; need 2 each)"})
            continue
        k, n = g["count"].to_numpy(float), g["parent_count"].to_numpy(float)
        logit, _ = empirical_logit(k, n)
        p_mw, _ = _row_checks(pct[rm], pct[~rm])
        row["p_mannwhitney_unadjusted"] = p_mw
        row["p_welch_t_unadjusted"] = welch_t(logit[rm], logit[~rm])[3]
        x, names = _design(c.reset_index(), rm, covariates, batch)
        des = _check_design(x, names, batch)
        reason = des.reason or _separation(k, n, rm)
        notes = list(des.notes)
        rare = test == "logit-normal" and float(np.median(k)) < RARE_PART_COUNT
        if reason is None:
            if rare:
                fit, tau2 = _fit_pct("ols-logit", des.x, k, n)
                notes.append(f"rare (median count < {RARE_PART_COUNT}): equal weights, no precision weights")
            else:
                fit, tau2 = _fit_pct(test, des.x, k, n)
            reason = _finite_or_reason(fit)
        if reason is not None:
            rows.append({**row, **_NAN_FIT, "note": reason})
            continue
        lo, hi = fit.conf_int(1)
        d, dlo, dhi = _pct_difference(fit, des.x, tau2)
        rows.append(
            {
                **row,
                "effect": float(fit.params[1]),
                "ci_low": lo,
                "ci_high": hi,
                "ratio": float(np.exp(fit.params[1])),
                "p": float(fit.pvalues[1]),
                "diff_pct": d,
                "diff_pct_ci_low": dlo,
                "diff_pct_ci_high": dhi,
                "dispersion": fit.scale,
                "between_woman_sd": float(np.sqrt(tau2)) if test == "logit-normal" and not rare else np.nan,
                "converged": fit.converged,
                "note": "; ".join(notes),
            }
        )

    global_p: dict[tuple[str, str], float] = {}
    if correction == "two-level":
        for (tube, parent), feats in _partitions(cnt, min_children=2).items():
            wide, kept, _ = composition(cnt, feats)
            if len(kept) < 2:
                continue
            c = clin.loc[wide.index]
            rm = (c["group"] == "RM").to_numpy()
            if rm.sum() < 2 or (~rm).sum() < 2:
                continue
            des = _check_design(*_design(c.reset_index(), rm, covariates, batch), batch)
            if des.reason is None:
                global_p[(tube, parent)] = manova_one_df(des.x, clr(wide.to_numpy())[:, :-1], 1)[1]

    if SCALE_CLR in scales:
        for (tube, parent), feats in _partitions(cnt).items():
            wide, kept, rare = composition(cnt, feats)
            if len(kept) < 3:
                warn.append(
                    f"{label}: no composition rows for {tube}|{parent}: fewer than 3 parts with a median "
                    f"count of {RARE_PART_COUNT}+ (too rare: {', '.join(rare)})"
                )
                continue
            v_all = clr(wide.to_numpy())
            c = clin.loc[wide.index]
            rm = (c["group"] == "RM").to_numpy()
            des = _check_design(*_design(c.reset_index(), rm, covariates, batch), batch)
            left_out = (f"left out of the composition as too rare (median count < {RARE_PART_COUNT}): "
                        f"{', '.join(rare)}")
            for j, feature in enumerate(kept):
                v = v_all[:, j]
                p_mw, p_t = _row_checks(v[rm], v[~rm])
                row = {
                    "subgroup": label,
                    "population": feature,
                    "tube": tube,
                    "parent": parent,
                    "scale": SCALE_CLR,
                    "effect_measure": "CLR difference (RM - control)",
                    "test": f"OLS on CLR of {len(kept)} sibling populations, adjusted for {cov_text}",
                    "n_rm": int(rm.sum()),
                    "n_control": int((~rm).sum()),
                    "mean_rm": float(v[rm].mean()) if rm.any() else np.nan,
                    "mean_control": float(v[~rm].mean()) if (~rm).any() else np.nan,
                    "p_mannwhitney_unadjusted": p_mw,
                    "p_welch_t_unadjusted": p_t,
                }
                data.append(_values(label, wide.index.to_numpy(), c["group"], feature, SCALE_CLR, v))
                notes = [*des.notes, *([left_out] if rare else [])]
                reason = des.reason
                if rm.sum() < 2 or (~rm).sum() < 2:
                    reason = f"too few women ({int(rm.sum())} RM, {int((~rm).sum())} control; need 2 each)"
                if reason is None:
                    fit = ols(des.x, v)
                    reason = _finite_or_reason(fit)
                if reason is not None:
                    rows.append({**row, **_NAN_FIT, "note": reason})
                    continue
                lo, hi = fit.conf_int(1)
                rows.append(
                    {
                        **row,
                        **_NAN_FIT,
                        "effect": float(fit.params[1]),
                        "ci_low": lo,
                        "ci_high": hi,
                        "ratio": float(np.exp(fit.params[1])),
                        "p": float(fit.pvalues[1]),
                        "dispersion": fit.scale,
                        "converged": True,
                        "note": "; ".join(notes),
                    }
                )
    return rows, data, global_p


def _family_qvalues(
    fam: pd.DataFrame, global_p: dict[tuple[str, str], float], correction: str
) -> pd.DataFrame:
    p = fam["p"].to_numpy(float)
    if correction == "bh":
        return pd.DataFrame({"q": bh_qvalues(p), "p_group": np.nan, "q_group": np.nan}, index=fam.index)
    keys = (fam["tube"].astype(str) + "\x1f" + fam["parent"].astype(str)).to_numpy()
    p_group: dict[str, float] = {}
    for key in dict.fromkeys(keys.tolist()):
        tube, _, parent = key.partition("\x1f")
        g = p[keys == key]
        g = g[~np.isnan(g)]
        if (tube, parent) in global_p and np.isfinite(global_p[(tube, parent)]):
            p_group[key] = global_p[(tube, parent)]
        elif g.size:
            p_group[key] = float(min(1.0, g.size * g.min()))
    q, qg = hierarchical_qvalues(p, keys, p_group)
    return pd.DataFrame(
        {"q": q, "p_group": [p_group.get(k, np.nan) for k in keys], "q_group": qg}, index=fam.index
    )


def compare(
    counts: pd.DataFrame,
    clinical: pd.DataFrame,
    *,
    covariates: Sequence[str] = ("age", "bmi"),
    batch: str | None = "plate",
    subgroup: str | None = None,
    scales: Sequence[str] = (SCALE_PCT, SCALE_CLR),
    missing: str = "error",
    test: str = DEFAULT_TEST,
    correction: str = "bh",
) -> ComparisonResult:
    """Compare RM women with controls, population by population (the woman is the unit).

    Parameters
    ----------
    counts : pandas.DataFrame
        Count table from :func:`~flowtools.stats.tables_from_gate` or
        :func:`~flowtools.stats.tables_from_truth`.
    clinical : pandas.DataFrame
        Clinical record (validated here; a frame from :func:`read_clinical` passes as is).
    covariates : sequence of str, default ("age", "bmi")
        Adjustment covariates: numeric ones standardised, categorical ones
        (e.g. ``smoking``) treatment-coded against their first level.
    batch : str or None, default "plate"
        Clinical column used as a batch factor; ignored when it has one level.
    subgroup : str or None
        A clinical column of RM women (e.g. ``"rm_type"``): each level is also
        compared with all controls.
    scales : sequence of str
        Which scales to test: ``"% of parent"`` and/or ``"composition (CLR)"``.
    missing : {"error", "drop", "impute"}, default "error"
        Missing-value and unmatched-women policy (see :func:`validate_clinical`).
    test : {"logit-normal", "quasi-binomial", "quasi-binomial-hc", "ols-logit"}
        The % of parent test (see the module docstring); default ``"logit-normal"``.
    correction : {"bh", "two-level"}, default "bh"
        Multiple-testing correction within each (subgroup, scale) family.

    Returns
    -------
    ComparisonResult

    Raises
    ------
    ClinicalDataError
        Invalid clinical record, missing values or unmatched women under the
        policy, a covariate that is neither numeric nor categorical.

    Examples
    --------
    >>> from flowtools.stats import compare, read_clinical, tables_from_truth  # doctest: +SKIP
    >>> res = compare(tables_from_truth("cohort"), read_clinical("cohort/clinical.csv"))  # doctest: +SKIP
    >>> res.table[["population", "scale", "effect", "diff_pct", "q", "note"]]  # doctest: +SKIP
    """
    if test not in TESTS:
        msg = f"test must be one of {sorted(TESTS)}, not {test!r}"
        raise ValueError(msg)
    if correction not in CORRECTIONS:
        msg = f"correction must be one of {sorted(CORRECTIONS)}, not {correction!r}"
        raise ValueError(msg)
    needed = [*covariates, *([batch] if batch else []), *([subgroup] if subgroup else [])]
    source = clinical.attrs.get("source", "<clinical table>")
    clin = validate_clinical(
        clinical, missing=missing, required=[c for c in needed if c != subgroup], source=source
    )
    dropped = list(clinical.attrs.get("dropped", [])) + list(clin.attrs.get("dropped", []))
    counts, clin, unmatched = join_women(counts, clin, missing=missing, source=source)
    clin.attrs["source"] = source
    if batch is not None and clin[batch].nunique() < 2:
        batch_used = None
    else:
        batch_used = batch
    warn: list[str] = []
    labels = [("all RM", clin)]
    if subgroup is not None:
        rm_levels = sorted(clin.loc[clin["group"] == "RM", subgroup].dropna().astype(str).unique())
        for lev in rm_levels:
            keep = (clin["group"] != "RM") | (clin[subgroup].astype(str) == lev)
            sub = clin[keep]
            sub.attrs["source"] = source
            labels.append((f"{subgroup}={lev}", sub))
    all_rows: list[dict[str, Any]] = []
    all_data: list[pd.DataFrame] = []
    global_p: dict[str, dict[tuple[str, str], float]] = {}
    for label, c in labels:
        r, d, gp = _compare_one(
            counts,
            c,
            label=label,
            covariates=covariates,
            batch=batch_used,
            scales=scales,
            test=test,
            correction=correction,
            warn=warn,
        )
        global_p[label] = gp
        all_rows += r
        all_data += d
    table = pd.DataFrame.from_records(all_rows)
    if table.empty:
        table = pd.DataFrame(columns=_TABLE_COLUMNS)
    table["q"] = np.nan
    table["p_group"] = np.nan
    table["q_group"] = np.nan
    table["correction"] = CORRECTIONS[correction]
    for (sg, _), idx in table.groupby(["subgroup", "scale"], sort=False).groups.items():
        table.loc[idx, ["q", "p_group", "q_group"]] = _family_qvalues(
            table.loc[idx], global_p.get(sg, {}), correction
        )
    table = table[_TABLE_COLUMNS].reset_index(drop=True)
    for r in table.itertuples():
        if r.note and (np.isnan(r.p) or r.subgroup == "all RM"):
            warn.append(f"{r.subgroup} | {r.population} [{r.scale}]: {r.note}")
    warn = list(dict.fromkeys(warn))
    for w in warn:
        _log.warning("compare: %s", w)
    data = (
        pd.concat(all_data, ignore_index=True)
        if all_data
        else pd.DataFrame(columns=["subgroup", "woman_id", "group", "population", "scale", "value"])
    )
    params = {
        "covariates": list(covariates),
        "batch": batch,
        "batch_used": batch_used,
        "subgroup": subgroup,
        "scales": list(scales),
        "missing": missing,
        "test": test,
        "test_description": TESTS[test],
        "dropped_women": sorted(set(dropped + unmatched)),
        "n_women": int(clin.shape[0]),
        "n_rm": int((clin["group"] == "RM").sum()),
        "n_control": int((clin["group"] == "control").sum()),
        "q_family": "(subgroup, scale)",
        "correction": CORRECTIONS[correction],
        "rare_part_count": RARE_PART_COUNT,
    }
    return ComparisonResult(table=table, data=data, parameters=params, warnings=warn)
