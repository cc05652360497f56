"""The rows of a sample sheet: column names, cell parsers and the row and sheet records.

Part of :mod:`flowtools.io.sample_sheet`, which re-exports the public names; import them from
there. Reading and validation are in :mod:`flowtools.io._sheet_read`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "ANCHOR_COLUMN",
    "BATCH_COLUMN",
    "REQUIRED_COLUMNS",
    "STUDY_TUBES",
    "SampleSheet",
    "SampleSheetRow",
    "normalize_well",
    "parse_anchor",
]

#: The two staining tubes of the study, spelled exactly as on the sheet.
STUDY_TUBES: tuple[str, ...] = ("TBNK-NK", "Treg-Th")

#: Columns every sample sheet must have, in the order they are written.
REQUIRED_COLUMNS: tuple[str, ...] = ("file", "sample_id", "woman_id", "tube", "plate", "well")

#: Optional column marking the anchor (reference) samples of batch normalisation.
ANCHOR_COLUMN = "anchor"
#: Optional column naming the normalisation batch of a row; empty or absent: the row's plate.
BATCH_COLUMN = "batch"

_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0", ""})
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_WELL_PATTERN = re.compile(r"([A-Za-z])0*([0-9]+)")
_PLATE_ROWS = "ABCDEFGH"
_PLATE_COLUMNS = 12


def normalize_well(well: str) -> str | None:
    """Return the canonical name of a 96-well plate well, or None if invalid.

    Parameters
    ----------
    well : str
        A well as typed on a sheet, e.g. ``"A1"``, ``"a01"``, ``" H12 "``.

    Returns
    -------
    str or None
        Row letter in upper case and a two-digit column (``"A01"`` ...
        ``"H12"``), or None when ``well`` is not a well of a 96-well plate
        (rows A-H, columns 1-12).

    Examples
    --------
    >>> normalize_well("a1")
    'A01'
    >>> normalize_well("I01") is None
    True
    """
    match = _WELL_PATTERN.fullmatch(well.strip())
    if match is None:
        return None
    row = match.group(1).upper()
    column = int(match.group(2))
    if row not in _PLATE_ROWS or not 1 <= column <= _PLATE_COLUMNS:
        return None
    return f"{row}{column:02d}"


def parse_anchor(cell: str) -> tuple[bool, str | None] | None:
    """Read an ``anchor`` cell.

    Parameters
    ----------
    cell : str
        ``true``/``false``, ``yes``/``no``, ``1``/``0`` (any case; empty is false),
        or the anchor donor's ID (meaning true).

    Returns
    -------
    tuple of (bool, str or None), or None
        ``(is_anchor, donor_id)``: ``donor_id`` is the ID when one was given, else None.
        None when the cell is neither a truth value nor a valid ID.

    Examples
    --------
    >>> parse_anchor("Yes")
    (True, None)
    >>> parse_anchor("D07")
    (True, 'D07')
    >>> parse_anchor("")
    (False, None)
    """
    value = cell.strip()
    folded = value.casefold()
    if folded in _TRUE:
        return True, None
    if folded in _FALSE:
        return False, None
    if _ID_PATTERN.fullmatch(value) is not None:
        return True, value
    return None


def _normalize_header(name: str) -> str:
    return name.strip().strip("\ufeff").strip().lower()


def _extra_cell(extra: dict[str, str], column: str) -> str | None:
    """The cell of an optional column, its header matched case-insensitively."""
    for name, value in extra.items():
        if _normalize_header(name) == column:
            return value
    return None


@dataclass(frozen=True)
class SampleSheetRow:
    """One row of a sample sheet: one FCS file and the sample it holds.

    Attributes
    ----------
    file : pathlib.Path
        The FCS file. :func:`read_sample_sheet` makes it absolute, resolving a
        relative path against the sheet's folder.
    sample_id : str
        The sample (one per woman).
    woman_id : str
        The woman who gave the sample.
    tube : str
        The staining tube, e.g. ``"TBNK-NK"``.
    plate : str
        The acquisition plate.
    well : str
        The well on the plate, normalised (``"A01"`` ... ``"H12"``).
    line : int
        Line of the row in the CSV file (the header is line 1); 0 for a row
        built in code. Not part of equality, so a sheet read back after
        :func:`write_sample_sheet` compares equal even if its lines moved.
    extra : dict of str to str
        The sheet's extra columns for this row, verbatim. Not part of the hash.
    """

    file: Path
    sample_id: str
    woman_id: str
    tube: str
    plate: str
    well: str
    line: int = field(default=0, compare=False)
    extra: dict[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "file", Path(self.file))
        object.__setattr__(self, "extra", dict(self.extra))

    @property
    def batch(self) -> str:
        """The normalisation batch: the ``batch`` cell, or the plate when it is absent or empty."""
        cell = _extra_cell(self.extra, BATCH_COLUMN)
        return cell.strip() if cell is not None and cell.strip() else self.plate

    @property
    def is_anchor(self) -> bool:
        """Whether the ``anchor`` cell marks this row as an anchor (False without the column)."""
        cell = _extra_cell(self.extra, ANCHOR_COLUMN)
        parsed = parse_anchor(cell) if cell is not None else None
        return bool(parsed and parsed[0])

    @property
    def anchor_id(self) -> str | None:
        """The anchor donor: the ID in the ``anchor`` cell, else the woman of a ``true`` row; None if none."""
        cell = _extra_cell(self.extra, ANCHOR_COLUMN)
        parsed = parse_anchor(cell) if cell is not None else None
        if not parsed or not parsed[0]:
            return None
        return parsed[1] if parsed[1] is not None else self.woman_id


@dataclass(frozen=True)
class SampleSheet:
    """A validated sample sheet.

    Attributes
    ----------
    path : pathlib.Path
        The sheet file it was read from.
    rows : tuple of SampleSheetRow
        The rows, in file order.
    extra_columns : tuple of str
        Names of the columns beyond the required ones, verbatim, in file order.
    """

    path: Path
    rows: tuple[SampleSheetRow, ...]
    extra_columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        object.__setattr__(self, "rows", tuple(self.rows))
        object.__setattr__(self, "extra_columns", tuple(self.extra_columns))

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[SampleSheetRow]:
        return iter(self.rows)

    def by_sample_id(self, sample_id: str) -> SampleSheetRow:
        """Return the row of one sample.

        Parameters
        ----------
        sample_id : str
            The sample to look up (exact match).

        Returns
        -------
        SampleSheetRow

        Raises
        ------
        KeyError
            If no row has this ``sample_id``.
        """
        for row in self.rows:
            if row.sample_id == sample_id:
                return row
        msg = f"sample_id {sample_id!r} is not in sample sheet {self.path}"
        raise KeyError(msg)

    def women(self) -> list[str]:
        """Return the distinct woman IDs of the sheet, sorted.

        Returns
        -------
        list of str
        """
        return sorted({row.woman_id for row in self.rows})

    def to_frame(self) -> pd.DataFrame:
        """Return the sheet as a pandas DataFrame.

        Returns
        -------
        pandas.DataFrame
            One row per sheet row; columns ``file`` (as str), ``sample_id``,
            ``woman_id``, ``tube``, ``plate``, ``well``, then the extra columns
            in sheet order (missing extra values as ``""``).
        """
        import pandas as pd

        data: dict[str, list[str]] = {name: [] for name in (*REQUIRED_COLUMNS, *self.extra_columns)}
        for row in self.rows:
            for name, value in zip(REQUIRED_COLUMNS, _required_values(row), strict=True):
                data[name].append(value)
            for name in self.extra_columns:
                data[name].append(row.extra.get(name, ""))
        return pd.DataFrame(data, columns=list(data), dtype=object)


def _required_values(row: SampleSheetRow) -> tuple[str, ...]:
    return (str(row.file), row.sample_id, row.woman_id, row.tube, row.plate, row.well)
