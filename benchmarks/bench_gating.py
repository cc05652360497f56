"""Benchmark: gating a plate end to end (read + compensate + transform + gate), flowtools vs FlowKit.

Writes a synthetic plate with :func:`flowtools.synth.make_cohort` (``--files`` FCS 3.1 files of
``--events`` events, each with its ``$SPILLOVER``), builds a realistic gating strategy in
flowtools objects, exports it as Gating-ML 2.0 with :func:`write_gatingml`, and gates every
file of the plate with both tools from that same XML document:

* ``flowtools``     ``read_gatingml(xml)``, then per file ``gate_sample(strategy, read_fcs(path))``,
                    serially (block-wise evaluation, ``flowtools.gating._blockwise``: serial kernels
                    on blocks of 16,384 events; the default thread count changes nothing);
* ``flowtools-1t``  the same with ``NUMBA_NUM_THREADS=1`` (one core, as FlowKit);
* ``flowtools-jN``  the same over a ``ProcessPoolExecutor(N)`` (``--jobs N``, N > 1), one Numba
                    thread per worker;
* ``flowkit``       ``Session(gating_strategy=xml)`` + ``add_samples(paths)`` +
                    ``analyze_samples(use_mp=False)`` (serial), counts from
                    ``get_analysis_report()``;
* ``flowkit-mpN``   the same with ``use_mp=True`` (FlowKit's own process pool), run when
                    ``--jobs N`` > 1: the like-for-like peer of ``flowtools-jN``.

Every tool runs in its own fresh Python subprocess, so the peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``; for the process pool, plus the sum of every
worker's own ``ru_maxrss``, an upper bound of their concurrent use) is that tool's alone. Imports
are not timed; each tool then gates the first file once, untimed (imports of lazy modules, Numba
JIT or its disk cache), and the timed pass covers the whole plate: parsing the XML, reading,
compensating (``compensation-ref="FCS"``: the file's ``$SPILLOVER``), transforming (logicle
T=262144, W=0.5, M=4.5, A=0 on every fluorescence dimension; scatter is linear) and gating every
file.

The plate is ``ceil(files / 2)`` women x two tubes (TBNK-NK and Treg-Th), which stain different
markers on the same detectors, so each tube has its own strategy and every file is gated by the
strategy of its tube (one Gating-ML document and one FlowKit Session per tube):

* TBNK-NK, 17 gates: Singlets (polygon FSC-A x FSC-H), Live (Viability range), CD45pos (range),
  Lymphocytes / Monocytes / Granulocytes (polygons FSC-A x SSC-A), Neutrophils (CD16 range),
  Tcells and NKTlike (CD3 x CD56 rectangles), Bcells and NKcells (polygons), CD4CD8 (quadrant
  gate, four populations), NK_CD56bright / NK_CD56dim (polygons CD16 x CD56), Mono_classical
  (ellipse CD14 x CD16), Mono_intermediate (rectangle), Mono_nonclassical (3-D rectangle
  CD14 x CD16 x HLA-DR);
* Treg-Th, 14 gates: Singlets, CD45pos, Lymphocytes / Monocytes / Granulocytes, Tcells (CD3
  range), CD4CD8 (quadrant), Treg (polygon CD25 x CD127, child of the CD4+CD8- quadrant),
  FOXP3pos_Treg, Th17, Th1 (ranges), CD4_naive (rectangle CD45RA x CD127), CD4_memory (boolean
  and with complements), Th1_or_Th17 (boolean or).

Every count of every population in every file must be identical between the tools.

Targets (from the issue): flowtools >= 20x faster than FlowKit end to end, at <= 1/3 of its
peak memory, with identical counts.

Run from the repository root::

    python benchmarks/bench_gating.py
    python benchmarks/bench_gating.py --files 8 --events 50000 --jobs 2

Results are printed as a table and written as JSON (default
``benchmarks/results/bench_gating.json``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from a checkout without installing
    sys.path.insert(0, str(REPO))

SPEED_TARGET = 20.0  # flowtools must be this many times faster than FlowKit
MEMORY_TARGET = 1 / 3  # flowtools peak RSS must be at most this share of FlowKit's
ALL_TOOLS = ("flowtools", "flowkit")

# Logicle on every fluorescence dimension; scatter stays linear (no transformation).
LOGICLE = {"T": 262144.0, "W": 0.5, "M": 4.5, "A": 0.0}
XF = "logicle"


# ---------------------------------------------------------------------------------------------
# The gating strategies (one per tube): hand-picked coordinates on the synthetic data


def build_strategy(tube: str) -> Any:
    """The gating strategy of one tube of the synthetic cohort, as flowtools objects.

    Scatter coordinates are linear scale values; fluorescence coordinates are logicle values
    (0..1) of the compensated data (``compensation-ref="FCS"``).
    """
    from flowtools.gating import (
        BooleanGate,
        Dimension,
        EllipsoidGate,
        GatingStrategy,
        PolygonGate,
        Quadrant,
        QuadrantDivider,
        QuadrantGate,
        RectangleGate,
    )
    from flowtools.transforms import LogicleTransform

    def sc(name: str) -> Dimension:  # linear scatter
        return Dimension(name, "uncompensated", None)

    def fl(detector: str) -> Dimension:  # compensated with the file's $SPILLOVER, logicle
        return Dimension(detector, "FCS", XF)

    fsc_a, fsc_h, ssc_a = sc("FSC-A"), sc("FSC-H"), sc("SSC-A")
    # Singlets: FSC-H / FSC-A about 0.88 for singlets, about 0.56 for doublets.
    singlets = PolygonGate(
        "Singlets",
        (fsc_a, fsc_h),
        ((-1000.0, -1000.0), (262144.0, 190000.0), (262144.0, 262144.0), (-1000.0, 20000.0)),
    )
    lymph_poly = (
        (25000.0, 1000.0),
        (85000.0, 1000.0),
        (90000.0, 24000.0),
        (70000.0, 30000.0),
        (25000.0, 30000.0),
    )
    mono_poly = (
        (50000.0, 30000.0),
        (70000.0, 30000.0),
        (90000.0, 24000.0),
        (135000.0, 28000.0),
        (140000.0, 70000.0),
        (50000.0, 70000.0),
    )
    gran_poly = (
        (50000.0, 70000.0),
        (140000.0, 70000.0),
        (180000.0, 110000.0),
        (180000.0, 262144.0),
        (60000.0, 262144.0),
    )

    if tube == "TBNK-NK":
        cd3, cd16, cd4, cd56 = fl("FITC-A"), fl("PE-A"), fl("PerCP-Cy5.5-A"), fl("PE-Cy7-A")
        cd19, cd8, viab, cd45 = fl("APC-A"), fl("APC-Cy7-A"), fl("BV421-A"), fl("BV510-A")
        cd14, hladr = fl("BV605-A"), fl("BV786-A")
        gates = [
            singlets,
            RectangleGate("Live", (viab,), (None,), (0.70,), parent="Singlets"),
            RectangleGate("CD45pos", (cd45,), (0.45,), (None,), parent="Live"),
            PolygonGate("Lymphocytes", (fsc_a, ssc_a), lymph_poly, parent="CD45pos"),
            PolygonGate("Monocytes", (fsc_a, ssc_a), mono_poly, parent="CD45pos"),
            PolygonGate("Granulocytes", (fsc_a, ssc_a), gran_poly, parent="CD45pos"),
            RectangleGate("Neutrophils", (cd16,), (0.70,), (None,), parent="Granulocytes"),
            RectangleGate("Tcells", (cd3, cd56), (0.50, None), (None, 0.45), parent="Lymphocytes"),
            RectangleGate("NKTlike", (cd3, cd56), (0.50, 0.45), (None, None), parent="Lymphocytes"),
            PolygonGate(
                "Bcells",
                (cd3, cd19),
                ((-0.3, 0.55), (0.45, 0.55), (0.45, 1.1), (-0.3, 1.1)),
                parent="Lymphocytes",
            ),
            PolygonGate(
                "NKcells",
                (cd3, cd56),
                ((-0.3, 0.45), (0.45, 0.45), (0.45, 1.1), (-0.3, 1.1)),
                parent="Lymphocytes",
            ),
            QuadrantGate(
                "CD4CD8",
                (QuadrantDivider("div_CD4", cd4, (0.42,)), QuadrantDivider("div_CD8", cd8, (0.42,))),
                (
                    Quadrant("CD4pos_CD8neg", (("div_CD4", 0.8), ("div_CD8", 0.1))),
                    Quadrant("CD4neg_CD8pos", (("div_CD4", 0.1), ("div_CD8", 0.8))),
                    Quadrant("CD4pos_CD8pos", (("div_CD4", 0.8), ("div_CD8", 0.8))),
                    Quadrant("CD4neg_CD8neg", (("div_CD4", 0.1), ("div_CD8", 0.1))),
                ),
                parent="Tcells",
            ),
            PolygonGate(
                "NK_CD56bright",
                (cd16, cd56),
                ((-0.3, 0.75), (0.50, 0.75), (0.50, 1.1), (-0.3, 1.1)),
                parent="NKcells",
            ),
            PolygonGate(
                "NK_CD56dim",
                (cd16, cd56),
                ((0.50, 0.45), (1.1, 0.45), (1.1, 0.80), (0.50, 0.75)),
                parent="NKcells",
            ),
            EllipsoidGate(
                "Mono_classical",
                (cd14, cd16),
                (0.835, 0.15),
                ((0.0012, 0.0004), (0.0004, 0.020)),
                6.25,
                parent="Monocytes",
            ),
            RectangleGate("Mono_intermediate", (cd14, cd16), (0.68, 0.50), (None, 0.76), parent="Monocytes"),
            # CD14dim CD16+ HLA-DR+ (HLA-DR keeps out the granulocytes of the monocyte scatter gate)
            RectangleGate(
                "Mono_nonclassical",
                (cd14, cd16, hladr),
                (0.30, 0.62, 0.50),
                (0.68, None, None),
                parent="Monocytes",
            ),
        ]
    elif tube == "Treg-Th":
        cd45ra, il17, cd4, cd127 = fl("FITC-A"), fl("PE-A"), fl("PerCP-Cy5.5-A"), fl("PE-Cy7-A")
        foxp3, cd8, cd3, ifng = fl("APC-A"), fl("APC-R700-A"), fl("APC-Cy7-A"), fl("BV421-A")
        cd45, cd25 = fl("BV510-A"), fl("BV605-A")
        gates = [
            singlets,
            RectangleGate("CD45pos", (cd45,), (0.45,), (None,), parent="Singlets"),
            PolygonGate("Lymphocytes", (fsc_a, ssc_a), lymph_poly, parent="CD45pos"),
            PolygonGate("Monocytes", (fsc_a, ssc_a), mono_poly, parent="CD45pos"),
            PolygonGate("Granulocytes", (fsc_a, ssc_a), gran_poly, parent="CD45pos"),
            RectangleGate("Tcells", (cd3,), (0.50,), (None,), parent="Lymphocytes"),
            QuadrantGate(
                "CD4CD8",
                (QuadrantDivider("div_CD4", cd4, (0.42,)), QuadrantDivider("div_CD8", cd8, (0.45,))),
                (
                    Quadrant("CD4pos_CD8neg", (("div_CD4", 0.8), ("div_CD8", 0.1))),
                    Quadrant("CD4neg_CD8pos", (("div_CD4", 0.1), ("div_CD8", 0.8))),
                    Quadrant("CD4pos_CD8pos", (("div_CD4", 0.8), ("div_CD8", 0.8))),
                    Quadrant("CD4neg_CD8neg", (("div_CD4", 0.1), ("div_CD8", 0.1))),
                ),
                parent="Tcells",
            ),
            PolygonGate(
                "Treg",
                (cd25, cd127),
                ((0.66, -0.3), (1.1, -0.3), (1.1, 0.50), (0.72, 0.46)),
                parent="CD4pos_CD8neg",
            ),
            RectangleGate("FOXP3pos_Treg", (foxp3,), (0.55,), (None,), parent="Treg"),
            RectangleGate("Th17", (il17,), (0.60,), (None,), parent="CD4pos_CD8neg"),
            RectangleGate("Th1", (ifng,), (0.55,), (None,), parent="CD4pos_CD8neg"),
            RectangleGate("CD4_naive", (cd45ra, cd127), (0.55, 0.50), (None, None), parent="CD4pos_CD8neg"),
            BooleanGate("CD4_memory", "and", (("CD4pos_CD8neg", False), ("CD4_naive", True), ("Treg", True))),
            BooleanGate("Th1_or_Th17", "or", (("Th1", False), ("Th17", False))),
        ]
    else:
        msg = f"no strategy for tube {tube!r}"
        raise ValueError(msg)
    return GatingStrategy(tuple(gates), transforms={XF: LogicleTransform(**LOGICLE)})


# ---------------------------------------------------------------------------------------------
# Plate


def make_plate(directory: Path, n_files: int, n_events: int, seed: int) -> list[dict[str, Any]]:
    """Write the cohort and return one job per tube: ``{"tube", "xml", "files"}`` (files in plate order)."""
    from flowtools.gating.formats.gatingml import write_gatingml
    from flowtools.synth import make_cohort

    res = make_cohort(directory / "cohort", n_women=math.ceil(n_files / 2), events=n_events, seed=seed)
    with open(res.samples_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))[:n_files]
    jobs = []
    for tube in dict.fromkeys(r["tube"] for r in rows):
        xml = write_gatingml(build_strategy(tube), directory / f"strategy_{tube}.xml")
        files = [str(res.out_dir / r["file"]) for r in rows if r["tube"] == tube]
        jobs.append({"tube": tube, "xml": str(xml), "files": files})
    return jobs


# ---------------------------------------------------------------------------------------------
# Workers: each runs in a fresh subprocess and writes its counts, timings and peak RSS as JSON


def _rss_kb(who: int) -> int:
    import resource

    return int(resource.getrusage(who).ru_maxrss)  # KiB on Linux


def _flowtools_file(xml: str, path: str) -> tuple[dict[str, int], int, int]:
    """Read and gate one file in a pool worker: (counts, worker pid, worker peak RSS in KiB)."""
    from flowtools.gating import gate_sample
    from flowtools.gating.formats.gatingml import read_gatingml
    from flowtools.io import read_fcs

    strategy = _STRATEGIES.get(xml)
    if strategy is None:
        strategy = _STRATEGIES[xml] = read_gatingml(xml)
    counts = gate_sample(strategy, read_fcs(path)).counts()
    return counts, os.getpid(), _rss_kb(0)


_STRATEGIES: dict[str, Any] = {}


def worker_flowtools(jobs: list[dict[str, Any]], n_jobs: int) -> dict[str, Any]:
    import flowtools
    from flowtools.gating import gate_sample
    from flowtools.gating.formats.gatingml import read_gatingml
    from flowtools.io import read_fcs

    rss_import = _rss_kb(0)
    t0 = time.perf_counter()
    gate_sample(read_gatingml(jobs[0]["xml"]), read_fcs(jobs[0]["files"][0]))  # untimed warm-up
    warm_s = time.perf_counter() - t0
    _STRATEGIES.clear()
    counts: dict[str, dict[str, int]] = {}
    file_s: list[float] = []
    worker_rss: dict[int, int] = {}  # pool worker pid -> its peak RSS (KiB)
    if n_jobs <= 1:
        t_start = time.perf_counter()
        for job in jobs:
            strategy = read_gatingml(job["xml"])
            for path in job["files"]:
                t = time.perf_counter()
                counts[Path(path).name] = gate_sample(strategy, read_fcs(path)).counts()
                file_s.append(time.perf_counter() - t)
        wall = time.perf_counter() - t_start
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # The pool is started (and its workers warmed) before timing, like the serial warm-up.
        with ProcessPoolExecutor(max_workers=n_jobs, mp_context=mp.get_context("forkserver")) as pool:
            list(pool.map(_flowtools_file, [jobs[0]["xml"]] * n_jobs, [jobs[0]["files"][0]] * n_jobs))
            t_start = time.perf_counter()
            work = [(job["xml"], p) for job in jobs for p in job["files"]]
            results = pool.map(_flowtools_file, *zip(*work, strict=True))
            for (_, path), (c, pid, rss) in zip(work, results, strict=True):
                counts[Path(path).name] = c
                worker_rss[pid] = max(worker_rss.get(pid, 0), rss)
            wall = time.perf_counter() - t_start
    import numba

    return {
        "version": flowtools.__version__,
        "counts": counts,
        "wall_s": wall,
        "file_s": file_s,
        "warmup_s": warm_s,
        "rss_after_import_kb": rss_import,
        "peak_rss_kb": _rss_kb(0),
        "peak_rss_children_kb": sum(worker_rss.values()),
        "threads": numba.get_num_threads(),
    }


def worker_flowkit(jobs: list[dict[str, Any]], n_jobs: int = 1) -> dict[str, Any]:
    import gc
    import warnings

    warnings.simplefilter("ignore")
    import flowkit

    rss_import = _rss_kb(0)
    t0 = time.perf_counter()
    warm = flowkit.Session(gating_strategy=jobs[0]["xml"], fcs_samples=[jobs[0]["files"][0]])
    warm.analyze_samples(use_mp=False)  # untimed warm-up on the first file
    del warm
    gc.collect()
    warm_s = time.perf_counter() - t0
    counts: dict[str, dict[str, int]] = {}
    t_start = time.perf_counter()
    for job in jobs:
        session = flowkit.Session(gating_strategy=job["xml"])
        session.add_samples(job["files"])
        session.analyze_samples(use_mp=n_jobs > 1)  # FlowKit's own process pool (all cores)
        report = session.get_analysis_report()
        for sample_id, gate, n in zip(report["sample_id"], report["gate_name"], report["count"], strict=True):
            counts.setdefault(str(sample_id), {})[str(gate)] = int(n)
        del session, report
    wall = time.perf_counter() - t_start
    return {
        "version": flowkit.__version__,
        "counts": counts,
        "wall_s": wall,
        "file_s": [],
        "warmup_s": warm_s,
        "rss_after_import_kb": rss_import,
        "peak_rss_kb": _rss_kb(0),
        "peak_rss_children_kb": _rss_kb(-1),  # the largest pool process (use_mp)
        "threads": 1,
    }


def run_worker(tool: str, manifest: Path, env_extra: dict[str, str], jobs_n: int = 1) -> dict[str, Any]:
    """Run one tool in a fresh interpreter and return what it reports."""
    out = manifest.with_name(f"result_{tool}.json")
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        tool.split("-")[0],
        "--manifest",
        str(manifest),
        "--result",
        str(out),
        "--jobs",
        str(jobs_n),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env={**os.environ, **env_extra}, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        return {"error": last, "process_s": elapsed}
    res = json.loads(out.read_text())
    res["process_s"] = elapsed
    return res


# ---------------------------------------------------------------------------------------------
# Report


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo, or platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def compare(
    ref: dict[str, dict[str, int]], other: dict[str, dict[str, int]]
) -> list[tuple[str, str, Any, Any]]:
    """(file, population, reference count, other count) wherever they differ (a missing one is None)."""
    bad = []
    for f in sorted(set(ref) | set(other)):
        a, b = ref.get(f, {}), other.get(f.removesuffix(".fcs"), other.get(f, {}))
        for pop in sorted(set(a) | set(b)):
            if a.get(pop) != b.get(pop):
                bad.append((f, pop, a.get(pop), b.get(pop)))
    return bad


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    """Print the results table with rich when available, else plain text."""
    headers = [
        "tool",
        "wall s",
        "ms/sample",
        "peak RSS MB",
        "flowtools speed-up",
        "memory vs flowkit",
        "counts",
    ]
    cells = []
    for r in rows:
        if r.get("error"):
            cells.append([r["tool"], "error", "-", "-", "-", "-", str(r["error"])[:60]])
            continue
        cells.append(
            [
                r["tool"],
                f"{r['wall_s']:.2f}",
                f"{r['ms_per_sample']:.1f}",
                f"{r['peak_rss_mb']:.0f}",
                "-" if r["speedup"] is None else f"{r['speedup']:.1f}x",
                "-" if r["memory_ratio"] is None else f"{r['memory_ratio']:.3f}",
                r["check"],
            ]
        )
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
        print(title)
        print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
        for c in cells:
            print("  ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)))
        return
    table = Table(title=title)
    for i, h in enumerate(headers):
        table.add_column(h, justify="right" if 1 <= i <= 5 else "left")
    for c in cells:
        table.add_row(*c)
    Console(width=140).print(table)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0 when every target passes, 1 otherwise."""
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    ap.add_argument("--files", type=int, default=24, help="files in the plate (women x 2 tubes)")
    ap.add_argument("--events", type=int, default=200_000, help="events per file")
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--tools", default=",".join(ALL_TOOLS), help="comma-separated: flowtools, flowkit")
    ap.add_argument(
        "--jobs",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="processes of the parallel flowtools variant (1: no parallel variant)",
    )
    ap.add_argument(
        "--no-single-thread", action="store_true", help="skip the flowtools run with NUMBA_NUM_THREADS=1"
    )
    ap.add_argument("--tmpdir", default=None, help="where to write the plate (default: system temp dir)")
    ap.add_argument("--out-json", default=str(Path("benchmarks") / "results" / "bench_gating.json"))
    ap.add_argument("--worker", choices=ALL_TOOLS, help=argparse.SUPPRESS)
    ap.add_argument("--manifest", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:  # inside a tool's own subprocess
        jobs = json.loads(Path(args.manifest).read_text())
        res = (
            worker_flowtools(jobs, args.jobs)
            if args.worker == "flowtools"
            else worker_flowkit(jobs, args.jobs)
        )
        Path(args.result).write_text(json.dumps(res))
        return 0

    if args.files < 1 or args.events < 1 or args.jobs < 1:
        ap.error("--files, --events and --jobs must be >= 1")
    tool_names = [t.strip() for t in args.tools.split(",") if t.strip()]
    for t in tool_names:
        if t not in ALL_TOOLS:
            ap.error(f"unknown tool {t!r}; choose from {', '.join(ALL_TOOLS)}")
    if "flowtools" not in tool_names:
        tool_names.insert(0, "flowtools")  # the reference for the checks
    runs: list[tuple[str, dict[str, str], int]] = [("flowtools", {}, 1)]
    if not args.no_single_thread:
        runs.append(("flowtools-1t", {"NUMBA_NUM_THREADS": "1"}, 1))
    if args.jobs > 1:
        runs.append((f"flowtools-j{args.jobs}", {"NUMBA_NUM_THREADS": "1"}, args.jobs))
    if "flowkit" in tool_names:
        runs.append(("flowkit", {}, 1))
        if args.jobs > 1:  # like for like with flowtools-jN: FlowKit's analyze_samples(use_mp=True)
            runs.append((f"flowkit-mp{args.jobs}", {}, args.jobs))

    with tempfile.TemporaryDirectory(prefix="flowtools-bench-gating-", dir=args.tmpdir) as tmp:
        t0 = time.perf_counter()
        jobs = make_plate(Path(tmp), args.files, args.events, args.seed)
        gen_s = time.perf_counter() - t0
        paths = [Path(p) for j in jobs for p in j["files"]]
        n_files = len(paths)
        from flowtools.io import read_fcs

        n_events = sum(read_fcs(p, lazy=True).n_events for p in paths)
        file_bytes = sum(p.stat().st_size for p in paths)
        n_gates = {j["tube"]: len(build_strategy(j["tube"]).gates) for j in jobs}
        n_pops = {j["tube"]: len(build_strategy(j["tube"]).populations) for j in jobs}
        per_tube = ", ".join(f"{len(j['files'])} {j['tube']}" for j in jobs)
        print(
            f"plate: {n_files} files ({per_tube}), "
            f"{args.events} events requested per file ({n_events} in all), {file_bytes / 1e6:.0f} MB, "
            f"written in {gen_s:.1f} s"
        )
        print(
            "strategies: " + ", ".join(f"{t}: {n_gates[t]} gates / {n_pops[t]} populations" for t in n_gates)
        )
        manifest = Path(tmp) / "manifest.json"
        manifest.write_text(json.dumps(jobs))
        results: dict[str, dict[str, Any]] = {}
        for name, env, nj in runs:
            t0 = time.perf_counter()
            results[name] = run_worker(name, manifest, env, nj)
            err = results[name].get("error")
            what = f"ERROR {err}" if err else f"{results[name]['wall_s']:.2f} s timed"
            print(f"  {name}: {what} ({time.perf_counter() - t0:.1f} s with start-up, imports and warm-up)")
        xml_text = {j["tube"]: Path(j["xml"]).read_text() for j in jobs}

    ref = results["flowtools"].get("counts", {})
    fk = results.get("flowkit")
    rows = []
    mismatches: dict[str, list[tuple[str, str, Any, Any]]] = {}
    for name, _, nj in runs:
        r = results[name]
        if r.get("error"):
            rows.append({"tool": name, "error": r["error"]})
            continue
        peak = r["peak_rss_kb"] + (r["peak_rss_children_kb"] if nj > 1 else 0)
        row = {
            "tool": name,
            "version": r["version"],
            "jobs": nj,
            "threads": r["threads"],
            "wall_s": r["wall_s"],
            "ms_per_sample": r["wall_s"] / n_files * 1e3,
            "peak_rss_mb": peak / 1024,
            "peak_rss_self_kb": r["peak_rss_kb"],
            "peak_rss_children_kb": r["peak_rss_children_kb"],
            "rss_after_import_mb": r["rss_after_import_kb"] / 1024,
            "warmup_s": r["warmup_s"],
            "process_s": r["process_s"],
            "file_s": r["file_s"],
            "speedup": None,
            "memory_ratio": None,
        }
        if name != "flowtools":
            mismatches[name] = compare(ref, r["counts"])
            row["check"] = "identical" if not mismatches[name] else f"{len(mismatches[name])} DIFFER"
        else:
            row["check"] = "reference"
        rows.append(row)
    if fk and not fk.get("error"):
        fk_row = next(r for r in rows if r["tool"] == "flowkit")
        for row in rows:
            if "error" not in row:
                row["speedup"] = fk_row["wall_s"] / row["wall_s"]
                row["memory_ratio"] = row["peak_rss_mb"] / fk_row["peak_rss_mb"]
    print()
    print_table(
        rows,
        f"Gating a plate end to end ({n_files} files x {args.events} events; "
        f"read + compensate + transform + gate)",
    )
    print(
        "peak RSS: ru_maxrss of the tool's own process (-jN: plus the sum of the pool workers' peaks;\n"
        "flowkit-mpN: plus its largest pool process); speed-up = serial FlowKit wall / tool wall;\n"
        "memory = tool peak RSS / serial FlowKit peak RSS"
    )
    mp = next((r for r in rows if r["tool"].startswith("flowkit-mp") and "error" not in r), None)
    jn = next((r for r in rows if r["tool"].startswith("flowtools-j") and "error" not in r), None)
    if mp and jn:
        print(
            f"like for like, {jn['jobs']} processes each: {jn['tool']} is "
            f"{mp['wall_s'] / jn['wall_s']:.1f}x faster than {mp['tool']}"
        )
    for name, bad in mismatches.items():
        for f, pop, a, b in bad[:50]:
            print(f"  MISMATCH {name}: {f} {pop}: flowtools {a}, {name} {b}")
        if len(bad) > 50:
            print(f"  ... {len(bad) - 50} more")
    print()

    targets = []
    ft = next(r for r in rows if r["tool"] == "flowtools")
    if fk is None or fk.get("error") or ft.get("error"):
        why = "flowkit not run" if fk is None else "a tool failed"
        targets.append((f"flowtools >= {SPEED_TARGET:g}x faster than FlowKit end to end", "SKIP", why))
        targets.append(("flowtools peak RSS <= 1/3 of FlowKit's", "SKIP", why))
    else:
        fk_row = next(r for r in rows if r["tool"] == "flowkit")
        ok = ft["speedup"] >= SPEED_TARGET
        targets.append(
            (
                f"flowtools >= {SPEED_TARGET:g}x faster than FlowKit end to end",
                "PASS" if ok else "FAIL",
                f"{ft['speedup']:.1f}x ({ft['ms_per_sample']:.1f} vs "
                f"{fk_row['ms_per_sample']:.1f} ms/sample)",
            )
        )
        ok = ft["memory_ratio"] <= MEMORY_TARGET
        targets.append(
            (
                "flowtools peak RSS <= 1/3 of FlowKit's",
                "PASS" if ok else "FAIL",
                f"{ft['memory_ratio']:.3f} ({ft['peak_rss_mb']:.0f} vs {fk_row['peak_rss_mb']:.0f} MB)",
            )
        )
    if ft.get("error"):
        targets.append(("identical counts", "FAIL", "flowtools failed"))
    else:
        n_cmp = sum(len(c) for c in ref.values())
        bad = {n: len(b) for n, b in mismatches.items() if b}
        errs = [r["tool"] for r in rows if r.get("error")]
        verdict = "FAIL" if bad or errs else "PASS"
        others = ", ".join(mismatches) or "flowtools only"
        detail = f"differ: {bad}" if bad else f"{n_cmp} counts ({len(ref)} files) agree across {others}"
        detail += f"; failed: {errs}" if errs else ""
        targets.append(("identical counts for every population in every file", verdict, detail))
    for name, verdict, detail in targets:
        print(f"{verdict}: {name}: {detail}")

    out = Path(args.out_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    import numpy as np

    report = {
        "benchmark": "bench_gating",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "cpu_model": cpu_model(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "tools": {r["tool"]: r.get("version") for r in rows},
        },
        "params": {
            **vars(args),
            "n_files": n_files,
            "n_events": n_events,
            "file_bytes": file_bytes,
            "plate_write_s": gen_s,
            "gates": n_gates,
            "populations": n_pops,
        },
        "results": rows,
        "counts": {"flowtools": ref, **({"flowkit": fk["counts"]} if fk and not fk.get("error") else {})},
        "mismatches": {n: [list(b) for b in bad] for n, bad in mismatches.items()},
        "gatingml": xml_text,
        "targets": [{"target": n, "verdict": v, "detail": d} for n, v, d in targets],
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nJSON: {out}")
    return 0 if all(v != "FAIL" for _, v, _ in targets) else 1


if __name__ == "__main__":
    raise SystemExit(main())
