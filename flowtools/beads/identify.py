"""Bead identification per well: scatter groups, then classification regions within each group.

Scatter groups
    A Gaussian mixture on ``log10`` scatter (x, y) with one component per bead group and
    one broad uniform component that soaks up debris and doublets (EM, a few dozen
    iterations, started from the tallest peaks of the summed log-scatter). Components are ordered
    by size (mean summed log-scatter), so the panel's first group is the smallest. An
    event belongs to a group when it is most likely under that group's component *and*
    within ``panel.scatter_radius`` Mahalanobis units of its centre; everything else is
    debris or doublet and is left out.

Classification regions
    Within a group, ``asinh(classification / cofactor)`` is histogrammed, smoothed and its
    peaks found (prominence >= 6% of the tallest, as :func:`scipy.signal.find_peaks`). Found
    peaks are matched to the expected positions (the template's ``position`` or the
    plate's pooled positions, see :func:`reference_positions`) in order, after one global
    offset (instrument drift): the offset is the one that pairs most peaks within tolerance
    (half the gap from a region to its nearer neighbour; ties go to the smaller offset); the pairing is an
    order-preserving alignment (dynamic programming) that leaves an expected region
    *unmatched* rather than give it a peak further than that tolerance. An unmatched region
    is flagged ``missing`` (no beads, no MFI); it is never silently replaced by a
    neighbour. A matched peak further
    than a fifth of the local gap from where it was expected is flagged ``shifted``; a
    peak matched to no region is recorded as ``unexpected``.

    Each event goes to its nearest found peak (matched or not); a region keeps the events
    of its peak within 4 robust SDs (1.4826 MAD) of the peak's median. Fewer than
    ``panel.min_beads`` beads: flagged ``few_beads``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flowtools.beads.template import BeadPanel
from flowtools.errors import BeadAssayError

__all__ = [
    "GroupDecision",
    "WellIdentification",
    "classification_values",
    "find_peaks_1d",
    "identify_events",
    "identify_well",
    "match_peaks",
    "reference_positions",
    "scatter_groups",
]

_BINS = 160
_SMOOTH = 2.0  # Gaussian smoothing of the histogram, in bins
_PROMINENCE = 0.06
_KEEP_SD = 4.0
_SHIFT_FRACTION = 0.2
_EM_EVENTS = 2500


def scatter_groups(
    x: np.ndarray, y: np.ndarray, n_groups: int, *, radius: float = 3.0, n_iter: int = 40
) -> tuple[np.ndarray, dict[str, Any]]:
    """Split events into bead groups by log-scatter (GMM + uniform background).

    Parameters
    ----------
    x, y : ndarray
        Scatter values (linear), one per event.
    n_groups : int
    radius : float
        Mahalanobis radius kept around each group's centre.
    n_iter : int

    Returns
    -------
    labels : ndarray of int
        Group index (0 = smallest) per event, -1 for debris/doublets/background.
    info : dict
        Centres, weights, events per group, events left out.
    """
    pts = np.column_stack([np.log10(np.clip(x, 1.0, None)), np.log10(np.clip(y, 1.0, None))])
    n = len(pts)
    labels = np.full(n, -1, dtype=np.int64)
    if n < 10 * n_groups:
        return labels, {"events": n, "error": "too few events"}
    size = pts.sum(axis=1)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    area = float(np.prod(np.maximum(hi - lo, 1e-3)))
    # Start: the tallest peaks of the size axis (beads are tight clusters, debris is spread out);
    # equal-count slices of it when there are too few peaks.
    slices = _size_peaks(size, n_groups)
    if slices is None:
        order = np.argsort(size)
        slices = [
            c[len(c) // 4 : max(3 * len(c) // 4, len(c) // 4 + 1)] for c in np.array_split(order, n_groups)
        ]
    means = np.array([pts[c].mean(axis=0) for c in slices])
    covs = np.array([np.cov(pts[c].T) + 1e-4 * np.eye(2) if len(c) > 2 else 0.01 * np.eye(2) for c in slices])
    weights = np.full(n_groups + 1, 0.9 / n_groups)
    weights[-1] = 0.1
    # EM on an evenly strided subsample (deterministic; a few thousand events pin 2-D Gaussians
    # well), then one E-step on every event for the labels.
    fit = pts[:: max(1, n // _EM_EVENTS)]
    prev = -np.inf
    for _ in range(n_iter):
        r, tot = _responsibilities(fit, means, covs, weights, area)
        nk = r.sum(axis=0) + 1e-9
        ll = float(np.log(tot).sum())
        if abs(ll - prev) < 1e-6 * len(fit):
            break
        prev = ll
        weights = nk / len(fit)
        for k in range(n_groups):
            w = r[:, k]
            means[k] = (w[:, None] * fit).sum(axis=0) / nk[k]
            d = fit - means[k]
            covs[k] = (w[:, None] * d).T @ d / nk[k] + 1e-5 * np.eye(2)
    r, _ = _responsibilities(pts, means, covs, weights, area)
    order_k = np.argsort(means.sum(axis=1))
    best = np.argmax(r, axis=1)
    for new, k in enumerate(order_k):
        m2, _ = _mahalanobis2(pts, means[k], covs[k])
        labels[(best == k) & (m2 <= radius * radius)] = new
    info = {
        "events": int(n),
        "centres_log10": [[round(float(v), 4) for v in means[k]] for k in order_k],
        "weights": [round(float(weights[k]), 4) for k in order_k],
        "background_weight": round(float(weights[-1]), 4),
        "events_per_group": [int((labels == g).sum()) for g in range(n_groups)],
        "left_out": int((labels < 0).sum()),
    }
    return labels, info


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


def _responsibilities(
    pts: np.ndarray, means: np.ndarray, covs: np.ndarray, weights: np.ndarray, area: float
) -> tuple[np.ndarray, np.ndarray]:
    """E-step: responsibilities of the Gaussians and the uniform background, and each point's density."""
    dens = np.empty((len(pts), len(means) + 1))
    for k in range(len(means)):
        m2, det = _mahalanobis2(pts, means[k], covs[k])
        dens[:, k] = np.exp(-0.5 * m2) / (2 * np.pi * np.sqrt(max(det, 1e-300)))
    dens[:, -1] = 1.0 / area
    r = dens * weights
    tot = r.sum(axis=1, keepdims=True)
    tot[tot == 0] = 1.0
    return r / tot, tot


