"""``flowtools template`` (methods, init, show, check), ``gml counts`` names and ``sheet check`` tubes."""

from __future__ import annotations

import json
import math
import re
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from _helpers import SHARED_DATA
from typer.testing import CliRunner

from flowtools.cli import app
from flowtools.io import Spillover, read_fcs, write_fcs

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
DOCS_METHODS = REPO / "docs" / "methods.md"


def _read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_fcs(path)


def _gates_own_file(template_path: Path, fcs: Path) -> dict[str, int]:
    """Load the template, resolve it on its file; fail on any error. Returns counts by path."""
    from flowtools.gating.templates import load_template, resolve

    t = load_template(template_path)
    (res,) = resolve(t, [_read(fcs)])
    assert res.error is None, res.error
    assert not getattr(res, "failed", {}), res.failed
    counts = res.result.counts()
    return {p: counts[i] for p, i in res.ids.items()}


def _pops(template_path: Path) -> dict[str, dict]:
    doc = yaml.safe_load(template_path.read_text(encoding="utf-8"))
    return {p["name"]: p for p in doc["populations"]}


@pytest.mark.parametrize("cmd", ["methods", "init", "check", "show", "diff"])
def test_template_help(cmd):
    r = runner.invoke(app, ["template", cmd, "--help"])
    assert r.exit_code == 0, r.output
    assert "Usage" in r.output


# ------------------------------------------------------------------------------------------ methods


def test_methods_json_is_the_registry_plus_ref_and_bool():
    from flowtools.gating.methods import REQUIRED, methods

    r = runner.invoke(app, ["template", "methods", "--json"])
    assert r.exit_code == 0, r.output
    recs = json.loads(r.stdout)
    registry = methods()
    assert [x["name"] for x in recs] == [*registry, "ref", "bool"]
    for rec in recs[: len(registry)]:
        spec = registry[rec["name"]]
        assert rec["dims"] == list(spec.dims) and rec["kind"] == "data-driven"
        assert rec["summary"] == spec.doc
        assert [a["name"] for a in rec["args"]] == list(spec.args)
        for a in rec["args"]:
            s = spec.args[a["name"]]
            assert a["required"] == (s.default is REQUIRED)
            assert (a["lo"], a["hi"], a["doc"]) == (s.lo, s.hi, s.doc)
            assert a["choices"] == (None if s.choices is None else list(s.choices))
            if not a["required"]:
                assert a["default"] == (list(s.default) if isinstance(s.default, tuple) else s.default)
    q = next(a for a in recs[[x["name"] for x in recs].index("quantile")]["args"] if a["name"] == "q")
    assert q["required"] and q["default"] is None


def test_resolver_methods_are_the_ones_templates_accept():
    from flowtools.gating.templates.methods_doc import _RESOLVER_DOCS
    from flowtools.gating.templates.model import _RESOLVER_METHODS

    assert tuple(_RESOLVER_DOCS) == _RESOLVER_METHODS
    r = runner.invoke(app, ["template", "methods", "ref", "--json"])
    rec = json.loads(r.stdout)
    assert rec["kind"] == "resolver"
    assert {a["name"] for a in rec["args"]} == {"population", "side"}


def test_methods_table_lists_every_method_with_dims():
    r = runner.invoke(app, ["template", "methods"])
    assert r.exit_code == 0, r.output
    for name in ("mindensity", "tail", "quantile", "quad", "singlet", "boundary", "gmm", "qc", "ref", "bool"):
        assert re.search(rf"^\s*{name}\s", r.output, re.M), name
    assert "1-32" in r.output  # qc's dimension counts, as a range


def test_methods_one_method_shows_arguments_bounds_and_docstring():
    r = runner.invoke(app, ["template", "methods", "mindensity"])
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    for arg in ("side", "range", "bandwidth", "peaks", "min_peak_height", "single_peak", "tolerance"):
        assert arg in out
    assert "0.05 to 20" in out  # bandwidth's bounds
    assert "positive, negative" in out  # side's choices
    assert "deepest density valley" in out  # the summary line
    assert "Gaussian-smoothed histogram" in out  # the docstring's summary paragraph
    assert "Parameters" not in out  # numpydoc sections are left out
    r = runner.invoke(app, ["template", "methods", "gmm", "--json"])
    rec = json.loads(r.stdout)
    assert rec["name"] == "gmm" and rec["dims_text"] == "1-3"
    assert {a["name"]: a["default"] for a in rec["args"]}["k"] == 2


