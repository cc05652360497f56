"""Compensation: spillover matrices from FCS keywords, CSV files and arrays, applied to events."""

from __future__ import annotations

from flowtools.compensation.matrix import SpilloverMatrix, compensate

__all__ = ["SpilloverMatrix", "compensate", "warm_up"]


def warm_up() -> None:
    """Load the compensation kernel (compiled or read from numba's cache) now rather than on first use."""
    import numpy as np

    SpilloverMatrix.from_array([[1.0, 0.1], [0.0, 1.0]], ["a", "b"]).apply(np.ones((4, 2)), ["a", "b"])
