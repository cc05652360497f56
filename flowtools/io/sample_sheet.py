"""Read, validate and write the study's sample sheet.

A sample sheet is a small CSV file that maps each FCS file to the sample it
holds. In this study each woman gives one blood sample, stained in two tubes
(:data:`STUDY_TUBES`) and acquired on 96-well plates, so every row names::

    file, sample_id, woman_id, tube, plate, well

Header names are matched case-insensitively after stripping surrounding
spaces; any further columns are kept verbatim, in order. The file must be
UTF-8 (a byte-order mark is fine) and may use ``,``, ``;`` or a tab as the
delimiter (detected from the header line). Blank lines, including lines whose
cells are all empty, are ignored.

:func:`read_sample_sheet` checks the whole sheet and reports *every* problem
it finds in one :class:`~flowtools.errors.SampleSheetError`, each issue naming
its line (the header is line 1) and column, so a sheet can be fixed in one
pass. :func:`write_sample_sheet` writes a sheet back atomically.

This module is the public home of all these names. The row and sheet records
and the cell parsers are defined in :mod:`flowtools.io._sheet_rows`, reading
and validation in :mod:`flowtools.io._sheet_read`; writing and
:func:`check_anchors` are here.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path, PurePath

from flowtools.errors import NormalizationError
from flowtools.io._sheet_read import read_sample_sheet
from flowtools.io._sheet_rows import (
    ANCHOR_COLUMN,
    BATCH_COLUMN,
    REQUIRED_COLUMNS,
    STUDY_TUBES,
    SampleSheet,
    SampleSheetRow,
    _normalize_header,
    normalize_well,
    parse_anchor,
)
from flowtools.provenance import atomic_write

__all__ = [
    "ANCHOR_COLUMN",
    "BATCH_COLUMN",
    "REQUIRED_COLUMNS",
    "STUDY_TUBES",
    "SampleSheet",
    "SampleSheetRow",
    "check_anchors",
    "normalize_well",
    "parse_anchor",
    "read_sample_sheet",
    "write_sample_sheet",
]


def _relative_file(file: Path, dest_dir: str) -> str:
    absolute = os.path.abspath(file)
    try:
        relative = os.path.relpath(absolute, dest_dir)
    except ValueError:  # another drive on Windows: keep it absolute
        return PurePath(absolute).as_posix()
    return PurePath(relative).as_posix()


def write_sample_sheet(
    sheet_or_rows: SampleSheet | Iterable[SampleSheetRow],
    path: str | os.PathLike[str],
) -> None:
    """Write a sample sheet as CSV, atomically.

    Parameters
    ----------
    sheet_or_rows : SampleSheet or iterable of SampleSheetRow
        What to write. For bare rows the extra columns are the keys of their
        ``extra`` dicts, in first-seen order.
    path : str or PathLike
        Destination. It is replaced only once the whole file is written.

    Notes
    -----
    The file is UTF-8 without BOM, comma-delimited, LF line ends, with the
    columns ``file, sample_id, woman_id, tube, plate, well`` and then the
    extra columns. FCS paths are written relative to the destination's folder
    (with ``/`` separators) when possible, so the sheet and its data can move
    together; a relative ``row.file`` is taken relative to the current
    directory. Reading the file back with :func:`read_sample_sheet` gives rows
    equal to those written.

    Raises
    ------
    ValueError
        If an extra column's name clashes with a required column.
    """
    if isinstance(sheet_or_rows, SampleSheet):
        rows = sheet_or_rows.rows
        extra_columns = list(sheet_or_rows.extra_columns)
    else:
        rows = tuple(sheet_or_rows)
        extra_columns = []
        for row in rows:
            extra_columns.extend(name for name in row.extra if name not in extra_columns)
    for name in extra_columns:
        if _normalize_header(name) in REQUIRED_COLUMNS or not _normalize_header(name):
            msg = f"extra column {name!r} clashes with the required columns or has no name"
            raise ValueError(msg)

    dest_dir = os.path.dirname(os.path.abspath(path))
    with atomic_write(path, "w", encoding="utf-8", newline="") as fh:
        # Quote the header when a name holds another delimiter, so that the
        # reader's delimiter detection (which ignores quoted text) sees commas.
        odd_names = any(";" in name or "\t" in name for name in extra_columns)
        header_writer = csv.writer(
            fh, lineterminator="\n", quoting=csv.QUOTE_ALL if odd_names else csv.QUOTE_MINIMAL
        )
        header_writer.writerow([*REQUIRED_COLUMNS, *extra_columns])
        writer = csv.writer(fh, lineterminator="\n")
        for row in rows:
            writer.writerow(
                [
                    _relative_file(row.file, dest_dir),
                    row.sample_id,
                    row.woman_id,
                    row.tube,
                    row.plate,
                    row.well,
                    *(row.extra.get(name, "") for name in extra_columns),
                ]
            )


def check_anchors(
    sheet: SampleSheet,
    batches: Iterable[str] | None = None,
    *,
    tube: str | None = None,
) -> dict[str, list[SampleSheetRow]]:
    """Return the anchor rows of every batch, refusing a batch without one.

    Parameters
    ----------
    sheet : SampleSheet
        A sheet with an ``anchor`` column.
    batches : iterable of str, optional
        The batches to be normalised; default every batch of the sheet (of ``tube``).
    tube : str, optional
        Only rows of this tube count (an anchor must be stained in the tube it normalises).

    Returns
    -------
    dict of str to list of SampleSheetRow
        Batch -> its anchor rows, in sheet order; batches sorted. A batch may hold several
        anchors (aliquots of one donor, or several donors: each row's
        :attr:`SampleSheetRow.anchor_id`); :func:`flowtools.analysis.normalize.fit_sheet` pools
        them, or keeps only the donors every batch has (``anchors="matched"``).

    Raises
    ------
    NormalizationError
        The sheet has no ``anchor`` column, or a batch has no anchor (every such batch named).
    """
    rows = [r for r in sheet.rows if tube is None or r.tube == tube]
    if not any(_normalize_header(c) == ANCHOR_COLUMN for c in sheet.extra_columns):
        msg = (f"{sheet.path}: the sample sheet has no {ANCHOR_COLUMN!r} column; mark the anchor "
               "(reference) sample of every batch with anchor=true (or the anchor donor's ID)")
        raise NormalizationError(msg)
    wanted = sorted({r.batch for r in rows}) if batches is None else list(dict.fromkeys(batches))
    found: dict[str, list[SampleSheetRow]] = {b: [] for b in wanted}
    for r in rows:
        if r.is_anchor and r.batch in found:
            found[r.batch].append(r)
    missing = [b for b in wanted if not found[b]]
    if missing:
        what = f" of tube {tube!r}" if tube is not None else ""
        msg = (f"{sheet.path}: batch{'es' if len(missing) > 1 else ''} {', '.join(repr(b) for b in missing)} "
               f"{'have' if len(missing) > 1 else 'has'} no anchor sample{what} (column {ANCHOR_COLUMN!r}); "
               "every batch to be normalised needs one")
        raise NormalizationError(msg)
    return {b: found[b] for b in sorted(found)}
