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
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from flowtools.errors import NormalizationError, SampleSheetError, SheetIssue
from flowtools.provenance import atomic_write

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

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

#: The two staining tubes of the study, spelled exactly as on the sheet.
STUDY_TUBES: tuple[str, ...] = ("TBNK-NK", "Treg-Th")

#: Columns every sample sheet must have, in the order they are written.
REQUIRED_COLUMNS: tuple[str, ...] = ("file", "sample_id", "woman_id", "tube", "plate", "well")

#: Optional column marking the anchor (reference) samples of batch normalisation.
ANCHOR_COLUMN = "anchor"
#: Optional column naming the normalisation batch of a row; empty or absent: the row's plate.
BATCH_COLUMN = "batch"

_ID_COLUMNS = ("sample_id", "woman_id")
_OPTIONAL_COLUMNS = (ANCHOR_COLUMN, BATCH_COLUMN)
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0", ""})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_WELL_PATTERN = re.compile(r"([A-Za-z])0*([0-9]+)")
_PLATE_ROWS = "ABCDEFGH"
_PLATE_COLUMNS = 12
_DELIMITERS = (",", ";", "\t")
_MAX_SHOWN = 60


def _show(value: str) -> str:
    """Quote a cell value for a message, shortening a very long one."""
    if len(value) > _MAX_SHOWN:
        value = value[: _MAX_SHOWN - 3] + "..."
    return repr(value)


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


def _normalize_header(name: str) -> str:
    return name.strip().strip("\ufeff").strip().lower()


def _loose(name: str) -> str:
    return re.sub(r"[\s_.\-]+", "", name).lower()


def _detect_delimiter(text: str) -> str:
    """Pick ``,``, ``;`` or tab: the one found most often in the header line."""
    for line in io.StringIO(text, newline=""):
        if not line.strip(" \t\r\n,;\"'\ufeff"):
            continue
        counts = dict.fromkeys(_DELIMITERS, 0)
        in_quotes = False
        for char in line:
            if char == '"':
                in_quotes = not in_quotes
            elif not in_quotes and char in counts:
                counts[char] += 1
        best = max(_DELIMITERS, key=lambda d: counts[d])  # ties go to the earlier one
        return best if counts[best] else ","
    return ","


def _decode(path: Path, raw: bytes) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        msg = "the file is UTF-16 text, not UTF-8; save it again as 'CSV UTF-8'"
        raise SampleSheetError(path, [SheetIssue(None, None, msg)])
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        msg = (
            f"the file is not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}); "
            "save it again as 'CSV UTF-8'"
        )
        raise SampleSheetError(path, [SheetIssue(None, None, msg)]) from None


def _file_path(cell: str, sheet_dir: str) -> Path:
    """Absolute, normalised path of a file cell (symlinks are not followed)."""
    return Path(os.path.abspath(os.path.join(sheet_dir, cell)))


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino)


