"""``tables_from_gate`` takes each population's parent and parent count from populations.csv."""

from __future__ import annotations

import pandas as pd

from flowtools.stats.tables import tables_from_gate


def _pops(**extra) -> pd.DataFrame:
    base = {
        "sample_id": ["S1"] * 3 + ["S2"] * 3,
        "woman_id": ["W1"] * 3 + ["W2"] * 3,
        "tube": "T",
        "plate": "P01",
        "well": "A01",
        "population": ["qc", "qc/lymphocytes", "qc/lymphocytes/NK cells"] * 2,
        "count": [997, 400, 40, 1000, 500, 0],
        # rounded, as a reader of an old file had them: 997 of 1003 events is 99.4%
        "pct_parent": [99.4, 40.1, 10.0, 100.0, 50.0, 0.0],
        "pct_total": 0.0,
    }
    return pd.DataFrame({**base, **extra})


def test_parent_count_is_the_files_exactly(tmp_path):
    pops = _pops(
        gate_id=["qc", "qc__lymphocytes", "qc__lymphocytes__NK_cells"] * 2,
        parent=["", "qc", "qc/lymphocytes"] * 2,
        role=["qc", "", ""] * 2,
        # the top level's parent is all events of the file (not estimable from a rounded %);
        # a parent count below that need not be the parent row's count either (a helper gate between)
        parent_count=[1003, 997, 399, 1000, 1000, 500],
    )
    pops.to_csv(tmp_path / "populations.csv", index=False)
    t = tables_from_gate(tmp_path, keep_technical=True).set_index(["woman_id", "population"])
    assert t.loc[("W1", "qc"), "parent_count"] == 1003
    assert t.loc[("W1", "qc"), "parent"] == ""
    assert t.loc[("W1", "qc/lymphocytes"), "parent_count"] == 997
    assert t.loc[("W1", "qc/lymphocytes/NK cells"), "parent_count"] == 399
    assert t.loc[("W1", "qc/lymphocytes/NK cells"), "parent"] == "qc/lymphocytes"
    assert t.loc[("W1", "qc/lymphocytes/NK cells"), "pct_parent"] == 100.0 * 40 / 399
    assert t.loc[("W2", "qc/lymphocytes"), "parent_count"] == 1000
    # the parquet twin reads the same
    pops.to_parquet(tmp_path / "populations.parquet", index=False)
    pd.testing.assert_frame_equal(tables_from_gate(tmp_path / "populations.parquet", keep_technical=True),
                                  tables_from_gate(tmp_path, keep_technical=True))


def test_role_qc_gates_are_technical_as_well_as_the_named_ones(tmp_path):
    # "lymphocytes" marked qc in this (made-up) template: dropped; "qc" by its name
    pops = _pops(parent=["", "qc", "qc/lymphocytes"] * 2, role=["", "qc", ""] * 2,
                 parent_count=[1003, 997, 400, 1000, 1000, 500])
    pops.to_csv(tmp_path / "populations.csv", index=False)
    assert sorted(set(tables_from_gate(tmp_path)["population"])) == ["qc/lymphocytes/NK cells"]
    pops.assign(role="").to_csv(tmp_path / "populations.csv", index=False)
    kept = sorted(set(tables_from_gate(tmp_path)["population"]))
    assert kept == ["qc/lymphocytes", "qc/lymphocytes/NK cells"]
    assert len(tables_from_gate(tmp_path, keep_technical=True)) == 6


def test_old_table_without_the_columns_falls_back_to_the_estimate(tmp_path):
    _pops().to_csv(tmp_path / "populations.csv", index=False)
    t = tables_from_gate(tmp_path, keep_technical=True).set_index(["woman_id", "population"])
    # the top level's parent count from the rounded %: round(997 * 100 / 99.4) = 1003
    assert t.loc[("W1", "qc"), "parent_count"] == 1003
    assert t.loc[("W1", "qc/lymphocytes"), "parent_count"] == 997  # joined from the parent's row
    assert t.loc[("W1", "qc/lymphocytes/NK cells"), "parent_count"] == 400
    assert t.loc[("W2", "qc/lymphocytes/NK cells"), "parent"] == "qc/lymphocytes"
