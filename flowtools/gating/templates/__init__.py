"""Gating templates in YAML: static and data-driven gates, validated, resolved per sample.

A template names its tube, its compensation, its transforms and a list of
populations. Each population has a name, a parent (a path, or a name that is
unique in the template), dimensions by marker (``$PnS``) or channel (``$PnN``),
either a static ``gate`` or a data-driven ``method`` with typed ``args``
(see :mod:`flowtools.gating.methods`), and optionally ``role: qc`` for an
acquisition or clean-up gate. Full paths are the identity, so the same name may
appear under different parents.

:func:`load_template` (:mod:`.yaml`) validates the whole file before any FCS file
is touched (errors name the file, line, population and field) into the model
(:mod:`.model`). :func:`resolve` (:mod:`.resolve`) turns the template into plain
gates for each sample (data-driven gates computed on the parent's events,
optionally pooled over a group of samples), evaluates them and keeps them, so
each sample's gates export to Gating-ML 2.0 and re-apply to the same counts
anywhere.

The format, with a complete example, is documented in the README
("Gating templates").
"""

from __future__ import annotations

from flowtools.gating.templates.model import ROLES, PopulationSpec, Template, TransformSpec
from flowtools.gating.templates.resolve import ResolvedSample, compute_pooled, pool_values, resolve
from flowtools.gating.templates.yaml import load_template

__all__ = [
    "ROLES",
    "PopulationSpec",
    "ResolvedSample",
    "Template",
    "TransformSpec",
    "compute_pooled",
    "load_template",
    "pool_values",
    "resolve",
]
