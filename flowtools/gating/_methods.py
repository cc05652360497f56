"""Compatibility shim: the built-in gating methods moved to :mod:`flowtools.gating.methods` (to be removed).

Re-exports the names this module had from their new modules; import from those instead.
"""

from __future__ import annotations

from flowtools.gating.methods._common import (  # noqa: F401 - re-exported
    _MAD_SD,
    _fail,
    _finite_rows,
    _median,
    _mixed_zeros,
    _quantiles_sorted,
    _robust_center_scale,
    _subsample,
)
from flowtools.gating.methods.boundary import _pile, boundary  # noqa: F401 - re-exported
from flowtools.gating.methods.density import (  # noqa: F401 - re-exported
    _DENSITY_ARGS,
    _GRID,
    _SIDES,
    _Density,
    _mindensity_cut,
    _restrict,
    _side_interval,
    mindensity,
    quad,
    quantile,
    tail,
)
from flowtools.gating.methods.mixture import (  # noqa: F401 - re-exported
    _GMM_MAX_ITER,
    _GMM_REG_COVAR,
    _GMM_TOL,
    _KMEANS_MAX_ITER,
    _KMEANS_TOL,
    _TARGETS,
    _chi2_ppf,
    _fit_mixture,
    _has_distinct_rows,
    _kmeans_plusplus,
    _TargetSpec,
    gmm,
)
from flowtools.gating.methods.qc import _ranks, _robust_z, qc  # noqa: F401 - re-exported
from flowtools.gating.methods.registry import (  # noqa: F401 - re-exported
    REQUIRED,
    ArgSpec,
    Ellipse,
    Interval,
    MethodContext,
    Polygon,
    Quadrants,
    Rectangle,
    TimeWindows,
    register,
)
from flowtools.gating.methods.singlet import _scale_model, singlet  # noqa: F401 - re-exported

__all__: list[str] = []
