"""Plain-numpy reference of :mod:`flowtools.pipeline._kernels`."""

from __future__ import annotations

import numpy as np


def middle_order_statistics_ref(values: np.ndarray, masks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) of shape (m, P): the (n-1)//2-th and n//2-th smallest member values (NaN if empty)."""
    m = values.shape[0]
    lo = np.full((m, len(masks)), np.nan)
    hi = np.full((m, len(masks)), np.nan)
    for p, mask in enumerate(masks):
        for c in range(m):
            v = values[c, mask]
            n = v.size
            if n:
                part = np.partition(v, [(n - 1) // 2, n // 2])
                lo[c, p], hi[c, p] = part[(n - 1) // 2], part[n // 2]
    return lo, hi
