"""Synthetic cytokine bead-array plates (LEGENDplex-like), with their truth.

:func:`make_bead_plate` writes, under one folder::

    fcs/<sample_id>.fcs     one FCS 3.1 file per well (FSC-A, SSC-A, PE-A reporter, APC-A classification)
    samples.csv             the sample sheet with the plate layout (role, standard_level)
    panel.yaml              the bead panel of the plate (the first ``n_analytes`` of the 13-plex)
    truth/concentrations.csv  per woman and analyte: the true concentration in the sample
    truth/plate.json        true curves, the planted problems (failed region, saturated sample ...)

Layout: standards in columns 1-2 (rows A-H = levels 1-8, top standard 10000 pg/mL, 4-fold),
two blanks (A03, B03), samples from C03 on, one well per woman (78 at most).

Beads: two groups on log-scatter (A small, B large) with debris (8%) and doublets (4%);
classification peaks evenly spaced on ``asinh(APC / 50)`` with a per-well drift; the
reporter follows a 5PL truth curve per analyte (background ``a`` ~ 30) with 25% bead-to-bead
log-normal noise, additive noise, and 4% well-to-well (pipetting) noise on the concentration.
Samples are diluted ``sample_dilution`` (2) fold before the well. The women's concentrations
depend only on ``seed`` (and the cohort), the wells' noise on ``seed`` and ``plate_id``, so
plates with the same seed and different ids measure the same women twice.

Women come from a cohort folder (``clinical.csv`` and ``truth/effects.json`` of
:func:`flowtools.synth.make_cohort`) when given, else ``n_women`` are drawn here (half RM,
40% of RM in the immune subgroup). The immune subgroup has higher IL-6, TNF-a and IFN-g
(x2.5), the only planted effect.
"""

from __future__ import annotations

import csv
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flowtools.io.fcs_write import write_fcs
from flowtools.io.sample_sheet import SampleSheetRow, write_sample_sheet
from flowtools.provenance import atomic_write_text

__all__ = ["ANALYTES_13", "MAX_SAMPLES", "EFFECT_ANALYTES", "BeadPlateSynth", "make_bead_plate", "panel_yaml"]

ANALYTES_13 = (
    "IL-1b",
    "IFN-a2",
    "IFN-g",
    "TNF-a",
    "MCP-1",
    "IL-6",
    "IL-8",
    "IL-10",
    "IL-12p70",
    "IL-17A",
    "IL-18",
    "IL-23",
    "IL-33",
)
EFFECT_ANALYTES = ("IL-6", "TNF-a", "IFN-g")
EFFECT_FOLD = 2.5
CHANNELS = ("FSC-A", "SSC-A", "PE-A", "APC-A")
TOP, DILUTION_FACTOR, N_POINTS = 10000.0, 4.0, 8
SAMPLE_DILUTION = 2.0
_COFACTOR = 50.0
_POS_LO, _POS_HI = 2.2, 6.4  # asinh(APC / 50) range of the peaks
_SCATTER = ((4.55, 4.20), (4.85, 4.62))  # log10 (FSC, SSC) centres of groups A and B
_MAX_SAMPLES = 96 - 2 * N_POINTS - 2
MAX_SAMPLES = _MAX_SAMPLES  #: sample wells on one plate


@dataclass(frozen=True)
class BeadPlateSynth:
    """What :func:`make_bead_plate` wrote."""

    out_dir: Path
    sheet: Path
    panel: Path
    truth_csv: Path
    truth_json: Path
    files: list[Path] = field(default_factory=list)
    women: list[str] = field(default_factory=list)
    truth: dict[str, dict[str, float]] = field(default_factory=dict)


def _groups(n_analytes: int) -> tuple[list[str], list[str]]:
    names = list(ANALYTES_13[:n_analytes])
    k = (len(names) + 1) // 2 if len(names) > 1 else 1
    return names[:k], names[k:]


def _positions(n: int) -> np.ndarray:
    return np.linspace(_POS_LO, _POS_HI, n) if n > 1 else np.array([0.5 * (_POS_LO + _POS_HI)])


def panel_yaml(n_analytes: int = 13) -> str:
    """The bead-panel template of a synthetic plate (YAML text)."""
    a, b = _groups(n_analytes)
    lines = [
        "# Synthetic LEGENDplex-like panel written by flowtools.synth.beads",
        f"name: synthetic_{n_analytes}plex",
        "units: pg/mL",
        "scatter: {x: FSC-A, y: SSC-A}",
        "classification: APC-A",
        "reporter: PE-A",
        "groups:",
    ]
    for gname, members in (("A", a), ("B", b)):
        if not members:
            continue
        lines.append(f"  - name: {gname}")
        lines.append("    regions:")
        lines += [f"      - {{analyte: {m}}}" for m in members]
    lines += [
        "standards:",
        f"  top: {TOP:g}",
        f"  dilution_factor: {DILUTION_FACTOR:g}",
        f"  n_points: {N_POINTS}",
        f"sample_dilution: {SAMPLE_DILUTION:g}",
        "min_beads: 35",
        "",
    ]
    return "\n".join(lines)


