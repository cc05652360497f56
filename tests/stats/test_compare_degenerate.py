"""Degenerate fits and designs: a clear note per population, never a crash, never a tiny p (issue #22).

Cohorts come from the independent generator in ``benchmarks/indep_cohort.py``
(it shares nothing with ``flowtools.synth``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flowtools.stats import compare
from flowtools.stats._glm import empirical_logit, logit_normal, quasi_binomial, reml_tau2
from flowtools.stats.comparison import SCALE_CLR, SCALE_PCT, TESTS
from flowtools.stats.errors import ClinicalDataError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from indep_cohort import IndepCohortSpec, make_indep_cohort  # noqa: E402

sm = pytest.importorskip("statsmodels.api")
NK = "PBMC|Lymphocytes/NK cells"


@pytest.fixture(scope="module")
def cohort():
    counts, clin, _ = make_indep_cohort(IndepCohortSpec(n_rm=40, n_control=40), 3)
    return counts, clin


def _row(res, feature, scale=SCALE_PCT, subgroup="all RM"):
    t = res.table
    return t[(t.population == feature) & (t.scale == scale) & (t.subgroup == subgroup)].iloc[0]


def test_reml_tau2_maximises_an_independent_restricted_likelihood():
    rng = np.random.default_rng(1)
    n = 60
    x = np.column_stack([np.ones(n), rng.integers(0, 2, n), rng.normal(size=n)])
    trials = np.exp(rng.uniform(np.log(2000), np.log(50000), n)).astype(int)
    k = rng.binomial(trials, 1 / (1 + np.exp(-(-2 + rng.normal(0, 0.3, n)))))
    y, v = empirical_logit(k, trials)

    def neg_reml(t2):  # dense-matrix REML, written apart from the fit
        vm = np.diag(t2 + v)
        vi = np.linalg.inv(vm)
        xtvx = x.T @ vi @ x
        p = vi - vi @ x @ np.linalg.inv(xtvx) @ x.T @ vi
        return np.linalg.slogdet(vm)[1] + np.linalg.slogdet(xtvx)[1] + y @ p @ y

    grid = np.linspace(0, 0.5, 5001)
    best = grid[np.argmin([neg_reml(t) for t in grid])]
    assert abs(reml_tau2(x, y, v) - best) <= 1e-4
    fit = logit_normal(x, k, trials)
    ref = sm.WLS(y, x, weights=1 / (fit.tau2 + v)).fit()
    np.testing.assert_allclose(fit.params, ref.params, rtol=1e-10)
    np.testing.assert_allclose(fit.bse, ref.bse, rtol=1e-8)
    np.testing.assert_allclose(fit.pvalues, ref.pvalues, rtol=1e-8)


def test_sandwich_option_equals_statsmodels_hc0_scaled():
    rng = np.random.default_rng(2)
    n = 50
    x = np.column_stack([np.ones(n), rng.integers(0, 2, n)])
    trials = rng.integers(500, 5000, n)
    k = rng.binomial(trials, 1 / (1 + np.exp(-(-1 + rng.normal(0, 0.4, n)))))
    fit = quasi_binomial(x, k, trials, robust=True)
    ref = sm.GLM(k / trials, x, family=sm.families.Binomial(), var_weights=trials).fit(cov_type="HC0")
    np.testing.assert_allclose(fit.params, ref.params, rtol=1e-8)
    np.testing.assert_allclose(fit.bse, ref.bse * np.sqrt(n / (n - 2)), rtol=1e-6)


def test_every_test_option_runs_and_is_labelled(cohort):
    counts, clin = cohort
    for test, text in TESTS.items():
        res = compare(counts, clin, test=test, scales=(SCALE_PCT,))
        assert res.table.test.str.startswith(text).all()
        assert res.parameters["test"] == test
    with pytest.raises(ValueError, match="test must be one of"):
        compare(counts, clin, test="binomial")


def test_population_absent_in_every_control_gives_no_p(cohort):
    counts, clin = cohort
    c = counts.copy()
    controls = set(clin.woman_id[clin.group == "control"])
    th17 = (c.feature == "PBMC|Lymphocytes/T cells/CD4/Th17") & c.woman_id.isin(controls)
    c.loc[th17, "count"] = 0
    for test in TESTS:
        r = _row(compare(c, clin, test=test, scales=(SCALE_PCT,)), "PBMC|Lymphocytes/T cells/CD4/Th17")
        assert np.isnan(r.p) and np.isnan(r.effect) and np.isnan(r.q), test
        assert "absent (0 events) in every control" in r.note


def test_diverging_glm_is_reported_not_converged():
    # a plate in which every woman has 0 events: its coefficient runs to -infinity
    x = np.column_stack([np.ones(8), [0, 1] * 4, [1, 1, 0, 0, 0, 0, 0, 0]])
    trials = np.full(8, 40.0)
    k = np.array([0, 0, 3, 1, 2, 0, 1, 4], float)
    fit = quasi_binomial(x, k, trials)
    assert not fit.converged


def test_plate_fully_confounded_with_group_refuses_every_row(cohort):
    counts, clin = cohort
    c2 = clin.copy()
    c2["plate"] = np.where(c2.group == "RM", "P01", "P02")
    res = compare(counts, c2)
    assert res.table.p.isna().all()
    assert res.table.note.str.contains("not estimable").all()
    assert res.significant().empty
    assert any("fully confounded with plate" in w for w in res.warnings)


def test_strong_confounding_is_noted(cohort):
    counts, clin = cohort
    c2 = clin.copy()
    rm = (c2.group == "RM").to_numpy()
    # every plate one group except two women swapped: estimable, but barely
    plate = np.where(rm, "P01", "P02")
    plate[np.flatnonzero(rm)[:1]] = "P02"
    plate[np.flatnonzero(~rm)[:1]] = "P01"
    c2["plate"] = plate
    r = _row(compare(counts, c2, scales=(SCALE_PCT,)), NK)
    assert np.isfinite(r.p)
    assert "variance inflation" in r.note


def test_few_women_warn(cohort):
    counts, clin = cohort
    few = clin.groupby("group").head(5)
    c = counts[counts.woman_id.isin(few.woman_id)]
    res = compare(c, few, batch=None)
    assert any("residual degrees of freedom" in w for w in res.warnings)


def test_empty_parent_and_rare_siblings_in_compositions(cohort):
    counts, clin = cohort
    c = counts.copy()
    # one woman whose T cells hold no event: her T-cell composition is 0/0/0
    w0 = clin.woman_id.iloc[0]
    t_kids = c.parent == "Lymphocytes/T cells"
    c.loc[t_kids & (c.woman_id == w0), ["count", "parent_count"]] = 0
    res = compare(c, clin)
    t_rows = res.data[(res.data.scale == SCALE_CLR) & res.data.population.str.contains("T cells/")]
    assert w0 not in set(t_rows.woman_id)  # a 0/0/0 composition is left out
    # a rare sibling (counts 0-5) whose zeros differ by group must not drive its siblings
    rng = np.random.default_rng(0)
    rm = set(clin.woman_id[clin.group == "RM"])
    dn = (c.feature == "PBMC|Lymphocytes/T cells/DN") & (c.woman_id != w0)
    is_rm = c.loc[dn, "woman_id"].isin(rm).to_numpy()
    new = np.where(is_rm, rng.integers(3, 6, dn.sum()), rng.integers(0, 2, dn.sum()))
    moved = pd.Series(c.loc[dn, "count"].to_numpy() - new, index=c.loc[dn, "woman_id"].to_numpy())
    c.loc[dn, "count"] = new
    cd8 = (c.feature == "PBMC|Lymphocytes/T cells/CD8") & (c.woman_id != w0)
    c.loc[cd8, "count"] += moved.loc[c.loc[cd8, "woman_id"]].to_numpy()  # the partition still sums
    res = compare(c, clin, scales=(SCALE_CLR,))
    t = res.table[res.table.subgroup == "all RM"]
    siblings = t[t.parent == "Lymphocytes/T cells"]
    # DN is left out; CD4 and CD8 alone are too few parts for a composition, and a warning says why
    assert siblings.empty
    assert any("T cells" in w and "too rare: PBMC|Lymphocytes/T cells/DN" in w for w in res.warnings)
    lym = t[t.parent == "Lymphocytes"]
    assert len(lym) == 4 and lym.note.eq("").all()


def test_categorical_covariate_and_columns_outside_the_schema(cohort):
    counts, clin = cohort
    c2 = clin.copy()
    third = np.arange(len(c2)) % 3
    c2["smoking"] = np.where(third == 0, "never", np.where(third, "former", "current"))
    res = compare(counts, c2, covariates=("age", "smoking"), scales=(SCALE_PCT,))
    assert res.table.p.notna().all()
    c3 = clin.copy()
    c3["crp"] = ["1.2"] * (len(c3) - 1) + ["high"]
    with pytest.raises(ClinicalDataError, match="crp"):
        compare(counts, c3, covariates=("crp",))
    c4 = clin.copy()
    c4["crp"] = ["1.5"] * (len(c4) - 2) + ["", "2.5"]
    with pytest.raises(ClinicalDataError, match="missing value"):
        compare(counts, c4, covariates=("crp",))
    dropped = compare(counts, c4, covariates=("crp",), missing="drop", scales=(SCALE_PCT,))
    assert dropped.parameters["dropped_women"] == [c4.woman_id.iloc[-2]]
    imputed = compare(counts, c4, covariates=("crp",), missing="impute", scales=(SCALE_PCT,))
    assert imputed.parameters["n_women"] == len(c4)


def test_unadjusted_checks_are_named_so(cohort):
    counts, clin = cohort
    cols = compare(counts, clin).table.columns
    assert "p_mannwhitney_unadjusted" in cols and "p_welch_t_unadjusted" in cols
    assert "p_mannwhitney" not in cols


def test_bh_is_never_less_powerful_than_bonferroni():
    counts, clin, _ = make_indep_cohort(IndepCohortSpec(n_rm=40, n_control=40, nk_shift=4, nk_fraction=1), 5)
    t = compare(counts, clin).table
    bonferroni_hits = 0
    for _, fam in t.groupby(["subgroup", "scale"]):
        ok = fam.p.notna()
        bonf = fam.p[ok] * ok.sum() < 0.05
        assert (fam.q[ok][bonf] < 0.05).all()
        bonferroni_hits += int(bonf.sum())
    assert bonferroni_hits > 0, "the planted NK shift passed no Bonferroni test: nothing was compared"


def test_provenance_records_library_versions(cohort, tmp_path):
    import json

    counts, clin = cohort
    res = compare(counts, clin, scales=(SCALE_PCT,))
    f = tmp_path / "clinical.csv"
    pd.DataFrame({"a": [1]}).to_csv(f)
    res.to_files(tmp_path / "out", inputs={"clinical": f, "immune": f})
    prov = json.loads((tmp_path / "out" / "comparison.provenance.json").read_text())
    assert prov["libraries"]["numpy"] == np.__version__
    assert set(prov["inputs"]) == {"clinical", "immune"}
    assert prov["parameters"]["test"] == "logit-normal"


def test_rare_population_is_fitted_without_precision_weights(cohort):
    """Counts of a few events: the logit-normal test falls back to equal weights (noted), which equals the
    ols-logit test on that row; a common population keeps its precision weights."""
    counts, clin = cohort
    rare = "PBMC|Lymphocytes/T cells/CD4/Rare"
    assert counts[counts.feature == rare]["count"].median() < 10
    default = compare(counts, clin, scales=(SCALE_PCT,))
    ols = compare(counts, clin, test="ols-logit", scales=(SCALE_PCT,))
    r, o = _row(default, rare), _row(ols, rare)
    assert "equal weights" in r["note"]
    assert r["p"] == pytest.approx(o["p"], rel=1e-12)
    assert r["effect"] == pytest.approx(o["effect"], rel=1e-12)
    common, common_ols = _row(default, NK), _row(ols, NK)
    assert "equal weights" not in common["note"]
    assert common["p"] != pytest.approx(common_ols["p"], rel=1e-6)
