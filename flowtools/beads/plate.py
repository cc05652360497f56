"""Run a bead plate: identify beads per well, MFI per region, standard curves per analyte, concentrations.

:func:`run_bead_plate` takes a sample sheet (plate layout in its ``role`` and
``standard_level`` columns, see :mod:`flowtools.beads.template`) and a bead panel, and
for every plate on the sheet:

1. reads each well (compensated with its own spillover when it has one) and finds its
   scatter groups;
2. finds the classification peaks of every well, pools the wells that show the expected
   number of peaks into the plate's reference positions (the template's positions when no
   well does), and assigns beads to regions against that reference (a shifted region is
   flagged, a missing one is flagged and left empty, never filled from a neighbour);
3. takes the median reporter (MFI) of each region with at least ``min_beads`` beads (a
   region with fewer is flagged ``few_beads`` and gets no concentration; its MFI stays
   in the well table);
4. per analyte, fits the weighted 5PL (and the 4PL, reported beside it) on the standards
   (replicate wells as separate points, blanks as concentration 0), after checking that the
   standards exist (``no_standards``), cover at least 5 levels (``too_few_standards``), rise
   (``non_monotone``: Spearman rho of level vs mean MFI < 0.9) and are not flat (``flat``: top
   level mean MFI < 3x the lowest); a failed check means no curve and no concentrations
   for that analyte on that plate, each flagged;
5. QC per curve: R² (log MFI), recovery and replicate CV per standard level
   (``replicate_cv`` flag above 20%), LLOQ/ULOQ (:func:`flowtools.beads.curve.quantifiable_range`),
   top-standard MFI;
6. back-calculates every well: within LLOQ-ULOQ a concentration (times the well's dilution)
   with its 95% interval; outside, ``concentration`` is **NaN** with the flag ``<LLOQ`` or
   ``>ULOQ`` and the limit crossed in ``limit`` (sample units); nothing is extrapolated.

A well that cannot be read, or lacks a channel of the panel, fails alone (its error names the
file); the plate goes on. The per-woman table combines a woman's sample wells (over plates) per
analyte: the geometric mean of the in-range values; when none is in range, the flag of the
censored wells and the limit.
"""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flowtools.beads.curve import (
    MAX_REPLICATE_CV,
    MIN_DYNAMIC,
    MIN_LEVELS,
    MIN_RHO,
    CurveFit,
    back_calculate,
    fit_curve,
    quantifiable_range,
)
from flowtools.beads.identify import (
    WellIdentification,
    find_peaks_1d,
    identify_events,
    read_well_events,
    reference_positions,
    scatter_groups,
)
from flowtools.beads.outputs import write_outputs
from flowtools.beads.template import BeadPanel, BeadWell, load_panel, read_bead_sheet
from flowtools.errors import BeadAssayError, FlowtoolsError

__all__ = ["AnalyteCurve", "BeadPlateResult", "check_standards", "run_bead_plate", "write_outputs"]



@dataclass
class AnalyteCurve:
    """One analyte's standard curve on one plate, with its QC.

    Attributes
    ----------
    plate, analyte : str
    fit : CurveFit or None
        The curve used (``model``); None when the checks failed.
    fit_alt : CurveFit or None
        The other model (4PL when 5PL is used), for comparison.
    lloq, uloq : float
        Quantifiable range, in well (assay) units; NaN when none.
    standards : list of dict
        Per level: nominal, wells, mean MFI, CV %, back-calculated, recovery %, passes.
    flags : list of str
    """

    plate: str
    analyte: str
    fit: CurveFit | None
    fit_alt: CurveFit | None
    lloq: float
    uloq: float
    standards: list[dict[str, Any]]
    flags: list[str]
    points: tuple[np.ndarray, np.ndarray] = field(default_factory=lambda: (np.empty(0), np.empty(0)))

    def row(self) -> dict[str, Any]:
        """One row of ``curves.csv``."""
        nan = float("nan")
        f = self.fit
        p = f.params if f is not None else dict.fromkeys("abcdg", nan)
        top = [s["mean_mfi"] for s in self.standards if s["level"] == 1]
        return {
            "plate": self.plate,
            "analyte": self.analyte,
            "model": f.model if f else "",
            "status": "ok"
            if f is not None and math.isfinite(self.lloq)
            else ("no_range" if f else "no_curve"),
            "a": p["a"],
            "b": p["b"],
            "c": p["c"],
            "d": p["d"],
            "g": p["g"],
            "r2": f.r2 if f else nan,
            "residual_cv": f.s if f else nan,
            "n_points": f.n if f else 0,
            "r2_alt": self.fit_alt.r2 if self.fit_alt else nan,
            "lloq": self.lloq,
            "uloq": self.uloq,
            "top_standard_mfi": top[0] if top else nan,
            "levels_passing": sum(bool(s["passes"]) for s in self.standards),
            "flags": ";".join(self.flags),
        }


