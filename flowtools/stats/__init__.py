"""Statistics on per-woman immune tables: RM versus control, and prediction of the next loss.

Public names are loaded lazily (PEP 562), so ``import flowtools.stats`` loads
neither pandas nor scikit-learn until a name is used.

Inputs: :func:`tables_from_gate` / :func:`tables_from_truth` (count tables),
:func:`read_clinical` (validated clinical record).
Comparison: :func:`compare` -> :class:`ComparisonResult`; :func:`comparison_figures`.
Prediction: :func:`evaluate_models` (repeated nested CV), :func:`fit_model`,
:func:`save_model`, :func:`load_model`, :func:`apply_model`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from flowtools.stats.comparison import ComparisonResult, compare
    from flowtools.stats.errors import (
        ClinicalDataError,
        ImmuneTableError,
        LeakageWarning,
        ModelFileError,
        OutOfRangeError,
        StatsError,
    )
    from flowtools.stats.figures import comparison_figures, prediction_figures
    from flowtools.stats.predict import (
        Evaluation,
        FittedModel,
        PenalizedLogisticRegression,
        apply_model,
        build_features,
        evaluate_models,
        fit_model,
        load_model,
        save_model,
    )
    from flowtools.stats.tables import read_clinical, tables_from_gate, tables_from_truth, validate_clinical

_LAZY = {
    "ComparisonResult": "comparison",
    "compare": "comparison",
    "ClinicalDataError": "errors",
    "ImmuneTableError": "errors",
    "LeakageWarning": "errors",
    "ModelFileError": "errors",
    "OutOfRangeError": "errors",
    "StatsError": "errors",
    "comparison_figures": "figures",
    "prediction_figures": "figures",
    "Evaluation": "predict",
    "FittedModel": "predict",
    "PenalizedLogisticRegression": "predict",
    "apply_model": "predict",
    "build_features": "predict",
    "evaluate_models": "predict",
    "fit_model": "predict",
    "load_model": "predict",
    "save_model": "predict",
    "read_clinical": "tables",
    "tables_from_gate": "tables",
    "tables_from_truth": "tables",
    "validate_clinical": "tables",
}
__all__ = [
    "ClinicalDataError",
    "ComparisonResult",
    "Evaluation",
    "FittedModel",
    "ImmuneTableError",
    "LeakageWarning",
    "ModelFileError",
    "OutOfRangeError",
    "PenalizedLogisticRegression",
    "StatsError",
    "apply_model",
    "build_features",
    "compare",
    "comparison_figures",
    "evaluate_models",
    "fit_model",
    "load_model",
    "prediction_figures",
    "read_clinical",
    "save_model",
    "tables_from_gate",
    "tables_from_truth",
    "validate_clinical",
]


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        msg = f"module 'flowtools.stats' has no attribute {name!r}"
        raise AttributeError(msg)
    return getattr(importlib.import_module(f"flowtools.stats.{mod}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)
