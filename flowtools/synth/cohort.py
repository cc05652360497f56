"""Generate the synthetic study cohort described in ``shared/design/cohort.md``.

:func:`make_cohort` writes, under one output folder::

    fcs/<sample_id>.fcs        two tubes per woman (TBNK-NK, Treg-Th), FCS 3.1 float32
    samples.csv                the sample sheet (file, sample_id, woman_id, tube, plate, well,
                               acquisition_date)
    clinical.csv               one row per woman, as a clinical database exports it
    truth/<sample_id>.labels.npy   int16 leaf population code of every event
    truth/<sample_id>.qc.npy       uint8 artefact bits per event (files with artefacts only)
    truth/populations.json     code -> population path
    truth/women.csv            per woman and tube: true count and % of parent of every population
    truth/effects.json         the planted effects and the immune subgroup
    truth/artefacts.json       the acquisition artefacts planted, per file
    truth/params.json          seed, parameters and flowtools version

The truth is the biology: an event keeps its leaf population label in both
tubes, even where the tube lacks the markers to gate it (e.g. Treg in TBNK-NK,
NK subsets in Treg-Th); sum the leaves to the gateable parent there. Sample IDs
are per file (``S0001-TBNK``, ``S0001-TREG``); woman IDs are ``W001``... FCS
files carry canary personal keywords (``$SRC``, ``$OP``, ``PATIENT ID``, all
containing ``CANARY-PII``) that must never reach an output table.

Effects are planted only in the immune subgroup of RM women (shares of parent;
the untouched siblings of a changed population shrink proportionally so shares
still sum to 1). The next-pregnancy outcome of RM women follows a logistic model
of prior losses and age band plus a modest immune term (see
``truth/effects.json``), tuned so that clinical factors alone give an AUC of
about 0.63 and clinical + immune about 0.69 at best.

Randomness comes from one :class:`numpy.random.SeedSequence`: a cohort stream
(clinical record, groups, artefact placement), an instrument stream (one
spillover matrix per plate/day) and one stream per woman, split again per
purpose (composition, counts per tube, events per tube). A file therefore does
not depend on the order files are generated in, and the same seed gives
byte-identical outputs (no clock time is written anywhere).
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from flowtools.io.fcs import Spillover
from flowtools.io.fcs_write import write_fcs as _write_fcs_file
from flowtools.provenance import atomic_write_bytes, atomic_write_text, provenance_record
from flowtools.synth._events import TIMESTEP, channel_names, make_file_events
from flowtools.synth._model import (
    DETECTORS,
    EFFECTS,
    LEAVES,
    NODES,
    PANELS,
    TUBES,
    apply_effects,
    draw_shares,
    leaf_probabilities,
    node_counts,
    parent_index,
    spillover_matrix,
)

__all__ = ["CohortResult", "CohortSpec", "make_cohort"]

_log = logging.getLogger(__name__)

_TUBE_TAG = {"TBNK-NK": "TBNK", "Treg-Th": "TREG"}
_WOMEN_PER_PLATE = 48  # two tubes per woman on a 96-well plate
_CANARY = "CANARY-PII"
_NK = NODES.index("Singlets/Live/Lymphocytes/NK cells")
_LYMPH = NODES.index("Singlets/Live/Lymphocytes")

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class CohortSpec:
    """Parameters of a synthetic cohort (validated on construction).

    Parameters
    ----------
    n_women : int, default 24
        Women in the cohort; half (rounded up) have recurrent miscarriage (RM).
    seed : int, default 0
        Non-negative seed of every random draw.
    events : int, default 100_000
        Events per FCS file (a low-event well gets 3-8% of this).
    null : bool, default False
        Plant no effect at all (for calibration runs).
    immune_fraction : float, default 0.4
        Share of RM women in the immune subgroup, the only women with effects.
    artefacts : bool, default True
        Plant acquisition artefacts (clog, margin events, a low-event well) in a few files.

    Raises
    ------
    ValueError
        A parameter is out of range.
    """

    n_women: int = 24
    seed: int = 0
    events: int = 100_000
    null: bool = False
    immune_fraction: float = 0.4
    artefacts: bool = True

    def __post_init__(self) -> None:
        for name in ("n_women", "seed", "events"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                msg = f"{name} must be an int, not {value!r}"
                raise ValueError(msg)
        if not 1 <= self.n_women <= 9999:
            msg = f"n_women must be between 1 and 9999, not {self.n_women}"
            raise ValueError(msg)
        if self.seed < 0:
            msg = f"seed must be non-negative, not {self.seed}"
            raise ValueError(msg)
        if not 100 <= self.events <= 10_000_000:
            msg = f"events must be between 100 and 10,000,000 per file, not {self.events}"
            raise ValueError(msg)
        if not 0.0 <= float(self.immune_fraction) <= 1.0:
            msg = f"immune_fraction must be in [0, 1], not {self.immune_fraction}"
            raise ValueError(msg)

    def to_dict(self) -> dict[str, object]:
        """Return the parameters as a JSON-ready dict."""
        d = asdict(self)
        d["n_women"], d["seed"], d["events"] = int(self.n_women), int(self.seed), int(self.events)
        d["immune_fraction"] = float(self.immune_fraction)
        return d


@dataclass(frozen=True)
class CohortResult:
    """What :func:`make_cohort` wrote.

    Attributes
    ----------
    out_dir, fcs_dir, truth_dir : pathlib.Path
        The output folder, its ``fcs/`` and its ``truth/`` folders.
    samples_csv, clinical_csv : pathlib.Path
        The sample sheet and the clinical table.
    spec : CohortSpec
        The parameters.
    n_women, n_rm, n_controls, n_immune_subgroup : int
        Women in the cohort, by group; the subgroup is drawn even with ``null``.
    n_files : int
        FCS files in the cohort (two per woman), written or not.
    n_events : int
        Events in all files together.
    files : tuple of pathlib.Path
        The FCS files written (empty when ``write_fcs=False``).
    """

    out_dir: Path
    fcs_dir: Path
    samples_csv: Path
    clinical_csv: Path
    truth_dir: Path
    spec: CohortSpec
    n_women: int
    n_rm: int
    n_controls: int
    n_immune_subgroup: int
    n_files: int
    n_events: int
    files: tuple[Path, ...]


@dataclass(frozen=True)
class _Woman:
    index: int
    woman_id: str
    group: str
    immune: bool
    plate: str
    date: _dt.date


def make_cohort(
    out_dir: str | os.PathLike[str],
    *,
    n_women: int = 24,
    seed: int = 0,
    events: int = 100_000,
    null: bool = False,
    immune_fraction: float = 0.4,
    artefacts: bool = True,
    write_fcs: bool = True,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> CohortResult:
    """Write a synthetic RM/control cohort: FCS files, sample sheet, clinical table and truth.

    Parameters
    ----------
    out_dir : str or PathLike
        Output folder; created if needed. It must be empty unless ``overwrite``.
    n_women : int, default 24
        Women (two FCS files each); half, rounded up, are RM, the rest controls.
    seed : int, default 0
        Seed of every draw; the same seed gives byte-identical outputs.
    events : int, default 100_000
        Events per file.
    null : bool, default False
        Plant no effect (neither in the cells nor in the outcome).
    immune_fraction : float, default 0.4
        Share of RM women in the immune subgroup, the only women with planted effects.
    artefacts : bool, default True
        Plant a clog, margin events and a low-event well in a few files.
    write_fcs : bool, default True
        Write the FCS files and per-event labels. With False only the tables
        and the per-woman truth are written (the same counts as with True).
    overwrite : bool, default False
        Allow a non-empty ``out_dir``: files of the same names are replaced,
        and ``fcs/*.fcs`` and ``truth/*.npy`` files this run did not write are
        removed, so the folder describes one cohort only.
    progress : callable(done, total), optional
        Called once per file, after it is written (after its counts are drawn
        when ``write_fcs`` is False); ``total`` = 2 x ``n_women``.

    Returns
    -------
    CohortResult

    Raises
    ------
    ValueError
        A parameter is out of range.
    FileExistsError
        ``out_dir`` is not empty and ``overwrite`` is False.

    Examples
    --------
    >>> res = make_cohort("demo", n_women=4, events=5000, seed=1)  # doctest: +SKIP
    >>> res.n_files  # doctest: +SKIP
    8
    """
    spec = CohortSpec(
        n_women=n_women,
        seed=seed,
        events=events,
        null=null,
        immune_fraction=immune_fraction,
        artefacts=artefacts,
    )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        msg = f"{out} exists and is not a folder"
        raise FileExistsError(msg)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        msg = f"{out} is not empty; pass overwrite=True to write over it"
        raise FileExistsError(msg)
    fcs_dir, truth_dir = out / "fcs", out / "truth"
    fcs_dir.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)

    ss_cohort, ss_instrument, ss_women = np.random.SeedSequence(int(spec.seed)).spawn(3)
    rng = np.random.default_rng(ss_cohort)
    women = _draw_women(rng, spec)
    clinical = _draw_clinical(rng, women)
    planted = _place_artefacts(rng, spec)
    outcome_u = rng.random(spec.n_women)
    plates = sorted({w.plate for w in women})
    spills = {
        plate: spillover_matrix(np.random.default_rng(child))
        for plate, child in zip(plates, ss_instrument.spawn(len(plates)), strict=True)
    }

    truth_rows: list[list[str]] = []
    sample_rows: list[list[str]] = []
    artefact_log: dict[str, list[dict[str, object]]] = {}
    nk_pct: list[float] = []
    files: list[Path] = []
    written_npy: list[Path] = []
    n_total = 0
    done = 0
    width = max(4, len(str(spec.n_women)))
    for w, w_ss in zip(women, ss_women.spawn(spec.n_women), strict=True):
        streams = w_ss.spawn(1 + 2 * len(TUBES))
        shares = draw_shares(np.random.default_rng(streams[0]))
        if w.immune and not spec.null:
            shares = apply_effects(shares, EFFECTS)
        nk_pct.append(100.0 * shares[_NK])
        p = leaf_probabilities(shares)
        for j, tube in enumerate(TUBES):
            sample_id = f"S{w.index + 1:0{width}d}-{_TUBE_TAG[tube]}"
            file_no = 2 * w.index + j
            count_rng = np.random.default_rng(streams[1 + j])
            n_ev = spec.events
            if file_no in planted["low"]:
                n_ev = max(20, int(spec.events * count_rng.uniform(0.03, 0.08)))
                artefact_log.setdefault(sample_id, []).append({"kind": "low_events", "events": n_ev})
            counts = count_rng.multinomial(n_ev, p)
            n_total += n_ev
            well = _well(2 * (w.index % _WOMEN_PER_PLATE) + j)
            rel = f"fcs/{sample_id}.fcs"
            sample_rows.append([rel, sample_id, w.woman_id, tube, w.plate, well, w.date.isoformat()])
            truth_rows.extend(_truth_rows(w, tube, sample_id, counts, shares))
            if write_fcs:
                fe = make_file_events(
                    np.random.default_rng(streams[1 + len(TUBES) + j]),
                    tube,
                    counts,
                    spills[w.plate],
                    clog=file_no in planted["clog"],
                    margin=file_no in planted["margin"],
                )
                if fe.artefacts:
                    artefact_log.setdefault(sample_id, []).extend(fe.artefacts)
                    written_npy.append(_save_npy(truth_dir / f"{sample_id}.qc.npy", fe.qc))
                path = out / rel
                names, markers = channel_names(tube)
                _write_fcs_file(
                    path,
                    fe.events,
                    names,
                    markers=markers,
                    spillover=_tube_spillover(tube, spills[w.plate]),
                    keywords=_keywords(w, tube, sample_id, well, fe.duration_s, spec.seed),
                )
                written_npy.append(_save_npy(truth_dir / f"{sample_id}.labels.npy", fe.labels))
                files.append(path)
            done += 1
            if progress is not None:
                progress(done, 2 * spec.n_women)

    outcomes = _outcomes(women, clinical, np.array(nk_pct), outcome_u, null=spec.null)
    _write_csv(
        out / "samples.csv",
        ["file", "sample_id", "woman_id", "tube", "plate", "well", "acquisition_date"],
        sample_rows,
    )
    _write_clinical(out / "clinical.csv", women, clinical, outcomes)
    _write_csv(
        truth_dir / "women.csv",
        [
            "woman_id",
            "group",
            "immune_subgroup",
            "tube",
            "sample_id",
            "population",
            "parent",
            "count",
            "parent_count",
            "pct_parent",
            "expected_pct_parent",
        ],
        truth_rows,
    )
    _write_json(truth_dir / "populations.json", {str(k): path for k, path in enumerate(LEAVES)})
    subgroup = [w.woman_id for w in women if w.immune]
    _write_json(
        truth_dir / "effects.json",
        {
            "null": spec.null,
            "immune_fraction": float(spec.immune_fraction),
            "immune_subgroup": subgroup,
            "effects": [] if spec.null else [e.as_dict() for e in EFFECTS],
            "outcome": _OUTCOME_NOTE if not spec.null else {},
            "note": "Shares of parent; siblings of a changed population shrink proportionally "
            "so that shares still sum to 1.",
        },
    )
    _write_json(truth_dir / "artefacts.json", artefact_log)
    record = provenance_record(
        parameters={**spec.to_dict(), "write_fcs": write_fcs}, seed=int(spec.seed), command="synth"
    )
    record.pop("created", None)  # no clock time: same seed, same bytes
    record["tubes"] = {t: [list(c) for c in pairs] for t, pairs in PANELS.items()}
    _write_json(truth_dir / "params.json", record)

    written = {p.name for p in files} | {p.name for p in written_npy}
    for stale in [*fcs_dir.glob("*.fcs"), *truth_dir.glob("*.npy")]:
        if stale.name not in written:
            stale.unlink()

    n_rm = sum(w.group == "RM" for w in women)
    _log.info(
        "synthetic cohort: %d women, %d files, %d events -> %s", spec.n_women, 2 * spec.n_women, n_total, out
    )
    return CohortResult(
        out_dir=out,
        fcs_dir=fcs_dir,
        samples_csv=out / "samples.csv",
        clinical_csv=out / "clinical.csv",
        truth_dir=truth_dir,
        spec=spec,
        n_women=spec.n_women,
        n_rm=n_rm,
        n_controls=spec.n_women - n_rm,
        n_immune_subgroup=len(subgroup),
        n_files=2 * spec.n_women,
        n_events=n_total,
        files=tuple(files),
    )


# ---------------------------------------------------------------------------------------------
# Women, plates and the clinical record


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


def _write_clinical(path: Path, women: list[_Woman], c: dict[str, np.ndarray], outcomes: list[str]) -> None:
    header = [
        "woman_id",
        "group",
        "age",
        "bmi",
        "n_prior_losses",
        "rm_type",
        "smoking",
        "cycle_day",
        "plate",
        "acquisition_date",
        "next_pregnancy_loss",
    ]
    rows = [
        [
            w.woman_id,
            w.group,
            str(c["age"][i]),
            f"{c['bmi'][i]:.1f}",
            str(c["n_prior_losses"][i]),
            str(c["rm_type"][i]),
            str(c["smoking"][i]),
            str(c["cycle_day"][i]),
            w.plate,
            w.date.isoformat(),
            outcomes[i],
        ]
        for i, w in enumerate(women)
    ]
    _write_csv(path, header, rows)


def _place_artefacts(rng: np.random.Generator, spec: CohortSpec) -> dict[str, set[int]]:
    n_files = 2 * spec.n_women
    order = rng.permutation(n_files)
    if not spec.artefacts:
        return {"clog": set(), "margin": set(), "low": set()}
    k = max(1, round(0.03 * n_files))
    pick = [int(order[i % n_files]) for i in range(3 * k)]
    return {"clog": set(pick[:k]), "margin": set(pick[k : 2 * k]), "low": set(pick[2 * k :])}


# ---------------------------------------------------------------------------------------------
# FCS details


def _tube_spillover(tube: str, spill: np.ndarray) -> Spillover:
    detectors = tuple(d for d, _ in PANELS[tube])
    idx = np.array([DETECTORS.index(d) for d in detectors], dtype=np.intp)
    return Spillover(detectors, spill[np.ix_(idx, idx)].copy())


def _keywords(
    w: _Woman, tube: str, sample_id: str, well: str, duration_s: float, seed: int
) -> dict[str, str]:
    well_no = 2 * (w.index % _WOMEN_PER_PLATE) + TUBES.index(tube)
    begin = 9 * 3600 + 150 * well_no  # the plate starts at 09:00, one well every 2.5 minutes
    end = begin + int(np.ceil(duration_s))
    return {
        "$CYT": "flowtools-synth",
        "$CYTSN": f"SYN-{seed % 10000:04d}",
        "$DATE": w.date.strftime("%d-%b-%Y").upper(),
        "$BTIM": _clock(begin),
        "$ETIM": _clock(end),
        "$TIMESTEP": repr(TIMESTEP),
        "$FIL": f"{sample_id}.fcs",
        "$PLATEID": w.plate,
        "$PLATENAME": w.plate,
        "$WELLID": well,
        "TUBE NAME": tube,
        "$SRC": f"{_CANARY} specimen of Jane Doe-{w.index + 1}, born 1990-01-01",
        "$OP": f"{_CANARY} operator Dr A. Smith",
        "PATIENT ID": f"{_CANARY}-MRN-{900000 + w.index}",
    }


def _clock(seconds: int) -> str:
    seconds %= 24 * 3600
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# ---------------------------------------------------------------------------------------------
# Truth tables and writers


def _truth_rows(
    w: _Woman, tube: str, sample_id: str, leaf_counts: np.ndarray, shares: np.ndarray
) -> list[list[str]]:
    counts = node_counts(leaf_counts)
    total = int(leaf_counts.sum())
    rows = []
    for i, path in enumerate(NODES):
        parent = parent_index(i)
        parent_count = total if parent < 0 else int(counts[parent])
        pct = 100.0 * counts[i] / parent_count if parent_count else 0.0
        rows.append(
            [
                w.woman_id,
                w.group,
                "1" if w.immune else "0",
                tube,
                sample_id,
                path,
                "" if parent < 0 else NODES[parent],
                str(int(counts[i])),
                str(parent_count),
                f"{pct:.4f}",
                f"{100.0 * shares[i]:.4f}",
            ]
        )
    return rows


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _write_json(path: Path, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _save_npy(path: Path, arr: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
    return path
