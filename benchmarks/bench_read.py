"""Benchmark: reading a plate of FCS files into event matrices, flowtools vs other readers.

Writes a seeded synthetic plate (``--files`` files x ``--events`` events x ``--params``
float32 parameters, FCS 3.1 via :func:`flowtools.io.fcs_write.write_fcs`) into a
temporary directory, then times each reader over the whole plate with a warm page
cache: one untimed pass, then ``--repeats`` timed passes (``--slow-repeats`` for the
third-party readers); the median pass is reported. The passes of flowtools, the floor
and the lazy scan are interleaved (pass 1 of each, then pass 2, ...) so that drift in
the machine's state cannot favour one of them.

Readers (``--tools``):

* ``flowtools``  ``read_fcs(path).events``
* ``floor``      ``np.fromfile`` of just the DATA segment, offset and count taken from
                 the HEADER before timing starts: the I/O floor
* ``flowio``     ``flowio.FlowData(path).as_array(preprocess=False)``
* ``fcsparser``  ``fcsparser.parse(path, reformat_meta=False)``
* ``flowkit``    ``flowkit.Sample(path)`` (imported before timing; the import is slow)

A reader that cannot be imported is reported as unavailable. The lazy HEADER+TEXT scan
``read_fcs(path, lazy=True)`` is timed too. Every reader's values for the first file
are checked against flowtools (``np.array_equal`` in float64).

Targets (from the issue): flowtools >= 0.8x the floor, warm; flowtools >= 5x faster
than ``flowkit.Sample``.

Run from the repository root::

    python benchmarks/bench_read.py
    python benchmarks/bench_read.py --files 8 --events 50000 --tools flowtools,floor

Results are printed as a table and written as JSON (default
``benchmarks/results/bench_read.json``).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from a checkout without installing
    sys.path.insert(0, str(REPO))

from flowtools.io.fcs import read_fcs  # noqa: E402
from flowtools.io.fcs_write import write_fcs  # noqa: E402

ALL_TOOLS = ("flowtools", "floor", "flowio", "fcsparser", "flowkit")
SLOW_TOOLS = {"flowio", "fcsparser", "flowkit"}
FLOOR_TARGET = 0.8  # flowtools time must be within 1/0.8 of the floor
FLOWKIT_TARGET = 5.0  # flowtools must be this many times faster than flowkit.Sample

# (detector, marker) for the fluorescence channels of a 10-colour T/B/NK/myeloid panel.
FLUOR = [
    ("FITC-A", "CD3"),
    ("PE-A", "CD56"),
    ("PerCP-Cy5.5-A", "CD4"),
    ("PE-Cy7-A", "CD19"),
    ("APC-A", "CD14"),
    ("APC-H7-A", "CD8"),
    ("BV421-A", "CD16"),
    ("BV510-A", "CD45"),
    ("BV605-A", "HLA-DR"),
    ("BV786-A", "CD11c"),
]


# ---------------------------------------------------------------------------------------------
# Plate


def panel(n_params: int) -> tuple[list[str], list[str | None]]:
    """Return (channel names, markers) for ``n_params`` parameters.

    FSC-A, FSC-H, SSC-A, fluorescence "-A" channels with markers, Time, in that order.
    More than 10 fluorescence channels repeat the fluorochromes with a numeric suffix.
    """
    if n_params < 2:
        msg = "--params must be at least 2 (a scatter channel and Time)"
        raise SystemExit(msg)
    scatter = ["FSC-A", "FSC-H", "SSC-A"][: max(1, min(3, n_params - 1))]
    n_fl = n_params - len(scatter) - 1
    names: list[str] = list(scatter)
    markers: list[str | None] = [None] * len(scatter)
    for i in range(n_fl):
        det, mk = FLUOR[i % len(FLUOR)]
        if i >= len(FLUOR):
            det = det.replace("-A", f"_{i // len(FLUOR) + 1}-A")
            mk = f"{mk}_{i // len(FLUOR) + 1}"
        names.append(det)
        markers.append(mk)
    names.append("Time")
    markers.append(None)
    return names, markers


def synth_events(rng: np.random.Generator, n_events: int, names: list[str]) -> np.ndarray:
    """Cytometry-like float32 events: lognormal scatter, bimodal compensated fluorescence, ramp time."""
    out = np.empty((n_events, len(names)), dtype=np.float32)
    fsc = rng.lognormal(mean=np.log(80_000), sigma=0.35, size=n_events)
    for j, name in enumerate(names):
        if name == "FSC-A":
            col = fsc
        elif name == "FSC-H":
            col = fsc * rng.normal(0.82, 0.04, n_events)
        elif name == "SSC-A":
            col = rng.lognormal(mean=np.log(30_000), sigma=0.6, size=n_events)
        elif name == "Time":
            col = np.sort(rng.uniform(0, 60_000, n_events))
        else:  # compensated fluorescence: negatives around 0, a positive population
            pos = rng.random(n_events) < rng.uniform(0.1, 0.6)
            col = np.where(pos, rng.lognormal(np.log(rng.uniform(2e3, 5e4)), 0.5, n_events),
                           rng.normal(0, 150, n_events))
        out[:, j] = np.clip(col, -1_000, 262_143)
    return out


def write_plate(directory: Path, n_files: int, n_events: int, n_params: int, seed: int) -> list[Path]:
    """Write the plate (wells A01, A02, ...) and return the paths."""
    names, markers = panel(n_params)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n_files):
        well = f"{'ABCDEFGH'[(i // 12) % 8]}{i % 12 + 1:02d}" + (f"_{i // 96}" if i >= 96 else "")
        events = synth_events(rng, n_events, names)
        keywords = {"$CYT": "BenchCyt 10-colour", "$FIL": f"{well}.fcs", "WELL ID": well}
        paths.append(write_fcs(directory / f"{well}.fcs", events, names, markers=markers, keywords=keywords))
    return paths


def data_segment(path: Path) -> tuple[int, int]:
    """(byte offset, number of float32 values) of the DATA segment, from the HEADER alone."""
    with open(path, "rb") as fh:
        head = fh.read(58)
    begin, end = int(head[26:34]), int(head[34:42])
    if begin == 0 and end == 0:  # > 99,999,999 bytes: offsets only in TEXT
        lay = read_fcs(path, lazy=True)._layout
        return lay.start, lay.nbytes // 4
    return begin, (end - begin + 1) // 4


# ---------------------------------------------------------------------------------------------
# Readers: each tool is (read function, to-float64-array function, version)


@dataclass
class Tool:
    """A reader under test."""

    name: str
    read: Callable[[Path], Any] | None
    as_array: Callable[[Any], np.ndarray] | None
    call: str
    version: str | None = None
    unavailable: str | None = None
    repeats: int = 0
    warmup: str = "full pass"
    pass_s: list[float] = field(default_factory=list)
    file_s: list[list[float]] = field(default_factory=list)
    check: str = "n/a"


def make_tools(names: list[str], segments: dict[Path, tuple[int, int]], n_events: int,
               n_params: int) -> list[Tool]:
    """Build the requested readers; import failures become 'unavailable'."""
    import flowtools

    tools: list[Tool] = []
    for name in names:
        try:
            if name == "flowtools":
                tools.append(Tool(name, lambda p: read_fcs(p).events, lambda r: np.asarray(r, np.float64),
                                  "read_fcs(path).events", getattr(flowtools, "__version__", "?")))
            elif name == "floor":

                def floor(p: Path) -> np.ndarray:
                    off, count = segments[p]
                    return np.fromfile(p, dtype="<f4", count=count, offset=off).reshape(n_events, n_params)

                tools.append(Tool(name, floor, lambda r: np.asarray(r, np.float64),
                                  "np.fromfile(path, '<f4', count, offset)", np.__version__))
            elif name == "flowio":
                flowio = importlib.import_module("flowio")
                tools.append(Tool(name, lambda p, mod=flowio: mod.FlowData(str(p)).as_array(preprocess=False),
                                  lambda r: np.asarray(r, np.float64),
                                  "FlowData(path).as_array(preprocess=False)", flowio.__version__))
            elif name == "fcsparser":
                fcsparser = importlib.import_module("fcsparser")
                tools.append(Tool(name, lambda p, mod=fcsparser: mod.parse(str(p), reformat_meta=False),
                                  lambda r: np.asarray(r[1].values, np.float64),
                                  "parse(path, reformat_meta=False)", getattr(fcsparser, "__version__", "?")))
            elif name == "flowkit":
                flowkit = importlib.import_module("flowkit")  # slow import, outside all timing
                tools.append(Tool(name, lambda p, mod=flowkit: mod.Sample(str(p)),
                                  lambda r: np.asarray(r.get_events(source="raw"), np.float64),
                                  "Sample(path)", flowkit.__version__))
            else:
                msg = f"unknown tool {name!r}; choose from {', '.join(ALL_TOOLS)}"
                raise SystemExit(msg)
        except ImportError as exc:
            tools.append(Tool(name, None, None, "", unavailable=f"{type(exc).__name__}: {exc}"))
    return tools


# ---------------------------------------------------------------------------------------------
# Timing


def time_passes(reads: dict[str, Callable[[Path], Any]], paths: list[Path], repeats: int, *,
                full_warmup: bool) -> dict[str, tuple[list[float], list[list[float]]]]:
    """Time ``repeats`` passes over all files for each reader; passes of the readers are interleaved.

    Each reader first gets an untimed warm-up (a full pass, or the first file only). Timed
    passes go round-robin (pass 1 of every reader, then pass 2, ...) so that drift in the
    machine's state hits all readers alike. Returns, per reader, the pass times and the
    per-file times of each pass, in seconds.
    """
    for read in reads.values():
        for p in paths if full_warmup else paths[:1]:
            read(p)
    out: dict[str, tuple[list[float], list[list[float]]]] = {name: ([], []) for name in reads}
    gc_was = gc.isenabled()
    gc.disable()  # no collector pauses inside a pass; collect between passes
    try:
        for _ in range(repeats):
            for name, read in reads.items():
                gc.collect()
                times = []
                t_pass = time.perf_counter()
                for p in paths:
                    t0 = time.perf_counter()
                    r = read(p)
                    times.append(time.perf_counter() - t0)
                    del r
                out[name][0].append(time.perf_counter() - t_pass)
                out[name][1].append(times)
    finally:
        if gc_was:
            gc.enable()
    return out


def warm_page_cache(paths: list[Path]) -> None:
    """Read every byte of every file once so all readers start with a warm page cache."""
    for p in paths:
        with open(p, "rb") as fh:
            while fh.read(1 << 22):
                pass


def check_against(tool: Tool, path: Path, reference: np.ndarray) -> str:
    """'ok' when the tool's values for ``path`` equal flowtools' (float64), else what differs."""
    if tool.read is None or tool.as_array is None:
        return "n/a"
    try:
        arr = tool.as_array(tool.read(path))
    except Exception as exc:  # noqa: BLE001 - report, do not crash the benchmark
        return f"error: {type(exc).__name__}: {exc}"[:60]
    if arr.shape != reference.shape:
        return f"MISMATCH shape {arr.shape}"
    if np.array_equal(arr, reference, equal_nan=True):
        return "ok"
    return f"MISMATCH ({int(np.sum(arr != reference))} values)"


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


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    """Print the results table with rich when available, else plain text."""
    headers = ["tool", "call", "per-file ms", "MB/s", "vs floor", "flowtools speed-up", "passes", "check"]
    cells = []
    for r in rows:
        if r["unavailable"]:
            cells.append([r["tool"], "unavailable", "-", "-", "-", "-", "-", r["unavailable"][:50]])
            continue
        cells.append([
            r["tool"], r["call"], f"{r['per_file_ms']:.2f}", f"{r['mb_per_s']:.0f}",
            "-" if r["vs_floor"] is None else f"{r['vs_floor']:.2f}x",
            "-" if r["flowtools_speedup"] is None else f"{r['flowtools_speedup']:.1f}x",
            str(r["repeats"]), r["check"],
        ])
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
        table.add_column(h, justify="right" if 2 <= i <= 6 else "left")
    for c in cells:
        table.add_row(*c)
    Console(width=160).print(table)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0 when every target passes, 1 otherwise."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--files", type=int, default=24, help="files in the plate")
    ap.add_argument("--events", type=int, default=200_000, help="events per file")
    ap.add_argument("--params", type=int, default=14, help="parameters (channels) per file")
    ap.add_argument("--repeats", type=int, default=5, help="timed passes for flowtools and floor")
    ap.add_argument("--slow-repeats", type=int, default=1,
                    help="timed passes for flowio, fcsparser and flowkit")
    ap.add_argument("--slow-warmup", choices=["full", "first"], default="full",
                    help="untimed warm-up for the slow readers: a full pass, or the first file only")
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--tools", default=",".join(ALL_TOOLS), help="comma-separated readers to time")
    ap.add_argument("--tmpdir", default=None, help="where to write the plate (default: system temp dir)")
    ap.add_argument("--out-json", default=str(Path("benchmarks") / "results" / "bench_read.json"))
    args = ap.parse_args(argv)
    if args.files < 1 or args.events < 1 or args.repeats < 1 or args.slow_repeats < 1:
        ap.error("--files, --events, --repeats and --slow-repeats must be >= 1")
    tool_names = [t.strip() for t in args.tools.split(",") if t.strip()]
    if "flowtools" not in tool_names:
        tool_names.insert(0, "flowtools")  # the reference for checks and speed-ups

    warnings.simplefilter("ignore")  # third-party readers warn about pandas/numpy deprecations
    with tempfile.TemporaryDirectory(prefix="flowtools-bench-read-", dir=args.tmpdir) as tmp:
        t0 = time.perf_counter()
        paths = write_plate(Path(tmp), args.files, args.events, args.params, args.seed)
        gen_s = time.perf_counter() - t0
        segments = {p: data_segment(p) for p in paths}  # before any timing
        for p, (off, count) in segments.items():
            lay = read_fcs(p, lazy=True)._layout
            if (lay.start, lay.nbytes) != (off, count * 4) or count != args.events * args.params:
                msg = f"{p.name}: HEADER DATA segment {off}+{count * 4} disagrees with flowtools {lay}"
                raise SystemExit(msg)
        data_bytes = sum(c * 4 for _, c in segments.values())
        file_bytes = sum(p.stat().st_size for p in paths)
        print(f"plate: {args.files} files x {args.events} events x {args.params} float32 params, "
              f"{data_bytes / 1e6:.1f} MB DATA ({file_bytes / 1e6:.1f} MB on disk), written in {gen_s:.1f} s")

        tools = make_tools(tool_names, segments, args.events, args.params)
        warm_page_cache(paths)
        reference = read_fcs(paths[0]).events.astype(np.float64)
        for tool in tools:
            if tool.read is None:
                print(f"  {tool.name}: unavailable ({tool.unavailable})")
                continue
            tool.check = "reference" if tool.name == "flowtools" else check_against(tool, paths[0], reference)
        runnable = [t for t in tools if t.read is not None]
        # flowtools, floor and the lazy scan: passes interleaved, so drift cannot favour either.
        fast = {t.name: t.read for t in runnable if t.name not in SLOW_TOOLS}
        fast["lazy"] = lambda p: read_fcs(p, lazy=True)
        t0 = time.perf_counter()
        timed = time_passes(fast, paths, args.repeats, full_warmup=True)  # type: ignore[arg-type]
        print(f"  {', '.join(fast)}: {args.repeats} interleaved pass(es) each in "
              f"{time.perf_counter() - t0:.1f} s (incl. warm-up)")
        for tool in runnable:
            if tool.name in SLOW_TOOLS:
                full = args.slow_warmup == "full"
                t0 = time.perf_counter()
                timed.update(time_passes({tool.name: tool.read}, paths, args.slow_repeats,  # type: ignore[dict-item]
                                         full_warmup=full))
                print(f"  {tool.name}: {args.slow_repeats} pass(es) in {time.perf_counter() - t0:.1f} s "
                      f"(incl. warm-up)")
                tool.repeats, tool.warmup = args.slow_repeats, "full pass" if full else "first file"
            else:
                tool.repeats, tool.warmup = args.repeats, "full pass"
            tool.pass_s, tool.file_s = timed[tool.name]
        lazy_pass, lazy_file = timed["lazy"]

    by_name = {t.name: t for t in tools}

    def per_file(t: Tool) -> float | None:
        return statistics.median(t.pass_s) / args.files if t.pass_s else None

    floor_s = per_file(by_name["floor"]) if "floor" in by_name else None
    ft_s = per_file(by_name["flowtools"])
    rows = []
    for t in tools:
        s = per_file(t)
        rows.append({
            "tool": t.name,
            "call": t.call,
            "version": t.version,
            "unavailable": t.unavailable,
            "repeats": t.repeats,
            "warmup": t.warmup,
            "per_file_ms": None if s is None else s * 1e3,
            "mb_per_s": None if s is None else data_bytes / args.files / s / 1e6,
            "vs_floor": None if (s is None or floor_s is None) else floor_s / s,
            "flowtools_speedup": None if (s is None or ft_s is None) else s / ft_s,
            "check": t.check,
            "pass_s": t.pass_s,
            "file_s": t.file_s,
        })
    lazy_ms = statistics.median(lazy_pass) / args.files * 1e3
    print()
    print_table(rows, f"Warm plate read, median pass ({args.files} x {args.events} x {args.params})")
    print(f"flowtools lazy scan (read_fcs(path, lazy=True), HEADER+TEXT only): {lazy_ms:.3f} ms per file "
          f"({args.files} files in {lazy_ms * args.files:.1f} ms)")
    print()

    targets = []
    r_ft = next(r for r in rows if r["tool"] == "flowtools")
    if floor_s is None:
        targets.append(("flowtools >= 0.8x floor (warm)", "SKIP", "floor not run"))
    else:
        ok = r_ft["vs_floor"] >= FLOOR_TARGET
        targets.append((f"flowtools >= {FLOOR_TARGET}x floor (warm)", "PASS" if ok else "FAIL",
                        f"{r_ft['vs_floor']:.2f}x ({r_ft['per_file_ms']:.2f} ms vs floor "
                        f"{floor_s * 1e3:.2f} ms)"))
    r_fk = next((r for r in rows if r["tool"] == "flowkit"), None)
    fk_target = f"flowtools >= {FLOWKIT_TARGET:g}x faster than flowkit.Sample"
    if r_fk is None or r_fk["per_file_ms"] is None:
        targets.append((fk_target, "SKIP", "flowkit not run" if r_fk is None else "flowkit unavailable"))
    else:
        ok = r_fk["flowtools_speedup"] >= FLOWKIT_TARGET
        targets.append((fk_target, "PASS" if ok else "FAIL",
                        f"{r_fk['flowtools_speedup']:.1f}x ({r_fk['per_file_ms']:.1f} ms vs "
                        f"{r_ft['per_file_ms']:.2f} ms)"))
    bad_checks = [r["tool"] for r in rows if r["check"] not in ("ok", "reference", "n/a")]
    targets.append(("all readers return flowtools' values (first file)", "FAIL" if bad_checks else "PASS",
                    f"mismatch: {', '.join(bad_checks)}" if bad_checks else "np.array_equal in float64"))
    for name, verdict, detail in targets:
        print(f"{verdict}: {name}: {detail}")

    out = Path(args.out_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "bench_read",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "cpu_model": cpu_model(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "tools": {t.name: t.version for t in tools},
        },
        "params": {**vars(args), "data_bytes": data_bytes, "file_bytes": file_bytes,
                   "plate_write_s": gen_s},
        "results": rows,
        "lazy_scan": {"call": "read_fcs(path, lazy=True)", "per_file_ms": lazy_ms, "pass_s": lazy_pass,
                      "file_s": lazy_file},
        "targets": [{"target": n, "verdict": v, "detail": d} for n, v, d in targets],
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nJSON: {out}")
    return 0 if all(v != "FAIL" for _, v, _ in targets) else 1


if __name__ == "__main__":
    raise SystemExit(main())
