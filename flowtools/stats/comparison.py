"""RM versus control, population by population, with the woman as the unit.

Default test: a quasi-binomial GLM (logit link) on each woman's count with her
parent count as the number of trials, adjusted for covariates (age, BMI) and
the plate as a batch factor; the dispersion is estimated from the Pearson
chi-square, so between-woman variation is not mistaken for evidence (a plain
binomial model on cells rejects about 9 times in 10 on null data). Checks beside
it: a Mann-Whitney rank test on % of parent and a Welch t-test on the empirical
logit. Where the children of a parent form a partition (3 or more), their
composition is tested as well, on the CLR scale (OLS with the same covariates);
a rise in one population lowers the share of its siblings, and the CLR rows say
so.

Multiple testing: q-values are computed within each (subgroup, scale) family by
the two-level procedure of Benjamini & Bogomolov (2014), with sibling groups
(populations sharing a tube and parent) as the groups. Plain BH over a family
assumes positive dependence (PRDS); siblings violate it (they share a parent,
and their CLR coordinates are negatively correlated and sum to zero), and on
null cohorts flat BH found something in 6% (% of parent) and 7.5% (CLR) of
cohorts at q < 0.05. Here each sibling group first gets one global p-value:
the exact multivariate F-test (one-df MANOVA, same covariates and batch) on
k - 1 log-ratio coordinates when the siblings partition their parent (the CLR
coordinates of a k-part composition have rank k - 1; the test is the same for
any basis), otherwise Bonferroni over the group's rows (valid under any
dependence). BH selects groups at q; within a selected group BH runs at
q * R / m (R of m groups selected). The ``q`` column is the smallest level at
which a row is rejected by this procedure; ``p_group``/``q_group`` give the
gate, and ``correction`` names the procedure on every row.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as _st

from flowtools.provenance import atomic_write_bytes, atomic_write_text, provenance_record
from flowtools.stats._glm import hierarchical_qvalues, manova_one_df, ols, quasi_binomial, welch_t
from flowtools.stats.tables import join_women, validate_clinical

__all__ = ["CORRECTION", "SCALE_CLR", "SCALE_PCT", "ComparisonResult", "compare"]

_log = logging.getLogger(__name__)

SCALE_PCT = "% of parent"
SCALE_CLR = "composition (CLR)"
CORRECTION = (
    "two-level FDR (Benjamini-Bogomolov 2014): BH over sibling groups' global tests "
    "(MANOVA on k-1 log-ratios for partitions, else Bonferroni), then BH at q*R/m within selected groups; "
    "family = (subgroup, scale)"
)
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
    "p_mannwhitney",
    "p_welch_t",
    "converged",
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
        ``ci_low``/``ci_high`` (95%), ``ratio`` (odds ratio for % of parent), ``p``,
        ``q`` (two-level FDR within subgroup and scale, see the module docstring),
        ``p_group``/``q_group`` (the sibling group's global test and its BH
        q-value), ``correction`` (the procedure, on every row), ``test``, ``n_rm``, ``n_control``,
        ``mean_rm``/``mean_control`` (mean % of parent, or mean CLR),
        ``dispersion``, and the check tests' ``p_mannwhitney`` and ``p_welch_t``.
    data : pandas.DataFrame
        Per woman and population: woman_id, group, population, scale, value
        (% of parent or CLR), for the distribution figures.
    parameters : dict
        Covariates, batch, subgroup, alpha, missing policy, dropped women.
    """

    table: pd.DataFrame
    data: pd.DataFrame
    parameters: dict[str, Any] = field(default_factory=dict)

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
            Input files to hash into the provenance record.

        Returns
        -------
        list of pathlib.Path
        """
        out = Path(out_dir)
        prov = provenance_record(inputs=inputs, parameters=self.parameters, command="flowtools compare")
        return write_table(self.table, out / "comparison", prov)


def write_table(df: pd.DataFrame, stem: Path, prov: dict[str, Any]) -> list[Path]:
    """Write ``stem``.csv, ``stem``.parquet (provenance in its metadata) and ``stem``.provenance.json."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv_path = stem.with_suffix(".csv")
    atomic_write_text(csv_path, df.to_csv(index=False, lineterminator="\n"))
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"flowtools.provenance"] = json.dumps(prov).encode()
    sink = pa.BufferOutputStream()
    pq.write_table(table.replace_schema_metadata(meta), sink)
    pq_path = stem.with_suffix(".parquet")
    atomic_write_bytes(pq_path, sink.getvalue().to_pybytes())
    prov_path = stem.parent / f"{stem.name}.provenance.json"
    atomic_write_text(prov_path, json.dumps(prov, indent=2) + "\n")
    return [csv_path, pq_path, prov_path]


