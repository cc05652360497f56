"""Numba kernels of the population table: population medians (MFIs) shared across populations.

:func:`middle_values` gives the populations' MFIs (:mod:`flowtools.analysis.populations`):
the same results, bit for bit, as a gather + ``np.partition`` per population and column
(the reference, ``tests/reference/tables_ref.py::middle_values_partition_ref``, was the
plate's code). The populations of a gating tree are nested, so an event's memberships take
few distinct *patterns* (typically < 64). Per column, one pass histograms the events by
(pattern, bucket), where the bucket is an order-preserving function of the value's bits;
each population's histogram is the sum of its patterns' ones, which locates the bucket
holding its middle ranks; a second pass gathers only the values of those buckets and the
exact order statistics are selected among them. The work per column is ~2 passes over the
events instead of one gather + partition per population.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flowtools._config import NUMBA_CACHE

__all__ = ["middle_values"]

_SIGN = np.uint64(0x8000000000000000)
_MANT = np.uint64(0x000FFFFFFFFFFFFF)
_EXP = np.uint64(0x7FF0000000000000)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
_NAN_BITS = np.float64(np.nan).view(np.uint64)
_NEG_ZERO_BITS = np.float64(-0.0).view(np.uint64)

MAX_PATTERNS = 1024
"""Above this many membership patterns (per block of 64 populations) the per-population
gather + partition is used: the (pattern, bucket) tables would cost more than they save."""
_SAMPLE = 4096
"""Events sampled (by stride) to lay out the buckets of a column."""
_HEAVY = 4096
"""Candidates of a population in one bucket beyond which the bucket is checked for a single value."""


@njit(cache=NUMBA_CACHE, nogil=True, inline="always")
def _key(bits):
    """Order-preserving unsigned key of float64 bits; every NaN maps to the largest key.

    Negative values: all bits flipped (larger magnitude -> smaller key); others: sign bit
    set. -0.0 sorts just below +0.0 (numpy treats them as equal: see the callers).
    """
    flip = np.uint64(np.int64(bits) >> np.int64(63)) | _SIGN
    return _ALL if (bits & ~_SIGN) > _EXP else bits ^ flip


@njit(cache=NUMBA_CACHE, nogil=True, inline="always")
def _unkey(key):
    """float64 bits of a key (inverse of :func:`_key` except for NaN payloads)."""
    return key ^ _SIGN if key & _SIGN else ~key


@njit(cache=NUMBA_CACHE, nogil=True)
def pattern_ids(stacked: np.ndarray, max_patterns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Membership pattern of every event.

    Parameters
    ----------
    stacked : (P, n) uint8, P <= 64
        Population masks (0/1).
    max_patterns : int
        Give up beyond this many distinct patterns.

    Returns
    -------
    pid : (n,) int32
        Pattern id of each event.
    codes : (Q,) uint64
        Pattern ``q``'s membership bits (bit ``p`` set: in population ``p``).
    counts : (Q,) int64
        Events of each pattern.
    q : int
        Number of patterns Q, or -1 when there are more than ``max_patterns``.
    """
    n_pop, n = stacked.shape
    code = np.zeros(n, np.uint64)
    for s in range(0, n, 2048):  # chunks of events, row by row: the codes stay in cache; vectorised
        z = min(2048, n - s)
        chunk = code[s:s + z]
        for p in range(n_pop):
            row = stacked[p, s:s + z]
            bit = np.uint64(p)
            for e in range(z):
                chunk[e] |= np.uint64(row[e]) << bit
    size = 64
    while size < 4 * max_patterns:
        size *= 2
    shift = np.uint64(64 - int(np.log2(size)))
    slot_code = np.zeros(size, np.uint64)
    slot_id = np.full(size, -1, np.int32)
    codes = np.empty(max_patterns, np.uint64)
    counts = np.zeros(max_patterns, np.int64)
    pid = np.empty(n, np.int32)
    q = 0
    last_code = _ALL  # impossible code (bit 63 set needs 64 populations and all others set)
    last_id = -1
    for e in range(n):
        c = code[e]
        if c == last_code and last_id >= 0:
            pid[e] = last_id
            counts[last_id] += 1
            continue
        h = (c * np.uint64(0x9E3779B97F4A7C15)) >> shift
        while True:  # open addressing, linear probing
            s = slot_id[h]
            if s < 0:
                if q == max_patterns:
                    return pid, codes[:0], counts[:0], -1
                slot_id[h] = q
                slot_code[h] = c
                codes[q] = c
                s = q
                q += 1
                break
            if slot_code[h] == c:
                break
            h = (h + np.uint64(1)) & np.uint64(size - 1)
        pid[e] = s
        counts[s] += 1
        last_code = c
        last_id = s
    return pid, codes[:q].copy(), counts[:q].copy(), q


