"""The batch tables are written without pandas: byte for byte what pandas writes for the same frame."""

from __future__ import annotations

import io
import math

import hypothesis.strategies as st
import numpy as np
import pandas as pd
import pyarrow as pa
from hypothesis import given, settings

from flowtools.analysis.populations import TABLE_COLUMNS, population_table
from flowtools.io.tables import Table
from flowtools.pipeline.outdir import per_woman as _per_woman

_FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, -0.0, 1e-7, 1e16, 1e15, 0.1 + 0.2, 100.0, 2.5e-5, float("nan")]),
)
_TEXT = st.text(alphabet=st.sampled_from(list('ab ,"\'|/+-x1\n\r')), max_size=6)


# The constant strategies are built once (not at each draw): the same draws, without re-validating a
# fresh strategy object per field per record.
_N_RECORDS = st.integers(1, 25)
_WOMEN = st.lists(_TEXT, min_size=1, max_size=5)
_TUBE = st.sampled_from(["T1", "T,2"])
_POPULATION = st.sampled_from(["a", "a/b", 'a/"c"', "d e"])
_PARENT = st.sampled_from(["", "a", 'a/"c"'])
_ROLE = st.sampled_from(["", "qc"])
_COUNT = st.integers(0, 10**12)
_MFIS = st.sets(st.sampled_from(["mfi_CD3", "mfi_CD3_transformed", "mfi_CD19"]))


@st.composite
def _records(draw: st.DrawFn) -> list[dict]:
    n = draw(_N_RECORDS)
    women = draw(_WOMEN)
    woman = st.sampled_from(women)
    out = []
    for _ in range(n):
        rec = {
            "sample_id": draw(_TEXT), "woman_id": draw(woman),
            "tube": draw(_TUBE), "plate": "P1", "well": draw(_TEXT),
            "population": draw(_POPULATION), "gate_id": draw(_TEXT),
            "parent": draw(_PARENT), "role": draw(_ROLE),
            "count": draw(_COUNT), "parent_count": draw(_COUNT),
            "pct_parent": draw(_FLOATS), "pct_total": draw(_FLOATS),
            "status": draw(st.sampled_from(["ok", "flagged", "failed"])), "reason": draw(_TEXT),
        }
        for m in draw(_MFIS):
            rec[m] = draw(_FLOATS)
        out.append(rec)
    return out


def _pandas_tables(records: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What the batch runner wrote with pandas (its code before the pandas-free writer)."""
    pops = pd.DataFrame.from_records(records)
    front = ["sample_id", "woman_id", "tube", "plate", "well", "population", "gate_id", "parent", "role",
             "count", "parent_count", "pct_parent", "pct_total", "status", "reason"]
    pops = pops[front + sorted(c for c in pops.columns if c.startswith("mfi_"))]
    wide = pops.assign(column=pops["tube"] + "|" + pops["population"]).pivot_table(
        index="woman_id", columns="column", values="pct_parent", aggfunc="first")
    wide = wide.reindex(sorted(wide.columns), axis=1).reset_index()
    wide.columns.name = None
    return pops, wide


def _table(records: list[dict]) -> Table:
    return population_table(records)


def test_population_table_columns():
    assert TABLE_COLUMNS == ("sample_id", "woman_id", "tube", "plate", "well", "population", "gate_id",
                             "parent", "role", "count", "parent_count", "pct_parent", "pct_total", "status",
                             "reason")
    rec = {"sample_id": "S", "woman_id": "W", "tube": "T", "plate": "P", "well": "A1", "population": "a",
           "gate_id": "a", "parent": "", "count": 3, "parent_count": 4, "pct_parent": 75.0, "pct_total": 75.0,
           "mfi_CD3": 1.5}
    t = population_table([rec])  # no role (rows of a template without roles): empty
    assert t.columns == [*TABLE_COLUMNS, "mfi_CD3"]
    assert t.to_csv().splitlines()[1] == "S,W,T,P,A1,a,a,,,3,4,75.0,75.0,ok,,1.5"


def test_a_failed_population_has_empty_counts_and_the_count_columns_stay_integer():
    base = {"sample_id": "S", "woman_id": "W", "tube": "T", "plate": "P", "well": "A1", "gate_id": "",
            "parent": "", "role": ""}
    nan = math.nan
    recs = [{**base, "population": "a", "count": 3, "parent_count": 4, "pct_parent": 75.0, "pct_total": 75.0},
            {**base, "population": "a/b", "count": nan, "parent_count": nan, "pct_parent": nan,
             "pct_total": nan, "status": "failed", "reason": "no valley"}]
    t = population_table(recs)
    lines = t.to_csv().splitlines()
    assert lines[1] == "S,W,T,P,A1,a,,,,3,4,75.0,75.0,ok,"
    assert lines[2] == "S,W,T,P,A1,a/b,,,,,,,,failed,no valley"
    arrow = t.to_arrow()
    assert arrow.schema.field("count").type == pa.int64()
    assert arrow.column("count").to_pylist() == [3, None]


# One property test for both tables: drawing the records is ~70% of its time, so each draw is checked
# against both pandas tables (150 examples each, as when they were two tests).
@settings(max_examples=150, deadline=None)
@given(_records())
def test_population_and_per_woman_tables_match_pandas(records):
    pops, wide = _pandas_tables(records)
    t = _table(records)
    assert t.to_csv() == pops.to_csv(index=False, lineterminator="\n")
    ours = t.to_arrow()
    theirs = pa.Table.from_pandas(pops, preserve_index=False)
    assert ours.schema.names == theirs.schema.names
    assert [f.type for f in ours.schema] == [f.type for f in theirs.schema]
    assert ours.to_pydict() == theirs.to_pydict() or _same_with_nulls(ours, theirs)
    # the per-woman pivot, also with no value at all
    assert _per_woman(records).to_csv() == wide.to_csv(index=False, lineterminator="\n")


def _same_with_nulls(a: pa.Table, b: pa.Table) -> bool:
    for x, y in zip(a.columns, b.columns, strict=True):
        xs, ys = x.to_pylist(), y.to_pylist()
        for u, v in zip(xs, ys, strict=True):
            nan = isinstance(u, float) and np.isnan(u) and np.isnan(v)
            if not (u == v or (u is None and v is None) or nan):
                return False
    return True


def test_per_woman_drops_women_and_columns_without_any_value():
    nan = math.nan
    recs = [
        {"woman_id": "W2", "tube": "T", "population": "a", "pct_parent": 10.0},
        {"woman_id": "W1", "tube": "T", "population": "a", "pct_parent": nan},
        {"woman_id": "W1", "tube": "T", "population": "a", "pct_parent": 5.5},  # first non-NaN wins
        {"woman_id": "W3", "tube": "T", "population": "b", "pct_parent": nan},  # no value: no row, no column
        {"woman_id": "W2", "tube": "T", "population": "a", "pct_parent": 99.0},  # a later duplicate: ignored
    ]
    t = _per_woman(recs)
    assert t.to_csv() == "woman_id,T|a\nW1,5.5\nW2,10.0\n"
    assert pd.read_csv(io.StringIO(t.to_csv())).shape == (2, 2)
