"""Survival outcomes, metrics and Cox models: known answers, lifelines equality, honest nested CV."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flowtools.io.clinical_db import FollowupDB
from flowtools.stats import survival as S

M = S.MONTH_DAYS


def _tiny_db() -> FollowupDB:
    d = pd.to_datetime
    women = pd.DataFrame(
        {
            "woman_id": ["W1", "W2", "W3", "W4"],
            "age": [31.0, 35.0, 28.0, 30.0],
            "bmi": [22.5, np.nan, 30.1, 24.0],
            "prior_losses": [3, 0, 2, 0],
            "prior_live_births": [0, 1, 1, 0],
            "rm_type": ["primary", "none", "secondary", "none"],
            "smoking": ["never", "current", "", "former"],
            "pcos": [False, True, False, False],
            "group": ["rm", "control", "rm", "control"],
            "recruitment_date": d(["2024-01-01"] * 4),
            "followup_end": d(["2026-01-01", "2025-01-01", "2024-07-01", "2025-06-01"]),
        }
    )
    episodes = pd.DataFrame(
        {
            "woman_id": ["W1", "W1", "W3", "W4"],
            "episode_date": d(["2024-04-01", "2025-03-01", "2024-07-01", "2024-10-01"]),
            "outcome": ["loss", "live_birth", "ongoing", "live_birth"],
            "gestational_weeks": [10.0, 39.0, 20.0, 40.0],
        }
    )
    return FollowupDB(women, episodes)


def test_derived_outcomes_known_answers():
    o = S.derive_outcomes(_tiny_db())
    r = o.loc["W1"]
    assert r["ttlb_event"] == 1 and r["ttlb_months"] == pytest.approx(425 / M)
    assert r["fp_event"] == 2 and r["fp_months"] == pytest.approx(91 / M)
    assert r["ttp_event"] == 1 and r["ttp_months"] == pytest.approx((91 - 8 * 7) / M)
    assert r["first_pregnancy_loss"] == 1 and r["n_episodes"] == 2
    r = o.loc["W2"]  # no pregnancy: censored at follow-up end
    assert (r["ttlb_event"], r["fp_event"], r["ttp_event"]) == (0, 0, 0)
    assert r["ttlb_months"] == pytest.approx(366 / M) and np.isnan(r["first_pregnancy_loss"])
    r = o.loc["W3"]  # ongoing at the last visit: pregnant (event), birth censored
    assert (r["ttlb_event"], r["fp_event"], r["ttp_event"]) == (0, 0, 1)
    assert r["ttlb_months"] == pytest.approx(182 / M) and r["ttp_months"] == pytest.approx((182 - 18 * 7) / M)
    r = o.loc["W4"]
    assert (r["ttlb_event"], r["fp_event"], r["first_pregnancy_loss"]) == (1, 1, 0)
    assert r["ttp_months"] == pytest.approx((274 - 38 * 7) / M)
    clin = S.clinical_features(_tiny_db())
    assert clin.loc["W2", "current_smoker"] == 1 and np.isnan(clin.loc["W3", "current_smoker"])
    b = S.binary_clinical(_tiny_db())
    assert list(b["woman_id"]) == ["W1", "W4"] and list(b["next_pregnancy_loss"]) == [1, 0]


def test_harrell_equals_lifelines():
    from lifelines.utils import concordance_index

    rng = np.random.default_rng(0)
    t = np.round(rng.exponential(5, 80))  # ties in time
    e = rng.random(80) < 0.6
    r = np.round(rng.standard_normal(80), 1)  # ties in risk
    assert S.harrell_c(t, e, r) == pytest.approx(concordance_index(t, -r, e), abs=1e-12)


def test_uno_and_td_auc_hand_computed():
    # censoring KM: G = 1 before t=2, 2/3 from t=2 (one of three at risk censored)
    t = np.array([1.0, 2.0, 3.0, 4.0])
    e = np.array([1, 0, 1, 0])
    r = np.array([0.9, 0.5, 0.05, 0.1])
    # pairs: (1 vs 2,3,4) concordant with weight 1/G(1-)^2 = 1; (3 vs 4) discordant with weight 1/(2/3)^2
    assert S.uno_c(t, e, r) == pytest.approx(3 / (3 + 2.25))
    assert S.harrell_c(t, e, r) == pytest.approx(3 / 4)
    # AUC(3.5): cases T=1 (w 1) and T=3 (w 1.5), control T=4: (1*1 + 1.5*0) / (2.5 * 1)
    assert S.td_auc(t, e, r, 3.5) == pytest.approx(0.4)
    assert S.td_auc(t, e, r, 2.5) == pytest.approx(1.0)
    assert np.isnan(S.td_auc(t, e, r, 0.5))


@pytest.mark.parametrize("penalizer", [0.0, 0.1])
def test_cox_equals_lifelines(penalizer):
    from lifelines import CoxPHFitter

    rng = np.random.default_rng(1)
    n, p = 90, 4
    x = rng.standard_normal((n, p))
    t = np.round(rng.exponential(10, n)) + 1
    e = (rng.random(n) < 0.7).astype(float)
    df = pd.DataFrame(x, columns=[f"x{j}" for j in range(p)]).assign(T=t, E=e)
    ref = CoxPHFitter(penalizer=penalizer).fit(df, "T", "E")
    xc = x - x.mean(0)
    beta, ok = S.cox_ridge(xc, t, e, n * penalizer * x.var(0, ddof=1))
    assert ok
    np.testing.assert_allclose(beta, ref.params_.to_numpy(), atol=1e-6)
    h0 = S._breslow_h0(xc, t, e, beta, [5.0, 12.0])
    bch = ref.baseline_cumulative_hazard_.iloc[:, 0]
    np.testing.assert_allclose(h0, [bch.loc[:5].iloc[-1], bch.loc[:12].iloc[-1]], rtol=1e-5)
    # the CV's two engines agree on standardised features
    z = (x - x.mean(0)) / x.std(0)
    pen = np.full(p, max(penalizer, 1e-3))
    np.testing.assert_allclose(
        S._fit_one(z, t, e, pen, "fast"), S._fit_one(z, t, e, pen, "lifelines"), atol=1e-5
    )


def _noise_frames(n: int, seed: int) -> tuple[pd.DataFrame, tuple[pd.DataFrame, pd.DataFrame]]:
    rng = np.random.default_rng(seed)
    ids = [f"W{i:03d}" for i in range(n)]
    age = rng.normal(32, 5, n)
    t = rng.exponential(12 * np.exp(0.05 * (age - 32)), n)
    c = rng.uniform(6, 30, n)
    out = pd.DataFrame({"ttlb_months": np.minimum(t, c), "ttlb_event": (t <= c).astype(int)}, index=ids)
    clin = pd.DataFrame({"age": age, "bmi": rng.normal(24, 3, n)}, index=ids)
    imm = pd.DataFrame(rng.standard_normal((n, 6)), index=ids, columns=[f"imm{j}" for j in range(6)])
    return imm, (out, clin)


def test_nested_cv_noise_near_half(tmp_path):
    imm, frames = _noise_frames(150, 2)
    ev = S.evaluate_survival(
        imm, frames, n_repeats=1, n_splits=4, n_bootstrap=30, ci="fixed", n_permutations=2, seed=0
    )
    c = ev.concordance.set_index("model")
    assert 0.40 < c.loc["immune", "harrell_c"] < 0.60
    assert 0.40 < c.loc["immune", "uno_c"] < 0.60
    assert c.loc["clinical", "harrell_c"] > c.loc["immune", "harrell_c"]
    assert (
        c.loc["immune", "harrell_ci_low"] < c.loc["immune", "harrell_c"] < c.loc["immune", "harrell_ci_high"]
    )
    assert ev.gain["harrell_c"]["ci_low"] < 0.02 < ev.gain["harrell_c"]["ci_high"] + 0.05
    assert 0 < ev.gain["p_permutation"] <= 1
    cal = ev.calibration
    assert set(cal["group"]) == {"1", "2", "3", "all"} and set(cal["horizon"]) == {12.0, 24.0}
    paths = ev.to_files(tmp_path)
    assert (tmp_path / "survival_evaluation.json").is_file() and len(paths) == 7
    from flowtools.stats.survival_figures import survival_figures

    out = frames[0].assign(group="rm", fp_months=frames[0]["ttlb_months"], fp_event=frames[0]["ttlb_event"])
    pngs = survival_figures(out, ev, tmp_path)
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs) and len(pngs) == 3


def test_fit_apply_save_load(tmp_path):
    imm, frames = _noise_frames(80, 3)
    m = S.fit_survival_model(imm, frames, n_bootstrap=20, seed=0)
    pred = m.apply(pd.concat([frames[1], imm], axis=1).iloc[:5])
    assert list(pred.columns) == [
        "woman_id",
        "p_12",
        "p_12_low",
        "p_12_high",
        "p_24",
        "p_24_low",
        "p_24_high",
    ]
    assert ((pred["p_12_low"] <= pred["p_12"] + 1e-9) & (pred["p_12"] <= pred["p_12_high"] + 1e-9)).all()
    assert (pred["p_24"] >= pred["p_12"]).all()
    back = S.load_survival_model(m.save(tmp_path / "m.json"))
    pd.testing.assert_frame_equal(back.apply(pd.concat([frames[1], imm], axis=1).iloc[:5]), pred)
    with pytest.raises(ValueError, match="lack the model's columns"):
        m.apply(frames[1])


def test_outcome_and_engine_checked():
    imm, frames = _noise_frames(30, 4)
    with pytest.raises(ValueError, match="outcome must be"):
        S.evaluate_survival(imm, frames, outcome="death")
    with pytest.raises(ValueError, match="engine"):
        S.evaluate_survival(imm, frames, engine="R")
    with pytest.raises(ValueError, match="ci must be 'bootstrap' or 'fixed', not 'wide'"):
        S.evaluate_survival(imm, frames, ci="wide")


def test_demo_stage_on_24_women(tmp_path):
    import warnings

    from flowtools.io.clinical_db import read_followup
    from flowtools.stats.tables import tables_from_truth
    from flowtools.synth import make_cohort
    from flowtools.synth.followup import make_followup

    make_cohort(tmp_path / "c", n_women=24, seed=0, write_fcs=False)
    fu = make_followup(tmp_path / "c", tmp_path / "fu", seed=0)
    counts = tables_from_truth(tmp_path / "c")
    counts = counts[counts["woman_id"] != "W024"]  # a woman whose gate failed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny folds
        s = S.run_survival_stage(counts, read_followup(fu.sqlite), tmp_path / "out", seed=0, n_bootstrap=3)
    assert s["dropped_women"] == ["W024"] and s["n_women"] == 23
    assert set(s["harrell_c"]) == {"clinical", "immune", "clinical + immune"}
    assert all(0 <= v <= 1 for v in s["harrell_c"].values())
    assert all(__import__("pathlib").Path(p).is_file() for p in s["paths"])


def test_km_equals_lifelines():
    from lifelines import KaplanMeierFitter

    rng = np.random.default_rng(5)
    t = np.round(rng.exponential(5, 60))
    e = rng.random(60) < 0.5
    ts, vs = S._km(t, e)
    ref = KaplanMeierFitter().fit(t, e).survival_function_.iloc[:, 0]
    np.testing.assert_allclose(vs, ref.loc[ts].to_numpy(), rtol=1e-12)


_FAST = {
    "n_repeats": 1,
    "n_splits": 3,
    "inner_folds": 2,
    "penalizers": (0.3, 3.0),
    "clinical_penalizers": (0.01, 0.1),
}


def test_bootstrap_interval_contains_estimate_and_is_reproducible():
    imm, frames = _noise_frames(60, 6)
    imm = imm.iloc[:, :2]
    ev = S.evaluate_survival(imm, frames, n_bootstrap=6, seed=1, **_FAST)
    c = ev.concordance
    assert (c["ci_method"] == "bootstrap").all() and ev.parameters["ci"] == "bootstrap"
    for short, col in (
        ("harrell", "harrell_c"),
        ("uno", "uno_c"),
        ("auc_12", "auc_12"),
        ("auc_24", "auc_24"),
    ):
        assert (c[f"{short}_ci_low"] <= c[col]).all() and (c[col] <= c[f"{short}_ci_high"]).all()
        assert (c[f"{short}_ci_high"] > c[f"{short}_ci_low"]).all()
    for k in ("harrell_c", "uno_c", "auc_12", "auc_24"):
        g = ev.gain[k]
        assert g["ci_low"] < g["estimate"] < g["ci_high"]
    assert ev.gain["ci_method"] == "bootstrap"
    again = S.evaluate_survival(imm, frames, n_bootstrap=6, seed=1, **_FAST)
    pd.testing.assert_frame_equal(again.concordance, c)
    assert again.gain == ev.gain
    other = S.evaluate_survival(imm, frames, n_bootstrap=6, seed=2, **_FAST)
    assert not np.allclose(other.concordance["harrell_ci_low"], c["harrell_ci_low"])


def test_bootstrap_interval_widens_with_fewer_women():
    imm, frames = _noise_frames(240, 7)
    widths = []
    for n in (240, 40):
        sub = (frames[0].iloc[:n], frames[1].iloc[:n])
        ev = S.evaluate_survival(None, sub, models=["clinical"], n_bootstrap=12, seed=0, **_FAST)
        r = ev.concordance.iloc[0]
        widths.append(r["harrell_ci_high"] - r["harrell_ci_low"])
    assert widths[1] > 1.5 * widths[0]


def test_grouped_folds_keep_copies_of_a_woman_together():
    rng = np.random.default_rng(0)
    groups = rng.choice(30, 30)  # a bootstrap resample: duplicated women
    e = (groups % 3 == 0).astype(float)  # the event belongs to the woman
    folds = S._grouped_folds(groups, e, 4, seed=5)
    assert len(folds) == 4
    test_rows = np.concatenate([te for _, te in folds])
    assert np.array_equal(np.sort(test_rows), np.arange(30))  # every row tested once
    for tr, te in folds:
        assert not set(groups[tr]) & set(groups[te])
        assert e[te].sum() > 0  # stratified by event over distinct women
    assert [te.tolist() for _, te in S._grouped_folds(groups, e, 4, seed=5)] == [
        te.tolist() for _, te in folds
    ]


def test_bootstrap_folds_never_split_a_woman(monkeypatch):
    imm, frames = _noise_frames(40, 8)
    calls = []
    real = S._grouped_folds

    def checked(groups, e, k, seed):
        folds = real(groups, e, k, seed)
        for tr, te in folds:
            assert not set(np.asarray(groups)[tr]) & set(np.asarray(groups)[te])
        calls.append(len(np.unique(groups)) < len(groups))
        return folds

    from flowtools.stats import _cox_tuning, survival_cv

    # outer folds are dealt in survival_cv, the inner (tuning) folds in _cox_tuning
    monkeypatch.setattr(survival_cv, "_grouped_folds", checked)
    monkeypatch.setattr(_cox_tuning, "_grouped_folds", checked)
    S.evaluate_survival(imm.iloc[:, :2], frames, n_bootstrap=2, seed=0, **_FAST)
    # outer folds of each replicate and the inner folds of every outer training set, all with copies
    assert len(calls) >= 2 * (1 + 3) and all(calls)


def test_cox_warm_start_reaches_the_same_optimum():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((80, 4))
    t = rng.exponential(10, 80).round(1)
    e = (rng.random(80) < 0.7).astype(float)
    cold, ok = S.cox_ridge(x, t, e, 2.0)
    warm, ok2 = S.cox_ridge(x, t, e, 2.0, beta0=np.full(4, 0.5))
    assert ok and ok2
    np.testing.assert_allclose(warm, cold, atol=1e-8)
