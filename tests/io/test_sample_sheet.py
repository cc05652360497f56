"""Tests for flowtools.io.sample_sheet: reading, validation and writing."""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowtools.errors import SampleSheetError, SheetIssue
from flowtools.io.sample_sheet import (
    REQUIRED_COLUMNS,
    STUDY_TUBES,
    SampleSheet,
    SampleSheetRow,
    normalize_well,
    read_sample_sheet,
    write_sample_sheet,
)

HEADER = "file,sample_id,woman_id,tube,plate,well"

VALID_ROWS = [
    "a.fcs,S001,W001,TBNK-NK,P1,A1",
    "b.fcs,S001b,W001,Treg-Th,P1,a02",
    "c.fcs,S002,W002,TBNK-NK,P1,B01",
    "d.fcs,S002b,W002,Treg-Th,P2,H12",
]


def make_sheet(
    folder: Path,
    lines: list[str],
    *,
    name: str = "sheet.csv",
    create: bool = True,
    newline: str = "\n",
    bom: bool = False,
    delimiter: str = ",",
) -> Path:
    """Write a sheet (header included in ``lines``) and touch its FCS files."""
    folder.mkdir(parents=True, exist_ok=True)
    text = newline.join(lines) + newline
    if create:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
        for row in rows[1:]:
            if row and row[0].strip() and not row[0].startswith("missing"):
                target = folder / row[0].strip()
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(b"FCS3.1 dummy")
    path = folder / name
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def read_issues(path: Path, **kwargs: object) -> tuple[SheetIssue, ...]:
    with pytest.raises(SampleSheetError) as info:
        read_sample_sheet(path, **kwargs)  # type: ignore[arg-type]
    return info.value.issues


def where(issues: tuple[SheetIssue, ...]) -> list[tuple[int | None, str | None]]:
    return [(issue.line, issue.column) for issue in issues]


# --------------------------------------------------------------------------- valid sheets


def test_reads_valid_sheet(tmp_path: Path) -> None:
    path = make_sheet(tmp_path, [HEADER, *VALID_ROWS])
    sheet = read_sample_sheet(path)

    assert isinstance(sheet, SampleSheet)
    assert len(sheet) == 4
    assert sheet.path == path
    assert sheet.extra_columns == ()
    first = sheet.rows[0]
    assert first == SampleSheetRow(
        file=tmp_path / "a.fcs",
        sample_id="S001",
        woman_id="W001",
        tube="TBNK-NK",
        plate="P1",
        well="A01",
    )
    assert first.file.is_absolute()
    assert [row.line for row in sheet] == [2, 3, 4, 5]
    assert [row.well for row in sheet] == ["A01", "A02", "B01", "H12"]
    assert sheet.by_sample_id("S002").woman_id == "W002"
    assert sheet.women() == ["W001", "W002"]
    assert STUDY_TUBES == ("TBNK-NK", "Treg-Th")


def test_by_sample_id_unknown_raises_key_error(tmp_path: Path) -> None:
    sheet = read_sample_sheet(make_sheet(tmp_path, [HEADER, *VALID_ROWS]))
    with pytest.raises(KeyError, match="S999"):
        sheet.by_sample_id("S999")


def test_file_paths_resolved_relative_to_sheet_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "study"
    make_sheet(folder, [HEADER, "plate1/a.fcs,S1,W1,TBNK-NK,P1,A01", "./b.fcs,S2,W2,TBNK-NK,P1,A02"])
    monkeypatch.chdir(tmp_path)  # cwd elsewhere: must not matter
    sheet = read_sample_sheet(Path("study") / "sheet.csv")
    assert sheet.rows[0].file.is_absolute()
    assert sheet.rows[0].file.resolve() == (folder / "plate1" / "a.fcs").resolve()
    assert sheet.rows[1].file.resolve() == (folder / "b.fcs").resolve()


def test_absolute_file_path_kept(tmp_path: Path) -> None:
    fcs = tmp_path / "elsewhere" / "x.fcs"
    fcs.parent.mkdir()
    fcs.write_bytes(b"x")
    path = make_sheet(tmp_path / "sheets", [HEADER, f"{fcs},S1,W1,TBNK-NK,P1,A01"], create=False)
    assert read_sample_sheet(path).rows[0].file == fcs


