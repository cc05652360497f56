"""Batch QC in the gate report: a run whose sample sheet has anchors (issue 18)."""

from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory):
    from flowtools._resources import study_template
    from flowtools.pipeline.plate import run_plate
    from flowtools.synth.batch import make_batch_cohort

    root = tmp_path_factory.mktemp("report_anchors")
    # 7 plates: with n batches no value can be more than (n - 1) / sqrt(n) SD from the mean,
    # so fewer than 6 could never be flagged
    bc = make_batch_cohort(root / "cohort", n_plates=7, n_women=7, events=1500, seed=5)
    template = Path(study_template("TBNK-NK"))
    res = run_plate(bc.samples_csv, [template], root / "gate", jobs=1)
    assert res.n_ok > 0 and res.n_failed == 0
    return {"root": root, "bc": bc, "template": template, "res": res}


def _anchor_ids(sheet: Path) -> list[str]:
    from flowtools.io.sample_sheet import read_sample_sheet

    rows = read_sample_sheet(sheet, tubes=None).rows
    return [r.sample_id for r in rows if r.is_anchor and r.tube == "TBNK-NK"]


def test_report_links_batch_qc(gated) -> None:
    from flowtools.report.html import write_report

    res = gated["res"]
    # The gate plots are not what this test is about: with the FCS path gone each sample page says
    # so instead of drawing (seconds per sample saved); the batch QC reads the outcomes only.
    res = dataclasses.replace(res, outcomes=[dataclasses.replace(o, file=str(gated["root"] / "gone.fcs"))
                                             for o in res.outcomes])
    index = write_report(res, jobs=1)
    html = index.read_text(encoding="utf-8")
    assert "Batch QC" in html and 'href="batch_qc.html"' in html
    anchors = _anchor_ids(gated["bc"].samples_csv)
    assert len(anchors) == 7
    assert "7 anchor sample(s) over 7 batch(es), not normalised" in html
    page = (index.parent / "batch_qc.html").read_text(encoding="utf-8")
    assert "Levey-Jennings: the anchor's populations (% of parent)" in page
    assert page.count("<img") >= 2  # the marker medians' and the populations' charts
    # every batch of the anchor in the population table
    for plate in gated["bc"].plates:
        assert f"<td>{plate}</td>" in page


def test_outlying_batch_flagged(gated) -> None:
    import json

    from flowtools.report.html import _batch_qc_section

    res = gated["res"]
    anchors = _anchor_ids(gated["bc"].samples_csv)
    # plant a shift of the anchor's lymphocytes on one plate (as a bad reagent lot would)
    outcomes = []
    for o in res.outcomes:
        if o.sample_id == anchors[3]:
            rows = [dict(r, pct_parent=r["pct_parent"] + 40.0) if r["population"].endswith("/lymphocytes")
                    else r for r in o.rows]
            o = dataclasses.replace(o, rows=rows)
        outcomes.append(o)
    bad = dataclasses.replace(res, outcomes=outcomes)
    rep = res.out_dir / "report_flagged"
    rep.mkdir()
    sec = _batch_qc_section(bad, json.loads(res.provenance_json.read_text()), rep)
    assert sec is not None
    m = re.search(r"(\d+) population-batch value\(s\) outside", sec.text)
    assert m and int(m.group(1)) >= 1, sec.text
    plate = next(o.plate for o in res.outcomes if o.sample_id == anchors[3])
    hits = [r for r in sec.rows if r["population"] == "lymphocytes"]  # short names: unique path tails
    assert [r["batch"] for r in hits] == [plate] and hits[0]["flag"] in ("warn", "fail")
    assert all(r["flag"] in ("warn", "fail") for r in sec.rows)
    page = (rep / "batch_qc.html").read_text(encoding="utf-8")
    assert re.search(rf"<td>lymphocytes</td><td>{plate}</td>", page), page[:2000]


def test_no_anchor_column_no_section(gated, tmp_path: Path) -> None:
    from flowtools.pipeline.plate import run_plate
    from flowtools.report.html import write_report

    src = gated["bc"].samples_csv
    with open(src, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["tube"] == "TBNK-NK"][:3]
    for r in rows:
        r.pop("anchor")
        r["file"] = str((src.parent / r["file"]).resolve())
    sheet = tmp_path / "samples.csv"
    with open(sheet, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    res = run_plate(sheet, [gated["template"]], tmp_path / "out", jobs=1)
    res = dataclasses.replace(res, outcomes=[dataclasses.replace(o, file=str(tmp_path / "gone.fcs"))
                                             for o in res.outcomes])  # no plots needed here
    index = write_report(res, jobs=1)
    assert "Batch QC" not in index.read_text(encoding="utf-8")
    assert not (index.parent / "batch_qc.html").exists()