def read_sample_sheet(
    path: str | os.PathLike[str],
    *,
    tubes: Iterable[str] | None = STUDY_TUBES,
    check_files: bool = True,
) -> SampleSheet:
    """Read and validate a sample sheet.

    Parameters
    ----------
    path : str or PathLike
        The CSV file: UTF-8 (with or without BOM), delimited by ``,``, ``;``
        or tab. Required columns: ``file, sample_id, woman_id, tube, plate,
        well`` (any case, surrounding spaces ignored); other columns are kept.
    tubes : iterable of str or None, default STUDY_TUBES
        The allowed tube names (exact, case-sensitive match). None accepts any
        tube.
    check_files : bool, default True
        Check that every listed FCS file exists.

    Returns
    -------
    SampleSheet
        The rows in file order, FCS paths made absolute (a relative path is
        taken relative to the sheet's folder) and wells normalised to
        ``"A01"`` form.

    Raises
    ------
    FileNotFoundError
        If the sheet itself does not exist.
    SampleSheetError
        If anything in the sheet is wrong. All problems are collected first;
        ``exc.issues`` holds one :class:`~flowtools.errors.SheetIssue` (line,
        column, message) per problem: a missing, empty or duplicated column;
        a row with the wrong number of cells; an empty required cell; an FCS
        file that does not exist or is listed twice; a duplicate
        ``sample_id``; a sample ID or woman ID that is not of the form
        ``[A-Za-z0-9][A-Za-z0-9._-]*``; an unknown tube; a well that is not
        on a 96-well plate; two rows on one plate and well; two rows of one
        woman in one tube; a sheet with no rows; a file that is not UTF-8.
    """
    sheet_path = Path(path)
    text = _decode(sheet_path, sheet_path.read_bytes())
    sheet_dir = os.path.dirname(os.path.abspath(sheet_path))
    allowed = _allowed_tubes(tubes)

    issues: list[SheetIssue] = []
    records: list[tuple[int, list[str]]] = []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_detect_delimiter(text))
    start = 1  # line on which the record being read starts
    try:
        for cells in reader:
            if any(cell.strip() for cell in cells):
                records.append((start, cells))
            start = reader.line_num + 1
    except csv.Error as exc:
        issues.append(SheetIssue(start, None, f"cannot read the CSV record starting on this line: {exc}"))
        raise SampleSheetError(sheet_path, issues) from None

    if not records:
        issues.append(SheetIssue(None, None, "the sample sheet is empty: it has no header line"))
        raise SampleSheetError(sheet_path, issues)

    header_line, header = records[0]
    columns, extra_columns = _read_header(header_line, header, issues)

    checker = _RowChecker(sheet_dir, allowed, check_files=check_files, issues=issues)
    rows: list[SampleSheetRow] = []
    for line, cells in records[1:]:
        if len(cells) != len(header):
            issues.append(
                SheetIssue(
                    line,
                    None,
                    f"the row has {len(cells)} cells but the header has {len(header)} columns "
                    "(a stray delimiter, or a missing one?)",
                )
            )
            continue
        row = checker.check(line, cells, columns, extra_columns)
        if row is not None:
            rows.append(row)

    if len(records) == 1:
        issues.append(SheetIssue(None, None, "the sample sheet has a header but no sample rows"))
    if issues:
        # By line, then (within a line) in the order of the columns on the sheet.
        positions = {**{name: index for name, index in extra_columns}, **columns}
        issues.sort(
            key=lambda issue: (
                issue.line is None,
                issue.line or 0,
                positions.get(issue.column, -1) if issue.column is not None else -1,
            )
        )
        raise SampleSheetError(sheet_path, issues)
    return SampleSheet(
        path=sheet_path,
        rows=tuple(rows),
        extra_columns=tuple(name for name, _ in extra_columns),
    )


def _allowed_tubes(tubes: Iterable[str] | None) -> tuple[str, ...] | None:
    if tubes is None:
        return None
    if isinstance(tubes, str):
        return (tubes,)
    return tuple(tubes)


def _read_header(
    line: int, header: list[str], issues: list[SheetIssue]
) -> tuple[dict[str, int], list[tuple[str, int]]]:
    """Map required column -> index, and list (name, index) of extra columns."""
    columns: dict[str, int] = {}
    extra: list[tuple[str, int]] = []
    seen_extra: set[str] = set()
    for index, name in enumerate(header):
        key = _normalize_header(name)
        if key in REQUIRED_COLUMNS:
            if key in columns:
                issues.append(SheetIssue(line, key, f"column {key!r} appears more than once in the header"))
            else:
                columns[key] = index
        elif not key:
            issues.append(
                SheetIssue(line, None, f"header cell {index + 1} is empty: every column needs a name")
            )
        elif name in seen_extra:
            issues.append(SheetIssue(line, name, f"column {name!r} appears more than once in the header"))
        else:
            seen_extra.add(name)
            extra.append((name, index))
    for optional in _OPTIONAL_COLUMNS:
        same = [name for name, _ in extra if _normalize_header(name) == optional]
        if len(same) > 1:
            issues.append(
                SheetIssue(line, same[1], f"column {optional!r} appears more than once in the header: {same}")
            )
    for required in REQUIRED_COLUMNS:
        if required in columns:
            continue
        message = f"required column {required!r} is missing"
        near = [name for name, _ in extra if _loose(name) == _loose(required)]
        if near:
            message += f" (found {near[0]!r}; rename it to {required!r})"
        issues.append(SheetIssue(line, required, message))
    return columns, extra