@pytest.mark.parametrize(
    ("cell", "expected"),
    [("A1", "A01"), ("a01", "A01"), (" h12 ", "H12"), ("C007", "C07"), ("b10", "B10")],
)
def test_well_normalisation(tmp_path: Path, cell: str, expected: str) -> None:
    assert normalize_well(cell) == expected
    path = make_sheet(tmp_path, [HEADER, f"a.fcs,S1,W1,TBNK-NK,P1,{cell}"])
    assert read_sample_sheet(path).rows[0].well == expected


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_other_delimiters(tmp_path: Path, delimiter: str) -> None:
    lines = [line.replace(",", delimiter) for line in [HEADER, *VALID_ROWS]]
    sheet = read_sample_sheet(make_sheet(tmp_path, lines, delimiter=delimiter))
    assert [row.sample_id for row in sheet] == ["S001", "S001b", "S002", "S002b"]
    assert [row.well for row in sheet] == ["A01", "A02", "B01", "H12"]


def test_semicolon_sheet_with_commas_in_extra_cell(tmp_path: Path) -> None:
    lines = [HEADER.replace(",", ";") + ";note", "a.fcs;S1;W1;TBNK-NK;P1;A01;lysed, re-run, ok"]
    sheet = read_sample_sheet(make_sheet(tmp_path, lines, delimiter=";"))
    assert sheet.rows[0].extra == {"note": "lysed, re-run, ok"}


def test_bom_crlf_blank_lines_and_header_case(tmp_path: Path) -> None:
    lines = [
        " File , Sample_ID,WOMAN_ID ,Tube,plate,Well",
        "",
        VALID_ROWS[0],
        ",,,,,",
        "   ",
        VALID_ROWS[1],
        "",
    ]
    path = make_sheet(tmp_path, lines, bom=True, newline="\r\n")
    sheet = read_sample_sheet(path)
    assert [row.sample_id for row in sheet] == ["S001", "S001b"]
    assert [row.line for row in sheet] == [3, 6]
    assert sheet.extra_columns == ()


def test_quoted_cells_and_multiline_extra(tmp_path: Path) -> None:
    lines = [
        '"file","sample_id","woman_id","tube","plate","well","comment"',
        '"a.fcs","S1","W1","TBNK-NK","P1","A01","two\nlines"',
        '"b.fcs","S2","W2","TBNK-NK","P1","A01","dup well"',
    ]
    issues = read_issues(make_sheet(tmp_path, lines))
    # The multi-line record starts on line 2, so the next record is on line 4.
    assert where(issues) == [(4, "well")]
    assert "line 2" in issues[0].message


def test_extra_columns_kept_verbatim_in_order(tmp_path: Path) -> None:
    lines = [
        "Batch ," + HEADER + ",Notes,zz",
        "b1,a.fcs,S1,W1,TBNK-NK,P1,A01, keep  spaces ,",
        "b2,b.fcs,S2,W2,TBNK-NK,P1,A02,,z",
    ]
    sheet = read_sample_sheet(make_sheet_extra(tmp_path, lines))
    assert sheet.extra_columns == ("Batch ", "Notes", "zz")
    assert sheet.rows[0].extra == {"Batch ": "b1", "Notes": " keep  spaces ", "zz": ""}
    assert sheet.rows[1].extra == {"Batch ": "b2", "Notes": "", "zz": "z"}
    assert sheet.rows[0].file.name == "a.fcs"


def make_sheet_extra(folder: Path, lines: list[str]) -> Path:
    """Like make_sheet, for sheets whose file column is not the first."""
    for name in ("a.fcs", "b.fcs"):
        (folder / name).write_bytes(b"x")
    path = folder / "sheet.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_tubes_none_accepts_any_tube(tmp_path: Path) -> None:
    path = make_sheet(tmp_path, [HEADER, "a.fcs,S1,W1,Whatever,P1,A01", "b.fcs,S2,W1,tbnk-nk,P1,A02"])
    with pytest.raises(SampleSheetError):
        read_sample_sheet(path)
    sheet = read_sample_sheet(path, tubes=None)
    assert [row.tube for row in sheet] == ["Whatever", "tbnk-nk"]


