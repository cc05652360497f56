"""Synthetic follow-up database: valid, consistent with the cohort's planted outcome, reproducible."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from flowtools.io.clinical_db import read_followup
from flowtools.synth import make_cohort
from flowtools.synth.followup import make_followup


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    d = tmp_path_factory.mktemp("fu_cohort")
    make_cohort(d, n_women=160, seed=3, write_fcs=False)
    return d


def test_followup_valid_and_consistent(cohort, tmp_path):
    r = make_followup(cohort, tmp_path / "f", seed=1)
    db = read_followup(tmp_path / "f")
    sq = read_followup(r.sqlite)
    pd.testing.assert_frame_equal(db.women, sq.women)
    pd.testing.assert_frame_equal(db.episodes, sq.episodes)
    assert len(db.women) == 160
    truth = json.loads(r.truth_json.read_text())
    lost = np.mean([w["lost_to_followup"] for w in truth["women"].values()])
    assert 0.08 < lost < 0.30
    fu = (db.women["followup_end"] - db.women["recruitment_date"]).dt.days / 30.4375
    assert fu.min() > 5 and fu.max() < 37
    # the first pregnancy's outcome of an RM woman is the cohort's planted next_pregnancy_loss
    clin = pd.read_csv(cohort / "clinical.csv", dtype=str, keep_default_na=False).set_index("woman_id")
    first = db.episodes.groupby("woman_id").first()
    done = first[first["outcome"] != "ongoing"]
    rm = [w for w in done.index if clin.loc[w, "group"] == "RM"]
    assert len(rm) > 20
    for w in rm:
        assert (done.loc[w, "outcome"] != "live_birth") == (clin.loc[w, "next_pregnancy_loss"] == "1")
    # realistic conception: median time to the first pregnancy of several months
    from flowtools.stats.survival import derive_outcomes

    o = derive_outcomes(db)
    med = o.loc[o["ttp_event"] == 1, "ttp_months"].median()
    assert 2 < med < 9
    assert set(db.episodes["outcome"]) >= {"loss", "live_birth", "ongoing"}


def test_followup_reproducible(cohort, tmp_path):
    make_followup(cohort / "clinical.csv", tmp_path / "a", seed=5)
    make_followup(cohort, tmp_path / "b", seed=5)
    for name in ("women.csv", "episodes.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    c = make_followup(cohort, tmp_path / "c", seed=6, write=False)
    assert not (tmp_path / "c").exists()
    assert c.db.episodes.shape != (0, 4)


def test_followup_parameters_checked(cohort, tmp_path):
    with pytest.raises(ValueError, match="loss_to_followup"):
        make_followup(cohort, tmp_path / "x", loss_to_followup=1.5)


def test_planted_immune_effect_on_conception(cohort, tmp_path):
    """Planted cohort: fecundability x 0.5 in the subgroup and x exp(-0.35 z_NK) for all, as documented."""
    from flowtools.synth.followup import IMMUNE_FECUNDABILITY_HR, NK_FECUNDABILITY_LOG_HR

    on = json.loads(make_followup(cohort, tmp_path / "on", seed=2).truth_json.read_text())
    off = json.loads(
        make_followup(
            cohort, tmp_path / "off", seed=2, immune_fecundability_hr=1.0, nk_fecundability_log_hr=0.0
        ).truth_json.read_text()
    )
    assert on["parameters"]["immune_fecundability_hr"] == IMMUNE_FECUNDABILITY_HR == 0.5
    assert on["parameters"]["nk_fecundability_log_hr_per_sd"] == NK_FECUNDABILITY_LOG_HR == -0.35
    sub = set(json.loads((cohort / "truth" / "effects.json").read_text())["immune_subgroup"])
    assert len(sub) > 10
    for wid, w in on["women"].items():
        f_off = off["women"][wid]["fecundability"]
        if f_off < 0.01 or w["fecundability"] < 0.01:
            continue  # clipped at 1e-4 or rounded to 5 digits: the ratio is not exact
        expect = (0.5 if wid in sub else 1.0) * np.exp(-0.35 * np.log(w["nk_pct_of_lymphocytes"] / 10) / 0.35)
        assert w["fecundability"] / f_off == pytest.approx(expect, rel=2e-3), wid
        assert w["immune_subgroup"] == (wid in sub)
    assert on["immune_effect_on_time_to_live_birth"].startswith("fecundability x 0.5")


def test_null_cohort_has_no_immune_effect(tmp_path):
    make_cohort(tmp_path / "n", n_women=30, seed=4, null=True, write_fcs=False)
    r = make_followup(tmp_path / "n", tmp_path / "fu", seed=1)
    truth = json.loads(r.truth_json.read_text())
    assert truth["parameters"]["immune_fecundability_hr"] == 1.0
    assert truth["parameters"]["nk_fecundability_log_hr_per_sd"] == 0.0
    assert truth["immune_effect_on_time_to_live_birth"] == "none (null cohort)"
    # exactly the database of an explicit "no effect"
    same = make_followup(
        tmp_path / "n", tmp_path / "fu2", seed=1, immune_fecundability_hr=1.0, nk_fecundability_log_hr=0.0
    )
    pd.testing.assert_frame_equal(r.db.episodes, same.db.episodes)
    with pytest.raises(ValueError, match="null cohort has no immune effect"):
        make_followup(tmp_path / "n", tmp_path / "x", immune_fecundability_hr=0.5)
    with pytest.raises(ValueError, match="null cohort has no immune effect"):
        make_followup(tmp_path / "n", tmp_path / "x", nk_fecundability_log_hr=-0.35)
