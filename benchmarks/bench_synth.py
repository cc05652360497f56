"""Benchmark: generating the synthetic study cohort with :func:`flowtools.synth.make_cohort`.

Times one full run (FCS files, labels, sample sheet, clinical table, truth) of
``--women`` women (two files each) x ``--events`` events per file into a temporary
folder, ``--repeats`` times (a fresh folder each time; the median run is reported).
The target: 96 files x 100k events in under a minute on 2 cores.

Run from the repository root::

    python benchmarks/bench_synth.py
    python benchmarks/bench_synth.py --women 4 --events 5000

Results are printed as a table and written as JSON (default
``benchmarks/results/bench_synth.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from a checkout without installing
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from flowtools._version import __version__  # noqa: E402
from flowtools.synth import make_cohort  # noqa: E402


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    ap.add_argument("--women", type=int, default=48, help="women (two FCS files each)")
    ap.add_argument("--events", type=int, default=100_000, help="events per file")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1, help="timed runs (median reported)")
    ap.add_argument("--tmpdir", default=None, help="where to write the cohort (default: system temp dir)")
    ap.add_argument("--out-json", default=str(Path("benchmarks") / "results" / "bench_synth.json"))
    args = ap.parse_args(argv)

    times: list[float] = []
    n_files = n_events = n_bytes = 0
    for _ in range(max(1, args.repeats)):
        tmp = Path(tempfile.mkdtemp(prefix="bench_synth_", dir=args.tmpdir))
        try:
            t0 = time.perf_counter()
            res = make_cohort(tmp / "cohort", n_women=args.women, events=args.events, seed=args.seed)
            times.append(time.perf_counter() - t0)
            n_files, n_events, n_bytes = res.n_files, res.n_events, _tree_bytes(res.out_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    seconds = statistics.median(times)
    row = {
        "files": n_files,
        "events": n_events,
        "seconds": round(seconds, 3),
        "mb_written": round(n_bytes / 1e6, 1),
        "events_per_s": round(n_events / seconds),
    }
    print(f"{'files':>6} {'events':>12} {'seconds':>9} {'MB written':>11} {'events/s':>12}")
    print(
        f"{row['files']:>6} {row['events']:>12,} {row['seconds']:>9.2f} {row['mb_written']:>11.1f} "
        f"{row['events_per_s']:>12,}"
    )

    report = {
        "benchmark": "bench_synth",
        "flowtools": __version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "parameters": {
            "women": args.women,
            "events": args.events,
            "seed": args.seed,
            "repeats": args.repeats,
        },
        "runs_s": [round(t, 3) for t in times],
        "result": row,
    }
    out = Path(args.out_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
