"""Compatibility shim: these kernels moved to :mod:`flowtools.gating.methods` (to be removed).

k-means: ``methods._kmeans_kernels``; EM and the steps before it: ``methods._mixture_kernels``;
singlet: ``methods._singlet_kernels``. Import from those instead.
"""

from __future__ import annotations

from flowtools.gating.methods._kmeans_kernels import (  # noqa: F401 - re-exported
    _lloyd_step,
    center_columns,
    kmeans_lloyd,
    kpp_sq_dist,
)
from flowtools.gating.methods._mixture_kernels import (  # noqa: F401 - re-exported
    _LOG_2PI,
    _LOG_TINY,
    _log_prob,
    _m_step,
    _precision_cholesky,
    distinct_rows_at_least,
    gmm_em,
    standardize,
)
from flowtools.gating.methods._singlet_kernels import (  # noqa: F401 - re-exported
    line_lstsq,
    singlet_kept_sorted,
    singlet_step,
)

__all__ = [
    "center_columns",
    "distinct_rows_at_least",
    "gmm_em",
    "kmeans_lloyd",
    "kpp_sq_dist",
    "line_lstsq",
    "singlet_kept_sorted",
    "singlet_step",
    "standardize",
]
