"""Benchmark: scale transforms, flowtools kernels vs flowutils and numpy.

Times on 2.8M float64 values (30 % negatives ~ N(0, 200), the rest log-normal
positives clipped at 262144), all in one run:

* logicle T=262144 W=0.5 M=4.5 A=0: flowutils (C), flowtools exact and fast,
  serial (one core: numba threads = 1) and parallel (all numba threads)
* hyperlog, same parameters: flowutils, flowtools exact and fast
* asinh T=262144 M=4.5 A=0: np.arcsinh (the same formula in numpy), flowutils,
  flowtools serial and parallel; ``x.copy()`` as the memory floor

Each timing is the median of ``--repeats`` passes after one warm-up pass.
Numba caching: a fresh subprocess imports flowtools and times its first
logicle/asinh ``apply`` with an empty temporary NUMBA_CACHE_DIR (cold: compiles),
then a second fresh subprocess with the same directory (warm: loads the cache).

    python benchmarks/bench_transforms.py
    python benchmarks/bench_transforms.py --n 500000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from flowtools.transforms import AsinhTransform, HyperlogTransform, LogicleTransform  # noqa: E402

T, W, M, A = 262144.0, 0.5, 4.5, 0.0

FIRST_CALL = """
import time, json
t0 = time.perf_counter()
import numpy as np
from flowtools.transforms import LogicleTransform, AsinhTransform
x = np.linspace(-1000, 262144, 1000)
t1 = time.perf_counter()
LogicleTransform(262144.0, 0.5, 4.5, 0.0).apply(x, parallel=False)
t2 = time.perf_counter()
LogicleTransform(262144.0, 0.5, 4.5, 0.0).apply(x, exact=False, parallel=False)
AsinhTransform(262144.0, 4.5, 0.0).apply(x, parallel=False)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_logicle_s": t2 - t1, "next_kernels_s": t3 - t2}))
"""


def make_data(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    neg = rng.random(n) < 0.3
    return np.where(neg, rng.normal(0, 200, n), np.minimum(rng.lognormal(7, 1.8, n), 262144.0))


def timeit(fn, repeats: int) -> list[float]:
    fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def first_call(cache_dir: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, FLOWTOOLS_NUMBA_CACHE="1", PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-c", FIRST_CALL], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2_800_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out-json", default=str(REPO / "benchmarks" / "results" / "bench_transforms.json"))
    args = ap.parse_args()

    import numba

    try:
        import flowutils.transforms as fu
    except ImportError:  # pragma: no cover
        fu = None

    x = make_data(args.n)
    lg = LogicleTransform(T, W, M, A)
    hl = HyperlogTransform(T, W, M, A)
    ash = AsinhTransform(T, M, A)
    n_threads = numba.config.NUMBA_NUM_THREADS

    def one_core(fn):
        def run():
            before = numba.get_num_threads()
            numba.set_num_threads(1)
            try:
                return fn()
            finally:
                numba.set_num_threads(before)

        return run

    cases = []
    if fu is not None:
        cases.append(("logicle", "flowutils (C)", lambda: fu.logicle(x, None, t=T, m=M, w=W, a=A), "1"))
    cases += [
        ("logicle", "flowtools exact", one_core(lambda: lg.apply(x, parallel=False)), "1"),
        ("logicle", "flowtools fast (LUT)", one_core(lambda: lg.apply(x, exact=False, parallel=False)), "1"),
        ("logicle", "flowtools exact", lambda: lg.apply(x, parallel=True), str(n_threads)),
        ("logicle", "flowtools fast (LUT)", lambda: lg.apply(x, exact=False, parallel=True), str(n_threads)),
    ]
    if fu is not None:
        cases.append(("hyperlog", "flowutils (C)", lambda: fu.hyperlog(x, None, t=T, m=M, w=W, a=A), "1"))
    cases += [
        ("hyperlog", "flowtools exact", one_core(lambda: hl.apply(x, parallel=False)), "1"),
        ("hyperlog", "flowtools fast (LUT)", one_core(lambda: hl.apply(x, exact=False, parallel=False)), "1"),
        ("hyperlog", "flowtools exact", lambda: hl.apply(x, parallel=True), str(n_threads)),
        ("asinh", "np.arcsinh formula", lambda: _np_asinh(x), "1"),
    ]
    if fu is not None:
        cases.append(("asinh", "flowutils (numpy)", lambda: fu.asinh(x, None, T, M, A), "1"))
    cases += [
        ("asinh", "flowtools", one_core(lambda: ash.apply(x, parallel=False)), "1"),
        ("asinh", "flowtools", lambda: ash.apply(x, parallel=True), str(n_threads)),
        ("floor", "x.copy()", lambda: x.copy(), "1"),
    ]

    rows = []
    base: dict[str, float] = {}
    for transform, tool, fn, threads in cases:
        passes = timeit(fn, args.repeats)
        med = statistics.median(passes)
        rate = args.n / med / 1e6
        if tool.startswith(("flowutils", "np.arcsinh")) and transform not in base:
            base[transform] = rate
        rows.append({"transform": transform, "tool": tool, "threads": threads, "median_s": med,
                     "Mvalues_per_s": rate, "passes_s": passes})
    for r in rows:
        b = base.get(r["transform"])
        r["vs_baseline"] = r["Mvalues_per_s"] / b if b else None

    # accuracy on the same data
    exact = lg.apply(x)
    acc = {"logicle_fast_vs_exact_max_abs": float(np.max(np.abs(lg.apply(x, exact=False) - exact)))}
    if fu is not None:
        acc["logicle_exact_vs_flowutils_max_abs"] = float(
            np.max(np.abs(exact - fu.logicle(x, None, t=T, m=M, w=W, a=A)))
        )
        acc["hyperlog_exact_vs_flowutils_max_abs"] = float(
            np.max(np.abs(hl.apply(x) - fu.hyperlog(x, None, t=T, m=M, w=W, a=A)))
        )

    with tempfile.TemporaryDirectory(prefix="flowtools-numba-") as cache_dir:
        cold = first_call(cache_dir)
        warm = first_call(cache_dir)

    print(f"{args.n:,} float64 values; numba threads available: {n_threads}; CPU count {os.cpu_count()}")
    print(f"{'transform':<9} {'tool':<22} {'threads':>7} {'ms':>9} {'M values/s':>11} {'vs baseline':>12}")
    for r in rows:
        vs = f"{r['vs_baseline']:.2f}x" if r["vs_baseline"] else "-"
        print(f"{r['transform']:<9} {r['tool']:<22} {r['threads']:>7} {r['median_s'] * 1e3:9.2f} "
              f"{r['Mvalues_per_s']:11.1f} {vs:>12}")
    print("baseline: flowutils for logicle/hyperlog, the numpy np.arcsinh formula for asinh")
    for k, v in acc.items():
        print(f"{k}: {v:.3g}")
    print(f"first call in a fresh process, cold numba cache: import {cold['import_s']:.2f}s, "
          f"first logicle {cold['first_logicle_s']:.2f}s, fast+asinh {cold['next_kernels_s']:.2f}s")
    print(f"first call in a fresh process, warm numba cache: import {warm['import_s']:.2f}s, "
          f"first logicle {warm['first_logicle_s']:.3f}s, fast+asinh {warm['next_kernels_s']:.3f}s")

    out = Path(args.out_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": sys.version,
                    "numpy": np.__version__, "numba": numba.__version__, "numba_threads": n_threads},
        "params": {"n": args.n, "repeats": args.repeats, "T": T, "W": W, "M": M, "A": A},
        "rows": rows, "accuracy": acc, "first_call": {"cold_cache": cold, "warm_cache": warm},
    }, indent=2))
    print(f"wrote {out}")
    return 0


def _np_asinh(x: np.ndarray) -> np.ndarray:
    ln10 = np.log(10.0)
    return (np.arcsinh(x * (np.sinh(M * ln10) / T)) + A * ln10) / ((M + A) * ln10)


if __name__ == "__main__":
    raise SystemExit(main())
