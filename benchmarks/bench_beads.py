"""Bead arrays: 96-well plates (13 analytes, ~5k events a well) from FCS files to concentrations and report.

Makes 3 synthetic plates (flowtools.synth.beads) measuring the same 78 women, runs each one
(``flowtools.beads.plate.run_bead_plate`` + ``flowtools.report.beads.write_bead_report``),
times every stage, and checks:

* recovery of the known concentrations inside LLOQ-ULOQ (share within +-20%, median ratio);
* intra-plate CV: replicate CV of the standards inside the quantifiable range;
* inter-plate CV: CV across the 3 plates of each woman's in-range concentration;
* the 5PL fit against an independent fit of the same weighted problem
  (``scipy.optimize.curve_fit`` with ``sigma = y`` from a generic start): parameters and
  back-calculated concentrations, maximum relative difference.

There is no open-source peer that goes from bead-array FCS files to concentrations (vendor
software does; open tools start from exported MFI tables), so no peer is timed.

    python benchmarks/bench_beads.py [--plates 3] [--events 5000] [--out benchmarks/results/beads.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flowtools.beads.plate import run_bead_plate  # noqa: E402
from flowtools.report.beads import write_bead_report  # noqa: E402
from flowtools.synth.beads import make_bead_plate  # noqa: E402

PEER_NOTE = (
    "no open-source peer converts bead-array FCS files to concentrations; the 5PL fit is compared "
    "with scipy.optimize.curve_fit on the same weighted problem instead"
)


def _f5(x, a, b, c, d, g):
    return d + (a - d) / (1.0 + (x / c) ** b) ** g


def _independent(res) -> dict[str, float]:
    """Max relative difference of parameters and back-calculated values, ours vs curve_fit."""
    from scipy.optimize import curve_fit

    worst_p, worst_x, n = 0.0, 0.0, 0
    for cv in res.curves.values():
        if cv.fit is None or cv.fit.model != "5pl":
            continue
        x, y = cv.points
        p0 = [y.min(), 1.0, float(np.exp(np.log(x[x > 0]).mean())), y.max(), 1.0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref, _ = curve_fit(
                _f5,
                x,
                y,
                p0=p0,
                sigma=np.maximum(np.abs(y), 1.0),
                max_nfev=50000,
                ftol=1e-12,
                xtol=1e-12,
                gtol=1e-12,
                bounds=([-np.inf, 0.05, 1e-3, -np.inf, 0.05], [np.inf, 20, 1e9, np.inf, 20]),
            )
        ours = np.array([cv.fit.params[k] for k in "abcdg"])
        ours_cost = float((((y - _f5(x, *ours)) / np.maximum(y, 1)) ** 2).sum())
        ref_cost = float((((y - _f5(x, *ref)) / np.maximum(y, 1)) ** 2).sum())
        if ref_cost < ours_cost * (1 - 1e-9):
            print(f"  note: curve_fit found a lower cost for {cv.analyte} ({ref_cost:.6g} < {ours_cost:.6g})")
        probe = np.array([s["mean_mfi"] for s in cv.standards if s["passes"]])
        xr = ref[2] * (((ref[0] - ref[3]) / (probe - ref[3])) ** (1 / ref[4]) - 1) ** (1 / ref[1])
        worst_p = max(worst_p, float(np.max(np.abs(ours - ref) / np.abs(ref))))
        worst_x = max(worst_x, float(np.nanmax(np.abs(cv.fit.inverse(probe) - xr) / xr)))
        n += 1
    return {"curves": n, "max_rel_diff_params": worst_p, "max_rel_diff_back_calculated": worst_x}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table; write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plates", type=int, default=3)
    ap.add_argument("--events", type=int, default=5000)
    ap.add_argument("--women", type=int, default=78)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "beads.json")
    args = ap.parse_args(argv)
    import pandas as pd

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        per_plate = []
        truth = None
        for k in range(args.plates):
            t = time.perf_counter()
            bp = make_bead_plate(
                Path(tmp) / f"P{k + 1}",
                n_women=args.women,
                n_analytes=13,
                events_per_well=args.events,
                seed=0,
                plate_id=f"P{k + 1}",
            )
            t_synth = time.perf_counter() - t
            t = time.perf_counter()
            res = run_bead_plate(bp.sheet, bp.panel, Path(tmp) / f"P{k + 1}" / "out")
            t_run = time.perf_counter() - t
            t = time.perf_counter()
            write_bead_report(res, Path(tmp) / f"P{k + 1}" / "out" / "report.html")
            t_report = time.perf_counter() - t
            truth = pd.read_csv(bp.truth_csv, dtype={"woman_id": str})
            pw = pd.DataFrame(res.per_woman).merge(truth, on=["woman_id", "analyte"], suffixes=("", "_true"))
            ok = pw[pw["flag"] == "ok"]
            ratio = ok["concentration"] / ok["concentration_true"]
            cvs = [s["cv_pct"] for c in res.curves.values() for s in c.standards if s["passes"]]
            stages = {
                **{k2: round(v, 3) for k2, v in res.timings.items() if k2 != "total"},
                "report": round(t_report, 3),
            }
            row = {
                "plate": f"P{k + 1}",
                "wells": len(res.wells),
                "events_per_well": args.events,
                "synth_s": round(t_synth, 3),
                "run_s": round(t_run, 3),
                "report_s": round(t_report, 3),
                "fcs_to_table_and_report_s": round(t_run + t_report, 3),
                "stages_s": stages,
                "in_range": int(len(ok)),
                "values": int(len(pw)),
                "recovery_within_20pct": float((np.abs(ratio - 1) <= 0.2).mean()),
                "recovery_median_ratio": float(ratio.median()),
                "recovery_p05_p95": [float(ratio.quantile(0.05)), float(ratio.quantile(0.95))],
                "intra_plate_cv_median_pct": float(np.nanmedian(cvs)),
                "intra_plate_cv_p90_pct": float(np.nanpercentile(cvs, 90)),
                "failed_wells": res.n_failed,
                "curves_ok": res.summary()["curves_ok"],
                "independent_fit": _independent(res),
            }
            results.append(row)
            per_plate.append(pw[["woman_id", "analyte", "concentration"]].assign(plate=f"P{k + 1}"))
        both = pd.concat(per_plate)
        g = both.dropna().groupby(["woman_id", "analyte"])["concentration"]
        stats = g.agg(["count", "mean", "std"])
        stats = stats[stats["count"] == args.plates]
        inter = 100 * stats["std"] / stats["mean"]
    summary = {
        "benchmark": "bench_beads",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "plates": results,
        "inter_plate_cv_median_pct": float(inter.median()),
        "inter_plate_cv_p90_pct": float(inter.quantile(0.9)),
        "inter_plate_pairs": int(len(inter)),
        "targets": {
            "fcs_to_table_and_report_s": 10,
            "recovery_within_20pct": "inside LLOQ-ULOQ",
            "intra_plate_cv_pct": 15,
            "inter_plate_cv_pct": 20,
        },
        "peer": PEER_NOTE,
    }
    print(
        f"{'plate':6} {'wells':>5} {'run s':>6} {'report s':>8} {'total s':>7} {'rec+-20%':>8} "
        f"{'med ratio':>9} "
        f"{'intraCV%':>8} {'fit dparam':>10} {'fit dconc':>9}"
    )
    for r in results:
        f = r["independent_fit"]
        print(
            f"{r['plate']:6} {r['wells']:5d} {r['run_s']:6.2f} {r['report_s']:8.2f} "
            f"{r['fcs_to_table_and_report_s']:7.2f} {r['recovery_within_20pct']:8.3f} "
            f"{r['recovery_median_ratio']:9.3f} {r['intra_plate_cv_median_pct']:8.2f} "
            f"{f['max_rel_diff_params']:10.2e} {f['max_rel_diff_back_calculated']:9.2e}"
        )
        print("       stages:", r["stages_s"])
    print(
        f"inter-plate CV: median {summary['inter_plate_cv_median_pct']:.2f}%, "
        f"90th pct {summary['inter_plate_cv_p90_pct']:.2f}% over {summary['inter_plate_pairs']} "
        "woman x analyte"
    )
    print("peer:", PEER_NOTE)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
