"""FlowJo workspaces: agreement with FlowJo's recorded counts, structure of parse-only workspaces,
errors, the template conversion and the export round trip through FlowKit."""

from __future__ import annotations

import csv
import gc
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from _helpers import read_quiet, shared_data_or_skip

from flowtools.gating.formats.flowjo import (
    WorkspaceError,
    gate_workspace_sample,
    read_workspace,
    workspace_rows,
)
from flowtools.gating.formats.flowjo_export import export_sample_from_resolved, write_workspace
from flowtools.gating.formats.flowjo_template import workspace_to_template
from flowtools.gating.gates import BooleanGate, EllipsoidGate, PolygonGate, RectangleGate
from flowtools.transforms import AsinhTransform, FlowJoBiexTransform, FlowJoLinearTransform, LogicleTransform

DIAMOND = "flowjo/simple_diamond_example"
LINE = "flowjo/simple_line_example"
ICS = "flowjo/8_color_data_set"

# Expected counts: FlowJo's recorded ones, except the poly/rect workspaces, whose stored counts are
# not computed (-1) or stale (see shared/data/README.md, "flowjo/"); there FlowKit's and an
# independent point-in-polygon check's numbers are the truth.
END_TO_END = {
    f"{DIAMOND}/simple_diamond_example_quad_gate.wsp": {
        "Q1: channel_A- , channel_B+": 49671,
        "Q2: channel_A+ , channel_B+": 50596,
        "Q3: channel_A+ , channel_B-": 50330,
        "Q4: channel_A- , channel_B-": 49403,
    },
    f"{DIAMOND}/test_data_diamond_biex_rect.wsp": {"upper_right": 50605},
    f"{DIAMOND}/test_data_diamond_asinh_rect.wsp": {"upper_right": 50559},
    f"{DIAMOND}/test_data_diamond_asinh_rect2.wsp": {"upper_right": 50699},
    f"{LINE}/simple_poly_and_rect.wsp": {"poly1": 0, "rect1": 0},
    f"{LINE}/simple_poly_and_rect_v2_poly50.wsp": {"poly1": 50, "rect1": 0},
}
STALE = {f"{LINE}/simple_poly_and_rect_v2_poly50.wsp"}  # stored counts 0/0 are stale


def _gate(root: Path, rel: str) -> tuple[object, list[dict]]:
    ws = read_workspace(root / rel)
    (s,) = ws.samples.values()
    fcs = read_quiet((root / rel).parent / s.fcs_name)
    return s, workspace_rows(s, gate_workspace_sample(s, fcs))


@pytest.mark.parametrize("rel", sorted(END_TO_END))
def test_counts_agree_with_flowjo(rel: str) -> None:
    root = shared_data_or_skip()
    s, rows = _gate(root, rel)
    got = {r["population"]: r["count"] for r in rows}
    assert got == END_TO_END[rel]
    for r in rows:
        if rel in STALE or r["flowjo_count"] is None:
            continue
        # rectangles, ranges and quadrants: exactly FlowJo's count
        assert r["count_difference"] == 0, r


def test_quadrant_and_transform_parameters() -> None:
    root = shared_data_or_skip()
    quad = read_workspace(root / DIAMOND / "simple_diamond_example_quad_gate.wsp")
    (s,) = quad.samples.values()
    assert s.fcs_name == "test_data_diamond_01.fcs" and s.total_count == 200000
    assert all(isinstance(s.gate(p), RectangleGate) for p in s.paths)
    assert s.transforms["channel_A"] == FlowJoLinearTransform(0.0, 262144.0)
    biex = read_workspace(root / DIAMOND / "test_data_diamond_biex_rect.wsp")
    (b,) = biex.samples.values()
    assert b.transforms["channel_A"] == FlowJoBiexTransform(0.0, -10.0, 4.418539922, 262144.0, 256)
    a2 = read_workspace(root / DIAMOND / "test_data_diamond_asinh_rect2.wsp")
    (a,) = a2.samples.values()
    assert a.transforms["channel_B"] == AsinhTransform(T=262144.0, M=1.3, A=0.0)
    assert a.transforms["channel_A"] == AsinhTransform(T=262144.0, M=1.0, A=0.0)


