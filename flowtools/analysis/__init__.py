"""Clustering and embedding of gated events: FlowSOM-class SOM, HDBSCAN, UMAP, cohort-consistent clusters.

Public names load lazily (PEP 562): ``import flowtools.analysis`` imports
neither numba, nor umap, nor hdbscan, nor matplotlib; each is imported when a
``fit``/``predict``/``transform`` or a figure function first needs it.

Estimators (scikit-learn contract)
    :class:`SOM`, :class:`FlowSOM`, :class:`HDBSCAN`, :class:`UMAP`
Functions
    :func:`flowsom`, :func:`consensus_metacluster`, :func:`hungarian_f1`,
    :func:`cluster_cohort`, :func:`cluster_figures`, :func:`annotate_clusters`
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "HDBSCAN",
    "SOM",
    "UMAP",
    "CohortClusters",
    "FlowSOM",
    "annotate_clusters",
    "cluster_cohort",
    "cluster_figures",
    "consensus_metacluster",
    "flowsom",
    "hungarian_f1",
]

_WHERE = {
    "SOM": "som",
    "FlowSOM": "som",
    "flowsom": "som",
    "consensus_metacluster": "som",
    "HDBSCAN": "density",
    "UMAP": "embed",
    "hungarian_f1": "metrics",
    "annotate_clusters": "cohort",
    "cluster_cohort": "cohort",
    "CohortClusters": "cohort",
    "cluster_figures": "figures",
}


def __getattr__(name: str) -> Any:
    mod = _WHERE.get(name)
    if mod is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
