"""``flowtools export`` commands (anndata, fcs, miflowcyt) through typer's CliRunner."""

from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from flowtools._cli.export import export_app

runner = CliRunner()


@pytest.fixture(scope="module")
def gc(gated_cohort):
    return gated_cohort(n_women=2, events=3000, seed=0, templates=("TBNK-NK", "Treg-Th"))


def test_anndata_json(gc, tmp_path):
    pytest.importorskip("anndata")
    out = tmp_path / "x.h5ad"
    args = ["anndata", str(gc.run_dir), "--tube", "TBNK-NK", "--out", str(out), "--json"]
    r = runner.invoke(export_app, args)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["events"] > 0 and doc["tube"] == "TBNK-NK" and out.is_file()
    r = runner.invoke(export_app, ["anndata", str(gc.run_dir), "-p", "NK cells", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "written to" in r.stdout


def test_anndata_errors(gc, tmp_path, monkeypatch):
    out = str(tmp_path / "x.h5ad")
    r = runner.invoke(export_app, ["anndata", str(gc.run_dir), "--out", out, "--json"])
    assert r.exit_code == 1
    assert "several tubes" in json.loads(r.stdout)["error"]
    r = runner.invoke(export_app, ["anndata", str(tmp_path / "none"), "--out", out])
    assert r.exit_code == 1 and "no such run folder" in r.output
    r = runner.invoke(export_app, ["anndata", str(gc.run_dir), "-p", "no-such", "--out", out, "--json"])
    assert r.exit_code == 1 and "populations are" in json.loads(r.stdout)["error"]
    monkeypatch.setitem(sys.modules, "anndata", None)
    r = runner.invoke(export_app, ["anndata", str(gc.run_dir), "--tube", "TBNK-NK", "--out", out, "--json"])
    assert r.exit_code == 1 and "pip install flowtools[anndata]" in json.loads(r.stdout)["error"]


def test_fcs(gc, tmp_path):
    args = ["fcs", str(gc.run_dir), "-p", "NK cells", "--out", str(tmp_path), "--json"]
    r = runner.invoke(export_app, args)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert len(doc["files"]) == 2 and all(n > 0 for n in doc["counts"].values())
    r = runner.invoke(export_app, ["fcs", str(gc.run_dir), "-p", "CD8", "--out", str(tmp_path)])
    assert r.exit_code == 1 and "ambiguous" in r.output
    r = runner.invoke(export_app, ["fcs", str(gc.run_dir), "-p", "CD8", "--tube", "Treg-Th", "--out",
                                   str(tmp_path / "cd8")])
    assert r.exit_code == 0, r.output


def test_miflowcyt(gc, tmp_path):
    out = tmp_path / "m.json"
    r = runner.invoke(export_app, ["miflowcyt", str(gc.run_dir), "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["missing"] > 0 and sorted(doc["tubes"]) == ["TBNK-NK", "Treg-Th"]
    assert json.loads(out.read_text())["standard"] == "MIFlowCyt 1.0"
    r = runner.invoke(export_app, ["miflowcyt", str(tmp_path / "none")])
    assert r.exit_code == 1 and "no such run folder" in r.output


def test_help():
    r = runner.invoke(export_app, ["--help"])
    assert r.exit_code == 0
    for cmd in ("anndata", "fcs", "miflowcyt"):
        assert cmd in r.stdout
