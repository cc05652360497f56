"""Moved to :mod:`flowtools.gating.formats` (re-exported while callers move).

Reading: :mod:`~flowtools.gating.formats.flowjo`; to a template:
:mod:`~flowtools.gating.formats.flowjo_template`; writing: :mod:`~flowtools.gating.formats.flowjo_export`.
"""

from __future__ import annotations

from flowtools.gating.formats._flowjo_xml import NS_DATATYPE, NS_GATING, NS_TRANSFORMS
from flowtools.gating.formats.flowjo import (
    INSIDE_SUFFIX,
    Workspace,
    WorkspaceError,
    WorkspaceGroup,
    WorkspaceSample,
    gate_workspace_sample,
    read_workspace,
    workspace_rows,
)
from flowtools.gating.formats.flowjo_export import (
    ACQUISITION_MATRIX,
    ExportSample,
    export_sample_from_resolved,
    write_workspace,
)
from flowtools.gating.formats.flowjo_template import workspace_to_template

__all__ = [
    "ACQUISITION_MATRIX",
    "INSIDE_SUFFIX",
    "NS_DATATYPE",
    "NS_GATING",
    "NS_TRANSFORMS",
    "ExportSample",
    "Workspace",
    "WorkspaceError",
    "WorkspaceGroup",
    "WorkspaceSample",
    "export_sample_from_resolved",
    "gate_workspace_sample",
    "read_workspace",
    "workspace_rows",
    "workspace_to_template",
    "write_workspace",
]