def test_custom_tubes(tmp_path: Path) -> None:
    path = make_sheet(tmp_path, [HEADER, "a.fcs,S1,W1,T1,P1,A01"])
    assert read_sample_sheet(path, tubes=["T1", "T2"]).rows[0].tube == "T1"
    issues = read_issues(path, tubes=("T2",))
    assert where(issues) == [(2, "tube")]
    assert "'T2'" in issues[0].message


def test_check_files_false_skips_existence(tmp_path: Path) -> None:
    path = make_sheet(tmp_path, [HEADER, "nowhere/a.fcs,S1,W1,TBNK-NK,P1,A01"], create=False)
    sheet = read_sample_sheet(path, check_files=False)
    assert sheet.rows[0].file == tmp_path / "nowhere" / "a.fcs"
    assert where(read_issues(path)) == [(2, "file")]


def test_to_frame_columns(tmp_path: Path) -> None:
    lines = [HEADER + ",batch", *(row + ",b1" for row in VALID_ROWS)]
    sheet = read_sample_sheet(make_sheet(tmp_path, lines))
    frame = sheet.to_frame()
    assert list(frame.columns) == [*REQUIRED_COLUMNS, "batch"]
    assert len(frame) == 4
    assert frame["file"].tolist() == [str(row.file) for row in sheet]
    assert all(isinstance(value, str) for value in frame["file"])
    assert frame["well"].tolist() == ["A01", "A02", "B01", "H12"]
    assert frame["batch"].tolist() == ["b1"] * 4


def test_to_frame_of_empty_sheet_has_columns(tmp_path: Path) -> None:
    frame = SampleSheet(path=tmp_path / "x.csv", rows=(), extra_columns=("note",)).to_frame()
    assert list(frame.columns) == [*REQUIRED_COLUMNS, "note"]
    assert len(frame) == 0


# --------------------------------------------------------------------------- writing


def test_round_trip_same_folder(tmp_path: Path) -> None:
    lines = [HEADER + ",note", *(row + ',"a, b"' for row in VALID_ROWS)]
    sheet = read_sample_sheet(make_sheet(tmp_path, lines))
    out = tmp_path / "copy.csv"
    write_sample_sheet(sheet, out)
    again = read_sample_sheet(out)
    assert again.rows == sheet.rows
    assert [row.line for row in again] == [row.line for row in sheet]
    assert again.extra_columns == ("note",)
    text = out.read_text(encoding="utf-8")
    assert text.splitlines()[0] == HEADER + ",note"
    assert text.splitlines()[1].startswith("a.fcs,S001,W001,TBNK-NK,P1,A01,")
    assert not text.startswith("\ufeff")


def test_round_trip_other_folder_writes_relative_posix_paths(tmp_path: Path) -> None:
    data = tmp_path / "data"
    sheet = read_sample_sheet(make_sheet(data, [HEADER, "plate1/a.fcs,S1,W1,TBNK-NK,P1,A01"]))
    out = tmp_path / "sheets" / "nested" / "out.csv"
    write_sample_sheet(sheet, out)
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8"), newline="")))
    assert rows[1][0] == "../../data/plate1/a.fcs"
    assert read_sample_sheet(out).rows == sheet.rows
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.csv"]  # no temp file left


def test_write_rows_collects_extra_columns(tmp_path: Path) -> None:
    (tmp_path / "a.fcs").write_bytes(b"x")
    (tmp_path / "b.fcs").write_bytes(b"x")
    rows = [
        SampleSheetRow(tmp_path / "a.fcs", "S1", "W1", "TBNK-NK", "P1", "A01", extra={"x": "1"}),
        SampleSheetRow(tmp_path / "b.fcs", "S2", "W1", "Treg-Th", "P1", "A02", extra={"y": "2;3", "x": ""}),
    ]
    out = tmp_path / "out.csv"
    write_sample_sheet(iter(rows), out)
    sheet = read_sample_sheet(out)
    assert sheet.extra_columns == ("x", "y")
    assert sheet.rows[0] == SampleSheetRow(
        tmp_path / "a.fcs", "S1", "W1", "TBNK-NK", "P1", "A01", extra={"x": "1", "y": ""}
    )
    assert sheet.rows[1].extra == {"x": "", "y": "2;3"}


