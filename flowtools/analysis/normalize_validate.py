"""Validation of batch normalisation, as CytoNorm is validated.

* :func:`batch_emd`: Earth Mover's Distance between batches, per marker (and per cluster), before
  and after;
* :func:`mad_change`: the CytoNorm 2.0 check that a marker's spread within a batch was not
  changed (a relative MAD change above :data:`MAD_FLAG` = 0.25 is flagged);
* :func:`drift_table`: both per marker, with the flag;
* :func:`cluster_cv`: the share of each anchor cluster per batch and its coefficient of variation
  across batches (a cluster whose share differs much between batches of the same donor is unstable).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from flowtools.analysis._subsample import subsample_index
from flowtools.analysis.normalize_model import quantiles_sorted, quantiles_t

__all__ = ["MAD_FLAG", "batch_emd", "cluster_cv", "drift_table", "drift_table_sorted", "mad_change",
           "merge_sorted", "sorted_t"]

#: CytoNorm 2.0's flag: a relative change of a marker's MAD within a batch above this.
MAD_FLAG = 0.25
_EMD_MAX_EVENTS = 20_000  # per batch; EMD of two 20k samples is stable to ~1% of a marker's sd
_EMD_QUANTILES = 2000


def cluster_cv(labels: Mapping[str, np.ndarray], n_clusters: int, *, cv_limit: float = 0.5) -> dict[str, Any]:
    """Share of each cluster in each batch's anchors, and its CV across batches.

    Parameters
    ----------
    labels : mapping of str to ndarray of int
        Batch -> cluster of every anchor event.
    n_clusters : int
    cv_limit : float, default 0.5
        Clusters with a CV above this are listed as unstable.

    Returns
    -------
    dict
        ``shares`` (batch -> list of shares), ``cv`` (list per cluster; 0 with one batch),
        ``unstable`` (clusters above ``cv_limit``), ``cv_limit``.
    """
    shares = {}
    for b, lab in labels.items():
        counts = np.bincount(np.asarray(lab, dtype=np.int64), minlength=n_clusters)[:n_clusters]
        shares[b] = (counts / max(1, counts.sum())).tolist()
    s = np.array(list(shares.values()), dtype=np.float64).reshape(len(shares), n_clusters)
    mean = s.mean(axis=0) if s.size else np.zeros(n_clusters)
    sd = s.std(axis=0, ddof=1) if s.shape[0] > 1 else np.zeros(n_clusters)
    cv = np.divide(sd, mean, out=np.zeros(n_clusters), where=mean > 0)
    unstable = [int(c) for c in np.flatnonzero(cv > cv_limit)]
    return {"shares": shares, "cv": [round(float(v), 6) for v in cv], "unstable": unstable,
            "cv_limit": float(cv_limit)}


def _subsample(x: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    return x if x.shape[0] <= n else x[subsample_index(x.shape[0], n, np.random.default_rng(seed))]


def batch_emd(
    samples: Mapping[str, np.ndarray],
    markers: Sequence[str],
    *,
    labels: Mapping[str, np.ndarray] | None = None,
    max_events: int = _EMD_MAX_EVENTS,
) -> dict[str, Any]:
    """Earth Mover's Distance between batches, per marker (largest over batch pairs), as CytoNorm reports it.

    The 1-D EMD (Wasserstein-1) is the mean absolute difference of the two quantile
    functions; it is computed on 2,000 quantiles of each batch (within 0.5% of
    :func:`scipy.stats.wasserstein_distance` on the same events, and each batch is sorted
    once instead of once per pair).

    Parameters
    ----------
    samples : mapping of str to ndarray, shape (n_events, n_markers)
        Batch -> its events (pooled over its samples), transformed values.
    markers : sequence of str
    labels : mapping of str to ndarray of int, optional
        Batch -> cluster of every event: EMD per cluster and marker as well.
    max_events : int, default 20_000
        A seeded subsample per batch (EMD of two large samples is stable).

    Returns
    -------
    dict
        ``marker`` -> max EMD over pairs of batches; with ``labels`` also
        ``"clusters"`` -> {cluster: {marker: EMD}} (clusters with >= 20 events in both batches).
    """
    batches = list(samples)
    xs = {b: _subsample(np.asarray(samples[b]), max_events) for b in batches}
    probs = (np.arange(_EMD_QUANTILES) + 0.5) / _EMD_QUANTILES
    # one sort per batch and marker (marker-major float32 rows); pairs compared on their quantiles
    have = [b for b in batches if xs[b].shape[0]]
    qs = np.stack([quantiles_t(np.ascontiguousarray(xs[b].T, dtype=np.float32), probs) for b in have]) \
        if have else np.empty((0, len(markers), probs.size))
    best = np.zeros(len(markers))
    for a in range(len(have)):
        for b in range(a + 1, len(have)):
            best = np.maximum(best, np.mean(np.abs(qs[a] - qs[b]), axis=1))
    out: dict[str, Any] = {str(m): float(best[j]) for j, m in enumerate(markers)}
    if labels is not None:
        lab = {b: _subsample(np.asarray(labels[b]).reshape(-1, 1), max_events)[:, 0] for b in batches}
        k = int(max((int(v.max()) for v in lab.values() if v.size), default=-1)) + 1
        per: dict[str, dict[str, float]] = {}
        for c in range(k):
            sub = {b: xs[b][lab[b] == c] for b in batches if np.count_nonzero(lab[b] == c) >= 20}
            if len(sub) > 1:
                per[str(c)] = {mk: v for mk, v in batch_emd(sub, markers, max_events=max_events).items()
                               if mk != "clusters"}
        out["clusters"] = per
    return out


def _mad(x: np.ndarray) -> np.ndarray:
    # one marker per contiguous float32 row: several times faster than float64 columns
    xt = np.ascontiguousarray(np.asarray(x).T, dtype=np.float32)
    med = np.median(xt, axis=1)
    return np.median(np.abs(xt - med[:, None]), axis=1).astype(np.float64)


def mad_change(
    before: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray], markers: Sequence[str],
    *, flag: float = MAD_FLAG,
) -> dict[str, dict[str, float]]:
    """Relative change of every marker's MAD within each batch: ``(MAD_after - MAD_before) / MAD_before``.

    CytoNorm 2.0 flags a MAD change above 0.25: normalisation should move a batch's
    distribution, not squeeze or stretch it much. Compare the absolute value with ``flag``.

    Parameters
    ----------
    before, after : mapping of str to ndarray, shape (n_events, n_markers)
        Batch -> the same events before and after normalisation.
    markers : sequence of str
    flag : float, default MAD_FLAG

    Returns
    -------
    dict
        marker -> batch -> relative MAD change (0 where the MAD before is 0).
    """
    out: dict[str, dict[str, float]] = {str(m): {} for m in markers}
    for b in before:
        mb, ma = _mad(before[b]), _mad(after[b])
        for j, m in enumerate(markers):
            out[str(m)][b] = float((ma[j] - mb[j]) / mb[j]) if mb[j] > 0 else 0.0
    return out


def sorted_t(x: np.ndarray) -> np.ndarray:
    """Event-major values (n_events, n_markers) as sorted marker-major float32 rows (n_markers, n_events)."""
    return np.sort(np.ascontiguousarray(np.asarray(x).T, dtype=np.float32), axis=1)


def merge_sorted(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Sorted marker-major rows of several samples, pooled: a stable sort of the runs (a merge)."""
    if len(parts) == 1:
        return parts[0]
    return np.sort(np.concatenate(parts, axis=1), axis=1, kind="stable")