ICS_FILES = {
    "8_color_ICS.wsp": 14,
    "8_color_ICS_simple.wsp": 4,
    "8_color_ICS_boolean_gate_testing.wsp": 20,
    "8_color_ICS_with_ellipse.wsp": 15,
}


@pytest.mark.parametrize("name", sorted(ICS_FILES))
def test_parse_only_ics_structure(name: str) -> None:
    root = shared_data_or_skip()
    ws = read_workspace(root / ICS / name)
    assert {g.name for g in ws.groups.values() if g.sample_ids} == {"All Samples", "DEN"}
    from flowtools.compensation import SpilloverMatrix

    den_m = SpilloverMatrix.from_csv(root / ICS / "den_comp.csv")
    den, den_detectors = den_m.matrix, den_m.detectors
    assert len(ws.samples) == 3
    for s in ws.samples.values():
        assert len(s.paths) == ICS_FILES[name]
        assert s.matrix_id == "Acquisition-defined"
        order = [s.matrix.detectors.index(d) for d in den_detectors]
        np.testing.assert_allclose(s.matrix.matrix[np.ix_(order, order)], den, atol=1e-6)
        for ch in ("CD4 PE-Cy7 FLR-A", "Comp-CD4 PE-Cy7 FLR-A"):
            assert s.transforms[ch] == LogicleTransform(T=262144.0, W=1.0, M=4.418539922, A=0.0)
        assert isinstance(s.transforms["FSC-A"], FlowJoLinearTransform)
        assert s.flowjo_counts["Time/Singlets/aAmine-/CD3+"] in (133860, 132388, 131510)
        if ICS_FILES[name] > 4:
            cd4 = "Time/Singlets/aAmine-/CD3+/CD4+"
            chain = [cd4]
            while (p := s.parent(chain[-1])) is not None:
                chain.append(p)
            assert chain[::-1] == [
                "Time",
                "Time/Singlets",
                "Time/Singlets/aAmine-",
                "Time/Singlets/aAmine-/CD3+",
                cd4,
            ]
            g = s.gate(cd4)
            assert isinstance(g, PolygonGate)
            # "Comp-" channels are compensated dimensions of the matrix, on the Comp- transform
            assert [(d.name, d.compensation) for d in g.dimensions] == [
                ("CD4 PE-Cy7 FLR-A", "Acquisition-defined"),
                ("CD8 PerCP-Cy55 FLR-A", "Acquisition-defined"),
            ]
            # the same name under different parents
            assert f"{cd4}/CD107a+" in s.paths and "Time/Singlets/aAmine-/CD3+/CD8+/CD107a+" in s.paths
    e01 = ws.sample("101_DEN084Y5_15_E01_008_clean.fcs")
    if name == "8_color_ICS.wsp":
        assert e01.flowjo_counts["Time/Singlets/aAmine-/CD3+/CD4+"] == 82636
        assert e01.flowjo_counts["Time/Singlets/aAmine-/CD3+/CD8+/TNFa+"] == 8
    if name == "8_color_ICS_boolean_gate_testing.wsp":
        cd4 = "Time/Singlets/aAmine-/CD3+/CD4+"
        ops = {p: e01.gate(p).op for p in e01.paths if isinstance(e01.gate(p), BooleanGate)}
        assert ops == {
            f"{cd4}/CD107a+ or IFNg+": "or",
            f"{cd4}/CD107a+ & IFNg+": "and",
            f"{cd4}/IL2+-": "not",
            f"{cd4}/TNFa+-": "not",
            "Time/Singlets/aAmine-/CD3+/CD8+/TNFa+-": "not",
        }
        assert e01.gate(f"{cd4}/IL2+-").refs == ((f"{cd4}/IL2+", False),)
        assert (
            e01.parent("Time/Singlets/aAmine-/CD3+/CD8+/TNFa+-/CD107a+")
            == "Time/Singlets/aAmine-/CD3+/CD8+/TNFa+-"
        )
        assert e01.flowjo_counts[f"{cd4}/IL2+-"] == 82630
    if name == "8_color_ICS_with_ellipse.wsp":
        g = e01.gate("Time/Singlets/aAmine-/CD3+/ellipse1")
        assert isinstance(g, EllipsoidGate)
        # foci/edge points in 256-bin display space -> logicle scale (0..1); centre (81.5, 70) / 256
        np.testing.assert_allclose(g.mean, (81.5 / 256, 70 / 256), atol=1e-9)
        assert e01.flowjo_counts["Time/Singlets/aAmine-/CD3+/ellipse1"] == 7256


