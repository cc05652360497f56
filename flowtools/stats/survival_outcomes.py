"""Outcomes derived from the follow-up database's episodes, and the clinical feature block.

See :mod:`flowtools.stats.survival` for the definitions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from flowtools.io.clinical_db import FollowupDB

__all__ = [
    "CLINICAL_FEATURES",
    "COMPETING_OUTCOMES",
    "MONTH_DAYS",
    "OUTCOMES",
    "binary_clinical",
    "clinical_features",
    "derive_outcomes",
]

MONTH_DAYS = 30.4375
OUTCOMES = {
    "time_to_live_birth": ("ttlb_months", "ttlb_event"),
    "time_to_pregnancy": ("ttp_months", "ttp_event"),
    "first_pregnancy": ("fp_months", "fp_event"),
}
# Outcomes with competing events (event codes 0 / 1 / 2): modelled by cause-specific Cox hazards, the risk
# is the predicted cumulative incidence of cause 1 (live birth; flowtools.stats.survival_competing).
COMPETING_OUTCOMES = ("first_pregnancy",)
CLINICAL_FEATURES = ("age", "bmi", "prior_losses", "prior_live_births", "pcos", "current_smoker", "rm")


def derive_outcomes(db: FollowupDB) -> pd.DataFrame:
    """One row per woman: the outcomes of the module docstring, derived from the episodes.

    Parameters
    ----------
    db : FollowupDB
        A validated database (:func:`flowtools.io.clinical_db.read_followup`).

    Returns
    -------
    pandas.DataFrame
        Index ``woman_id``; columns ``group``, ``followup_months``,
        ``n_episodes``, ``ttlb_months``, ``ttlb_event``, ``fp_months``,
        ``fp_event`` (0/1/2), ``ttp_months``, ``ttp_event``,
        ``first_pregnancy_loss`` (float, NaN where undefined).
    """
    w = db.women.set_index("woman_id")
    e = db.episodes.sort_values(["woman_id", "episode_date"], kind="stable")
    rec, end = w["recruitment_date"], w["followup_end"]
    fu = (end - rec).dt.days.to_numpy(float) / MONTH_DAYS
    out = pd.DataFrame(
        {"group": w["group"].to_numpy(), "followup_months": fu}, index=pd.Index(w.index, name="woman_id")
    )
    out["n_episodes"] = e.groupby("woman_id").size().reindex(w.index).fillna(0).astype(int).to_numpy()
    months = ((e["episode_date"] - e["woman_id"].map(rec)).dt.days / MONTH_DAYS).to_numpy(float)
    e = e.assign(months=months)
    lb = e[e["outcome"] == "live_birth"].groupby("woman_id")["months"].min().reindex(w.index)
    out["ttlb_event"] = lb.notna().astype(int).to_numpy()
    out["ttlb_months"] = np.where(lb.notna(), lb.to_numpy(float), fu)
    first = e.groupby("woman_id").first().reindex(w.index)
    ended = first["outcome"].isin(["loss", "stillbirth", "live_birth"]).to_numpy()
    out["fp_event"] = np.where(ended, np.where(first["outcome"] == "live_birth", 1, 2), 0).astype(int)
    out["fp_months"] = np.where(
        ended,
        first["months"].to_numpy(float),
        np.where(first["months"].notna(), first["months"].to_numpy(float), fu),
    )
    conc = first["months"].to_numpy(float) - (first["gestational_weeks"].to_numpy(float) - 2) * 7 / MONTH_DAYS
    has = first["outcome"].notna().to_numpy()
    # at least one day after recruitment: a duration of zero is no time at risk
    out["ttp_months"] = np.where(has, np.maximum(conc, 1 / MONTH_DAYS), fu)
    out["ttp_event"] = has.astype(int)
    out["first_pregnancy_loss"] = np.where(ended, (first["outcome"] != "live_birth").astype(float), np.nan)
    return out


def clinical_features(db: FollowupDB) -> pd.DataFrame:
    """The clinical feature block (index ``woman_id``, float64, NaN for missing BMI/smoking)."""
    w = db.women.set_index("woman_id")
    smoke = w["smoking"].astype(str)
    out = pd.DataFrame(
        {
            "age": w["age"].astype(float),
            "bmi": w["bmi"].astype(float),
            "prior_losses": w["prior_losses"].astype(float),
            "prior_live_births": w["prior_live_births"].astype(float),
            "pcos": w["pcos"].astype(float),
            "current_smoker": np.where(smoke == "", np.nan, (smoke == "current").astype(float)),
            "rm": (w["group"] == "rm").astype(float),
        },
        index=w.index,
    )
    return out[list(CLINICAL_FEATURES)]


def binary_clinical(db: FollowupDB) -> pd.DataFrame:
    """A clinical table for :func:`~flowtools.stats.predict.evaluate_models` (task ``next_loss``).

    ``next_pregnancy_loss`` is ``first_pregnancy_loss`` of :func:`derive_outcomes`;
    women without a completed first pregnancy are left out (their outcome is unknown).
    """
    o = derive_outcomes(db)
    w = db.women.set_index("woman_id")
    keep = o["first_pregnancy_loss"].notna()
    out = pd.DataFrame(
        {
            "woman_id": w.index[keep],
            "group": np.where(w["group"][keep] == "rm", "RM", "control"),
            "age": w["age"][keep].to_numpy(),
            "bmi": w["bmi"][keep].to_numpy(),
            "n_prior_losses": w["prior_losses"][keep].to_numpy(),
            "next_pregnancy_loss": o["first_pregnancy_loss"][keep].astype(int).to_numpy(),
        }
    )
    out.attrs["source"] = db.source
    return out
