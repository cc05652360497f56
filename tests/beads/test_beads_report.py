"""The bead HTML report and the demo's bead stage."""

from __future__ import annotations

import re

import pandas as pd


def test_report_has_figures_and_escapes(bead_run, tmp_path):
    from flowtools.report.beads import write_bead_report

    bead_run.well_errors["X"] = "<script>alert(1)</script> broken well"
    try:
        path = write_bead_report(bead_run, tmp_path / "report.html")
    finally:
        del bead_run.well_errors["X"]
    text = path.read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text
    n_img = len(re.findall(r'src="data:image/png;base64,', text))
    assert n_img >= 4  # heatmap, curves, identification plots
    assert "Standard-curve QC" in text and "IL-1b" in text


def test_beads_stage_on_a_small_cohort(tmp_path):
    from flowtools.report.beads import beads_stage
    from flowtools.synth import make_cohort

    cohort = make_cohort(tmp_path / "cohort", n_women=10, seed=1, events=300, write_fcs=False)
    s = beads_stage(cohort.out_dir, tmp_path / "beads", seed=1, events_per_well=800)
    pw = pd.read_csv(s["per_woman"])
    assert pw["woman_id"].nunique() == 10 and pw["analyte"].nunique() == 13
    comp = pd.read_csv(s["comparison"])
    assert set(comp["analyte"]) == set(pw["analyte"])
    assert s["failed_wells"] == 0 and s["curves_ok"] == 13
