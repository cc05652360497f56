"""The comparison: on the same data as statsmodels/scipy, on null cohorts, and with planted effects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from flowtools.stats import compare, read_clinical, tables_from_gate, tables_from_truth
from flowtools.stats.comparison import SCALE_CLR, SCALE_PCT

sm = pytest.importorskip("statsmodels.api")


def _design_frame(g):
    x = pd.DataFrame({"rm": (g.group == "RM").astype(float)})
    for c in ("age", "bmi"):
        x[c] = (g[c] - g[c].mean()) / g[c].std(ddof=0)
    x = pd.concat([x, pd.get_dummies(g.plate, drop_first=True, dtype=float)], axis=1)
    return sm.add_constant(x)


def test_default_row_equals_statsmodels_wls_at_the_reml_variance(small_cohort):
    """The default (logit-normal) row is WLS with weights 1/(tau2 + v), KH scale, t(n-p): statsmodels' WLS."""
    counts = tables_from_truth(small_cohort)
    clin = read_clinical(small_cohort / "clinical.csv")
    res = compare(counts, clin, covariates=("age", "bmi"), batch="plate")
    feat = "TBNK-NK|Singlets/Live/Lymphocytes/NK cells"
    row = res.table[(res.table.population == feat) & (res.table.scale == SCALE_PCT)].iloc[0]
    g = counts[counts.feature == feat].merge(clin, on="woman_id")
    x = _design_frame(g)
    k, n = g["count"].to_numpy(float), g.parent_count.to_numpy(float)
    y = np.log((k + 0.5) / (n - k + 0.5))
    v = 1 / (k + 0.5) + 1 / (n - k + 0.5)
    tau2 = row.between_woman_sd**2
    ref = sm.WLS(y, x, weights=1 / (tau2 + v)).fit()
    np.testing.assert_allclose(row.effect, ref.params["rm"], rtol=1e-8)
    np.testing.assert_allclose(row.p, ref.pvalues["rm"], rtol=1e-6)
    np.testing.assert_allclose([row.ci_low, row.ci_high], ref.conf_int().loc["rm"], rtol=1e-6)
    # the adjusted % difference: average marginal effect, recomputed here
    a = 1 / np.sqrt(1 + (16 * np.sqrt(3) / (15 * np.pi)) ** 2 * tau2)
    x1, x0 = x.copy(), x.copy()
    x1["rm"], x0["rm"] = 1.0, 0.0
    diff = 100 * np.mean(1 / (1 + np.exp(-a * (x1 @ ref.params))) - 1 / (1 + np.exp(-a * (x0 @ ref.params))))
    np.testing.assert_allclose(row.diff_pct, diff, rtol=1e-8)
    assert row.diff_pct_ci_low < row.diff_pct < row.diff_pct_ci_high
    assert np.sign(row.diff_pct) == np.sign(row.effect)
    assert res.table.correction.str.contains("Benjamini-Hochberg").all()
    from statsmodels.stats.multitest import multipletests

    fam = res.table[(res.table.subgroup == "all RM") & (res.table.scale == SCALE_PCT)]
    ok = fam.p.notna()
    np.testing.assert_allclose(fam.q[ok], multipletests(fam.p[ok], method="fdr_bh")[1])


def test_compare_row_equals_statsmodels_and_scipy(small_cohort):
    """The quasi-binomial option and the two-level correction, against statsmodels and scipy."""
    counts = tables_from_truth(small_cohort)
    clin = read_clinical(small_cohort / "clinical.csv")
    res = compare(
        counts, clin, covariates=("age", "bmi"), batch="plate", test="quasi-binomial", correction="two-level"
    )
    feat = "TBNK-NK|Singlets/Live/Lymphocytes/NK cells"
    row = res.table[(res.table.population == feat) & (res.table.scale == SCALE_PCT)].iloc[0]
    g = counts[counts.feature == feat].merge(clin, on="woman_id")
    x = pd.DataFrame({"rm": (g.group == "RM").astype(float)})
    for c in ("age", "bmi"):
        x[c] = (g[c] - g[c].mean()) / g[c].std(ddof=0)
    x = pd.concat([x, pd.get_dummies(g.plate, drop_first=True, dtype=float)], axis=1)
    x = sm.add_constant(x)
    ref = sm.GLM(
        g["count"] / g.parent_count, x, family=sm.families.Binomial(), var_weights=g.parent_count
    ).fit(scale="X2", use_t=True)
    np.testing.assert_allclose(row.effect, ref.params["rm"], rtol=1e-6)
    np.testing.assert_allclose(row.p, ref.pvalues["rm"], rtol=1e-5)
    np.testing.assert_allclose([row.ci_low, row.ci_high], ref.conf_int().loc["rm"], rtol=1e-5)
    rm = g.group == "RM"
    np.testing.assert_allclose(
        row.p_mannwhitney_unadjusted, stats.mannwhitneyu(g.pct_parent[rm], g.pct_parent[~rm]).pvalue
    )
    logit = np.log((g["count"] + 0.5) / (g.parent_count - g["count"] + 0.5))
    welch = stats.ttest_ind(logit[rm], logit[~rm], equal_var=False)
    np.testing.assert_allclose(row.p_welch_t_unadjusted, welch.pvalue)
    # q-values: two-level FDR within (subgroup, scale), rebuilt from statsmodels' BH
    from statsmodels.stats.multitest import multipletests

    fam = res.table[(res.table.subgroup == "all RM") & (res.table.scale == SCALE_PCT)]
    key = fam.tube + "|" + fam.parent
    pg = fam.groupby(key)["p_group"].first()
    qg = pd.Series(multipletests(pg, method="fdr_bh")[1], index=pg.index)
    np.testing.assert_allclose(fam.q_group, qg.loc[key].to_numpy())
    s, m = np.sort(qg.to_numpy()), len(qg)
    for i, row in fam.iterrows():
        sib = fam[key == key[i]]
        qw = pd.Series(multipletests(sib.p, method="fdr_bh")[1], index=sib.index)[i]
        ref = min(1.0, min(max(s[r - 1], qg[key[i]], m * qw / r) for r in range(1, m + 1)))
        np.testing.assert_allclose(row.q, ref)
    assert (res.table.correction == res.parameters["correction"]).all()
    assert res.table.correction.str.contains("Benjamini-Bogomolov").all()


