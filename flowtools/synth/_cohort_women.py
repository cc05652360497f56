"""The women of a synthetic cohort: groups, plates, the clinical record and the next-pregnancy outcome.

Part of :func:`flowtools.synth.cohort.make_cohort` (whose module re-exports these names): every
draw here comes from the cohort stream, in the order ``make_cohort`` makes them.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from flowtools.synth.cohort import CohortSpec

_WOMEN_PER_PLATE = 48  # two tubes per woman on a 96-well plate


@dataclass(frozen=True)
class _Woman:
    index: int
    woman_id: str
    group: str
    immune: bool
    plate: str
    date: _dt.date


def _well(k: int) -> str:
    return f"{'ABCDEFGH'[k // 12]}{k % 12 + 1:02d}"


def _draw_women(rng: np.random.Generator, spec: CohortSpec) -> list[_Woman]:
    n = spec.n_women
    n_rm = (n + 1) // 2
    is_rm = np.zeros(n, dtype=bool)
    is_rm[rng.permutation(n)[:n_rm]] = True  # interleaved on the plates, not blocked
    rm_idx = np.flatnonzero(is_rm)
    n_sub = int(round(spec.immune_fraction * n_rm))
    immune = np.zeros(n, dtype=bool)
    immune[rng.permutation(rm_idx)[:n_sub]] = True
    start = _dt.date(2023, 1, 2) + _dt.timedelta(days=int(rng.integers(0, 364)))
    days: list[_dt.date] = []
    day = start
    width = max(3, len(str(n)))
    out = []
    for i in range(n):
        plate = i // _WOMEN_PER_PLATE
        while len(days) <= plate:
            while day.weekday() >= 5:  # plates are run on working days
                day += _dt.timedelta(days=1)
            days.append(day)
            day += _dt.timedelta(days=1)
        out.append(
            _Woman(
                i,
                f"W{i + 1:0{width}d}",
                "RM" if is_rm[i] else "control",
                bool(immune[i]),
                f"P{plate + 1:02d}",
                days[plate],
            )
        )
    return out


def _draw_clinical(rng: np.random.Generator, women: list[_Woman]) -> dict[str, np.ndarray]:
    n = len(women)
    rm = np.array([w.group == "RM" for w in women])
    age = np.where(rm, rng.normal(33.5, 5.0, n), rng.normal(31.0, 4.5, n))
    age = np.clip(np.rint(age), 19, 46).astype(int)
    bmi = np.round(np.clip(24.0 * np.exp(0.16 * rng.standard_normal(n)), 16.0, 45.0), 1)
    losses = rng.choice([2, 3, 4, 5, 6], size=n, p=[0.50, 0.28, 0.12, 0.06, 0.04])
    losses = np.where(rm, losses, 0)
    rm_type = np.where(rm, np.where(rng.random(n) < 0.7, "primary", "secondary"), "")
    smoking = rng.choice(["never", "former", "current"], size=n, p=[0.65, 0.20, 0.15])
    cycle_day = rng.integers(3, 29, size=n)
    return {
        "age": age,
        "bmi": bmi,
        "n_prior_losses": losses,
        "rm_type": rm_type,
        "smoking": smoking,
        "cycle_day": cycle_day,
    }


# Quenby et al. 2021: miscarriage risk by maternal age (odds relative to age 25-29).
_AGE_BANDS = np.array([20, 25, 30, 35, 40, 45])
_AGE_LOG_OR = np.log(np.array([1.6, 1.15, 1.0, 1.15, 1.8, 3.2, 6.0]))
# Risk by prior losses at age 25-29 (about 28% after two, 43% after three or more at cohort ages).
_LOSS_RISK = {2: 0.15, 3: 0.26, 4: 0.27, 5: 0.28, 6: 0.29}
_IMMUNE_LOG_OR = float(np.log(1.8))  # immune subgroup
_NK_LOG_OR_PER_SD = 0.35  # per sd of log NK % of lymphocytes (pre-conception NK 17.1 vs 13.1%)
_NK_LOG_SD = 0.35
_OUTCOME_NOTE = {
    "model": "logit(p) = logit(risk by prior losses at age 25-29) + log OR(age band) "
    "+ log(1.8) * immune_subgroup + 0.35 * (log(NK % of lymphocytes / 10) / 0.35)",
    "loss_risk_at_25_29": {str(k): v for k, v in _LOSS_RISK.items()},
    "age_band_odds_ratio": {
        "<20": 1.6,
        "20-24": 1.15,
        "25-29": 1.0,
        "30-34": 1.15,
        "35-39": 1.8,
        "40-44": 3.2,
        ">=45": 6.0,
    },
    "immune_subgroup_odds_ratio": 1.8,
    "nk_log_odds_per_sd": _NK_LOG_OR_PER_SD,
}


def _outcome_logit(
    age: np.ndarray, losses: np.ndarray, immune: np.ndarray, nk_pct: np.ndarray, *, null: bool
) -> np.ndarray:
    base = np.array([_LOSS_RISK.get(int(k), 0.24) for k in losses])
    logit = np.log(base / (1 - base)) + _AGE_LOG_OR[np.searchsorted(_AGE_BANDS, age, side="right")]
    if not null:
        logit = logit + _IMMUNE_LOG_OR * immune + _NK_LOG_OR_PER_SD * np.log(nk_pct / 10.0) / _NK_LOG_SD
    return logit


def _outcomes(
    women: list[_Woman], clinical: dict[str, np.ndarray], nk_pct: np.ndarray, u: np.ndarray, *, null: bool
) -> list[str]:
    immune = np.array([w.immune for w in women], dtype=float)
    logit = _outcome_logit(clinical["age"], clinical["n_prior_losses"], immune, nk_pct, null=null)
    loss = u < 1.0 / (1.0 + np.exp(-logit))
    return [("1" if x else "0") if w.group == "RM" else "" for w, x in zip(women, loss, strict=True)]


def _place_artefacts(rng: np.random.Generator, spec: CohortSpec) -> dict[str, set[int]]:
    n_files = 2 * spec.n_women
    order = rng.permutation(n_files)
    if not spec.artefacts:
        return {"clog": set(), "margin": set(), "low": set()}
    k = max(1, round(0.03 * n_files))
    pick = [int(order[i % n_files]) for i in range(3 * k)]
    return {"clog": set(pick[:k]), "margin": set(pick[k : 2 * k]), "low": set(pick[2 * k :])}
