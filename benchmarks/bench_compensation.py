"""Compensation of a 200k x 14 event matrix: flowtools vs FlowKit and flowutils, one run.

Prints a table and writes JSON (default benchmarks/results/bench_compensation.json).
All tools get the same float64 input events and the same 10x10 spillover matrix; the
outputs are checked to agree (max relative difference) before timing.

    python benchmarks/bench_compensation.py [--events 200000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flowtools.compensation import SpilloverMatrix  # noqa: E402
from flowtools.io import Spillover, read_fcs, write_fcs  # noqa: E402


def _timed(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out-json", default="benchmarks/results/bench_compensation.json")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    names = ["FSC-A", "FSC-H", "SSC-A"] + [f"FL{i}-A" for i in range(1, 11)] + ["Time"]
    dets = names[3:13]
    upper = np.triu(rng.uniform(0, 0.15, (10, 10)), 1)
    lower = np.tril(rng.uniform(0, 0.05, (10, 10)), -1)
    spill = np.eye(10) + upper + lower
    events = rng.lognormal(6, 1.5, size=(args.events, 14)).astype(np.float32)
    m = SpilloverMatrix.from_array(spill, dets)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.fcs"
        write_fcs(path, events, names, spillover=Spillover(tuple(dets), spill))
        sample = read_fcs(path)
        x = sample.as_array()
        rows = []
        ours = m.apply(x, sample.pnn)
        t_ft, raw_ft = _timed(lambda: m.apply(x, sample.pnn), args.repeats)
        rows.append(("flowtools", "SpilloverMatrix.apply(events, pnn)", t_ft, 0.0))
        t_raw, raw_ft32 = _timed(lambda: m.apply(sample.events, sample.pnn), args.repeats)
        rows.append(("flowtools (float32 in)", "SpilloverMatrix.apply(sample.events, pnn)", t_raw, 0.0))
        try:
            from flowutils.compensate import compensate as fu

            idx = list(m.channel_indices(sample.pnn))
            diff = float(np.max(np.abs(fu(x, spill, idx) - ours) / np.maximum(np.abs(ours), 1)))
            t_fu, _ = _timed(lambda: fu(x, spill, idx), args.repeats)
            rows.append(("flowutils", "compensate(events, spill, idx)", t_fu, diff))
        except ImportError:
            rows.append(("flowutils", "unavailable", float("nan"), float("nan")))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import flowkit as fk

                fks = fk.Sample(str(path))
                fk_matrix = fk.Matrix(spill, dets)

                def run_fk():
                    fks.apply_compensation(fk_matrix)
                    return fks.get_events(source="comp")

                diff = float(np.max(np.abs(run_fk() - ours) / np.maximum(np.abs(ours), 1)))
                t_fk, _ = _timed(run_fk, args.repeats)
            rows.append(("flowkit", "Sample.apply_compensation + get_events('comp')", t_fk, diff))
        except ImportError:
            rows.append(("flowkit", "unavailable", float("nan"), float("nan")))

    print(f"compensation of {args.events:,} x 14 events (10 detectors), median of {args.repeats}")
    print(f"{'tool':<24}{'call':<50}{'ms':>9}{'M events/s':>12}{'vs flowtools':>14}{'max rel diff':>14}")
    out_rows = []
    for tool, call, t, diff in rows:
        speed = args.events / t / 1e6 if t == t else float("nan")
        ratio = t / t_ft if t == t else float("nan")
        print(f"{tool:<24}{call:<50}{t * 1e3:>9.2f}{speed:>12.1f}{ratio:>13.1f}x{diff:>14.1e}")
        out_rows.append({"tool": tool, "call": call, "seconds": t,
                         "events_per_s": args.events / t if t == t else None,
                         "flowtools_speedup": ratio, "max_rel_diff": diff})
    result = {
        "benchmark": "compensation", "events": args.events, "channels": 14, "detectors": 10,
        "repeats": args.repeats, "rows": out_rows,
        "machine": {"python": platform.python_version(), "numpy": np.__version__,
                    "platform": platform.platform()},
    }
    out = Path(args.out_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"JSON: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
