"""Validity of flowtools.stats.survival (time to live birth), on synthetic cohorts with follow-up databases.

Each cohort: ``make_cohort(write_fcs=False)`` (immune tables from the truth) and
``make_followup(write=False)`` (follow-up database in memory).

* **Null cohorts** (``make_cohort(null=True)``: no immune effect on anything):
  the mean nested-CV Harrell C of the immune Cox model (target 0.50 +- 0.03),
  and the type-I error at alpha 0.05 of the Wald test of one immune feature in
  an unpenalised Cox model adjusted for age (lifelines ``CoxPHFitter``), every
  immune feature in turn, pooled over cohorts (target 0.035-0.065; Wilson CI).
* **Leaky variant**: 200 pure-noise features added; the 10 with the highest
  |C - 0.5| on all women chosen before the CV (the mistake), then the same
  nested CV: must score above 0.5 (the benchmark sees leakage). The honest
  version (choice inside the folds) is printed beside it.
* **Planted cohorts** (the default effects; the follow-up plants an immune
  effect on conception, :mod:`flowtools.synth.followup`): the gain in Harrell C
  (and Uno C, AUC at 12/24 months) of clinical + immune over clinical, per
  cohort with its bootstrap CI (``--planted-bootstrap`` replicates around the
  whole nested CV), summarised over cohorts: the power (share of cohorts whose
  CI excludes 0, Wilson CI) and the coverage of the external gain (each
  cohort's final models applied to the large independent cohort of the same
  generator: C of clinical + immune minus C of clinical there; the cohort's
  own, and the mean over cohorts); external calibration slope: each
  cohort's final model (``fit_survival_model``) applied to a large independent
  cohort, slope of a Cox model of its outcome on the predicted linear predictor
  (median, target 0.8-1.2).
* **Interval coverage** (``--coverage`` planted and null cohorts each): for
  ``ci="fixed"`` and ``ci="bootstrap"``, the share of cohorts whose 95% CI of
  the Harrell C of clinical + immune, and of its gain over clinical, covers the
  external value: each cohort's final models applied to a large independent
  cohort of the same generator (planted or null), and the mean of those over
  cohorts (the expected performance at this size, what a CV estimates);
  Wilson CIs of the shares and the mean widths (target >= 0.93 for bootstrap).
* **Known answers**: our ridge Cox coefficients and baseline hazard against
  lifelines' ``CoxPHFitter(penalizer=...)`` on the same data (clinical + immune),
  and Harrell's C against ``lifelines.utils.concordance_index``.
* **Riley et al. 2020** criterion (i) for a survival outcome, expected
  shrinkage 0.9: ``n >= p / ((S - 1) ln(1 - R2_CS / S))`` with the Cox-Snell
  R2 (``1 - exp(-LR / n)``) of each unpenalised Cox model on the large cohort,
  and the expected (van Houwelingen) shrinkage ``1 - p / LR`` at the default size.

Prints a table and writes JSON (default ``benchmarks/results/survival_validity.json``).
Usage: ``python benchmarks/bench_survival_validity.py [--quick] [--null 60] [--planted 10] [--women 200]
[--planted-bootstrap 50]
[--coverage 20 --coverage-women 200 --coverage-bootstrap 50] [--only-coverage]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

TARGETS = {"null_c": (0.47, 0.53), "type1": (0.035, 0.065), "calibration_slope": (0.8, 1.2)}


def _cohort(tmp: str, n: int, seed: int, *, null: bool) -> tuple:
    from flowtools.stats.predict import build_features
    from flowtools.stats.survival import clinical_features, derive_outcomes
    from flowtools.stats.tables import tables_from_truth
    from flowtools.synth import make_cohort
    from flowtools.synth.followup import make_followup

    d = Path(tmp) / f"c{seed}"
    make_cohort(d, n_women=n, seed=seed, null=null, write_fcs=False)
    db = make_followup(d, d / "fu", seed=seed, write=False).db
    imm = build_features(tables_from_truth(d))
    out, clin = derive_outcomes(db), clinical_features(db)
    return imm.reindex(out.index), out, clin


def _wilson(k: int, n: int) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    z, p = 1.959964, k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(c - h), float(c + h)


def _wald_pvalues(imm: pd.DataFrame, out: pd.DataFrame, clin: pd.DataFrame) -> list[float]:
    from lifelines import CoxPHFitter

    ps = []
    base = pd.DataFrame({"T": out["ttlb_months"], "E": out["ttlb_event"], "age": clin["age"]})
    for f in imm.columns:
        df = base.assign(x=imm[f].to_numpy(float)).dropna()
        m = CoxPHFitter().fit(df, "T", "E")
        ps.append(float(m.summary.loc["x", "p"]))
    return ps


def null_job(seed: int, n: int, *, cv: bool) -> dict:
    from flowtools.stats.survival import evaluate_survival

    with tempfile.TemporaryDirectory() as tmp:
        imm, out, clin = _cohort(tmp, n, seed, null=True)
    res = {"seed": seed, "p": _wald_pvalues(imm, out, clin)}
    if cv:
        ev = evaluate_survival(imm, (out, clin), models=["immune"], n_repeats=1, n_bootstrap=0, seed=seed)
        res["c_immune"] = float(ev.concordance["harrell_c"].iloc[0])
        res["uno_immune"] = float(ev.concordance["uno_c"].iloc[0])
    return res


def leaky_job(seed: int, n: int) -> dict:
    from flowtools.stats.survival import evaluate_survival, harrell_c

    with tempfile.TemporaryDirectory() as tmp:
        _, out, clin = _cohort(tmp, n, seed, null=True)
    rng = np.random.default_rng(seed)
    noise = pd.DataFrame(
        rng.standard_normal((len(out), 200)), index=out.index, columns=[f"noise{j}" for j in range(200)]
    )
    t, e = out["ttlb_months"].to_numpy(), out["ttlb_event"].to_numpy()
    score = np.array([abs(harrell_c(t, e, noise[c].to_numpy()) - 0.5) for c in noise.columns])
    chosen = noise.iloc[:, np.argsort(-score)[:10]]
    ev = evaluate_survival(chosen, (out, clin), models=["immune"], n_repeats=1, n_bootstrap=0, seed=seed)
    honest = evaluate_survival(
        noise.iloc[:, :10], (out, clin), models=["immune"], n_repeats=1, n_bootstrap=0, seed=seed
    )
    return {
        "seed": seed,
        "c_leaky": float(ev.concordance["harrell_c"].iloc[0]),
        "c_honest_10_noise": float(honest.concordance["harrell_c"].iloc[0]),
    }


def planted_job(seed: int, n: int, ext: dict, n_repeats: int, n_bootstrap: int) -> dict:
    from flowtools.stats.survival import cox_ridge, evaluate_survival, fit_survival_model, harrell_c

    with tempfile.TemporaryDirectory() as tmp:
        imm, out, clin = _cohort(tmp, n, seed, null=False)
    ev = evaluate_survival(imm, (out, clin), n_repeats=n_repeats, n_bootstrap=n_bootstrap, seed=seed)
    c = ev.concordance.set_index("model")
    res = {
        "seed": seed,
        "gain": ev.gain,
        **{f"c_{m}": float(c.loc[m, "harrell_c"]) for m in c.index},
        **{f"uno_{m}": float(c.loc[m, "uno_c"]) for m in c.index},
        **{f"auc12_{m}": float(c.loc[m, "auc_12"]) for m in c.index},
    }
    for model in ("clinical", "clinical + immune"):
        fm = fit_survival_model(imm, (out, clin), model=model, n_bootstrap=1, seed=seed)
        lp = fm.standardized(ext["x"]) @ fm.beta
        slope = cox_ridge((lp - lp.mean())[:, None], ext["t"], ext["e"], 0.0)[0][0]
        res[f"ext_slope_{model}"] = float(slope)
        res[f"ext_c_{model}"] = harrell_c(ext["t"], ext["e"], lp)
    # the gain this cohort's final models achieve on the large independent cohort (what its CI should cover)
    res["ext_gain"] = res["ext_c_clinical + immune"] - res["ext_c_clinical"]
    return res


def _external_c(fm: object, ext: dict) -> float:
    from flowtools.stats.survival import harrell_c

    return harrell_c(ext["t"], ext["e"], fm.standardized(ext["x"]) @ fm.beta)


def coverage_job(seed: int, n: int, ext: dict, *, null: bool, n_bootstrap: int) -> dict:
    """One cohort: the C of clinical + immune and the gain with both intervals, and their external values.

    The external value of a cohort: its final models (``fit_survival_model``,
    fitted on all its women) applied to the large independent cohort of the
    same generator (null or planted), Harrell C there; the gain is that of
    clinical + immune over clinical.
    """
    from flowtools.stats.survival import evaluate_survival, fit_survival_model

    with tempfile.TemporaryDirectory() as tmp:
        imm, out, clin = _cohort(tmp, n, seed, null=null)
    res: dict = {"seed": seed, "null": null}
    for ci, nb in (("fixed", 200), ("bootstrap", n_bootstrap)):
        t0 = time.time()
        ev = evaluate_survival(imm, (out, clin), n_repeats=1, n_bootstrap=nb, ci=ci, seed=seed)
        c = ev.concordance.set_index("model").loc["clinical + immune"]
        g = ev.gain["harrell_c"]
        res[ci] = {
            "c": float(c["harrell_c"]),
            "c_ci": [float(c["harrell_ci_low"]), float(c["harrell_ci_high"])],
            "gain": float(g["estimate"]),
            "gain_ci": [float(g["ci_low"]), float(g["ci_high"])],
            "seconds": time.time() - t0,
        }
    ext_c = {}
    for model in ("clinical", "clinical + immune"):
        fm = fit_survival_model(imm, (out, clin), model=model, n_bootstrap=1, seed=seed)
        ext_c[model] = _external_c(fm, ext)
    res["ext_c"] = ext_c["clinical + immune"]
    res["ext_gain"] = ext_c["clinical + immune"] - ext_c["clinical"]
    return res


def _covers(ci: list[float], v: float) -> bool:
    return bool(ci[0] <= v <= ci[1])


def coverage_summary(jobs: list[dict]) -> dict:
    """Share of cohorts whose interval covers the external value (the cohort's own; the mean over cohorts).

    Wilson 95% CI of each share; mean interval width.
    """
    out: dict = {"cohorts": len(jobs)}
    if not jobs:
        return out
    mean_ext = {
        "c": float(np.mean([j["ext_c"] for j in jobs])),
        "gain": float(np.mean([j["ext_gain"] for j in jobs])),
    }
    out["mean_external"] = mean_ext
    out["mean_estimate"] = {
        ci: {q: float(np.mean([j[ci][q] for j in jobs])) for q in ("c", "gain")}
        for ci in ("fixed", "bootstrap")
    }
    for ci in ("fixed", "bootstrap"):
        r = {}
        for q, ext_key in (("c", "ext_c"), ("gain", "ext_gain")):
            own = sum(_covers(j[ci][f"{q}_ci"], j[ext_key]) for j in jobs)
            mean = sum(_covers(j[ci][f"{q}_ci"], mean_ext[q]) for j in jobs)
            r[q] = {
                "coverage_own_external": own / len(jobs),
                "coverage_own_external_ci": _wilson(own, len(jobs)),
                "coverage_mean_external": mean / len(jobs),
                "coverage_mean_external_ci": _wilson(mean, len(jobs)),
                "mean_width": float(np.mean([np.diff(j[ci][f"{q}_ci"])[0] for j in jobs])),
            }
        r["mean_seconds"] = float(np.mean([j[ci]["seconds"] for j in jobs]))
        out[ci] = r
    return out


def known_answers(seed: int, n: int) -> dict:
    from lifelines import CoxPHFitter
    from lifelines.utils import concordance_index

    from flowtools.stats.survival import _breslow_h0, cox_ridge, harrell_c

    with tempfile.TemporaryDirectory() as tmp:
        imm, out, clin = _cohort(tmp, n, seed, null=False)
    x = pd.concat([clin, imm], axis=1)
    x = x.fillna(x.median())
    t, e = out["ttlb_months"].to_numpy(float), out["ttlb_event"].to_numpy(float)
    res = {}
    for pen in (0.05, 0.5):
        df = x.assign(T=t, E=e)
        ref = CoxPHFitter(penalizer=pen).fit(df, "T", "E")
        xc = x.to_numpy(float) - x.to_numpy(float).mean(0)
        beta, ok = cox_ridge(xc, t, e, len(t) * pen * x.to_numpy(float).var(0, ddof=1))
        h0 = _breslow_h0(xc, t, e, beta, [12.0, 24.0])
        bch = ref.baseline_cumulative_hazard_.iloc[:, 0]
        ref_h0 = [bch.loc[:12.0].iloc[-1], bch.loc[:24.0].iloc[-1]]
        lp = xc @ beta
        res[str(pen)] = {
            "n_coefficients": int(beta.size),
            "max_abs_coef_diff": float(np.max(np.abs(beta - ref.params_.to_numpy()))),
            "max_rel_h0_diff": float(np.max(np.abs(h0 / np.asarray(ref_h0) - 1))),
            "harrell_c_ours": harrell_c(t, e, lp),
            "harrell_c_lifelines": float(concordance_index(t, -lp, e)),
            "lifelines_model_concordance": float(ref.concordance_index_),
            "converged": bool(ok),
        }
    return res


def riley(ext: dict, n_default: int) -> dict:
    from lifelines import CoxPHFitter

    t, e = ext["t"], ext["e"]
    res = {}
    for model, cols in (("clinical", ext["clin_cols"]), ("clinical + immune", list(ext["x"].columns))):
        df = ext["x"][cols].fillna(ext["x"][cols].median()).assign(T=t, E=e)
        # a whisper of ridge: some immune features are nearly collinear (shares of one parent)
        m = CoxPHFitter(penalizer=1e-4).fit(df, "T", "E")
        lr = float(m.log_likelihood_ratio_test().test_statistic)
        n = len(t)
        r2 = 1 - np.exp(-lr / n)
        p = len(cols)
        need = p / ((0.9 - 1) * np.log(1 - r2 / 0.9))
        lr_default = -n_default * np.log(1 - r2)
        res[model] = {
            "parameters": p,
            "lr_statistic": lr,
            "r2_cs": float(r2),
            "women_needed": float(need),
            "events_needed": float(need * e.mean()),
            "expected_shrinkage_at_default": float(1 - p / lr_default),
        }
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="Small smoke run (< 3 min): too few cohorts to judge."
    )
    ap.add_argument("--null", type=int, default=100, help="Null cohorts (Wald type-I error).")
    ap.add_argument("--null-cv", type=int, default=40, help="Null cohorts with the nested CV (C of immune).")
    ap.add_argument("--leaky", type=int, default=10)
    ap.add_argument("--planted", type=int, default=20)
    ap.add_argument("--women", type=int, default=200)
    ap.add_argument(
        "--planted-bootstrap", type=int, default=50, help="Replicates of the planted cohorts' gain CI."
    )
    ap.add_argument("--external", type=int, default=2000, help="Women of the independent cohort.")
    ap.add_argument("--coverage", type=int, default=20, help="Planted and null cohorts each, CI coverage.")
    ap.add_argument("--coverage-women", type=int, default=200, help="Women per coverage cohort.")
    ap.add_argument("--coverage-bootstrap", type=int, default=50, help="Replicates of ci='bootstrap'.")
    ap.add_argument("--only-coverage", action="store_true", help="Run the coverage section alone.")
    ap.add_argument(
        "--out-json", type=Path, default=Path(__file__).parent / "results" / "survival_validity.json"
    )
    a = ap.parse_args(argv)
    if a.quick:
        # a smoke run of every section (about 2 minutes on one core); the default's numbers are the ones
        a.null, a.null_cv, a.leaky, a.planted, a.external, a.planted_bootstrap = 30, 8, 2, 3, 1500, 10
        if "--coverage" not in (argv if argv is not None else sys.argv):
            a.coverage, a.coverage_women, a.coverage_bootstrap = 2, 100, 10
    if a.only_coverage:
        a.null = a.null_cv = a.leaky = a.planted = 0
    warnings.simplefilter("ignore")
    t0 = time.time()
    from flowtools.stats.survival import CLINICAL_FEATURES

    with tempfile.TemporaryDirectory() as tmp:
        imm, out, clin = _cohort(tmp, a.external, 987654, null=False)
    ext = {
        "x": pd.concat([clin, imm], axis=1),
        "t": out["ttlb_months"].to_numpy(float),
        "e": out["ttlb_event"].to_numpy(float),
        "clin_cols": list(CLINICAL_FEATURES),
    }
    with tempfile.TemporaryDirectory() as tmp:
        imm0, out0, clin0 = _cohort(tmp, a.external, 987655, null=True)
    ext_null = {
        "x": pd.concat([clin0, imm0], axis=1),
        "t": out0["ttlb_months"].to_numpy(float),
        "e": out0["ttlb_event"].to_numpy(float),
    }
    t1 = time.time()
    cov = {
        "planted": [
            coverage_job(3000 + s, a.coverage_women, ext, null=False, n_bootstrap=a.coverage_bootstrap)
            for s in range(a.coverage)
        ],
        "null": [
            coverage_job(4000 + s, a.coverage_women, ext_null, null=True, n_bootstrap=a.coverage_bootstrap)
            for s in range(a.coverage)
        ],
    }
    coverage = {k: coverage_summary(v) | {"per_cohort": v} for k, v in cov.items()}
    coverage["seconds"] = time.time() - t1
    cov_lines = [
        f"| coverage (cohorts of {a.coverage_women}, {a.coverage_bootstrap} replicates) | target | "
        "C of clinical + immune: own ext. / mean ext. [Wilson CI] (width) | "
        "gain: own ext. / mean ext. [Wilson CI] (width) |",
        "|---|---|---|---|",
    ]
    for kind in ("planted", "null"):
        sm = coverage[kind]
        if not sm.get("cohorts"):
            continue
        for ci in ("fixed", "bootstrap"):
            cells = []
            for q in ("c", "gain"):
                r = sm[ci][q]
                lo_, hi_ = r["coverage_mean_external_ci"]
                cells.append(
                    f"{r['coverage_own_external']:.2f} / {r['coverage_mean_external']:.2f} "
                    f"[{lo_:.2f}-{hi_:.2f}] ({r['mean_width']:.3f})"
                )
            cov_lines.append(
                f"| {kind} ({sm['cohorts']}), ci={ci} | {'>= 0.93' if ci == 'bootstrap' else 'reported'} | "
                + " | ".join(cells)
                + " |"
            )
    if a.only_coverage:
        text = "\n".join(cov_lines)
        print(text)
        a.out_json.parent.mkdir(parents=True, exist_ok=True)
        a.out_json.write_text(
            json.dumps(
                {
                    "parameters": vars(a) | {"out_json": str(a.out_json)},
                    "coverage": coverage,
                    "table": text,
                    "seconds": time.time() - t0,
                },
                indent=1,
                default=float,
            )
            + "\n"
        )
        print(f"{time.time() - t0:.0f} s")
        return 0
    nulls = [null_job(1000 + s, a.women, cv=s < a.null_cv) for s in range(a.null)]
    t_null = time.time() - t0
    leaks = [leaky_job(5000 + s, a.women) for s in range(a.leaky)]
    planted = [
        planted_job(2000 + s, a.women, ext, 1 if a.quick else 2, a.planted_bootstrap)
        for s in range(a.planted)
    ]
    known = known_answers(7, a.women)
    rl = riley(ext, a.women)

    p = np.concatenate([r["p"] for r in nulls])
    k = int(np.sum(p < 0.05))
    lo, hi = _wilson(k, p.size)
    first = np.array([r["p"][0] for r in nulls])
    c_null = np.array([r["c_immune"] for r in nulls if "c_immune" in r])
    u_null = np.array([r["uno_immune"] for r in nulls if "uno_immune" in r])
    gains = np.array([r["gain"]["harrell_c"]["estimate"] for r in planted])
    g_lo = np.array([r["gain"]["harrell_c"]["ci_low"] for r in planted])
    g_hi = np.array([r["gain"]["harrell_c"]["ci_high"] for r in planted])
    slopes = {m: np.array([r[f"ext_slope_{m}"] for r in planted]) for m in ("clinical", "clinical + immune")}
    ext_gain = np.array([r["ext_gain"] for r in planted])
    n_pl = len(planted)
    k_power = int(np.sum(g_lo > 0))
    k_own = int(np.sum((g_lo <= ext_gain) & (ext_gain <= g_hi)))
    k_mean = int(np.sum((g_lo <= ext_gain.mean()) & (ext_gain.mean() <= g_hi))) if n_pl else 0
    result = {
        "parameters": vars(a) | {"out_json": str(a.out_json)},
        "null": {
            "cohorts": a.null,
            "wald_tests": int(p.size),
            "type1_error": k / p.size,
            "type1_ci": [lo, hi],
            "type1_first_feature_only": float(np.mean(first < 0.05)),
            "cv_cohorts": int(c_null.size),
            "mean_c_immune": float(c_null.mean()),
            "se_c_immune": float(c_null.std(ddof=1) / np.sqrt(c_null.size)),
            "mean_uno_immune": float(u_null.mean()),
        },
        "leaky": {
            "cohorts": a.leaky,
            "mean_c_leaky": float(np.mean([r["c_leaky"] for r in leaks])),
            "mean_c_honest": float(np.mean([r["c_honest_10_noise"] for r in leaks])),
            "per_cohort": leaks,
        },
        "planted": {
            "cohorts": a.planted,
            "mean_c": {
                m: float(np.mean([r[f"c_{m}"] for r in planted]))
                for m in ("clinical", "immune", "clinical + immune")
            },
            "mean_uno": {
                m: float(np.mean([r[f"uno_{m}"] for r in planted]))
                for m in ("clinical", "immune", "clinical + immune")
            },
            "mean_auc12": {
                m: float(np.mean([r[f"auc12_{m}"] for r in planted]))
                for m in ("clinical", "immune", "clinical + immune")
            },
            "mean_gain_harrell": float(gains.mean()),
            "gain_se_over_cohorts": float(gains.std(ddof=1) / np.sqrt(gains.size))
            if gains.size > 1
            else None,
            "mean_ci_width": float(np.mean(g_hi - g_lo)),
            "share_ci_above_zero": float(np.mean(g_lo > 0)),
            "power": k_power / n_pl if n_pl else float("nan"),
            "power_ci": _wilson(k_power, n_pl),
            "mean_gain_ci": [float(g_lo.mean()), float(g_hi.mean())],
            "mean_external_gain": float(ext_gain.mean()),
            "external_gain_sd": float(ext_gain.std(ddof=1)) if n_pl > 1 else None,
            "gain_coverage_own_external": k_own / n_pl if n_pl else float("nan"),
            "gain_coverage_own_external_ci": _wilson(k_own, n_pl),
            "gain_coverage_mean_external": k_mean / n_pl if n_pl else float("nan"),
            "gain_coverage_mean_external_ci": _wilson(k_mean, n_pl),
            "planted_bootstrap": a.planted_bootstrap,
            "external_slope_median": {m: float(np.median(v)) for m, v in slopes.items()},
            "external_slope_quartiles": {m: np.quantile(v, [0.25, 0.75]).tolist() for m, v in slopes.items()},
            "per_cohort_gain": [
                r["gain"]["harrell_c"] | {"seed": r["seed"], "external_gain": r["ext_gain"]} for r in planted
            ],
        },
        "known_answers": known,
        "riley": rl,
        "coverage": coverage,
        "seconds": time.time() - t0,
        "seconds_null": t_null,
    }
    nb, lk, pl = result["null"], result["leaky"], result["planted"]
    checks = {
        "null_c_within_0.50+-0.03": bool(abs(nb["mean_c_immune"] - 0.5) <= 0.03),
        "type1_in_0.035-0.065": bool(TARGETS["type1"][0] <= nb["type1_error"] <= TARGETS["type1"][1]),
        "leaky_above_0.5": bool(lk["mean_c_leaky"] > 0.53),
        "coefficients_equal_lifelines": bool(all(v["max_abs_coef_diff"] < 1e-4 for v in known.values())),
        "c_equal_lifelines": bool(
            all(abs(v["harrell_c_ours"] - v["harrell_c_lifelines"]) < 1e-12 for v in known.values())
        ),
        # the planted gain is found on average: the mean over cohorts more than 2 SE above 0
        "planted_mean_gain_above_0": bool(
            n_pl > 1 and pl["mean_gain_harrell"] - 2 * pl["gain_se_over_cohorts"] > 0
        ),
        "external_slope_median_in_0.8-1.2": bool(
            0.8 <= pl["external_slope_median"]["clinical + immune"] <= 1.2
        ),
    }
    result["checks"] = checks
    lines = [
        "| check | value | target |",
        "|---|---|---|",
        f"| null: mean nested-CV Harrell C, immune ({nb['cv_cohorts']} cohorts) | {nb['mean_c_immune']:.3f} "
        f"(SE {nb['se_c_immune']:.3f}; Uno {nb['mean_uno_immune']:.3f}) | 0.50 +- 0.03 |",
        f"| null: type-I error, Wald test of one immune feature ({nb['wald_tests']} tests) | "
        f"{nb['type1_error']:.3f} ({lo:.3f}-{hi:.3f}) | 0.035-0.065 |",
        f"| leaky: C after choosing 10 of 200 noise features on all women | {lk['mean_c_leaky']:.3f} "
        f"(honest 10 noise: {lk['mean_c_honest']:.3f}) | > 0.5 |",
        "| planted: mean Harrell C clinical / immune / clinical + immune | "
        + " / ".join(f"{v:.3f}" for v in pl["mean_c"].values())
        + " | reported |",
        f"| planted: gain in Harrell C of clinical + immune over clinical, mean (mean 95% CI; "
        f"{a.planted_bootstrap} replicates) | {pl['mean_gain_harrell']:+.3f} "
        f"({pl['mean_gain_ci'][0]:+.3f} to {pl['mean_gain_ci'][1]:+.3f}) | reported |",
        f"| planted: power, share of cohorts whose gain CI excludes 0 ({n_pl} cohorts) | "
        f"{pl['power']:.2f} [{pl['power_ci'][0]:.2f}-{pl['power_ci'][1]:.2f}] | reported |",
        f"| planted: coverage of the external gain (own / mean {pl['mean_external_gain']:+.3f}; "
        f"{a.external} independent women) | {pl['gain_coverage_own_external']:.2f} "
        f"[{pl['gain_coverage_own_external_ci'][0]:.2f}-{pl['gain_coverage_own_external_ci'][1]:.2f}] / "
        f"{pl['gain_coverage_mean_external']:.2f} | >= 0.93 |",
        "| planted: external calibration slope, median (clinical / clinical + immune) | "
        + " / ".join(f"{v:.2f}" for v in pl["external_slope_median"].values())
        + " | 0.8-1.2 |",
    ]
    for pen, v in known.items():
        lines.append(
            f"| known answer (penalizer {pen}, {v['n_coefficients']} coef.): max |coef - lifelines|, "
            f"C ours vs lifelines | {v['max_abs_coef_diff']:.1e}, {v['harrell_c_ours']:.6f} vs "
            f"{v['harrell_c_lifelines']:.6f} | equal |"
        )
    for m, v in rl.items():
        lines.append(
            f"| Riley 2020 (S = 0.9), {m}: p = {v['parameters']}, R2_CS = {v['r2_cs']:.3f} | "
            f"{v['women_needed']:.0f} women ({v['events_needed']:.0f} events); expected shrinkage at "
            f"{a.women}: {v['expected_shrinkage_at_default']:.2f} | printed |"
        )
    text = "\n".join([*lines, "", *cov_lines])
    print(text)
    print("checks:", json.dumps(checks))
    print(f"{time.time() - t0:.0f} s")
    a.out_json.parent.mkdir(parents=True, exist_ok=True)
    result["table"] = text
    a.out_json.write_text(json.dumps(result, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
