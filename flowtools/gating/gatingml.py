"""Moved to :mod:`flowtools.gating.formats.gatingml` (re-exported while callers move)."""

from __future__ import annotations

from flowtools.gating.formats.gatingml import NS, D, G, T, read_gatingml, to_gatingml_string, write_gatingml

__all__ = ["NS", "D", "G", "T", "read_gatingml", "to_gatingml_string", "write_gatingml"]
