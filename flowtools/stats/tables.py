"""Inputs of the statistics: the clinical record and the per-woman immune counts.

Two loaders give the same long count table (one row per woman and population):

* :func:`tables_from_gate` reads a ``flowtools gate`` output (``populations.csv``, whose
  ``parent`` and ``parent_count`` columns give each population's parent exactly);
* :func:`tables_from_truth` reads a synthetic cohort's ``truth/women.csv``
  (fast: cohorts made with ``write_fcs=False`` need no gating).

Count table columns (:data:`COUNT_COLUMNS`)
-------------------------------------------
woman_id : str
tube : str
population : str
    Population path as gated (``.../NK cells``).
feature : str
    ``"<tube>|<population>"``, the name used in ``per_woman.csv`` and in every
    statistics table.
parent : str
    Parent population path (empty for a top-level gate).
count, parent_count : int64
pct_parent : float64
    ``100 * count / parent_count``; NaN when the parent has no events.

Technical gates (QC, margin, debris, singlets, live/dead) are dropped: they
describe the acquisition, not the immune system. A gate is technical when its
template marks it ``role: qc`` (the ``role`` column of ``populations.csv``) or
when the shared name rule says so (:func:`flowtools.analysis.populations.is_qc_name`,
the rule the report falls back on).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from flowtools.analysis.populations import ROLE_BEADS, ROLE_QC, is_qc_name, read_populations
from flowtools.errors import SheetIssue
from flowtools.stats.errors import ClinicalDataError, ImmuneTableError

__all__ = [
    "CLINICAL_COLUMNS",
    "COUNT_COLUMNS",
    "MISSING_POLICIES",
    "join_women",
    "read_clinical",
    "tables_from_gate",
    "tables_from_truth",
    "validate_clinical",
]

_log = logging.getLogger(__name__)

COUNT_COLUMNS = ("woman_id", "tube", "population", "feature", "parent", "count", "parent_count", "pct_parent")
#: ``error``: stop on any missing value or unmatched woman; ``drop``: drop those women (logged and
#: recorded); ``impute``: numeric covariates get the median, unmatched women are still an error.
MISSING_POLICIES = ("error", "drop", "impute")

# name -> (kind, low, high, required)
CLINICAL_COLUMNS: dict[str, tuple[str, float | None, float | None, bool]] = {
    "woman_id": ("id", None, None, True),
    "group": ("group", None, None, True),
    "age": ("float", 14, 55, True),
    "bmi": ("float", 12, 70, False),
    "n_prior_losses": ("int", 0, 20, False),
    "rm_type": ("rm_type", None, None, False),
    "smoking": ("smoking", None, None, False),
    "cycle_day": ("int", 1, 60, False),
    "plate": ("str", None, None, False),
    "acquisition_date": ("date", None, None, False),
    "next_pregnancy_loss": ("binary", 0, 1, False),
}
_CHOICES = {
    "group": {"RM", "control"},
    "rm_type": {"primary", "secondary"},
    "smoking": {"never", "former", "current"},
}


def _blank(s: pd.Series) -> pd.Series:
    return s.isna() | (s.astype(str).str.strip() == "")


def read_clinical(
    path: str | os.PathLike[str], *, missing: str = "error", required: Sequence[str] = ()
) -> pd.DataFrame:
    """Read and validate a clinical record CSV (see :func:`validate_clinical`).

    Parameters
    ----------
    path : str or PathLike
    missing : {"error", "drop", "impute"}, default "error"
    required : sequence of str
        Columns that must be present and complete (beyond ``woman_id``, ``group``, ``age``).

    Returns
    -------
    pandas.DataFrame
        One row per woman, typed; ``df.attrs["dropped"]`` lists women dropped by the policy.

    Raises
    ------
    ClinicalDataError
        Every problem found, with CSV line numbers.
    """
    p = Path(path)
    try:
        raw = pd.read_csv(p, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ClinicalDataError(p, [SheetIssue(None, None, f"cannot read the file: {exc}")]) from None
    return validate_clinical(raw, missing=missing, required=required, source=str(p))


def validate_clinical(
    df: pd.DataFrame,
    *,
    missing: str = "error",
    required: Sequence[str] = (),
    source: str = "<clinical table>",
) -> pd.DataFrame:
    """Validate a clinical table: columns, types, ranges, choices, duplicates, missing values.

    Rules: ``woman_id`` unique and non-empty; ``group`` is ``RM`` or ``control``;
    age 14-55 years; BMI 12-70; ``n_prior_losses`` an integer 0-20, at least 2
    for RM women and at most 1 for controls; ``rm_type`` primary/secondary for RM
    women and empty for controls; smoking never/former/current; cycle day 1-60;
    ``acquisition_date`` ISO; ``next_pregnancy_loss`` 0/1 (empty allowed for
    controls). Controls' empty ``rm_type`` and outcome are not "missing".

    Parameters
    ----------
    df : pandas.DataFrame
        Raw table (strings or typed).
    missing : {"error", "drop", "impute"}, default "error"
        What to do with missing values in the columns used (the always required
        ones plus ``required``): stop, drop the women, or impute numeric
        columns with the median (categorical gaps are still errors).
    required : sequence of str
        Further columns that must be present and complete.
    source : str
        Name for messages.

    Returns
    -------
    pandas.DataFrame
        Typed copy, index reset; ``attrs["dropped"]`` lists dropped woman IDs,
        ``attrs["imputed"]`` maps column -> number of imputed values.

    Raises
    ------
    ClinicalDataError
    """
    if missing not in MISSING_POLICIES:
        msg = f"missing must be one of {MISSING_POLICIES}, not {missing!r}"
        raise ValueError(msg)
    issues: list[SheetIssue] = []
    df = df.copy()
    df.columns = [str(c).strip() for c in df.columns]
    needed = ["woman_id", "group", "age", *required]
    absent = [c for c in dict.fromkeys(needed) if c not in df.columns]
    if absent:
        raise ClinicalDataError(source, [SheetIssue(None, c, "required column is absent") for c in absent])
    line = pd.Series(np.arange(len(df)) + 2, index=df.index)  # header is line 1
    out = pd.DataFrame(index=df.index)
    out["woman_id"] = df["woman_id"].astype(str).str.strip()
    is_rm = df["group"].astype(str).str.strip() == "RM"
    incomplete: set = set()
    extra_numeric: set[str] = set()

    def note(idx: object, column: str, message: str) -> None:
        issues.append(SheetIssue(int(line[idx]), column, message))

    for idx in out.index[_blank(df["woman_id"])]:
        note(idx, "woman_id", "empty woman_id")
    dup = out["woman_id"].duplicated(keep=False) & ~_blank(df["woman_id"])
    for wid, rows in out[dup].groupby("woman_id").groups.items():
        lines = ", ".join(str(int(line[i])) for i in rows)
        issues.append(SheetIssue(None, "woman_id", f"woman {wid!r} appears more than once (lines {lines})"))

    for col in df.columns:
        spec = CLINICAL_COLUMNS.get(col)
        if spec is None:
            # a column outside the schema: its blanks count as missing when the analysis uses it, and
            # it is numeric when every filled value is a number (else categorical, as text)
            raw = df[col]
            blank = _blank(raw)
            if col in needed:
                incomplete.update(df.index[blank])
            num = pd.to_numeric(raw.where(~blank), errors="coerce")
            if (~blank).any() and num[~blank].notna().all():
                out[col] = num.astype("float64")
                extra_numeric.add(col)
            else:
                out[col] = raw.astype(str).str.strip().where(~blank, None) if raw.dtype == object else raw
            continue
        kind, lo, hi, _ = spec
        if col == "woman_id":
            continue
        raw = df[col]
        blank = _blank(raw)
        # controls legitimately have no RM type, no outcome and (often) no losses recorded
        exempt = (
            (~is_rm) & blank
            if col in ("rm_type", "next_pregnancy_loss")
            else pd.Series(data=False, index=df.index)
        )
        used = col in needed
        for idx in df.index[blank & ~exempt]:
            if used:
                incomplete.add(idx)
        if kind in ("float", "int", "binary"):
            num = pd.to_numeric(raw.where(~blank), errors="coerce")
            bad = ~blank & num.isna()
            for idx in df.index[bad]:
                note(idx, col, f"{raw[idx]!r} is not a number")
            if kind in ("int", "binary"):
                frac = ~num.isna() & (num != np.round(num))
                for idx in df.index[frac]:
                    note(idx, col, f"{raw[idx]!r} is not a whole number")
            rng = ~num.isna() & ((num < lo) | (num > hi))
            for idx in df.index[rng]:
                note(idx, col, f"{num[idx]:g} is outside the plausible range {lo:g}-{hi:g}")
            out[col] = num.astype("float64")
        elif kind in _CHOICES or kind == "group":
            val = raw.astype(str).str.strip()
            choices = _CHOICES[col]
            bad = ~blank & ~val.isin(choices)
            for idx in df.index[bad]:
                note(idx, col, f"{raw[idx]!r} is not one of {sorted(choices)}")
            out[col] = val.where(~blank, None)
        elif kind == "date":
            dates = pd.to_datetime(raw.where(~blank), errors="coerce", format="ISO8601")
            for idx in df.index[~blank & dates.isna()]:
                note(idx, col, f"{raw[idx]!r} is not a date (YYYY-MM-DD)")
            out[col] = dates
        else:
            out[col] = raw.astype(str).str.strip().where(~blank, None)

    if "n_prior_losses" in out:
        k = out["n_prior_losses"]
        for idx in out.index[is_rm & (k < 2)]:
            note(idx, "n_prior_losses", f"RM woman with {k[idx]:g} prior losses (RM means two or more)")
        for idx in out.index[~is_rm & (k > 1)]:
            note(idx, "n_prior_losses", f"control with {k[idx]:g} prior losses")
    if "rm_type" in out:
        for idx in out.index[~is_rm & out["rm_type"].notna()]:
            note(idx, "rm_type", "a control has an RM type")

    dropped: list[str] = []
    imputed: dict[str, int] = {}
    if incomplete:
        rows = sorted(incomplete)
        if missing == "error":
            for idx in rows:
                cols = [
                    c
                    for c in needed
                    if c in df.columns
                    and _blank(df[c])[idx]
                    and not (c in ("rm_type", "next_pregnancy_loss") and not is_rm[idx])
                ]
                note(idx, ",".join(cols), "missing value (pass missing='drop' or 'impute' to proceed)")
        elif missing == "drop":
            dropped = sorted(out.loc[rows, "woman_id"].tolist())
        else:
            for idx in rows:
                for c in needed:
                    if (
                        c in df.columns
                        and _blank(df[c])[idx]
                        and CLINICAL_COLUMNS.get(c, ("",))[0] not in ("float", "int")
                        and c not in extra_numeric
                    ):
                        if c in ("rm_type", "next_pregnancy_loss") and not is_rm[idx]:
                            continue
                        note(idx, c, "missing categorical value cannot be imputed (use missing='drop')")
    if issues:
        issues.sort(key=lambda i: (i.line or 0, i.column or ""))
        raise ClinicalDataError(source, issues)
    if dropped:
        _log.warning(
            "clinical record: dropped %d women with missing values: %s", len(dropped), ", ".join(dropped)
        )
        out = out[~out["woman_id"].isin(dropped)]
    if missing == "impute":
        for c in needed:
            numeric = CLINICAL_COLUMNS.get(c, ("",))[0] in ("float", "int") or c in extra_numeric
            if c in out and numeric and out[c].isna().any():
                imputed[c] = int(out[c].isna().sum())
                out[c] = out[c].fillna(out[c].median())
    out = out.reset_index(drop=True)
    out.attrs["dropped"] = dropped
    out.attrs["imputed"] = imputed
    out.attrs["source"] = source
    return out


def _technical(df: pd.DataFrame) -> pd.Series:
    """Rows of technical gates: ``role`` "qc" or "counting_beads" (where the table has it) or named so."""
    technical = df["population"].map(is_qc_name).astype(bool)
    if "role" in df.columns:
        technical |= df["role"].fillna("").astype(str).isin((ROLE_QC, ROLE_BEADS))
    return technical


def _finish(df: pd.DataFrame, *, keep_technical: bool) -> pd.DataFrame:
    if not keep_technical:
        df = df[~_technical(df)]
    df = df.assign(feature=df["tube"] + "|" + df["population"])
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = np.where(df["parent_count"] > 0, 100.0 * df["count"] / df["parent_count"], np.nan)
    df = df.assign(
        pct_parent=pct, count=df["count"].astype("int64"), parent_count=df["parent_count"].astype("int64")
    )
    return df[list(COUNT_COLUMNS)].sort_values(["feature", "woman_id"]).reset_index(drop=True)


def tables_from_gate(path: str | os.PathLike[str], *, keep_technical: bool = False) -> pd.DataFrame:
    """Read the gated counts of a ``flowtools gate`` run.

    Parameters
    ----------
    path : str or PathLike
        The gate output folder, its ``populations.csv``/``.parquet``, or its
        ``per_woman.csv`` (the ``populations.csv`` beside it supplies the counts).
    keep_technical : bool, default False
        Keep the QC/scatter gates.

    Returns
    -------
    pandas.DataFrame
        The count table (:data:`COUNT_COLUMNS`).

    Raises
    ------
    ImmuneTableError

    Notes
    -----
    Each population's parent and parent count are the file's ``parent`` and
    ``parent_count`` columns, as the run counted them (the top level's parent is all
    events of the file). A file written before those columns existed gets them from the
    paths instead, the top level's count estimated from its rounded % of parent
    (:func:`_parents_of_old_table`).
    """
    p = Path(path)
    if p.is_dir():
        p = p / "populations.csv"
    elif p.name.startswith("per_woman"):
        p = p.with_name("populations.csv")
    if not p.is_file():
        msg = (
            f"{p}: not found; the GLM needs counts, which are in populations.csv from `flowtools gate` "
            "(per_woman.csv holds percentages only)"
        )
        raise ImmuneTableError(msg)
    try:
        pops = read_populations(p)
    except (OSError, ValueError) as exc:
        msg = f"{p}: cannot read: {exc}"
        raise ImmuneTableError(msg) from None
    need = {"sample_id", "woman_id", "tube", "population", "count", "pct_parent"}
    if not need <= set(pops.columns):
        msg = f"{p}: missing columns {sorted(need - set(pops.columns))}"
        raise ImmuneTableError(msg)
    dup = pops.duplicated(["woman_id", "tube", "population"])
    if dup.any():
        first = pops[dup].iloc[0]
        msg = (
            f"{p}: woman {first['woman_id']} has more than one {first['tube']} sample "
            f"(population {first['population']!r}); keep one sample per woman and tube"
        )
        raise ImmuneTableError(msg)
    if {"parent", "parent_count"} <= set(pops.columns):
        out = pops[["woman_id", "tube", "population", "parent", "count", "parent_count"]].copy()
        out["parent"] = out["parent"].fillna("").astype(str)
    else:
        out = _parents_of_old_table(pops)
    if "role" in pops.columns:
        out["role"] = pops["role"]
    return _finish(out[out["parent_count"].notna()], keep_technical=keep_technical)


def _parents_of_old_table(pops: pd.DataFrame) -> pd.DataFrame:
    """Parent and parent count of a ``populations.csv`` without those columns (an older flowtools run).

    The parent is the path without its last segment, and its count is joined from the
    parent's row of the same sample. A top-level population's parent (all events) has no
    row: its count is estimated as ``round(count * 100 / pct_parent)``, exact only as far as
    the rounded percentage allows, and dropped (with the population) where ``pct_parent`` is
    0 or NaN. Files with the columns use the exact counts the run recorded.
    """
    pops = pops[["sample_id", "woman_id", "tube", "population", "count", "pct_parent"]].copy()
    pops["parent"] = pops["population"].str.rpartition("/")[0]
    par = pops[["sample_id", "population", "count"]].rename(
        columns={"population": "parent", "count": "parent_count"}
    )
    out = pops.merge(par, on=["sample_id", "parent"], how="left")
    out.index = pops.index  # one parent row per sample and path: the merge keeps the rows, in order
    top = out["parent_count"].isna()
    with np.errstate(divide="ignore", invalid="ignore"):
        est = np.round(out["count"] * 100.0 / out["pct_parent"])
    out.loc[top, "parent_count"] = est[top]
    return out.replace([np.inf, -np.inf], np.nan)


# In the truth every population exists in both tubes (it is the biology); a gate run measures
# CD4 subsets in Treg-Th and the other lineages in TBNK-NK, so the truth table takes each
# population from the tube that gates it.
_TREG_TUBE_PREFIX = "Singlets/Live/Lymphocytes/T cells/CD4/"


def tables_from_truth(cohort_dir: str | os.PathLike[str], *, keep_technical: bool = False) -> pd.DataFrame:
    """Read the true per-woman counts of a synthetic cohort (``truth/women.csv``).

    Parameters
    ----------
    cohort_dir : str or PathLike
        Folder written by ``flowtools synth`` (``make_cohort``), or its ``truth/`` folder.
    keep_technical : bool, default False

    Returns
    -------
    pandas.DataFrame
        The count table (:data:`COUNT_COLUMNS`), each population from the tube
        that gates it (CD4 subsets from Treg-Th, the rest from TBNK-NK).

    Raises
    ------
    ImmuneTableError
    """
    d = Path(cohort_dir)
    f = d / "women.csv" if (d / "women.csv").is_file() else d / "truth" / "women.csv"
    if not f.is_file():
        msg = f"{d}: no truth/women.csv (is this a cohort written by `flowtools synth`?)"
        raise ImmuneTableError(msg)
    t = pd.read_csv(f, dtype={"woman_id": str, "parent": str}, keep_default_na=False)
    in_treg = t["population"].str.startswith(_TREG_TUBE_PREFIX)
    keep = np.where(in_treg, t["tube"] == "Treg-Th", t["tube"] == "TBNK-NK")
    t = t[keep]
    return _finish(
        t[["woman_id", "tube", "population", "parent", "count", "parent_count"]],
        keep_technical=keep_technical,
    )


def join_women(
    counts: pd.DataFrame, clinical: pd.DataFrame, *, missing: str = "error", source: str = "<clinical table>"
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Match the immune and clinical tables on ``woman_id``.

    Parameters
    ----------
    counts : pandas.DataFrame
        Count table.
    clinical : pandas.DataFrame
        Validated clinical table.
    missing : {"error", "drop", "impute"}
        ``drop`` drops women found on one side only; otherwise they are an error.

    Returns
    -------
    counts, clinical : pandas.DataFrame
        Restricted to the women on both sides.
    dropped : list of str

    Raises
    ------
    ClinicalDataError
        Women on one side only (unless ``missing="drop"``).
    """
    ci = set(counts["woman_id"].astype(str))
    cc = set(clinical["woman_id"].astype(str))
    only_immune, only_clinical = sorted(ci - cc), sorted(cc - ci)
    if (only_immune or only_clinical) and missing != "drop":
        issues = [
            SheetIssue(None, "woman_id", f"woman {w!r} has immune data but no clinical row")
            for w in only_immune
        ]
        issues += [
            SheetIssue(None, "woman_id", f"woman {w!r} has a clinical row but no immune data")
            for w in only_clinical
        ]
        issues.append(
            SheetIssue(None, None, "pass missing='drop' (--missing drop) to analyse the women on both sides")
        )
        raise ClinicalDataError(source, issues)
    both = ci & cc
    dropped = only_immune + only_clinical
    if dropped:
        _log.warning("dropped %d women found on one side only: %s", len(dropped), ", ".join(dropped))
    return (
        counts[counts["woman_id"].isin(both)].reset_index(drop=True),
        clinical[clinical["woman_id"].isin(both)].reset_index(drop=True),
        dropped,
    )
