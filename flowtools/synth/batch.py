"""Batch effects on a synthetic cohort: plates and years, an anchor donor on every plate, the truth.

:func:`make_batch_cohort` writes a cohort with :func:`flowtools.synth.make_cohort` (the
same biology, the same truth of every woman), spreads its women over ``n_plates``
plates (optionally confounded with the RM/control group), adds one aliquot of a single
anchor donor per plate and tube, and plants a batch effect in every file:

* per plate and fluorescence detector, a monotone non-linear map of the compensated
  signal on an asinh scale (cofactor 150): ``y -> y + shift + scale * (y - 4) +
  bend * tanh(y - 4)``, the sum of a year effect (reagent lots, laser changes) and a
  plate effect; ``|scale|`` and ``|bend|`` are kept below 0.3 so the map is increasing;
* applied to the compensated values, mapped back to the asinh's linear scale, and the
  file's own spillover re-applied, so the files stay raw detector data.

The folder gets, beyond what :func:`make_cohort` writes::

    fcs/A<donor>-P<plate>-<TUBE>.fcs   the anchor donor's aliquot on every plate
    samples.csv                        plates re-assigned; columns ``batch`` and ``anchor``
    truth/batch_effects.json           every plate's year and effect per detector and marker;
                                       the plate of every woman; the anchor donor's shares

The anchor donor's rows have ``woman_id`` ``<donor>-P<plate>`` (a sheet allows one row per
woman and tube) and ``anchor`` = the donor's ID; they are not in ``clinical.csv``.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flowtools.io.fcs import Spillover, read_fcs
from flowtools.io.fcs_write import write_fcs
from flowtools.provenance import atomic_write_text
from flowtools.synth._cohort_files import _save_npy, _write_csv
from flowtools.synth._events import channel_names, make_file_events
from flowtools.synth._model import (
    PANELS,
    TUBES,
    draw_shares,
    leaf_probabilities,
    spillover_matrix,
)
from flowtools.synth.cohort import CohortResult, _tube_spillover, make_cohort

__all__ = ["BatchCohortResult", "batch_effect", "make_batch_cohort"]

_COFACTOR = 150.0
_MID = 4.0  # asinh units: about 4,000 on the linear scale, mid-way up a bright population
_TAG = {"TBNK-NK": "TBNK", "Treg-Th": "TREG"}
_PER_PLATE = 47  # 96 wells: two per woman, two for the anchor


@dataclass(frozen=True)
class BatchCohortResult:
    """What :func:`make_batch_cohort` wrote.

    Attributes
    ----------
    cohort : CohortResult
        The underlying cohort (its ``samples_csv`` has been rewritten).
    samples_csv, clinical_csv, truth_json : pathlib.Path
    anchor_files : tuple of pathlib.Path
    plates : tuple of str
    anchor_id : str
    """

    cohort: CohortResult
    samples_csv: Path
    clinical_csv: Path
    truth_json: Path
    anchor_files: tuple[Path, ...]
    plates: tuple[str, ...]
    anchor_id: str

    @property
    def out_dir(self) -> Path:
        """The cohort folder."""
        return self.cohort.out_dir

    @property
    def truth_dir(self) -> Path:
        """The cohort's ``truth/`` folder (per-event labels of every file, anchors included)."""
        return self.cohort.truth_dir


def batch_effect(y: np.ndarray, shift: float, scale: float, bend: float) -> np.ndarray:
    """The planted map on the asinh scale (monotone increasing for ``|scale|, |bend| < 0.5``)."""
    return y + shift + scale * (y - _MID) + bend * np.tanh(y - _MID)


def _apply(x: np.ndarray, shift: float, scale: float, bend: float) -> np.ndarray:
    y = np.arcsinh(x / _COFACTOR)
    return _COFACTOR * np.sinh(batch_effect(y, shift, scale, bend))


def _draw_effects(
    rng: np.random.Generator, plates: list[str], years: list[int], detectors: list[str], size: float
) -> dict[str, dict[str, dict[str, float]]]:
    year_fx = {y: {d: rng.normal(0.0, [0.25, 0.06, 0.08]) for d in detectors} for y in sorted(set(years))}
    out: dict[str, dict[str, dict[str, float]]] = {}
    for p, yr in zip(plates, years, strict=True):
        per = {}
        for d in detectors:
            e = year_fx[yr][d] + rng.normal(0.0, [0.12, 0.03, 0.05])
            shift, scale, bend = size * e
            per[d] = {"shift": round(float(shift), 6), "scale": round(float(np.clip(scale, -0.29, 0.29)), 6),
                      "bend": round(float(np.clip(bend, -0.29, 0.29)), 6)}
        out[p] = per
    return out