@njit(cache=NUMBA_CACHE, nogil=True)
def _bucket_layout(bits: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Order-preserving buckets for a column: ``base[code] + (mantissa >> shift[code])``.

    ``code`` is the key's top 12 bits (sign and exponent). From a strided sample, each
    binade gets ~``target * share`` buckets (a power of two, split on the top mantissa
    bits); runs of binades absent from the sample share one bucket. Only the speed
    depends on the layout, never the result.
    """
    n = bits.size
    stride = max(1, n // _SAMPLE)
    counts = np.zeros(4096, np.int64)
    ns = 0
    for e in range(0, n, stride):
        counts[_key(bits[e]) >> np.uint64(52)] += 1
        ns += 1
    base = np.empty(4096, np.int32)
    shift = np.empty(4096, np.uint64)
    nb = 0
    prev_empty = False
    for code in range(4096):
        c = counts[code]
        if c == 0:
            if not prev_empty:
                nb += 1
            base[code] = nb - 1
            shift[code] = 52  # one bucket for the whole run
            prev_empty = True
            continue
        prev_empty = False
        want = c * target / ns
        s = 0
        while s < 20 and (1 << s) < want:
            s += 1
        base[code] = nb
        shift[code] = 52 - s
        nb += 1 << s
    return base, shift, nb


@njit(cache=NUMBA_CACHE, nogil=True, inline="always")
def _bucket(key, base, shift):
    return base[key >> np.uint64(52)] + np.int32((key & _MANT) >> shift[key >> np.uint64(52)])


@njit(cache=NUMBA_CACHE, nogil=True)
def _select_u64(a, k):
    """Reorder ``a`` in place so that ``a[k]`` is its k-th smallest, smaller ones before, larger after."""
    lo = 0
    hi = a.size - 1
    while hi - lo > 16:
        mid = (lo + hi) >> 1  # median of three as the pivot, moved to a[hi]
        if a[mid] < a[lo]:
            a[mid], a[lo] = a[lo], a[mid]
        if a[hi] < a[lo]:
            a[hi], a[lo] = a[lo], a[hi]
        if a[mid] < a[hi]:
            a[mid], a[hi] = a[hi], a[mid]
        pivot = a[hi]
        i = lo - 1
        j = hi
        while True:  # Hoare partition
            i += 1
            while a[i] < pivot:
                i += 1
            j -= 1
            while j > lo and a[j] > pivot:
                j -= 1
            if i >= j:
                break
            a[i], a[j] = a[j], a[i]
        a[i], a[hi] = a[hi], a[i]
        if i == k:
            return
        if k < i:
            hi = i - 1
        else:
            lo = i + 1
    for i in range(lo + 1, hi + 1):  # insertion sort of the last few
        v = a[i]
        j = i - 1
        while j >= lo and a[j] > v:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = v


@njit(cache=NUMBA_CACHE, nogil=True)
def column_middles(bits: np.ndarray, pid: np.ndarray, n_pat: int, member: np.ndarray, target: int,
                   bkt: np.ndarray, lo_out: np.ndarray, hi_out: np.ndarray) -> bool:
    """Middle order statistics of every population on one column, as float64 bits.

    Parameters
    ----------
    bits : (n,) uint64
        The column's float64 values viewed as bits.
    pid : (n,) int32
        Pattern id of each event (:func:`pattern_ids`).
    n_pat : int
        Number of patterns Q.
    member : (P, Q) bool
        Whether pattern ``q`` belongs to population ``p``.
    target : int
        About how many buckets to use.
    bkt : (n,) uint16
        Scratch.
    lo_out, hi_out : (P,) uint64
        Bits of the ``(m-1)//2``-th and ``m//2``-th smallest member value; numpy's NaN bits
        for an empty population, and also (to be recomputed by the caller, see
        :func:`middle_values`) where the value falls in the bucket of the NaNs, or in a
        bucket of the zeros when the column holds both -0.0 and +0.0.

    Returns
    -------
    bool
        Whether the column holds both -0.0 and +0.0.
    """
    n = bits.size
    n_pop = member.shape[0]
    base, shift, nb = _bucket_layout(bits, target)
    hist = np.zeros((n_pat, nb + 1), np.int32)  # hist[q, b]: pattern q's events below bucket b (after cumsum)
    neg_zero_key = _key(_NEG_ZERO_BITS)
    n_neg_zero = 0
    n_pos_zero = 0
    n_nan = 0
    for e in range(n):  # which zeros and NaNs are there (a separate loop: vectorised)
        x = bits[e]
        n_neg_zero += x == _NEG_ZERO_BITS
        n_pos_zero += x == 0
        n_nan += (x & ~_SIGN) > _EXP
    for e in range(n):
        key = _key(bits[e])
        b = _bucket(key, base, shift)
        bkt[e] = b
        hist[pid[e], b + 1] += 1
    for q in range(n_pat):
        for b in range(1, nb + 1):
            hist[q, b] += hist[q, b - 1]
    # Buckets whose selection would not be numpy's (which NaN, which zero): left to the caller.
    skip = np.zeros(nb, np.bool_)
    if n_nan:
        skip[_bucket(_ALL, base, shift)] = True
    mixed = n_neg_zero > 0 and n_pos_zero > 0
    if mixed:
        skip[_bucket(neg_zero_key, base, shift)] = True
        skip[_bucket(_SIGN, base, shift)] = True

    # Per population: the bucket of each middle rank. Targets are (population, bucket) pairs;
    # the lower and upper middle share one when in the same bucket.
    n_t = 0
    t_pop = np.empty(2 * n_pop, np.int64)
    t_bucket = np.empty(2 * n_pop, np.int64)
    t_below = np.empty(2 * n_pop, np.int64)
    t_count = np.empty(2 * n_pop, np.int64)
    pop_lo_t = np.full(n_pop, -1, np.int64)
    pop_hi_t = np.full(n_pop, -1, np.int64)
    pop_m = np.zeros(n_pop, np.int64)
    pats = np.empty(n_pat, np.int64)
    for p in range(n_pop):
        npq = 0
        m = 0
        for q in range(n_pat):
            if member[p, q]:
                pats[npq] = q
                npq += 1
                m += hist[q, nb]
        pop_m[p] = m
        if m == 0:
            continue
        for which in range(2):
            k = (m - 1) // 2 if which == 0 else m // 2
            a, z = 0, nb - 1  # the smallest b whose cumulative count (through b) exceeds k
            while a < z:
                mid = (a + z) // 2
                c = 0
                for i in range(npq):
                    c += hist[pats[i], mid + 1]
                if c > k:
                    z = mid
                else:
                    a = mid + 1
            if which == 1 and t_bucket[pop_lo_t[p]] == a:
                pop_hi_t[p] = pop_lo_t[p]
                continue
            below = 0
            upto = 0
            for i in range(npq):
                below += hist[pats[i], a]
                upto += hist[pats[i], a + 1]
            t_pop[n_t] = p
            t_bucket[n_t] = a
            t_below[n_t] = below
            t_count[n_t] = 0 if skip[a] else upto - below
            if which == 0:
                pop_lo_t[p] = n_t
            else:
                pop_hi_t[p] = n_t
            n_t += 1

    # A bucket holding a single value (ties, a clipped channel) needs no gathering: spot the
    # large ones by their min and max key.
    heavy = np.zeros(nb, np.bool_)
    any_heavy = False
    for t in range(n_t):
        if t_count[t] > _HEAVY:
            heavy[t_bucket[t]] = True
            any_heavy = True
    b_min = np.full(nb, _ALL, np.uint64)
    b_max = np.zeros(nb, np.uint64)
    single = np.zeros(n_t, np.bool_)
    if any_heavy:
        for e in range(n):
            b = bkt[e]
            if heavy[b]:
                key = _key(bits[e])
                b_min[b] = min(b_min[b], key)
                b_max[b] = max(b_max[b], key)
        for t in range(n_t):
            b = t_bucket[t]
            if heavy[b] and b_min[b] == b_max[b]:
                single[t] = True
                t_count[t] = 0

    # Gather the candidates: per bucket, a linked list of the targets to fill.
    head = np.full(nb, -1, np.int64)
    nxt = np.full(n_t, -1, np.int64)
    offset = np.empty(n_t + 1, np.int64)
    offset[0] = 0
    for t in range(n_t):
        if t_count[t]:
            nxt[t] = head[t_bucket[t]]
            head[t_bucket[t]] = t
        offset[t + 1] = offset[t] + t_count[t]
    fill = offset[:n_t].copy()
    cand = np.empty(offset[n_t], np.uint64)
    for e in range(n):
        t = head[bkt[e]]
        while t >= 0:
            if member[t_pop[t], pid[e]]:
                cand[fill[t]] = _key(bits[e])
                fill[t] += 1
            t = nxt[t]

    for p in range(n_pop):
        m = pop_m[p]
        lo_out[p] = _NAN_BITS
        hi_out[p] = _NAN_BITS
        if m == 0:
            continue
        t_lo = pop_lo_t[p]
        t_hi = pop_hi_t[p]
        if skip[t_bucket[t_lo]] or skip[t_bucket[t_hi]]:
            continue  # NaN: the caller recomputes the pair
        r_hi = m // 2 - t_below[t_hi]
        if single[t_hi]:
            hi_key = b_min[t_bucket[t_hi]]
        else:
            vals = cand[offset[t_hi]:offset[t_hi + 1]]
            _select_u64(vals, r_hi)  # in place: vals[:r_hi] <= vals[r_hi] <= vals[r_hi + 1:]
            hi_key = vals[r_hi]
        if t_lo != t_hi:  # the largest member value of the bucket below
            lo_key = b_min[t_bucket[t_lo]] if single[t_lo] else cand[offset[t_lo]:offset[t_lo + 1]].max()
        elif m % 2:
            lo_key = hi_key
        else:  # r_hi >= 1 here: the lower middle is in this bucket too
            lo_key = b_min[t_bucket[t_hi]] if single[t_hi] else vals[:r_hi].max()
        lo_out[p] = _unkey(lo_key)
        hi_out[p] = _unkey(hi_key)
    return mixed


def _middle_pair(col: np.ndarray, idx: np.ndarray) -> tuple[float, float]:
    """One (column, population) exactly as the gather + partition reference computes it.

    Used where the order statistic is a NaN (which NaN numpy returns) or a zero in a column
    holding both -0.0 and +0.0 (which zero ``partition``/``max`` leave is up to their
    internals): the same operations on the same values give the same bits.
    """
    size = idx.size
    v = np.empty(size)
    if size == col.size:
        v[:] = col
    else:
        np.take(col, idx, out=v)
    k = size // 2
    v.partition(k)
    return v[k] if size % 2 else v[:k].max(), v[k]


def middle_values(columns: list[np.ndarray], masks: list[np.ndarray], *,
                  max_patterns: int = MAX_PATTERNS) -> tuple[np.ndarray, np.ndarray]:
    """The two middle member values of every population on every column, shape (columns, populations).

    The ``(m-1)//2``-th and ``m//2``-th smallest member
    value (0-based, ``m`` members; NaN sorts last, as in numpy), NaN for an empty population,
    bit-identical to the gather + ``np.partition`` it replaces.

    Parameters
    ----------
    columns : list of (n,) array_like
        Values (converted to float64).
    masks : list of (n,) bool array_like
        Population memberships.
    max_patterns : int, optional
        Above this many distinct membership patterns (per block of 64 populations) the
        populations of the block are computed one by one (gather + partition).

    Returns
    -------
    lo, hi : (len(columns), len(masks)) float64
    """
    n_pop = len(masks)
    n_col = len(columns)
    lo = np.full((n_col, n_pop), np.nan)
    hi = np.full((n_col, n_pop), np.nan)
    if not n_col or not n_pop:
        return lo, hi
    cols = [np.ascontiguousarray(c, dtype=np.float64) for c in columns]
    n = cols[0].size
    lo_bits = lo.view(np.uint64)
    hi_bits = hi.view(np.uint64)
    bkt = np.empty(n, np.uint16)
    for start in range(0, n_pop, 64):  # a pattern is a uint64 of memberships
        block = range(start, min(start + 64, n_pop))
        stacked = np.empty((len(block), n), np.uint8)
        for i, p in enumerate(block):
            stacked[i] = np.asarray(masks[p], dtype=bool)
        pid, codes, counts, n_pat = pattern_ids(stacked, max_patterns)
        if n_pat < 0:  # too many patterns: shared tables do not pay
            for p in block:
                idx = np.flatnonzero(masks[p])
                if idx.size:
                    for c, col in enumerate(cols):
                        lo[c, p], hi[c, p] = _middle_pair(col, idx)
            continue
        shifts = np.arange(len(block), dtype=np.uint64)[:, None]
        member = ((codes[None, :] >> shifts) & np.uint64(1)).astype(bool)  # (P, Q)
        # Fewer buckets when there are many patterns: the (pattern, bucket) prefix sums cost Q x buckets.
        target = int(min(2048, max(64, n // (2 * max(n_pat, 1)))))
        sizes = member.astype(np.int64) @ counts
        for c, col in enumerate(cols):
            bits = col.view(np.uint64)
            mixed = column_middles(bits, pid, n_pat, member, target, bkt, lo_bits[c, start:block.stop],
                                   hi_bits[c, start:block.stop])
            # NaN results (which NaN?) and zeros where both zeros exist (which zero?): redo as numpy does.
            res_lo = lo[c, start:block.stop]
            res_hi = hi[c, start:block.stop]
            redo = (np.isnan(res_lo) | np.isnan(res_hi)) & (sizes > 0)
            if mixed:  # the kernel leaves these as NaN already; kept for safety
                redo |= (res_lo == 0) | (res_hi == 0)
            for i in np.flatnonzero(redo):
                p = start + int(i)
                lo[c, p], hi[c, p] = _middle_pair(col, np.flatnonzero(masks[p]))
    return lo, hi
