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

from flowtools.beads.peaks import (  # noqa: F401 - the peak finding and matching, moved there; re-exported
    _BINS,
    _PROMINENCE,
    _SMOOTH,
    _align,
    _peaks,
    _tolerances,
    classification_values,
    find_peaks_1d,
    match_peaks,
    reference_positions,
)
from flowtools.beads.scatter import (  # noqa: F401 - the scatter groups, moved there; re-exported
    _EM_EVENTS,
    _mahalanobis2,
    _responsibilities,
    _size_peaks,
    scatter_groups,
)
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

_KEEP_SD = 4.0
_SHIFT_FRACTION = 0.2


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
