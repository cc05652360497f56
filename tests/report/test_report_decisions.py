"""The report explains data-driven gates: peaks and cuts on the plots, flagged/failed badges, a summary.

One small gated plate (3 women x 3,000 events) with a template that forces a single-peak fallback
keeping < 1% of its parent (CD19 on T cells), an ``expect`` flag, a population whose gate cannot be
computed (a ``range`` holding no event; its name full of HTML metacharacters, so every reason that
quotes it must be escaped), its child, and an ``expect`` with ``on_violation: fail``.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import warnings
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import pytest

ODD = "odd <i> \"q\" & 'x'"  # a population name that must never reach the HTML unescaped
TEMPLATE = f"""\
name: report-decisions
tube: TBNK-NK
compensation: FCS
transforms:
  fluorescence: {{logicle: {{T: 262144, W: 0.5, M: 4.5, A: 0}}}}
  scatter: none
  time: none
populations:
  - name: cells
    dims: [FSC-A]
    method: mindensity
    args: {{side: positive, range: [2000, 50000]}}
  - name: lymphocytes
    parent: cells
    dims: [FSC-A, SSC-A]
    gate: {{rectangle: [[35000, 80000], [null, 30000]]}}
  - name: CD3+
    parent: lymphocytes
    dims: [CD3]
    method: mindensity
    args: {{side: positive}}
    expect: {{pct: [99, 100]}}
  - name: B in T
    parent: CD3+
    dims: [CD19]
    method: mindensity
    args: {{side: positive}}
  - name: T
    parent: CD3+
    dims: [CD4, CD8]
    method: quad
    quadrants: {{CD4: "+-", CD8: "-+"}}
  - name: '{ODD.replace("'", "''")}'
    parent: lymphocytes
    dims: [CD56]
    method: mindensity
    args: {{side: positive, range: [5, 6]}}
  - name: below
    parent: '{ODD.replace("'", "''")}'
    dims: [CD16]
    gate: {{range: [0.5, null]}}
  - name: strict
    parent: lymphocytes
    dims: [CD14]
    method: tail
    expect: {{pct: [50, 60]}}
    on_violation: fail
