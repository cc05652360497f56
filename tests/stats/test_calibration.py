"""Calibration of nested-CV predictions: per-repeat definition, and a slope near 1 where it must be."""

from __future__ import annotations

import numpy as np
import pandas as pd

from flowtools.stats.predict import _calibration, cross_validate_models


def _data(n, seed, beta=(1.0, -0.8)):
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(n, len(beta))), columns=[f"x{j}" for j in range(len(beta))])
    eta = -0.5 + x.to_numpy() @ np.asarray(beta)
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int)
    return x, y


def test_calibration_is_per_repeat_then_averaged():
    x, y = _data(150, 0)
    kw = {
        "baseline": None,
        "augmented": None,
        "cs": (0.1, 1.0),
        "unpenalized": ["x0"],
        "seed": 3,
        "ci": "delong",
    }
    one = cross_validate_models({"m": x}, y, n_repeats=1, **kw)
    two = cross_validate_models({"m": x}, y, n_repeats=2, **kw)
    p1 = one.predictions["m"].to_numpy()
    # one repeat: the slope of its stacked out-of-fold predictions
    assert np.isclose(one.auc.calibration_slope.iloc[0], _calibration(y, p1)[1])
    # the first repeat of two is the same split and fit; the stored predictions are the repeat average
    p2 = 2 * two.predictions["m"].to_numpy() - p1
    per_repeat = np.mean([_calibration(y, p)[1] for p in (p1, p2)])
    assert np.isclose(two.auc.calibration_slope.iloc[0], per_repeat)
    assert np.isclose(two.auc.brier.iloc[0], np.mean([np.mean((p - y) ** 2) for p in (p1, p2)]))
    assert "each repeat" in two.parameters["calibration"]


def test_slope_near_one_for_a_correct_model_with_enough_data():
    # unpenalised, correctly specified, 1500 women: the nested-CV slope must sit close to 1
    x, y = _data(1500, 1)
    ev = cross_validate_models(
        {"m": x}, y, baseline=None, augmented=None, n_repeats=2, unpenalized=["x0", "x1"], ci="delong"
    )
    assert 0.9 < ev.auc.calibration_slope.iloc[0] < 1.1
    assert abs(ev.auc.calibration_intercept.iloc[0]) < 0.1


def test_overfitted_model_shows_a_slope_below_one():
    # 60 women, 2 real and 10 noise features, all unpenalised: the slope must reveal the overfitting
    rng = np.random.default_rng(2)
    x, y = _data(60, 2)
    noise = pd.DataFrame(rng.normal(size=(60, 10)), columns=[f"z{j}" for j in range(10)])
    xx = pd.concat([x, noise], axis=1)
    ev = cross_validate_models(
        {"m": xx}, y, baseline=None, augmented=None, n_repeats=2, unpenalized=list(xx.columns), ci="delong"
    )
    assert ev.auc.calibration_slope.iloc[0] < 0.8