def _size_peaks(size: np.ndarray, n_groups: int) -> list[np.ndarray] | None:
    """Events near each of the ``n_groups`` most prominent peaks of ``size`` (ascending), or None."""
    hist, edges = np.histogram(size, bins=200)
    kern = np.exp(-0.5 * (np.arange(-6, 7) / 2.0) ** 2)
    h = np.convolve(hist.astype(float), kern / kern.sum(), mode="same")
    idx, prom = _peaks(h, 0.02 * h.max(), 3)
    if len(idx) < n_groups:
        return None
    top = np.sort(idx[np.argsort(prom)[::-1][:n_groups]])
    centres = 0.5 * (edges[top] + edges[top + 1])
    half = 0.25 * float(np.min(np.diff(centres))) if n_groups > 1 else 0.05
    half = min(half, 0.1)
    out = [np.flatnonzero(np.abs(size - c) <= half) for c in centres]
    return out if all(len(c) >= 3 for c in out) else None


def _mahalanobis2(pts: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, float]:
    """Squared Mahalanobis distance of 2-D points (closed-form 2x2 inverse) and the determinant."""
    dx, dy = pts[:, 0] - mean[0], pts[:, 1] - mean[1]
    sxx, sxy, syy = cov[0, 0], cov[0, 1], cov[1, 1]
    det = float(sxx * syy - sxy * sxy)
    return (syy * dx * dx - 2 * sxy * dx * dy + sxx * dy * dy) / det, det


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