def test_sample_without_gates() -> None:
    root = shared_data_or_skip()
    ws = read_workspace(root / ICS / "8_color_ICS_sample_without_gates.wsp")
    assert ws.sample("101_DEN084Y5_15_E05_010_clean.fcs").paths == ()
    e03 = ws.sample("101_DEN084Y5_15_E03_009_clean.fcs")
    assert [e03.flowjo_counts[p] for p in e03.paths] == [256251, 217296, 148526, 121346]
    assert len(ws.sample("101_DEN084Y5_15_E01_008_clean.fcs").paths) == 4


def test_keywords_kept_but_only_safe_ones_shown() -> None:
    root = shared_data_or_skip()
    ws = read_workspace(root / ICS / "8_color_ICS_simple.wsp")
    s = ws.sample("101_DEN084Y5_15_E01_008_clean.fcs")
    assert s.keywords["$TOT"] == "290172" and "$BTIM" in s.keywords
    safe = s.safe_keywords()
    assert "$TOT" in safe and "$P5N" in safe
    free = set(s.keywords) - set(safe)
    assert "$BTIM" in free and not {"$FIL", "$SRC", "$OP"} & set(safe)
    assert "$BTIM" not in repr(s)


# --------------------------------------------------------------------------------------- synthetic XML

_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Workspace flowJoVersion="10.8.1" '
    'xmlns:gating="http://www.isac-net.org/std/Gating-ML/v2.0/gating" '
    'xmlns:transforms="http://www.isac-net.org/std/Gating-ML/v2.0/transformations" '
    'xmlns:data-type="http://www.isac-net.org/std/Gating-ML/v2.0/datatypes">'
)


def _ws(tmp_path: Path, gate: str, transforms: str = "") -> Path:
    text = (
        _HEAD + '<Groups/><SampleList><Sample><DataSet uri="file:/x/a%20b.fcs" sampleID="1"/>'
        f"<Transformations>{transforms}</Transformations><Keywords/>"
        '<SampleNode name="a b.fcs" sampleID="1" count="10"><Subpopulations>'
        f'<Population name="P" count="3"><Gate>{gate}</Gate></Population>'
        "</Subpopulations></SampleNode></Sample></SampleList></Workspace>"
    )
    p = tmp_path / "w.wsp"
    p.write_text(text, encoding="utf-8")
    return p


RECT = (
    '<gating:RectangleGate eventsInside="{inside}"><gating:dimension gating:min="1" gating:max="5">'
    '<data-type:fcs-dimension data-type:name="A"/></gating:dimension></gating:RectangleGate>'
)


def test_curly_quad_is_a_named_error(tmp_path: Path) -> None:
    p = _ws(tmp_path, '<gating:CurlyQuad quadId="1"/>')
    with pytest.raises(WorkspaceError, match=r"population 'P', <CurlyQuad>.*curly quadrant"):
        read_workspace(p)


def test_curly_quad_error_names_its_crosshair_and_quadrant(tmp_path: Path) -> None:
    # the layout FlowJo writes (CytoML's parser reads the same): per dimension min (+ side) or max (- side)
    curly = (
        '<gating:CurlyQuad eventsInside="1" percentX="0" percentY="0">'
        '<gating:dimension gating:max="500"><data-type:fcs-dimension data-type:name="A"/></gating:dimension>'
        '<gating:dimension gating:min="700"><data-type:fcs-dimension data-type:name="B"/></gating:dimension>'
        "</gating:CurlyQuad>"
    )
    with pytest.raises(WorkspaceError) as info:
        read_workspace(_ws(tmp_path, curly))
    msg = str(info.value)
    assert "<CurlyQuad>" in msg and "population 'P'" in msg
    assert "quadrant A - (at 500), B + (at 700)" in msg
    assert "neither writes nor documents" in msg


