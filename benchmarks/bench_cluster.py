"""Benchmark: FlowSOM-class clustering, HDBSCAN and UMAP, flowtools against the reference packages.

Data: a synthetic cohort (:func:`flowtools.synth.make_cohort`, seed 0, no artefacts); every
non-debris, non-doublet event of the TBNK-NK files, compensated with the file's spillover and
logicle-transformed (T=262144, W=0.5, M=4.5, A=0) on the 10 markers of the tube. Truth: the major
populations (granulocytes, monocytes, CD4 T, CD8 T, B, NK CD56dim, NK CD56bright, NKT-like);
other events are not scored (Weber & Robinson 2016: mean F1, Hungarian matching).

Cases (each engine in its own fresh subprocess, so peak RSS ``ru_maxrss`` is its own; "first"
is the first call in that process, JIT or numba disk cache included; "steady" the second call):

* ``som``:     flowtools FlowSOM (batch and online SOM, 10x10, 10 metaclusters, 100 resamples)
               vs ``flowsom`` (saeyslab FlowSOM_Python, same grid, rlen, clusters), same seed.
* ``hdbscan``: flowtools HDBSCAN (fit on a 20k subsample, nearest-neighbour extension) vs the
               ``hdbscan`` package on all events; min_cluster_size 200.
* ``umap``:    flowtools UMAP (defaults: fit on 12k, umap's transform for the rest) vs ``umap-learn``
               defaults on all events, each run twice (first and steady); trustworthiness (k=15)
               on a 5k subsample drawn with a seed independent of the fit subsample's.
* ``cache``:   a new process with the numba cache warm must not recompile the SOM kernels.

Writes ``benchmarks/results/bench_cluster.json`` and prints a table.
Usage::

    python benchmarks/bench_cluster.py [--som-events 500000] [--umap-events 100000] [--hd-events 100000]
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
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MARKERS = ("CD3", "CD16", "CD4", "CD56", "CD19", "CD8", "Viability", "CD45", "CD14", "HLA-DR")
L = "Singlets/Live/Lymphocytes"
MAJOR = {
    "Granulocytes": ("Singlets/Live/Granulocytes",), "Monocytes": ("Singlets/Live/Monocytes",),
    "CD4 T": (f"{L}/T cells/CD4",), "CD8 T": (f"{L}/T cells/CD8",), "B": (f"{L}/B cells",),
    "NK CD56dim": (f"{L}/NK cells/CD56dim CD16+",), "NK CD56bright": (f"{L}/NK cells/CD56bright CD16-",),
    "NKT-like": (f"{L}/NKT-like",),
}


def make_data(n_events: int, work: Path) -> tuple[np.ndarray, np.ndarray]:
    from flowtools.compensation import SpilloverMatrix
    from flowtools.io.fcs import read_fcs
    from flowtools.synth import make_cohort
    from flowtools.transforms.scales import LogicleTransform

    per_file = 50_000
    n_women = max(1, int(np.ceil(n_events / (per_file * 0.8))))
    cohort = work / "cohort"
    if not cohort.exists():
        make_cohort(cohort, n_women=n_women, events=per_file, seed=0, artefacts=False)
    codes = {int(k): v for k, v in json.loads((cohort / "truth" / "populations.json").read_text()).items()}
    lut = np.full(max(codes) + 1, -2, dtype=np.int64)
    for c, p in codes.items():
        if p.startswith("Singlets/") and p != "Singlets/Dead":
            lut[c] = -1
        for j, pre in enumerate(MAJOR.values()):
            if any(p == q or p.startswith(q + "/") for q in pre):
                lut[c] = j
    t = LogicleTransform(T=262144, W=0.5, M=4.5, A=0)
    xs, ys = [], []
    for f in sorted((cohort / "fcs").glob("*-TBNK.fcs")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = read_fcs(f)
        ev = SpilloverMatrix.from_fcs(s).apply(s.as_array(preprocess=True), s.pnn)
        y = lut[np.load(cohort / "truth" / f"{f.stem}.labels.npy")]
        pns = [c.pns or c.pnn for c in s.channels]
        keep = y > -2
        xs.append(t.apply(np.ascontiguousarray(ev[keep][:, [pns.index(m) for m in MARKERS]])))
        ys.append(y[keep])
        if sum(len(v) for v in ys) >= n_events:
            break
    x = np.ascontiguousarray(np.concatenate(xs)[:n_events])
    return x, np.concatenate(ys)[:n_events]


# ------------------------------------------------------------------------------------------ workers


def _run(engine: str, x: np.ndarray, seed: int) -> np.ndarray:
    if engine == "flowtools-som-batch":
        from flowtools.analysis import FlowSOM

        return FlowSOM(n_clusters=10, algorithm="batch", random_state=seed).fit(x).labels_
    if engine == "flowtools-som-online":
        from flowtools.analysis import FlowSOM

        return FlowSOM(n_clusters=10, algorithm="online", random_state=seed).fit(x).labels_
    if engine == "flowsom":
        import flowsom as fs

        f = fs.FlowSOM(x, cols_to_use=list(range(x.shape[1])), xdim=10, ydim=10, n_clusters=10, seed=seed)
        return np.asarray(f.get_cell_data().obs["metaclustering"], dtype=np.int64)
    if engine == "flowtools-hdbscan":
        from flowtools.analysis import HDBSCAN

        return HDBSCAN(min_cluster_size=200, max_fit_events=20_000, random_state=seed).fit(x).labels_
    if engine == "hdbscan":
        import hdbscan

        return hdbscan.HDBSCAN(min_cluster_size=200).fit(x).labels_.astype(np.int64)
    if engine == "flowtools-umap":
        from flowtools.analysis import UMAP

        return UMAP(random_state=seed).fit(x).embedding_  # defaults: fit on 12k, transform the rest
    if engine == "umap-learn":
        import umap

        return umap.UMAP(random_state=seed).fit_transform(x)
    raise ValueError(engine)


def worker(engine: str, data: str, out: str, seed: int, repeats: int) -> None:
    import logging

    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    try:
        from loguru import logger

        logger.remove()
    except ImportError:
        pass
    x = np.load(data)
    times = []
    res = None
    for r in range(repeats):
        t0 = time.perf_counter()
        res = _run(engine, x, seed + r * 0)
        times.append(time.perf_counter() - t0)
    np.save(out, res)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"times": times, "peak_rss_mib": rss}))


def cache_check() -> dict:
    """A new process, cache warm: do the SOM kernels load from the numba cache (no compile)?"""
    code = (
        "import numpy as np, json\n"
        "from flowtools.analysis import FlowSOM\n"
        "from flowtools.analysis import _som_kernels as K\n"
        "x=np.random.default_rng(0).normal(size=(30000,5))\n"
        "FlowSOM(n_clusters=3, xdim=4, ydim=4, algorithm='batch', random_state=0).fit(x)\n"
        "FlowSOM(n_clusters=3, xdim=4, ydim=4, algorithm='online', rlen=1, random_state=0).fit(x[:500])\n"
        "ks=[K.bmu,K.bmu_parallel,K.node_sums,K.node_sums_parallel,K.som_batch_update,K.som_online]\n"
        "print(json.dumps({k.__name__ if hasattr(k,'__name__') else str(k):"
        " [sum(k.stats.cache_hits.values()), sum(k.stats.cache_misses.values())] for k in ks}))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)  # warm the cache
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - t0
    stats = json.loads(out.strip().splitlines()[-1])
    return {"new_process_seconds": wall, "kernels_hits_misses": stats,
            "recompiled": any(m > 0 for _, m in stats.values())}


def spawn(engine: str, x: np.ndarray, work: Path, seed: int, repeats: int = 2) -> tuple[dict, np.ndarray]:
    data = work / f"x_{x.shape[0]}.npy"
    if not data.exists():
        np.save(data, x)
    out = work / f"{engine}_{x.shape[0]}.npy"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    cmd = [sys.executable, __file__, "--worker", engine, "--data", str(data), "--out", str(out),
           "--seed", str(seed), "--repeats", str(repeats)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        msg = f"{engine} failed:\n{p.stderr[-3000:]}"
        raise RuntimeError(msg)
    rec = json.loads(p.stdout.strip().splitlines()[-1])
    return rec, np.load(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--som-events", type=int, default=500_000)
    ap.add_argument("--umap-events", type=int, default=100_000)
    ap.add_argument("--hd-events", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", default="", help="comma-separated cases to skip: som,hdbscan,umap")
    ap.add_argument("--worker")
    ap.add_argument("--data")
    ap.add_argument("--out")
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    if a.worker:
        worker(a.worker, a.data, a.out, a.seed, a.repeats)
        return
    from sklearn.metrics import adjusted_rand_score

    from flowtools.analysis.embed import trustworthiness_subsample
    from flowtools.analysis.metrics import hungarian_f1

    skip = set(filter(None, a.skip.split(",")))
    work = Path(tempfile.mkdtemp(prefix="bench_cluster_"))
    n_max = max(a.som_events, a.umap_events, a.hd_events)
    t0 = time.perf_counter()
    x_all, y_all = make_data(n_max, work)
    rows = []
    result: dict = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                "platform": platform.platform()},
                    "data": {"events": int(x_all.shape[0]), "markers": list(MARKERS),
                             "seconds_to_make": time.perf_counter() - t0, "populations": list(MAJOR)},
                    "cases": []}

    def add(case, engine, n, rec, **quality):
        r = {"case": case, "engine": engine, "events": n, "first_s": rec["times"][0],
             "steady_s": rec["times"][-1], "peak_rss_mib": rec["peak_rss_mib"], **quality}
        rows.append(r)
        result["cases"].append(r)
        print(json.dumps(r), flush=True)

    if "som" not in skip:
        x, y = x_all[: a.som_events], y_all[: a.som_events]
        for eng in ("flowtools-som-batch", "flowtools-som-online", "flowsom"):
            rec, lab = spawn(eng, x, work, a.seed)
            rec2, lab2 = (None, None)
            if eng != "flowtools-som-online":
                rec2, lab2 = spawn(eng, x, work, a.seed + 1, repeats=1)
            q = {"mean_f1": hungarian_f1(y, lab)["mean_f1"]}
            if lab2 is not None:
                q["ari_between_seeds"] = float(adjusted_rand_score(lab, lab2))
            add("som+metaclustering", eng, x.shape[0], rec, **q)
    if "hdbscan" not in skip:
        x, y = x_all[: a.hd_events], y_all[: a.hd_events]
        for eng in ("flowtools-hdbscan", "hdbscan"):
            rec, lab = spawn(eng, x, work, a.seed, repeats=1 if eng == "hdbscan" else 2)
            add("hdbscan", eng, x.shape[0], rec, mean_f1=hungarian_f1(y, lab)["mean_f1"],
                noise_fraction=float(np.mean(lab < 0)))
    if "umap" not in skip:
        x = x_all[: a.umap_events]
        for eng in ("flowtools-umap", "umap-learn"):
            rec, emb = spawn(eng, x, work, a.seed)
            # Scored on a subsample drawn with its own seed: drawn with the fit's seed, it would be
            # nested in flowtools' fit subsample and never score an event placed by transform.
            add("umap", eng, x.shape[0], rec,
                trustworthiness=trustworthiness_subsample(x, emb, n=5000, seed=a.seed + 9973))
    result["numba_cache"] = cache_check()
    print(json.dumps(result["numba_cache"]))
    out = HERE / "results" / "bench_cluster.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    hdr = (f"{'case':20s} {'engine':22s} {'events':>8s} {'first s':>8s} {'steady s':>8s} {'RSS MiB':>8s}"
           "  quality")
    print(hdr)
    for r in rows:
        qual = ", ".join(f"{k}={v:.3f}" for k, v in r.items() if k in ("mean_f1", "ari_between_seeds",
                                                                      "trustworthiness", "noise_fraction"))
        print(f"{r['case']:20s} {r['engine']:22s} {r['events']:8d} {r['first_s']:8.2f} {r['steady_s']:8.2f} "
              f"{r['peak_rss_mib']:8.0f}  {qual}")
    print(f"written {out}")


if __name__ == "__main__":
    main()