def test_every_row_says_its_scale(small_cohort):
    res = compare(
        tables_from_truth(small_cohort), read_clinical(small_cohort / "clinical.csv"), subgroup="rm_type"
    )
    assert set(res.table.scale) == {SCALE_PCT, SCALE_CLR}
    assert set(res.table.subgroup) == {"all RM", "rm_type=primary", "rm_type=secondary"}
    assert res.table.test.str.contains("woman as unit|OLS on CLR").all()


def test_planted_effects_found_and_nothing_unrelated(planted_cohort):
    res = compare(tables_from_truth(planted_cohort), read_clinical(planted_cohort / "clinical.csv"))
    t = res.table[(res.table.subgroup == "all RM") & (res.table.scale == SCALE_PCT)].set_index("population")
    for pop in ("NK cells", "CD4/Th17", "CD4/Treg"):
        hit = t[t.index.str.endswith(pop)]
        assert (hit.q < 0.05).all(), (pop, hit[["effect", "q"]])
    assert t.loc[t.index.str.endswith("NK cells"), "effect"].iloc[0] > 0
    assert t.loc[t.index.str.endswith("CD4/Treg"), "effect"].iloc[0] < 0
    # populations outside the affected sibling groups (lymphocyte lineages, NK subsets, CD4 subsets)
    lym = "Singlets/Live/Lymphocytes"
    unrelated = t[~t.parent.isin([lym, f"{lym}/NK cells", f"{lym}/T cells/CD4"])]
    assert len(unrelated) >= 8
    assert (unrelated.q >= 0.05).all(), unrelated[unrelated.q < 0.05]


def test_null_cohorts_type1_error_in_band(tmp_path):
    from flowtools.synth import make_cohort

    ps, any_hit = [], []
    for s in range(40):
        d = tmp_path / f"n{s}"
        make_cohort(d, n_women=60, seed=500 + s, null=True, write_fcs=False)
        # Only the % of parent rows are checked; each (subgroup, scale) family is corrected on its own, so
        # they are the same rows, p and q, as with the CLR scale beside them (~40% of compare's time).
        prim = compare(tables_from_truth(d), read_clinical(d / "clinical.csv"), scales=(SCALE_PCT,)).table
        assert set(prim.scale) == {SCALE_PCT}
        ps.append(prim.p.to_numpy())
        any_hit.append((prim.q < 0.05).any())
    rate = np.mean(np.concatenate(ps) < 0.05)
    assert 0.025 <= rate <= 0.08, rate  # 880 correlated tests: loose band
    assert np.mean(any_hit) <= 0.15


def test_gate_and_truth_loaders_give_one_structure(tmp_path):
    pops = pd.DataFrame(
        {
            "sample_id": ["S1"] * 3 + ["S2"] * 3,
            "woman_id": ["W1"] * 3 + ["W2"] * 3,
            "tube": "T",
            "plate": "P01",
            "well": "A01",
            "population": ["qc", "qc/lymphocytes", "qc/lymphocytes/NK cells"] * 2,
            "count": [1000, 400, 40, 1000, 500, 0],
            "pct_parent": [100, 40, 10, 100, 50, 0],
            "pct_total": 0.0,
        }
    )
    pops.to_csv(tmp_path / "populations.csv", index=False)
    t = tables_from_gate(tmp_path / "per_woman.csv")
    assert list(t.columns) == [
        "woman_id",
        "tube",
        "population",
        "feature",
        "parent",
        "count",
        "parent_count",
        "pct_parent",
    ]
    nk = t[t.population.str.endswith("NK cells")].set_index("woman_id")
    assert nk.loc["W2", "parent_count"] == 500 and nk.loc["W2", "count"] == 0  # joined from the parent row
    assert not t.population.eq("qc").any()  # technical gate dropped
