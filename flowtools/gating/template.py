"""Moved to :mod:`flowtools.gating.templates` (re-exported while callers move)."""

from __future__ import annotations

from flowtools.gating.templates import (
    ROLES,
    PopulationSpec,
    ResolvedSample,
    Template,
    TransformSpec,
    compute_pooled,
    load_template,
    pool_values,
    resolve,
)
from flowtools.gating.templates.resolve import _gate_id

__all__ = [
    "ROLES",
    "PopulationSpec",
    "ResolvedSample",
    "Template",
    "TransformSpec",
    "_gate_id",
    "compute_pooled",
    "load_template",
    "pool_values",
    "resolve",
]
