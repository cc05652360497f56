"""Reading and validating a sample sheet: :func:`read_sample_sheet`.

Part of :mod:`flowtools.io.sample_sheet`, which re-exports the public names; import them from
there. Every problem is collected first and raised together in one
:class:`~flowtools.errors.SampleSheetError`.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable
from pathlib import Path

from flowtools.errors import SampleSheetError, SheetIssue
from flowtools.io._sheet_rows import (
    _ID_PATTERN,
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

__all__ = ["read_sample_sheet"]

_ID_COLUMNS = ("sample_id", "woman_id")
_OPTIONAL_COLUMNS = (ANCHOR_COLUMN, BATCH_COLUMN)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DELIMITERS = (",", ";", "\t")
_MAX_SHOWN = 60


def _show(value: str) -> str:
    """Quote a cell value for a message, shortening a very long one."""
    if len(value) > _MAX_SHOWN:
        value = value[: _MAX_SHOWN - 3] + "..."
    return repr(value)


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
