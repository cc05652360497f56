"""Coverage of the AUC and gain intervals of ``flowtools.stats.evaluate_models`` (issue #22).

For each condition (generator x null/signal) many cohorts of RM women are
drawn; on each, ``evaluate_models(task="next_loss")`` runs at its defaults
(5 x 5-fold nested CV, ``ci="bootstrap"``), which reports the bootstrap
interval (``ci_low``/``ci_high``) and the old DeLong interval
(``ci_low_delong``/``ci_high_delong``) side by side.

Generators
----------
``synth``
    the project's own :func:`flowtools.synth.make_cohort` (``null=True``: the
    next loss depends on age and prior losses only; ``null=False``: the planted
    immune subgroup and NK share enter it), tables from the truth.
``indep``
    ``benchmarks/indep_cohort.py`` (shares nothing with ``flowtools.synth``),
    composition model alternating logit-normal / Dirichlet by cohort;
    ``loss_log_or`` 0 (null) or ``--indep-log-or`` (signal: the NK share in the
    next-loss outcome).

What is compared against what
-----------------------------
``immune covers 0.5`` (null conditions): on null cohorts no model of the immune
features can beat chance on new women, so 0.5 is the AUC of the immune model
both for this cohort's fitted model and in expectation.

``gain``: the interval is for the gain (AUC of clinical + immune minus clinical)
that the procedure reaches on new women. Truth is measured on a large independent
cohort of the same generator and condition (``--external-rm`` RM women), using
the true outcome probabilities (AUC of a score = P(score of a loss > score of a
birth) with each pair weighted by p_i (1 - p_j): no outcome noise):

* ``expected``: the mean over the condition's cohorts of the external gain of
  models fitted on the whole cohort as ``fit_model`` does (the procedure's
  expected gain at this size; its Monte-Carlo error is printed);
* ``conditional``: the external gain of this cohort's own fitted models.

The same two truths are reported for the immune AUC. Coverage estimates carry
Wilson 95% intervals. Widths are mean interval widths.

Usage: ``python benchmarks/bench_predict_coverage.py [--cohorts 40] [--bootstrap 200]``.
Quick look: ``--quick`` (6 cohorts per condition, 50 replicates, 800-woman external cohorts).
Writes ``benchmarks/results/bench_predict_coverage.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
CONDITIONS = (("synth", "null"), ("synth", "signal"), ("indep", "null"), ("indep", "signal"))
MODELS = ("clinical", "immune", "clinical + immune")
TARGET = 0.93


def _indep(n_rm: int, seed: int, *, signal: bool, log_or: float, model: str) -> tuple:
    sys.path.insert(0, str(HERE))
    from indep_cohort import IndepCohortSpec, make_indep_cohort

    spec = IndepCohortSpec(n_rm=n_rm, n_control=20, model=model, loss_log_or=log_or if signal else 0.0)
    counts, clin, truth = make_indep_cohort(spec, seed)
    rm = (clin["group"] == "RM").to_numpy()
    p = 1.0 / (1.0 + np.exp(-np.asarray(truth["loss_logit"])[rm]))
    return counts, clin, pd.Series(p, index=clin.loc[rm, "woman_id"].to_numpy())


def _synth(n_rm: int, seed: int, *, signal: bool) -> tuple:
    from flowtools.stats import read_clinical, tables_from_truth
    from flowtools.synth import cohort as sc
    from flowtools.synth import make_cohort

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "c"
        make_cohort(d, n_women=2 * n_rm, seed=seed, null=not signal, write_fcs=False)
        counts = tables_from_truth(d)
        clin = read_clinical(d / "clinical.csv")
        truth = pd.read_csv(d / "truth" / "women.csv", dtype={"woman_id": str})
    nk = truth[(truth["population"] == "Singlets/Live/Lymphocytes/NK cells") & (truth["tube"] == "TBNK-NK")]
    nk = nk.set_index("woman_id")
    rm = clin[clin["group"] == "RM"].set_index("woman_id")
    logit = sc._outcome_logit(
        rm["age"].to_numpy(float),
        rm["n_prior_losses"].to_numpy(float),
        nk.loc[rm.index, "immune_subgroup"].to_numpy(float),
        nk.loc[rm.index, "expected_pct_parent"].to_numpy(float),
        null=not signal,
    )
    return counts, clin, pd.Series(1.0 / (1.0 + np.exp(-logit)), index=rm.index.to_numpy())


def _cohort(gen: str, cond: str, n_rm: int, seed: int, log_or: float) -> tuple:
    if gen == "synth":
        return _synth(n_rm, seed, signal=cond == "signal")
    model = "logit-normal" if seed % 2 == 0 else "dirichlet"
    return _indep(n_rm, seed, signal=cond == "signal", log_or=log_or, model=model)


def weighted_auc(score: np.ndarray, p: np.ndarray) -> float:
    """AUC against true probabilities: pairs (i, j), i != j, weighted by p_i (1 - p_j); ties count half."""
    _, inv = np.unique(score, return_inverse=True)
    pk = np.bincount(inv, weights=p)
    nk = np.bincount(inv, weights=1 - p)
    sk = np.bincount(inv, weights=p * (1 - p))
    below = np.concatenate([[0.0], np.cumsum(nk)[:-1]])
    num = float(np.sum(pk * below + 0.5 * (pk * nk - sk)))
    den = float(np.sum(p)) * float(np.sum(1 - p)) - float(np.sum(p * (1 - p)))
    return num / den


def _frames(counts, clin, p=None) -> tuple:
    from flowtools.stats.predict import _task_frames

    xc, imm, y, _ = _task_frames(
        counts, clin, task="next_loss", transform="logit", missing="error", need_outcome=p is None
    )
    return xc, imm, y


def external(gen: str, cond: str, n_rm: int, seed: int, log_or: float, path: Path) -> None:
    """Features and true probabilities of a large independent cohort."""
    counts, clin, p = _cohort(gen, cond, n_rm, seed, log_or)
    xc, imm, _ = _frames(counts, clin.drop(columns=["next_pregnancy_loss"]), p)
    pd.to_pickle({"xc": xc, "imm": imm, "p": p.loc[xc.index].to_numpy(float)}, path)


def _external_aucs(xc, imm, y, ext: dict, seed: int) -> dict:
    """Each model fitted on the whole cohort (as fit_model: penalty by 3-fold CV), its AUC on ``ext``."""
    from flowtools.stats.predict import DEFAULT_CS, _inner_splits, _ridge_tuned_predict, _unpenalized_idx

    blocks = {"clinical": xc, "immune": imm, "clinical + immune": pd.concat([xc, imm], axis=1)}
    eblocks = {
        "clinical": ext["xc"],
        "immune": ext["imm"],
        "clinical + immune": pd.concat([ext["xc"], ext["imm"]], axis=1),
    }
    out = {}
    for m, x in blocks.items():
        free = _unpenalized_idx(list(x.columns), list(xc.columns))
        xe = eblocks[m].reindex(columns=x.columns).to_numpy(float)
        q = _ridge_tuned_predict(x.to_numpy(float), y, xe, _inner_splits(y, 3, seed), DEFAULT_CS, free)
        out[m] = weighted_auc(q, ext["p"])
    return out


def job(args: tuple) -> dict:
    gen, cond, seed, n_rm, n_boot, log_or, ext_path = args
    from flowtools.stats.predict import evaluate_models

    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    counts, clin, _ = _cohort(gen, cond, n_rm, seed, log_or)
    t1 = time.perf_counter()
    ev = evaluate_models(counts, clin, task="next_loss", seed=seed, n_bootstrap=n_boot)
    t2 = time.perf_counter()
    xc, imm, y = _frames(counts, clin)
    ext = _external_aucs(xc, imm, y, pd.read_pickle(ext_path), seed)
    a = ev.auc.set_index("model")
    cols = ["auc", "ci_low", "ci_high", "ci_low_delong", "ci_high_delong", "se", "sd_repeats"]
    out = {
        "generator": gen,
        "condition": cond,
        "seed": seed,
        "n": int(y.size),
        "n_events": int(y.sum()),
        "auc": {m: {c: float(a.loc[m, c]) for c in cols} for m in MODELS},
        "gain": {c: float(ev.gain[c]) for c in ("estimate", *cols[1:])},
        "boot_sd": {m: float(ev.bootstrap[m].std(ddof=1)) for m in MODELS},
        "boot_gain_sd": float((ev.bootstrap["clinical + immune"] - ev.bootstrap["clinical"]).std(ddof=1)),
        "boot_mean": {m: float(ev.bootstrap[m].mean()) for m in MODELS},
        # percentiles of the replicates, for a percentile-interval variant
        "boot_q": {
            "immune": ev.bootstrap["immune"].quantile([0.025, 0.975]).tolist(),
            "gain": (ev.bootstrap["clinical + immune"] - ev.bootstrap["clinical"])
            .quantile([0.025, 0.975])
            .tolist(),
        },
        "external": ext,
        "wall_s_cohort": t1 - t0,
        "wall_s_evaluate": t2 - t1,
    }
    return out


def wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson 95% interval of a proportion."""
    if n == 0:
        return float("nan"), float("nan")
    z = 1.959964
    ph = k / n
    c = (ph + z * z / (2 * n)) / (1 + z * z / n)
    h = z * np.sqrt(ph * (1 - ph) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(c - h), float(c + h)


def _cov(lo: np.ndarray, hi: np.ndarray, truth) -> dict:
    hit = (lo <= truth) & (truth <= hi)
    k, n = int(hit.sum()), int(hit.size)
    lw, up = wilson(k, n)
    cov = k / n if n else float("nan")
    return {"coverage": cov, "ci": [lw, up], "n": n, "width": float(np.mean(hi - lo))}


def summarise(rows: list[dict]) -> dict:
    """Coverage per condition, interval method and truth."""
    out = {}
    for gen, cond in CONDITIONS:
        rs = [r for r in rows if r["generator"] == gen and r["condition"] == cond]
        if not rs:
            continue
        s: dict = {"cohorts": len(rs), "mean_events": float(np.mean([r["n_events"] for r in rs]))}
        ext_gain = np.array([r["external"]["clinical + immune"] - r["external"]["clinical"] for r in rs])
        ext_imm = np.array([r["external"]["immune"] for r in rs])
        s["expected_gain"] = float(ext_gain.mean())
        mc = ext_gain.std(ddof=1) / np.sqrt(len(rs)) if len(rs) > 1 else float("nan")
        s["expected_gain_mc_se"] = float(mc)
        s["expected_immune_auc"] = float(ext_imm.mean())
        s["mean_cv_gain"] = float(np.mean([r["gain"]["estimate"] for r in rs]))
        s["mean_cv_immune_auc"] = float(np.mean([r["auc"]["immune"]["auc"] for r in rs]))
        s["sd_cv_immune_auc"] = float(np.std([r["auc"]["immune"]["auc"] for r in rs], ddof=1))
        s["sd_cv_gain"] = float(np.std([r["gain"]["estimate"] for r in rs], ddof=1))
        methods = {"delong": ("ci_low_delong", "ci_high_delong"), "bootstrap": ("ci_low", "ci_high")}
        for meth, (lk, hk) in methods.items():
            il = np.array([r["auc"]["immune"][lk] for r in rs])
            ih = np.array([r["auc"]["immune"][hk] for r in rs])
            gl = np.array([r["gain"][lk] for r in rs])
            gh = np.array([r["gain"][hk] for r in rs])
            m = {
                "immune_expected": _cov(il, ih, ext_imm.mean()),
                "immune_conditional": _cov(il, ih, ext_imm),
                "gain_expected": _cov(gl, gh, ext_gain.mean()),
                "gain_conditional": _cov(gl, gh, ext_gain),
            }
            if cond == "null":
                m["immune_0.5"] = _cov(il, ih, 0.5)
            s[meth] = m
        out[f"{gen}/{cond}"] = s
    return out


def _fmt(c: dict) -> str:
    return f"{c['coverage']:.2f} ({c['ci'][0]:.2f}-{c['ci'][1]:.2f}) w {c['width']:.3f}"


def table(summary: dict) -> str:
    """Markdown table: old (DeLong) vs new (bootstrap) coverage with Wilson CIs and widths."""
    lines = [
        "| condition | cohorts | truth | DeLong coverage (95% CI) width "
        "| bootstrap coverage (95% CI) width |",
        "|---|---|---|---|---|",
    ]
    for key, s in summary.items():
        for t in ("immune_0.5", "immune_expected", "immune_conditional", "gain_expected", "gain_conditional"):
            if t in s["delong"]:
                old, new = _fmt(s["delong"][t]), _fmt(s["bootstrap"][t])
                lines.append(f"| {key} | {s['cohorts']} | {t} | {old} | {new} |")
    return "\n".join(lines)


def main() -> None:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cohorts", type=int, default=40, help="cohorts per condition")
    ap.add_argument("--rm", type=int, default=120, help="RM women per cohort")
    ap.add_argument("--bootstrap", type=int, default=200, help="evaluate_models' n_bootstrap")
    ap.add_argument("--external-rm", type=int, default=3000, help="RM women of each external cohort")
    ap.add_argument("--indep-log-or", type=float, default=0.6, help="indep signal: log-OR per SD logit NK")
    ap.add_argument("--conditions", default=",".join(f"{g}/{c}" for g, c in CONDITIONS))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed0", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="6 cohorts, 50 replicates, 800 external RM women")
    ap.add_argument("--out-json", default=str(HERE / "results" / "bench_predict_coverage.json"))
    args = ap.parse_args()
    if args.quick:
        args.cohorts, args.bootstrap, args.external_rm = 6, 50, 800
    conds = [tuple(c.split("/")) for c in args.conditions.split(",")]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ext_paths = {}
        for i, (g, c) in enumerate(conds):
            ext_paths[(g, c)] = Path(tmp) / f"ext_{g}_{c}.pkl"
            external(g, c, args.external_rm, 900_000 + i, args.indep_log_or, ext_paths[(g, c)])
        jobs = [
            (g, c, args.seed0 + s, args.rm, args.bootstrap, args.indep_log_or, ext_paths[(g, c)])
            for s in range(args.cohorts)
            for g, c in conds
        ]
        rows = []
        with ProcessPoolExecutor(args.workers) as pool:
            for r in pool.map(job, jobs):
                rows.append(r)
                tag = f"{r['generator']}/{r['condition']} seed {r['seed']}"
                print(f"{tag}: evaluate {r['wall_s_evaluate']:.1f}s", file=sys.stderr, flush=True)
    summary = summarise(rows)
    text = table(summary)
    print(text)
    for key, s in summary.items():
        print(
            f"{key}: expected gain {s['expected_gain']:+.4f} (MC se {s['expected_gain_mc_se']:.4f}), "
            f"mean CV gain {s['mean_cv_gain']:+.4f} (sd {s['sd_cv_gain']:.3f}); expected immune AUC "
            f"{s['expected_immune_auc']:.3f}, mean CV immune AUC {s['mean_cv_immune_auc']:.3f} "
            f"(sd {s['sd_cv_immune_auc']:.3f}); events {s['mean_events']:.1f}"
        )
    wall = [r["wall_s_evaluate"] for r in rows]
    doc = {
        "args": vars(args),
        "target": TARGET,
        "summary": summary,
        "table": text,
        "evaluate_wall_s": {"mean": float(np.mean(wall)), "max": float(np.max(wall))},
        "total_wall_s": time.perf_counter() - t0,
        "cohorts": rows,
        "cpu_count": os.cpu_count(),
    }
    out = Path(args.out_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, default=float) + "\n")
    print(f"wrote {out}; evaluate_models {np.mean(wall):.1f}s per cohort (mean)")


if __name__ == "__main__":
    main()
