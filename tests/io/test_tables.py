"""The one table writer: CSV + Parquet (provenance in its metadata), atomic, for Tables and DataFrames."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flowtools.io.tables import PROVENANCE_KEY, Table, table_bytes, write_table

PROV = {"command": "test", "inputs": {"x": "abc"}}


def _old_dataframe_parquet(df: pd.DataFrame) -> bytes:
    """What the cluster and statistics writers wrote (their code before the shared writer)."""
    t = pa.Table.from_pandas(df, preserve_index=False)
    meta = {**(t.schema.metadata or {}), b"flowtools.provenance": json.dumps(PROV).encode()}
    t = t.replace_schema_metadata(meta)
    sink = pa.BufferOutputStream()
    pq.write_table(t, sink)
    return sink.getvalue().to_pybytes()


def test_dataframe_writes_what_the_former_writers_wrote(tmp_path):
    df = pd.DataFrame({"feature": ["T|a", 'T|"b"'], "p": [0.5, math.nan], "n": [3, 4], "ok": [True, False]})
    paths = write_table(df, tmp_path / "sub" / "comparison", PROV, provenance_file=True)
    assert [p.name for p in paths] == ["comparison.csv", "comparison.parquet", "comparison.provenance.json"]
    assert paths[0].read_text(encoding="utf-8") == df.to_csv(index=False, lineterminator="\n")
    assert paths[1].read_bytes() == _old_dataframe_parquet(df)
    assert json.loads(paths[2].read_text(encoding="utf-8")) == PROV
    back = pq.read_table(paths[1])
    assert json.loads(back.schema.metadata[PROVENANCE_KEY]) == PROV
    pd.testing.assert_frame_equal(back.to_pandas(), df)
    assert [p.name for p in write_table(df, tmp_path / "t", PROV)] == ["t.csv", "t.parquet"]
    assert not (tmp_path / "t.provenance.json").exists()


def test_table_writes_its_csv_and_arrow_with_provenance(tmp_path):
    t = Table({"id": ["a", "b,c"], "count": [1, 2], "x": [0.1, math.nan]})
    csv_path, pq_path = write_table(t, tmp_path / "populations", PROV)
    assert csv_path.read_text(encoding="utf-8") == t.to_csv() == 'id,count,x\na,1,0.1\n"b,c",2,\n'
    back = pq.read_table(pq_path)
    assert back.schema.names == ["id", "count", "x"]
    assert [f.type for f in back.schema] == [pa.string(), pa.int64(), pa.float64()]
    assert back.column("x").to_pylist() == [0.1, None]
    assert json.loads(back.schema.metadata[PROVENANCE_KEY]) == PROV


def test_a_failing_table_leaves_the_files_as_they_were(tmp_path):
    good = pd.DataFrame({"a": [1]})
    write_table(good, tmp_path / "x", PROV)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    bad = pd.DataFrame({"a": [1, "text", np.arange(2)]})  # pyarrow cannot store this column
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        write_table(bad, tmp_path / "x", PROV)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # not even the CSV changed


def test_table_bytes_is_what_write_table_writes(tmp_path):
    df = pd.DataFrame({"a": [1.5, 2.5]})
    text, data = table_bytes(df, PROV)
    csv_path, pq_path = write_table(df, tmp_path / "y", PROV)
    assert csv_path.read_text(encoding="utf-8") == text and pq_path.read_bytes() == data


def test_import_is_light():
    import subprocess
    import sys

    code = ("import sys, flowtools.io.tables; "
            "print(sorted(m for m in ('pandas', 'pyarrow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
