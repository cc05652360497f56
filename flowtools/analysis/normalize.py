"""Batch normalisation on anchor samples (CytoNorm-class), and its validation.

The same donor's aliquot (an *anchor*, or reference sample) is stained and acquired
in every batch (plate, run, year). Differences between the anchors of two batches
are technical, so a map that makes every batch's anchor look like the goal anchor
also removes the batch effect from the batch's other samples. :class:`CytoNorm`
learns that map as CytoNorm does:

1. the pooled anchors are clustered (:class:`~flowtools.analysis.som.FlowSOM`, on the
   transformed values a gating template names), so that a shift that differs between
   populations (a dim and a bright population of one marker) is learnt per population;
2. per cluster, marker and batch, the batch's anchor quantiles are mapped onto the goal
   quantiles (the mean over batches, or one chosen batch) by a monotone cubic (PCHIP)
   spline; every event of the batch goes through the spline of its cluster;
3. beyond the anchors' quantile range the spline goes on linearly with the end slope
   (itself held in ``[1/max_slope, max_slope]``) and the result is clipped to
   ``[lo - limit * range, hi + limit * range]`` of the goal quantiles, so a far
   event is never flung to an extreme value (the extrapolation CytoNorm is known for).

The estimator :class:`CytoNorm` is in :mod:`flowtools.analysis.normalize_estimator` (re-exported
here); the numba kernels (spline tables, node distances, soft weights) are in
:mod:`flowtools.analysis._normalize_kernels`.

``mode="global"`` skips the clustering (one spline per marker and batch);
``mode="identity"`` learns nothing and returns the values unchanged (a check of the
pipeline). A cluster with fewer than ``min_cluster_events`` anchor events in some batch is
mapped as ``small_cluster`` says: by default its own splines through fewer quantiles (one per 10
of its events in its smallest batch, at least 3), else the batch's global spline or identity;
each small cluster and every fallback to the global spline is recorded.

Validation as CytoNorm is validated: :func:`batch_emd` (Earth Mover's Distance between
batches, per marker and optionally per cluster, before and after), :func:`mad_change`
(the CytoNorm 2.0 check that a marker's spread within a batch was not changed: a
relative MAD change above 0.25 is flagged) and :attr:`CytoNorm.cluster_cv_` (the share of
each cluster per batch and its coefficient of variation across batches: a cluster whose
share differs much between batches of the same donor is unstable).

File level (:mod:`flowtools.analysis.normalize_files`, :mod:`flowtools.analysis.normalize_apply`,
re-exported here): :func:`fit_sheet` reads the anchors of a sample sheet (several per batch:
pooled, or matched by donor across batches) and fits; :func:`apply_sheet` normalises and writes
every file of a sheet; :func:`normalize_sample` is that step for one file. Models are JSON files
with provenance (:meth:`CytoNorm.save`, :meth:`CytoNorm.load`; :mod:`flowtools.analysis.normalize_model`).
Validation: :mod:`flowtools.analysis.normalize_validate`, re-exported here.
"""

from __future__ import annotations

from flowtools.analysis.normalize_apply import ApplyResult, apply_sheet
from flowtools.analysis.normalize_estimator import CytoNorm
from flowtools.analysis.normalize_files import (
    FitResult,
    NormalizedSample,
    fit_sheet,
    model_template,
    normalize_sample,
    read_transformed,
)
from flowtools.analysis.normalize_model import (
    _pchip,
    _quantiles,
    _Spline,
)
from flowtools.analysis.normalize_validate import MAD_FLAG, batch_emd, cluster_cv, drift_table, mad_change

__all__ = [
    "MAD_FLAG",
    "ApplyResult",
    "CytoNorm",
    "FitResult",
    "NormalizedSample",
    "apply_sheet",
    "batch_emd",
    "cluster_cv",
    "drift_table",
    "fit_sheet",
    "mad_change",
    "model_template",
    "normalize_sample",
    "read_transformed",
]
__all__ += ["_Spline", "_pchip", "_quantiles"]  # references the tests compare the kernels with
