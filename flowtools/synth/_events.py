"""Events of one synthetic FCS file: populations, doublets, spillover, noise and artefacts.

Everything is vectorised over events: one draw per channel block for all
events, then gathers by population label. No Python loop runs over events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import numpy as np

from flowtools.synth._model import (
    DETECTORS,
    DOUBLET_CODE,
    LEAVES,
    PANELS,
    SINGLET_CODES,
    profile_tables,
)

__all__ = ["TIMESTEP", "TOP", "FileEvents", "channel_names", "make_file_events"]

#: Highest value a detector reports (18-bit ADC); margin events pile up here.
TOP = 262143.0
#: Seconds per unit of the Time channel ($TIMESTEP).
TIMESTEP = 0.01
#: QC flag bits of the per-event truth.
MARGIN_FLAG = 1
CLOG_FLAG = 2

_ELECTRONIC_SD = 35.0  # detector noise floor
_PHOTON_VAR = 15.0  # variance per unit of signal (photon statistics)


def channel_names(tube: str) -> tuple[list[str], list[str | None]]:
    """Return the ``$PnN`` and ``$PnS`` of a tube's file, in column order.

    Parameters
    ----------
    tube : str
        One of the panels' tubes.

    Returns
    -------
    names : list of str
        FSC-A, FSC-H, SSC-A, the fluorescence detectors, Time.
    markers : list of str or None
        The marker of each fluorescence detector, None for scatter and Time.
    """
    panel = PANELS[tube]
    names = ["FSC-A", "FSC-H", "SSC-A", *(d for d, _ in panel), "Time"]
    markers: list[str | None] = [None, None, None, *(m for _, m in panel), None]
    return names, markers


@cache
def _tables(tube: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mu, sigma = profile_tables(tube)
    det_idx = np.array([DETECTORS.index(d) for d, _ in PANELS[tube]], dtype=np.intp)
    return mu, sigma, det_idx


@dataclass
class FileEvents:
    """The events of one file and their truth.

    Attributes
    ----------
    events : ndarray of float32, shape (n_events, n_channels)
        Columns as :func:`channel_names`.
    labels : ndarray of int16, shape (n_events,)
        Leaf population code of each event (index into ``LEAVES``).
    qc : ndarray of uint8, shape (n_events,)
        Artefact bits: 1 margin event, 2 event inside a clog's signal shift.
    artefacts : list of dict
        One record per artefact planted in the file (kind and parameters).
    duration_s : float
        Acquisition time in seconds.
    """

    events: np.ndarray
    labels: np.ndarray
    qc: np.ndarray
    artefacts: list[dict[str, object]] = field(default_factory=list)
    duration_s: float = 0.0


def make_file_events(
    rng: np.random.Generator,
    tube: str,
    leaf_counts: np.ndarray,
    spill: np.ndarray,
    *,
    clog: bool = False,
    margin: bool = False,
) -> FileEvents:
    """Draw the events of one file.

    Parameters
    ----------
    rng : numpy.random.Generator
        This file's own random stream.
    tube : str
        Which panel.
    leaf_counts : ndarray of int, shape (len(LEAVES),)
        Events of each leaf population.
    spill : ndarray of float64, shape (len(DETECTORS), len(DETECTORS))
        The instrument's spillover (``observed = true @ spill``).
    clog : bool, default False
        Plant a clog: a gap in the flow and a signal drop just after it.
    margin : bool, default False
        Pile a few percent of events at the top of a scatter channel.

    Returns
    -------
    FileEvents
    """
    mu, sigma, det_idx = _tables(tube)
    counts = np.asarray(leaf_counts, dtype=np.int64)
    n = int(counts.sum())
    n_fl = det_idx.size
    labels = np.repeat(np.arange(len(LEAVES), dtype=np.int16), counts)

    # True signals (scatter + markers), log-normal per population.
    true = np.exp(mu[labels] + sigma[labels] * rng.standard_normal((n, mu.shape[1])))
    doublets = np.flatnonzero(labels == DOUBLET_CODE)
    pool = np.flatnonzero(np.isin(labels, SINGLET_CODES))
    if doublets.size and pool.size:
        pairs = pool[rng.integers(0, pool.size, size=(doublets.size, 2))]
        true[doublets] = true[pairs[:, 0]] + true[pairs[:, 1]]
    ratio = 0.88 * np.exp(0.03 * rng.standard_normal(n))
    ratio[doublets] = 0.56 * np.exp(0.08 * rng.standard_normal(doublets.size))

    order = rng.permutation(n)
    labels, true, ratio = labels[order], true[order], ratio[order]
    qc = np.zeros(n, dtype=np.uint8)
    artefacts: list[dict[str, object]] = []

    # Acquisition times: a Poisson process at this well's flow rate.
    rate = 1500.0 * np.exp(0.2 * rng.standard_normal())
    t = np.cumsum(rng.exponential(1.0 / rate, size=n))
    if clog and n >= 10:
        start = int(n * rng.uniform(0.3, 0.6))
        gap = float(rng.uniform(3.0, 8.0))
        width = max(1, int(n * rng.uniform(0.05, 0.12)))
        factor = float(rng.uniform(0.55, 0.75))
        t[start:] += gap
        stop = min(n, start + width)
        true[start:stop] *= factor
        qc[start:stop] |= CLOG_FLAG
        artefacts.append(
            {
                "kind": "clog",
                "gap_start_s": round(float(t[start - 1]) if start else 0.0, 3),
                "gap_end_s": round(float(t[start]), 3),
                "shift_end_s": round(float(t[stop - 1]), 3),
                "signal_factor": round(factor, 4),
                "events_shifted": stop - start,
            }
        )

    out = np.empty((n, 3 + n_fl + 1), dtype=np.float64)
    fsc_a = true[:, 0] + np.sqrt(200.0**2 + 2.0 * true[:, 0]) * rng.standard_normal(n)
    out[:, 0] = fsc_a
    out[:, 1] = fsc_a * ratio
    out[:, 2] = true[:, 1] + np.sqrt(200.0**2 + 2.0 * true[:, 1]) * rng.standard_normal(n)
    np.clip(np.rint(out[:, :3], out=out[:, :3]), 0.0, TOP, out=out[:, :3])

    s = spill[np.ix_(det_idx, det_idx)]
    fl = true[:, 2:] @ s
    fl += np.sqrt(_ELECTRONIC_SD**2 + _PHOTON_VAR * np.maximum(fl, 0.0)) * rng.standard_normal(fl.shape)
    np.minimum(fl, TOP, out=fl)
    out[:, 3 : 3 + n_fl] = fl
    out[:, -1] = t / TIMESTEP

    if margin and n:
        channel = "FSC-A" if rng.random() < 0.5 else "SSC-A"
        k = max(1, int(n * rng.uniform(0.02, 0.05)))
        hit = rng.choice(n, size=k, replace=False)
        cols = [0, 1] if channel == "FSC-A" else [2]
        out[np.ix_(hit, cols)] = TOP
        qc[hit] |= MARGIN_FLAG
        artefacts.append({"kind": "margin", "channel": channel, "events": k, "value": TOP})

    return FileEvents(
        events=np.ascontiguousarray(out, dtype=np.float32),
        labels=labels,
        qc=qc,
        artefacts=artefacts,
        duration_s=float(t[-1]) if n else 0.0,
    )
