"""Absolute counts (cells/µL): bead method and volumetric method against hand-computed values."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from flowtools.analysis.absolute import (
    absolute_counts,
    add_absolute_counts,
    per_woman_absolute,
    vol_nl,
    volumetric_counts,
)


def _table() -> pd.DataFrame:
    rows = [
        # sample A: 10,000 beads counted, 2,500 lymphocytes, 400 NK cells
        ("A", "W1", "TBNK-NK", "beads", 10_000.0),
        ("A", "W1", "TBNK-NK", "cells/lymphocytes", 2_500.0),
        ("A", "W1", "TBNK-NK", "cells/lymphocytes/NK cells", 400.0),
        # sample B: 5,000 beads, 1,000 lymphocytes, NK gate failed
        ("B", "W2", "TBNK-NK", "beads", 5_000.0),
        ("B", "W2", "TBNK-NK", "cells/lymphocytes", 1_000.0),
        ("B", "W2", "TBNK-NK", "cells/lymphocytes/NK cells", math.nan),
        # sample C: no bead events
        ("C", "W3", "TBNK-NK", "beads", 0.0),
        ("C", "W3", "TBNK-NK", "cells/lymphocytes", 900.0),
        # sample D: no bead population at all
        ("D", "W4", "TBNK-NK", "cells/lymphocytes", 800.0),
    ]
    return pd.DataFrame(rows, columns=["sample_id", "woman_id", "tube", "population", "count"])


def test_bead_method_hand_computed():
    beads = {"A": 50_000, "B": 48_500, "C": 50_000, "D": 50_000}
    out = absolute_counts(_table(), bead_population="beads", beads_per_test=beads, volume_ul=50.0)
    v = dict(zip(zip(out["sample_id"], out["population"], strict=True), out["cells_per_ul"], strict=True))
    # 2500 / 10000 * 50000 / 50 = 250 cells/µL; 400 / 10000 * 50000 / 50 = 40
    assert v[("A", "cells/lymphocytes")] == pytest.approx(250.0)
    assert v[("A", "cells/lymphocytes/NK cells")] == pytest.approx(40.0)
    # 1000 / 5000 * 48500 / 50 = 194
    assert v[("B", "cells/lymphocytes")] == pytest.approx(194.0)
    reason = dict(zip(zip(out["sample_id"], out["population"], strict=True), out["absolute_reason"],
                      strict=True))
    assert math.isnan(v[("B", "cells/lymphocytes/NK cells")])
    assert "failed" in reason[("B", "cells/lymphocytes/NK cells")]
    assert math.isnan(v[("C", "cells/lymphocytes")])
    assert "no bead events" in reason[("C", "cells/lymphocytes")]
    assert math.isnan(v[("D", "cells/lymphocytes")])
    assert "no counting-bead" in reason[("D", "cells/lymphocytes")]
    assert math.isnan(v[("A", "beads")]) and reason[("A", "beads")] == "the counting beads themselves"
    assert reason[("A", "cells/lymphocytes")] == ""
    assert set(out["absolute_method"]) == {"beads"}
    assert list(out.columns[:5]) == ["sample_id", "woman_id", "tube", "population", "count"]


def test_bead_method_per_sample_volume_series_and_missing_figures():
    t = _table()
    vols = pd.Series({"A": 100.0, "B": 0.0})
    out = absolute_counts(t, bead_population="beads", beads_per_test=pd.Series({"A": 50_000.0}),
                          volume_ul=vols)
    a = out[(out["sample_id"] == "A") & (out["population"] == "cells/lymphocytes")].iloc[0]
    assert a["cells_per_ul"] == pytest.approx(2500 / 10000 * 50000 / 100)  # 125
    b = out[(out["sample_id"] == "B") & (out["population"] == "cells/lymphocytes")].iloc[0]
    assert math.isnan(b["cells_per_ul"]) and "beads-per-test" in b["absolute_reason"]
    out2 = absolute_counts(t, bead_population="beads", beads_per_test=50_000, volume_ul=vols)
    b2 = out2[(out2["sample_id"] == "B") & (out2["population"] == "cells/lymphocytes")].iloc[0]
    assert math.isnan(b2["cells_per_ul"]) and "not positive" in b2["absolute_reason"]


def test_bead_population_by_last_segment():
    t = _table()
    t["population"] = t["population"].str.replace("beads", "qc/TruCount beads", regex=False)
    out = absolute_counts(t, bead_population="TruCount beads", beads_per_test=50_000, volume_ul=50)
    a = out[(out["sample_id"] == "A") & (out["population"] == "cells/lymphocytes")].iloc[0]
    assert a["cells_per_ul"] == pytest.approx(250.0)


def test_volumetric_hand_computed():
    t = _table()
    # $VOL 25,000 nL = 25 µL acquired: 2500 / 25 = 100 cells/µL; dilution 2 doubles it
    out = volumetric_counts(t, vol_nl={"A": 25_000.0, "B": None, "C": -1.0}, dilution={"A": 2.0, "C": 1.0})
    a = out[(out["sample_id"] == "A") & (out["population"] == "cells/lymphocytes")].iloc[0]
    assert a["cells_per_ul"] == pytest.approx(2500 / 25 * 2)
    b = out[(out["sample_id"] == "B") & (out["population"] == "cells/lymphocytes")].iloc[0]
    assert math.isnan(b["cells_per_ul"]) and "no $VOL" in b["absolute_reason"]
    c = out[(out["sample_id"] == "C") & (out["population"] == "cells/lymphocytes")].iloc[0]
    assert math.isnan(c["cells_per_ul"]) and "not positive" in c["absolute_reason"]
    plain = volumetric_counts(t, vol_nl=50_000.0)
    d = plain[(plain["sample_id"] == "D")].iloc[0]
    assert d["cells_per_ul"] == pytest.approx(800 / 50.0)
    assert set(plain["absolute_method"]) == {"volumetric"}


def test_vol_keyword_from_fcs(tmp_path):
    import numpy as np

    from flowtools.io.fcs import read_fcs
    from flowtools.io.fcs_write import write_fcs

    p = write_fcs(tmp_path / "v.fcs", np.ones((10, 2), np.float32), ["FSC-A", "SSC-A"],
                  keywords={"$VOL": "12500"})
    assert vol_nl(read_fcs(p).keywords) == 12500.0
    assert vol_nl({}) is None
    assert vol_nl({"$VOL": "n/a"}) is None


def test_per_woman_absolute_and_errors():
    out = absolute_counts(_table(), bead_population="beads", beads_per_test=50_000, volume_ul=50)
    wide = per_woman_absolute(out)
    assert list(wide["woman_id"]) == ["W1", "W2"]
    w1 = wide[wide["woman_id"] == "W1"].iloc[0]
    assert w1["TBNK-NK|cells/lymphocytes|cells_per_ul"] == pytest.approx(250)
    with pytest.raises(ValueError, match="count"):
        absolute_counts(_table().drop(columns="count"), bead_population="beads", beads_per_test=1,
                        volume_ul=1)


def test_add_absolute_counts_on_plain_rows():
    """The batch-run flavour: plain dict rows, bead method where beads exist, else $VOL, else NaN + why."""
    rows = _table().to_dict("records")
    add_absolute_counts(rows, bead_population={"A": "beads", "B": "beads"},
                        beads_per_test={"A": 50_000, "B": 48_500}, volume_ul=50.0,
                        vol_nl={"C": 9_000.0})
    got = {(r["sample_id"], r["population"]): r for r in rows}
    assert got[("A", "cells/lymphocytes")]["cells_per_ul"] == pytest.approx(250.0)
    assert got[("A", "cells/lymphocytes")]["absolute_method"] == "beads"
    assert got[("B", "cells/lymphocytes")]["cells_per_ul"] == pytest.approx(194.0)
    assert got[("C", "cells/lymphocytes")]["cells_per_ul"] == pytest.approx(900 / 9.0)  # 100 cells/µL
    assert got[("C", "cells/lymphocytes")]["absolute_method"] == "volumetric"
    d = got[("D", "cells/lymphocytes")]
    assert math.isnan(d["cells_per_ul"]) and "no $VOL" in d["absolute_reason"] and d["absolute_method"] == ""
    wide = per_woman_absolute(rows)
    assert wide["woman_id"] == ["W1", "W2", "W3"]
    assert wide["TBNK-NK|cells/lymphocytes|cells_per_ul"] == pytest.approx([250.0, 194.0, 100.0])