def _design(clin: pd.DataFrame, rm: np.ndarray, covariates: Sequence[str], batch: str | None) -> np.ndarray:
    cols = [np.ones(len(clin)), rm.astype(float)]
    for c in covariates:
        v = clin[c].to_numpy(dtype=float)
        sd = v.std()
        cols.append((v - v.mean()) / sd if sd > 0 else np.zeros_like(v))
    if batch is not None:
        levels = sorted(clin[batch].astype(str).unique())
        for lev in levels[1:]:
            cols.append((clin[batch].astype(str) == lev).to_numpy(dtype=float))
    x = np.column_stack(cols)
    # drop all-zero columns (a batch level without women after filtering)
    keep = [0, 1] + [j for j in range(2, x.shape[1]) if np.any(x[:, j] != x[0, j])]
    return x[:, keep]


def _partitions(counts: pd.DataFrame, min_children: int = 3) -> dict[tuple[str, str], list[str]]:
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


def _row_checks(v_rm: np.ndarray, v_c: np.ndarray) -> tuple[float, float]:
    if v_rm.size < 2 or v_c.size < 2:
        return float("nan"), float("nan")
    p_mw = float(_st.mannwhitneyu(v_rm, v_c, alternative="two-sided").pvalue)
    if np.ptp(np.concatenate([v_rm, v_c])) == 0:
        return p_mw, float("nan")
    return p_mw, welch_t(v_rm, v_c)[3]


def _compare_one(
    counts: pd.DataFrame,
    clin: pd.DataFrame,
    *,
    label: str,
    covariates: Sequence[str],
    batch: str | None,
    scales: Sequence[str],
) -> tuple[list[dict[str, Any]], list[pd.DataFrame], dict[tuple[str, str], float]]:
    cov_text = ", ".join([*covariates, *([f"{batch} (batch)"] if batch else [])]) or "nothing"
    rows: list[dict[str, Any]] = []
    data: list[pd.DataFrame] = []
    clin = clin.set_index("woman_id")
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
            "test": f"quasi-binomial GLM (logit), woman as unit, adjusted for {cov_text}",
        }
        data.append(
            pd.DataFrame(
                {
                    "subgroup": label,
                    "woman_id": women,
                    "group": c["group"].to_numpy(),
                    "population": feature,
                    "scale": SCALE_PCT,
                    "value": pct,
                }
            )
        )
        if n_rm < 2 or n_c < 2 or SCALE_PCT not in scales:
            rows.append(
                {
                    **row,
                    "effect": np.nan,
                    "ci_low": np.nan,
                    "ci_high": np.nan,
                    "ratio": np.nan,
                    "p": np.nan,
                    "dispersion": np.nan,
                    "p_mannwhitney": np.nan,
                    "p_welch_t": np.nan,
                    "converged": False,
                }
            )
            continue
        x = _design(c.reset_index(), rm, covariates, batch)
        k, n = g["count"].to_numpy(float), g["parent_count"].to_numpy(float)
        fit = quasi_binomial(x, k, n)
        lo, hi = fit.conf_int(1)
        logit = np.log((k + 0.5) / (n - k + 0.5))
        p_mw, _ = _row_checks(pct[rm], pct[~rm])
        p_t = welch_t(logit[rm], logit[~rm])[3]
        rows.append(
            {
                **row,
                "effect": float(fit.params[1]),
                "ci_low": lo,
                "ci_high": hi,
                "ratio": float(np.exp(fit.params[1])),
                "p": float(fit.pvalues[1]),
                "dispersion": fit.scale,
                "p_mannwhitney": p_mw,
                "p_welch_t": p_t,
                "converged": fit.converged,
            }
        )

    global_p: dict[tuple[str, str], float] = {}
    for (tube, parent), feats in _partitions(cnt, min_children=2).items():
        wide = (
            cnt[cnt["feature"].isin(feats)]
            .pivot_table(index="woman_id", columns="feature", values="count", aggfunc="first")
            .dropna()
        )
        c = clin.loc[wide.index]
        rm = (c["group"] == "RM").to_numpy()
        if rm.sum() < 2 or (~rm).sum() < 2:
            continue
        lc = np.log(wide.to_numpy(float) + 0.5)
        clr = lc - lc.mean(axis=1, keepdims=True)
        x = _design(c.reset_index(), rm, covariates, batch)
        global_p[(tube, parent)] = manova_one_df(x, clr[:, :-1], 1)[1]

    if SCALE_CLR in scales:
        for (tube, parent), feats in _partitions(cnt).items():
            sub = cnt[cnt["feature"].isin(feats)]
            wide = sub.pivot_table(index="woman_id", columns="feature", values="count", aggfunc="first")
            wide = wide.dropna()
            lc = np.log(wide.to_numpy(float) + 0.5)
            clr = lc - lc.mean(axis=1, keepdims=True)
            c = clin.loc[wide.index]
            rm = (c["group"] == "RM").to_numpy()
            if rm.sum() < 2 or (~rm).sum() < 2:
                continue
            x = _design(c.reset_index(), rm, covariates, batch)
            for j, feature in enumerate(wide.columns):
                v = clr[:, j]
                fit = ols(x, v)
                lo, hi = fit.conf_int(1)
                p_mw, p_t = _row_checks(v[rm], v[~rm])
                rows.append(
                    {
                        "subgroup": label,
                        "population": feature,
                        "tube": tube,
                        "parent": parent,
                        "scale": SCALE_CLR,
                        "effect_measure": "CLR difference (RM - control)",
                        "effect": float(fit.params[1]),
                        "ci_low": lo,
                        "ci_high": hi,
                        "ratio": float(np.exp(fit.params[1])),
                        "p": float(fit.pvalues[1]),
                        "q": np.nan,
                        "test": f"OLS on CLR of {len(feats)} sibling populations, adjusted for {cov_text}",
                        "n_rm": int(rm.sum()),
                        "n_control": int((~rm).sum()),
                        "mean_rm": float(v[rm].mean()),
                        "mean_control": float(v[~rm].mean()),
                        "dispersion": fit.scale,
                        "p_mannwhitney": p_mw,
                        "p_welch_t": p_t,
                        "converged": True,
                    }
                )
                data.append(
                    pd.DataFrame(
                        {
                            "subgroup": label,
                            "woman_id": wide.index.to_numpy(),
                            "group": c["group"].to_numpy(),
                            "population": feature,
                            "scale": SCALE_CLR,
                            "value": v,
                        }
                    )
                )
    return rows, data, global_p


