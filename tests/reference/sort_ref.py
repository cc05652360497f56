"""Reference for ``flowtools.gating.methods._sort_kernels``: numpy's own stable argsort."""

from __future__ import annotations

import numpy as np


def argsort_f64_ref(v: np.ndarray) -> np.ndarray:
    """``_sort_kernels.argsort_f64``: ``np.argsort(kind="stable")``."""
    return np.argsort(v, kind="stable")
