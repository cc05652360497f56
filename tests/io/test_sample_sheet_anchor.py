"""The sample sheet's optional ``anchor`` and ``batch`` columns, and the anchor check."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowtools.errors import NormalizationError, SampleSheetError
from flowtools.io.sample_sheet import check_anchors, parse_anchor, read_sample_sheet, write_sample_sheet

HEADER = "file,sample_id,woman_id,tube,plate,well"


def _sheet(tmp_path: Path, extra_header: str, cells: list[str]) -> Path:
    lines = [f"{HEADER},{extra_header}" if extra_header else HEADER]
    for i, extra in enumerate(cells):
        plate = "P1" if i < 2 else "P2"
        row = f"f{i}.fcs,S{i},W{i},TBNK-NK,{plate},A{i + 1}"
        lines.append(f"{row},{extra}" if extra_header else row)
    p = tmp_path / "samples.csv"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


@pytest.mark.parametrize(("cell", "expected"), [
    ("true", (True, None)), ("YES", (True, None)), ("1", (True, None)), (" no ", (False, None)),
    ("0", (False, None)), ("", (False, None)), ("False", (False, None)), ("D07", (True, "D07")),
    ("bad id!", None), ("-x", None),
])
def test_parse_anchor(cell: str, expected: object) -> None:
    assert parse_anchor(cell) == expected


def test_rows_expose_anchor_and_batch(tmp_path: Path) -> None:
    p = _sheet(tmp_path, "Anchor,Batch", ["yes,B1", "no,", "D9,B2", "0,B2"])
    sheet = read_sample_sheet(p, check_files=False)
    rows = sheet.rows
    assert [r.is_anchor for r in rows] == [True, False, True, False]
    assert [r.anchor_id for r in rows] == ["W0", None, "D9", None]
    assert [r.batch for r in rows] == ["B1", "P1", "B2", "B2"]  # empty batch: the plate
    assert rows[0].extra == {"Anchor": "yes", "Batch": "B1"}
    out = tmp_path / "again.csv"
    write_sample_sheet(sheet, out)
    assert read_sample_sheet(out, check_files=False).rows == sheet.rows


def test_without_columns_batch_is_plate(tmp_path: Path) -> None:
    sheet = read_sample_sheet(_sheet(tmp_path, "", ["", "", "", ""]), check_files=False)
    assert [r.batch for r in sheet] == ["P1", "P1", "P2", "P2"]
    assert not any(r.is_anchor for r in sheet)
    with pytest.raises(NormalizationError, match="no 'anchor' column"):
        check_anchors(sheet)


def test_bad_anchor_cell_names_line_and_column(tmp_path: Path) -> None:
    p = _sheet(tmp_path, "anchor", ["true", "maybe so", "true", "x/y"])
    with pytest.raises(SampleSheetError) as info:
        read_sample_sheet(p, check_files=False)
    issues = info.value.issues
    assert [(i.line, i.column) for i in issues] == [(3, "anchor"), (5, "anchor")]
    assert "'maybe so'" in str(info.value)


def test_duplicate_anchor_column(tmp_path: Path) -> None:
    p = _sheet(tmp_path, "anchor,ANCHOR", ["true,true", "no,no", "yes,yes", "0,0"])
    with pytest.raises(SampleSheetError, match="'anchor' appears more than once"):
        read_sample_sheet(p, check_files=False)


def test_check_anchors(tmp_path: Path) -> None:
    sheet = read_sample_sheet(_sheet(tmp_path, "anchor", ["true", "no", "no", "no"]), check_files=False)
    with pytest.raises(NormalizationError, match=r"batch 'P2' has no anchor"):
        check_anchors(sheet)
    found = check_anchors(sheet, batches=["P1"])
    assert [r.sample_id for r in found["P1"]] == ["S0"]
    with pytest.raises(NormalizationError, match=r"'P1', 'P3' have no anchor sample of tube 'Treg-Th'"):
        check_anchors(sheet, batches=["P1", "P3"], tube="Treg-Th")


def test_check_anchors_keeps_several_anchors_per_batch(tmp_path: Path) -> None:
    sheet = read_sample_sheet(_sheet(tmp_path, "anchor", ["true", "D7", "D7", "no"]), check_files=False)
    found = check_anchors(sheet)
    assert [r.sample_id for r in found["P1"]] == ["S0", "S1"]
    assert [r.anchor_id for r in found["P1"]] == ["W0", "D7"]  # a true row's donor is its woman
    assert [r.anchor_id for r in found["P2"]] == ["D7"]
