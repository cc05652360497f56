"""The ``qc`` method: time windows free of flow-rate gaps and signal shifts (PeacoQC / flowAI-like).

Each watched signal is turned into ranks (each event's position in the signal's
distribution) through the numba kernel of :mod:`flowtools.gating.methods._qc_kernels`
(imported on first use).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from flowtools.gating.methods._common import (
    _fail,
    _finite_rows,
    _quantiles_sorted,
    _robust_center_scale,
    _sorted,
)
from flowtools.gating.methods.registry import ArgSpec, MethodContext, TimeWindows, register

__all__ = ["qc"]

_log = logging.getLogger(__name__)


def _ranks(v: np.ndarray) -> np.ndarray:
    """Each value's position in the distribution of all values (0..1; ties share one).

    Interpolated in 1001 quantiles of at most ~200k values (a regular stride: no randomness).
    """
    from flowtools.gating.methods import _qc_kernels as QK

    sample = _sorted(v[:: max(1, v.size // 200_000)])
    q = _quantiles_sorted(sample, np.linspace(0.0, 1.0, 1001))
    xp, inv = np.unique(q, return_inverse=True)
    fp = np.bincount(inv, weights=np.linspace(0.0, 1.0, 1001)) / np.bincount(inv)
    if xp.size == 1:
        return np.full(v.size, 0.5)
    # np.interp(v, xp, fp), value for value; the kernel starts each search from a lookup table,
    # where numpy's bisection mispredicts on unsorted v
    return QK.interp(v, xp, fp)


def _robust_z(v: np.ndarray) -> np.ndarray:
    med, s = _robust_center_scale(v)
    s = max(s, 0.01 * abs(med), 1e-12)
    return (v - med) / s


@register(
    "qc",
    dims=tuple(range(1, 33)),
    args={
        "bins": ArgSpec(int, 100, lo=5, hi=100_000, doc="number of time bins"),
        "binning": ArgSpec(str, "count", choices=("count", "time"), doc="equal-count or equal-time bins"),
        "z": ArgSpec(float, 4.0, lo=1.0, hi=100.0, doc="robust z (MAD) beyond which a bin is flagged"),
        "min_events": ArgSpec(
            int, 20, lo=1, hi=1_000_000, doc="fewest events per bin (fewer bins if needed)"
        ),
        "min_run": ArgSpec(int, 1, lo=1, hi=1000, doc="drop runs of good bins shorter than this"),
    },
)
def qc(
    values: np.ndarray,
    ctx: MethodContext,
    *,
    bins: int,
    binning: str,
    z: float,
    min_events: int,
    min_run: int,
) -> TimeWindows:
    """Time windows free of flow-rate gaps and signal shifts (PeacoQC / flowAI-like).

    Column 0 is time; the other columns are signals to watch. Events are split
    into ``bins`` equal-count (default) or equal-time bins, with at most
    ``n / min_events`` bins. A bin is flagged when its flow rate (seconds per
    event for equal-count bins, events per bin for equal-time bins) is more
    than ``z`` robust SDs (1.4826 MAD across bins, floored at 1% of the
    median) from the median bin, or when the mean rank of any watched signal
    (each event's position in that signal's overall distribution, 0..1: a
    scale-free statistic that population mixtures do not make jumpy, unlike
    a median) is more than ``z`` robust SDs from the median bin (the SD
    floored at the sampling SD ``1 / sqrt(12 m)`` for ``m`` events per bin);
    an empty bin is flagged. Consecutive good bins merge into ``[lo, hi)`` windows;
    the last window's ``hi`` is just above the last event's time. With too few
    events for 5 bins, one window spans all events.

    Parameters
    ----------
    values : ndarray of float64, shape (n, d)
    ctx : MethodContext

    Returns
    -------
    TimeWindows
    """
    x = _finite_rows(values, ctx, "qc")
    if not (x[1:, 0] >= x[:-1, 0]).all():  # acquisition order is usually time order already
        x = x[np.argsort(x[:, 0], kind="stable")]
    t = x[:, 0]
    n = t.size
    t_end = float(np.nextafter(t[-1], np.inf))
    nb = min(bins, n // min_events)
    if nb < 5 or t[-1] == t[0]:
        why = "too few events for 5 time bins" if nb < 5 else "no time span"
        ctx.fall_back(f"{why}: every event kept")
        ctx.note(rule=f"{why}: one window over the whole acquisition", bins=int(max(nb, 0)))
        return TimeWindows(((float(t[0]), t_end),))
    if binning == "count":
        starts = (np.arange(nb) * n) // nb
        edges_t = np.append(t[starts], t_end)
        stops = np.append(starts[1:], n)
        counts = stops - starts
        rate = (edges_t[1:] - edges_t[:-1]) / counts  # seconds per event
    else:
        edges_t = np.linspace(float(t[0]), t_end, nb + 1)
        bounds = np.searchsorted(t, edges_t, side="left")
        starts, stops = bounds[:-1], bounds[1:]
        counts = stops - starts
        rate = counts.astype(np.float64)
    bad = counts == 0
    bad |= np.abs(_robust_z(rate)) > z
    if x.shape[1] > 1:
        full = counts > 0
        null_sd = 1.0 / math.sqrt(12.0 * float(np.median(counts[full])))
        for c in range(1, x.shape[1]):
            r = _ranks(x[:, c])
            means = np.add.reduceat(r, np.minimum(starts[full], n - 1)) / counts[full]
            center, spread = _robust_center_scale(means)
            zc = np.zeros(nb)
            zc[full] = (means - center) / max(spread, null_sd)
            bad |= np.abs(zc) > z
    windows: list[tuple[float, float]] = []
    b = 0
    while b < nb:
        if bad[b]:
            b += 1
            continue
        e = b
        while e + 1 < nb and not bad[e + 1]:
            e += 1
        if e - b + 1 >= min_run:
            windows.append((float(edges_t[b]), float(edges_t[e + 1])))
        b = e + 1
    if not windows:
        raise _fail(ctx, "qc", "every time bin was flagged")
    _log.info("%s: qc kept %d window(s), %d of %d bins flagged", ctx.population, len(windows), bad.sum(), nb)
    ctx.note(rule=f"{int(bad.sum())} of {nb} {binning} bins flagged (|robust z| > {z:g}); "
             f"{len(windows)} window(s) kept", bins=int(nb), bins_flagged=int(bad.sum()),
             windows=[list(w) for w in windows])
    return TimeWindows(tuple(windows))