def _affect(
    events: np.ndarray, names: list[str], spill: Spillover, fx: dict[str, dict[str, float]]
) -> np.ndarray:
    """Plant the plate's effect in raw events: compensate, map each detector, re-apply the spillover."""
    idx = [names.index(d) for d in spill.detectors]
    raw = np.asarray(events, dtype=np.float64)
    comp = raw[:, idx] @ np.linalg.inv(spill.matrix)
    for j, d in enumerate(spill.detectors):
        if d in fx:
            comp[:, j] = _apply(comp[:, j], **fx[d])
    out = raw.copy()
    out[:, idx] = comp @ spill.matrix
    return out.astype(np.float32)


def _assign(rng: np.random.Generator, groups: list[str], n_plates: int, confound: float) -> list[int]:
    """Plate index of every woman: women in order of a score, cut into plates.

    The score is the group (RM 0, control 1) for a share ``confound`` of the women, drawn at
    random, and uniform noise for the others: 0 places everyone at random, 1 puts RM women on
    the first plates and controls on the last, in between some women of each group stray.
    """
    n = len(groups)
    by_group = rng.random(n) < confound
    score = np.where(by_group, [0.0 if g == "RM" else 1.0 for g in groups], rng.random(n))
    order = np.argsort(score, kind="stable")
    plate = np.empty(n, dtype=np.int64)
    for k, chunk in enumerate(np.array_split(order, n_plates)):
        plate[chunk] = k
    return plate.tolist()


