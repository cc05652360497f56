"""Numba kernel of the population tables: exact medians of many nested populations at once.

Imported lazily by :mod:`flowtools.pipeline.plate`. The plain-numpy reference
(one ``np.partition`` per population and channel) lives in
``tests/reference/tables_ref.py``.

Median fluorescence is wanted for every population and every marker. Taking
each subset and partitioning it costs a pass per (population, marker) pair;
instead each channel is sorted once (numpy's vectorised argsort) and its events
are walked in ascending order, counting for every population the members seen
so far: the ``(n-1)//2``-th and ``n//2``-th members met are the two middle
order statistics. Membership is a bit set per event (one bit per population,
``n_words`` 64-bit words), so an event costs one step per population it is in.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flowtools._config import NUMBA_CACHE

__all__ = ["middle_order_statistics"]

# De Bruijn table: index of the lowest set bit of a 64-bit word in O(1).
_DEBRUIJN = np.uint64(0x03F79D71B4CB0A89)
_DEBRUIJN_INDEX = np.array(
    [0, 1, 48, 2, 57, 49, 28, 3, 61, 58, 50, 42, 38, 29, 17, 4,
     62, 55, 59, 36, 53, 51, 43, 22, 45, 39, 33, 30, 24, 18, 12, 5,
     63, 47, 56, 27, 60, 41, 37, 16, 54, 35, 52, 21, 44, 32, 23, 11,
     46, 26, 40, 15, 34, 20, 31, 10, 25, 14, 19, 9, 13, 8, 7, 6], dtype=np.int64)


@njit(cache=NUMBA_CACHE, nogil=True)
def middle_order_statistics(
    values: np.ndarray, order: np.ndarray, bits: np.ndarray, sizes: np.ndarray, out_lo: np.ndarray,
    out_hi: np.ndarray, debruijn: np.uint64, debruijn_index: np.ndarray,
) -> None:
    """The two middle values of every population on every channel.

    Parameters
    ----------
    values : ndarray of float64, shape (m, n)
        One row per channel.
    order : ndarray of int64, shape (m, n)
        ``np.argsort(values, axis=1)`` (NaN last, as numpy sorts).
    bits : ndarray of uint64, shape (n, n_words)
        Bit ``p % 64`` of word ``p // 64`` is set when event ``i`` belongs to population ``p``.
    sizes : ndarray of int64, shape (P,)
        Members of each population (the number of events with its bit set).
    out_lo, out_hi : ndarray of float64, shape (m, P)
        Receive the ``(size-1)//2``-th and ``size//2``-th smallest member value
        (0-based); NaN for an empty population.
    debruijn, debruijn_index
        ``_DEBRUIJN`` and ``_DEBRUIJN_INDEX`` (passed in: numba globals are frozen at compile time).
    """
    m, n = values.shape
    n_pop = sizes.shape[0]
    n_words = bits.shape[1]
    klo = (sizes - 1) // 2
    khi = sizes // 2
    seen = np.zeros(n_pop, dtype=np.int64)
    for c in range(m):
        out_lo[c, :] = np.nan
        out_hi[c, :] = np.nan
        seen[:] = 0
        # Walk until every population has met its upper middle member.
        todo = 0
        for p in range(n_pop):
            if sizes[p] > 0:
                todo += 1
        t = 0
        while todo > 0 and t < n:
            e = order[c, t]
            v = values[c, e]
            for w in range(n_words):
                b = bits[e, w]
                while b != 0:
                    low = b & (~b + np.uint64(1))
                    p = w * 64 + debruijn_index[np.int64((low * debruijn) >> np.uint64(58))]
                    b ^= low
                    s = seen[p]
                    if s == klo[p]:
                        out_lo[c, p] = v
                    if s == khi[p]:
                        out_hi[c, p] = v
                        todo -= 1
                    seen[p] = s + 1
            t += 1
