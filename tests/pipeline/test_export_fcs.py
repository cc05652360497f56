"""FCS 3.1 export of one population per sample: FlowKit and flowtools read the same raw events back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flowtools.errors import ExportError

NK = "qc/margin/cells/singlets/live/lymphocytes/CD3-/non-B/NK cells"
NK_ID = "qc__margin__cells__singlets__live__lymphocytes__CD3neg__non-B__NK_cells"


@pytest.fixture(scope="module")
def gc(gated_cohort):
    return gated_cohort(n_women=2, events=3000, seed=0, templates=("TBNK-NK", "Treg-Th"))


@pytest.fixture(scope="module")
def exported(gc, tmp_path_factory):
    from flowtools.pipeline.export import export_fcs

    return export_fcs(gc.run_dir, "NK cells", tmp_path_factory.mktemp("fcs_out"))


def _source_mask(gc, sid: str, gate_id: str):
    from flowtools.gating.engine import gate_sample
    from flowtools.gating.formats.gatingml import read_gatingml
    from flowtools.io.fcs import read_fcs

    src = read_fcs(gc.cohort_dir / "fcs" / f"{sid}.fcs")
    strategy = read_gatingml(gc.run_dir / "gates" / f"{sid}.gating-ml.xml")
    return src, gate_sample(strategy, src).mask(gate_id)


def test_one_file_per_sample_counts(gc, exported):
    from flowtools.analysis.populations import read_populations

    pops = read_populations(gc.run_dir / "populations.csv")
    nk = pops[pops["population"] == NK]
    assert exported.population == NK and exported.tube == "TBNK-NK"
    assert set(exported.files) == set(nk["sample_id"])
    for r in nk.itertuples(index=False):
        assert exported.counts[r.sample_id] == int(r.count)
    doc = json.loads(exported.manifest.read_text(encoding="utf-8"))
    assert doc["population"] == NK and doc["provenance"]["command"] == "flowtools export fcs"


def test_flowkit_opens_with_identical_raw_events(gc, exported):
    flowkit = pytest.importorskip("flowkit")
    for sid, path in exported.files.items():
        src, mask = _source_mask(gc, sid, NK_ID)
        out = flowkit.Sample(str(path))
        ref = flowkit.Sample(str(src.path))
        assert out.event_count == int(mask.sum()) > 0
        assert out.pnn_labels == ref.pnn_labels
        assert out.pns_labels == ref.pns_labels
        np.testing.assert_array_equal(out.get_events(source="raw"), ref.get_events(source="raw")[mask])
        # the spillover travels: FlowKit compensates the exported events as it does the source's
        assert out.metadata["spillover"] == ref.metadata["spillover"]


def test_flowtools_reads_back_raw_values_and_keywords(gc, exported):
    from flowtools.io.fcs import read_fcs

    for sid, path in exported.files.items():
        out = read_fcs(path)
        src, mask = _source_mask(gc, sid, out.keywords["FLOWTOOLS_GATE_ID"])
        assert out.version == "3.1"
        np.testing.assert_array_equal(out.events, src.events[mask])
        assert out.events.dtype == src.events.dtype
        assert out.spillover == src.spillover
        kw = out.keywords
        assert kw["FLOWTOOLS_POPULATION"] == NK
        assert kw["FLOWTOOLS_SAMPLE_ID"] == sid
        assert len(kw["FLOWTOOLS_TEMPLATE_SHA256"]) == 64
        assert kw["FLOWTOOLS_SOURCE_SHA256"] == json.loads(
            (gc.run_dir / "provenance.json").read_text())["fcs_sha256"][sid]
        assert kw["$ORIGINALITY"] == "DataModified"
        for k, v in src.keywords.items():
            if k.startswith("$P") and k[2:-1].isdigit() and k[-1] in "NSRGVLFD":
                assert kw[k] == v, k
        assert kw["$CYT"] == src.keywords["$CYT"]
        assert kw["$TIMESTEP"] == src.keywords["$TIMESTEP"]


def test_no_personal_keywords(gc, exported):
    from flowtools.io.fcs import read_fcs

    src = read_fcs(gc.cohort_dir / "fcs" / "S0001-TBNK.fcs")
    assert any("CANARY-PII" in v for v in src.keywords.values())  # the cohort plants them
    for path in exported.files.values():
        assert b"CANARY-PII" not in path.read_bytes()
        kw = read_fcs(path).keywords
        for k in ("$SRC", "$OP", "$FIL", "PATIENT ID", "$DATE", "$BTIM", "$ETIM"):
            assert k not in kw
    assert b"CANARY-PII" not in exported.manifest.read_bytes()


def test_errors(gc, tmp_path):
    from flowtools.pipeline.export import export_fcs

    with pytest.raises(ExportError, match="populations are"):
        export_fcs(gc.run_dir, "no-such-cells", tmp_path)
    with pytest.raises(ExportError, match="ambiguous"):
        export_fcs(gc.run_dir, "CD8", tmp_path)
    with pytest.raises(ExportError, match="no such run folder"):
        export_fcs(tmp_path / "nothing", "NK cells", tmp_path)


def test_float64_source_round_trips(tmp_path):
    """write_fcs(datatype="D") stores doubles exactly (what a float64 source needs)."""
    from flowtools.io.fcs import read_fcs
    from flowtools.io.fcs_write import write_fcs

    x = np.random.default_rng(0).normal(size=(20, 2)) * 1e3 + 1 / 3
    p = write_fcs(tmp_path / "d.fcs", x, ["A", "B"], datatype="D")
    back = read_fcs(p)
    assert back.keywords["$DATATYPE"] == "D" and back.keywords["$P1B"] == "64"
    np.testing.assert_array_equal(back.events, x)
    with pytest.raises(ValueError, match="datatype"):
        write_fcs(tmp_path / "e.fcs", x, ["A", "B"], datatype="I")


def test_integer_source_with_log_channel(tmp_path):
    """An FCS 3.0-style integer file (16-bit, one log-amplified channel): FlowKit sees the same events."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from _fcsbuild import basic_keywords, build_fcs

    from flowtools.io.fcs import read_fcs
    from flowtools.pipeline.export import export_fcs
    from flowtools.pipeline.plate import run_plate

    flowkit = pytest.importorskip("flowkit")
    rng = np.random.default_rng(3)
    n = 400
    x = np.column_stack([rng.integers(0, 1024, n), rng.integers(0, 1024, n), rng.integers(0, 1024, n),
                         np.arange(n)]).astype("<u2")
    kw = basic_keywords(4, n)
    kw.update({"$P1N": "FSC-A", "$P2N": "SSC-A", "$P3N": "FL1-A", "$P3S": "CD3", "$P3E": "4,1",
               "$P4N": "Time", "$TIMESTEP": "0.1", "$CYT": "FACSCalibur", "$SRC": "CANARY-PII x",
               "$P1G": "2"})
    (tmp_path / "fcs").mkdir()
    (tmp_path / "fcs" / "a.fcs").write_bytes(build_fcs(kw, x.tobytes(), version="3.0"))
    (tmp_path / "samples.csv").write_text("file,sample_id,woman_id,tube,plate,well\n"
                                          "fcs/a.fcs,A1,W1,CAL,P1,A01\n", encoding="utf-8")
    (tmp_path / "t.yaml").write_text(
        "name: cal\ntube: CAL\ncompensation: uncompensated\ntransforms: {fluorescence: none, scatter: none,"
        " time: none}\npopulations:\n  - name: cells\n    dims: [FSC-A, SSC-A]\n"
        "    gate: {rectangle: [[100, 900], [null, 800]]}\n", encoding="utf-8")
    res = run_plate(tmp_path / "samples.csv", [tmp_path / "t.yaml"], tmp_path / "run", jobs=1)
    assert res.n_ok == 1
    got = export_fcs(tmp_path / "run", "cells", tmp_path / "out")
    src = read_fcs(tmp_path / "fcs" / "a.fcs")
    from flowtools.gating.engine import gate_sample
    from flowtools.gating.formats.gatingml import read_gatingml

    mask = gate_sample(read_gatingml(tmp_path / "run" / "gates" / "A1.gating-ml.xml"), src).mask("cells")
    assert got.counts["A1"] == int(mask.sum()) > 0
    assert 0 < mask.sum() < n
    path = got.files["A1"]
    out = read_fcs(path)
    assert out.keywords["FLOWTOOLS_DECODED"] == "FL1-A"
    assert out.events.dtype == np.float64  # decoded values kept at full precision
    np.testing.assert_array_equal(out.events[:, [0, 1, 3]], src.events[mask][:, [0, 1, 3]])
    np.testing.assert_allclose(out.as_array(preprocess=True), src.as_array(preprocess=True)[mask], rtol=1e-12)
    ref = flowkit.Sample(str(src.path))
    fk = flowkit.Sample(str(path))
    np.testing.assert_allclose(fk.get_events(source="raw"), ref.get_events(source="raw")[mask], rtol=1e-12)
    assert b"CANARY-PII" not in path.read_bytes()


def test_empty_population_skipped_with_reason(gc, tmp_path):
    from flowtools.analysis.populations import read_populations
    from flowtools.pipeline.export import export_fcs

    pops = read_populations(gc.run_dir / "populations.csv")
    zero = pops[(pops["count"] == 0) & (pops["status"] != "failed")]
    if zero.empty:
        pytest.skip("no empty population in this cohort")
    r = zero.iloc[0]
    got = export_fcs(gc.run_dir, r["population"], tmp_path, tube=r["tube"])
    assert r["sample_id"] not in got.files
    assert "no events" in got.skipped[r["sample_id"]]
    assert not list(tmp_path.glob(f"{r['sample_id']}.*.fcs"))