def _family_qvalues(fam: pd.DataFrame, global_p: dict[tuple[str, str], float]) -> pd.DataFrame:
    keys = (fam["tube"].astype(str) + "\x1f" + fam["parent"].astype(str)).to_numpy()
    p = fam["p"].to_numpy(float)
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
        Numeric adjustment covariates (standardised).
    batch : str or None, default "plate"
        Clinical column used as a batch factor; ignored when it has one level.
    subgroup : str or None
        A clinical column of RM women (e.g. ``"rm_type"``): each level is also
        compared with all controls.
    scales : sequence of str
        Which scales to test: ``"% of parent"`` and/or ``"composition (CLR)"``.
    missing : {"error", "drop", "impute"}, default "error"
        Missing-value and unmatched-women policy (see :func:`validate_clinical`).

    Returns
    -------
    ComparisonResult

    Raises
    ------
    ClinicalDataError
        Invalid clinical record, missing values or unmatched women under the policy.

    Examples
    --------
    >>> from flowtools.stats import compare, read_clinical, tables_from_truth  # doctest: +SKIP
    >>> res = compare(tables_from_truth("cohort"), read_clinical("cohort/clinical.csv"))  # doctest: +SKIP
    >>> res.table[["population", "scale", "effect", "q"]]  # doctest: +SKIP
    """
    needed = [*covariates, *([batch] if batch else []), *([subgroup] if subgroup else [])]
    source = clinical.attrs.get("source", "<clinical table>")
    clin = validate_clinical(
        clinical, missing=missing, required=[c for c in needed if c != subgroup], source=source
    )
    dropped = list(clinical.attrs.get("dropped", [])) + list(clin.attrs.get("dropped", []))
    counts, clin, unmatched = join_women(counts, clin, missing=missing, source=source)
    if batch is not None and clin[batch].nunique() < 2:
        batch_used = None
    else:
        batch_used = batch
    all_rows, all_data, gp = _compare_one(
        counts, clin, label="all RM", covariates=covariates, batch=batch_used, scales=scales
    )
    global_p = {"all RM": gp}
    if subgroup is not None:
        rm_levels = sorted(clin.loc[clin["group"] == "RM", subgroup].dropna().astype(str).unique())
        for lev in rm_levels:
            keep = (clin["group"] != "RM") | (clin[subgroup].astype(str) == lev)
            r, d, gp = _compare_one(
                counts,
                clin[keep],
                label=f"{subgroup}={lev}",
                covariates=covariates,
                batch=batch_used,
                scales=scales,
            )
            global_p[f"{subgroup}={lev}"] = gp
            all_rows += r
            all_data += d
    table = pd.DataFrame.from_records(all_rows)
    if table.empty:
        table = pd.DataFrame(columns=_TABLE_COLUMNS)
    table["q"] = np.nan
    table["p_group"] = np.nan
    table["q_group"] = np.nan
    table["correction"] = CORRECTION
    for (sg, _), idx in table.groupby(["subgroup", "scale"], sort=False).groups.items():
        table.loc[idx, ["q", "p_group", "q_group"]] = _family_qvalues(table.loc[idx], global_p.get(sg, {}))
    table = table[_TABLE_COLUMNS].reset_index(drop=True)
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
        "dropped_women": sorted(set(dropped + unmatched)),
        "n_women": int(clin.shape[0]),
        "n_rm": int((clin["group"] == "RM").sum()),
        "n_control": int((clin["group"] == "control").sum()),
        "q_family": "(subgroup, scale)",
        "correction": CORRECTION,
    }
    return ComparisonResult(table=table, data=data, parameters=params)
