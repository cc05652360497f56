"""`flowtools demo` runs every stage on a small cohort, writes no personal keyword, and re-runs cleanly."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from flowtools.cli import app
from flowtools.pipeline.demo import run_demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return run_demo(tmp_path_factory.mktemp("demo"), n_women=4, events=1500, seed=3, jobs=1)


def test_demo_runs_every_stage(demo):
    s = demo.summary
    assert s["women"] == 4
    assert s["files"] == 8
    assert s["tubes"] == ["TBNK-NK", "Treg-Th"]
    assert s["events"] > 0
    for p in (
        demo.scan_csv,
        demo.scan_json,
        demo.provenance_json,
        demo.cohort.samples_csv,
        demo.cohort.clinical_csv,
        demo.medians_csv,
    ):
        assert p.is_file()
    assert s["compensated_files"] == 8
    # Gating with the study templates ran on every sample (a tiny low-event well may fail, reported).
    assert s["gated"] + s["gating_failed"] == 8 and s["gated"] >= 7
    assert demo.plate is not None and demo.plate.populations_csv.is_file()
    import csv

    with open(demo.medians_csv, newline="") as fh:
        med = list(csv.DictReader(fh))
    assert len(med) == 8 * 10  # ten fluorescence detectors per tube
    assert {m["marker"] for m in med if m["tube"] == "Treg-Th"} >= {"FOXP3", "CD25", "CD127"}
    scan = json.loads(demo.scan_json.read_text())
    assert len(scan["files"]) == 8
    assert scan["provenance"]["parameters"] == {"n_women": 4, "events": 1500, "seed": 3}
    assert set(scan["provenance"]["inputs"]) == {"samples.csv", "clinical.csv"}


def test_demo_exports(demo):
    ex = demo.summary["export"]
    assert (demo.out_dir / "gated" / "miflowcyt.json").is_file()
    assert ex["nk_fcs_files"] >= 1 and len(list((demo.out_dir / "export" / "nk_fcs").glob("*.fcs"))) == ex[
        "nk_fcs_files"]
    import anndata as ad

    adata = ad.read_h5ad(ex["anndata"]["path"])
    assert adata.n_obs == ex["anndata"]["events"] > 0
    assert "X_pca" in adata.obsm and any(c.startswith("cluster_") for c in adata.obs.columns)


def test_demo_time_to_live_birth(demo):
    """The 4-woman fixture has one live birth: the stage says why it skipped the models, and keeps the db.

    The models themselves run on a 24-woman demo cohort in tests/stats/test_survival.py
    (``test_demo_stage_on_24_women``).
    """
    sv = demo.summary["survival"]
    assert (demo.out_dir / "survival" / "followup" / "followup.sqlite").is_file()
    assert "events" in sv["survival_skipped"] and "cross-validation" in sv["survival_skipped"]


def test_demo_normalises_plates_on_anchors(demo):
    nz = demo.summary["normalize"]
    assert nz["plates"] == 4 and nz["markers"] > 0
    assert nz["mean_emd_after"] < nz["mean_emd_before"]  # the planted batch effect is reduced
    assert (demo.out_dir / "normalize" / "model.json").is_file()
    assert len(list((demo.out_dir / "normalize" / "normalized" / "fcs").glob("*.fcs"))) > 0


def test_demo_bead_plate_concentrations_and_comparison(demo):
    import pandas as pd

    s = demo.summary
    assert s["bead_wells"] > 0 and s["bead_failed_wells"] == 0 and s["bead_curves_ok"] >= 10
    per_woman = pd.read_csv(demo.out_dir / "beads" / "results" / "per_woman.csv")
    assert set(per_woman["woman_id"]) == {f"W{i:03d}" for i in range(1, 5)}
    cmp = pd.read_csv(demo.out_dir / "beads" / "analytes_comparison.csv")
    assert len(cmp) == s["analytes_compared"] == 13 and cmp["p_mannwhitney"].between(0, 1).all()


def test_demo_outputs_hold_no_personal_keywords(demo):
    for p in demo.out_dir.rglob("*"):
        if p.is_file() and "cohort" not in p.parts:  # the cohort's FCS files carry the canaries on purpose
            assert b"CANARY" not in p.read_bytes(), p


def test_demo_rerun_is_idempotent(demo):
    before = demo.scan_csv.read_bytes()
    files_before = sorted(p.relative_to(demo.out_dir) for p in demo.out_dir.rglob("*"))
    again = run_demo(demo.out_dir, n_women=4, events=1500, seed=3, jobs=1)
    assert again.scan_csv.read_bytes() == before
    assert sorted(p.relative_to(demo.out_dir) for p in demo.out_dir.rglob("*")) == files_before


def test_demo_cli_json(tmp_path):
    r = CliRunner().invoke(
        app,
        ["demo", "--out", str(tmp_path / "d"), "--women", "2", "--events", "3000", "--jobs", "1", "--json"],
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["summary"]["files"] == 4
    assert out["outputs"]["report"].endswith("index.html")
    assert (tmp_path / "d" / "gated" / "report" / "index.html").is_file()
    assert (tmp_path / "d" / "fcs_scan.csv").is_file()


def test_synth_cli(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["synth", str(tmp_path / "c"), "--women", "2", "--events", "300", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["files"] == 4
    r = runner.invoke(app, ["synth", str(tmp_path / "c"), "--women", "2", "--events", "300"])
    assert r.exit_code == 1  # not empty, no --overwrite
    r = runner.invoke(app, ["synth", str(tmp_path / "c"), "--women", "2", "--events", "300", "--overwrite"])
    assert r.exit_code == 0, r.output
