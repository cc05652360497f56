"""Regressions from real files (issue 17): each test builds a file that reproduces what went wrong.

1. A MACSQuant time channel named ``HDR-T`` was taken for fluorescence (logicle) and ``qc``
   dropped 13-17% of every well.
2. ``mindensity``'s single-peak fallback cut a dominant population (CD45 on leukocytes) at its
   upper tail and kept 0.09% of the parent, logged at INFO only.
3. A child with too few events failed the whole sample ("1 event(s) in range" without a range).
"""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pytest

from flowtools.gating.methods import Decision, MethodContext, get_method
from flowtools.gating.templates import load_template, resolve
from flowtools.io.channels import classify_channels, kind_of_name
from flowtools.io.fcs import read_fcs
from tests._fcsbuild import build_fcs


def _float_fcs(path, names, data, *, pns=None, extra=None):
    """A float32 FCS 3.1 file with these $PnN (and $PnS) and events."""
    n, p = data.shape
    kw = {"$BYTEORD": "1,2,3,4", "$DATATYPE": "F", "$MODE": "L", "$NEXTDATA": "0", "$PAR": str(p),
          "$TOT": str(n)}
    for i, name in enumerate(names, start=1):
        kw[f"$P{i}N"] = name
        kw[f"$P{i}B"] = "32"
        kw[f"$P{i}R"] = "262144"
        kw[f"$P{i}E"] = "0,0"
        if pns and pns[i - 1]:
            kw[f"$P{i}S"] = pns[i - 1]
    kw.update(extra or {})
    path.write_bytes(build_fcs(kw, np.ascontiguousarray(data, dtype="<f4").tobytes()))
    return path


def _blood(n, rng, *, cd45_pos=0.995):
    """Scatter of cells + CD45 (a dominant positive population) + CD3 (bimodal)."""
    fsc = rng.lognormal(np.log(60000), 0.2, n)
    ssc = rng.lognormal(np.log(15000), 0.3, n)
    pos = rng.random(n) < cd45_pos
    cd45 = np.where(pos, rng.lognormal(np.log(20000), 0.3, n), rng.normal(50, 150, n))
    t = rng.random(n) < 0.6
    cd3 = np.where(t, rng.lognormal(np.log(8000), 0.3, n), rng.normal(30, 120, n))
    return fsc, ssc, cd45, cd3


# ---------------------------------------------------------------------------------- 1. time channels


@pytest.mark.parametrize(("name", "kind"), [
    ("HDR-T", "time"), ("Time", "time"), ("TIME", "time"), ("Time (102.40 sec.)", "time"),
    ("Time MSW", "time"),
    ("FSC-A", "scatter"), ("SSC-B-A", "scatter"), ("FS Lin", "scatter"), ("SS INT LIN", "scatter"),
    ("BSC-A", "scatter"), ("FSC LinH", "scatter"), ("405nm 405SSC (405/10) LogH", "scatter"),
    ("Event_length", "scatter"), ("Width", "scatter"), ("HDR-CE", "other"), ("beadDist", "other"),
    ("CD3", None), ("FL1-A", None), ("Nd142Di", None), ("PE-Cy7-A", None), ("Timer-dye", None),
])
def test_vendor_names(name, kind):
    assert kind_of_name(name) == kind


def test_pntype_timestep_and_template_choice():
    kw = {"$P1TYPE": "Time", "$P2TYPE": "Forward_Scatter", "$P3TYPE": "Raw_Fluorescence"}
    ck = classify_channels(["T0", "A", "B"], ["", "", ""], kw)
    assert ck.kinds == {"T0": "time", "A": "scatter", "B": "fluorescence"} and ck.time == "T0"
    assert "$P1TYPE" in ck.reasons["T0"]
    # no name says time, but $TIMESTEP is set and one column never decreases
    ev = np.column_stack([np.arange(100.0), np.random.default_rng(0).normal(size=100)])
    ck = classify_channels(["clk", "X"], None, {"$TIMESTEP": "0.01"}, events=ev)
    assert ck.time == "clk" and "never decrease" in ck.reasons["clk"]
    # the template's choice wins; another parameter named like time is then "other"
    ck = classify_channels(["Time", "Elapsed"], ["", "HDR-T"], {}, time="Elapsed")
    assert ck.time == "Elapsed" and ck.of("Time") == "other"
    with pytest.raises(KeyError, match="not one of"):
        classify_channels(["A"], None, {}, time="Time")


