"""Gating file formats: Gating-ML 2.0 (:mod:`.gatingml`) and FlowJo workspaces.

FlowJo: :mod:`.flowjo` reads a workspace, :mod:`.flowjo_template` turns its gate tree into a
YAML template, :mod:`.flowjo_export` writes resolved samples as a workspace.
"""
