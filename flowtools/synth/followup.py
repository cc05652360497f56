"""Synthetic follow-up database for a synthetic cohort: conceptions, pregnancy outcomes, censoring.

:func:`make_followup` reads a cohort's ``clinical.csv`` (and its ``truth/``)
and writes the follow-up database of :mod:`flowtools.io.clinical_db`::

    women.csv, episodes.csv    the two tables (CSV)
    followup.sqlite            the same tables in a SQLite file
    truth/followup.json        the planted model, its parameters and each woman's hidden state

The generating model (each woman independent, her own random stream):

* **Follow-up**: recruitment on the cohort's acquisition date; planned follow-up
  of 24-36 months (uniform) with a visit every 6 months; with probability
  ``loss_to_followup`` a woman stops attending after a random visit (at least
  one visit is attended). ``followup_end`` is the last visit attended; what
  happens after it is not recorded.
* **Conception**: per-cycle fecundability ``f = f0 * exp(-0.07 * max(age - 30, 0))
  * 0.7 [PCOS] * 0.8 [current smoker] * frailty`` (``f0 = 0.18``, gamma frailty
  with mean 1 and variance 0.3), 28-day cycles; a median time to pregnancy of
  about 4-5 months at cohort ages.
* **First pregnancy after recruitment**: for RM women the outcome is the
  cohort's own planted ``next_pregnancy_loss`` (logistic in prior losses, age
  band and the immune term of ``truth/effects.json``), so the binary task and
  this database agree; controls lose it with the age-band risk around 12%.
  A pregnancy that is not lost ends in a stillbirth with probability 0.5%.
* **Later pregnancies**: after a loss, 1-3 months until trying again; the loss
  risk follows the cohort's logistic model with the new count of losses (the
  same immune term for RM women). After a live birth, half stop trying; the
  others try again after 9-15 months.
* **Recording**: an episode is recorded at its end date if that is not after
  the follow-up end; a pregnancy of at least 6 weeks at the follow-up end is
  recorded as ``ongoing`` on that date.

* **Immune effect on time to live birth** (planted cohorts only), on the
  per-cycle conception hazard, in every attempt, from the immune truth the
  cohort already has: fecundability ``x immune_fecundability_hr`` (default
  ``IMMUNE_FECUNDABILITY_HR`` = 0.5) for a woman of the immune subgroup
  (``truth/effects.json`` ``immune_subgroup``: the women whose immune shares
  carry the planted effects), and ``x exp(nk_fecundability_log_hr * log(NK % /
  10) / 0.35)`` (default ``NK_FECUNDABILITY_LOG_HR`` = -0.35: a hazard ratio
  of 0.70 per SD of log NK % of lymphocytes, the cohort's expected NK share of
  ``truth/women.csv``; the scale of the loss model's NK term) for every woman.
  With the loss model's immune term alone the immune block added nothing
  measurable to the time to live birth (gain in C +0.002 at 200 women); with
  the defaults, Cox models fitted on 2,000 women gain about 0.04 in Harrell C
  on another 2,000 (0.62 -> 0.66). The first pregnancy's outcome is not
  changed (it stays the cohort's ``next_pregnancy_loss``). A null cohort
  (``make_cohort(null=True)``) has no immune effect on anything: the ratio is
  exactly 1 and the NK coefficient exactly 0, and any other value is refused.
  The truth records both and each woman's fecundability.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flowtools.io.clinical_db import FollowupDB, write_followup
from flowtools.provenance import atomic_write_text, provenance_record
from flowtools.synth.cohort import _AGE_BANDS, _AGE_LOG_OR, _NK_LOG_SD, _outcome_logit

__all__ = ["IMMUNE_FECUNDABILITY_HR", "NK_FECUNDABILITY_LOG_HR", "FollowupResult", "make_followup"]

_F0 = 0.18
_AGE_DECLINE = 0.07
_PCOS_RR = 0.7
_SMOKING_RR = 0.8
_FRAILTY_VAR = 0.3
_CYCLE_DAYS = 28
_CONTROL_LOSS_RISK = 0.12
_STILLBIRTH_RISK = 0.005
_MONTH = 30.4375
# Per-cycle conception hazard ratio of the immune subgroup in planted cohorts (see the module docstring).
IMMUNE_FECUNDABILITY_HR = 0.5
NK_FECUNDABILITY_LOG_HR = -0.35  # per SD of log NK % (the cohort's _NK_LOG_SD)


@dataclass(frozen=True)
class FollowupResult:
    """What :func:`make_followup` wrote.

    Attributes
    ----------
    out_dir, women_csv, episodes_csv, sqlite, truth_json : pathlib.Path
    db : FollowupDB
        The tables written (typed frames).
    n_women, n_episodes, n_lost : int
    """

    out_dir: Path
    women_csv: Path
    episodes_csv: Path
    sqlite: Path
    truth_json: Path
    db: FollowupDB
    n_women: int
    n_episodes: int
    n_lost: int


def _read_cohort(source: Path) -> tuple[object, dict, dict[str, float]]:
    import pandas as pd

    clinical_csv = source / "clinical.csv" if source.is_dir() else source
    truth = clinical_csv.parent / "truth"
    clin = pd.read_csv(clinical_csv, dtype=str, keep_default_na=False)
    effects = {}
    if (truth / "effects.json").is_file():
        effects = json.loads((truth / "effects.json").read_text(encoding="utf-8"))
    nk: dict[str, float] = {}
    if (truth / "women.csv").is_file():
        tw = pd.read_csv(truth / "women.csv", dtype={"woman_id": str})
        sel = tw[(tw["population"] == "Singlets/Live/Lymphocytes/NK cells") & (tw["tube"] == "TBNK-NK")]
        nk = dict(zip(sel["woman_id"], sel["expected_pct_parent"].astype(float), strict=False))
    return clin, effects, nk


def _months(rng: np.random.Generator, lo: float, hi: float) -> int:
    return int(round(rng.uniform(lo, hi) * _MONTH))


def make_followup(
    cohort: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    loss_to_followup: float = 0.18,
    followup_months: tuple[float, float] = (24.0, 36.0),
    visit_months: float = 6.0,
    fecundability: float = _F0,
    immune_fecundability_hr: float | None = None,
    nk_fecundability_log_hr: float | None = None,
    write: bool = True,
) -> FollowupResult:
    """Write a synthetic follow-up database (CSV + SQLite) and its truth for a cohort.

    Parameters
    ----------
    cohort : str or PathLike
        A cohort folder (:func:`flowtools.synth.make_cohort`) or its ``clinical.csv``.
    out_dir : str or PathLike
        Folder for women.csv, episodes.csv, followup.sqlite and truth/followup.json.
    seed : int, default 0
    loss_to_followup : float, default 0.18
        Probability that a woman stops attending before the planned end.
    followup_months : (float, float), default (24, 36)
        Range of the planned follow-up (uniform).
    visit_months : float, default 6
    fecundability : float, default 0.18
        Per-cycle probability of conception at age <= 30 (no PCOS, non-smoker, frailty 1).
    immune_fecundability_hr : float, optional
        Multiplier of fecundability for the cohort's immune subgroup. Default:
        ``IMMUNE_FECUNDABILITY_HR`` (0.5) for a planted cohort, 1 (none) for a
        null cohort, where any other value is an error (a null cohort stays null).
    nk_fecundability_log_hr : float, optional
        Log hazard ratio of conception per SD (0.35) of log NK % of
        lymphocytes (every woman). Default: ``NK_FECUNDABILITY_LOG_HR`` (-0.35)
        for a planted cohort, 0 for a null cohort (any other value refused).
    write : bool, default True
        False: build the tables in memory only (``result.db``; nothing is
        written, for benchmarks drawing many cohorts).

    Returns
    -------
    FollowupResult
    """
    import pandas as pd

    if not 0.0 <= loss_to_followup < 1.0:
        msg = f"loss_to_followup must be in [0, 1), not {loss_to_followup}"
        raise ValueError(msg)
    if not 0.0 < fecundability < 1.0:
        msg = f"fecundability must be in (0, 1), not {fecundability}"
        raise ValueError(msg)
    src = Path(cohort)
    clin, effects, nk = _read_cohort(src)
    null = bool(effects.get("null", False))
    subgroup = set(effects.get("immune_subgroup", []))
    if immune_fecundability_hr is None:
        immune_fecundability_hr = 1.0 if null else IMMUNE_FECUNDABILITY_HR
    if not 0.0 < float(immune_fecundability_hr) <= 20.0:
        msg = f"immune_fecundability_hr must be in (0, 20], not {immune_fecundability_hr}"
        raise ValueError(msg)
    if null and immune_fecundability_hr != 1.0:
        msg = (
            f"{src}: a null cohort has no immune effect; immune_fecundability_hr must be 1, "
            f"not {immune_fecundability_hr}"
        )
        raise ValueError(msg)
    immune_fecundability_hr = float(immune_fecundability_hr)
    if nk_fecundability_log_hr is None:
        nk_fecundability_log_hr = 0.0 if null else NK_FECUNDABILITY_LOG_HR
    if null and nk_fecundability_log_hr != 0.0:
        msg = f"{src}: a null cohort has no immune effect; nk_fecundability_log_hr must be 0"
        raise ValueError(msg)
    nk_fecundability_log_hr = float(nk_fecundability_log_hr)
    out = Path(out_dir)
    n = len(clin)
    streams = np.random.SeedSequence([int(seed), 19]).spawn(n)
    women_rows, ep_rows, hidden = [], [], {}
    for row, ss in zip(clin.to_dict("records"), streams, strict=True):
        rng = np.random.default_rng(ss)
        wid = str(row["woman_id"])
        rm = str(row["group"]).strip().upper() == "RM"
        age = float(row["age"])
        losses = int(float(row["n_prior_losses"] or 0))
        rm_type = str(row.get("rm_type", "") or "").strip() or ("primary" if rm else "none")
        if not rm:
            rm_type = "none"
        prior_lb = (
            int(rng.choice([1, 2], p=[0.75, 0.25]))
            if rm_type == "secondary"
            else (0 if rm else int(rng.choice([0, 1, 2], p=[0.6, 0.3, 0.1])))
        )
        pcos = bool(rng.random() < (0.10 if rm else 0.08))
        smoking = str(row.get("smoking", "") or "")
        immune = wid in subgroup
        rec = _dt.date.fromisoformat(str(row["acquisition_date"]))
        planned = rng.uniform(*followup_months)
        n_visits = max(1, int(planned // visit_months))
        lost = bool(rng.random() < loss_to_followup) and n_visits > 1
        attended = int(rng.integers(1, n_visits)) if lost else n_visits
        end = rec + _dt.timedelta(days=int(round(attended * visit_months * _MONTH)))
        frailty = rng.gamma(1 / _FRAILTY_VAR, _FRAILTY_VAR)
        f_base = fecundability * np.exp(-_AGE_DECLINE * max(age - 30.0, 0.0)) * frailty
        f_base *= (_PCOS_RR if pcos else 1.0) * (_SMOKING_RR if smoking == "current" else 1.0)
        f_base *= immune_fecundability_hr if immune else 1.0
        nk_pct = float(nk.get(wid, 10.0))
        f_base *= float(np.exp(nk_fecundability_log_hr * np.log(nk_pct / 10.0) / _NK_LOG_SD))
        f_base = float(np.clip(f_base, 1e-4, 0.95))
        first_loss = str(row.get("next_pregnancy_loss", "")).strip()
        t = rec + _dt.timedelta(days=int(rng.integers(0, _CYCLE_DAYS)))  # start of her first cycle
        k, n_loss_now, trying = 0, losses, True
        episodes = []
        horizon = rec + _dt.timedelta(days=int(round(followup_months[1] * _MONTH)) + 400)
        while trying and t < horizon:
            cycles = int(rng.geometric(f_base))
            conception = t + _dt.timedelta(days=(cycles - 1) * _CYCLE_DAYS + 14)
            age_now = age + (conception - rec).days / 365.25
            if k == 0 and rm and first_loss in ("0", "1"):
                is_loss = first_loss == "1"
            else:
                if rm:
                    logit = float(
                        _outcome_logit(
                            np.array([age_now]),
                            np.array([min(n_loss_now, 6)]),
                            np.array([float(immune)]),
                            np.array([nk_pct]),
                            null=null,
                        )[0]
                    )
                else:
                    band = int(np.searchsorted(_AGE_BANDS, age_now, side="right"))
                    logit = float(np.log(_CONTROL_LOSS_RISK / (1 - _CONTROL_LOSS_RISK)) + _AGE_LOG_OR[band])
                is_loss = bool(rng.random() < 1 / (1 + np.exp(-logit)))
            if is_loss:
                weeks = float(np.clip(6 + rng.gamma(2.5, 1.6), 5, 23.5))
                outcome = "loss"
            elif rng.random() < _STILLBIRTH_RISK:
                weeks, outcome = float(rng.uniform(24, 40)), "stillbirth"
            else:
                weeks, outcome = float(np.clip(rng.normal(39.3, 1.6), 24, 42)), "live_birth"
            weeks = round(weeks, 1)
            # gestational age counts from the last period, two weeks before conception
            end_date = conception + _dt.timedelta(days=int(round((weeks - 2) * 7)))
            episodes.append((conception, end_date, outcome, weeks))
            k += 1
            if outcome == "loss":
                n_loss_now += 1
                t = end_date + _dt.timedelta(days=_months(rng, 1, 3))
            elif outcome == "stillbirth":
                t = end_date + _dt.timedelta(days=_months(rng, 3, 9))
            elif rng.random() < 0.5:
                trying = False
            else:
                t = end_date + _dt.timedelta(days=_months(rng, 9, 15))
        recorded = []
        for conception, end_date, outcome, weeks in episodes:
            if end_date <= end:
                if end_date > rec:
                    recorded.append((end_date, outcome, weeks))
            elif conception < end:
                ga = round(((end - conception).days / 7) + 2, 1)
                if ga >= 6:
                    recorded.append((end, "ongoing", ga))
                break
            else:
                break
        for d, o, g in recorded:
            ep_rows.append(
                {"woman_id": wid, "episode_date": d.isoformat(), "outcome": o, "gestational_weeks": g}
            )
        women_rows.append(
            {
                "woman_id": wid,
                "age": age,
                "bmi": float(row["bmi"]) if str(row.get("bmi", "")).strip() else np.nan,
                "prior_losses": losses,
                "prior_live_births": prior_lb,
                "rm_type": rm_type,
                "smoking": smoking,
                "pcos": pcos,
                "group": "rm" if rm else "control",
                "recruitment_date": rec.isoformat(),
                "followup_end": end.isoformat(),
            }
        )
        hidden[wid] = {
            "immune_subgroup": immune,
            "lost_to_followup": lost,
            "planned_followup_months": round(planned, 2),
            "visits_attended": attended,
            "fecundability": round(f_base, 5),
            "nk_pct_of_lymphocytes": round(nk_pct, 4),
            "frailty": round(float(frailty), 4),
            "pregnancies_simulated": [
                {"conception": c.isoformat(), "end": e.isoformat(), "outcome": o, "weeks": g}
                for c, e, o, g in episodes
            ],
        }
    women = pd.DataFrame(women_rows)
    for c in ("recruitment_date", "followup_end"):
        women[c] = pd.to_datetime(women[c]).astype("datetime64[ns]")
    episodes = pd.DataFrame(ep_rows, columns=["woman_id", "episode_date", "outcome", "gestational_weeks"])
    episodes["episode_date"] = pd.to_datetime(episodes["episode_date"]).astype("datetime64[ns]")
    episodes["gestational_weeks"] = episodes["gestational_weeks"].astype("float64")
    db = FollowupDB(women=women, episodes=episodes, source=str(out))
    n_lost = sum(h["lost_to_followup"] for h in hidden.values())
    if not write:
        return FollowupResult(
            out,
            out / "women.csv",
            out / "episodes.csv",
            out / "followup.sqlite",
            out / "truth" / "followup.json",
            db,
            n,
            len(episodes),
            n_lost,
        )
    out.mkdir(parents=True, exist_ok=True)
    write_followup(db, out)
    write_followup(db, out / "followup.sqlite")
    truth = {
        "seed": int(seed),
        "cohort": str(src),
        "null": null,
        "parameters": {
            "loss_to_followup": loss_to_followup,
            "followup_months": list(followup_months),
            "visit_months": visit_months,
            "fecundability_f0": fecundability,
            "fecundability_age_decline_per_year_over_30": _AGE_DECLINE,
            "pcos_fecundability_ratio": _PCOS_RR,
            "current_smoker_fecundability_ratio": _SMOKING_RR,
            "frailty_variance": _FRAILTY_VAR,
            "immune_fecundability_hr": immune_fecundability_hr,
            "nk_fecundability_log_hr_per_sd": nk_fecundability_log_hr,
            "nk_log_sd": _NK_LOG_SD,
            "control_loss_risk_25_29": _CONTROL_LOSS_RISK,
            "stillbirth_risk": _STILLBIRTH_RISK,
        },
        "immune_effect_on_time_to_live_birth": (
            f"fecundability x {immune_fecundability_hr:g} for the immune subgroup (truth/effects.json "
            f"immune_subgroup) and x exp({nk_fecundability_log_hr:g} * log(NK % / 10) / {_NK_LOG_SD:g}) "
            "for every woman, every attempt; plus the loss model's immune term"
            if not null
            else "none (null cohort)"
        ),
        "first_pregnancy_loss": "RM women: the cohort's next_pregnancy_loss (truth/effects.json 'outcome'); "
        "controls: logit(0.12) + log OR(age band)",
        "loss_model": effects.get("outcome", {}),
        "women": hidden,
    }
    record = provenance_record(parameters=truth["parameters"], seed=int(seed), command="survival synth")
    record.pop("created", None)  # no clock time: same seed, same bytes
    truth["provenance"] = record
    (out / "truth").mkdir(exist_ok=True)
    atomic_write_text(out / "truth" / "followup.json", json.dumps(truth, indent=1, sort_keys=True) + "\n")
    return FollowupResult(
        out_dir=out,
        women_csv=out / "women.csv",
        episodes_csv=out / "episodes.csv",
        sqlite=out / "followup.sqlite",
        truth_json=out / "truth" / "followup.json",
        db=db,
        n_women=n,
        n_episodes=len(episodes),
        n_lost=n_lost,
    )