def test_gatingml_document_is_pointed_to_the_gatingml_reader(tmp_path: Path) -> None:
    p = tmp_path / "g.xml"
    p.write_text(
        '<gating:Gating-ML xmlns:gating="http://www.isac-net.org/std/Gating-ML/v2.0/gating"/>',
        encoding="utf-8",
    )
    with pytest.raises(WorkspaceError, match=r"<Gating-ML>, not a FlowJo <Workspace>: .*read_gatingml"):
        read_workspace(p)


def test_flowjo9_workspaces_are_refused_by_name(tmp_path: Path) -> None:
    p = tmp_path / "v9.xml"
    p.write_text('<Workspace version="1.61"><SampleList/></Workspace>', encoding="utf-8")
    with pytest.raises(WorkspaceError, match=r"<Workspace version>: FlowJo 9 workspace \(version '1.61'\)"):
        read_workspace(p)
    # gates in the Gating-ML 1.5 namespace (FlowJo 9 for Windows) are named, not misread
    old = _ws(tmp_path, RECT.format(inside=1)).read_text(encoding="utf-8")
    old = old.replace("Gating-ML/v2.0/gating", "Gating-ML/v1.5/gating")
    p.write_text(old, encoding="utf-8")
    with pytest.raises(WorkspaceError, match=r"population 'P', <RectangleGate>: .*v1.5/gating.*FlowJo 9"):
        read_workspace(p)


def test_gatingml_export_of_ics_equals_the_workspace() -> None:
    """8_color_ICS.xml is a Gating-ML 2.0 export (not a FlowJo 9 workspace) of the .wsp's first six gates."""
    from flowtools.gating.formats.gatingml import read_gatingml

    root = shared_data_or_skip()
    xml = root / ICS / "8_color_ICS.xml"
    with pytest.raises(WorkspaceError, match="Gating-ML 2.0 document"):
        read_workspace(xml)
    gml = read_gatingml(xml)
    paths = {
        "TimeGate": "Time",
        "Singlets": "Time/Singlets",
        "aAmine-": "Time/Singlets/aAmine-",
        "CD3-pos": "Time/Singlets/aAmine-/CD3+",
        "CD4-pos": "Time/Singlets/aAmine-/CD3+/CD4+",
        "CD8-pos": "Time/Singlets/aAmine-/CD3+/CD8+",
    }
    assert [g.id for g in gml.gates] == list(paths)

    def data_values(strategy, g) -> list[list[float | None]]:
        def raw(d, v):
            if v is None or d.transform is None:
                return v
            return float(strategy.transforms[d.transform].inverse(np.array([v]))[0])

        if isinstance(g, PolygonGate):
            return [[raw(d, c) for d, c in zip(g.dimensions, v, strict=True)] for v in g.vertices]
        return [[raw(d, lo), raw(d, hi)] for d, lo, hi in zip(g.dimensions, g.mins, g.maxs, strict=True)]

    ws = read_workspace(root / ICS / "8_color_ICS.wsp")
    for s in ws.samples.values():
        for gid, path in paths.items():
            a, b = gml.gate(gid), s.gate(path)
            assert type(a) is type(b)
            assert (gml.gate(a.parent).id if a.parent else None) == (
                next(k for k, v in paths.items() if v == s.parent(path)) if s.parent(path) else None
            )
            assert [(d.name, d.compensation) for d in a.dimensions] == [
                (d.name, d.compensation) for d in b.dimensions
            ]
            # same gate in FlowJo's data values (each document through its own transforms)
            np.testing.assert_allclose(
                np.array(data_values(gml, a), dtype=float),
                np.array(data_values(s.strategy, b), dtype=float),
                rtol=1e-12,
            )
            for da, db in zip(a.dimensions, b.dimensions, strict=True):
                ta, tb = gml.transforms[da.transform], s.strategy.transforms[db.transform]
                if isinstance(tb, LogicleTransform):
                    assert ta == tb
                elif da.name != "Time":  # scatter: flin(T=262144, A=0) is FlowJo's linear 0..262144
                    v = np.array([-1000.0, 0.0, 1234.5, 262144.0])
                    np.testing.assert_allclose(ta.apply(v), tb.apply(v), rtol=1e-15)
        om, sm = gml.matrices["Acquisition-defined"], s.matrix
        order = [sm.detectors.index(d) for d in om.detectors]
        np.testing.assert_array_equal(sm.matrix[np.ix_(order, order)], om.matrix)