@dataclass
class GroupDecision:
    """What identification decided for one bead group of one well (JSON-friendly via :meth:`to_dict`)."""

    group: str
    events: int
    peaks: list[float]
    expected: list[float] | None
    offset: float
    reference: str
    regions: dict[str, dict[str, Any]] = field(default_factory=dict)
    unexpected_peaks: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The decision as plain data."""
        return {
            "group": self.group,
            "events": self.events,
            "peaks": [round(p, 4) for p in self.peaks],
            "expected": None if self.expected is None else [round(p, 4) for p in self.expected],
            "offset": round(self.offset, 4),
            "reference": self.reference,
            "regions": self.regions,
            "unexpected_peaks": [round(p, 4) for p in self.unexpected_peaks],
        }


@dataclass
class WellIdentification:
    """Bead identification of one well.

    Attributes
    ----------
    beads : dict of str to int
        Beads per analyte (0 when the region is missing).
    mfi : dict of str to float
        Median reporter per analyte (NaN when missing).
    flags : dict of str to list of str
        Per analyte: ``missing``, ``shifted``, ``few_beads``, ``unresolved``.
    scatter : dict
        The scatter-group fit.
    groups : list of GroupDecision
    group_labels, region_labels : ndarray
        Per event: group index (-1 left out) and analyte index in ``panel.analytes`` (-1 none).
    """

    beads: dict[str, int]
    mfi: dict[str, float]
    flags: dict[str, list[str]]
    scatter: dict[str, Any]
    groups: list[GroupDecision]
    group_labels: np.ndarray
    region_labels: np.ndarray

    def decision(self) -> dict[str, Any]:
        """Everything decided, as plain data (for ``identification.json``)."""
        return {
            "scatter": self.scatter,
            "groups": [g.to_dict() for g in self.groups],
            "beads": self.beads,
            "flags": {k: v for k, v in self.flags.items() if v},
        }


def _assign(v: np.ndarray, peaks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest peak per value, and whether it lies within ``_KEEP_SD`` robust SDs of that peak's median."""
    if len(peaks) == 0:
        return np.full(len(v), -1), np.zeros(len(v), dtype=bool)
    mids = 0.5 * (peaks[1:] + peaks[:-1])
    idx = np.searchsorted(mids, v)
    keep = np.zeros(len(v), dtype=bool)
    for k in range(len(peaks)):
        sel = np.flatnonzero(idx == k)
        if len(sel) == 0:
            continue
        med = np.median(v[sel])
        mad = 1.4826 * np.median(np.abs(v[sel] - med))
        mad = max(mad, 1e-6)
        keep[sel] = np.abs(v[sel] - med) <= _KEEP_SD * mad
    return idx, keep


