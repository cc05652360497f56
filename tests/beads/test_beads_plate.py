"""A whole plate: recovery of the known concentrations, censoring flags, QC, bad inputs, outputs."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from flowtools.beads.plate import check_standards, run_bead_plate
from flowtools.errors import BeadAssayError
from flowtools.io.fcs_write import write_fcs


def _truth(bead_plate):
    return pd.read_csv(bead_plate.truth_csv, dtype={"woman_id": str})


def test_recovery_within_20_percent_inside_the_range(bead_plate, bead_run):
    pw = pd.DataFrame(bead_run.per_woman).merge(
        _truth(bead_plate), on=["woman_id", "analyte"], suffixes=("", "_true")
    )
    ok = pw[pw["flag"] == "ok"]
    assert len(ok) >= len(pw) - 5 - 3  # all but the saturated woman and the three planted bad wells
    ratio = ok["concentration"] / ok["concentration_true"]
    assert (np.abs(ratio - 1) <= 0.2).mean() >= 0.95
    assert abs(float(np.median(ratio)) - 1) < 0.05


def test_every_curve_fits_with_good_qc(bead_run):
    for c in bead_run.curves.values():
        assert c.fit is not None and c.fit.model == "5pl"
        assert c.fit.r2 > 0.99
        assert math.isfinite(c.lloq) and c.uloq > 10 * c.lloq
        cvs = [s["cv_pct"] for s in c.standards]
        assert np.nanmedian(cvs) < 15  # intra-plate replicate CV of the standards


def test_saturated_sample_is_above_uloq_and_not_extrapolated(bead_plate, bead_run):
    truth = json.loads(bead_plate.truth_json.read_text())
    sat, failed = truth["saturated_sample"], truth["failed_region"]["analyte"]  # same (first) well
    rows = [r for r in bead_run.per_woman if r["woman_id"] == sat and r["analyte"] != failed]
    assert rows and all(r["flag"] == ">ULOQ" for r in rows)
    assert all(math.isnan(r["concentration"]) and r["limit"] == pytest.approx(r["uloq"]) for r in rows)


def test_low_sample_is_below_lloq(bead_plate, tmp_path):
    """A sample diluted far below the lowest standard is flagged <LLOQ with the limit, no value."""
    rows = list(csv.DictReader(bead_plate.sheet.read_text().splitlines()))
    for r in rows:
        r["file"] = str(bead_plate.sheet.parent / r["file"])
    blank = next(r for r in rows if r["role"] == "blank")
    blank_copy = dict(blank, sample_id="LOW-1", woman_id="LOW", role="sample", well="H12")
    sheet = tmp_path / "sheet.csv"
    with sheet.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        # The same FCS file may not be listed twice: copy the blank well's file.
        src = bead_plate.sheet.parent / blank["file"]
        dst = tmp_path / "low.fcs"
        dst.write_bytes(src.read_bytes())
        blank_copy["file"] = str(dst)
        w.writerow(blank_copy)
    res = run_bead_plate(sheet, bead_plate.panel)
    low = [r for r in res.per_woman if r["woman_id"] == "LOW"]
    assert low and all(r["flag"] == "<LLOQ" for r in low)
    assert all(math.isnan(r["concentration"]) and r["limit"] == pytest.approx(r["lloq"]) for r in low)


def test_outputs_have_provenance(bead_run):
    out = bead_run.outputs
    for name in ("wells", "per_woman", "curves", "standards"):
        assert out[name].exists()
        meta = pq.read_schema(out[name].with_suffix(".parquet")).metadata
        assert any(b"provenance" in k for k in meta)
    summary = json.loads(out["summary"].read_text())
    assert summary["provenance"]["parameters"]["weights"] == "1/y^2"
    ident = json.loads(out["identification"].read_text())
    assert len(ident) == len(bead_run.wells)
    text = out["wells"].read_text()
    assert "CANARY" not in text


def test_check_standards_flags_flat_and_non_monotone():
    conc = 10000 / 4.0 ** np.arange(8)
    good = 30 + 30000 * conc / (conc + 2000)
    assert check_standards(conc, good) is None
    assert check_standards(conc, np.full(8, 500.0)) == "flat"
    assert check_standards(conc, good[[0, 5, 2, 7, 4, 1, 6, 3]]) == "non_monotone"


def _rewrite(bead_plate, tmp_path, edit):
    rows = list(csv.DictReader(bead_plate.sheet.read_text().splitlines()))
    for r in rows:
        r["file"] = str(bead_plate.sheet.parent / r["file"])
    rows = edit(rows)
    sheet = tmp_path / "sheet.csv"
    with sheet.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return sheet


def test_shuffled_standards_are_non_monotone(bead_plate, tmp_path):
    def shuffle(rows):
        order = [3, 7, 1, 5, 2, 8, 4, 6]
        for r in rows:
            if r["role"] == "standard":
                r["standard_level"] = str(order[int(r["standard_level"]) - 1])
        return rows

    res = run_bead_plate(_rewrite(bead_plate, tmp_path, shuffle), bead_plate.panel)
    assert all("non_monotone" in c.flags and c.fit is None for c in res.curves.values())
    samples = [r for r in res.well_rows if r["role"] == "sample"]
    assert all(math.isnan(r["concentration"]) for r in samples)
    assert any("no_curve" in r["flag"] for r in samples)


def test_missing_standards_is_an_error_naming_the_plate(bead_plate, tmp_path):
    sheet = _rewrite(bead_plate, tmp_path, lambda rows: [r for r in rows if r["role"] != "standard"])
    with pytest.raises(BeadAssayError, match="plate 'T1': no standard wells"):
        run_bead_plate(sheet, bead_plate.panel)


def test_a_bad_well_does_not_stop_the_plate(bead_plate, tmp_path):
    bad = tmp_path / "bad.fcs"
    write_fcs(bad, np.ones((100, 3), dtype=np.float32), ["FSC-A", "SSC-A", "APC-A"])

    def swap(rows):
        s = next(r for r in rows if r["role"] == "sample" and r["woman_id"] == "W005")
        s["file"] = str(bad)
        return rows

    res = run_bead_plate(_rewrite(bead_plate, tmp_path, swap), bead_plate.panel)
    assert res.n_failed == 1
    ((sid, msg),) = res.well_errors.items()
    assert str(bad) in msg and "'PE-A'" in msg and "well" in msg
    assert sum(1 for r in res.per_woman if r["flag"] == "ok") > 30
    assert all(r["flag"] == "well_failed" for r in res.well_rows if r["sample_id"] == sid)


def test_replicate_disagreement_is_flagged(bead_plate, tmp_path):
    def swap(rows):  # the second replicates of levels 2 and 6 trade places: each pair disagrees
        second = {
            r["standard_level"]: r for r in rows if r["role"] == "standard" and r["sample_id"].endswith("-2")
        }
        second["2"]["standard_level"], second["6"]["standard_level"] = "6", "2"
        return rows

    res = run_bead_plate(_rewrite(bead_plate, tmp_path, swap), bead_plate.panel)
    for c in res.curves.values():
        assert "replicate_cv" in c.flags
        bad = {s["level"] for s in c.standards if "replicate_cv" in s["flags"]}
        assert bad == {2, 6}


def test_two_plates_in_one_sheet_agree(tmp_path):
    """Each plate gets its own curves; a woman measured on both gets both wells; inter-plate CV < 20%."""
    from flowtools.io.sample_sheet import read_sample_sheet, write_sample_sheet
    from flowtools.synth.beads import make_bead_plate

    plates = [
        make_bead_plate(tmp_path / p, n_women=6, n_analytes=3, events_per_well=900, seed=4, plate_id=p)
        for p in ("PA", "PB")
    ]
    rows = [r for bp in plates for r in read_sample_sheet(bp.sheet, tubes=None).rows]
    rows = [r for r in rows if not (r.plate == "PB" and r.extra["role"] == "sample")] + [
        type(r)(r.file, r.sample_id, r.woman_id, "beads-2", r.plate, r.well, extra=r.extra)
        for r in rows
        if r.plate == "PB" and r.extra["role"] == "sample"
    ]
    write_sample_sheet(rows, tmp_path / "both.csv")
    res = run_bead_plate(tmp_path / "both.csv", plates[0].panel)
    assert {p for p, _ in res.curves} == {"PA", "PB"}
    assert all(r["n_wells"] == 2 for r in res.per_woman)
    assert np.nanmedian([r["cv_pct"] for r in res.per_woman]) < 20
    df = pd.DataFrame([r for r in res.well_rows if r["role"] == "sample" and r["flag"] == "ok"])
    g = df.groupby(["woman_id", "analyte"])["concentration"]
    cv = 100 * g.std() / g.mean()
    assert cv.notna().sum() >= 15 and cv.median() < 20


def test_spearman_matches_scipy():
    from scipy.stats import spearmanr

    from flowtools.beads.plate import _spearman

    rng = np.random.default_rng(1)
    for _ in range(20):
        x, y = rng.integers(0, 5, 8).astype(float), rng.normal(size=8)
        if np.ptp(x) > 0:
            assert _spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