def test_unknown_transform_is_a_named_error(tmp_path: Path) -> None:
    tr = '<transforms:miltenyi><data-type:parameter data-type:name="A"/></transforms:miltenyi>'
    with pytest.raises(WorkspaceError, match="unsupported FlowJo transform <miltenyi> on 'A'"):
        read_workspace(_ws(tmp_path, RECT.format(inside=1), tr))


def test_entities_and_garbage_are_refused(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.wsp"
    bomb.write_text('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><Workspace>&a;</Workspace>')
    with pytest.raises(WorkspaceError, match="unsafe XML"):
        read_workspace(bomb)
    bad = tmp_path / "bad.wsp"
    bad.write_text("<Workspace><SampleList>")
    with pytest.raises(WorkspaceError, match="not well-formed"):
        read_workspace(bad)


def test_outside_gate_and_uri(tmp_path: Path) -> None:
    from flowtools.gating.engine import gate_events

    ws = read_workspace(_ws(tmp_path, RECT.format(inside=0)))
    (s,) = ws.samples.values()
    assert s.fcs_name == "a b.fcs" and s.paths == ("P",)
    x = np.arange(10, dtype=np.float64)[:, None]
    res = gate_events(s.strategy, x, ["A"])
    assert res.count("P") == 6  # outside of [1, 5)


_MATRIX = (
    '<transforms:spilloverMatrix spectral="0" prefix="Comp-" name="{name}" suffix="" transforms:id="{mid}">'
    '<data-type:parameters><data-type:parameter data-type:name="A"/><data-type:parameter data-type:name="B"/>'
    "</data-type:parameters>"
    '<transforms:spillover data-type:parameter="A">'
    '<transforms:coefficient data-type:parameter="A" transforms:value="1"/>'
    '<transforms:coefficient data-type:parameter="B" transforms:value="{ab}"/></transforms:spillover>'
    '<transforms:spillover data-type:parameter="B">'
    '<transforms:coefficient data-type:parameter="A" transforms:value="{ba}"/>'
    '<transforms:coefficient data-type:parameter="B" transforms:value="1"/></transforms:spillover>'
    "</transforms:spilloverMatrix>"
)
_COMP_RECT = (
    '<gating:RectangleGate eventsInside="1"><gating:dimension gating:min="100">'
    '<data-type:fcs-dimension data-type:name="Comp-B"/></gating:dimension></gating:RectangleGate>'
)


def _shared_ws(tmp_path: Path, refs: list[str], matrices: list[tuple[str, str, float, float]]) -> Path:
    """A workspace whose matrices live only in <Matrices>; sample i holds refs[i] ('' = no element)."""
    mats = "".join(_MATRIX.format(name=n, mid=i, ab=ab, ba=ba) for n, i, ab, ba in matrices)
    samples = []
    for k, ref in enumerate(refs, start=1):
        samples.append(
            f'<Sample><DataSet uri="s{k}.fcs" sampleID="{k}"/>{ref}<Transformations/><Keywords/>'
            f'<SampleNode name="s{k}.fcs" sampleID="{k}" count="10"><Subpopulations>'
            f'<Population name="B+" count="-1"><Gate>{_COMP_RECT}</Gate></Population>'
            "</Subpopulations></SampleNode></Sample>"
        )
    text = (
        _HEAD + f"<Matrices>{mats}</Matrices>"
        '<Groups><GroupNode name="All Samples"><Group name="All Samples"><SampleRefs>'
        + "".join(f'<SampleRef sampleID="{k}"/>' for k in range(1, len(refs) + 1))
        + "</SampleRefs></Group></GroupNode></Groups>"
        f"<SampleList>{''.join(samples)}</SampleList></Workspace>"
    )
    p = tmp_path / "shared.wsp"
    p.write_text(text, encoding="utf-8")
    return p


def test_shared_matrices_referenced_by_id_or_name(tmp_path: Path) -> None:
    from flowtools.gating.engine import gate_events

    by_id = '<transforms:spilloverMatrix prefix="Comp-" suffix="" transforms:id="m-2"/>'
    by_name = '<transforms:spilloverMatrix prefix="Comp-" name="spill one" suffix=""/>'
    ws = read_workspace(
        _shared_ws(
            tmp_path, [by_id, by_name], [("spill one", "m-1", 0.5, 0.0), ("spill two", "m-2", 0.0, 0.25)]
        )
    )
    assert set(ws.matrices) == {"spill one", "spill two"}
    s1, s2 = ws.sample("1"), ws.sample("2")
    assert (s1.matrix_id, s2.matrix_id) == ("spill two", "spill one")
    np.testing.assert_array_equal(s1.matrix.matrix, [[1.0, 0.0], [0.25, 1.0]])
    np.testing.assert_array_equal(s2.matrix.matrix, [[1.0, 0.5], [0.0, 1.0]])
    g = s1.gate("B+")
    assert [(d.name, d.compensation) for d in g.dimensions] == [("B", "spill two")]
    # membership: compensated = raw @ inverse(S) (independent numpy reference), B >= 100
    rng = np.random.default_rng(9)
    raw = rng.uniform(0, 400, size=(500, 2))
    for s in (s1, s2):
        ref = (raw @ np.linalg.inv(s.matrix.matrix))[:, 1] >= 100
        res = gate_events(s.strategy, raw, ["A", "B"])
        np.testing.assert_array_equal(res.mask("B+"), ref)
    assert gate_events(s1.strategy, raw, ["A", "B"]).count("B+") != gate_events(
        s2.strategy, raw, ["A", "B"]
    ).count("B+")


def test_sample_without_matrix_element_uses_the_only_shared_matrix(tmp_path: Path) -> None:
    ws = read_workspace(_shared_ws(tmp_path, [""], [("only", "m-1", 0.1, 0.2)]))
    (s,) = ws.samples.values()
    assert s.matrix_id == "only" and s.gate("B+").dimensions[0].compensation == "only"
    assert s.strategy.matrices["only"] is ws.matrices["only"]


def test_shared_matrix_errors_are_named(tmp_path: Path) -> None:
    two = [("one", "m-1", 0.1, 0.0), ("two", "m-2", 0.0, 0.1)]
    missing = '<transforms:spilloverMatrix prefix="Comp-" name="three" transforms:id="m-3"/>'
    with pytest.raises(WorkspaceError, match=r"refers to 'm-3' / 'three', which is not in <Matrices>"):
        read_workspace(_shared_ws(tmp_path, [missing], two))
    # no reference and two candidates: compensated gates cannot be resolved, and say so
    with pytest.raises(
        WorkspaceError,
        match=r"'Comp-B' is compensated by a matrix in .*<Matrices>, but the sample's matrix \(none",
    ):
        read_workspace(_shared_ws(tmp_path, [""], two))


def test_diamond_to_template_gives_the_same_counts(tmp_path: Path) -> None:
    from flowtools.gating.templates import load_template, resolve

    root = shared_data_or_skip()
    fcs = read_quiet(root / DIAMOND / "test_data_diamond_01.fcs")
    for name in (
        "simple_diamond_example_quad_gate.wsp",
        "test_data_diamond_biex_rect.wsp",
        "test_data_diamond_asinh_rect2.wsp",
    ):
        ws = read_workspace(root / DIAMOND / name)
        out = tmp_path / f"{name}.yaml"
        out.write_text(workspace_to_template(ws, "All Samples"), encoding="utf-8")
        (res,) = resolve(load_template(out), [fcs])
        assert {r["population"]: r["count"] for r in res.rows()} == END_TO_END[f"{DIAMOND}/{name}"]


def test_ics_to_template_loads(tmp_path: Path) -> None:
    from flowtools.gating.templates import load_template

    root = shared_data_or_skip()
    ws = read_workspace(root / ICS / "8_color_ICS_boolean_gate_testing.wsp")
    matrix = tmp_path / "m.csv"
    matrix.write_text(ws.sample("1").matrix.to_csv_text(), encoding="utf-8")
    t = load_template(tmp_path / "t.yaml", text=workspace_to_template(ws, "DEN", matrix_csv=str(matrix)))
    assert len(t.population_paths) == 20


# --------------------------------------------------------------------------------------- export

SMALL = """name: small
tube: TBNK-NK
compensation: FCS
transforms:
  fluorescence: {logicle: {T: 262144, W: 0.5, M: 4.5, A: 0}}
  scatter: none
  time: none
populations:
  - name: cells
    dims: [FSC-A, SSC-A]
    gate: {rectangle: [[20000, 250000], [null, 200000]]}
  - name: lymph
    parent: cells
    dims: [FSC-A, SSC-A]
    gate: {polygon: [[30000, 0], [110000, 0], [110000, 60000], [30000, 60000]]}
  - name: T
    parent: lymph
    dims: [CD3]
    gate: {range: [0.45, null]}
  - name: CD4 CD8
    parent: T
    dims: [CD4, CD8]
    gate: {quad: [0.45, 0.45]}
    quadrants: {CD4: "+-", CD8: "-+", DP: "++", DN: "--"}
"""


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory):
    from flowtools.synth import make_cohort

    d = tmp_path_factory.mktemp("cohort")
    r = make_cohort(d, n_women=2, events=3000, seed=4)
    (d / "t.yaml").write_text(SMALL, encoding="utf-8")
    return r, d / "t.yaml"