def test_write_with_semicolon_in_extra_column_name_round_trips(tmp_path: Path) -> None:
    (tmp_path / "a.fcs").write_bytes(b"x")
    name = "a;b;c;d;e;f;g;h"
    rows = [SampleSheetRow(tmp_path / "a.fcs", "S1", "W1", "TBNK-NK", "P1", "A01", extra={name: "v"})]
    write_sample_sheet(rows, tmp_path / "out.csv")
    sheet = read_sample_sheet(tmp_path / "out.csv")
    assert sheet.extra_columns == (name,)
    assert sheet.rows == tuple(rows)


def test_write_rejects_extra_column_named_like_required(tmp_path: Path) -> None:
    rows = [SampleSheetRow(tmp_path / "a.fcs", "S1", "W1", "TBNK-NK", "P1", "A01", extra={" Tube": "x"})]
    with pytest.raises(ValueError, match="Tube"):
        write_sample_sheet(rows, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


def test_write_replaces_existing_file(tmp_path: Path) -> None:
    sheet = read_sample_sheet(make_sheet(tmp_path, [HEADER, *VALID_ROWS]))
    out = tmp_path / "out.csv"
    out.write_text("old content", encoding="utf-8")
    write_sample_sheet(sheet, out)
    assert read_sample_sheet(out).rows == sheet.rows


# --------------------------------------------------------------------------- errors, one kind each


def test_missing_sheet_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_sample_sheet(tmp_path / "nope.csv")


def test_missing_fcs_file(tmp_path: Path) -> None:
    path = make_sheet(tmp_path, [HEADER, VALID_ROWS[0], "missing.fcs,S2,W2,TBNK-NK,P1,A02"])
    issues = read_issues(path)
    assert where(issues) == [(3, "file")]
    assert "missing.fcs" in issues[0].message
    assert "not found" in issues[0].message


def test_fcs_path_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "adir.fcs").mkdir()
    path = make_sheet(tmp_path, [HEADER, "adir.fcs,S1,W1,TBNK-NK,P1,A01"], create=False)
    assert where(read_issues(path)) == [(2, "file")]


def test_empty_file_cell(tmp_path: Path) -> None:
    path = make_sheet(tmp_path, [HEADER, VALID_ROWS[0], "  ,S2,W2,TBNK-NK,P1,A02"])
    issues = read_issues(path, check_files=False)
    assert where(issues) == [(3, "file")]
    assert "empty" in issues[0].message


@pytest.mark.parametrize("column", REQUIRED_COLUMNS)
def test_missing_required_column(tmp_path: Path, column: str) -> None:
    keep = [i for i, name in enumerate(REQUIRED_COLUMNS) if name != column]
    lines = [",".join(HEADER.split(",")[i] for i in keep)]
    lines += [",".join(row.split(",")[i] for i in keep) for row in VALID_ROWS]
    issues = read_issues(make_sheet_any(tmp_path, lines))
    assert where(issues) == [(1, column)]
    assert column in issues[0].message and "missing" in issues[0].message


def make_sheet_any(folder: Path, lines: list[str]) -> Path:
    """Write a sheet and touch a.fcs .. d.fcs, whatever the column order."""
    for name in ("a.fcs", "b.fcs", "c.fcs", "d.fcs"):
        (folder / name).write_bytes(b"x")
    path = folder / "sheet.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_missing_column_hint_for_near_name(tmp_path: Path) -> None:
    lines = ["file,Sample ID,woman_id,tube,plate,well", "a.fcs,S1,W1,TBNK-NK,P1,A01"]
    issues = read_issues(make_sheet_any(tmp_path, lines))
    assert where(issues) == [(1, "sample_id")]
    assert "'Sample ID'" in issues[0].message