"""
FALLBACK = "cells/lymphocytes/CD3+/B in T"
NO_GATE = f"cells/lymphocytes/{ODD}"
CHILD = f"{NO_GATE}/below"
STRICT = "cells/lymphocytes/strict"
EXPECT_FLAG = "cells/lymphocytes/CD3+"
QUAD = "cells/lymphocytes/CD3+/T"
# rectangle/polygon-free plate: cells (1-D), lymphocytes (2-D), CD3+, B in T, the quadrants, strict
PLOTTED_GATES = 6


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict[str, str]] = []
        self.ids: set[str] = set()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.imgs.append(a)
        elif tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])


def _parse(path: Path) -> _Page:
    p = _Page()
    p.feed(path.read_text(encoding="utf-8"))
    return p


@pytest.fixture(scope="module")
def report(gated_cohort, tmp_path_factory):
    """The shared gated plate copied (it is read-only) and its report written once."""
    from flowtools.report.html import write_report

    gc = gated_cohort(n_women=3, events=3000, seed=2, templates=(TEMPLATE,))
    run = tmp_path_factory.mktemp("report_decisions") / "run"
    shutil.copytree(gc.run_dir, run)
    res = dataclasses.replace(
        gc.plate,
        out_dir=run,
        populations_csv=run / gc.plate.populations_csv.name if gc.plate.populations_csv else None,
        per_woman_csv=run / gc.plate.per_woman_csv.name if gc.plate.per_woman_csv else None,
        errors_json=run / "errors.json",
        provenance_json=run / "provenance.json",
    )
    index = write_report(res, jobs=1)
    return res, index


def _rows(o) -> dict[str, dict]:
    return {r["population"]: r for r in o.rows}


def _page(index: Path, sid: str) -> Path:
    return index.parent / "samples" / f"{sid}.html"


def test_the_template_forces_a_fallback_a_flag_and_failures(report):
    res, _ = report
    assert all(o.ok for o in res.outcomes)
    low = []
    for o in res.outcomes:
        rows = _rows(o)
        d = o.decisions[FALLBACK]
        assert d["method"] == "mindensity" and d["fallback"].startswith("one peak")
        assert len(d["details"]["peaks"]) == 1
        if 100.0 * d["events_kept"] / d["events_in"] < 1.0:
            low.append(o.sample_id)
            assert rows[FALLBACK]["status"] == "flagged" and "fallback" in rows[FALLBACK]["reason"]
        assert rows[NO_GATE]["status"] == "failed" and not rows[NO_GATE]["gate_id"]
        assert rows[CHILD]["status"] == "failed" and repr(NO_GATE) in rows[CHILD]["reason"]
        assert rows[STRICT]["status"] == "failed" and rows[STRICT]["gate_id"]
        assert rows[EXPECT_FLAG]["status"] == "flagged" and "expect [99, 100]" in rows[EXPECT_FLAG]["reason"]
        assert "x_cut" in o.decisions[QUAD]["details"]
    assert low, "no sample's fallback kept < 1% of its parent"
    assert len(low) < len(res.outcomes), "every fallback was flagged: the unflagged badge is not tested"


def test_index_summarises_flagged_and_failed_populations_with_links(report):
    res, index = report
    text = index.read_text(encoding="utf-8")
    n_flagged = sum(r["status"] == "flagged" for o in res.outcomes for r in o.rows)
    n_failed = sum(r["status"] == "failed" for o in res.outcomes for r in o.rows)
    assert n_flagged >= 4 and n_failed == 3 * len(res.outcomes)
    # near the top: before the plate overview, and as cards
    checks = text.split('id="gate-checks"', 1)[1].split('id="plates"', 1)[0]
    assert text.index('id="gate-checks"') < text.index('id="plates"')
    counts = re.search(r'id="gate-check-counts">(.*?)</p>', checks).group(1)
    assert f"<b>{n_flagged}</b> flagged populations in {len(res.outcomes)} samples" in counts
    assert f"<b>{n_failed}</b> failed populations in {len(res.outcomes)} samples" in counts
    assert f"<b>{n_flagged:,}</b>flagged populations</div>" in text
    assert f"<b>{n_failed:,}</b>failed populations</div>" in text
    # one linked row per population, to an anchor that exists on the sample page
    rows = re.findall(r'<a class="path" href="samples/([^"#]+)\.html#([^"]+)">', checks)
    assert len(rows) == n_flagged + n_failed
    for sid, anchor in rows:
        assert anchor in _parse(_page(index, sid)).ids, (sid, anchor)
    for o in res.outcomes:
        assert f'href="samples/{o.sample_id}.html"' in checks
    assert escape(_rows(res.outcomes[0])[CHILD]["reason"], quote=True) in checks
    assert "<i>" not in text


def test_sample_pages_badge_flagged_and_failed_populations_with_escaped_reasons(report):
    res, index = report
    for o in res.outcomes:
        page = _page(index, o.sample_id).read_text(encoding="utf-8")
        assert "<i>" not in page and ODD not in page
        assert escape(NO_GATE, quote=True) in page
        for path, r in _rows(o).items():
            if r["status"] == "ok":
                continue
            reason = escape(r["reason"], quote=True)
            flagged = r["status"] == "flagged"
            badge = "\u26a0</span> flagged</span>" if flagged else "\u2715</span> failed</span>"
            assert f"{badge} {reason}" in page, (o.sample_id, path)  # the table's status cell
        # failed populations: no numbers in the table
        cell = re.search(r'id="pop-[^"]*strict">[^<]*</span></td>(.*?)</tr>', page).group(1)
        assert cell.count('<td class="num">\u2013</td>') == 3
        # every gate decision is explained, the fallback with a worded badge (flagged or not)
        decisions = page.split('id="decisions"', 1)[1].split("<h2>Gates</h2>", 1)[0]
        assert "\u26a0</span> fallback</span> one peak" in decisions
        assert "valley between the peaks" in decisions and "x: " in decisions and "y: " in decisions


def test_a_partly_failed_sample_still_draws_every_other_gate(report):
    res, index = report
    for o in res.outcomes:
        path = _page(index, o.sample_id)
        page = path.read_text(encoding="utf-8")
        imgs = _parse(path).imgs
        assert len(imgs) == PLOTTED_GATES, o.sample_id
        for img in imgs:
            assert (path.parent / img["src"]).is_file()
        alts = [i["alt"] for i in imgs]
        assert any(a.endswith(f"{STRICT} failed") for a in alts)  # its gate exists: drawn and marked
        # the gate that could not be computed, and its child, say so instead of a plot
        panels = re.findall(r'<div class="nogate" role="img" aria-label="([^"]*)">', page)
        assert panels == [
            escape("no gate: " + _rows(o)[NO_GATE]["reason"], quote=True),
            escape("no gate: " + _rows(o)[CHILD]["reason"], quote=True),
        ]
        figures = page.split('<div class="plots">', 1)[1]
        if _rows(o)[FALLBACK]["status"] == "flagged":
            assert "\u26a0</span> flagged</span> <span class=\"badge fallback\">" in figures
        else:
            assert "\u26a0</span> fallback</span> one peak" in figures


def test_no_personal_keywords_in_the_report(report):
    res, index = report
    files = [p for p in index.parent.rglob("*") if p.is_file()]
    assert len(files) > 10
    for p in files:
        assert b"CANARY" not in p.read_bytes(), p


def test_gate_plots_draw_peaks_and_cuts_and_survive_malformed_records(report, tmp_path):
    from flowtools.gating.engine import gate_sample
    from flowtools.gating.formats.gatingml import read_gatingml
    from flowtools.io.fcs import read_fcs
    from flowtools.report.html import _gate_info, _labels
    from flowtools.report.plots import _decision_marks, gate_plots

    res, _ = report
    o = res.outcomes[0]
    strategy = read_gatingml(res.out_dir / "gates" / f"{o.sample_id}.gating-ml.xml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sample = read_fcs(o.file)
    result = gate_sample(strategy, sample)
    labels = _labels(o.rows)
    info = _gate_info(strategy, labels, {r["population"]: r["status"] for r in o.rows}, o.decisions)
    by_decision = {i["decision"]: gid for gid, i in info.items() if i["decision"]}
    assert set(by_decision) == {"cells", EXPECT_FLAG, FALLBACK, QUAD, STRICT}
    quad = by_decision[QUAD]
    assert sorted(info[quad]["populations"]) == [f"{EXPECT_FLAG}/CD4", f"{EXPECT_FLAG}/CD8"]

    marks = _decision_marks(o.decisions["cells"], two_d=False)
    assert marks["x"]["cut"] == o.decisions["cells"]["details"]["cut"]
    assert len(marks["x"]["peaks"]) == 2 and marks["x"]["range"] == [2000.0, 50000.0]
    q = _decision_marks(o.decisions[QUAD], two_d=True)
    assert q["x"]["cut"] is not None and q["y"]["cut"] is not None and q["x"]["peaks"] and q["y"]["peaks"]
    assert _decision_marks(o.decisions[FALLBACK], two_d=False)["fallback"] is True

    plain = gate_plots(sample, strategy, result, tmp_path / "plain", labels=labels)
    decisions = {gid: o.decisions[d] for d, gid in by_decision.items()}
    marked = gate_plots(sample, strategy, result, tmp_path / "marked", labels=labels, decisions=decisions,
                        status={gid: i["status"] for gid, i in info.items()})
    assert [p.name for p in marked] == [p.name for p in plain]
    changed = {p.name for p, q in zip(plain, marked, strict=True) if p.read_bytes() != q.read_bytes()}
    # every data-driven gate's figure gains its marks; the static lymphocyte rectangle does not
    assert changed == {p.name for p in plain if not p.name.endswith("_cells__lymphocytes.png")}
    junk = {gid: {"details": {"peaks": "junk", "cut": "x", "x_peaks": [[None]]}, "params": [1], "fallback": 1}
            for gid in decisions}
    again = gate_plots(sample, strategy, result, tmp_path / "junk", labels=labels, decisions=junk)
    assert len(again) == len(plain)


def test_hostile_reasons_are_escaped_everywhere():
    from flowtools.pipeline.plate import SampleOutcome
    from flowtools.report.pages import _gate_checks_html, _plate_grid
    from flowtools.report.qc import _gate_checks
    from flowtools.report.sample_page import sample_page

    evil = "<script>alert(\"x\")</script> & 'q'"
    nan = float("nan")
    rows = [
        {"population": "a", "gate_id": "a", "parent": "", "role": "", "count": 10, "parent_count": 20,
         "pct_parent": 50.0, "pct_total": 50.0, "status": "flagged", "reason": evil},
        {"population": "a/b<", "gate_id": "", "parent": "a", "role": "", "count": nan, "parent_count": nan,
         "pct_parent": nan, "pct_total": nan, "status": "failed", "reason": evil},
    ]
    decisions = {"a": {"method": "mindensity", "params": {}, "details": {"rule": evil, "cut": 1.0},
                       "fallback": evil, "events_in": 20, "events_kept": 10, "status": "flagged",
                       "reasons": [evil]}}
    o = SampleOutcome("S1", "W1", "T", "P1", "A01", "/x/S1.fcs", ok=True, n_events=20, rows=rows,
                      decisions=decisions)
    plots = {"plots": [{"name": "01_a.png", "caption": "a", "populations": ["a"], "decision": "a"}],
             "error": None, "changed": False}
    page = sample_page(o, plots, [], [], None, None)
    index = "\n".join(_gate_checks_html(_gate_checks([o]))) + _plate_grid([o], "T", "a/b<")
    for text in (page, index):
        assert "<script>" not in text and "a/b<" not in text
        assert escape(evil, quote=True) in text
    assert "no gate:</b> " + escape(evil, quote=True) in page
    assert 'class="popfail"' in index and "flagged</span>" in index and "failed</span>" in index


def test_a_quadrant_gate_gets_the_decision_whose_cuts_it_has():
    from flowtools.report.html import _quad_decision

    def quad(x, y, **params):
        det = {} if x is None else {"x_cut": x, "y_cut": y, "x_rule": "valley", "y_rule": "valley"}
        return {"method": "quad", "params": {"x_cut": None, "y_cut": None, **params}, "details": det}

    given = {**quad(None, None, x_cut=0.2), "details": {"y_cut": 0.7}}  # x given, y computed
    decisions = {"p/auto": quad(0.4, 0.5), "p/given": given,
                 "p": {"method": "mindensity", "details": {"cut": 0.4}}, "q/auto": quad(0.4, 0.5)}
    assert _quad_decision(decisions, {"p"}, "p", [0.4, 0.5]) == "p/auto"
    assert _quad_decision(decisions, {"p"}, "p", [0.2, 0.7]) == "p/given"
    assert _quad_decision(decisions, {"p"}, "p", [0.3, 0.5]) is None  # a static quad beside them
    assert _quad_decision({"r/pooled": quad(None, None)}, set(), "r", [0.1, 0.1]) == "r/pooled"
    assert _quad_decision({"r/a": quad(None, None), "r/b": quad(None, None)}, set(), "r", [0.1, 0.1]) is None