def test_export_round_trip_flowtools_and_flowkit(cohort, tmp_path: Path) -> None:
    from flowtools.gating.templates import load_template, resolve

    r, tpath = cohort
    files = [f for f in r.files if "TBNK" in f.name]
    samples = [read_quiet(f) for f in files]
    resolved = resolve(load_template(tpath), samples)
    exported = [export_sample_from_resolved(rs, s) for rs, s in zip(resolved, samples, strict=True)]
    out = tmp_path / "out.wsp"
    write_workspace(out, {"TBNK-NK": exported})
    ours = {(rs.sample_id, row["population"]): row["count"] for rs in resolved for row in rs.rows()}
    assert len(ours) == 14 and min(ours.values()) > 0

    ws = read_workspace(out)  # our reader on our writer
    assert [s.name for s in ws.group_samples("TBNK-NK")] == [f.name for f in files]
    for s, fcs in zip(ws.samples.values(), samples, strict=True):
        for row in workspace_rows(s, gate_workspace_sample(s, fcs)):
            assert row["count"] == ours[(s.name, row["population"])] == row["flowjo_count"]

    import flowkit as fk

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fws = fk.Workspace(str(out), fcs_samples=str(r.fcs_dir))
        fws.analyze_samples(group_name="TBNK-NK", use_mp=False)
        rep = fws.get_analysis_report(group_name="TBNK-NK")
        del fws
        gc.collect()
    theirs = {}
    for _, row in rep.iterrows():
        path = "/".join([*row["gate_path"][1:], row["gate_name"]])
        theirs[(row["sample_id"], path)] = int(row["count"])
    assert theirs == ours


def test_cli_show_apply_export(cohort, tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from flowtools._cli.wsp import wsp_app

    app = typer.Typer()
    app.add_typer(wsp_app, name="wsp")
    runner = CliRunner()
    r, tpath = cohort
    out = tmp_path / "cli.wsp"
    res = runner.invoke(app, ["wsp", "export", str(tpath), str(r.samples_csv), "--out", str(out)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["wsp", "show", str(out), "--json"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.output)
    assert [g["name"] for g in rec["groups"]] == ["All Samples", "TBNK-NK"]
    table = tmp_path / "pop.csv"
    res = runner.invoke(app, ["wsp", "apply", str(out), "--fcs-dir", str(r.fcs_dir), "--out", str(table)])
    assert res.exit_code == 0, res.output
    with open(table, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == [
        "sample_id",
        "population",
        "count",
        "pct_parent",
        "pct_total",
        "flowjo_count",
        "count_difference",
    ]
    assert len(rows) == 14 and all(row["count_difference"] == "0" for row in rows)
    res = runner.invoke(app, ["wsp", "apply", str(out), "--fcs-dir", str(tmp_path), "--out", str(table)])
    assert res.exit_code == 1
