"""AUC and gain intervals of the nested CV (bootstrap around the whole procedure), its fast ridge path,
and clinical imputation inside the training folds (issue #22)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flowtools.stats.predict import (
    _bootstrap_cv,
    _fold_predict,
    _grouped_splits,
    _impute_scale,
    _inner_splits,
    _task_frames,
    _tuned,
    _unpenalized_idx,
    cross_validate_models,
    evaluate_models,
)


def _data(n, seed, p_imm=6, beta=0.8):
    rng = np.random.default_rng(seed)
    clin = pd.DataFrame({"age": rng.normal(33, 5, n), "n_prior_losses": rng.integers(2, 7, n).astype(float)})
    imm = pd.DataFrame(rng.normal(size=(n, p_imm)), columns=[f"imm{j}" for j in range(p_imm)])
    eta = -0.6 + 0.1 * (clin["age"] - 33) + beta * imm["imm0"]
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).to_numpy(int)
    return clin, imm, y


def test_fast_ridge_path_equals_the_sklearn_pipeline():
    clin, imm, y = _data(90, 0)
    x = pd.concat([clin, imm], axis=1).to_numpy(float)
    x[[3, 17, 40], 0] = np.nan  # gaps: imputed with the training median by both paths
    x[:, 5] = 1.0  # a constant column: StandardScaler's zero-variance rule
    free = _unpenalized_idx(["age", "n_prior_losses", *imm.columns], ["age", "n_prior_losses"])
    tr, te = np.arange(70), np.arange(70, 90)
    cs = (0.01, 0.1, 1.0, 3.0)
    ref = _tuned(cs, (0.0,), 3, 5, free).fit(x[tr], y[tr])
    fast = _fold_predict(x[tr], y[tr], x[te], _inner_splits(y[tr], 3, 5), cs, (0.0,), 5, free)
    np.testing.assert_allclose(fast, ref.predict_proba(x[te])[:, 1], atol=1e-7)


def test_grouped_splits_keep_copies_of_a_woman_together():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], [30, 15])
    idx = np.concatenate([rng.choice(np.flatnonzero(y == 1), 15), rng.choice(np.flatnonzero(y == 0), 30)])
    splits = _grouped_splits(idx, y[idx], 5, 3)
    assert len(splits) == 5
    seen = np.zeros(idx.size, int)
    for tr, te in splits:
        assert not set(idx[tr]) & set(idx[te])
        assert 0 < y[idx[te]].sum() < te.size  # both classes in every test fold
        seen[te] += 1
    assert (seen == 1).all()


def test_bootstrap_replicate_matches_a_hand_rolled_nested_cv_on_the_resample():
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    clin, imm, y = _data(80, 2, p_imm=3)
    x = pd.concat([clin, imm], axis=1).to_numpy(float)
    free = (0, 1)
    cs = (0.1, 1.0)
    got = _bootstrap_cv(
        {"m": x}, y, {"m": free}, n_splits=4, inner_folds=3, cs=cs, l1_ratios=(0.0,), n_bootstrap=2, seed=9
    )
    # independent: the same resample and folds over distinct women, fitted by the scikit-learn pipeline
    rng = np.random.default_rng([9, 22])
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    for b in range(2):
        idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        fs = int(rng.integers(2**31 - 1))
        u = np.unique(idx)
        aucs = []
        outer = StratifiedKFold(4, shuffle=True, random_state=fs).split(u, y[u])
        for f, (_, te_u) in enumerate(outer):
            te = np.isin(idx, u[te_u])
            tr_ids = idx[~te]
            ut = np.unique(tr_ids)
            inner = []
            for _, ite_u in StratifiedKFold(3, shuffle=True, random_state=fs + 1 + f).split(ut, y[ut]):
                ite = np.isin(tr_ids, ut[ite_u])
                inner.append((np.flatnonzero(~ite), np.flatnonzero(ite)))
            grid = _tuned(cs, (0.0,), 3, 0, free).set_params(cv=inner).fit(x[tr_ids], y[tr_ids])
            aucs.append(roc_auc_score(y[idx[te]], grid.predict_proba(x[idx[te]])[:, 1]))
        assert np.isclose(got[b, 0], np.mean(aucs), atol=1e-9)


def test_interval_contains_estimate_is_reproducible_and_widens_with_fewer_women():
    clin, imm, y = _data(240, 3)
    blocks = {"clinical": clin, "clinical + immune": pd.concat([clin, imm], axis=1)}
    kw = {"n_repeats": 1, "n_bootstrap": 25, "cs": (0.1, 1.0), "unpenalized": list(clin.columns), "seed": 4}
    big = cross_validate_models(blocks, y, **kw)
    again = cross_validate_models(blocks, y, **kw)
    pd.testing.assert_frame_equal(big.auc, again.auc)
    pd.testing.assert_series_equal(pd.Series(big.gain), pd.Series(again.gain))
    a = big.auc
    assert ((a.ci_low <= a.auc) & (a.auc <= a.ci_high)).all()
    assert (a.ci_method == "bootstrap").all() and big.bootstrap.shape == (25, 2)
    assert np.allclose(a.se, big.bootstrap.std(ddof=1).to_numpy())
    assert big.gain["ci_low"] <= big.gain["estimate"] <= big.gain["ci_high"]
    assert "bootstrap" in big.parameters["auc_ci"] and big.parameters["n_bootstrap"] == 25
    small = cross_validate_models({m: b.iloc[:60] for m, b in blocks.items()}, y[:60], **kw)
    assert (small.auc.ci_width.to_numpy() > a.ci_width.to_numpy()).all()
    # DeLong on request: the old interval, also reported beside the bootstrap one
    dl = cross_validate_models(blocks, y, **{**kw, "n_bootstrap": 0}, ci="delong")
    np.testing.assert_allclose(dl.auc.ci_low, a.ci_low_delong)
    assert dl.bootstrap.empty and "DeLong" in dl.parameters["auc_ci"]
    with pytest.raises(ValueError, match="ci must be"):
        cross_validate_models(blocks, y, ci="wald")


def _clinical_with_gaps(small_cohort):
    from flowtools.stats import read_clinical, tables_from_truth

    counts = tables_from_truth(small_cohort)
    raw = pd.read_csv(small_cohort / "clinical.csv", dtype=str, keep_default_na=False)
    rm = raw.index[raw["group"] == "RM"]
    # the oldest RM women lose their age: the median of the others is lower than that of all women
    gaps = raw.loc[rm].assign(a=raw.loc[rm, "age"].astype(float)).sort_values("a").index[-8:]
    raw.loc[gaps, "age"] = ""
    return counts, raw, raw.loc[gaps, "woman_id"].tolist(), read_clinical


def test_impute_leaves_gaps_to_the_training_folds(small_cohort):
    counts, raw, gap_ids, read_clinical = _clinical_with_gaps(small_cohort)
    xc, imm, y, _ = _task_frames(
        counts,
        raw,
        task="next_loss",
        transform="logit",
        missing="impute",
        need_outcome=True,
        keep_missing=True,
    )
    assert xc.loc[gap_ids, "age"].isna().all() and xc["age"].isna().sum() == len(gap_ids)
    # the imputer of a fold learns the median of its training women only: a test fold holding women
    # with extreme ages does not move it
    x = xc.to_numpy(float)
    te = np.argsort(np.nan_to_num(x[:, 0], nan=-1))[-20:]  # the 20 oldest known ages
    tr = np.setdiff1d(np.arange(x.shape[0]), te)
    x_tr = x[tr].copy()
    x_tr[:3, 0] = np.nan
    x_te = x[te].copy()
    x_te[:2, 0] = np.nan
    a, b = _impute_scale(x_tr, x_te)
    med_tr = np.nanmedian(x_tr[:, 0])
    assert med_tr != np.nanmedian(np.concatenate([x_tr[:, 0], x_te[:, 0]]))
    np.testing.assert_allclose(b[:2, 1], a[0, 1])  # test gaps get the training median, as training gaps
    # end to end: evaluate_models imputes inside the folds, as cross_validate_models on the gapped block
    ev = evaluate_models(counts, raw, models=("clinical",), missing="impute", n_repeats=1, ci="delong")
    assert ev.parameters["missing_clinical"] == {"age": len(gap_ids)}
    ref = cross_validate_models({"clinical": xc}, y, n_repeats=1, ci="delong", unpenalized=list(xc.columns))
    np.testing.assert_allclose(ev.predictions["clinical"], ref.predictions["clinical"])
    filled = xc.fillna(xc.median())
    leak = cross_validate_models(
        {"clinical": filled}, y, n_repeats=1, ci="delong", unpenalized=list(xc.columns)
    )
    assert not np.allclose(ev.predictions["clinical"], leak.predictions["clinical"])


def test_a_table_imputed_before_cv_is_reported(small_cohort, tmp_path):
    from flowtools.stats import LeakageWarning

    counts, raw, _, read_clinical = _clinical_with_gaps(small_cohort)
    raw.to_csv(tmp_path / "clinical.csv", index=False)
    pre = read_clinical(tmp_path / "clinical.csv", missing="impute")
    with pytest.warns(LeakageWarning, match="imputed before cross-validation"):
        ev = evaluate_models(counts, pre, models=("clinical",), missing="impute", n_repeats=1, ci="delong")
    assert ev.parameters["imputed_before_cv"] == {"age": 8}