def test_duplicate_and_unnamed_header_columns(tmp_path: Path) -> None:
    lines = [HEADER + ",Tube,note,note,", VALID_ROWS[0] + ",x,y,z,"]
    issues = read_issues(make_sheet(tmp_path, lines))
    assert where(issues) == [(1, None), (1, "tube"), (1, "note")]


@pytest.mark.parametrize("index", range(1, 6))
def test_empty_required_cell(tmp_path: Path, index: int) -> None:
    cells = VALID_ROWS[2].split(",")
    cells[index] = " "
    path = make_sheet(tmp_path, [HEADER, VALID_ROWS[0], ",".join(cells)])
    issues = read_issues(path)
    assert where(issues) == [(3, REQUIRED_COLUMNS[index])]
    assert "empty" in issues[0].message


def test_duplicate_sample_id_names_first_line(tmp_path: Path) -> None:
    path = make_sheet(tmp_path, [HEADER, *VALID_ROWS, "e.fcs,S001b,W003,TBNK-NK,P3,A01"])
    issues = read_issues(path)
    assert where(issues) == [(6, "sample_id")]
    assert "S001b" in issues[0].message
    assert "line 3" in issues[0].message


@pytest.mark.parametrize("spelling", ["a.fcs", "./a.fcs", "sub/../a.fcs"])
def test_same_file_listed_twice(tmp_path: Path, spelling: str) -> None:
    (tmp_path / "sub").mkdir()
    path = make_sheet(tmp_path, [HEADER, VALID_ROWS[0], f"{spelling},S2,W2,TBNK-NK,P1,A02"])
    issues = read_issues(path)
    assert where(issues) == [(3, "file")]
    assert "line 2" in issues[0].message


def test_same_file_through_symlink(tmp_path: Path) -> None:
    (tmp_path / "a.fcs").write_bytes(b"x")
    try:
        (tmp_path / "link.fcs").symlink_to(tmp_path / "a.fcs")
    except OSError:  # pragma: no cover - platform without symlinks
        pytest.skip("symlinks not available")
    path = make_sheet(tmp_path, [HEADER, VALID_ROWS[0], "link.fcs,S2,W2,TBNK-NK,P1,A02"], create=False)
    assert where(read_issues(path)) == [(3, "file")]


def test_same_plate_and_well(tmp_path: Path) -> None:
    path = make_sheet(
        tmp_path, [HEADER, VALID_ROWS[0], "b.fcs,S2,W2,TBNK-NK,P1,a01", "c.fcs,S3,W3,TBNK-NK,P2,A01"]
    )
    issues = read_issues(path)
    assert where(issues) == [(3, "well")]
    assert "A01" in issues[0].message and "line 2" in issues[0].message


def test_unknown_tube_lists_allowed(tmp_path: Path) -> None:
    path = make_sheet(tmp_path, [HEADER, "a.fcs,S1,W1,B-cell,P1,A01"])
    issues = read_issues(path)
    assert where(issues) == [(2, "tube")]
    assert "B-cell" in issues[0].message
    assert "'TBNK-NK'" in issues[0].message and "'Treg-Th'" in issues[0].message
    assert "did you mean" not in issues[0].message


def test_tube_case_mismatch_suggests(tmp_path: Path) -> None:
    path = make_sheet(tmp_path, [HEADER, "a.fcs,S1,W1,tbnk-nk,P1,A01", "b.fcs,S2,W2,TREG-TH,P1,A02"])
    issues = read_issues(path)
    assert where(issues) == [(2, "tube"), (3, "tube")]
    assert "did you mean 'TBNK-NK'?" in issues[0].message
    assert "did you mean 'Treg-Th'?" in issues[1].message


@pytest.mark.parametrize("well", ["I01", "A13", "A0", "7", "AA1", "A1.5", "A-1", "1A", "Z99"])
def test_bad_well(tmp_path: Path, well: str) -> None:
    assert normalize_well(well) is None
    path = make_sheet(tmp_path, [HEADER, f"a.fcs,S1,W1,TBNK-NK,P1,{well}"])
    issues = read_issues(path)
    assert where(issues) == [(2, "well")]
    assert repr(well) in issues[0].message


