"""The one writer of flowtools' output tables: CSV + Parquet, provenance in the Parquet metadata.

Every table a command writes (``populations``, ``per_woman``, the cluster and statistics
tables) goes through :func:`write_table`: ``<stem>.csv`` and ``<stem>.parquet``, the
provenance record under the Parquet schema metadata key :data:`PROVENANCE_KEY` (and, on
request, beside them as ``<stem>.provenance.json``). Both files' contents are computed
before either is written, and each is written atomically (temporary file, then rename), so
a failure leaves no file half-updated and no CSV newer than its Parquet twin.

A table is a :class:`Table` (named columns of plain Python values, written without pandas:
the batch runner's tables) or a ``pandas.DataFrame`` (written as ``to_csv(index=False)`` and
``pyarrow.Table.from_pandas``). pandas and pyarrow are imported only when a table is written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from flowtools.provenance import atomic_write_bytes, atomic_write_text

__all__ = ["PROVENANCE_KEY", "Table", "csv_text", "table_bytes", "write_table"]

#: Parquet schema metadata key of the provenance record (JSON).
PROVENANCE_KEY = b"flowtools.provenance"


class Table:
    r"""Named columns of plain Python values (str, int or float), written as CSV and Parquet.

    The batch tables are built without pandas, whose import alone (~0.3 s) cost more than
    writing them. The CSV is what ``pandas.DataFrame.to_csv(index=False)`` writes for the same
    frame (minimal quoting, floats as their shortest repr, NaN empty, ``\n`` line ends;
    checked byte for byte in the tests); the Parquet file holds the same columns with NaN as
    null, as ``pyarrow.Table.from_pandas`` stores them.

    A column is ``str`` when every value is a str, ``int`` when every value is an int (not a
    bool) or NaN (written empty, null in Parquet), else ``float``.
    """

    def __init__(self, columns: dict[str, list[Any]]) -> None:
        self.data = columns
        self._formatted: list[list[Any]] | None = None

    @property
    def columns(self) -> list[str]:
        """Column names, in order."""
        return list(self.data)

    def _kind(self, values: list[Any]) -> str:
        if all(isinstance(v, str) for v in values):
            return "str"
        ints = [isinstance(v, int) and not isinstance(v, bool) for v in values]
        if all(ints) or (any(ints) and all(i or (isinstance(v, float) and v != v)  # noqa: PLR0124 - NaN
                                            for i, v in zip(ints, values, strict=True))):
            return "int"  # a count column with a failed population's NaN stays integer (NaN empty)
        return "float"

    def _cells(self) -> list[list[Any]]:
        """Per column: strings as they are, ints and floats formatted (floats: shortest repr, NaN empty)."""
        if self._formatted is None:
            cols = []
            for values in self.data.values():
                kind = self._kind(values)
                if kind == "float":
                    values = ["" if v != v else repr(float(v)) for v in values]  # noqa: PLR0124 - NaN test
                elif kind == "int":
                    values = ["" if isinstance(v, float) else str(v) for v in values]
                cols.append(values)
            self._formatted = cols
        return self._formatted

    def to_csv(self) -> str:
        """The table as CSV text."""
        import csv
        import io

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.columns)
        w.writerows(zip(*self._cells(), strict=True))
        return buf.getvalue()

    def to_arrow(self) -> Any:
        """The table as a ``pyarrow.Table`` (NaN stored as null).

        Parsed by ``pyarrow.csv`` from a CSV text of its own rather than built from the Python
        values: ``pa.array`` imports pandas (~0.3 s) on its first call. In that text every
        string is quoted (so a carriage return or a comma in an ID stays inside its field),
        floats are their shortest repr (read back exactly) and NaN is an empty, unquoted field.
        """
        import io

        import pyarrow as pa
        import pyarrow.csv as pcsv

        def quoted(v: str) -> str:
            return '"' + v.replace('"', '""') + '"'

        types = {"str": pa.string(), "int": pa.int64(), "float": pa.float64()}
        kinds = {c: self._kind(v) for c, v in self.data.items()}
        cols = [[quoted(v) for v in cells] if kind == "str" else cells
                for kind, cells in zip(kinds.values(), self._cells(), strict=True)]
        lines = [",".join(quoted(c) for c in self.data), *(",".join(row) for row in zip(*cols, strict=True))]
        return pcsv.read_csv(
            io.BytesIO(("\n".join(lines) + "\n").encode("utf-8")),
            read_options=pcsv.ReadOptions(use_threads=False),
            parse_options=pcsv.ParseOptions(newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(
                column_types={c: types[k] for c, k in kinds.items()},
                null_values=[""], strings_can_be_null=False, quoted_strings_can_be_null=False),
        )


def table_bytes(table: Any, prov: dict[str, Any]) -> tuple[str, bytes]:
    """The CSV text and the Parquet bytes of a table (a :class:`Table` or a ``pandas.DataFrame``).

    The provenance record is stored, as JSON, under the Parquet schema metadata key
    :data:`PROVENANCE_KEY` (beside pandas' own metadata for a DataFrame).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(table, Table):
        text = table.to_csv()
        arrow = table.to_arrow()
    else:
        text = table.to_csv(index=False, lineterminator="\n")
        arrow = pa.Table.from_pandas(table, preserve_index=False)
    meta = dict(arrow.schema.metadata or {})
    meta[PROVENANCE_KEY] = json.dumps(prov).encode()
    sink = pa.BufferOutputStream()
    pq.write_table(arrow.replace_schema_metadata(meta), sink)
    return text, sink.getvalue().to_pybytes()


def write_table(
    table: Any, stem: str | os.PathLike[str], prov: dict[str, Any], *, provenance_file: bool = False
) -> list[Path]:
    """Write ``<stem>.csv`` and ``<stem>.parquet`` (and ``<stem>.provenance.json``), atomically.

    Parameters
    ----------
    table : Table or pandas.DataFrame
    stem : path
        Output path without suffix; its folder is created when missing.
    prov : dict
        Provenance record (:func:`flowtools.provenance.provenance_record`), stored in the
        Parquet schema metadata under :data:`PROVENANCE_KEY`.
    provenance_file : bool, default False
        Also write the record beside the tables as ``<stem>.provenance.json`` (indented JSON).

    Returns
    -------
    list of pathlib.Path
        The CSV, the Parquet file and, when written, the provenance file.
    """
    stem = Path(stem)
    # Every file's content first, then the writes: a failure leaves no file half-updated.
    text, parquet = table_bytes(table, prov)
    sidecar = json.dumps(prov, indent=2) + "\n" if provenance_file else None
    csv_path, pq_path = stem.with_suffix(".csv"), stem.with_suffix(".parquet")
    atomic_write_text(csv_path, text)
    atomic_write_bytes(pq_path, parquet)
    paths = [csv_path, pq_path]
    if sidecar is not None:
        prov_path = stem.parent / f"{stem.name}.provenance.json"
        atomic_write_text(prov_path, sidecar)
        paths.append(prov_path)
    return paths


def csv_text(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """Plain rows as CSV text (LF line ends; None as empty).

    ``columns`` fixes the header (other keys are left out, and the header is written even for
    no rows); otherwise the first row's keys, and empty text for no rows.
    """
    import csv
    import io

    buf = io.StringIO()
    if rows or columns is not None:
        fields = list(columns) if columns is not None else list(rows[0])
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()
