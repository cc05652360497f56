"""``flowtools beads run`` round trip with CliRunner: tables, --json, --report, exit codes."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from flowtools._cli.beads import beads_app


@pytest.fixture(scope="module")
def plate(tmp_path_factory):
    from flowtools.synth.beads import make_bead_plate

    return make_bead_plate(
        tmp_path_factory.mktemp("cliplate"), n_women=6, n_analytes=3, events_per_well=900, seed=2
    )


def test_run_json_and_report(plate, tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(
        beads_app, ["run", str(plate.sheet), "-t", str(plate.panel), "--out", str(out), "--json", "--report"]
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["failed_wells"] == 0 and summary["women"] == 6 and summary["curves_ok"] == 3
    for name in (
        "wells.csv",
        "per_woman.csv",
        "per_woman.parquet",
        "curves.csv",
        "standards.csv",
        "identification.json",
        "summary.json",
        "report.html",
    ):
        assert (out / name).exists(), name
    rows = list(csv.DictReader((out / "per_woman.csv").read_text().splitlines()))
    assert len(rows) == 18 and {r["flag"] for r in rows} == {"ok"}


def test_failed_well_gives_exit_2(plate, tmp_path):
    from flowtools.io.fcs_write import write_fcs

    bad = tmp_path / "bad.fcs"
    write_fcs(bad, np.ones((50, 3), dtype=np.float32), ["FSC-A", "SSC-A", "APC-A"])
    rows = list(csv.DictReader(plate.sheet.read_text().splitlines()))
    for r in rows:
        r["file"] = str(plate.sheet.parent / r["file"])
    rows[-1]["file"] = str(bad)
    sheet = tmp_path / "sheet.csv"
    with sheet.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    res = CliRunner().invoke(
        beads_app, ["run", str(sheet), "-t", str(plate.panel), "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 2
    assert "bad.fcs" in res.output and "PE-A" in res.output


def test_bad_template_exit_1(plate, tmp_path):
    bad = tmp_path / "panel.yaml"
    bad.write_text("name: x\n")
    res = CliRunner().invoke(
        beads_app, ["run", str(plate.sheet), "-t", str(bad), "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 1
    assert "panel.yaml" in res.output and "scatter" in res.output


def test_help():
    res = CliRunner().invoke(beads_app, ["run", "--help"])
    assert res.exit_code == 0 and "--template" in res.output


def test_synth_then_run(tmp_path):
    runner = CliRunner()
    res = runner.invoke(
        beads_app, ["synth", str(tmp_path / "p"), "--women", "3", "--analytes", "2", "--events", "700"]
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        beads_app,
        [
            "run",
            str(tmp_path / "p" / "samples.csv"),
            "-t",
            str(tmp_path / "p" / "panel.yaml"),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "3 women" in res.output
