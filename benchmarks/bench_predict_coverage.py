"""Coverage of the AUC and gain intervals of ``flowtools.stats.evaluate_models`` (issue #22).

For each condition (generator x null/signal) many cohorts of RM women are
drawn; on each, ``evaluate_models(task="next_loss")`` runs at its defaults
(5 x 5-fold nested CV, ``ci="bootstrap"``), which reports the bootstrap
interval (estimate +- 1.96 ``se``) and the old DeLong interval
(``ci_low_delong``/``ci_high_delong``) side by side.

Generators
----------
``synth``
    the project's own :func:`flowtools.synth.make_cohort` (``null=True``: the
    next loss depends on age and prior losses only; ``null=False``: the planted
    immune subgroup and NK share enter it), tables from the truth.
``indep``
    ``benchmarks/indep_cohort.py`` (shares nothing with ``flowtools.synth``),
    composition model alternating logit-normal (even seeds) / Dirichlet (odd) by
cohort, each scored against an external cohort of its own model (the two
models tie the outcome to the NK share differently: in the Dirichlet model the
expected NK share varies by plate only);
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

* ``expected``: the mean over the condition's cohorts (of the same composition
  model) of the external gain of models fitted on the whole cohort as
  ``fit_model`` does (the procedure's expected gain at this size; its
  Monte-Carlo error is printed);
* ``conditional``: the external gain of this cohort's own fitted models.

The same two truths are reported for the immune AUC. Coverage estimates carry
Wilson 95% intervals. Widths are mean interval widths. Printed beside them: the
external AUC of the CV's own fold models (trained on 4/5 of the cohort; what a
5-fold CV AUC estimates), and per composition model the expected and mean CV values.

Runs append each finished cohort to ``<out-json>.rows.jsonl``; ``--summarise
ROWS...`` re-tabulates finished cohorts (e.g. two runs of one condition with
different ``--seed0``), and with ``--retruth`` first recomputes their external
truths (the external cohorts of runs before the per-model truths).

Usage: ``python benchmarks/bench_predict_coverage.py [--cohorts 40] [--bootstrap 200]
[--conditions indep/signal] [--workers 1]``.
Run it with ``PYTHONPATH=.`` from the repository root when another checkout is installed.
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


def composition(gen: str, seed: int) -> str:
    """The composition model of a cohort: indep alternates logit-normal (even seeds) and Dirichlet (odd)."""
    if gen == "synth":
        return "synth"
    return "logit-normal" if seed % 2 == 0 else "dirichlet"


def external_seed(gen: str, cond: str, model: str) -> int:
    """Seed of the external cohort of a condition and composition model (its parity picks the model)."""
    return 900_000 + 10 * CONDITIONS.index((gen, cond)) + (model == "dirichlet")


def _cohort(gen: str, cond: str, n_rm: int, seed: int, log_or: float) -> tuple:
    if gen == "synth":
        return _synth(n_rm, seed, signal=cond == "signal")
    return _indep(n_rm, seed, signal=cond == "signal", log_or=log_or, model=composition(gen, seed))


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


def _fold_model_aucs(xc, imm, y, ext: dict, seed: int, n_splits: int = 5, n_repeats: int = 5) -> dict:
    """External AUC of the cross-validation's own fold models, averaged over folds and repeats.

    The same outer splits and inner splits as ``evaluate_models(seed=seed)``: this is the quantity a
    CV AUC estimates (models trained on (K-1)/K of the cohort), beside the ``external`` AUC of the
    model fitted on the whole cohort.
    """
    from sklearn.model_selection import RepeatedStratifiedKFold

    from flowtools.stats.predict import DEFAULT_CS, _inner_splits, _ridge_tuned_predict, _unpenalized_idx

    blocks = {"clinical": xc, "immune": imm, "clinical + immune": pd.concat([xc, imm], axis=1)}
    eblocks = {
        "clinical": ext["xc"],
        "immune": ext["imm"],
        "clinical + immune": pd.concat([ext["xc"], ext["imm"]], axis=1),
    }
    k = min(n_splits, int(y.sum()), int((1 - y).sum()))
    splits = list(RepeatedStratifiedKFold(n_splits=k, n_repeats=n_repeats, random_state=seed).split(y, y))
    # per model, once: unpenalised columns, training and external matrices
    mats = {
        m: (
            _unpenalized_idx(list(x.columns), list(xc.columns)),
            x.to_numpy(float),
            eblocks[m].reindex(columns=x.columns).to_numpy(float),
        )
        for m, x in blocks.items()
    }
    out = {m: [] for m in blocks}
    for i, (tr, _) in enumerate(splits):
        inner = _inner_splits(y[tr], 3, seed + i)
        for m, (free, xa, xe) in mats.items():
            q = _ridge_tuned_predict(xa[tr], y[tr], xe, inner, DEFAULT_CS, free)
            out[m].append(weighted_auc(q, ext["p"]))
    return {m: float(np.mean(v)) for m, v in out.items()}


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
    ext_data = pd.read_pickle(ext_path)
    ext = _external_aucs(xc, imm, y, ext_data, seed)
    ext_cv = _fold_model_aucs(xc, imm, y, ext_data, seed)
    a = ev.auc.set_index("model")
    cols = [
        "auc",
        "ci_low",
        "ci_high",
        "ci_low_delong",
        "ci_high_delong",
        "se",
        "sd_repeats",
    ]
    out = {
        "generator": gen,
        "condition": cond,
        "seed": seed,
        "composition": composition(gen, seed),
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
        "external_cv": ext_cv,
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


_METHODS = {"delong": ("ci_low_delong", "ci_high_delong"), "bootstrap": ("ci_low", "ci_high")}


def _bounds(rs: list[dict], meth: str) -> tuple[np.ndarray, ...]:
    """Immune AUC and gain bounds of one interval method over cohorts ``rs``, as evaluate_models gave them."""
    lk, hk = _METHODS[meth]
    return (
        np.array([r["auc"]["immune"][lk] for r in rs]),
        np.array([r["auc"]["immune"][hk] for r in rs]),
        np.array([r["gain"][lk] for r in rs]),
        np.array([r["gain"][hk] for r in rs]),
    )


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
        # the expected truth of each cohort: the mean over the cohorts of its composition model (indep
        # alternates two models, whose outcome-NK links differ; each is scored on its own external cohort)
        comp = np.array([r.get("composition", composition(gen, r["seed"])) for r in rs])
        exp_imm, exp_gain = np.empty(len(rs)), np.empty(len(rs))
        s["by_composition"] = {}
        for c in np.unique(comp):
            k = comp == c
            exp_imm[k], exp_gain[k] = ext_imm[k].mean(), ext_gain[k].mean()
            est = np.array([r["auc"]["immune"]["auc"] for r in rs])[k]
            gest = np.array([r["gain"]["estimate"] for r in rs])[k]
            s["by_composition"][str(c)] = {
                "cohorts": int(k.sum()),
                "expected_immune_auc": float(ext_imm[k].mean()),
                "mean_cv_immune_auc": float(est.mean()),
                "expected_gain": float(ext_gain[k].mean()),
                "mean_cv_gain": float(gest.mean()),
            }
        s["expected_gain"] = float(ext_gain.mean())
        mc = ext_gain.std(ddof=1) / np.sqrt(len(rs)) if len(rs) > 1 else float("nan")
        s["expected_gain_mc_se"] = float(mc)
        s["expected_immune_auc"] = float(ext_imm.mean())
        # what a 5-fold CV estimates: its own fold models (trained on 4/5 of the cohort) on new women
        s["expected_fold_model_immune_auc"] = float(np.mean([r["external_cv"]["immune"] for r in rs]))
        s["expected_fold_model_gain"] = float(
            np.mean([r["external_cv"]["clinical + immune"] - r["external_cv"]["clinical"] for r in rs])
        )
        s["mean_cv_gain"] = float(np.mean([r["gain"]["estimate"] for r in rs]))
        s["mean_cv_immune_auc"] = float(np.mean([r["auc"]["immune"]["auc"] for r in rs]))
        s["sd_cv_immune_auc"] = float(np.std([r["auc"]["immune"]["auc"] for r in rs], ddof=1))
        s["sd_cv_gain"] = float(np.std([r["gain"]["estimate"] for r in rs], ddof=1))
        for meth in _METHODS:
            il, ih, gl, gh = _bounds(rs, meth)
            m = {
                "immune_expected": _cov(il, ih, exp_imm),
                "immune_conditional": _cov(il, ih, ext_imm),
                "gain_expected": _cov(gl, gh, exp_gain),
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
    """Markdown table: coverage (Wilson 95% CI) and mean width of each interval method."""
    meths = list(_METHODS)
    lines = [
        "| condition | cohorts | truth | " + " | ".join(f"{m} coverage (95% CI) width" for m in meths) + " |",
        "|---|---|---|" + "---|" * len(meths),
    ]
    for key, s in summary.items():
        for t in ("immune_0.5", "immune_expected", "immune_conditional", "gain_expected", "gain_conditional"):
            if t in s["delong"]:
                cells = " | ".join(_fmt(s[m][t]) for m in meths)
                lines.append(f"| {key} | {s['cohorts']} | {t} | {cells} |")
    return "\n".join(lines)


def _externals(conds: list[tuple], args: argparse.Namespace, tmp: Path) -> dict:
    """One large external cohort per condition and composition model (the same in every run)."""
    paths = {}
    for g, c in conds:
        for model in ("synth",) if g == "synth" else ("logit-normal", "dirichlet"):
            paths[(g, c, model)] = tmp / f"ext_{g}_{c}_{model}.pkl"
            external(
                g, c, args.external_rm, external_seed(g, c, model), args.indep_log_or, paths[(g, c, model)]
            )
    return paths


def retruth(rows: list[dict], args: argparse.Namespace) -> list[dict]:
    """Recompute the external truths of finished cohorts (the interval columns are left as they are)."""
    conds = sorted({(r["generator"], r["condition"]) for r in rows}, key=CONDITIONS.index)
    with tempfile.TemporaryDirectory() as tmp:
        paths = _externals(conds, args, Path(tmp))
        out = []
        for r in rows:
            g, c, sd = r["generator"], r["condition"], r["seed"]
            counts, clin, _ = _cohort(g, c, args.rm, sd, args.indep_log_or)
            xc, imm, y = _frames(counts, clin)
            ext = pd.read_pickle(paths[(g, c, composition(g, sd))])
            out.append(
                {
                    **r,
                    "composition": composition(g, sd),
                    "external": _external_aucs(xc, imm, y, ext, sd),
                    "external_cv": _fold_model_aucs(xc, imm, y, ext, sd),
                }
            )
    return out


def main() -> None:  # noqa: D103
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cohorts", type=int, default=40, help="cohorts per condition")
    ap.add_argument("--rm", type=int, default=120, help="RM women per cohort")
    ap.add_argument("--bootstrap", type=int, default=200, help="evaluate_models' n_bootstrap")
    ap.add_argument("--external-rm", type=int, default=3000, help="RM women of each external cohort")
    ap.add_argument("--indep-log-or", type=float, default=0.6, help="indep signal: log-OR per SD logit NK")
    ap.add_argument("--conditions", default=",".join(f"{g}/{c}" for g, c in CONDITIONS))
    ap.add_argument("--workers", "--jobs", type=int, default=2)
    ap.add_argument(
        "--summarise",
        nargs="+",
        metavar="ROWS",
        help="only summarise finished cohorts (the .rows.jsonl files a run appends to as it goes)",
    )
    ap.add_argument(
        "--retruth",
        action="store_true",
        help="with --summarise: recompute the cohorts' external truths (per composition model) first",
    )
    ap.add_argument("--seed0", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="6 cohorts, 50 replicates, 800 external RM women")
    ap.add_argument("--out-json", default=str(HERE / "results" / "bench_predict_coverage.json"))
    args = ap.parse_args()
    if args.quick:
        args.cohorts, args.bootstrap, args.external_rm = 6, 50, 800
    conds = [tuple(c.split("/")) for c in args.conditions.split(",")]
    t0 = time.perf_counter()
    rows_path = Path(args.out_json).with_suffix(".rows.jsonl")
    if args.summarise:
        rows = [json.loads(line) for f in args.summarise for line in Path(f).read_text().splitlines() if line]
        if args.retruth:
            rows = retruth(rows, args)
            rows_path.write_text("".join(json.dumps(r, default=float) + "\n" for r in rows))
        _report(rows, args, t0)
        return
    rows_path.parent.mkdir(parents=True, exist_ok=True)
    rows_path.write_text("")
    with tempfile.TemporaryDirectory() as tmp:
        ext_paths = _externals(conds, args, Path(tmp))
        jobs = [
            (g, c, sd, args.rm, args.bootstrap, args.indep_log_or, ext_paths[(g, c, composition(g, sd))])
            for sd in range(args.seed0, args.seed0 + args.cohorts)
            for g, c in conds
        ]
        rows = []
        with ProcessPoolExecutor(args.workers) as pool:
            for r in pool.map(job, jobs):
                rows.append(r)
                with rows_path.open("a") as fh:
                    fh.write(json.dumps(r, default=float) + "\n")
                tag = f"{r['generator']}/{r['condition']} seed {r['seed']}"
                print(f"{tag}: evaluate {r['wall_s_evaluate']:.1f}s", file=sys.stderr, flush=True)
    _report(rows, args, t0)


def _report(rows: list[dict], args: argparse.Namespace, t0: float) -> None:
    summary = summarise(rows)
    text = table(summary)
    print(text)
    for key, s in summary.items():
        for c, b in s["by_composition"].items():
            print(
                f"{key} [{c}, {b['cohorts']} cohorts]: immune AUC expected {b['expected_immune_auc']:.3f}, "
                f"mean CV {b['mean_cv_immune_auc']:.3f}; gain expected {b['expected_gain']:+.4f}, "
                f"mean CV {b['mean_cv_gain']:+.4f}"
            )
        print(
            f"{key}: expected gain {s['expected_gain']:+.4f} (MC se {s['expected_gain_mc_se']:.4f}), "
            f"mean CV gain {s['mean_cv_gain']:+.4f} (sd {s['sd_cv_gain']:.3f}); expected immune AUC "
            f"{s['expected_immune_auc']:.3f}, mean CV immune AUC {s['mean_cv_immune_auc']:.3f} "
            f"(sd {s['sd_cv_immune_auc']:.3f}), fold models' immune AUC "
            f"{s['expected_fold_model_immune_auc']:.3f}; events {s['mean_events']:.1f}"
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
    out.with_suffix(".md").write_text(text + "\n")
    print(f"wrote {out} (and .md); evaluate_models {np.mean(wall):.1f}s per cohort (mean)")


if __name__ == "__main__":
    main()
