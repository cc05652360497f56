"""Prediction: nested CV is honest (null AUC ~0.5, leakage visible), models save/load/apply and refuse."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flowtools.stats import (
    ModelFileError,
    OutOfRangeError,
    apply_model,
    build_features,
    evaluate_models,
    fit_model,
    load_model,
    read_clinical,
    save_model,
    tables_from_truth,
)
from flowtools.stats.predict import cross_validate_models


def _leaky_auc(x, y):
    from scipy import stats
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    keep = np.argsort(stats.ttest_ind(x[y == 1], x[y == 0]).pvalue)[:3]
    aucs = []
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(x, y):
        m = LogisticRegression().fit(x[tr][:, keep], y[tr])
        aucs.append(roc_auc_score(y[te], m.predict_proba(x[te][:, keep])[:, 1]))
    return np.mean(aucs)


def test_leaky_variant_beats_honest_on_null_data():
    rng = np.random.default_rng(1)
    honest, leaky = [], []
    for _ in range(6):
        x = pd.DataFrame(rng.normal(size=(60, 40)))
        y = np.repeat([0, 1], 30)
        ev = cross_validate_models(
            {"immune": x}, y, baseline=None, augmented=None, n_repeats=1, cs=(0.03, 0.3), ci="delong"
        )
        honest.append(ev.auc.auc.iloc[0])
        leaky.append(_leaky_auc(x.to_numpy(), y))
    assert abs(np.mean(honest) - 0.5) < 0.08
    assert np.mean(leaky) > np.mean(honest) + 0.1


def test_evaluate_reports_auc_gain_calibration(small_cohort):
    counts = tables_from_truth(small_cohort)
    clin = read_clinical(small_cohort / "clinical.csv")
    ev = evaluate_models(counts, clin, task="rm_vs_control", n_repeats=1, n_permutations=3, n_bootstrap=20)
    assert list(ev.auc.model) == ["clinical", "immune", "clinical + immune"]
    assert (ev.auc.ci_low <= ev.auc.auc).all() and (ev.auc.auc <= ev.auc.ci_high).all()
    assert (ev.auc.ci_method == "bootstrap").all() and ev.parameters["n_bootstrap"] == 20
    assert {"estimate", "ci_low", "ci_high", "p_permutation"} <= set(ev.gain)
    assert 0 < ev.gain["p_permutation"] <= 1
    assert set(ev.calibration_curve.columns) >= {"mean_predicted", "observed"}


def test_high_auc_warns_of_leakage():
    from flowtools.stats import LeakageWarning

    rng = np.random.default_rng(2)
    y = np.repeat([0, 1], 40)
    x = pd.DataFrame({"proxy": y + rng.normal(0, 0.3, 80)})
    with pytest.warns(LeakageWarning, match="leakage"):
        cross_validate_models({"immune": x}, y, baseline=None, augmented=None, n_repeats=1, ci="delong")


def test_fit_save_load_apply_and_refuse(small_cohort, tmp_path):
    counts = tables_from_truth(small_cohort)
    clin = read_clinical(small_cohort / "clinical.csv")
    m = fit_model(counts, clin, task="next_loss", n_bootstrap=30)
    path = save_model(m, tmp_path / "model.json")
    m2 = load_model(path)
    assert m2.features == m.features and m2.provenance["command"] == "flowtools predict fit"
    pred = apply_model(m2, counts, clin)
    assert ((pred.ci_low <= pred.probability) & (pred.probability <= pred.ci_high)).all()
    # a woman far outside the training range is refused, by name, with the feature
    odd = counts.copy()
    w = pred.woman_id.iloc[0]
    sel = (odd.woman_id == w) & odd.population.str.endswith("NK cells")
    odd.loc[sel, "count"] = odd.loc[sel, "parent_count"] - 1
    with pytest.raises(OutOfRangeError, match=f"{w}:.*NK cells"):
        apply_model(m2, odd, clin)
    marked = apply_model(m2, odd, clin, refuse="mark")
    assert np.isnan(marked.set_index("woman_id").loc[w, "probability"])
    # tampering is detected
    text = path.read_text().replace('"margin": 0.1', '"margin": 9.0')
    path.write_text(text)
    with pytest.raises(ModelFileError, match="SHA-256"):
        load_model(path)


def test_features_are_logit_of_share(small_cohort):
    counts = tables_from_truth(small_cohort)
    f = build_features(counts)
    r = counts.iloc[0]
    v = np.log((r["count"] + 0.5) / (r.parent_count - r["count"] + 0.5))
    assert np.isclose(f.loc[r.woman_id, r.feature], v)
    clr = build_features(counts, transform="clr")
    mono = [c for c in clr.columns if "/Monocytes/" in c]
    np.testing.assert_allclose(clr[mono].sum(axis=1), 0, atol=1e-9)


def test_penalized_estimator_follows_the_sklearn_contract():
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression

    from flowtools.stats.predict import PenalizedLogisticRegression

    rng = np.random.default_rng(3)
    x = rng.normal(size=(70, 5))
    y = np.where(x[:, 0] + rng.normal(size=70) > 0, "loss", "birth")
    est = PenalizedLogisticRegression(C=0.3)
    assert clone(est).get_params() == est.get_params()
    est.fit(x, y)
    ref = LogisticRegression(C=0.3, tol=1e-12, max_iter=10_000).fit(x, y)
    np.testing.assert_allclose(est.predict_proba(x), ref.predict_proba(x), atol=1e-6)
    assert (est.predict(x) == ref.predict(x)).all() and list(est.classes_) == ["birth", "loss"]
    before = est.coef_.copy()
    est.predict_proba(x[:5])
    np.testing.assert_array_equal(est.coef_, before)  # predict never changes the estimator
    with pytest.raises(ValueError, match="two classes"):
        PenalizedLogisticRegression().fit(x, np.zeros(70))
    # elastic-net path: a strong L1 penalty zeroes the penalised columns, not the spared one
    en = PenalizedLogisticRegression(C=0.005, l1_ratio=1.0, unpenalized=(0,)).fit(x, y)
    assert abs(en.coef_[0, 0]) > 0.3 and np.all(en.coef_[0, 1:] == 0)


def test_clinical_features_unpenalised_so_augmented_model_nests_clinical():
    rng = np.random.default_rng(4)
    n = 90
    clin = pd.DataFrame({"age": rng.normal(33, 5, n), "n_prior_losses": rng.integers(2, 7, n).astype(float)})
    imm = pd.DataFrame(rng.normal(size=(n, 8)), columns=[f"imm{j}" for j in range(8)])
    eta = -0.7 + 0.12 * (clin["age"] - 33) + 0.3 * (clin["n_prior_losses"] - 3)
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).to_numpy(int)
    blocks = {"clinical": clin, "clinical + immune": pd.concat([clin, imm], axis=1)}
    # an overwhelming penalty on the immune block: clinical + immune predicts as clinical alone
    ev = cross_validate_models(
        blocks, y, n_repeats=1, cs=(1e-9,), unpenalized=list(clin.columns), ci="delong"
    )
    p = ev.predictions
    np.testing.assert_allclose(p["clinical + immune"], p["clinical"], atol=1e-6)
    assert ev.parameters["unpenalized"]["clinical + immune"] == ["age", "n_prior_losses"]
    # penalising the clinical block as well collapses it to each fold's training prevalence
    shrunk = cross_validate_models(blocks, y, n_repeats=1, cs=(1e-9,), ci="delong").predictions
    assert shrunk["clinical"].round(6).nunique() <= 5 < p["clinical"].round(6).nunique()


def test_evaluate_and_fit_leave_the_clinical_features_unpenalised(small_cohort):
    counts = tables_from_truth(small_cohort)
    clin = read_clinical(small_cohort / "clinical.csv")
    ev = evaluate_models(
        counts, clin, task="next_loss", models=("clinical + immune",), n_repeats=1, ci="delong"
    )
    assert ev.parameters["unpenalized"]["clinical + immune"] == ["age", "n_prior_losses"]
    m = fit_model(counts, clin, task="next_loss", n_bootstrap=5)
    assert m.provenance["parameters"]["unpenalized"] == ["age", "n_prior_losses"]
    assert m.features[:2] == ("age", "n_prior_losses")