_QC_TEMPLATE = """
name: macsquant
compensation: uncompensated
transforms:
  fluorescence: {logicle: {T: 262144, W: 0.5, M: 4.5, A: 0}}
populations:
  - {name: qc, role: qc, dims: [Time, FSC-A, SSC-A], method: qc}
  - {name: CD3+, parent: qc, dims: [CD3], method: mindensity}
"""


def test_macsquant_hdr_t_is_time_not_fluorescence(tmp_path):
    rng = np.random.default_rng(1)
    n = 30_000
    fsc, ssc, _, cd3 = _blood(n, rng)
    t = np.sort(rng.uniform(0, 120_000, n))  # a clean acquisition: steady flow
    f = _float_fcs(tmp_path / "A1.fcs", ["HDR-T", "FSC-A", "SSC-A", "V1-A"],
                   np.column_stack([t, fsc, ssc, cd3]), pns=["", "", "", "CD3"])
    s = read_fcs(f)
    assert s.channel_kinds().time == "HDR-T"
    tpl = load_template("macsquant.yaml", text=_QC_TEMPLATE)
    (res,) = resolve(tpl, [s])
    assert res.error is None and not res.failed
    assert res.notes["time"].startswith("HDR-T")
    qc_dims = {d.name: d.transform for g in res.strategy.gates for d in getattr(g, "dimensions", ())}
    assert qc_dims["HDR-T"] is None  # linear, as time must be (was: the fluorescence logicle)
    kept = res.result.count(res.ids["qc"]) / n
    assert kept > 0.97  # was 83-87% with time on the logicle
    # time is no marker: no MFI column for it
    from flowtools.analysis.populations import markers

    assert [p for p, _ in markers(s)] == ["V1-A"]


def test_template_time_key_names_an_unnamed_time_channel(tmp_path):
    rng = np.random.default_rng(2)
    n = 20_000
    fsc, ssc, _, cd3 = _blood(n, rng)
    t = np.sort(rng.uniform(0, 5000, n))
    f = _float_fcs(tmp_path / "x.fcs", ["Clk2", "FSC-A", "SSC-A", "V1-A"],
                   np.column_stack([t, fsc, ssc, cd3]), pns=["", "", "", "CD3"])
    text = _QC_TEMPLATE.replace("name: macsquant", "name: x\ntime: Clk2")
    (res,) = resolve(load_template("x.yaml", text=text), [read_fcs(f)])
    assert res.error is None and res.notes["time"].startswith("Clk2")
    assert "set by the template" in res.notes["time"]
    # without it, the file has no time parameter: the template's "Time" names nothing
    (bad,) = resolve(load_template("x.yaml", text=_QC_TEMPLATE), [read_fcs(f)])
    assert bad.error is not None and "Time" in bad.error


# ----------------------------------------------------------------- 2. a dominant population, decisions


def _ctx(zero=0.0):
    return MethodContext("leukocytes/CD45+", ("CD45",), ((zero, 1.0),), 0, Decision("mindensity"))


def _logicle(x):
    from flowtools.transforms import LogicleTransform

    return np.asarray(LogicleTransform(T=262144, W=0.5, M=4.5, A=0).apply(x))


def _mindensity(x, ctx, **args):
    spec = get_method("mindensity")
    return spec.fn(np.asarray(x, dtype=np.float64)[:, None], ctx, **spec.check_args(args, "test"))


@pytest.mark.parametrize("share", [0.95, 0.99, 1.0])
def test_a_dominant_positive_population_is_kept(share):
    rng = np.random.default_rng(3)
    n = 50_000
    pos = rng.random(n) < share
    raw = np.where(pos, rng.lognormal(np.log(20000), 0.25, n), rng.normal(50, 150, n))
    x = _logicle(raw)
    ctx = _ctx(float(_logicle(np.array([0.0]))[0]))
    gate = _mindensity(x, ctx)
    kept = np.mean(x >= gate.lo)
    assert kept == pytest.approx(share, abs=0.012)  # was 0.0009: the upper tail of the positive peak
    d = ctx.decision
    assert d.details["rule"] and d.details["peaks"] and "cut" in d.details
    if share == 1.0:
        assert d.fallback is not None and "dominant positive" in d.fallback


