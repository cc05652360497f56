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
