"""flowtools.stats.predict is split into modules; the names other modules, benchmarks and tests import
from it stay there, and are the very objects of the modules that define them."""

from __future__ import annotations

import importlib

import pytest

# name -> the module that defines it
_NAMES = {
    "build_features": "_predict_features",
    "_task_frames": "_predict_features",
    "CLINICAL_FEATURES": "_predict_features",
    "TASKS": "_predict_features",
    "PenalizedLogisticRegression": "_predict_models",
    "DEFAULT_CS": "_predict_models",
    "DEFAULT_L1_RATIOS": "_predict_models",
    "_fold_predict": "_predict_models",
    "_impute_scale": "_predict_models",
    "_inner_splits": "_predict_models",
    "_quiet_fit": "_predict_models",
    "_ridge_tuned_predict": "_predict_models",
    "_tuned": "_predict_models",
    "_unpenalized_idx": "_predict_models",
    "Evaluation": "_predict_cv",
    "_calibration": "_predict_cv",
    "cross_validate_models": "_predict_cv",
    "_bootstrap_cv": "predict_intervals",
    "_grouped_splits": "predict_intervals",
    "FittedModel": "predict_model",
    "fit_model": "predict_model",
    "save_model": "predict_model",
    "load_model": "predict_model",
    "apply_model": "predict_model",
}


@pytest.mark.parametrize("name", sorted(_NAMES))
def test_predict_reexports_each_name_from_its_module(name):
    public = importlib.import_module("flowtools.stats.predict")
    home = importlib.import_module(f"flowtools.stats.{_NAMES[name]}")
    assert getattr(public, name) is getattr(home, name)


def test_public_names_resolve_through_the_package():
    import flowtools.stats as st
    from flowtools.stats import predict

    for name in predict.__all__:
        assert hasattr(predict, name), name
    assert st.evaluate_models is predict.evaluate_models and st.fit_model is predict.fit_model