def identify_events(
    events: np.ndarray,
    pnn: list[str] | tuple[str, ...],
    panel: BeadPanel,
    *,
    reference: dict[str, np.ndarray] | None = None,
    where: str = "<events>",
    scatter: tuple[np.ndarray, dict[str, Any]] | None = None,
) -> WellIdentification:
    """Identify beads in one well's events.

    Parameters
    ----------
    events : ndarray, shape (n_events, n_channels)
        Compensated events.
    pnn : sequence of str
        Channel names of the columns.
    panel : BeadPanel
    reference : dict of str to ndarray, optional
        Group name -> expected classification peak positions (the plate's pooled ones);
        default: the template's positions, else the peaks of this well when their count
        is right.
    where : str
        The file, for error messages.
    scatter : (labels, info), optional
        A scatter-group result already computed for these events (:func:`scatter_groups`).

    Returns
    -------
    WellIdentification

    Raises
    ------
    BeadAssayError
        A scatter, classification or reporter channel the file does not have.
    """
    names = list(pnn)
    col: dict[str, int] = {}
    for role, ch in (
        ("scatter x", panel.scatter[0]),
        ("scatter y", panel.scatter[1]),
        ("classification", panel.classification),
        ("reporter", panel.reporter),
    ):
        if ch not in names:
            msg = f"{where}: {role} channel {ch!r} not found (channels: {', '.join(names)})"
            raise BeadAssayError(msg)
        col[role] = names.index(ch)
    ev = np.asarray(events, dtype=np.float64)
    if scatter is None:
        scatter = scatter_groups(
            ev[:, col["scatter x"]], ev[:, col["scatter y"]], len(panel.groups), radius=panel.scatter_radius
        )
    glab, sinfo = scatter
    cls = classification_values(ev[:, col["classification"]], panel.classification_cofactor)
    rep = ev[:, col["reporter"]]
    analytes = panel.analytes
    region_labels = np.full(len(ev), -1, dtype=np.int64)
    beads: dict[str, int] = {}
    mfi: dict[str, float] = {}
    flags: dict[str, list[str]] = {a: [] for a in analytes}
    decisions: list[GroupDecision] = []
    for gi, group in enumerate(panel.groups):
        sel = np.flatnonzero(glab == gi)
        v = cls[sel]
        n_exp = len(group.regions)
        peaks = find_peaks_1d(v, n_exp)
        if reference is not None and reference.get(group.name) is not None:
            expected, source = np.asarray(reference[group.name], dtype=float), "plate"
        elif all(r.position is not None for r in group.regions):
            expected, source = np.array([r.position for r in group.regions], dtype=float), "template"
        elif len(peaks) == n_exp:
            expected, source = peaks.copy(), "this well"
        else:
            expected, source = None, "none"
        dec = GroupDecision(
            group.name,
            int(len(sel)),
            [float(p) for p in peaks],
            None if expected is None else [float(p) for p in expected],
            0.0,
            source,
        )
        if expected is None:
            for r in group.regions:
                beads[r.analyte] = 0
                mfi[r.analyte] = float("nan")
                flags[r.analyte].append("unresolved")
                dec.regions[r.analyte] = {
                    "status": "unresolved",
                    "beads": 0,
                    "reason": f"{len(peaks)} peaks found, {n_exp} expected, no reference positions",
                }
            decisions.append(dec)
            continue
        pairs, offset = match_peaks(peaks, expected)
        dec.offset = offset
        idx, keep = _assign(v, peaks)
        gaps = np.diff(expected)
        used = {p for p in pairs if p >= 0}
        dec.unexpected_peaks = [float(peaks[i]) for i in range(len(peaks)) if i not in used]
        for j, r in enumerate(group.regions):
            a = r.analyte
            p = pairs[j]
            if p < 0:
                beads[a] = 0
                mfi[a] = float("nan")
                flags[a].append("missing")
                dec.regions[a] = {
                    "status": "missing",
                    "beads": 0,
                    "expected": round(float(expected[j] + offset), 4),
                }
                continue
            members = sel[(idx == p) & keep]
            n_b = int(len(members))
            region_labels[members] = analytes.index(a)
            beads[a] = n_b
            mfi[a] = float(np.median(rep[members])) if n_b else float("nan")
            local = min([gaps[k] for k in (j - 1, j) if 0 <= k < len(gaps)] or [1.0])
            dist = float(peaks[p] - offset - expected[j])
            status = "ok"
            if abs(dist) > _SHIFT_FRACTION * local:
                flags[a].append("shifted")
                status = "shifted"
            if n_b < panel.min_beads:
                flags[a].append("few_beads")
            dec.regions[a] = {
                "status": status,
                "beads": n_b,
                "peak": round(float(peaks[p]), 4),
                "shift": round(dist, 4),
            }
        decisions.append(dec)
    return WellIdentification(beads, mfi, flags, sinfo, decisions, glab, region_labels)


def identify_well(
    path: Any, panel: BeadPanel, *, reference: dict[str, np.ndarray] | None = None, compensate: bool = True
) -> WellIdentification:
    """Read one FCS file (compensated with its own spillover when it has one) and identify its beads.

    Parameters
    ----------
    path : path
    panel : BeadPanel
    reference : dict, optional
        See :func:`identify_events`.
    compensate : bool, default True

    Returns
    -------
    WellIdentification

    Raises
    ------
    FCSError, BeadAssayError
        An unreadable file, or a channel of the panel absent (the message names the file).
    """
    events, pnn = read_well_events(path, compensate=compensate)
    return identify_events(events, pnn, panel, reference=reference, where=str(path))


def read_well_events(path: Any, *, compensate: bool = True) -> tuple[np.ndarray, list[str]]:
    """Events and channel names of one FCS file, compensated with its spillover when present."""
    from flowtools.io.fcs import read_fcs

    sample = read_fcs(path)
    pnn = list(sample.pnn)
    events = np.asarray(sample.events, dtype=np.float64)
    if compensate and sample.spillover is not None:
        from flowtools.compensation import SpilloverMatrix

        events = SpilloverMatrix.from_fcs(sample).apply(events, pnn)
    return events, pnn