@pytest.mark.parametrize("column", ["sample_id", "woman_id"])
@pytest.mark.parametrize(
    "value", ["S 1", "-S1", ".S1", "S/1", "..\\x", "Jane Doe", '"S,1"', "Sé1", "S\u00a01"]
)
def test_bad_id(tmp_path: Path, column: str, value: str) -> None:
    cells = {"sample_id": "S1", "woman_id": "W1", column: value}
    path = make_sheet(tmp_path, [HEADER, f"a.fcs,{cells['sample_id']},{cells['woman_id']},TBNK-NK,P1,A01"])
    issues = read_issues(path)
    assert where(issues) == [(2, column)]
    assert "not a valid ID" in issues[0].message


@pytest.mark.parametrize("value", ["S1", "s-1", "2024.S_01", "A"])
def test_good_ids(tmp_path: Path, value: str) -> None:
    path = make_sheet(tmp_path, [HEADER, f"a.fcs,{value},{value},TBNK-NK,P1,A01"])
    assert read_sample_sheet(path).rows[0].sample_id == value


def test_woman_twice_in_one_tube(tmp_path: Path) -> None:
    path = make_sheet(tmp_path, [HEADER, VALID_ROWS[0], "b.fcs,S9,W001,TBNK-NK,P1,A02"])
    issues = read_issues(path)
    assert where(issues) == [(3, "tube")]
    assert "W001" in issues[0].message and "line 2" in issues[0].message


@pytest.mark.parametrize("row", ["b.fcs,S2,W2,TBNK-NK,P1", "b.fcs,S2,W2,TBNK-NK,P1,A02,extra"])
def test_wrong_cell_count(tmp_path: Path, row: str) -> None:
    path = make_sheet(tmp_path, [HEADER, VALID_ROWS[0], row])
    issues = read_issues(path)
    assert where(issues) == [(3, None)]
    assert "cells" in issues[0].message


