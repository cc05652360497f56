"""Analyte comparison RM vs control and the join with the cell per-woman table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import mannwhitneyu

from flowtools.stats.analytes import analyte_wide, censored_values, compare_analytes, join_cells
from flowtools.stats.errors import ImmuneTableError


def _table():
    rng = np.random.default_rng(0)
    rows, clin = [], []
    for i in range(20):
        w, g = f"W{i:03d}", "RM" if i < 10 else "control"
        clin.append({"woman_id": w, "group": g})
        il6 = float(np.exp(rng.normal(np.log(40 if g == "RM" else 10), 0.3)))
        rows.append({"woman_id": w, "analyte": "IL-6", "concentration": il6, "flag": "ok", "limit": math.nan})
        if i in (12, 13):  # two controls below the LLOQ of IL-10
            rows.append(
                {"woman_id": w, "analyte": "IL-10", "concentration": math.nan, "flag": "<LLOQ", "limit": 2.0}
            )
        elif i == 3:  # one RM woman above the ULOQ
            rows.append(
                {
                    "woman_id": w,
                    "analyte": "IL-10",
                    "concentration": math.nan,
                    "flag": ">ULOQ",
                    "limit": 500.0,
                }
            )
        elif i == 4:
            rows.append(
                {
                    "woman_id": w,
                    "analyte": "IL-10",
                    "concentration": math.nan,
                    "flag": "missing",
                    "limit": math.nan,
                }
            )
        else:
            rows.append(
                {
                    "woman_id": w,
                    "analyte": "IL-10",
                    "concentration": float(rng.uniform(5, 20)),
                    "flag": "ok",
                    "limit": math.nan,
                }
            )
    return pd.DataFrame(rows), pd.DataFrame(clin)


def test_censored_values_rule():
    df, _ = _table()
    v = censored_values(df)
    low = df["flag"] == "<LLOQ"
    assert (v[low] == 1.0).all()  # LLOQ / 2
    assert (v[df["flag"] == ">ULOQ"] == 500.0).all()
    assert v[df["flag"] == "missing"].isna().all()


def test_compare_counts_censored_and_matches_scipy():
    df, clin = _table()
    out = compare_analytes(df, clin).set_index("analyte")
    il10 = out.loc["IL-10"]
    assert (
        il10["below_lloq_control"],
        il10["below_lloq_case"],
        il10["above_uloq_case"],
        il10["missing"],
    ) == (2, 0, 1, 1)
    assert (il10["n_case"], il10["n_control"]) == (9, 10)
    il6 = out.loc["IL-6"]
    a = np.log10(df[(df.analyte == "IL-6") & df.woman_id.isin(clin.woman_id[:10])]["concentration"])
    b = np.log10(df[(df.analyte == "IL-6") & df.woman_id.isin(clin.woman_id[10:])]["concentration"])
    assert il6["p_mannwhitney"] == pytest.approx(mannwhitneyu(a, b).pvalue)
    assert il6["fold_change"] == pytest.approx(10 ** (a.mean() - b.mean()))
    assert il6["q_mannwhitney"] <= 0.01 and il6["fold_change"] > 2
    assert out["q_mannwhitney"].notna().all()


def test_join_cells_adds_bead_columns():
    df, _ = _table()
    cells = pd.DataFrame({"woman_id": ["W000", "W001", "W999"], "TBNK-NK|NK cells": [10.0, 12.0, 9.0]})
    joined = join_cells(cells, df)
    assert list(joined.columns) == ["woman_id", "TBNK-NK|NK cells", "beads|IL-10", "beads|IL-6"]
    assert joined["beads|IL-6"].iloc[2] != joined["beads|IL-6"].iloc[2]  # NaN: no bead data
    assert len(analyte_wide(df)) == 20


def test_missing_column_is_an_error():
    with pytest.raises(ImmuneTableError, match="flag"):
        compare_analytes(
            pd.DataFrame({"woman_id": ["a"], "analyte": ["x"], "concentration": [1.0], "limit": [1]}),
            pd.DataFrame({"woman_id": ["a"], "group": ["RM"]}),
        )
