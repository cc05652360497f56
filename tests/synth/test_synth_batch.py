"""Synthetic batch effects: plates, anchors on every plate, confounding, the truth written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flowtools.io.fcs import read_fcs
from flowtools.io.sample_sheet import check_anchors, read_sample_sheet
from flowtools.synth.batch import batch_effect, make_batch_cohort


def test_batch_effect_is_monotone() -> None:
    y = np.linspace(-3, 9, 5001)
    for shift, scale, bend in [(0.4, 0.29, -0.29), (-0.5, -0.29, 0.29), (0.0, 0.0, 0.0)]:
        assert np.all(np.diff(batch_effect(y, shift, scale, bend)) > 0)
    np.testing.assert_allclose(batch_effect(y, 0, 0, 0), y)


def test_make_batch_cohort(tmp_path: Path) -> None:
    res = make_batch_cohort(tmp_path / "c", n_plates=3, n_women=6, events=1000, seed=2)
    sheet = read_sample_sheet(res.samples_csv)
    assert len(sheet) == 2 * 6 + 2 * 3
    anchors = check_anchors(sheet, tube="TBNK-NK")
    assert sorted(anchors) == ["P01", "P02", "P03"]
    assert {r.anchor_id for rows in anchors.values() for r in rows} == {"D001"}
    truth = json.loads(res.truth_json.read_text())
    assert set(truth["plates"]) == {"P01", "P02", "P03"}
    assert "CD3" in truth["plates"]["P01"]["markers"]["TBNK-NK"]
    assert all(w["plate"] in truth["plates"] for w in truth["women"].values())
    # the same seed: the same files
    again = make_batch_cohort(tmp_path / "d", n_plates=3, n_women=6, events=1000, seed=2)
    a = read_fcs(res.anchor_files[0]).events
    b = read_fcs(again.anchor_files[0]).events
    np.testing.assert_array_equal(a, b)


def test_effects_off_keeps_the_biology(tmp_path: Path) -> None:
    from flowtools.synth import make_cohort

    base = make_cohort(tmp_path / "base", n_women=3, events=800, seed=4, artefacts=False)
    res = make_batch_cohort(tmp_path / "b", n_plates=1, n_women=3, events=800, seed=4, effect_size=0.0)
    f = "fcs/S0001-TBNK.fcs"
    np.testing.assert_allclose(read_fcs(res.out_dir / f).events, read_fcs(base.out_dir / f).events,
                               rtol=1e-4, atol=0.05)
    women = "truth/women.csv"
    assert (res.out_dir / women).read_bytes() == (base.out_dir / women).read_bytes()


def test_confounded_plates(tmp_path: Path) -> None:
    res = make_batch_cohort(tmp_path / "c", n_plates=2, n_women=8, events=500, seed=0, confound=1.0,
                            effect_size=0.5)
    truth = json.loads(res.truth_json.read_text())
    by_plate: dict[str, set[str]] = {}
    for w in truth["women"].values():
        by_plate.setdefault(w["plate"], set()).add(w["group"])
    assert by_plate["P01"] == {"RM"} and by_plate["P02"] == {"control"}


def test_bad_parameters(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_women"):
        make_batch_cohort(tmp_path / "x", n_plates=4, n_women=2)
    with pytest.raises(ValueError, match="confound"):
        make_batch_cohort(tmp_path / "y", n_plates=1, n_women=2, confound=2.0)