def _curves(n_analytes: int) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(20260)  # the kit: fixed, whatever the seed
    out = {}
    for name in ANALYTES_13[:n_analytes]:
        out[name] = {
            "a": float(rng.uniform(20, 45)),
            "b": float(rng.uniform(0.95, 1.25)),
            "c": float(10 ** rng.uniform(3.2, 3.7)),
            "d": float(rng.uniform(22000, 38000)),
            "g": float(rng.uniform(0.75, 1.25)),
        }
    return out


def _f5(x: np.ndarray, p: dict[str, float]) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    t = np.where(x > 0, (np.maximum(x, 1e-12) / p["c"]) ** p["b"], 0.0)
    return p["d"] + (p["a"] - p["d"]) / (1 + t) ** p["g"]


def _cohort_women(cohort_dir: Path) -> list[tuple[str, str, bool]]:
    with open(cohort_dir / "clinical.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    eff = cohort_dir / "truth" / "effects.json"
    subgroup: set[str] = set()
    if eff.exists():
        subgroup = set(json.loads(eff.read_text(encoding="utf-8")).get("immune_subgroup", []))
    return [(r["woman_id"], r["group"], r["woman_id"] in subgroup) for r in rows]


def _drawn_women(n: int, rng: np.random.Generator) -> list[tuple[str, str, bool]]:
    groups = ["RM" if i % 2 == 0 else "control" for i in range(n)]
    rm = [i for i, g in enumerate(groups) if g == "RM"]
    sub = set(rng.permutation(rm)[: int(round(0.4 * len(rm)))].tolist())
    return [(f"W{i + 1:03d}", groups[i], i in sub) for i in range(n)]


def _well_name(k: int) -> str:
    return f"{'ABCDEFGH'[k % 8]}{k // 8 + 1:02d}"


def make_bead_plate(
    out_dir: str | os.PathLike[str],
    *,
    n_women: int = 24,
    n_analytes: int = 13,
    events_per_well: int = 5000,
    seed: int = 0,
    plate_id: str = "BP1",
    cohort_dir: str | os.PathLike[str] | None = None,
    first_woman: int = 0,
    failed_region: str | None = None,
    sparse_region: str | None = None,
    shifted_region: str | None = None,
    saturated_sample: str | bool | None = None,
) -> BeadPlateSynth:
    """Write a synthetic bead plate: FCS files, sample sheet, panel and truth.

    Parameters
    ----------
    out_dir : path
    n_women : int
        Women on the plate (ignored when ``cohort_dir`` is given; at most 78 either way:
        the cohort's first 78).
    n_analytes : int
        The first ``n_analytes`` of :data:`ANALYTES_13` (split in two bead groups).
    events_per_well : int
    seed : int
    plate_id : str
    cohort_dir : path, optional
        A :func:`~flowtools.synth.make_cohort` folder to take the women from.
    first_woman : int
        Index of the cohort's first woman on this plate (plates of 78 women: 0, 78, ...).
    failed_region : str, optional
        An analyte whose beads are absent from the first sample well.
    sparse_region : str, optional
        An analyte with only 20 beads in the second sample well.
    shifted_region : str, optional
        An analyte whose classification peak is shifted by 0.3 of the peak gap in the third sample well.
    saturated_sample : str or bool, optional
        A woman (True: the first) whose concentrations are 50x the top standard.

    Returns
    -------
    BeadPlateSynth
    """
    if not 1 <= n_analytes <= len(ANALYTES_13):
        msg = f"n_analytes must be 1..{len(ANALYTES_13)}, not {n_analytes}"
        raise ValueError(msg)
    out = Path(out_dir)
    (out / "fcs").mkdir(parents=True, exist_ok=True)
    analytes = list(ANALYTES_13[:n_analytes])
    for name, v in (
        ("failed_region", failed_region),
        ("sparse_region", sparse_region),
        ("shifted_region", shifted_region),
    ):
        if v is not None and v not in analytes:
            msg = f"{name} {v!r} is not one of the plate's analytes ({', '.join(analytes)})"
            raise ValueError(msg)
    base = np.random.SeedSequence(seed)
    women_rng, plate_rng_seed = (np.random.default_rng(s) for s in base.spawn(2))
    women = _cohort_women(Path(cohort_dir)) if cohort_dir is not None else _drawn_women(n_women, women_rng)
    women = women[first_woman : first_woman + _MAX_SAMPLES]
    if not women:
        msg = f"no women left for the plate (first_woman={first_woman})"
        raise ValueError(msg)
    curves = _curves(n_analytes)
    # Women's concentrations (sample units): depend on the seed only.
    med = {a: float(10 ** (1.2 + 1.3 * (i % 5) / 4)) for i, a in enumerate(analytes)}
    truth: dict[str, dict[str, float]] = {}
    for w, _group, immune in women:
        r = np.random.default_rng([seed, zlib.crc32(w.encode())])
        conc = {a: med[a] * float(np.exp(r.normal(0, 0.45))) for a in analytes}
        if immune:
            for a in EFFECT_ANALYTES:
                if a in conc:
                    conc[a] *= EFFECT_FOLD
        truth[w] = conc
    sat_woman = None
    if saturated_sample:
        sat_woman = women[0][0] if saturated_sample is True else str(saturated_sample)
        if sat_woman not in truth:
            msg = f"saturated_sample {sat_woman!r} is not a woman of the plate"
            raise ValueError(msg)
        truth[sat_woman] = {a: 50 * TOP * SAMPLE_DILUTION for a in analytes}
    del plate_rng_seed
    prng = np.random.default_rng([seed, zlib.crc32(plate_id.encode()), 7])
    plate_gain = float(np.exp(prng.normal(0, 0.05)))  # plate-to-plate instrument gain
    ga, gb = _groups(n_analytes)
    group_of = {a: (0 if a in ga else 1) for a in analytes}
    pos = {
        **dict(zip(ga, _positions(len(ga)), strict=True)),
        **dict(zip(gb, _positions(len(gb)), strict=True)),
    }
    gap = {
        0: float(np.diff(_positions(len(ga)))[0]) if len(ga) > 1 else 1.0,
        1: float(np.diff(_positions(len(gb)))[0]) if len(gb) > 1 else 1.0,
    }

    wells: list[dict[str, object]] = []
    k = 0
    for rep in (1, 2):
        for level in range(1, N_POINTS + 1):
            sid = f"{plate_id}-STD{level}-{rep}"
            wells.append(
                {
                    "sample_id": sid,
                    "woman_id": sid,
                    "well": _well_name(k),
                    "role": "standard",
                    "level": str(level),
                    "conc": dict.fromkeys(analytes, TOP / DILUTION_FACTOR ** (level - 1)),
                }
            )
            k += 1
    for b in (1, 2):
        sid = f"{plate_id}-BLANK-{b}"
        wells.append(
            {
                "sample_id": sid,
                "woman_id": sid,
                "well": _well_name(k),
                "role": "blank",
                "level": "",
                "conc": dict.fromkeys(analytes, 0.0),
            }
        )
        k += 1
    for w, _g, _i in women:
        wells.append(
            {
                "sample_id": f"{w}-{plate_id}",
                "woman_id": w,
                "well": _well_name(k),
                "role": "sample",
                "level": "",
                "conc": {a: truth[w][a] / SAMPLE_DILUTION for a in analytes},
            }
        )
        k += 1
    samples = [x for x in wells if x["role"] == "sample"]
    special = {}
    if failed_region and samples:
        special[samples[0]["sample_id"]] = ("failed", failed_region)
    if sparse_region and len(samples) > 1:
        special[samples[1]["sample_id"]] = ("sparse", sparse_region)
    if shifted_region and len(samples) > 2:
        special[samples[2]["sample_id"]] = ("shifted", shifted_region)

    rows: list[SampleSheetRow] = []
    files: list[Path] = []
    for x in wells:
        sid = str(x["sample_id"])
        rng = np.random.default_rng([seed, zlib.crc32(plate_id.encode()), zlib.crc32(sid.encode())])
        ev = _well_events(
            rng,
            analytes,
            group_of,
            pos,
            gap,
            curves,
            x["conc"],
            events_per_well,  # type: ignore[arg-type]
            plate_gain,
            special.get(sid),
        )
        path = out / "fcs" / f"{sid}.fcs"
        write_fcs(
            path,
            ev.astype(np.float32),
            CHANNELS,
            markers=["", "", "reporter", "classification"],
            keywords={"$CYT": "synthetic bead cytometer", "$PLATEID": plate_id, "$WELLID": str(x["well"])},
        )
        files.append(path)
        rows.append(
            SampleSheetRow(
                file=path,
                sample_id=sid,
                woman_id=str(x["woman_id"]),
                tube="beads",
                plate=plate_id,
                well=str(x["well"]),
                extra={"role": str(x["role"]), "standard_level": str(x["level"])},
            )
        )
    write_sample_sheet(rows, out / "samples.csv")
    atomic_write_text(out / "panel.yaml", panel_yaml(n_analytes))
    (out / "truth").mkdir(exist_ok=True)
    lines = ["woman_id,group,immune_subgroup,analyte,concentration"]
    for w, g, imm in women:
        lines += [f"{w},{g},{int(imm)},{a},{truth[w][a]:.6g}" for a in analytes]
    atomic_write_text(out / "truth" / "concentrations.csv", "\n".join(lines) + "\n")
    info = {
        "plate_id": plate_id,
        "seed": seed,
        "n_analytes": n_analytes,
        "events_per_well": events_per_well,
        "curves": curves,
        "plate_gain": plate_gain,
        "sample_dilution": SAMPLE_DILUTION,
        "standards": {"top": TOP, "dilution_factor": DILUTION_FACTOR, "n_points": N_POINTS},
        "effect": {"analytes": list(EFFECT_ANALYTES), "fold": EFFECT_FOLD, "in": "immune subgroup"},
        "failed_region": None
        if not failed_region or not samples
        else {"sample_id": samples[0]["sample_id"], "analyte": failed_region},
        "sparse_region": None
        if not sparse_region or len(samples) < 2
        else {"sample_id": samples[1]["sample_id"], "analyte": sparse_region, "beads": 20},
        "shifted_region": None
        if not shifted_region or len(samples) < 3
        else {"sample_id": samples[2]["sample_id"], "analyte": shifted_region},
        "saturated_sample": sat_woman,
    }
    atomic_write_text(out / "truth" / "plate.json", json.dumps(info, indent=2) + "\n")
    return BeadPlateSynth(
        out,
        out / "samples.csv",
        out / "panel.yaml",
        out / "truth" / "concentrations.csv",
        out / "truth" / "plate.json",
        files,
        [w for w, _, _ in women],
        truth,
    )


def _well_events(
    rng: np.random.Generator,
    analytes: list[str],
    group_of: dict[str, int],
    pos: dict[str, float],
    gap: dict[int, float],
    curves: dict[str, dict[str, float]],
    conc: dict[str, float],
    n_events: int,
    gain: float,
    special: tuple[str, str] | None,
) -> np.ndarray:
    n_debris = int(0.08 * n_events)
    n_doublet = int(0.04 * n_events)
    n_beads = n_events - n_debris - n_doublet
    counts = rng.multinomial(n_beads, np.full(len(analytes), 1.0 / len(analytes)))
    if special is not None:
        kind, a = special
        j = analytes.index(a)
        counts[j] = 0 if kind == "failed" else (20 if kind == "sparse" else counts[j])
    drift = rng.normal(0, 0.04)  # per-well classification drift (asinh units)
    pipette = {a: float(np.exp(rng.normal(0, 0.04))) for a in analytes}
    blocks = []
    for j, a in enumerate(analytes):
        n = int(counts[j])
        if n == 0:
            continue
        g = group_of[a]
        fsc = rng.normal(_SCATTER[g][0], 0.035, n)
        ssc = _SCATTER[g][1] + 0.6 * (fsc - _SCATTER[g][0]) + rng.normal(0, 0.03, n)
        p = pos[a] + drift + (0.3 * gap[g] if special == ("shifted", a) else 0.0)
        apc = _COFACTOR * np.sinh(rng.normal(p, 0.07, n))
        mfi = float(_f5(np.array([conc[a] * pipette[a]]), curves[a])[0]) * gain
        pe = mfi * np.exp(rng.normal(0, 0.25, n)) + rng.normal(0, 3.0, n)
        blocks.append(np.column_stack([10**fsc, 10**ssc, pe, apc]))
    beads = np.vstack(blocks)
    # Doublets: two beads stuck together (scatter up, signals summed).
    i1, i2 = rng.integers(0, len(beads), (2, n_doublet))
    dbl = beads[i1] + beads[i2]
    dbl[:, 0] *= 0.85
    dbl[:, 1] *= 0.9
    deb = np.column_stack(
        [
            10 ** rng.uniform(3.0, 4.2, n_debris),
            10 ** rng.uniform(2.6, 3.9, n_debris),
            np.exp(rng.normal(np.log(30), 0.6, n_debris)),
            _COFACTOR * np.sinh(rng.uniform(0.5, 7.0, n_debris)),
        ]
    )
    ev = np.vstack([beads, dbl, deb])
    return ev[rng.permutation(len(ev))]
