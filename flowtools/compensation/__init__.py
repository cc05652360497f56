"""Compensation: spillover matrices from FCS keywords, CSV files and arrays, applied to events."""

from __future__ import annotations

from flowtools.compensation.matrix import SpilloverMatrix, compensate

__all__ = ["SpilloverMatrix", "compensate"]