class _RowChecker:
    """Per-row checks plus the cross-row duplicate checks."""

    def __init__(
        self,
        sheet_dir: str,
        allowed: tuple[str, ...] | None,
        *,
        check_files: bool,
        issues: list[SheetIssue],
    ) -> None:
        self.sheet_dir = sheet_dir
        self.allowed = allowed
        self.check_files = check_files
        self.issues = issues
        self.sample_ids: dict[str, int] = {}
        self.files: dict[Path, int] = {}
        self.inodes: dict[tuple[int, int], int] = {}
        self.wells: dict[tuple[str, str], int] = {}
        self.woman_tubes: dict[tuple[str, str], int] = {}

    def _issue(self, line: int, column: str, message: str) -> None:
        self.issues.append(SheetIssue(line, column, message))

    def check(
        self,
        line: int,
        cells: list[str],
        columns: dict[str, int],
        extra_columns: list[tuple[str, int]],
    ) -> SampleSheetRow | None:
        """Check one row; return it when all required columns exist."""
        values: dict[str, str] = {}
        for name, index in columns.items():
            value = cells[index].strip()
            values[name] = value
            if not value:
                self._issue(line, name, f"the {name} cell is empty")

        file = self._check_file(line, values.get("file", ""))
        for name in _ID_COLUMNS:
            value = values.get(name, "")
            if value and _ID_PATTERN.fullmatch(value) is None:
                self._issue(
                    line,
                    name,
                    f"{name} {_show(value)} is not a valid ID: use only letters, digits, '.', '_' "
                    "and '-', starting with a letter or digit (no spaces, names or paths)",
                )
        self._check_tube(line, values.get("tube", ""))
        self._check_optional(line, cells, extra_columns)
        well = self._check_well(line, values.get("well", ""))
        self._check_duplicates(line, values, well)

        if len(columns) != len(REQUIRED_COLUMNS) or file is None:
            return None
        return SampleSheetRow(
            file=file,
            sample_id=values["sample_id"],
            woman_id=values["woman_id"],
            tube=values["tube"],
            plate=values["plate"],
            well=well if well is not None else values["well"],
            line=line,
            extra={name: cells[index] for name, index in extra_columns},
        )

    def _check_optional(self, line: int, cells: list[str], extra_columns: list[tuple[str, int]]) -> None:
        """Check the optional ``anchor`` and ``batch`` cells (when the sheet has those columns)."""
        for name, index in extra_columns:
            key = _normalize_header(name)
            cell = cells[index]
            if key == ANCHOR_COLUMN and parse_anchor(cell) is None:
                self._issue(
                    line,
                    name,
                    f"anchor {_show(cell)} is neither true/false (yes/no, 1/0) nor an anchor donor ID "
                    "(letters, digits, '.', '_' and '-', starting with a letter or digit)",
                )
            elif key == BATCH_COLUMN and (_CONTROL.search(cell) or len(cell.strip()) > 100):
                self._issue(
                    line, name, f"batch {_show(cell)} has a control character or is over 100 characters long"
                )

    def _check_file(self, line: int, cell: str) -> Path | None:
        if not cell:
            return None
        if "\x00" in cell:
            self._issue(line, "file", f"file name {_show(cell)} contains a NUL character")
            return None
        file = _file_path(cell, self.sheet_dir)
        first = self.files.setdefault(file, line)
        if first != line:
            self._issue(line, "file", f"file {_show(cell)} is already listed on line {first}")
            return file
        if self.check_files:
            if not file.exists():
                self._issue(line, "file", f"FCS file {_show(cell)} not found (looked for {file})")
            elif not file.is_file():
                self._issue(line, "file", f"FCS file {_show(cell)} is not a file ({file})")
            else:
                inode = _inode(file)
                if inode is not None:
                    first = self.inodes.setdefault(inode, line)
                    if first != line:
                        self._issue(
                            line, "file", f"file {_show(cell)} is the same file as the one on line {first}"
                        )
        return file

    def _check_tube(self, line: int, tube: str) -> None:
        if not tube or self.allowed is None or tube in self.allowed:
            return
        shown = ", ".join(repr(t) for t in self.allowed) or "(none)"
        message = f"unknown tube {_show(tube)}"
        near = [t for t in self.allowed if t.casefold() == tube.casefold()]
        if near:
            message += f"; did you mean {near[0]!r}?"
        self._issue(line, "tube", f"{message} (allowed tubes: {shown})")

    def _check_well(self, line: int, cell: str) -> str | None:
        if not cell:
            return None
        well = normalize_well(cell)
        if well is None:
            self._issue(
                line,
                "well",
                f"bad well {_show(cell)}: a 96-well plate has rows A-H and columns 1-12 "
                "(e.g. 'A01' or 'H12')",
            )
        return well

    def _check_duplicates(self, line: int, values: dict[str, str], well: str | None) -> None:
        sample_id = values.get("sample_id", "")
        if sample_id:
            first = self.sample_ids.setdefault(sample_id, line)
            if first != line:
                self._issue(
                    line, "sample_id", f"sample_id {_show(sample_id)} is already used on line {first}"
                )
        plate = values.get("plate", "")
        if plate and well is not None:
            first = self.wells.setdefault((plate, well), line)
            if first != line:
                self._issue(line, "well", f"plate {_show(plate)} well {well} is already used on line {first}")
        woman, tube = values.get("woman_id", ""), values.get("tube", "")
        if woman and tube:
            first = self.woman_tubes.setdefault((woman, tube), line)
            if first != line:
                self._issue(
                    line,
                    "tube",
                    f"woman {_show(woman)} already has a {_show(tube)} tube on line {first} "
                    "(at most one row per woman and tube)",
                )


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