def test_header_without_rows(tmp_path: Path) -> None:
    path = make_sheet(tmp_path, [HEADER, "", ",,,,,"])
    issues = read_issues(path)
    assert where(issues) == [(None, None)]
    assert "no sample rows" in issues[0].message


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_sheet(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "sheet.csv"
    path.write_bytes(content)
    assert where(read_issues(path)) == [(None, None)]


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "sheet.csv"
    path.write_bytes((HEADER + "\na.fcs,S1,W1,TBNK-NK,P1,A01,Jos\xe9\n").encode("latin-1"))
    issues = read_issues(path)
    assert where(issues) == [(None, None)]
    assert "UTF-8" in issues[0].message and "line 2" in issues[0].message


def test_utf16(tmp_path: Path) -> None:
    path = tmp_path / "sheet.csv"
    path.write_bytes((HEADER + "\na.fcs,S1,W1,TBNK-NK,P1,A01\n").encode("utf-16"))
    issues = read_issues(path)
    assert where(issues) == [(None, None)]
    assert "UTF-16" in issues[0].message


def test_nul_in_file_cell(tmp_path: Path) -> None:
    path = tmp_path / "sheet.csv"
    path.write_text(HEADER + "\na\x00.fcs,S1,W1,TBNK-NK,P1,A01\n", encoding="utf-8")
    assert where(read_issues(path)) == [(2, "file")]
    assert where(read_issues(path, check_files=False)) == [(2, "file")]


def test_unreadable_csv_record(tmp_path: Path) -> None:
    path = tmp_path / "sheet.csv"
    path.write_text(HEADER + '\na.fcs,S1,W1,TBNK-NK,P1,A01\n"' + "x" * 200_000 + '"\n', encoding="utf-8")
    issues = read_issues(path, check_files=False)
    assert where(issues) == [(3, None)]
    assert "cannot read" in issues[0].message


def test_error_message_lists_every_issue(tmp_path: Path) -> None:
    path = make_sheet(tmp_path, [HEADER, "a.fcs,S1,W1,TBNK-NK,P1,Q1", "b.fcs,S1,W2,TBNK-NK,P1,A02"])
    with pytest.raises(SampleSheetError) as info:
        read_sample_sheet(path)
    text = str(info.value)
    assert str(path) in text
    assert "2 problems" in text
    assert "line 2, column 'well'" in text
    assert "line 3, column 'sample_id'" in text
    assert info.value.path == str(path)


def test_many_errors_all_reported(tmp_path: Path) -> None:
    lines = [
        HEADER + ",note",
        "a.fcs,S1,W1,TBNK-NK,P1,A01,ok",  # 2: fine
        "missing1.fcs,S2,W2,TBNK-NK,P1,A02,x",  # 3: file not found
        "b.fcs,S1,W3,tbnk-nk,P1,A01,x",  # 4: dup sample_id, case tube, dup well
        "c.fcs,Jane Doe,W4,Treg-Th,P1,I09,x",  # 5: bad sample_id, bad well
        "a.fcs,S5,W5,TBNK-NK,P2,A01,x",  # 6: file twice
        "d.fcs,S6,W1,TBNK-NK,,A03,x",  # 7: empty plate, woman W1 twice in TBNK-NK
        "e.fcs,S7,W7,TBNK-NK,P2,A04",  # 8: too few cells
        "",
        "f.fcs,S8,w/8,Treg-Th,P2,A13,x",  # 10: bad woman_id, bad well
    ]
    issues = read_issues(make_sheet(tmp_path, lines))
    assert where(issues) == [
        (3, "file"),
        (4, "sample_id"),
        (4, "tube"),
        (4, "well"),
        (5, "sample_id"),
        (5, "well"),
        (6, "file"),
        (7, "tube"),
        (7, "plate"),
        (8, None),
        (10, "woman_id"),
        (10, "well"),
    ]
    assert "line 2" in issues[1].message  # the first use of S1
    assert "did you mean 'TBNK-NK'?" in issues[2].message


def test_missing_column_and_row_problems_together(tmp_path: Path) -> None:
    lines = ["file,sample_id,woman_id,tube,well", "a.fcs,S1,W1,TBNK-NK,A01", "b.fcs,S1,W2,XX,A99"]
    issues = read_issues(make_sheet(tmp_path, lines))
    assert where(issues) == [(1, "plate"), (3, "sample_id"), (3, "tube"), (3, "well")]


# --------------------------------------------------------------------------- property test

_CELLS = st.sampled_from(
    [
        "",
        " ",
        "a.fcs",
        "S1",
        "W1",
        "TBNK-NK",
        "Treg-Th",
        "P1",
        "A1",
        "I01",
        "x y",
        '"',
        '""',
        "é",
        "\x00",
        "~",
    ]
)
_SEPARATORS = st.sampled_from([",", ";", "\t", "\n", "\r\n", "\r", '"', " "])


_HEADER = st.lists(st.sampled_from([*REQUIRED_COLUMNS, "FILE", " well ", "note", ""]), max_size=8)
_N_ROWS = st.integers(0, 6)
_ROW_REST = st.lists(st.one_of(_CELLS, _SEPARATORS, st.text(max_size=4)), max_size=10)


@st.composite
def _sheet_like(draw: st.DrawFn) -> str:
    header = draw(_HEADER)
    parts = [",".join(header), "\n"]
    for _ in range(draw(_N_ROWS)):
        parts.append(draw(_CELLS))
        parts.extend(draw(_ROW_REST))
        parts.append("\n")
    return "".join(parts)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=st.one_of(st.text(), _sheet_like()))
def test_arbitrary_text_returns_or_raises_sample_sheet_error(content: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sheet.csv"
        path.write_bytes(content.encode("utf-8"))
        try:
            sheet = read_sample_sheet(path, check_files=False)
        except SampleSheetError as exc:
            assert exc.issues
            assert all(isinstance(issue, SheetIssue) for issue in exc.issues)
        else:
            assert len(sheet) >= 1
