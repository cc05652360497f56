"""Gating: gate model, strategies, the evaluation engine, and Gating-ML 2.0 in and out."""

from __future__ import annotations

from flowtools.gating.engine import GatingResult, gate_events, gate_sample
from flowtools.gating.gates import (
    BooleanGate,
    Dimension,
    EllipsoidGate,
    PolygonGate,
    Quadrant,
    QuadrantDivider,
    QuadrantGate,
    RatioDefinition,
    RectangleGate,
)
from flowtools.gating.strategy import GatingStrategy, Population

__all__ = [
    "BooleanGate",
    "Dimension",
    "EllipsoidGate",
    "GatingResult",
    "GatingStrategy",
    "PolygonGate",
    "Population",
    "Quadrant",
    "QuadrantDivider",
    "QuadrantGate",
    "RatioDefinition",
    "RectangleGate",
    "gate_events",
    "gate_sample",
]
