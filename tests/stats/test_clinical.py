"""Validation of the clinical record and of the clinical/immune join."""

from __future__ import annotations

import pandas as pd
import pytest

from flowtools.stats import ClinicalDataError, read_clinical
from flowtools.stats.tables import join_women

HEADER = (
    "woman_id,group,age,bmi,n_prior_losses,rm_type,smoking,cycle_day,plate,acquisition_date,"
    "next_pregnancy_loss\n"
)
ROWS = [
    "W1,RM,33,24.0,3,primary,never,10,P01,2023-01-02,1",
    "W2,control,30,22.1,0,,never,12,P01,2023-01-02,",
    "W3,RM,35,27.5,2,secondary,current,8,P01,2023-01-02,0",
]


def _write(tmp_path, rows):
    p = tmp_path / "clinical.csv"
    p.write_text(HEADER + "\n".join(rows) + "\n")
    return p


def test_valid_record_is_typed(tmp_path):
    df = read_clinical(_write(tmp_path, ROWS))
    assert df.age.dtype == "float64" and df.loc[1, "next_pregnancy_loss"] != df.loc[1, "next_pregnancy_loss"]


def test_duplicates_and_ranges_are_all_reported(tmp_path):
    rows = [
        *ROWS,
        "W1,RM,70,24,3,primary,never,10,P01,2023-01-02,1",
        "W4,RM,thirty,24,1,tertiary,never,10,P01,x,2",
    ]
    with pytest.raises(ClinicalDataError) as ei:
        read_clinical(_write(tmp_path, rows))
    msg = str(ei.value)
    for part in (
        "appears more than once",
        "70 is outside the plausible range 14-55",
        "'thirty' is not a number",
        "RM woman with 1 prior losses",
        "'tertiary' is not one of",
        "not a date",
        "line 5",
    ):
        assert part in msg, part
    assert len(ei.value.issues) >= 6


def test_missing_values_error_then_drop_or_impute(tmp_path):
    rows = [*ROWS, "W4,RM,,24,3,primary,never,10,P01,2023-01-02,1"]
    p = _write(tmp_path, rows)
    with pytest.raises(ClinicalDataError, match="missing value"):
        read_clinical(p)
    dropped = read_clinical(p, missing="drop")
    assert "W4" not in set(dropped.woman_id) and dropped.attrs["dropped"] == ["W4"]
    imputed = read_clinical(p, missing="impute")
    assert imputed.loc[imputed.woman_id == "W4", "age"].iloc[0] == 33.0


def test_missing_required_column(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("woman_id,group\nW1,RM\n")
    with pytest.raises(ClinicalDataError, match="'age'"):
        read_clinical(p)


def test_unknown_women_on_either_side(tmp_path):
    clin = read_clinical(_write(tmp_path, ROWS))
    counts = pd.DataFrame({"woman_id": ["W1", "W2", "W9"], "feature": "T|x"})
    with pytest.raises(ClinicalDataError) as ei:
        join_women(counts, clin)
    assert "'W9' has immune data but no clinical row" in str(ei.value)
    assert "'W3' has a clinical row but no immune data" in str(ei.value)
    c2, k2, dropped = join_women(counts, clin, missing="drop")
    assert dropped == ["W9", "W3"] and set(c2.woman_id) == {"W1", "W2"}
