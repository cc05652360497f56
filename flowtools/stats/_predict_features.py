"""Features and task frames of the prediction models (:mod:`flowtools.stats.predict`).

The per-woman immune features of a count table, and the clinical features,
immune features and outcome of one task, with the women a task drops.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from flowtools.stats.tables import join_women, validate_clinical

# libraries whose versions go into the provenance record (as flowtools.stats.comparison.STATS_LIBRARIES)
_STATS_LIBRARIES = ("numpy", "scipy", "pandas", "statsmodels", "scikit-learn", "pyarrow")

TASKS = ("next_loss", "rm_vs_control")
CLINICAL_FEATURES: dict[str, tuple[str, ...]] = {
    "next_loss": ("age", "n_prior_losses"),
    "rm_vs_control": ("age", "bmi"),
}
MODELS = ("clinical", "immune", "clinical + immune")


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