def make_batch_cohort(
    out_dir: str | os.PathLike[str],
    *,
    n_plates: int = 8,
    n_women: int = 24,
    events: int = 20_000,
    effect_size: float = 1.0,
    confound: float = 0.0,
    n_years: int | None = None,
    null: bool = False,
    seed: int = 0,
    anchor_id: str = "D001",
    anchor_events: int | None = None,
    overwrite: bool = False,
) -> BatchCohortResult:
    """Write a multi-plate cohort with a planted batch effect and an anchor donor on every plate.

    Parameters
    ----------
    out_dir : path
        Output folder (empty unless ``overwrite``).
    n_plates : int, default 8
        Plates; each gets ``n_women / n_plates`` women (at most 47) and the anchor.
    n_women : int, default 24
    events : int, default 20_000
        Events per file (anchors too).
    effect_size : float, default 1.0
        Multiplies every planted effect (0: no batch effect; the files are still rewritten).
    confound : float, default 0.0
        0: women on plates at random; 1: RM women on the first plates, controls on the
        last (plate and group fully confounded); in between, that share of the women is
        placed by group and the rest at random.
    n_years : int, optional
        Years the plates span (consecutive plates share a year and its effect); default
        ``min(5, n_plates)``.
    null : bool, default False
        No biological effect (:func:`make_cohort`'s ``null``), for type-I error runs.
    seed : int, default 0
    anchor_id : str, default "D001"
    anchor_events : int, optional
        Events per anchor file (default ``events``): labs acquire more of the anchor, and its
        sampling noise is a plate-level error that every sample of the plate shares.
    overwrite : bool, default False

    Returns
    -------
    BatchCohortResult

    Raises
    ------
    ValueError
        A parameter out of range.
    """
    if not 1 <= n_plates <= 99:
        msg = f"n_plates must be between 1 and 99, not {n_plates}"
        raise ValueError(msg)
    if n_women < n_plates or n_women > _PER_PLATE * n_plates:
        msg = f"n_women must be between n_plates ({n_plates}) and {_PER_PLATE * n_plates}, not {n_women}"
        raise ValueError(msg)
    if not 0.0 <= confound <= 1.0 or effect_size < 0:
        msg = f"confound must be in [0, 1] and effect_size >= 0 (got {confound}, {effect_size})"
        raise ValueError(msg)
    n_years = min(5, n_plates) if n_years is None else int(n_years)
    base = make_cohort(out_dir, n_women=n_women, seed=seed, events=events, null=null, artefacts=False,
                       overwrite=overwrite)
    out = base.out_dir
    ss_assign, ss_fx, ss_anchor = np.random.SeedSequence([int(seed), 18]).spawn(3)
    with open(out / "samples.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    groups: dict[str, str] = {}
    with open(base.truth_dir / "women.csv", encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            groups[r["woman_id"]] = r["group"]
    women = sorted(groups)
    plate_of = dict(zip(women, _assign(np.random.default_rng(ss_assign), [groups[w] for w in women],
                                       n_plates, confound), strict=True))
    plates = [f"P{k + 1:02d}" for k in range(n_plates)]
    years = [2017 + (k * n_years) // n_plates for k in range(n_plates)]
    detectors = sorted({d for t in TUBES for d, _ in PANELS[t]})
    fx = _draw_effects(np.random.default_rng(ss_fx), plates, years, detectors, float(effect_size))

    slot: dict[int, int] = {}
    sheet: list[list[str]] = []
    header = ["file", "sample_id", "woman_id", "tube", "plate", "well", "acquisition_date", "batch", "anchor"]
    women_slot: dict[str, int] = {}
    for r in rows:
        k = plate_of[r["woman_id"]]
        if r["woman_id"] not in women_slot:
            women_slot[r["woman_id"]] = slot.get(k, 0)
            slot[k] = slot.get(k, 0) + 1
        well = _well(2 * women_slot[r["woman_id"]] + TUBES.index(r["tube"]))
        path = out / r["file"]
        s = read_fcs(path)
        kw = {key: v for key, v in s.keywords.items() if not key.startswith("$P") and key in _COPY}
        kw.update({"$PLATEID": plates[k], "$PLATENAME": plates[k], "$WELLID": well})
        affected = _affect(s.events, list(s.pnn), s.spillover, fx[plates[k]])
        write_fcs(path, affected, list(s.pnn), markers=[c.pns or None for c in s.channels],
                  spillover=s.spillover, keywords=kw)
        sheet.append([r["file"], r["sample_id"], r["woman_id"], r["tube"], plates[k], well,
                      f"{years[k]}-{1 + (3 * k) % 12:02d}-15", plates[k], "false"])

    rng_a = np.random.default_rng(ss_anchor)
    shares = draw_shares(rng_a)
    p_leaf = leaf_probabilities(shares)
    anchor_files = []
    for k, plate in enumerate(plates):
        spill = spillover_matrix(rng_a)
        for j, tube in enumerate(TUBES):
            sid = f"{anchor_id}-{plate}-{_TAG[tube]}"
            counts = rng_a.multinomial(int(anchor_events or events), p_leaf)
            fe = make_file_events(rng_a, tube, counts, spill)
            names, markers = channel_names(tube)
            sp = _tube_spillover(tube, spill)
            affected = _affect(fe.events, names, sp, fx[plate])
            rel = f"fcs/{sid}.fcs"
            write_fcs(out / rel, affected, names, markers=markers, spillover=sp,
                      keywords={"$CYT": "flowtools-synth", "$PLATEID": plate, "$WELLID": _well(94 + j),
                                "TUBE NAME": tube})
            _save_npy(base.truth_dir / f"{sid}.labels.npy", fe.labels)
            anchor_files.append(out / rel)
            sheet.append([rel, sid, f"{anchor_id}-{plate}", tube, plate, _well(94 + j),
                          f"{years[k]}-{1 + (3 * k) % 12:02d}-15", plate, anchor_id])
    _write_csv(out / "samples.csv", header, sheet)
    truth = {
        "function": "asinh scale (cofactor 150) of the compensated signal: "
                    "y -> y + shift + scale * (y - 4) + bend * tanh(y - 4)",
        "effect_size": float(effect_size), "confound": float(confound), "null": bool(null),
        "seed": int(seed), "anchor_id": anchor_id, "anchor_events": int(anchor_events or events),
        "plates": {p: {"year": yr, "effects": fx[p],
                       "markers": {t: {m: fx[p][d] for d, m in PANELS[t]} for t in TUBES}}
                   for p, yr in zip(plates, years, strict=True)},
        "women": {w: {"plate": plates[plate_of[w]], "group": groups[w]} for w in women},
        "anchor_shares": [round(float(v), 8) for v in shares],
    }
    truth_json = base.truth_dir / "batch_effects.json"
    atomic_write_text(truth_json, json.dumps(truth, indent=1, sort_keys=True) + "\n")
    return BatchCohortResult(base, out / "samples.csv", base.clinical_csv, truth_json, tuple(anchor_files),
                             tuple(plates), anchor_id)


#: Keywords copied from the generated file (its canary free-text keywords too: the cohort's
#: privacy tests rely on them being in the FCS files, never in outputs).
_COPY = frozenset({"$CYT", "$CYTSN", "$DATE", "$BTIM", "$ETIM", "$TIMESTEP", "$FIL", "TUBE NAME",
                   "$SRC", "$OP", "PATIENT ID"})


def _well(k: int) -> str:
    return f"{'ABCDEFGH'[k // 12]}{k % 12 + 1:02d}"