def test_methods_errors():
    r = runner.invoke(app, ["template", "methods", "nope"])
    assert r.exit_code == 1 and "unknown method 'nope'" in r.output and "mindensity" in r.output
    r = runner.invoke(app, ["template", "methods", "--json", "--markdown"])
    assert r.exit_code == 1


def test_methods_markdown_has_a_section_per_method():
    r = runner.invoke(app, ["template", "methods", "--markdown"])
    assert r.exit_code == 0, r.output
    heads = re.findall(r"^## (\S+)$", r.stdout, re.M)
    names = [x["name"] for x in json.loads(runner.invoke(app, ["template", "methods", "--json"]).stdout)]
    assert heads == names
    assert "| `single_peak` |" in r.stdout and "``" not in r.stdout


def test_docs_methods_md_is_what_the_command_generates():
    from flowtools.gating.templates.methods_doc import METHODS_DOC_COMMAND

    r = runner.invoke(app, ["template", "methods", "--markdown"])
    assert r.exit_code == 0, r.output
    current = DOCS_METHODS.read_text(encoding="utf-8") if DOCS_METHODS.is_file() else ""
    assert current == r.stdout, (
        f"{DOCS_METHODS.relative_to(REPO)} is out of date with the method registry; regenerate it with "
        f"`{METHODS_DOC_COMMAND}` (from the repository root) and commit it"
    )


# ------------------------------------------------------------------------------------------ show / check


def test_show_keeps_square_brackets(tmp_path, small_fcs):
    t = tmp_path / "t.yaml"
    t.write_text(textwrap.dedent("""\
        name: "[b]brackets[/b]"
        populations:
          - name: live
            dims: [l/d]
            method: mindensity
            args: {side: negative}
          - name: "[x] cells"
            parent: live
            dims: [FSC-A, SSC-A]
            gate: {rectangle: [[0, null], [0, null]]}
        """), encoding="utf-8")
    r = runner.invoke(app, ["template", "show", str(t)])
    assert r.exit_code == 0, r.output
    assert "[l/d] mindensity(side=negative" in r.output
    assert "[FSC-A, SSC-A] static rectangle" in r.output
    assert "[x] cells" in r.output and "[b]brackets[/b]" in r.output


