"""Absolute counts through the plate runner: a counting-bead population and the sheet's figures, or $VOL.

The formulas themselves are checked against hand-computed values in tests/analysis/test_absolute.py;
here: the run finds the bead population by its role, reads the sheet's columns, and writes cells/µL
into populations.csv and per_woman.csv, equal to the counts the same table holds.
"""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from flowtools.pipeline.plate import run_plate

TEMPLATE = """\
name: absolute
tube: TBNK-NK
compensation: FCS
populations:
  - name: beads
    dims: [FSC-A]
    gate: {range: [null, 20000]}
    role: counting_beads
  - name: cells
    dims: [FSC-A]
    gate: {range: [20000, null]}
  - name: lymphocytes
    parent: cells
    dims: [FSC-A, SSC-A]
    gate: {rectangle: [[35000, 80000], [null, 30000]]}
"""


@pytest.fixture(scope="module")
def cohort(gated_cohort):
    return gated_cohort(n_women=3, events=3000, seed=4).cohort


def _sheet(src, dst, extra):
    sheet = pd.read_csv(src, dtype=str)
    sheet = sheet[sheet.tube == "TBNK-NK"].reset_index(drop=True)
    sheet["file"] = [str((src.parent / f).resolve()) for f in sheet.file]  # relative to the cohort's sheet
    for k, v in extra.items():
        sheet[k] = v
    sheet.to_csv(dst, index=False)
    return sheet


def test_bead_method_gives_cells_per_ul_from_the_tables_own_counts(cohort, tmp_path):
    t = tmp_path / "t.yaml"
    t.write_text(TEMPLATE, encoding="utf-8")
    sheet = _sheet(cohort.samples_csv, tmp_path / "s.csv", {"beads_per_test": ["50000", "48000", ""],
                                                            "sample_volume_ul": "50"})
    res = run_plate(tmp_path / "s.csv", [t], tmp_path / "out", jobs=1)
    pops = pd.read_csv(res.populations_csv)
    assert {"cells_per_ul", "absolute_method", "absolute_reason"} <= set(pops.columns)
    for k, sid in enumerate(sheet.sample_id):
        rows = pops[pops.sample_id == sid].set_index("population")
        beads = rows.loc["beads", "count"]
        lym = rows.loc["cells/lymphocytes"]
        assert beads > 0
        if k < 2:
            want = lym["count"] / beads * float(sheet.beads_per_test[k]) / 50.0
            assert lym["cells_per_ul"] == pytest.approx(want, rel=1e-12)
            assert lym["absolute_method"] == "beads"
            assert np.isnan(rows.loc["beads", "cells_per_ul"])  # the beads themselves have no count per µL
        else:  # no beads-per-test figure for this sample: empty, and why
            assert np.isnan(lym["cells_per_ul"]) and "beads-per-test" in lym["absolute_reason"]
    wide = pd.read_csv(res.per_woman_csv)
    col = "TBNK-NK|cells/lymphocytes|cells_per_ul"
    assert col in wide.columns
    w0 = sheet.woman_id[0]
    first = pops[(pops.sample_id == sheet.sample_id[0]) & (pops.population == "cells/lymphocytes")]
    assert wide.set_index("woman_id").loc[w0, col] == pytest.approx(first.cells_per_ul.iloc[0])
    assert "cells per µL" in (tmp_path / "out" / "per_woman.columns.md").read_text(encoding="utf-8")
    # the beads are not biology: the statistics leave them out
    from flowtools.stats.tables import tables_from_gate

    assert not tables_from_gate(tmp_path / "out")["population"].eq("beads").any()


def test_volumetric_method_from_vol_keyword(cohort, tmp_path):
    from flowtools.io.fcs import read_fcs
    from flowtools.io.fcs_write import write_fcs

    sheet = _sheet(cohort.samples_csv, tmp_path / "s.csv", {})
    src = sheet.file[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = read_fcs(src)
    dst = tmp_path / "vol.fcs"
    write_fcs(dst, s.events, s.pnn, markers=[c.pns for c in s.channels], spillover=s.spillover,
              keywords={"$VOL": "25000"})  # 25 µL acquired
    shutil.copy(tmp_path / "s.csv", tmp_path / "s0.csv")
    sheet.loc[0, "file"] = str(dst)
    sheet.to_csv(tmp_path / "s.csv", index=False)
    t = tmp_path / "t.yaml"
    t.write_text(TEMPLATE.replace("    role: counting_beads\n", ""), encoding="utf-8")
    res = run_plate(tmp_path / "s.csv", [t], tmp_path / "out", jobs=1)
    pops = pd.read_csv(res.populations_csv)
    lym = pops[(pops.sample_id == sheet.sample_id[0]) & (pops.population == "cells/lymphocytes")].iloc[0]
    assert lym["absolute_method"] == "volumetric"
    assert lym["cells_per_ul"] == pytest.approx(lym["count"] / 25.0, rel=1e-12)
    other = pops[(pops.sample_id == sheet.sample_id[1]) & (pops.population == "cells/lymphocytes")].iloc[0]
    assert np.isnan(other["cells_per_ul"]) and "$VOL" in other["absolute_reason"]