@dataclass
class BeadPlateResult:
    """Everything :func:`run_bead_plate` found.

    Attributes
    ----------
    panel : BeadPanel
    wells : list of BeadWell
    well_rows : list of dict
        One row per well and analyte (``wells.csv``).
    per_woman : list of dict
        One row per woman and analyte (``per_woman.csv``).
    curves : dict of (plate, analyte) to AnalyteCurve
    identification : dict of str to WellIdentification
        Per sample_id (wells that could be read).
    well_errors : dict of str to str
        Per sample_id: why the well failed.
    plate_errors : dict of str to str
    events : dict of str to (ndarray, list of str)
        Events kept for the report's identification plots (a few wells).
    timings : dict of str to float
    outputs : dict of str to Path
    """

    panel: BeadPanel
    wells: list[BeadWell]
    well_rows: list[dict[str, Any]]
    per_woman: list[dict[str, Any]]
    curves: dict[tuple[str, str], AnalyteCurve]
    identification: dict[str, WellIdentification]
    well_errors: dict[str, str]
    plate_errors: dict[str, str]
    events: dict[str, tuple[np.ndarray, list[str]]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)

    @property
    def n_failed(self) -> int:
        """Wells that failed entirely (unreadable, a channel absent, no region found)."""
        return len(self.well_errors)

    def summary(self) -> dict[str, Any]:
        """Counts for display and ``--json``."""
        flags: dict[str, int] = defaultdict(int)
        for r in self.well_rows:
            if r["role"] == "sample":
                for f in str(r["flag"]).split(";"):
                    if f:
                        flags[f] += 1
        return {
            "plates": sorted({w.plate for w in self.wells}),
            "wells": len(self.wells),
            "failed_wells": self.n_failed,
            "well_errors": dict(self.well_errors),
            "plate_errors": dict(self.plate_errors),
            "analytes": self.panel.analytes,
            "women": len({r["woman_id"] for r in self.per_woman}),
            "curves_ok": sum(c.fit is not None and math.isfinite(c.lloq) for c in self.curves.values()),
            "curves": len(self.curves),
            "sample_flags": dict(sorted(flags.items())),
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "outputs": {k: str(v) for k, v in self.outputs.items()},
        }


