"""Bead-panel template and plate-layout columns: valid files load, bad ones name the file and field."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from flowtools.beads.template import load_panel, read_bead_sheet
from flowtools.errors import BeadAssayError, SampleSheetError

EXAMPLE = Path(__file__).resolve().parents[2] / "gating_templates" / "beads" / "legendplex_13plex.yaml"


def test_example_template_loads():
    p = load_panel(EXAMPLE)
    assert len(p.analytes) == 13
    assert [len(g.regions) for g in p.groups] == [7, 6]
    assert p.reporter == "PE-A" and p.classification == "APC-A"
    assert p.level_of("C7") == 1 and p.level_of("3") == 3 and p.level_of("9") is None
    assert p.nominal("IL-6", 1) == 10000 and p.nominal("IL-6", 3) == pytest.approx(625)
    assert p.min_beads == 35


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda t: t.replace("reporter: PE-A\n", ""), "reporter"),
        (lambda t: t.replace("n_points: 8", "n_points: 2"), "standards.n_points"),
        (lambda t: t.replace("{analyte: IL-33}", "{analyte: IL-6}"), "groups[1].regions[5].analyte"),
        (lambda t: t.replace("min_beads: 35", "min_beads: 35\ncolour: red"), "colour"),
        (lambda t: t.replace("dilution_factor: 4", "dilution_factor: four"), "standards.dilution_factor"),
        (lambda t: t.replace("{analyte: IL-8}", "{analyte: IL-8, size: 3}"), "groups[0].regions[6].size"),
    ],
)
def test_bad_template_names_file_and_field(tmp_path, edit, field):
    bad = tmp_path / "bad.yaml"
    bad.write_text(edit(EXAMPLE.read_text()))
    with pytest.raises(BeadAssayError) as exc:
        load_panel(bad)
    assert str(bad) in str(exc.value)
    assert f"'{field}'" in str(exc.value)


def test_not_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(BeadAssayError, match="not valid YAML"):
        load_panel(bad)


def test_sheet_layout_errors_name_line_and_column(bead_plate, tmp_path):
    rows = list(csv.DictReader(bead_plate.sheet.read_text().splitlines()))
    rows[0]["role"] = "calibrator"
    rows[1]["standard_level"] = "C99"
    rows[20]["standard_level"] = "3"  # a sample with a level
    sheet = tmp_path / "sheet.csv"
    with sheet.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            r["file"] = str(bead_plate.sheet.parent / r["file"])
            w.writerow(r)
    with pytest.raises(SampleSheetError) as exc:
        read_bead_sheet(sheet, load_panel(bead_plate.panel))
    issues = {(i.line, i.column) for i in exc.value.issues}
    assert issues == {(2, "role"), (3, "standard_level"), (22, "standard_level")}
    assert "calibrator" in str(exc.value)


def test_sheet_reads(bead_plate):
    wells = read_bead_sheet(bead_plate.sheet, load_panel(bead_plate.panel))
    roles = [w.role for w in wells]
    assert roles.count("standard") == 16 and roles.count("blank") == 2 and roles.count("sample") == 12
    assert {w.level for w in wells if w.role == "standard"} == set(range(1, 9))
    assert all(w.dilution == 2 for w in wells if w.role == "sample")
