"""First pregnancy's outcome as competing events: cause-specific Cox = lifelines, CIF = Aalen-Johansen."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from flowtools.stats import survival as S


def _cr_frames(n: int, seed: int, *, ties: bool = False):
    """Two covariates: x0 raises the live-birth hazard, x1 the loss hazard; censoring uniform."""
    rng = np.random.default_rng(seed)
    ids = [f"W{i:03d}" for i in range(n)]
    x = pd.DataFrame({"age": rng.normal(32, 4, n), "bmi": rng.normal(24, 3, n)}, index=ids)
    z0, z1 = (x["age"] - 32) / 4, (x["bmi"] - 24) / 3
    t1 = rng.exponential(10 / np.exp(0.6 * z0))
    t2 = rng.exponential(25 / np.exp(0.8 * z1))
    c = rng.uniform(4, 30, n)
    t = np.minimum.reduce([t1, t2, c])
    ev = np.where(t == c, 0, np.where(t == t1, 1, 2))
    if ties:
        t = np.ceil(t)
    out = pd.DataFrame({"fp_months": t, "fp_event": ev}, index=ids)
    return x, out


@pytest.mark.parametrize("penalizer", [0.0, 0.1])
def test_cause_specific_fits_equal_lifelines(penalizer):
    from lifelines import CoxPHFitter

    x, out = _cr_frames(150, 1, ties=True)  # tied times: Efron, as lifelines
    m = S.fit_cause_specific(x, out["fp_months"], out["fp_event"], penalizer=penalizer)
    for cause, col in ((1, "live_birth"), (2, "loss")):
        df = x.assign(T=out["fp_months"], E=(out["fp_event"] == cause).astype(int))
        # lifelines' own stopping rule leaves ~1e-6; tightened, it agrees with our Newton optimum
        ref = CoxPHFitter(penalizer=penalizer).fit(df, "T", "E", fit_options={"precision": 1e-12})
        np.testing.assert_allclose(m.coef_[col].to_numpy(), ref.params_.to_numpy(), atol=1e-6)
    assert m.n_events == int((out["fp_event"] == 1).sum()) and m.n_competing == int(
        (out["fp_event"] == 2).sum()
    )
    # the planted signs: x0 (age) raises live birth, x1 (bmi) raises loss
    assert m.coef_.loc["age", "live_birth"] > 0.1 and m.coef_.loc["bmi", "loss"] > 0.1


def test_cif_without_covariates_equals_aalen_johansen():
    from lifelines import AalenJohansenFitter

    _, out = _cr_frames(120, 2)  # continuous times: lifelines' estimator needs no jitter
    t, ev = out["fp_months"].to_numpy(), out["fp_event"].to_numpy()
    at = [3.0, 6.0, 12.0, 24.0]
    m = S.fit_cause_specific(out[[]], t, ev, horizons=at)
    cif = m.cif(out[[]].iloc[:1])[0]
    for cause in (1, 2):
        ref = AalenJohansenFitter(calculate_variance=False).fit(t, ev, event_of_interest=cause)
        want = ref.cumulative_density_.iloc[:, 0]
        want = np.array([want.loc[:h].iloc[-1] for h in at])
        np.testing.assert_allclose(S.aalen_johansen(t, ev, at, cause=cause), want, atol=1e-12)
        if cause == 1:
            np.testing.assert_allclose(cif, want, atol=1e-12)
    # and with tied times the numpy estimator stays a proper CIF: F1 + F2 + KM(any) = 1
    t2 = np.ceil(t)
    f = S.aalen_johansen(t2, ev, [30.0], cause=1) + S.aalen_johansen(t2, ev, [30.0], cause=2)
    ts, km = S._km(t2, ev > 0)
    assert f[0] + km[-1] == pytest.approx(1.0)


def test_cif_combines_both_hazards():
    """A woman with a higher loss hazard has a lower live-birth CIF at the same live-birth hazard."""
    x, out = _cr_frames(300, 3)
    m = S.fit_cause_specific(x, out["fp_months"], out["fp_event"])
    new = pd.DataFrame({"age": [32.0, 32.0], "bmi": [20.0, 30.0]}, index=["lowloss", "highloss"])
    cif = m.cif(new, [24.0])[:, 0]
    assert cif[0] > cif[1] + 0.02
    # the live-birth hazard alone (1 - exp(-H1), loss as censoring) barely tells them apart
    lp1 = ((new.to_numpy() - m.mean) / m.sd) @ m.betas[0]
    h1 = m.dh0[m.grid <= 24.0, 0].sum()
    single = 1 - np.exp(-h1 * np.exp(lp1))
    assert (cif[0] - cif[1]) > abs(single[0] - single[1]) + 0.02


def test_wolbers_c_hand_computed():
    t = np.array([1.0, 2.0, 3.0, 4.0])
    ev = np.array([1, 2, 1, 0])
    r = np.array([0.9, 0.1, 0.5, 0.6])
    # pairs with i a live birth: (1 vs 2,3,4) all concordant; (3 vs 2: competing, always comparable) conc.;
    # (3 vs 4: censored later) discordant -> 4 / 5
    assert S.wolbers_c(t, ev, r) == pytest.approx(4 / 5)
    # Harrell's C treating the loss as censoring would not compare (3, 2)
    assert S.harrell_c(t, (ev == 1).astype(float), r) == pytest.approx(3 / 4)


def test_evaluate_fit_apply_first_pregnancy(tmp_path):
    x, out = _cr_frames(160, 4)
    clin = x
    rng = np.random.default_rng(0)
    imm = pd.DataFrame(rng.standard_normal((160, 3)), index=x.index, columns=["i0", "i1", "i2"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ev = S.evaluate_survival(
            imm,
            (out, clin),
            outcome="first_pregnancy",
            n_repeats=1,
            n_splits=3,
            inner_folds=2,
            penalizers=(0.3, 3.0),
            clinical_penalizers=(0.01, 0.1),
            n_bootstrap=4,
            seed=0,
        )
    c = ev.concordance.set_index("model")
    assert c.loc["clinical", "n_competing"] == int((out["fp_event"] == 2).sum())
    assert c.loc["clinical", "harrell_c"] > 0.58  # age and bmi carry the planted hazards
    assert 0.35 < c.loc["immune", "harrell_c"] < 0.65
    assert "Wolbers" in ev.parameters["c_index"]
    obs = ev.calibration.query("group == 'all' and horizon == 24.0")["observed"].iloc[0]
    assert obs == pytest.approx(S.aalen_johansen(out["fp_months"], out["fp_event"], [24.0])[0])
    m = S.fit_survival_model(imm, (out, clin), outcome="first_pregnancy", model="clinical", n_bootstrap=15)
    assert isinstance(m, S.CompetingRiskModel)
    new = x.iloc[:6]
    pred = S.predict_live_birth(m, new)
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
    assert (pred["p_24"] >= pred["p_12"]).all() and (pred["p_24"] < 1).all()
    back = S.load_survival_model(m.save(tmp_path / "cr.json"))
    pd.testing.assert_frame_equal(S.predict_live_birth(tmp_path / "cr.json", new), pred)
    assert isinstance(back, S.CompetingRiskModel)


def test_predict_live_birth_checks(tmp_path):
    x, out = _cr_frames(80, 5)
    frames = (out.rename(columns={"fp_months": "ttp_months", "fp_event": "ttp_event"}).clip(upper=1), x)
    frames[0]["ttp_months"] = out["fp_months"]
    m = S.fit_survival_model(None, frames, outcome="time_to_pregnancy", model="clinical", n_bootstrap=3)
    with pytest.raises(ValueError, match="not live birth"):
        S.predict_live_birth(m, x)
    m2 = S.fit_survival_model(None, (out, x), outcome="first_pregnancy", model="clinical", n_bootstrap=3)
    with pytest.raises(ValueError, match="level must be"):
        S.predict_live_birth(m2, x, level=1.5)
    with pytest.raises(ValueError, match="lack the model's columns"):
        S.predict_live_birth(m2, x[["age"]])