def test_check_ok_and_missing_marker(tmp_path, small_fcs):
    t = tmp_path / "t.yaml"
    t.write_text("name: t\npopulations:\n  - name: x\n    dims: [CD3]\n    method: mindensity\n",
                 encoding="utf-8")
    r = runner.invoke(app, ["template", "check", "--json", str(t), str(small_fcs)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["files"][0]["channels"] == {"CD3": "FITC-A"}
    t.write_text(t.read_text().replace("CD3", "CD99"), encoding="utf-8")
    r = runner.invoke(app, ["template", "check", str(t), str(small_fcs)])
    assert r.exit_code == 1 and "CD99" in r.output


# ------------------------------------------------------------------------------------------ init


@pytest.fixture(scope="module")
def synthetic(gated_cohort):
    return gated_cohort(n_women=1, events=5000, seed=2, artefacts=False, templates=())


def test_init_on_a_synthetic_file_gates_it(tmp_path, synthetic):
    fcs = next(synthetic.cohort.fcs_dir.glob("*TBNK*.fcs"))
    out = tmp_path / "tbnk_start.yaml"
    r = runner.invoke(app, ["template", "init", str(fcs), "--out", str(out), "--tube", "TBNK-NK"])
    assert r.exit_code == 0, r.output
    assert "without error" in r.output
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Starting template written by `flowtools template init`")
    assert fcs.name in text.splitlines()[1]
    pops = _pops(out)
    doc = yaml.safe_load(text)
    assert doc["name"] == "tbnk_start" and doc["tube"] == "TBNK-NK" and doc["compensation"] == "FCS"
    assert doc["transforms"]["fluorescence"] == {"logicle": {"T": 262144, "W": 0.5, "M": 4.5, "A": 0}}
    assert list(pops)[:6] == ["qc", "margin", "cells", "singlets", "live", "lymphocytes"]
    assert pops["qc"]["dims"] == ["Time", "FSC-A", "SSC-A"] and pops["qc"]["role"] == "qc"
    assert pops["margin"]["method"] == "boundary" and pops["margin"]["role"] == "qc"
    assert pops["cells"]["args"]["side"] == "positive" and pops["cells"]["dims"] == ["FSC-A"]
    assert pops["singlets"]["dims"] == ["FSC-A", "FSC-H"] and pops["singlets"]["method"] == "singlet"
    assert pops["live"]["dims"] == ["Viability"] and pops["live"]["args"]["side"] == "negative"
    assert pops["lymphocytes"]["method"] == "gmm" and pops["lymphocytes"]["dims"] == ["FSC-A", "SSC-A"]
    markers = [c.pns for c in _read(fcs).channels if c.pns and c.pns != "Viability"]
    assert [n for n in pops if n.endswith("+")] == [f"{m}+" for m in markers]
    assert all(pops[f"{m}+"]["parent"] == "lymphocytes" for m in markers)
    counts = _gates_own_file(out, fcs)
    lym = counts["qc/margin/cells/singlets/live/lymphocytes"]
    assert 0 < lym < counts["qc/margin/cells/singlets/live"]
    assert 0 < counts["qc/margin/cells/singlets/live/lymphocytes/CD3+"] < lym


def test_init_template_runs_with_gate(tmp_path, synthetic):
    """The README's new-panel steps: init with the sheet's tube, then gate the sheet."""
    fcs = next(synthetic.cohort.fcs_dir.glob("*TREG*.fcs"))
    tube = next(r.split(",")[3] for r in synthetic.cohort.samples_csv.read_text().splitlines()[1:]
                if fcs.name in r)
    t = tmp_path / "treg.yaml"
    r = runner.invoke(app, ["template", "init", str(fcs), "--out", str(t), "--tube", tube])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["sheet", "check", str(synthetic.cohort.samples_csv), "-t", str(t)])
    assert r.exit_code == 1 and "unknown tube" in r.output  # the sheet's other tube has no template
    r = runner.invoke(app, ["gate", str(synthetic.cohort.samples_csv), "-t", str(t), "--out",
                            str(tmp_path / "run"), "--jobs", "1", "--no-report", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["gated"] == 1 and summary["failed"] == 0 and len(summary["skipped_no_template"]) == 1


def test_init_refuses_to_overwrite_and_writes_atomically(tmp_path, small_fcs):
    out = tmp_path / "t.yaml"
    out.write_text("keep me\n", encoding="utf-8")
    r = runner.invoke(app, ["template", "init", str(small_fcs), "--out", str(out)])
    assert r.exit_code == 1 and "--force" in r.output
    assert out.read_text(encoding="utf-8") == "keep me\n"
    r = runner.invoke(app, ["template", "init", str(small_fcs), "--out", str(out), "--force", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["error"] is None and summary["failed"] == {} and summary["checked"]
    assert summary["populations"][0] == "qc"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.fcs", "t.yaml"]  # no temp file left
    text = out.read_text(encoding="utf-8")
    assert "CANARY" not in text  # free-text keywords ($SRC, $OP) never reach the template
    assert "singlets" not in _pops(out)  # small.fcs has no FSC-H: no area/height pair
    assert "no scatter area/height pair" in text
    _gates_own_file(out, small_fcs)


def test_init_without_markers_time_or_spillover(tmp_path):
    """A Fortessa-like file: detectors only (their -H/-W twins are not gated), no time, no spillover."""
    rng = np.random.default_rng(3)
    n = 4000
    names = ["FSC-A", "FSC-H", "SSC-A", "SSC-H", "FITC-A", "FITC-H", "PE-A", "PE-W"]
    fsc = np.where(rng.random(n) < 0.2, rng.normal(8000, 3000, n), rng.normal(90000, 12000, n))
    ssc = fsc * 0.3 + rng.normal(0, 3000, n)
    ev = np.column_stack([fsc, fsc * 0.8 + rng.normal(0, 800, n), ssc, ssc * 0.8,
                          *(np.where(rng.random(n) < 0.4, rng.normal(50, 30, n), rng.normal(20000, 4000, n))
                            for _ in range(4))]).astype(np.float32)
    fcs = write_fcs(tmp_path / "detectors only.fcs", ev, names, ranges=[262144] * len(names))
    out = tmp_path / "t.yaml"
    r = runner.invoke(app, ["template", "init", str(fcs), "--out", str(out)])
    assert r.exit_code == 0, r.output
    pops = _pops(out)
    assert "qc" not in pops and "live" not in pops
    assert [n for n in pops if n.endswith("+")] == ["FITC-A+", "PE-A+"]
    assert yaml.safe_load(out.read_text())["compensation"] == "uncompensated"
    assert "no time parameter" in out.read_text()
    _gates_own_file(out, fcs)


def test_init_mass_cytometry_uses_asinh_cofactor_5(tmp_path):
    from flowtools.gating.templates import load_template

    rng = np.random.default_rng(4)
    n = 3000
    names = ["Time", "Event_length", "Ir191Di", "Ir193Di", "Nd142Di", "Er170Di", "Pt195Di", "beadDist"]
    markers = [None, None, "DNA1", "DNA2", "CD19", "CD3", None, "beadDist"]
    dna = np.where(rng.random(n) < 0.15, rng.gamma(1.0, 20, n), rng.normal(600, 90, n))
    ev = np.column_stack([
        np.sort(rng.uniform(0, 6e5, n)), rng.normal(25, 4, n).round(), dna, dna * 2,
        np.where(rng.random(n) < 0.2, rng.normal(300, 60, n), rng.gamma(0.7, 2, n)),
        np.where(rng.random(n) < 0.6, rng.normal(500, 90, n), rng.gamma(0.7, 2, n)),
        rng.gamma(1, 3, n), rng.uniform(0, 80, n)]).clip(0).astype(np.float32)
    fcs = write_fcs(tmp_path / "cytof.fcs", ev, names, markers=markers,
                    ranges=[1e7, 75, 4000, 8000, 6000, 2000, 4000, 80], keywords={"$CYT": "CYTOF"})
    out = tmp_path / "mass.yaml"
    r = runner.invoke(app, ["template", "init", str(fcs), "--out", str(out)])
    assert r.exit_code == 0, r.output
    pops = _pops(out)
    assert list(pops) == ["qc", "cells", "singlets", "CD19+", "CD3+"]
    assert pops["qc"]["dims"] == ["Time", "DNA1", "Event_length"]
    assert pops["cells"]["dims"] == ["DNA1"] and pops["singlets"]["dims"] == ["Event_length"]
    spec = load_template(out).transforms["fluorescence"]
    assert spec.kind == "asinh"
    tr = spec.build()
    x = np.array([0.0, 1.0, 5.0, 100.0, 5000.0])
    # cofactor 5: the display value is asinh(x / 5), scaled to 1 at the top of the scale
    np.testing.assert_allclose(tr.apply(x), np.arcsinh(x / 5) / (tr.M * math.log(10)), rtol=1e-12)
    assert tr.apply(np.array([tr.T]))[0] == pytest.approx(1.0)
    counts = _gates_own_file(out, fcs)
    assert 0.6 < counts["qc/cells"] / counts["qc"] < 0.95  # the DNA-low events are out


@pytest.mark.parametrize(
    ("marker", "expected"),
    [("Viability", True), ("L/D", True), ("LIVE/DEAD Aqua", True), ("Zombie NIR", True), ("7-AAD", True),
     ("DAPI", True), ("PI", True), ("FVS780", True), ("Fixable Viability eF506", True), ("Live-Dead", True),
     ("CD3", False), ("CD45RA", False), ("HLA-DR", False), ("PE-Cy7", False), ("CD161", False),
     ("PIK3", False), ("Olive", False)],
)
def test_viability_markers(marker, expected):
    from flowtools.gating.templates.starter import _VIABILITY

    assert bool(_VIABILITY.search(marker)) is expected


def test_init_quotes_odd_marker_names(tmp_path):
    rng = np.random.default_rng(5)
    n = 2000
    odd = ["yes", "CD3: FITC #1", "7-AAD", "CD4/CD8", '"q"']
    ev = np.column_stack([rng.normal(60000, 9000, n), rng.normal(50000, 8000, n), rng.normal(30000, 6000, n),
                          *(np.where(rng.random(n) < 0.5, rng.normal(50, 30, n), rng.normal(9000, 2000, n))
                            for _ in odd)]).astype(np.float32)
    fcs = write_fcs(tmp_path / "odd.fcs", ev, ["FSC-A", "FSC-H", "SSC-A", "B1", "B2", "B3", "B4", "B5"],
                    markers=[None, None, None, *odd])
    out = tmp_path / "odd.yaml"
    r = runner.invoke(app, ["template", "init", str(fcs), "--out", str(out)])
    assert r.exit_code == 0, r.output
    pops = _pops(out)
    assert pops["live"]["dims"] == ["7-AAD"]
    assert {tuple(p["dims"]) for n, p in pops.items() if n.endswith("+")} == {
        ("yes",), ("CD3: FITC #1",), ("CD4/CD8",), ('"q"',)}
    assert "CD4-CD8+" in pops  # '/' is not allowed in a population name
    _gates_own_file(out, fcs)


REAL_FILES = [
    "fcs/instruments/Fortessa/*.fcs",
    "fcs/instruments/MiltenyiBiotec/FCS2.0/*.fcs",
    "blood/cytonorm/*.fcs",
    "compensation/test_comp_example.fcs",
]


def _real_files() -> list[Path]:
    return sorted(p for pattern in REAL_FILES for p in SHARED_DATA.glob(pattern))


@pytest.mark.conformance
@pytest.mark.parametrize("pattern", REAL_FILES)
def test_init_on_real_files_gates_them(tmp_path, shared_data, pattern):
    files = sorted(shared_data.glob(pattern))
    if not files:
        pytest.skip(f"no {pattern} in {shared_data}")
    for k, fcs in enumerate(files):
        out = tmp_path / f"t{k}.yaml"
        r = runner.invoke(app, ["template", "init", str(fcs), "--out", str(out), "--json"])
        assert r.exit_code == 0, (fcs, r.output)
        summary = json.loads(r.stdout)
        assert summary["error"] is None and summary["failed"] == {}, (fcs, summary)
        _gates_own_file(out, fcs)
        sample = _read(fcs)
        text = out.read_text(encoding="utf-8")
        for key in ("$SRC", "$OP", "$FIL", "$COM", "$INST"):
            v = sample.keywords.get(key, "").strip()
            if len(v) >= 6 and v not in fcs.name:  # the header names the file the user gave, by its name
                assert v not in text, f"{key} of {fcs.name} copied into the template"
        doc = yaml.safe_load(text)
        assert doc["compensation"] == ("FCS" if sample.spillover is not None else "uncompensated")
        if "cytonorm" in pattern:
            assert "asinh" in doc["transforms"]["fluorescence"]
            assert _pops(out)["cells"]["dims"] == ["DNA1"]


# ------------------------------------------------------------------------------------------ gml counts

_GML = """<?xml version="1.0" encoding="UTF-8"?>
<gating:Gating-ML xmlns:gating="http://www.isac-net.org/std/Gating-ML/v2.0/gating"
    xmlns:data-type="http://www.isac-net.org/std/Gating-ML/v2.0/datatypes">
  <gating:RectangleGate gating:id="{outer}">
    <gating:dimension gating:compensation-ref="uncompensated" gating:min="0">
      <data-type:fcs-dimension data-type:name="FSC-A" />
    </gating:dimension>
  </gating:RectangleGate>
  <gating:RectangleGate gating:id="{inner}" gating:parent_id="{outer}">
    <gating:dimension gating:compensation-ref="uncompensated" gating:min="1000">
      <data-type:fcs-dimension data-type:name="SSC-A" />
    </gating:dimension>
  </gating:RectangleGate>
</gating:Gating-ML>
"""


def test_gml_counts_never_truncates_population_names(tmp_path, small_fcs):
    outer = "all_events_with_a_forward_scatter_above_zero_" + "x" * 40
    inner = "side_scatter_high_events_of_the_population_named_before_" + "y" * 50
    gml = tmp_path / "long.xml"
    gml.write_text(_GML.format(outer=outer, inner=inner), encoding="utf-8")
    r = runner.invoke(app, ["gml", "counts", "--json", str(gml), str(small_fcs)])
    assert r.exit_code == 0, r.output
    paths = [p["path"] for p in json.loads(r.stdout)[0]["populations"]]
    assert len(paths) == 2 and all(len(p) > 80 for p in paths)
    r = runner.invoke(app, ["gml", "counts", str(gml), str(small_fcs)])
    assert r.exit_code == 0, r.output
    assert "…" not in r.output
    lines = r.output.splitlines()
    head = next(i for i, ln in enumerate(lines) if "population" in ln and "% total" in ln)
    lo, hi = lines[head].index("population"), lines[head].index("parent")
    column = "".join(ln[lo:hi].strip() for ln in lines[head + 1:])  # folded names, joined back
    assert column == "".join(paths)


# ------------------------------------------------------------------------------------------ sheet check


def _sheet(tmp_path, tubes):
    rows = []
    for k, tube in enumerate(tubes):
        (tmp_path / f"f{k}.fcs").write_bytes(b"x")
        rows.append(f"f{k}.fcs,S{k},W{k},{tube},P1,A{k + 1:02d}")
    p = tmp_path / "samples.csv"
    p.write_text("file,sample_id,woman_id,tube,plate,well\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return p


def _template_for(tmp_path, name, tube):
    p = tmp_path / f"{name}.yaml"
    tube_line = f"tube: {tube}\n" if tube else ""
    pops = "populations:\n  - name: x\n    dims: [CD3]\n    method: mindensity\n"
    p.write_text(f"name: {name}\n{tube_line}{pops}", encoding="utf-8")
    return p


def test_sheet_check_accepts_any_tube_by_default(tmp_path):
    p = _sheet(tmp_path, ["B-cell panel", "TBNK-NK"])
    r = runner.invoke(app, ["sheet", "check", "--json", str(p)])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["tubes"] == ["B-cell panel", "TBNK-NK"] and summary["allowed_tubes"] is None


def test_sheet_check_tubes_from_templates_or_a_list(tmp_path):
    p = _sheet(tmp_path, ["Bcell", "TBNK-NK"])
    bcell = _template_for(tmp_path, "b", "Bcell")
    r = runner.invoke(app, ["sheet", "check", "--json", "-t", str(bcell), str(p)])
    assert r.exit_code == 1
    (issue,) = json.loads(r.stdout)["issues"]
    assert (issue["line"], issue["column"]) == (3, "tube") and "'Bcell'" in issue["message"]
    tbnk = _template_for(tmp_path, "t", "TBNK-NK")
    r = runner.invoke(app, ["sheet", "check", "--json", "-t", str(bcell), "-t", str(tbnk), str(p)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["allowed_tubes"] == ["Bcell", "TBNK-NK"]
    any_tube = _template_for(tmp_path, "a", None)  # applies to every tube, as in `gate`
    r = runner.invoke(app, ["sheet", "check", "-t", str(bcell), "-t", str(any_tube), str(p)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["sheet", "check", "--tube", "Bcell", "--tube", "TBNK-NK", str(p)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["sheet", "check", "--study-tubes", str(p)])
    assert r.exit_code == 1 and "unknown tube 'Bcell'" in r.output
    r = runner.invoke(app, ["sheet", "check", "--study-tubes", "--tube", "Bcell", str(p)])
    assert r.exit_code == 0, r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [\n", encoding="utf-8")
    r = runner.invoke(app, ["sheet", "check", "-t", str(bad), str(p)])
    assert r.exit_code == 1 and "bad.yaml" in r.output


def test_spillover_naming_unknown_detectors_is_not_used(tmp_path):
    """A $SPILLOVER that names detectors the file lacks: the template says uncompensated."""
    from flowtools.gating.templates.starter import starter_template

    rng = np.random.default_rng(6)
    ev = rng.normal(50000, 9000, (1500, 4)).astype(np.float32)
    spill = Spillover(("FITC-A", "PE-A"), np.array([[1.0, 0.1], [0.05, 1.0]]))
    fcs = write_fcs(tmp_path / "s.fcs", ev, ["FSC-A", "SSC-A", "FITC-A", "PE-A"],
                    markers=[None, None, "CD3", "CD4"], spillover=spill)
    sample = _read(fcs)
    text, _ = starter_template(sample, name="s", source="s.fcs")
    assert "compensation: FCS" in text
    object.__setattr__(sample, "spillover", Spillover(("FITC-A", "APC-A"), spill.matrix))
    text, _ = starter_template(sample, name="s", source="s.fcs")
    assert "compensation: uncompensated" in text and "does not have" in text
