"""Peaks of the classification channel and their matching to the expected bead regions.

Part of bead identification (:mod:`flowtools.beads.identify`, which re-exports these names and
describes the method): a smoothed histogram's peaks (a plain-numpy :func:`scipy.signal.find_peaks`),
then one global offset and an order-preserving alignment to the expected positions.
"""

from __future__ import annotations

import numpy as np

__all__ = ["classification_values", "find_peaks_1d", "match_peaks", "reference_positions"]

_BINS = 160
_SMOOTH = 2.0  # Gaussian smoothing of the histogram, in bins
_PROMINENCE = 0.06


def _peaks(h: np.ndarray, min_prominence: float, distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima of ``h`` with their topographic prominence (as :func:`scipy.signal.find_peaks`).

    A plain-numpy version (``scipy.signal`` costs a second and a half to import): plateaus count
    once (their middle); peaks closer than ``distance`` bins to a taller one are dropped; then
    peaks below ``min_prominence`` are dropped.
    """
    n = len(h)
    cand = []
    i = 1
    while i < n - 1:
        if h[i] > h[i - 1]:
            j = i
            while j + 1 < n and h[j + 1] == h[i]:
                j += 1
            if j + 1 < n and h[j + 1] < h[i]:
                cand.append((i + j) // 2)
            i = j + 1
        else:
            i += 1
    idx = np.array(cand, dtype=np.int64)
    if len(idx) == 0:
        return idx, np.empty(0)
    keep = np.ones(len(idx), dtype=bool)
    for k in np.argsort(h[idx])[::-1]:  # tallest first
        if keep[k]:
            near = np.abs(idx - idx[k]) < distance
            near[k] = False
            keep &= ~near | (np.arange(len(idx)) == k)
    idx = idx[keep]
    prom = np.empty(len(idx))
    for k, p in enumerate(idx):
        left = p
        while left > 0 and h[left - 1] <= h[p]:
            left -= 1
        right = p
        while right < n - 1 and h[right + 1] <= h[p]:
            right += 1
        prom[k] = h[p] - max(h[left : p + 1].min(), h[p : right + 1].min())
    ok = prom >= min_prominence
    return idx[ok], prom[ok]


def classification_values(values: np.ndarray, cofactor: float) -> np.ndarray:
    """The classification channel on the scale peaks are found on: ``asinh(x / cofactor)``."""
    return np.arcsinh(np.asarray(values, dtype=np.float64) / cofactor)


def find_peaks_1d(v: np.ndarray, n_expected: int) -> np.ndarray:
    """Peaks of a smoothed histogram of ``v`` (sorted positions, at most ``n_expected + 3``)."""
    if len(v) < 5:
        return np.empty(0)
    lo, hi = np.percentile(v, [0.2, 99.8])
    pad = 0.05 * max(hi - lo, 1e-3)
    hist, edges = np.histogram(v, bins=_BINS, range=(lo - pad, hi + pad))
    half = int(4 * _SMOOTH) + 1
    kern = np.exp(-0.5 * (np.arange(-half, half + 1) / _SMOOTH) ** 2)
    h = np.convolve(np.pad(hist.astype(float), half), kern / kern.sum(), mode="same")[half:-half]
    idx, prom = _peaks(h, _PROMINENCE * h.max(), 3)
    if len(idx) > n_expected + 3:
        idx = np.sort(idx[np.argsort(prom)[::-1][: n_expected + 3]])
    centres = 0.5 * (edges[:-1] + edges[1:])
    width = edges[1] - edges[0]
    out = []
    for i in idx:  # parabolic refinement
        if 0 < i < len(h) - 1:
            a, b, c = h[i - 1], h[i], h[i + 1]
            den = a - 2 * b + c
            out.append(centres[i] + (0.5 * (a - c) / den * width if den != 0 else 0.0))
        else:
            out.append(centres[i])
    return np.sort(np.asarray(out, dtype=np.float64))


def _tolerances(expected: np.ndarray) -> np.ndarray:
    """Per expected peak: half the gap to its nearer neighbour (0.5 for a lone peak)."""
    if len(expected) < 2:
        return np.full(len(expected), 0.5)
    gaps = np.diff(expected)
    left = np.concatenate([[np.inf], gaps])
    right = np.concatenate([gaps, [np.inf]])
    return 0.5 * np.minimum(left, right)


def _align(found: np.ndarray, expected: np.ndarray, tols: np.ndarray) -> list[int]:
    """Order-preserving pairing minimising distance; -1 where an expected peak stays unmatched.

    Expected peak ``j`` may take a found peak closer than ``tols[j]``; leaving a peak of either
    side unpaired costs ``max(tols)``, so a pairing within tolerance always beats two skips.
    """
    m, n = len(found), len(expected)
    tol = float(np.max(tols)) if n else 0.5
    # cost[i][j]: best cost aligning found[:i] with expected[:j]; skipping costs tol.
    cost = np.full((m + 1, n + 1), np.inf)
    move = np.zeros((m + 1, n + 1), dtype=np.int8)
    cost[0, :] = tol * np.arange(n + 1)
    cost[:, 0] = tol * np.arange(m + 1)
    move[0, 1:] = 2
    move[1:, 0] = 1
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            best, mv = cost[i - 1, j] + tol, 1  # found i-1 unmatched
            if cost[i, j - 1] + tol < best:
                best, mv = cost[i, j - 1] + tol, 2  # expected j-1 missing
            d = abs(found[i - 1] - expected[j - 1])
            if d < tols[j - 1] and cost[i - 1, j - 1] + d < best:
                best, mv = cost[i - 1, j - 1] + d, 3
            cost[i, j], move[i, j] = best, mv
    pair = [-1] * n
    i, j = m, n
    while i > 0 or j > 0:
        mv = move[i, j]
        if mv == 3:
            pair[j - 1] = i - 1
            i, j = i - 1, j - 1
        elif mv == 1:
            i -= 1
        else:
            j -= 1
    return pair


def match_peaks(found: np.ndarray, expected: np.ndarray) -> tuple[list[int], float]:
    """Match found peaks to expected positions after one global offset.

    Parameters
    ----------
    found, expected : ndarray
        Sorted positions.

    Returns
    -------
    pairs : list of int
        For each expected region, the index of its found peak or -1 (missing).
    offset : float
        The global offset removed (found - expected).
    """
    found = np.sort(np.asarray(found, dtype=float))
    expected = np.sort(np.asarray(expected, dtype=float))
    if len(found) == 0:
        return [-1] * len(expected), 0.0
    tols = _tolerances(expected)
    candidates = np.unique(np.round((found[:, None] - expected[None, :]).ravel(), 6))
    best: tuple[int, float, float] = (-1, np.inf, 0.0)
    for off in candidates:  # cheap score: expected peaks with a found peak within tol
        dmin = np.abs(found[:, None] - off - expected[None, :]).min(axis=0)
        ok = dmin < tols
        # Ties (evenly spaced peaks, one absent) go to the smaller drift: drift is rarely a whole gap.
        hits, err = int(ok.sum()), float(dmin[ok].sum()) + abs(float(off))
        if hits > best[0] or (hits == best[0] and err < best[1]):
            best = (hits, err, float(off))
    off = best[2]
    pairs = _align(found - off, expected, tols)
    matched = [found[p] - expected[j] for j, p in enumerate(pairs) if p >= 0]
    if matched:  # re-centre on the median residual offset, then align once more
        off = float(np.median(matched))
        pairs = _align(found - off, expected, tols)
    return pairs, off


def reference_positions(peak_sets: list[np.ndarray], n_expected: int) -> np.ndarray | None:
    """Pooled expected positions: the median of the wells that show exactly ``n_expected`` peaks."""
    full = [np.sort(p) for p in peak_sets if len(p) == n_expected]
    if not full:
        return None
    arr = np.vstack(full)
    # Remove each well's offset before pooling so that drift does not blur the reference.
    arr = arr - (np.median(arr, axis=1, keepdims=True) - np.median(arr))
    return np.median(arr, axis=0)
