"""Plain-numpy references of :mod:`flowtools.pipeline._kernels`."""

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


def middle_values_partition_ref(
    columns: list[np.ndarray], masks: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """The two middle member values of every population on every column, shape (columns, populations).

    ``(n-1)//2``-th and ``n//2``-th smallest (0-based; equal for odd n; NaN sorts last, as in
    numpy); NaN for an empty population. Per population and column: gather the members (index
    arrays computed once per population) and select with ``np.partition`` (numpy's SIMD
    introselect, O(n)); the lower middle of an even count is the largest value left of the
    upper one. Exactly the order statistics ``np.median`` averages (reference:
    ``tests/reference/tables_ref.py``), at ~1/4 of the cost of the argsort per column and
    numba walk over it that this replaced.

    This was ``flowtools.pipeline.plate._middle_values`` until the shared-pattern kernel
    (:func:`flowtools.pipeline._kernels.middle_values`) replaced it; kept as its bit-exact
    reference (which zero and which NaN numpy's partition leaves included).
    """
    n_pop = len(masks)
    lo = np.full((len(columns), n_pop), np.nan)
    hi = np.full((len(columns), n_pop), np.nan)
    if not columns or not n_pop:
        return lo, hi
    members = [np.flatnonzero(mk) for mk in masks]
    buf = np.empty(max(m.size for m in members))
    for c, col in enumerate(columns):
        col = np.asarray(col, dtype=np.float64)
        for p, idx in enumerate(members):
            size = idx.size
            if not size:
                continue
            v = buf[:size]
            if size == col.size:
                v[:] = col
            else:
                np.take(col, idx, out=v)
            k = size // 2
            v.partition(k)
            hi[c, p] = v[k]
            lo[c, p] = v[k] if size % 2 else v[:k].max()
    return lo, hi
