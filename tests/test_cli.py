"""The command line: help everywhere, info output, personal keywords hidden, exit codes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from flowtools import __version__
from flowtools.cli import app

runner = CliRunner()


def _commands():
    import typer.main

    group = typer.main.get_command(app)
    return sorted(group.commands)


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0
    assert __version__ in r.output


@pytest.mark.parametrize(
    "cmd",
    [[], *[[c] for c in _commands()], ["sheet", "check"], ["gml", "apply"], ["gml", "counts"],
     ["wsp", "show"], ["wsp", "apply"], ["wsp", "to-template"], ["wsp", "export"], ["template", "diff"]],
)
def test_help_everywhere(cmd):
    r = runner.invoke(app, [*cmd, "--help"])
    assert r.exit_code == 0, r.output
    assert "Usage" in r.output


def test_info_table_hides_personal_keywords(small_fcs):
    r = runner.invoke(app, ["info", str(small_fcs)])
    assert r.exit_code == 0, r.output
    assert "FITC-A" in r.output and "CD3" in r.output
    assert "500" in r.output
    assert "CANARY" not in r.output


def test_info_json(small_fcs):
    r = runner.invoke(app, ["info", "--json", str(small_fcs)])
    assert r.exit_code == 0
    (rec,) = json.loads(r.stdout)
    assert rec["n_events"] == 500
    assert rec["n_parameters"] == 5
    assert rec["spillover"]["detectors"] == ["FITC-A", "PE-A"]
    assert [c["pns"] for c in rec["channels"]] == ["", "", "CD3", "CD4", ""]
    assert "CANARY" not in r.stdout
    assert "$SRC" not in rec["keywords"]


def test_info_all_keywords_shows_them_when_asked(small_fcs):
    r = runner.invoke(app, ["info", "--json", "--all-keywords", str(small_fcs)])
    assert r.exit_code == 0
    assert json.loads(r.stdout)[0]["keywords"]["$SRC"] == "CANARY-PII source"


def test_info_exit_codes(tmp_path, small_fcs):
    bad = tmp_path / "bad.fcs"
    bad.write_bytes(b"not an fcs file at all")
    r = runner.invoke(app, ["info", str(small_fcs), str(bad)])
    assert r.exit_code == 2  # partial
    assert "bad.fcs" in r.output and "not an FCS file" in r.output
    r = runner.invoke(app, ["info", str(bad)])
    assert r.exit_code == 1
    r = runner.invoke(app, ["info", "--json", str(bad), str(tmp_path / "missing.fcs")])
    assert r.exit_code == 1
    recs = json.loads(r.stdout)
    assert all("error" in rec for rec in recs)


def test_info_on_shared_files_never_shows_personal_values(shared_data):
    """$SRC/$OP/$FIL values of the real files must not appear in default output."""
    from _helpers import manifest_rows, read_quiet

    from flowtools.io.keywords import is_safe_keyword

    rows = [r for r in manifest_rows("fcs") if "corrupted" not in r["path"]]
    paths = [str(shared_data / r["path"]) for r in rows]
    r = runner.invoke(app, ["info", "--json", *paths])
    assert r.exit_code == 0, r.output
    for path in paths:
        s = read_quiet(path, lazy=True)
        for key, value in s.keywords.items():
            v = value.strip()
            if (
                is_safe_keyword(key)
                or len(v) < 6
                or v in (c.pns for c in s.channels)
                or v in s.pnn
                or any(v in p for p in paths)
            ):
                continue
            if key in (
                "$SRC",
                "$OP",
                "$FIL",
                "$INST",
                "$COM",
                "EXPORT USER NAME",
                "&10PATIENT ID",
                "SAMPLE ID",
            ):
                assert json.dumps(v)[1:-1] not in r.stdout, f"{key} of {path} leaked"


def _sheet(tmp_path, rows):
    (tmp_path / "a.fcs").write_bytes(b"x")
    (tmp_path / "b.fcs").write_bytes(b"x")
    text = "file,sample_id,woman_id,tube,plate,well\n" + "".join(r + "\n" for r in rows)
    p = tmp_path / "samples.csv"
    p.write_text(text)
    return p


def test_sheet_check_ok_and_json(tmp_path):
    p = _sheet(tmp_path, ["a.fcs,S1,W1,TBNK-NK,P1,A01", "b.fcs,S2,W1,Treg-Th,P1,a2"])
    r = runner.invoke(app, ["sheet", "check", str(p)])
    assert r.exit_code == 0, r.output
    assert "2 samples, 1 women" in r.output
    r = runner.invoke(app, ["sheet", "check", "--json", str(p)])
    assert json.loads(r.stdout)["samples"] == 2


def test_sheet_check_reports_line_and_column(tmp_path):
    p = _sheet(tmp_path, ["a.fcs,S1,W1,TBNK-NK,P1,A01", "missing.fcs,S1,W2,Treg,P1,Z9"])
    r = runner.invoke(app, ["sheet", "check", "--json", "--study-tubes", str(p)])
    assert r.exit_code == 1
    issues = json.loads(r.stdout)["issues"]
    cols = {(i["line"], i["column"]) for i in issues}
    assert {(3, "file"), (3, "sample_id"), (3, "tube"), (3, "well")} <= cols
    r = runner.invoke(app, ["sheet", "check", "--any-tube", "--no-files", str(p)])
    assert r.exit_code == 1 and "line 3" in r.output


def test_gml_counts_and_apply(shared_data, tmp_path):
    gml = shared_data / "gatingml2/gml/gml_quadrant1_gate.xml"
    fcs = shared_data / "gatingml2/data1.fcs"
    r = runner.invoke(app, ["gml", "counts", "--json", str(gml), str(fcs)])
    assert r.exit_code == 0, r.output
    (rec,) = json.loads(r.stdout)
    counts = {p["population"]: p["count"] for p in rec["populations"]}
    assert counts == {"FL2P-FL4P": 620, "FL2N-FL4P": 238, "FL2N-FL4N": 5148, "FL2P-FL4N": 7361}
    out = tmp_path / "m.csv"
    r = runner.invoke(app, ["gml", "apply", str(gml), str(fcs), "--out", str(out)])
    assert r.exit_code == 0, r.output
    lines = out.read_text().splitlines()
    assert lines[0] == "FL2P-FL4P,FL2N-FL4P,FL2N-FL4N,FL2P-FL4N"
    assert len(lines) == 13367 + 1
    truth = (shared_data / "gatingml2/truth/Results_FL2N-FL4N.txt").read_text().split()
    assert [ln.split(",")[2] for ln in lines[1:]] == truth


def test_gml_errors(shared_data, tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_text("<nope")
    r = runner.invoke(app, ["gml", "counts", str(bad), str(shared_data / "gatingml2/data1.fcs")])
    assert r.exit_code == 1 and "not well-formed" in r.output
    gml = shared_data / "gatingml2/gml/gml_range_gate.xml"
    broken = tmp_path / "broken.fcs"
    broken.write_bytes(b"FCS3.0")
    r = runner.invoke(app, ["gml", "counts", str(gml), str(shared_data / "gatingml2/data1.fcs"), str(broken)])
    assert r.exit_code == 2  # partial: one file failed