def _mad_sorted(xs: np.ndarray) -> np.ndarray:
    """MAD of every row of sorted ``xs``: the deviations below and above the median are two sorted runs."""
    n = xs.shape[1]
    if n == 0:
        return np.zeros(xs.shape[0])
    h = n // 2
    med = xs[:, h].astype(np.float64) if n % 2 else (xs[:, h - 1].astype(np.float64) + xs[:, h]) / 2.0
    dev = np.concatenate([med[:, None] - xs[:, :h][:, ::-1], xs[:, h:] - med[:, None]], axis=1)
    dev = np.sort(dev, axis=1, kind="stable")
    return dev[:, h] if n % 2 else (dev[:, h - 1] + dev[:, h]) / 2.0


def _emd_sorted(sorted_by_batch: Mapping[str, np.ndarray], nm: int) -> np.ndarray:
    probs = (np.arange(_EMD_QUANTILES) + 0.5) / _EMD_QUANTILES
    qs = [quantiles_sorted(v, probs) for v in sorted_by_batch.values() if v.shape[1]]
    best = np.zeros(nm)
    for a in range(len(qs)):
        for b in range(a + 1, len(qs)):
            best = np.maximum(best, np.mean(np.abs(qs[a] - qs[b]), axis=1))
    return best


def drift_table_sorted(
    before: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray], markers: Sequence[str],
    *, flag: float = MAD_FLAG,
) -> list[dict[str, Any]]:
    """:func:`drift_table` of batches given as sorted marker-major rows.

    The rows come from :func:`sorted_t` and :func:`merge_sorted`.

    A file's sorted sample serves the tables of all the pools it is in (all files, anchors, the
    other files): each pool is a merge, not a new sort.
    """
    nm = len(markers)
    eb, ea = _emd_sorted(before, nm), _emd_sorted(after, nm)
    mb = {b: _mad_sorted(v) for b, v in before.items()}
    ma = {b: _mad_sorted(after[b]) for b in before}
    rows = []
    for j, m in enumerate(markers):
        per = {b: float((ma[b][j] - mb[b][j]) / mb[b][j]) if mb[b][j] > 0 else 0.0 for b in before}
        worst = max(per, key=lambda b: abs(per[b])) if per else ""
        change = per.get(worst, 0.0)
        red = 1.0 - ea[j] / eb[j] if eb[j] > 0 else 0.0
        rows.append({"marker": str(m), "emd_before": round(float(eb[j]), 6),
                     "emd_after": round(float(ea[j]), 6), "emd_reduction": round(float(red), 4),
                     "mad_change": round(change, 4), "mad_batch": worst,
                     "flagged": bool(abs(change) > flag or red < -0.05)})
    return rows


def drift_table(
    before: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray], markers: Sequence[str],
    *, flag: float = MAD_FLAG,
) -> list[dict[str, Any]]:
    """Per marker: EMD between batches before and after, the reduction, the largest MAD change and the flag.

    The EMD and MAD of a batch are computed on all its events (one sort per batch and marker).

    Returns
    -------
    list of dict
        ``marker, emd_before, emd_after, emd_reduction`` (share of the EMD removed; negative:
        made worse), ``mad_change`` (largest absolute, signed), ``mad_batch``, ``flagged``
        (``|mad_change| > flag`` or EMD made worse by more than 5%).
    """
    return drift_table_sorted({b: sorted_t(v) for b, v in before.items()},
                              {b: sorted_t(after[b]) for b in before}, markers, flag=flag)
