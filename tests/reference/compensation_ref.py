"""Plain-numpy reference for the compensation kernel."""

from __future__ import annotations

import numpy as np


def compensate_ref(x: np.ndarray, idx: np.ndarray, unmix: np.ndarray) -> np.ndarray:
    out = np.array(x, dtype=np.float64, copy=True)
    out[:, idx] = np.asarray(x[:, idx], dtype=np.float64) @ unmix
    return out
