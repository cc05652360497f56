"""Benchmark: a 96-well plate end to end with the study templates, flowtools vs FlowKit.

flowtools: ``run_plate`` on the sample sheet with ``gating_templates/rm_tbnk_nk.yaml`` and
``rm_treg_th.yaml`` - reading, compensating, transforming, resolving every data-driven gate
per sample, gating, population tables with MFIs, per-woman table, Gating-ML per sample (no
report). FlowKit 1.3.2: for every sample, a ``Session`` on that sample's resolved gates (the
Gating-ML flowtools exported), ``analyze_samples`` serially, counts from its report. FlowKit
does less work (no gate resolution, no MFIs, no tables), so the ratio is conservative.

Each tool runs in its own fresh process. flowtools runs twice on one fresh, empty numba cache
(``NUMBA_CACHE_DIR``, a temporary folder): *cold* first, as on a new install (its kernels are
compiled), then *warm* (they are loaded from that cache); the warm run is the one compared
with FlowKit's counts and reported as ``flowtools``. FlowKit's peak memory is its process's ``ru_maxrss``.
flowtools' is measured in a second, untimed run into another folder (sampling costs CPU): the
largest sum of the resident set sizes of the process and all its descendants (the fork server
and the workers), sampled every 10 ms, never less than the process's own ``ru_maxrss``. Forked
workers share their server's pages, which the sum counts once per process: an upper bound. Every count of
every population in every file is compared (flowtools' counts of the exported Gating-ML,
which the tests show equal the batch tables).

    python benchmarks/bench_plate.py [--women 48] [--events 100000] [--jobs 2] [--no-cold]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


class _TreeRss:
    """Peak of the summed RSS of this process and its descendants, sampled in a thread."""

    def __init__(self, every_s: float = 0.01) -> None:
        import threading

        import psutil  # installed with dask.distributed

        self._me = psutil.Process()
        self._every = every_s
        self._stop = threading.Event()
        self.peak_mb = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> float:
        total = 0
        for p in [self._me, *self._me.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except Exception:  # noqa: BLE001, S112 - a process that just ended
                continue
        return total / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._sample())
            self._stop.wait(self._every)

    def __enter__(self) -> _TreeRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def worker_flowtools(args: argparse.Namespace, *, memory: bool = False) -> dict:
    import contextlib

    from flowtools.pipeline.plate import run_plate

    with _TreeRss() if memory else contextlib.nullcontext() as mem:
        t0 = time.perf_counter()
        res = run_plate(
            args.samples,
            [REPO / "gating_templates" / "rm_tbnk_nk.yaml", REPO / "gating_templates" / "rm_treg_th.yaml"],
            args.out,
            jobs=args.jobs,
        )
        wall = time.perf_counter() - t0
    peak = max(mem.peak_mb, _rss_mb(resource.RUSAGE_SELF)) if memory else None
    return {"wall_s": wall, "ok": res.n_ok, "failed": res.n_failed, "peak_rss_mb": peak}


def worker_flowkit(args: argparse.Namespace) -> dict:
    import gc
    import warnings

    warnings.simplefilter("ignore")
    import flowkit

    gates = Path(args.out) / "gates"
    fcs = {p.stem: p for p in Path(args.fcs_dir).glob("*.fcs")}
    counts: dict[str, dict[str, int]] = {}
    t0 = time.perf_counter()
    for xml in sorted(gates.glob("*.gating-ml.xml")):
        sid = xml.name.removesuffix(".gating-ml.xml")
        session = flowkit.Session(gating_strategy=str(xml), fcs_samples=[str(fcs[sid])])
        session.analyze_samples(use_mp=False)
        rep = session.get_analysis_report()
        counts[sid] = {str(g): int(n) for g, n in zip(rep["gate_name"], rep["count"], strict=True)}
        del session, rep
        gc.collect()
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "counts": counts, "peak_rss_mb": _rss_mb(resource.RUSAGE_SELF)}


def flowtools_counts(out: Path, fcs_dir: Path) -> dict[str, dict[str, int]]:
    import warnings

    from flowtools.gating import gate_sample
    from flowtools.gating.formats.gatingml import read_gatingml
    from flowtools.io import read_fcs

    out_counts = {}
    for xml in sorted((out / "gates").glob("*.gating-ml.xml")):
        sid = xml.name.removesuffix(".gating-ml.xml")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = read_fcs(fcs_dir / f"{sid}.fcs")
        out_counts[sid] = gate_sample(read_gatingml(xml), s).counts()
    return out_counts


def run(
    tool: str,
    args: argparse.Namespace,
    samples: Path,
    out: Path,
    fcs_dir: Path,
    env: dict[str, str] | None = None,
    label: str | None = None,
) -> dict:
    result = out.parent / f"result_{label or tool}.json"
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        tool,
        "--samples",
        str(samples),
        "--out",
        str(out),
        "--fcs-dir",
        str(fcs_dir),
        "--jobs",
        str(args.jobs),
        "--result",
        str(result),
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, check=False, env=None if env is None else {**os.environ, **env}
    )
    if proc.returncode != 0:
        msg = f"{tool} failed:\n{proc.stderr[-3000:]}"
        raise SystemExit(msg)
    return json.loads(result.read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--women", type=int, default=48)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-json", default=str(REPO / "benchmarks" / "results" / "bench_plate.json"))
    ap.add_argument("--worker", default=None)
    ap.add_argument("--samples")
    ap.add_argument("--out")
    ap.add_argument("--fcs-dir")
    ap.add_argument("--result")
    ap.add_argument(
        "--no-cold",
        action="store_true",
        help="skip the cold run (flowtools' numba kernels compiled on an empty cache)",
    )
    args = ap.parse_args()
    if args.worker:
        if args.worker == "flowkit":
            res = worker_flowkit(args)
        else:
            res = worker_flowtools(args, memory=args.worker == "flowtools-memory")
        Path(args.result).write_text(json.dumps(res))
        return 0

    from flowtools.synth import make_cohort

    with tempfile.TemporaryDirectory(prefix="flowtools-bench-plate-") as tmp:
        t = time.perf_counter()
        cohort = make_cohort(Path(tmp) / "cohort", n_women=args.women, events=args.events, seed=args.seed)
        synth_s = time.perf_counter() - t
        out = Path(tmp) / "run"
        # One fresh numba cache for flowtools: empty for the cold run, filled by it for the others.
        # Without the cold run, the user's own cache (warm after any earlier run): a fresh empty one
        # would make the "warm" run compile every kernel.
        numba_env = {} if args.no_cold else {"NUMBA_CACHE_DIR": str(Path(tmp) / "numba-cache")}
        ft_cold = None
        if not args.no_cold:
            ft_cold = run(
                "flowtools",
                args,
                cohort.samples_csv,
                Path(tmp) / "run-cold",
                cohort.fcs_dir,
                env=numba_env,
                label="flowtools-cold",
            )
        ft = run("flowtools", args, cohort.samples_csv, out, cohort.fcs_dir, env=numba_env)
        ft_mem_run = run(
            "flowtools-memory",
            args,
            cohort.samples_csv,
            Path(tmp) / "run-memory",
            cohort.fcs_dir,
            env=numba_env,
        )
        fk = run("flowkit", args, cohort.samples_csv, out, cohort.fcs_dir)
        ours = flowtools_counts(out, cohort.fcs_dir)
        mismatches = []
        n_compared = 0
        for sid, theirs in fk["counts"].items():
            for gid, n in theirs.items():
                n_compared += 1
                if ours.get(sid, {}).get(gid) != n:
                    mismatches.append(
                        {
                            "sample": sid,
                            "population": gid,
                            "flowtools": ours.get(sid, {}).get(gid),
                            "flowkit": n,
                        }
                    )
        files = cohort.n_files
        ft_mem = ft_mem_run["peak_rss_mb"]
        ft["peak_rss_mb"] = ft_mem
        ft["memory_run_wall_s"] = ft_mem_run["wall_s"]
        rows = [
            (
                "flowtools",
                ft["wall_s"],
                files / ft["wall_s"],
                ft_mem,
                f"{args.jobs} worker(s), full outputs, warm numba cache",
            ),
            ("flowkit", fk["wall_s"], files / fk["wall_s"], fk["peak_rss_mb"], "serial, gating only"),
        ]
        if ft_cold is not None:
            rows.insert(
                1,
                (
                    "ft cold",
                    ft_cold["wall_s"],
                    files / ft_cold["wall_s"],
                    float("nan"),
                    "the same, empty numba cache (first run of an install)",
                ),
            )
        print(
            f"plate: {files} files x {args.events:,} events "
            f"({cohort.n_events:,} events; synth {synth_s:.1f} s), "
            f"study templates, {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
        )
        print(f"{'tool':<11}{'wall s':>9}{'files/s':>9}{'peak RSS MB':>13}  notes")
        for name, wall, fps, mem, note in rows:
            mem_text = f"{mem:>13.0f}" if mem == mem else f"{'-':>13}"  # noqa: PLR0124 - NaN: not measured
            print(f"{name:<11}{wall:>9.1f}{fps:>9.2f}{mem_text}  {note}")
        speedup = fk["wall_s"] / ft["wall_s"]
        print(
            f"\nflowtools speed-up over FlowKit: {speedup:.1f}x  (target 10x): "
            f"{'PASS' if speedup >= 10 else 'FAIL'}"
        )
        cold_ratio = speedup_cold = None
        if ft_cold is not None:
            cold_ratio = ft_cold["wall_s"] / ft["wall_s"]
            speedup_cold = fk["wall_s"] / ft_cold["wall_s"]
            print(
                f"cold start: {ft_cold['wall_s']:.1f} s cold / {ft['wall_s']:.1f} s warm = {cold_ratio:.2f}x "
                f"(target 1.5x): {'PASS' if cold_ratio <= 1.5 else 'FAIL'}; cold speed-up over FlowKit "
                f"{speedup_cold:.1f}x"
            )
        print(
            f"counts compared: {n_compared}, mismatches: {len(mismatches)}: "
            f"{'PASS' if not mismatches else 'FAIL'}"
        )
        for m in mismatches[:10]:
            print("  ", m)
        result = {
            "benchmark": "plate",
            "women": args.women,
            "events": args.events,
            "files": files,
            "jobs": args.jobs,
            "flowtools": {k: v for k, v in ft.items()},
            "flowkit": {k: v for k, v in fk.items() if k != "counts"},
            "speedup": speedup,
            "flowtools_cold": ft_cold,
            "cold_warm_ratio": cold_ratio,
            "speedup_cold": speedup_cold,
            "counts_compared": n_compared,
            "mismatches": mismatches,
            "gated_ok": ft["ok"],
            "gated_failed": ft["failed"],
        }
        p = Path(args.out_json)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(result, indent=2) + "\n")
        print(f"JSON: {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