def _ranks(a: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as ``scipy.stats.rankdata``."""
    a = np.asarray(a, dtype=float)
    order = np.argsort(a, kind="mergesort")
    r = np.empty(len(a))
    r[order] = np.arange(1, len(a) + 1)
    for v in np.unique(a):
        m = a == v
        if m.sum() > 1:
            r[m] = r[m].mean()
    return r


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho (numpy only: ``scipy.stats`` is slow to import for one correlation)."""
    if len(x) < 3 or np.ptp(y) == 0 or np.ptp(x) == 0:
        return float("nan")
    return float(np.corrcoef(_ranks(x), _ranks(y))[0, 1])


def check_standards(nominal: np.ndarray, mean_mfi: np.ndarray) -> str | None:
    """``non_monotone`` (Spearman rho < 0.9), ``flat`` (top < 3x bottom MFI) or None for a usable series."""
    nominal = np.asarray(nominal, dtype=float)
    mean_mfi = np.asarray(mean_mfi, dtype=float)
    if mean_mfi[np.argmax(nominal)] < MIN_DYNAMIC * max(float(mean_mfi[np.argmin(nominal)]), 1e-9):
        return "flat"
    if not _spearman(nominal, mean_mfi) >= MIN_RHO:
        return "non_monotone"
    return None


def _fit_analyte(
    plate: str,
    analyte: str,
    panel: BeadPanel,
    std: list[tuple[int, float, str]],
    blanks: list[float],
    model: str,
) -> AnalyteCurve:
    """Checks, fits and QC of one analyte's standards: ``std`` = (level, mfi, sample_id) per usable well."""
    nan = float("nan")
    flags: list[str] = []
    by_level: dict[int, list[float]] = defaultdict(list)
    for level, mfi, _sid in std:
        by_level[level].append(mfi)
    levels = sorted(by_level)
    nominal = np.array([panel.nominal(analyte, lv) for lv in levels])
    means = np.array([float(np.mean(by_level[lv])) for lv in levels])
    cvs = np.array(
        [
            100 * float(np.std(by_level[lv], ddof=1) / np.mean(by_level[lv]))
            if len(by_level[lv]) > 1 and np.mean(by_level[lv]) > 0
            else nan
            for lv in levels
        ]
    )
    rows = [
        {
            "plate": plate,
            "analyte": analyte,
            "level": lv,
            "nominal": float(nominal[i]),
            "wells": len(by_level[lv]),
            "mean_mfi": float(means[i]),
            "cv_pct": float(cvs[i]),
            "back_calculated": nan,
            "recovery_pct": nan,
            "passes": False,
            "flags": "replicate_cv" if cvs[i] > MAX_REPLICATE_CV else "",
        }
        for i, lv in enumerate(levels)
    ]
    if any(cvs > MAX_REPLICATE_CV):
        flags.append("replicate_cv")
    empty = AnalyteCurve(plate, analyte, None, None, nan, nan, rows, flags)
    if not std:
        flags.append("no_standards")
        return empty
    if len(levels) < MIN_LEVELS:
        flags.append("too_few_standards")
        return empty
    bad = check_standards(nominal, means)
    if bad is not None:
        flags.append(bad)
        return empty
    x = np.array([panel.nominal(analyte, lv) for lv, _, _ in std] + [0.0] * len(blanks))
    y = np.array([m for _, m, _ in std] + list(blanks))
    fit = fit_curve(x, y, model=model)
    alt = fit_curve(x, y, model="4pl" if model == "5pl" else "5pl")
    if (not fit.success or not fit.increasing) and alt.success and alt.increasing:
        flags.append(f"{model}_failed_used_{alt.model}")
        fit, alt = alt, fit
    if not fit.success or not fit.increasing:
        flags.append("fit_failed")
        return AnalyteCurve(plate, analyte, None, None, nan, nan, rows, flags, (x, y))
    back = fit.inverse(means)
    rec = 100 * back / nominal
    lloq, uloq, passing = quantifiable_range(nominal, rec, cvs, max_cv=MAX_REPLICATE_CV)
    for i, r in enumerate(rows):
        r.update(back_calculated=float(back[i]), recovery_pct=float(rec[i]), passes=bool(passing[i]))
    if not math.isfinite(lloq):
        flags.append("no_quantifiable_range")
    return AnalyteCurve(plate, analyte, fit, alt, lloq, uloq, rows, flags, (x, y))


def run_bead_plate(
    sheet: str | os.PathLike[str],
    panel: BeadPanel | str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    model: str = "5pl",
    keep_events: int = 6,
    command: str | None = None,
    seed: int = 0,
) -> BeadPlateResult:
    """Analyse the bead plate(s) of a sample sheet; see the module docstring.

    Parameters
    ----------
    sheet : path
        Sample sheet with the plate layout.
    panel : BeadPanel or path
        The bead panel (or its YAML file).
    out_dir : path, optional
        Where to write the tables (:func:`write_outputs`); None: nothing written.
    model : {"5pl", "4pl"}
    keep_events : int
        Wells per plate whose events are kept for the report's identification plots.
    command : str, optional
        Recorded in the provenance.
    seed : int
        Recorded in the provenance (the analysis itself is deterministic).

    Returns
    -------
    BeadPlateResult

    Raises
    ------
    SampleSheetError
        The sheet or its layout columns are invalid (every problem, by line and column).
    BeadAssayError
        The panel is invalid, or no plate on the sheet has any standard well.
    """
    t0 = time.perf_counter()
    pnl = panel if isinstance(panel, BeadPanel) else load_panel(panel)
    wells = read_bead_sheet(sheet, pnl)
    plates: dict[str, list[BeadWell]] = defaultdict(list)
    for w in wells:
        plates[w.plate].append(w)
    plate_errors = {
        p: f"plate {p!r}: no standard wells on the sheet (role=standard); no curve can be fitted"
        for p, ws in plates.items()
        if not any(w.role == "standard" for w in ws)
    }
    if len(plate_errors) == len(plates):
        msg = f"{sheet}: " + "; ".join(plate_errors.values())
        raise BeadAssayError(msg)
    timings: dict[str, float] = {}
    # 1. read every well, scatter groups and peaks per group
    errors: dict[str, str] = {}
    cache: dict[str, tuple[np.ndarray, list[str], tuple[np.ndarray, dict[str, Any]]]] = {}
    peaks: dict[str, dict[str, np.ndarray]] = {}
    t = time.perf_counter()
    for w in wells:
        try:
            ev, pnn = read_well_events(w.file)
            missing = [ch for ch in (*pnl.scatter, pnl.classification, pnl.reporter) if ch not in pnn]
            if missing:
                msg = (
                    f"{w.file}: plate {w.plate} well {w.well}: channel(s) {', '.join(map(repr, missing))} "
                    f"of the bead panel not found (channels: {', '.join(pnn)})"
                )
                raise BeadAssayError(msg)
            sx, sy = pnn.index(pnl.scatter[0]), pnn.index(pnl.scatter[1])
            sc = scatter_groups(ev[:, sx], ev[:, sy], len(pnl.groups), radius=pnl.scatter_radius)
        except (FlowtoolsError, OSError) as exc:
            errors[w.sample_id] = str(exc)
            continue
        cache[w.sample_id] = (ev, pnn, sc)
        ci = pnn.index(pnl.classification)
        v = np.arcsinh(ev[:, ci] / pnl.classification_cofactor)
        peaks[w.sample_id] = {
            g.name: find_peaks_1d(v[sc[0] == gi], len(g.regions)) for gi, g in enumerate(pnl.groups)
        }
    timings["read_and_scatter"] = time.perf_counter() - t
    # 2. plate references, then regions per well
    t = time.perf_counter()
    ident: dict[str, WellIdentification] = {}
    kept: dict[str, tuple[np.ndarray, list[str]]] = {}
    for ws in plates.values():
        ref: dict[str, np.ndarray] = {}
        for g in pnl.groups:
            r = reference_positions(
                [peaks[w.sample_id][g.name] for w in ws if w.sample_id in peaks], len(g.regions)
            )
            if r is not None:
                ref[g.name] = r
        for w in ws:
            if w.sample_id not in cache:
                continue
            ev, pnn, sc = cache[w.sample_id]
            wi = identify_events(ev, pnn, pnl, reference=ref or None, where=str(w.file), scatter=sc)
            ident[w.sample_id] = wi
            if all(b == 0 for b in wi.beads.values()):
                errors[w.sample_id] = (
                    f"{w.file}: plate {w.plate} well {w.well}: no bead region found "
                    f"({wi.scatter.get('events', 0)} events)"
                )
        # Wells shown in the report: flagged ones first, then the top standard, a blank, samples.
        done = [w for w in ws if w.sample_id in ident]
        flagged = [w for w in done if any(ident[w.sample_id].flags.values())]
        order = (
            flagged[:2]
            + [w for w in done if w.level == 1][:1]
            + [w for w in done if w.role == "blank"][:1]
            + [w for w in done if w.role == "sample"]
        )
        for w in list(dict.fromkeys(order))[:keep_events]:
            kept[w.sample_id] = cache[w.sample_id][:2]
    timings["identify"] = time.perf_counter() - t
    # 3-5. standard curves per plate and analyte
    t = time.perf_counter()
    curves: dict[tuple[str, str], AnalyteCurve] = {}
    for p, ws in plates.items():
        for a in pnl.analytes:
            std: list[tuple[int, float, str]] = []
            blanks: list[float] = []
            for w in ws:
                wi = ident.get(w.sample_id)
                if wi is None or w.sample_id in errors:
                    continue
                mfi, nb = wi.mfi[a], wi.beads[a]
                if not math.isfinite(mfi) or nb < pnl.min_beads:
                    continue
                if w.role == "standard" and w.level is not None:
                    std.append((w.level, mfi, w.sample_id))
                elif w.role == "blank":
                    blanks.append(mfi)
            curves[(p, a)] = _fit_analyte(p, a, pnl, std, blanks, model)
    timings["fit"] = time.perf_counter() - t
    # 6. back-calculation of every well
    t = time.perf_counter()
    rows: list[dict[str, Any]] = []
    nan = float("nan")
    for w in wells:
        wi = ident.get(w.sample_id)
        for a in pnl.analytes:
            cv = curves.get((w.plate, a))
            row: dict[str, Any] = {
                "plate": w.plate,
                "well": w.well,
                "sample_id": w.sample_id,
                "woman_id": w.woman_id if w.role == "sample" else "",
                "role": w.role,
                "standard_level": w.level if w.level is not None else 0,
                "analyte": a,
                "nominal": pnl.nominal(a, w.level) if w.level is not None else nan,
                "beads": 0,
                "mfi": nan,
                "dilution": w.dilution,
                "concentration": nan,
                "low": nan,
                "high": nan,
                "limit": nan,
                "lloq": nan,
                "uloq": nan,
                "flag": "",
            }
            flags: list[str] = []
            if w.plate in plate_errors:
                flags.append("no_standards")
            if wi is None or w.sample_id in errors:
                flags.append("well_failed")
            else:
                row["beads"], row["mfi"] = wi.beads[a], wi.mfi[a]
                flags += wi.flags[a]
            if cv is not None and math.isfinite(cv.lloq):
                row["lloq"], row["uloq"] = cv.lloq * w.dilution, cv.uloq * w.dilution
            usable = not flags or flags == ["shifted"]
            if usable and cv is not None and cv.fit is not None:
                bc = back_calculate(
                    cv.fit, float(row["mfi"]), lloq=cv.lloq, uloq=cv.uloq, dilution=w.dilution
                )
                row.update(
                    concentration=bc["concentration"], low=bc["low"], high=bc["high"], limit=bc["limit"]
                )
                if bc["flag"] != "ok":
                    flags.append(bc["flag"])
            elif usable:
                flags.append("no_curve")
            row["flag"] = ";".join(dict.fromkeys(flags)) or "ok"
            rows.append(row)
    per_woman = _per_woman(rows)
    timings["back_calculate"] = time.perf_counter() - t
    res = BeadPlateResult(pnl, wells, rows, per_woman, curves, ident, errors, plate_errors, kept, timings)
    if out_dir is not None:
        t = time.perf_counter()
        write_outputs(res, out_dir, sheet=sheet, command=command, seed=seed, model=model)
        timings["write"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    return res


_CENSOR = ("<LLOQ", ">ULOQ")


def _per_woman(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Combine a woman's sample wells per analyte (see the module docstring)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["role"] == "sample":
            groups[(r["woman_id"], r["analyte"])].append(r)
    out = []
    nan = float("nan")
    for (woman, analyte), rs in sorted(groups.items()):
        vals = [r["concentration"] for r in rs if math.isfinite(r["concentration"])]
        cens = [r for r in rs if any(c in r["flag"].split(";") for c in _CENSOR)]
        if vals:
            conc, flag, limit = float(np.exp(np.mean(np.log(vals)))), "ok", nan
        elif cens:
            low = [r for r in cens if "<LLOQ" in r["flag"]]
            pick = low if len(low) >= len(cens) - len(low) else [r for r in cens if ">ULOQ" in r["flag"]]
            conc, flag = nan, "<LLOQ" if pick is low else ">ULOQ"
            limit = (
                float(np.min([r["limit"] for r in pick]))
                if flag == "<LLOQ"
                else float(np.max([r["limit"] for r in pick]))
            )
        else:
            conc, flag, limit = nan, rs[0]["flag"], nan
        lloqs = [r["lloq"] for r in rs if math.isfinite(r["lloq"])]
        uloqs = [r["uloq"] for r in rs if math.isfinite(r["uloq"])]
        out.append(
            {
                "woman_id": woman,
                "analyte": analyte,
                "concentration": conc,
                "flag": flag,
                "limit": limit,
                "lloq": float(np.max(lloqs)) if lloqs else nan,
                "uloq": float(np.min(uloqs)) if uloqs else nan,
                "n_wells": len(rs),
                "n_in_range": len(vals),
                "cv_pct": float(100 * np.std(vals, ddof=1) / np.mean(vals)) if len(vals) > 1 else nan,
                "plates": ";".join(sorted({r["plate"] for r in rs})),
            }
        )
    return out
