"""Bead identification: groups, regions, a shifted region, a missing region, few beads, absent channels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flowtools.beads.identify import identify_well, match_peaks, reference_positions
from flowtools.beads.template import load_panel
from flowtools.errors import BeadAssayError
from flowtools.io.fcs_write import write_fcs


def _truth(bead_plate):
    return json.loads(bead_plate.truth_json.read_text())


def test_match_peaks_leaves_a_missing_region_unmatched():
    expected = np.array([1.0, 2.0, 3.0, 4.0])
    pairs, off = match_peaks(np.array([1.1, 2.1, 4.1]), expected)  # drift +0.1, region 3 absent
    assert pairs == [0, 1, -1, 2]
    assert off == pytest.approx(0.1)


def test_match_peaks_keeps_a_shifted_region_and_ignores_an_extra_peak():
    pairs, off = match_peaks(np.array([1.0, 2.3, 2.6, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 4.0]))
    assert pairs == [0, 1, 3, 4]
    assert off == pytest.approx(0.0)


def test_reference_positions_pool_complete_wells_only():
    sets = [np.array([1.0, 2.0, 3.0]), np.array([1.2, 2.2, 3.2]), np.array([1.0, 3.0])]
    np.testing.assert_allclose(reference_positions(sets, 3), [1.1, 2.1, 3.1])
    assert reference_positions(sets[2:], 3) is None


def test_plate_identification_is_clean_on_normal_wells(bead_run):
    normal = [sid for sid, wi in bead_run.identification.items() if not any(wi.flags.values())]
    assert len(normal) >= len(bead_run.identification) - 3
    wi = bead_run.identification[normal[0]]
    assert min(wi.beads.values()) > 150
    # debris and doublets are left out by the scatter step
    assert 0.08 <= wi.scatter["left_out"] / wi.scatter["events"] <= 0.2


def test_missing_region_is_flagged_not_reassigned(bead_plate, bead_run):
    t = _truth(bead_plate)["failed_region"]
    wi = bead_run.identification[t["sample_id"]]
    assert wi.flags[t["analyte"]] == ["missing"]
    assert wi.beads[t["analyte"]] == 0 and np.isnan(wi.mfi[t["analyte"]])
    others = [b for a, b in wi.beads.items() if a != t["analyte"]]
    assert min(others) > 150 and max(others) < 450  # no neighbour swallowed the empty region
    row = next(
        r for r in bead_run.well_rows if r["sample_id"] == t["sample_id"] and r["analyte"] == t["analyte"]
    )
    assert "missing" in row["flag"] and np.isnan(row["concentration"])


def test_shifted_region_is_found_and_flagged(bead_plate, bead_run):
    t = _truth(bead_plate)["shifted_region"]
    wi = bead_run.identification[t["sample_id"]]
    assert "shifted" in wi.flags[t["analyte"]]
    assert wi.beads[t["analyte"]] > 150
    row = next(
        r for r in bead_run.well_rows if r["sample_id"] == t["sample_id"] and r["analyte"] == t["analyte"]
    )
    assert np.isfinite(row["mfi"])


def test_region_with_few_beads_is_flagged(bead_plate, bead_run):
    t = _truth(bead_plate)["sparse_region"]
    wi = bead_run.identification[t["sample_id"]]
    assert "few_beads" in wi.flags[t["analyte"]]
    assert 10 <= wi.beads[t["analyte"]] < 35
    row = next(
        r for r in bead_run.well_rows if r["sample_id"] == t["sample_id"] and r["analyte"] == t["analyte"]
    )
    assert "few_beads" in row["flag"] and np.isnan(row["concentration"])


def test_reporter_channel_absent_names_the_file(bead_plate, tmp_path):
    path = tmp_path / "no_pe.fcs"
    write_fcs(path, np.ones((50, 3), dtype=np.float32), ["FSC-A", "SSC-A", "APC-A"])
    with pytest.raises(BeadAssayError) as exc:
        identify_well(path, load_panel(bead_plate.panel))
    assert str(path) in str(exc.value) and "'PE-A'" in str(exc.value) and "reporter" in str(exc.value)


def test_template_positions_resolve_a_single_well(bead_plate):
    """Without a plate, the template's positions are the reference; the absent region is still flagged."""
    import yaml

    from flowtools.beads.template import panel_from_dict

    d = yaml.safe_load(bead_plate.panel.read_text())
    for g, pos in zip(d["groups"], ([2.2, 4.3, 6.4], [2.2, 6.4]), strict=True):
        for r, p in zip(g["regions"], pos, strict=True):
            r["position"] = p
    panel = panel_from_dict(d, "positions.yaml")
    t = _truth(bead_plate)["failed_region"]
    wi = identify_well(bead_plate.out_dir / "fcs" / f"{t['sample_id']}.fcs", panel)
    assert wi.groups[0].reference == "template"
    assert {a for a, f in wi.flags.items() if f} == {t["analyte"]}
    assert wi.flags[t["analyte"]] == ["missing"]


def test_peak_finder_matches_scipy_find_peaks():
    """The plain-numpy peak finder gives scipy.signal.find_peaks' peaks and prominences."""
    from scipy.signal import find_peaks

    from flowtools.beads.identify import _peaks

    rng = np.random.default_rng(0)
    bump = 20 * np.exp(-0.5 * ((np.arange(160) - 50) / 4) ** 2)
    for t in range(100):
        h = np.convolve(rng.poisson(5, 160) + (t % 7) * bump, np.ones(3) / 3, mode="same")
        if t % 5 == 0:
            h = np.round(h)  # plateaus
        ours, prom = _peaks(h, 0.06 * h.max(), 3)
        ref, props = find_peaks(h, prominence=0.06 * h.max(), distance=3)
        np.testing.assert_array_equal(ours, ref)
        np.testing.assert_allclose(prom, props["prominences"])


def test_match_peaks_property():
    """Any drift under a fifth of a gap, with one region absent or one shifted, is matched right."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=150, deadline=None)
    @given(
        gaps=st.lists(st.floats(0.5, 1.5), min_size=2, max_size=7),
        drift=st.floats(-0.19, 0.19),
        which=st.integers(0, 7),
        missing=st.booleans(),
        shift=st.floats(-0.3, 0.3),
        seed=st.integers(0, 10_000),
    )
    def check(gaps, drift, which, missing, shift, seed):  # noqa: FBT001 - hypothesis argument
        expected = np.concatenate([[2.0], 2.0 + np.cumsum(gaps)])
        n = len(expected)
        j = which % n
        noise = np.random.default_rng(seed).normal(0, 0.01, n)
        found = expected + drift * min(gaps) + noise
        if missing:
            found = np.delete(found, j)
        else:
            local = min(g for k, g in enumerate(gaps) if k in (j - 1, j))
            found[j] += shift * local
        pairs, _ = match_peaks(found, expected)
        want = [k - (k > j) if missing else k for k in range(n)]
        if missing:
            want[j] = -1
        assert pairs == want

    check()