def test_an_absent_population_keeps_almost_nothing():
    rng = np.random.default_rng(4)
    x = _logicle(rng.normal(50, 150, 40_000))
    ctx = _ctx(float(_logicle(np.array([0.0]))[0]))
    gate = _mindensity(x, ctx)
    assert np.mean(x >= gate.lo) < 0.01
    assert "negative population" in ctx.decision.fallback


def test_a_merged_neighbour_is_cut_at_its_shoulder():
    rng = np.random.default_rng(5)
    n = 60_000
    minor = rng.random(n) < 0.06
    x = np.where(minor, rng.normal(0.52, 0.05, n), rng.normal(0.3, 0.05, n))  # a shoulder, no valley
    ctx = MethodContext("p", ("m",), ((0.1, 1.0),), 0, Decision("mindensity"))
    gate = _mindensity(x, ctx)
    assert "shoulder" in ctx.decision.fallback
    kept = x >= gate.lo
    # most of the minor population, little of the major one
    assert kept[minor].mean() > 0.7 and kept[~minor].mean() < 0.02
    tail = _mindensity(x, MethodContext("p", ("m",), ((0.1, 1.0),), 0), single_peak="upper")
    assert kept[minor].mean() > (x[minor] >= tail.lo).mean()  # the plain tail cut loses the minor population


_CD45_TEMPLATE = """
name: leuko
compensation: uncompensated
transforms:
  fluorescence: {logicle: {T: 262144, W: 0.5, M: 4.5, A: 0}}
populations:
  - {name: cells, dims: [FSC-A], method: mindensity, args: {range: [2000, 262144]}}
  - {name: CD45+, parent: cells, dims: [CD45], method: mindensity}
  - {name: CD3+, parent: CD45+, dims: [CD3], method: mindensity}
  - {name: rare, parent: CD3+, dims: [FSC-A], gate: {range: [250000, null]}}
  - {name: rare sub, parent: rare, dims: [CD3], method: mindensity}
  - {name: CD3-, parent: CD45+, dims: [CD3], method: ref, args: {population: CD3+, side: negative}}
"""


def _leuko_file(tmp_path, name="L.fcs", **kw):
    rng = np.random.default_rng(6)
    n = 30_000
    fsc, ssc, cd45, cd3 = _blood(n, rng, **kw)
    return _float_fcs(tmp_path / name, ["FSC-A", "SSC-A", "V1-A", "V2-A"],
                      np.column_stack([fsc, ssc, cd45, cd3]), pns=["", "", "CD45", "CD3"])


def test_dominant_marker_in_a_template_and_a_failed_child_keeps_the_sample(tmp_path, caplog):
    s = read_fcs(_leuko_file(tmp_path, cd45_pos=1.0))
    with caplog.at_level(logging.WARNING):
        (res,) = resolve(load_template("leuko.yaml", text=_CD45_TEMPLATE), [s])
    assert res.error is None  # was: the whole sample failed
    rows = {r["population"]: r for r in res.rows()}
    assert rows["cells/CD45+"]["pct_parent"] > 99.0  # was 0.09%
    assert rows["cells/CD45+"]["status"] == "flagged" and "fallback" in rows["cells/CD45+"]["reason"]
    assert any("flagged" in m and "CD45+" in m for m in caplog.messages)  # WARNING, not INFO
    # the child with no events fails, and only its subtree
    assert rows["cells/CD45+/CD3+/rare/rare sub"]["status"] == "failed"
    assert "in the parent population" in rows["cells/CD45+/CD3+/rare/rare sub"]["reason"]  # no "in range"
    assert np.isnan(rows["cells/CD45+/CD3+/rare/rare sub"]["count"])
    assert rows["cells/CD45+/CD3+"]["status"] == "ok" and rows["cells/CD45+/CD3-"]["status"] == "ok"
    assert rows["cells/CD45+/CD3+"]["pct_parent"] == pytest.approx(60, abs=2)
    dec = res.decisions["cells/CD45+"]
    assert dec["fallback"] and dec["events_in"] == rows["cells"]["count"]
    assert dec["events_kept"] == rows["cells/CD45+"]["count"] and dec["status"] == "flagged"
    assert res.decisions["cells/CD45+/CD3+/rare/rare sub"]["status"] == "failed"
    json.dumps(res.decisions, allow_nan=False)  # plain JSON


