"""Seeded subsampling helpers shared by the estimators."""

from __future__ import annotations

import numpy as np

__all__ = ["subsample_index"]


def subsample_index(n: int, max_n: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of at most ``max_n`` of ``n`` rows, drawn without replacement (all rows when fewer).

    Parameters
    ----------
    n : int
    max_n : int or None
        None: all rows.
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of int64, shape (min(n, max_n),)
    """
    if max_n is None or n <= max_n:
        return np.arange(n, dtype=np.int64)
    return np.sort(rng.choice(n, size=int(max_n), replace=False)).astype(np.int64)
