"""MIFlowCyt record of a gate run: filled from the files where they say it, missing otherwise, no PII."""

from __future__ import annotations

import json

import pytest

from flowtools.errors import ExportError


@pytest.fixture(scope="module")
def gc(gated_cohort):
    return gated_cohort(n_women=2, events=3000, seed=0, templates=("TBNK-NK", "Treg-Th"))


@pytest.fixture(scope="module")
def instrument_run(gc, tmp_path_factory):
    """The TBNK files rewritten with instrument keywords ($PnV, $PnL, $PnF, $PnT) and personal ones, gated."""
    import csv

    from flowtools._resources import study_template
    from flowtools.io.fcs import read_fcs
    from flowtools.io.fcs_write import write_fcs
    from flowtools.pipeline.plate import run_plate

    root = tmp_path_factory.mktemp("mifc")
    (root / "fcs").mkdir()
    rows = []
    with open(gc.cohort.samples_csv, encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            if r["tube"] != "TBNK-NK":
                continue
            s = read_fcs(gc.cohort_dir / r["file"])
            kw = {k: v for k, v in s.keywords.items()
                  if k in ("$CYT", "$TIMESTEP", "$SRC", "$OP", "PATIENT ID", "$DATE")}
            kw.update({"$CYTSN": "CANARY-PII-SN", "$FIL": "CANARY-PII-FILE.fcs"})
            i = s.channel_index("FITC-A") + 1
            kw.update({f"$P{i}V": "512", f"$P{i}L": "488", f"$P{i}F": "530/30", f"$P{i}T": "PMT"})
            dest = root / "fcs" / f"{r['sample_id']}.fcs"
            write_fcs(dest, s.events, s.pnn, markers=s.pns, spillover=s.spillover, keywords=kw,
                      ranges=[c.pnr for c in s.channels])
            rows.append({**r, "file": f"fcs/{dest.name}"})
    sheet = root / "samples.csv"
    with open(sheet, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    run_plate(sheet, [study_template("TBNK-NK")], root / "run", jobs=1)
    return root / "run"


def _missing_fields(rec):
    return {(m["section"], m["field"]): m["reason"] for m in rec["missing"]}


def test_record_sections_and_sources(gc):
    from flowtools.pipeline.miflowcyt import miflowcyt_record

    rec = miflowcyt_record(gc.run_dir)
    for sec in ("experiment_overview", "flow_sample_details", "instrument_details", "data_analysis_details",
                "missing"):
        assert sec in rec
    assert rec["standard"] == "MIFlowCyt 1.0"
    tubes = {i["tube"]: i for i in rec["instrument_details"]}
    assert set(tubes) == {"TBNK-NK", "Treg-Th"}
    assert tubes["TBNK-NK"]["model"] == "flowtools-synth"  # $CYT
    chans = {c["channel"]: c for c in tubes["TBNK-NK"]["channels"]}
    assert chans["FITC-A"]["marker"] == "CD3"
    samples = {s["sample_id"]: s for s in rec["flow_sample_details"]["samples"]}
    assert samples["S0001-TBNK"]["woman_id"] == "W001"
    da = rec["data_analysis_details"]
    prov = json.loads((gc.run_dir / "provenance.json").read_text())
    files = {f["sample_id"]: f for f in da["list_mode_data_files"]}
    assert files["S0001-TBNK"]["sha256"] == prov["fcs_sha256"]["S0001-TBNK"]
    assert da["compensation"]["S0001-TBNK"]["method"] == "FCS"
    assert "FITC-A" in da["compensation"]["S0001-TBNK"]["detectors"]
    gating = {g["tube"]: g for g in da["gating"]}
    pops = {p["population"]: p for p in gating["TBNK-NK"]["populations"]}
    assert pops["qc/margin"]["parent"] == "qc"
    assert pops["qc/margin"]["gate_type"] == "data-driven: boundary"
    assert pops["qc"]["role"] == "qc"
    assert da["software"]["version"] == prov["version"]
    # the synthetic files write no voltages, wavelengths or filters: missing, not invented
    miss = _missing_fields(rec)
    assert "FITC-A" in miss[("instrument_details[TBNK-NK]", "channels.detector_voltage")]
    assert "detector_voltage" not in chans["FITC-A"]
    assert ("experiment_overview", "purpose") in miss
    assert "withheld" in miss[("experiment_overview", "acquisition_date")]
    assert all(m["reason"] for m in rec["missing"])


def test_no_personal_keywords(gc):
    from flowtools.pipeline.miflowcyt import miflowcyt_html, miflowcyt_record

    rec = miflowcyt_record(gc.run_dir)
    text = json.dumps(rec)
    assert "CANARY-PII" not in text
    assert "Jane Doe" not in text and "2023-12-11" not in text and "11-DEC-2023" not in text
    assert "CANARY-PII" not in miflowcyt_html(rec)


def test_instrument_keywords_filled_where_written(instrument_run):
    from flowtools.pipeline.miflowcyt import miflowcyt_record

    rec = miflowcyt_record(instrument_run)
    (inst,) = rec["instrument_details"]
    chans = {c["channel"]: c for c in inst["channels"]}
    assert chans["FITC-A"]["detector_voltage"] == "512"
    assert chans["FITC-A"]["excitation_wavelength_nm"] == "488"
    assert chans["FITC-A"]["optical_filter"] == "530/30"
    assert chans["FITC-A"]["detector_type"] == "PMT"
    assert "detector_voltage" not in chans["PE-A"]
    miss = _missing_fields(rec)
    reason = miss[("instrument_details[TBNK-NK]", "channels.detector_voltage")]
    assert "PE-A" in reason and "FITC-A" not in reason
    assert "withheld" in miss[("instrument_details[TBNK-NK]", "serial_number")]
    assert "CANARY-PII" not in json.dumps(rec)


def test_write_atomic_and_html_escaped(gc, tmp_path):
    from flowtools.pipeline.miflowcyt import miflowcyt_html, write_miflowcyt

    out = write_miflowcyt(gc.run_dir, tmp_path / "m.json")
    rec = json.loads(out.read_text(encoding="utf-8"))
    assert rec["standard"] == "MIFlowCyt 1.0"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    rec["experiment_overview"]["purpose"] = "<script>alert(1)</script>"
    h = miflowcyt_html(rec)
    assert h.startswith('<section class="miflowcyt"') and h.rstrip().endswith("</section>")
    assert "<script>" not in h and "&lt;script&gt;" in h
    for title in ("Experiment overview", "Flow sample/specimen details", "Instrument details",
                  "Data analysis details", "Missing"):
        assert title in h


def test_errors(tmp_path):
    from flowtools.pipeline.miflowcyt import miflowcyt_record

    with pytest.raises(ExportError, match="no such run folder"):
        miflowcyt_record(tmp_path / "none")
    with pytest.raises(ExportError, match="not the output folder"):
        miflowcyt_record(tmp_path)