def test_expect_flags_or_fails(tmp_path):
    s = read_fcs(_leuko_file(tmp_path))
    text = _CD45_TEMPLATE.replace(
        "- {name: CD3+, parent: CD45+, dims: [CD3], method: mindensity}",
        "- {name: CD3+, parent: CD45+, dims: [CD3], method: mindensity, expect: {pct: [70, 90]}}")
    (res,) = resolve(load_template("leuko.yaml", text=text), [s])
    r = {x["population"]: x for x in res.rows()}["cells/CD45+/CD3+"]
    assert r["status"] == "flagged" and "outside expect [70, 90]" in r["reason"] and r["count"] > 0
    failing = text.replace("expect: {pct: [70, 90]}}", "expect: {pct: [70, 90]}, on_violation: fail}")
    (res,) = resolve(load_template("leuko.yaml", text=failing), [s])
    rows = {x["population"]: x for x in res.rows()}
    assert rows["cells/CD45+/CD3+"]["status"] == "failed" and np.isnan(rows["cells/CD45+/CD3+"]["pct_parent"])
    assert rows["cells/CD45+/CD3-"]["status"] == "failed"  # its ref failed
    assert rows["cells/CD45+"]["status"] != "failed"


@pytest.mark.parametrize(("expect", "msg"), [
    ("{pct: [90, 70]}", "is above"), ("{pct: [0, 120]}", "lie in"), ("{share: [1, 2]}", "unknown"),
    ("{pct: 5}", "[lo, hi]"), ("{pct: [null, null]}", "[lo, hi]"),
])
def test_bad_expect_is_a_template_error(expect, msg):
    from flowtools.errors import TemplateError

    text = _CD45_TEMPLATE.replace("method: mindensity}\n  - {name: CD3+",
                                  f"method: mindensity, expect: {expect}}}\n  - {{name: CD3+", 1)
    with pytest.raises(TemplateError, match="expect"):
        load_template("t.yaml", text=text)
    with pytest.raises(TemplateError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        load_template("t.yaml", text=text)


def test_decisions_travel_with_the_gates_in_gatingml(tmp_path):
    import xml.etree.ElementTree as ET

    from flowtools.gating import gate_sample
    from flowtools.gating.formats.gatingml import read_gatingml, to_gatingml_string

    s = read_fcs(_leuko_file(tmp_path))
    (res,) = resolve(load_template("leuko.yaml", text=_CD45_TEMPLATE), [s])
    xml = to_gatingml_string(res.strategy, res.gate_decisions())
    infos = {el.get("{http://www.isac-net.org/std/Gating-ML/v2.0/gating}id"): el.find(
        "{http://www.isac-net.org/std/Gating-ML/v2.0/datatypes}custom_info")
        for el in ET.fromstring(xml) if el.tag.endswith("Gate")}
    cd45 = res.ids["cells/CD45+"]
    record = json.loads(infos[cd45].text)
    assert record["method"] == "mindensity" and record["details"]["cut"] == res.decisions["cells/CD45+"][
        "details"]["cut"]
    again = gate_sample(read_gatingml(xml), s)  # custom_info is ignored by readers
    assert again.count(cd45) == res.result.count(cd45)
    flowkit = pytest.importorskip("flowkit")
    (tmp_path / "g.xml").write_bytes(xml)
    assert cd45 in {g for g, _ in flowkit.parse_gating_xml(str(tmp_path / "g.xml")).get_gate_ids()}


def test_an_already_compensated_file_warns_before_it_is_compensated_again(tmp_path):
    from flowtools.errors import GatingWarning

    rng = np.random.default_rng(8)
    n = 5000
    fsc, ssc, cd45, cd3 = _blood(n, rng)
    names = ["FSC-A", "SSC-A", "Comp-V1-A", "Comp-V2-A"]  # FlowJo's names for compensated parameters
    f = _float_fcs(tmp_path / "exported.fcs", names, np.column_stack([fsc, ssc, cd45, cd3]),
                   pns=["", "", "CD45", "CD3"],
                   extra={"$SPILLOVER": "2,Comp-V1-A,Comp-V2-A,1,0.1,0,1"})
    text = _CD45_TEMPLATE.replace("compensation: uncompensated", "compensation: FCS")
    with pytest.warns(GatingWarning, match="already processed.*compensated again"):
        (res,) = resolve(load_template("leuko.yaml", text=text), [read_fcs(f)])
    assert "compensated again" in res.notes["processing"]
    # said once for the file, kept: the numbers are the template's to judge
    assert res.error is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (plain,) = resolve(load_template("leuko.yaml", text=_CD45_TEMPLATE), [read_fcs(f)])
    assert "processing" not in plain.notes
