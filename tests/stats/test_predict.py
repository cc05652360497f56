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
            {"immune": x}, y, baseline=None, augmented=None, n_repeats=1, cs=(0.03, 0.3)
        )
        honest.append(ev.auc.auc.iloc[0])
        leaky.append(_leaky_auc(x.to_numpy(), y))
    assert abs(np.mean(honest) - 0.5) < 0.08
    assert np.mean(leaky) > np.mean(honest) + 0.1


def test_evaluate_reports_auc_gain_calibration(small_cohort):
    counts = tables_from_truth(small_cohort)
    clin = read_clinical(small_cohort / "clinical.csv")
    ev = evaluate_models(counts, clin, task="rm_vs_control", n_repeats=1, n_permutations=3)
    assert list(ev.auc.model) == ["clinical", "immune", "clinical + immune"]
    assert (ev.auc.ci_low <= ev.auc.auc).all() and (ev.auc.auc <= ev.auc.ci_high).all()
    assert {"estimate", "ci_low", "ci_high", "p_permutation"} <= set(ev.gain)
    assert 0 < ev.gain["p_permutation"] <= 1
    assert set(ev.calibration_curve.columns) >= {"mean_predicted", "observed"}


def test_high_auc_warns_of_leakage():
    from flowtools.stats import LeakageWarning

    rng = np.random.default_rng(2)
    y = np.repeat([0, 1], 40)
    x = pd.DataFrame({"proxy": y + rng.normal(0, 0.3, 80)})
    with pytest.warns(LeakageWarning, match="leakage"):
        cross_validate_models({"immune": x}, y, baseline=None, augmented=None, n_repeats=1)


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
