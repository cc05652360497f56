"""Soluble immune markers (bead-array concentrations) beside the cells: per-woman table and RM vs control.

Input: the per-woman table of :func:`flowtools.beads.plate.run_bead_plate`
(``per_woman.csv``/``.parquet``: ``woman_id, analyte, concentration, flag, limit, lloq, uloq, ...``).

Censored values (explicit rule, :func:`censored_values`)
    ``ok``: the concentration; ``<LLOQ``: **LLOQ / 2** (the well's limit, sample units);
    ``>ULOQ``: **the ULOQ**; anything else (failed well, missing region, no curve): missing.
    The number of censored women per group is reported with every comparison. Mann-Whitney
    is rank-based, so for a common LLOQ the LLOQ/2 substitution only says "lowest, tied";
    the fold change on log values does depend on the rule and is labelled as such.

:func:`compare_analytes` compares RM with control women per analyte on ``log10``
concentration: Mann-Whitney U (two-sided) and Welch's t on the logs, Benjamini-Hochberg
q-values over the analytes for each. :func:`analyte_wide` gives one row per woman and one
``beads|<analyte>`` column per analyte (the censored values above), and
:func:`join_cells` joins that to the cell ``per_woman`` table so the comparison and
prediction stages can use both.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from flowtools.stats._glm import bh_qvalues, welch_t
from flowtools.stats.errors import ImmuneTableError

__all__ = [
    "FEATURE_PREFIX",
    "analyte_wide",
    "censored_values",
    "compare_analytes",
    "join_cells",
    "read_analytes",
]

FEATURE_PREFIX = "beads|"
_NEEDED = ("woman_id", "analyte", "concentration", "flag", "limit")


def read_analytes(path: str | os.PathLike[str] | pd.DataFrame) -> pd.DataFrame:
    """Read (and check) a bead per-woman table (CSV or Parquet, or a DataFrame).

    Raises
    ------
    ImmuneTableError
        A required column is missing (named with the file).
    """
    if isinstance(path, pd.DataFrame):
        df, where = path.copy(), "<per-woman analyte table>"
    else:
        p = Path(path)
        df = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p, dtype={"woman_id": str})
        where = str(p)
    missing = [c for c in _NEEDED if c not in df.columns]
    if missing:
        msg = f"{where}: bead per-woman table lacks column(s) {', '.join(missing)}"
        raise ImmuneTableError(msg)
    df["woman_id"] = df["woman_id"].astype(str)
    df["flag"] = df["flag"].fillna("").astype(str)
    return df


def censored_values(per_woman: pd.DataFrame) -> pd.Series:
    """The value analysed per row: concentration, LLOQ/2 below range, ULOQ above, else NaN."""
    conc = pd.to_numeric(per_woman["concentration"], errors="coerce")
    limit = pd.to_numeric(per_woman["limit"], errors="coerce")
    flag = per_woman["flag"].astype(str)
    out = pd.Series(np.nan, index=per_woman.index)
    ok = flag.eq("ok") & conc.gt(0)
    out[ok] = conc[ok]
    low = flag.eq("<LLOQ")
    out[low] = limit[low] / 2.0
    high = flag.eq(">ULOQ")
    out[high] = limit[high]
    return out


def analyte_wide(per_woman: pd.DataFrame | str | os.PathLike[str]) -> pd.DataFrame:
    """One row per woman, one ``beads|<analyte>`` column of censored values (see the module docstring)."""
    df = read_analytes(per_woman)
    df = df.assign(value=censored_values(df))
    wide = df.pivot_table(index="woman_id", columns="analyte", values="value", aggfunc="first")
    wide.columns = [f"{FEATURE_PREFIX}{c}" for c in wide.columns]
    return wide.reset_index()


def join_cells(
    cells_per_woman: pd.DataFrame, per_woman: pd.DataFrame | str | os.PathLike[str]
) -> pd.DataFrame:
    """Join the cell ``per_woman`` table (``woman_id`` + feature columns) with the analytes, by woman.

    A left join: every woman of the cell table is kept; women without bead data get NaN.
    """
    wide = analyte_wide(per_woman)
    cells = cells_per_woman.copy()
    cells["woman_id"] = cells["woman_id"].astype(str)
    return cells.merge(wide, on="woman_id", how="left")


def compare_analytes(
    per_woman: pd.DataFrame | str | os.PathLike[str],
    clinical: pd.DataFrame | str | os.PathLike[str],
    *,
    group_column: str = "group",
    case: str = "RM",
    control: str = "control",
) -> pd.DataFrame:
    """RM vs control per analyte on log10 concentration (see the module docstring).

    Parameters
    ----------
    per_woman : DataFrame or path
        The bead per-woman table.
    clinical : DataFrame or path
        Must hold ``woman_id`` and ``group_column``.
    group_column, case, control : str

    Returns
    -------
    pandas.DataFrame
        One row per analyte: ``n_case, n_control`` (women with a value), ``below_lloq_case``,
        ``below_lloq_control``, ``above_uloq_case``, ``above_uloq_control``, ``missing``,
        ``median_case, median_control`` (sample units), ``fold_change`` (ratio of geometric
        means, censored values substituted), ``log10_difference``, ``p_mannwhitney``,
        ``q_mannwhitney``, ``p_welch``, ``q_welch``, ``censoring`` (the rule), sorted by
        ``p_mannwhitney``.

    Raises
    ------
    ImmuneTableError
        Missing columns, or no woman of either group.
    """
    from scipy.stats import mannwhitneyu

    df = read_analytes(per_woman)
    clin = (
        clinical.copy()
        if isinstance(clinical, pd.DataFrame)
        else pd.read_csv(clinical, dtype={"woman_id": str})
    )
    for c in ("woman_id", group_column):
        if c not in clin.columns:
            msg = f"clinical table lacks column {c!r}"
            raise ImmuneTableError(msg)
    clin["woman_id"] = clin["woman_id"].astype(str)
    df = df.assign(value=censored_values(df)).merge(
        clin[["woman_id", group_column]], on="woman_id", how="inner"
    )
    if not (df[group_column] == case).any() or not (df[group_column] == control).any():
        msg = f"bead table and clinical table share no {case!r} or no {control!r} women"
        raise ImmuneTableError(msg)
    rows = []
    for analyte, sub in df.groupby("analyte", sort=True):
        a = sub[sub[group_column] == case]
        b = sub[sub[group_column] == control]
        va, vb = a["value"].dropna().to_numpy(float), b["value"].dropna().to_numpy(float)
        row = {
            "analyte": analyte,
            "n_case": len(va),
            "n_control": len(vb),
            "below_lloq_case": int((a["flag"] == "<LLOQ").sum()),
            "below_lloq_control": int((b["flag"] == "<LLOQ").sum()),
            "above_uloq_case": int((a["flag"] == ">ULOQ").sum()),
            "above_uloq_control": int((b["flag"] == ">ULOQ").sum()),
            "missing": int(sub["value"].isna().sum()),
            "median_case": float(np.median(va)) if len(va) else math.nan,
            "median_control": float(np.median(vb)) if len(vb) else math.nan,
            "fold_change": math.nan,
            "log10_difference": math.nan,
            "p_mannwhitney": math.nan,
            "p_welch": math.nan,
        }
        if len(va) >= 2 and len(vb) >= 2:
            la, lb = np.log10(va), np.log10(vb)
            diff = float(la.mean() - lb.mean())
            row.update(
                fold_change=10**diff,
                log10_difference=diff,
                p_mannwhitney=float(mannwhitneyu(la, lb, alternative="two-sided").pvalue),
            )
            if np.ptp(np.concatenate([la, lb])) > 0:
                row["p_welch"] = float(welch_t(la, lb)[-1])
        rows.append(row)
    out = pd.DataFrame(rows)
    out["q_mannwhitney"] = bh_qvalues(out["p_mannwhitney"].to_numpy(float))
    out["q_welch"] = bh_qvalues(out["p_welch"].to_numpy(float))
    out["censoring"] = "<LLOQ as LLOQ/2, >ULOQ as ULOQ"
    cols = [
        "analyte",
        "n_case",
        "n_control",
        "below_lloq_case",
        "below_lloq_control",
        "above_uloq_case",
        "above_uloq_control",
        "missing",
        "median_case",
        "median_control",
        "fold_change",
        "log10_difference",
        "p_mannwhitney",
        "q_mannwhitney",
        "p_welch",
        "q_welch",
        "censoring",
    ]
    return out[cols].sort_values("p_mannwhitney", na_position="last").reset_index(drop=True)
