"""Batch normalisation on anchor samples (CytoNorm-class), and its validation.

The same donor's aliquot (an *anchor*, or reference sample) is stained and acquired
in every batch (plate, run, year). Differences between the anchors of two batches
are technical, so a map that makes every batch's anchor look like the goal anchor
also removes the batch effect from the batch's other samples. :class:`CytoNorm`
learns that map as CytoNorm does:

1. the pooled anchors are clustered (:class:`~flowtools.analysis.som.FlowSOM`, on the
   transformed values a gating template names), so that a shift that differs between
   populations (a dim and a bright population of one marker) is learnt per population;
2. per cluster, marker and batch, the batch's anchor quantiles are mapped onto the goal
   quantiles (the mean over batches, or one chosen batch) by a monotone cubic (PCHIP)
   spline; every event of the batch goes through the spline of its cluster;
3. beyond the anchors' quantile range the spline goes on linearly with the end slope
   (itself held in ``[1/max_slope, max_slope]``) and the result is clipped to
   ``[lo - limit * range, hi + limit * range]`` of the goal quantiles, so a far
   event is never flung to an extreme value (the extrapolation CytoNorm is known for).

``mode="global"`` skips the clustering (one spline per marker and batch);
``mode="identity"`` learns nothing and returns the values unchanged (a check of the
pipeline). A cluster with fewer than ``min_cluster_events`` anchor events in a batch
uses that batch's global spline instead; every such fallback is recorded.

Validation as CytoNorm is validated: :func:`batch_emd` (Earth Mover's Distance between
batches, per marker and optionally per cluster, before and after), :func:`mad_change`
(the CytoNorm 2.0 check that a marker's spread within a batch was not changed: a
relative MAD change above 0.25 is flagged) and :attr:`CytoNorm.cluster_cv_` (the share of
each cluster per batch and its coefficient of variation across batches: a cluster whose
share differs much between batches of the same donor is unstable).

File level: :func:`fit_sheet` reads the anchors of a sample sheet (``anchor`` and
``batch`` columns, :func:`flowtools.io.sample_sheet.check_anchors`), compensates and
transforms them as a template says, and fits; :func:`apply_sheet` normalises every file
of a sheet, maps the values back to the raw scale (inverse transform, then the
spillover re-applied) and writes new FCS files and a sample sheet pointing at them, so
that ``flowtools gate`` runs on them as on any file. :func:`normalize_sample` is that step for
one file (``apply_sheet`` writes what it returns; ``run_plate(normalize=MODEL)`` gates it
without writing, so the two never differ). Models are JSON files with
provenance (:meth:`CytoNorm.save`, :meth:`CytoNorm.load`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flowtools.errors import NormalizationError

__all__ = [
    "MAD_FLAG",
    "ApplyResult",
    "CytoNorm",
    "FitResult",
    "apply_sheet",
    "batch_emd",
    "cluster_cv",
    "drift_table",
    "fit_sheet",
    "NormalizedSample",
    "mad_change",
    "model_template",
    "normalize_sample",
    "read_transformed",
]

#: CytoNorm 2.0's flag: a relative change of a marker's MAD within a batch above this.
MAD_FLAG = 0.25
_MODES = ("cluster", "global", "identity")
_FORMAT = "flowtools-cytonorm/1"
_EMD_MAX_EVENTS = 20_000  # per batch; EMD of two 20k samples is stable to ~1% of a marker's sd
_EMD_QUANTILES = 2000
_TABLE = 1025  # points of a spline's table


def _quantiles(x: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Column quantiles, shape (len(probs), n_columns): numpy's default (linear) rule, one sort per column.

    ``np.quantile`` partitions once per probability; with 100-2,000 probabilities one sort is faster.
    """
    xs = np.sort(np.asarray(x, dtype=np.float64), axis=0)
    pos = probs * (xs.shape[0] - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, xs.shape[0] - 1)
    frac = (pos - lo)[:, None]
    return xs[lo] * (1.0 - frac) + xs[hi] * frac


def _pchip(x: np.ndarray, y: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Monotone cubic (PCHIP, Fritsch-Butland slopes) through ``(x, y)`` at ``v`` within ``[x0, xn]``.

    The same curve as :class:`scipy.interpolate.PchipInterpolator` (a test checks), without its
    per-object overhead: a model builds hundreds of these.
    """
    h = np.diff(x)
    m = np.diff(y) / h
    d = np.zeros_like(y)
    if x.size == 2:
        d[:] = m[0]
    else:
        w1, w2 = 2 * h[1:] + h[:-1], h[1:] + 2 * h[:-1]
        same = (m[:-1] * m[1:]) > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            inner = (w1 + w2) / (w1 / m[:-1] + w2 / m[1:])
        d[1:-1] = np.where(same, inner, 0.0)
        for end, (h0, h1, m0, m1) in ((0, (h[0], h[1], m[0], m[1])), (-1, (h[-1], h[-2], m[-1], m[-2]))):
            e = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
            if np.sign(e) != np.sign(m0):
                e = 0.0
            elif np.sign(m0) != np.sign(m1) and abs(e) > abs(3 * m0):
                e = 3 * m0
            d[end] = e
    k = np.clip(np.searchsorted(x, v, side="right") - 1, 0, x.size - 2)
    t = (v - x[k]) / h[k]
    t2, t3 = t * t, t * t * t
    return ((2 * t3 - 3 * t2 + 1) * y[k] + (t3 - 2 * t2 + t) * h[k] * d[k]
            + (-2 * t3 + 3 * t2) * y[k + 1] + (t3 - t2) * h[k] * d[k + 1])


def _probs(quantiles: int | Sequence[float]) -> np.ndarray:
    if isinstance(quantiles, int | np.integer) and not isinstance(quantiles, bool):
        if quantiles < 3:
            msg = f"quantiles must be at least 3, not {quantiles}"
            raise ValueError(msg)
        return np.linspace(0.001, 0.999, int(quantiles))
    p = np.asarray(quantiles, dtype=np.float64)
    if p.ndim != 1 or p.size < 3 or np.any(np.diff(p) <= 0) or p[0] < 0 or p[-1] > 1:
        msg = "quantiles must be an int >= 3 or at least 3 increasing probabilities in [0, 1]"
        raise ValueError(msg)
    return p


# --------------------------------------------------------------------------------------------- splines


@dataclass
class _Spline:
    """A monotone map from a batch's quantiles ``x`` to the goal quantiles ``y``, tamed outside them."""

    x: np.ndarray
    y: np.ndarray
    lo: float  # output bound
    hi: float
    max_slope: float
    _fn: Any = field(default=None, repr=False, compare=False)  # the PCHIP's table, built on first use

    @classmethod
    def build(cls, xq: np.ndarray, yq: np.ndarray, *, limit: float, max_slope: float) -> _Spline:
        xq = np.asarray(xq, dtype=np.float64)
        yq = np.maximum.accumulate(np.asarray(yq, dtype=np.float64))  # goal quantiles: non-decreasing
        # Ties in the batch's quantiles (a pile of equal values): one knot, its goal values averaged.
        xu, start = np.unique(xq, return_index=True)
        yu = np.add.reduceat(yq, start) / np.diff(np.append(start, xq.size))
        span = float(yq[-1] - yq[0])
        span = span if span > 0 else 1.0
        return cls(xu, yu, float(yq[0] - limit * span), float(yq[-1] + limit * span), float(max_slope))

    def _end_slopes(self) -> tuple[float, float]:
        x, y = self.x, self.y
        k = max(1, (x.size - 1) // 10)  # secant over the outer tenth: robust to one noisy quantile
        lo = (y[k] - y[0]) / (x[k] - x[0])
        hi = (y[-1] - y[-1 - k]) / (x[-1] - x[-1 - k])
        clip = (1.0 / self.max_slope, self.max_slope)
        return float(np.clip(lo, *clip)), float(np.clip(hi, *clip))

    def table(self) -> tuple[float, float, float, float, float, np.ndarray]:
        """``(x0, xn, inv, slope_lo, slope_hi, values)``: the PCHIP tabulated on a uniform grid.

        Linear interpolation of the table is monotone too and within ~1e-6 of the cubic
        (1,025 points); the numba kernel and :meth:`__call__` both evaluate it.
        """
        if self._fn is None:
            x, y = self.x, self.y
            if x.size == 1:  # a single distinct value: a shift
                self._fn = (float(x[0]), float(x[0]), 0.0, 1.0, 1.0, np.full(_TABLE, float(y[0])))
            else:
                gx = np.linspace(x[0], x[-1], _TABLE)
                gy = np.maximum.accumulate(_pchip(x, y, gx))
                s_lo, s_hi = self._end_slopes()
                self._fn = (float(x[0]), float(x[-1]), (_TABLE - 1) / float(x[-1] - x[0]), s_lo, s_hi, gy)
        return self._fn

    def __call__(self, v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64)
        x0, xn, inv, s_lo, s_hi, gy = self.table()
        t = np.nan_to_num((v - x0) * inv, nan=0.0)
        k = np.clip(t.astype(np.int64), 0, gy.size - 2)
        out = gy[k] + (t - k) * (gy[k + 1] - gy[k])
        out = np.where(v < x0, gy[0] + s_lo * (v - x0), out)
        out = np.where(v > xn, gy[-1] + s_hi * (v - xn), out)
        out = np.clip(out, self.lo, self.hi)
        return np.where(np.isnan(v), v, out)


# ------------------------------------------------------------------------------------------- estimator


class CytoNorm:
    """CytoNorm-class batch normalisation learnt from anchor samples.

    Parameters
    ----------
    n_clusters : int, default 5
        FlowSOM metaclusters of the pooled anchors (``mode="cluster"``).
    quantiles : int or sequence of float, default 101
        Quantile probabilities the splines run through: an int ``n`` gives
        ``n`` evenly spaced probabilities from 0.001 to 0.999.
    goal : str, default "mean"
        ``"mean"``: the mean of the batches' quantiles; or a batch's name: that batch
        is the reference and is left (nearly) unchanged.
    mode : {"cluster", "global", "identity"}, default "cluster"
    limit : float, default 0.5
        Outputs are clipped to the goal quantiles' range widened by ``limit`` times
        that range at each end.
    max_slope : float, default 4.0
        The linear extension beyond the anchors' quantiles has the end slope held in
        ``[1 / max_slope, max_slope]``.
    min_cluster_events : int, default 100
        A cluster with fewer anchor events in a batch uses the batch's global spline.
    xdim, ydim, rlen, n_resamples : int
        FlowSOM grid, training passes and consensus resamples.
    max_cluster_events : int, default 50_000
        Anchor events per batch used to train the SOM (a seeded subsample; the
        quantiles use every event).
    cv_limit : float, default 0.5
        A cluster whose share of the anchor events has a CV across batches above this is
        reported unstable.
    prealign : bool, default True
        Cluster (and assign events to clusters) on values first put through the global
        per-marker splines. CytoNorm clusters the raw values, so a batch shift larger than a
        population's spread sends one population of two batches to different clusters (the
        "split populations" its users see, and a high cluster CV); pre-aligned, the clusters
        are the same cells in every batch. The per-cluster splines still map the raw values.
    soft : float, default 4.0
        Soft cluster membership: an event goes through the weighted mean of the cluster
        splines, the weights a Gaussian kernel of its distance to the SOM nodes with variance
        ``soft`` x the anchors' median squared distance to their nearest node. 0: hard
        assignment, as CytoNorm, where an event on a cluster boundary jumps from one
        spline to another and a population that straddles it is split. Measured
        (``benchmarks/bench_normalize.py``): on a synthetic 4-plate flow cohort hard
        assignment moved gated CD4 T-cell % by 1.1 points and CD4+CD8+ F1 from 1.0 to 0.25,
        ``soft=4`` kept them at the no-batch-effect level (0.07 points, F1 0.98); on the
        37-channel CyTOF example (1000 events a file) the wider the kernel the smaller the
        mean EMD reduction (0.17 hard, 0.09 at 4): in many dimensions the kernel blends
        splines learnt on other populations. A trade-off, not a free gain.
    random_state : int, default 0

    Attributes
    ----------
    batches_ : list of str
    markers_ : list of str
    probs_ : ndarray
    codes_ : ndarray of float64, shape (n_nodes, n_markers) or None
        SOM node codes (``mode="cluster"``).
    sigma2_ : float
        Kernel variance of the soft membership (0: hard).
    node_cluster_ : ndarray of int64 or None
        Metacluster of every node.
    n_clusters_ : int
        Clusters actually used (1 in global mode).
    quantiles_ : ndarray, shape (n_batches, n_clusters_, n_markers, n_probs)
        The anchors' quantiles (NaN where a cluster fell back).
    global_quantiles_ : ndarray, shape (n_batches, n_markers, n_probs)
    goal_ : ndarray, shape (n_clusters_, n_markers, n_probs)
        Goal quantiles (NaN rows: the cluster uses the global splines).
    global_goal_ : ndarray, shape (n_markers, n_probs)
    fallbacks_ : list of dict
        ``{"batch", "cluster", "n_events"}`` per cluster and batch that used the global spline.
    cluster_cv_ : dict
        Output of :func:`cluster_cv` on the anchors (shares per batch, CV, unstable clusters).
    n_events_ : dict of str to int
        Anchor events per batch.
    """

    def __init__(
        self,
        *,
        n_clusters: int = 5,
        quantiles: int | Sequence[float] = 101,
        goal: str = "mean",
        mode: str = "cluster",
        limit: float = 0.5,
        max_slope: float = 4.0,
        min_cluster_events: int = 100,
        xdim: int = 6,
        ydim: int = 6,
        rlen: int = 10,
        n_resamples: int = 20,
        max_cluster_events: int = 50_000,
        cv_limit: float = 0.5,
        prealign: bool = True,
        soft: float = 4.0,
        random_state: int = 0,
    ) -> None:
        self.n_clusters = n_clusters
        self.quantiles = quantiles
        self.goal = goal
        self.mode = mode
        self.limit = limit
        self.max_slope = max_slope
        self.min_cluster_events = min_cluster_events
        self.xdim = xdim
        self.ydim = ydim
        self.rlen = rlen
        self.n_resamples = n_resamples
        self.max_cluster_events = max_cluster_events
        self.cv_limit = cv_limit
        self.prealign = prealign
        self.soft = soft
        self.random_state = random_state

    # ------------------------------------------------------------------ parameters
    def get_params(self) -> dict[str, Any]:
        """The constructor parameters, JSON-ready."""
        q = self.quantiles
        return {
            "n_clusters": int(self.n_clusters),
            "quantiles": int(q) if isinstance(q, int | np.integer) else [float(v) for v in q],
            "goal": str(self.goal), "mode": str(self.mode), "limit": float(self.limit),
            "max_slope": float(self.max_slope), "min_cluster_events": int(self.min_cluster_events),
            "xdim": int(self.xdim), "ydim": int(self.ydim), "rlen": int(self.rlen),
            "n_resamples": int(self.n_resamples), "max_cluster_events": int(self.max_cluster_events),
            "cv_limit": float(self.cv_limit), "prealign": bool(self.prealign), "soft": float(self.soft),
            "random_state": int(self.random_state),
        }

    def _validate(self, batches: list[str]) -> None:
        if self.mode not in _MODES:
            msg = f"mode must be one of {list(_MODES)}, not {self.mode!r}"
            raise ValueError(msg)
        if not np.isfinite(self.limit) or self.limit < 0:
            msg = f"limit must be a non-negative number, not {self.limit!r}"
            raise ValueError(msg)
        if not self.max_slope >= 1:
            msg = f"max_slope must be at least 1, not {self.max_slope!r}"
            raise ValueError(msg)
        if self.goal != "mean" and self.goal not in batches:
            msg = f"goal batch {self.goal!r} has no anchors; the batches are {batches}"
            raise NormalizationError(msg)

    # ------------------------------------------------------------------ fit
    def fit(self, anchors: Mapping[str, Sequence[np.ndarray]], markers: Sequence[str]) -> CytoNorm:
        """Learn the splines from the anchors of every batch.

        Parameters
        ----------
        anchors : mapping of str to sequence of ndarray
            Batch -> its anchor samples, each an (n_events, n_markers) array of
            transformed values (columns in ``markers`` order).
        markers : sequence of str
            Marker names of the columns.

        Returns
        -------
        CytoNorm
            ``self``.

        Raises
        ------
        NormalizationError
            No batches, a batch without anchor events, an array with the wrong number
            of columns or non-finite values, a goal batch without anchors.
        """
        markers = [str(m) for m in markers]
        batches = [str(b) for b in anchors]
        if not batches:
            msg = "no batches: give the anchor samples of at least one batch"
            raise NormalizationError(msg)
        self._validate(batches)
        probs = _probs(self.quantiles)
        data: dict[str, np.ndarray] = {}
        for b in batches:
            arrays = list(anchors[b])
            for i, a in enumerate(arrays):
                a = np.asarray(a)
                if a.ndim != 2 or a.shape[1] != len(markers):
                    msg = (f"batch {b!r}: anchor {i + 1} has shape {a.shape}, expected "
                           f"(n_events, {len(markers)}) for markers {markers}")
                    raise NormalizationError(msg)
                bad = ~np.all(np.isfinite(a), axis=0)
                if bad.any():
                    msg = (f"batch {b!r}: anchor {i + 1} has NaN or infinite values in marker(s) "
                           f"{[m for m, x in zip(markers, bad, strict=True) if x]}")
                    raise NormalizationError(msg)
            x = (np.concatenate([np.asarray(a, dtype=np.float64) for a in arrays]) if arrays
                 else np.empty((0, len(markers))))
            if x.shape[0] == 0:
                msg = f"batch {b!r} has no anchor events"
                raise NormalizationError(msg)
            data[b] = x
        self.batches_, self.markers_, self.probs_ = batches, markers, probs
        self.n_events_ = {b: int(x.shape[0]) for b in batches}
        nb, nm, nq = len(batches), len(markers), probs.size
        self.codes_ = self.node_cluster_ = None
        self.sigma2_ = 0.0
        self.fallbacks_: list[dict[str, Any]] = []
        self.global_quantiles_ = np.stack([_quantiles(data[b], probs).T for b in batches])
        self.global_goal_ = self._goal(self.global_quantiles_)
        self._splines: dict[tuple[int, int, int], _Spline] = {}
        self._table_cache: dict[tuple[int, bool], tuple[np.ndarray, ...]] = {}
        if self.mode == "cluster":
            view = {b: self._view(data[b], i) for i, b in enumerate(batches)}
            self._fit_som(view)
            labels = {b: self._labels(view[b]) for b in batches}
            self.sigma2_ = float(self.soft) * self._nearest_d2(view) if self.soft > 0 else 0.0
            k = int(self.node_cluster_.max()) + 1
        else:
            labels = {b: np.zeros(data[b].shape[0], dtype=np.int64) for b in batches}
            k = 1
        self.n_clusters_ = k
        q = np.full((nb, k, nm, nq), np.nan)
        for i, b in enumerate(batches):
            for c in range(k):
                rows = labels[b] == c
                n = int(np.count_nonzero(rows))
                if self.mode != "cluster":
                    q[i, c] = self.global_quantiles_[i]
                elif n >= self.min_cluster_events:
                    q[i, c] = _quantiles(data[b][rows], probs).T
                else:
                    self.fallbacks_.append({"batch": b, "cluster": c, "n_events": n})
        self.quantiles_ = q
        self.goal_ = np.full((k, nm, nq), np.nan)
        for c in range(k):
            ok = ~np.isnan(q[:, c, 0, 0])
            if self.goal == "mean" and ok.any():
                self.goal_[c] = q[ok, c].mean(axis=0)
            elif self.goal != "mean" and ok[batches.index(self.goal)]:
                self.goal_[c] = q[batches.index(self.goal), c]
        self.cluster_cv_ = cluster_cv(labels, k, cv_limit=self.cv_limit)
        self._splines, self._table_cache = {}, {}
        return self

    def _view(self, x: np.ndarray, i: int) -> np.ndarray:
        """The values clusters are found on: pre-aligned by the global splines, or as they are."""
        if not self.prealign:
            return x
        return self._apply(x, np.zeros(x.shape[0], dtype=np.int64), i, only_global=True)

    def _goal(self, q: np.ndarray) -> np.ndarray:
        return q.mean(axis=0) if self.goal == "mean" else q[self.batches_.index(self.goal)]

    def _fit_som(self, data: Mapping[str, np.ndarray]) -> None:
        from flowtools.analysis.som import FlowSOM

        rng = np.random.default_rng(self.random_state)
        parts = []
        for b in self.batches_:  # every batch the same weight in the clustering
            x = data[b]
            if x.shape[0] > self.max_cluster_events:
                x = x[np.sort(rng.choice(x.shape[0], self.max_cluster_events, replace=False))]
            parts.append(x)
        pooled = np.ascontiguousarray(np.concatenate(parts))
        n_nodes = self.xdim * self.ydim
        if pooled.shape[0] < n_nodes:
            msg = f"the anchors have {pooled.shape[0]} events, fewer than the {n_nodes} SOM nodes"
            raise NormalizationError(msg)
        fs = FlowSOM(n_clusters=min(self.n_clusters, n_nodes), xdim=self.xdim, ydim=self.ydim,
                     rlen=self.rlen, n_resamples=self.n_resamples, random_state=self.random_state).fit(pooled)
        self.codes_ = np.asarray(fs.codes_, dtype=np.float64)
        self.node_cluster_ = np.asarray(fs.node_metacluster_, dtype=np.int64)

    def _nearest_d2(self, view: Mapping[str, np.ndarray]) -> float:
        """Median squared distance of the anchors' events to their nearest SOM node."""
        from flowtools.analysis.som import _bmu

        d = np.concatenate([_bmu(np.ascontiguousarray(v), np.ascontiguousarray(self.codes_))[1]
                            for v in view.values()])
        return float(np.median(d)) if d.size else 0.0

    def _weights(self, v: np.ndarray) -> np.ndarray:
        """Soft cluster membership of every event, shape (n, n_clusters_); rows sum to 1."""
        codes = self.codes_
        c2 = np.einsum("ij,ij->i", codes, codes)
        onehot = np.zeros((codes.shape[0], self.n_clusters_))
        onehot[np.arange(codes.shape[0]), self.node_cluster_] = 1.0
        out = np.empty((v.shape[0], self.n_clusters_))
        for start in range(0, v.shape[0], 65536):  # chunks: events x nodes stays small
            x = v[start:start + 65536]
            d2 = np.maximum(np.einsum("ij,ij->i", x, x)[:, None] - 2 * x @ codes.T + c2[None, :], 0.0)
            w = np.exp(-(d2 - d2.min(axis=1, keepdims=True)) / (2 * self.sigma2_))
            w = w @ onehot
            out[start:start + 65536] = w / w.sum(axis=1, keepdims=True)
        return out

    def _labels(self, x: np.ndarray) -> np.ndarray:
        from flowtools.analysis.som import _bmu

        nodes, _ = _bmu(np.ascontiguousarray(x, dtype=np.float64), np.ascontiguousarray(self.codes_))
        return self.node_cluster_[nodes]

    def _tables(self, i: int, *, only_global: bool = False) -> tuple[np.ndarray, ...]:
        """Batch ``i``'s spline tables: slots 0..k-1 the clusters and slot k the global splines.

        ``only_global``: one slot, the global splines (all the pre-alignment needs; also before the
        clusters exist, during :meth:`fit`).
        """
        key = (i, only_global)
        cached = self._table_cache.get(key)
        if cached is not None:
            return cached
        slots = [-1] if only_global else [*range(self.n_clusters_), -1]
        nm = len(self.markers_)
        x0, xn, inv, slo, shi, blo, bhi = (np.empty((len(slots), nm)) for _ in range(7))
        tab = np.empty((len(slots), nm, _TABLE))
        for s, c in enumerate(slots):
            for m in range(nm):
                sp = self._spline(i, c, m)
                x0[s, m], xn[s, m], inv[s, m], slo[s, m], shi[s, m], tab[s, m] = sp.table()
                blo[s, m], bhi[s, m] = sp.lo, sp.hi
        out = (x0, xn, inv, slo, shi, blo, bhi, tab)
        self._table_cache[key] = out
        return out

    def _apply(self, x: np.ndarray, labels: np.ndarray, i: int, *, only_global: bool = False) -> np.ndarray:
        """Every row of ``x`` through the splines of its label's slot (see :meth:`_tables`)."""
        from flowtools.analysis._normalize_kernels import apply_tables

        x = np.ascontiguousarray(x, dtype=np.float64)
        out = np.empty_like(x)
        tables = self._tables(i, only_global=only_global)
        apply_tables(x, np.ascontiguousarray(labels, dtype=np.int64), *tables, out)
        return out

    def _check_fitted(self) -> None:
        if not hasattr(self, "batches_"):
            msg = "this CytoNorm model is not fitted; call fit() or load() first"
            raise NormalizationError(msg)

    def _spline(self, i: int, c: int, m: int) -> _Spline:
        key = (i, c, m)
        sp = self._splines.get(key)
        if sp is None:
            if c < 0:  # the batch's global spline
                xq, yq = self.global_quantiles_[i, m], self.global_goal_[m]
            else:
                xq, yq = self.quantiles_[i, c, m], self.goal_[c, m]
            if np.isnan(xq[0]) or np.isnan(yq[0]):  # this cluster fell back: the batch's global spline
                xq, yq = self.global_quantiles_[i, m], self.global_goal_[m]
            sp = self._splines[key] = _Spline.build(xq, yq, limit=self.limit, max_slope=self.max_slope)
        return sp

    # ------------------------------------------------------------------ transform
    def transform(self, events: np.ndarray, batch: str, *, where: str = "") -> np.ndarray:
        """Normalise one sample of a batch.

        Parameters
        ----------
        events : ndarray, shape (n_events, n_markers)
            Transformed values, columns in :attr:`markers_` order.
        batch : str
            The sample's batch (one the model was fitted on).
        where : str, optional
            The file, for error messages.

        Returns
        -------
        ndarray of float64, shape (n_events, n_markers)

        Raises
        ------
        NormalizationError
            The batch is not in the model, or the events have the wrong number of columns.
        """
        self._check_fitted()
        prefix = f"{where}: " if where else ""
        if batch not in self.batches_:
            msg = (f"{prefix}batch {batch!r} is not in the normalisation model (fitted on batches "
                   f"{self.batches_}); fit a model with an anchor of this batch")
            raise NormalizationError(msg)
        x = np.asarray(events, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.markers_):
            msg = (f"{prefix}expected (n_events, {len(self.markers_)}) values for markers {self.markers_}, "
                   f"got {x.shape}")
            raise NormalizationError(msg)
        if self.mode == "identity" or x.shape[0] == 0:
            return x.copy()
        i = self.batches_.index(batch)
        finite = np.all(np.isfinite(x), axis=1)
        labels = np.full(x.shape[0], -1, dtype=np.int64)  # an event with a NaN is left as it is
        if self.mode == "cluster" and self.sigma2_ > 0:
            from flowtools.analysis._normalize_kernels import apply_blend

            out = x.copy()
            xf = np.ascontiguousarray(x[finite])
            w = self._weights(self._view(xf, i))
            tables = self._tables(i)
            res = np.empty_like(xf)
            apply_blend(xf, np.ascontiguousarray(w), *(t[: self.n_clusters_] for t in tables), res)
            out[finite] = res
            return out
        if self.mode == "cluster":
            labels[finite] = self._labels(self._view(x[finite], i))
        else:
            labels[finite] = 0
        return self._apply(x, labels, i)

    def predict_clusters(self, events: np.ndarray, batch: str) -> np.ndarray:
        """Cluster of every event of a batch (all 0 outside cluster mode)."""
        self._check_fitted()
        x = np.asarray(events, dtype=np.float64)
        if self.mode != "cluster":
            return np.zeros(x.shape[0], dtype=np.int64)
        if batch not in self.batches_:
            msg = f"batch {batch!r} is not in the normalisation model (fitted on batches {self.batches_})"
            raise NormalizationError(msg)
        return self._labels(self._view(x, self.batches_.index(batch)))

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        """The fitted model as JSON-ready data."""
        self._check_fitted()

        def arr(a: np.ndarray | None) -> Any:
            if a is None:
                return None
            return np.where(np.isnan(a), None, np.round(a, 10)).tolist()  # NaN -> null (valid JSON)

        return {
            "format": _FORMAT, "params": self.get_params(), "batches": self.batches_,
            "markers": self.markers_,
            "probs": self.probs_.tolist(), "n_clusters": self.n_clusters_, "n_events": self.n_events_,
            "sigma2": float(self.sigma2_), "codes": arr(self.codes_),
            "node_cluster": None if self.node_cluster_ is None else self.node_cluster_.tolist(),
            "quantiles": arr(self.quantiles_), "global_quantiles": arr(self.global_quantiles_),
            "goal": arr(self.goal_), "global_goal": arr(self.global_goal_),
            "fallbacks": self.fallbacks_, "cluster_cv": self.cluster_cv_,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, where: str = "model") -> CytoNorm:
        """Rebuild a fitted model from :meth:`to_dict` data."""
        if d.get("format") != _FORMAT:
            msg = (f"{where}: not a flowtools normalisation model (format {d.get('format')!r}, "
                   f"expected {_FORMAT!r})")
            raise NormalizationError(msg)
        try:
            self = cls(**d["params"])

            def arr(v: Any) -> np.ndarray:
                return np.array(v, dtype=np.float64)  # null -> nan

            self.batches_, self.markers_ = list(d["batches"]), list(d["markers"])
            self.probs_ = arr(d["probs"])
            self.n_clusters_ = int(d["n_clusters"])
            self.n_events_ = dict(d["n_events"])
            self.codes_ = None if d["codes"] is None else arr(d["codes"])
            self.sigma2_ = float(d.get("sigma2", 0.0))
            nc = d["node_cluster"]
            self.node_cluster_ = None if nc is None else np.array(nc, dtype=np.int64)
            self.quantiles_ = arr(d["quantiles"])
            self.global_quantiles_ = arr(d["global_quantiles"])
            self.goal_ = arr(d["goal"])
            self.global_goal_ = arr(d["global_goal"])
            self.fallbacks_ = list(d["fallbacks"])
            self.cluster_cv_ = dict(d["cluster_cv"])
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"{where}: the normalisation model is incomplete or malformed ({exc!r})"
            raise NormalizationError(msg) from None
        nb, nm = len(self.batches_), len(self.markers_)
        if self.quantiles_.shape != (nb, self.n_clusters_, nm, self.probs_.size):
            msg = f"{where}: the model's quantile table does not match its batches and markers"
            raise NormalizationError(msg)
        self._splines, self._table_cache = {}, {}
        return self

    def save(self, path: str | os.PathLike[str], *, provenance: Mapping[str, Any] | None = None) -> Path:
        """Write the model as JSON (atomically), with a provenance record.

        Parameters
        ----------
        path : str or PathLike
        provenance : mapping, optional
            Stored under ``"provenance"`` (anchors' hashes, template, command...).

        Returns
        -------
        pathlib.Path
        """
        from flowtools.provenance import atomic_write_text

        doc = {**self.to_dict(), "provenance": dict(provenance or {})}
        atomic_write_text(path, json.dumps(doc, indent=1, allow_nan=False) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CytoNorm:
        """Read a model written by :meth:`save`; ``model.provenance_`` holds its provenance record."""
        p = Path(path)
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            msg = f"{p}: normalisation model not found"
            raise NormalizationError(msg) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            msg = f"{p}: cannot read the normalisation model: {exc}"
            raise NormalizationError(msg) from None
        if not isinstance(doc, dict):
            msg = f"{p}: not a flowtools normalisation model"
            raise NormalizationError(msg)
        model = cls.from_dict(doc, where=str(p))
        model.provenance_ = dict(doc.get("provenance") or {})
        return model


# ------------------------------------------------------------------------------------------ validation


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
    if x.shape[0] <= n:
        return x
    return x[np.sort(np.random.default_rng(seed).choice(x.shape[0], n, replace=False))]


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
    xs = {b: _subsample(np.asarray(samples[b], dtype=np.float64), max_events) for b in batches}
    probs = (np.arange(_EMD_QUANTILES) + 0.5) / _EMD_QUANTILES
    qs = {b: _quantiles(x, probs) for b, x in xs.items() if x.shape[0]}
    out: dict[str, Any] = {}
    for j, m in enumerate(markers):
        best = 0.0
        for a in range(len(batches)):
            for b in range(a + 1, len(batches)):
                if batches[a] in qs and batches[b] in qs:
                    d = float(np.mean(np.abs(qs[batches[a]][:, j] - qs[batches[b]][:, j])))
                    best = max(best, d)
        out[str(m)] = best
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
    xt = np.ascontiguousarray(np.asarray(x, dtype=np.float64).T)  # one marker per contiguous row: faster
    med = np.median(xt, axis=1)
    return np.median(np.abs(xt - med[:, None]), axis=1)


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
        mb, ma = _mad(np.asarray(before[b], dtype=np.float64)), _mad(np.asarray(after[b], dtype=np.float64))
        for j, m in enumerate(markers):
            out[str(m)][b] = float((ma[j] - mb[j]) / mb[j]) if mb[j] > 0 else 0.0
    return out


def drift_table(
    before: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray], markers: Sequence[str],
    *, flag: float = MAD_FLAG,
) -> list[dict[str, Any]]:
    """Per marker: EMD between batches before and after, the reduction, the largest MAD change and the flag.

    Returns
    -------
    list of dict
        ``marker, emd_before, emd_after, emd_reduction`` (share of the EMD removed; negative:
        made worse), ``mad_change`` (largest absolute, signed), ``mad_batch``, ``flagged``
        (``|mad_change| > flag`` or EMD made worse by more than 5%).
    """
    eb, ea = batch_emd(before, markers), batch_emd(after, markers)
    mc = mad_change(before, after, markers, flag=flag)
    rows = []
    for m in markers:
        per = mc[str(m)]
        worst = max(per, key=lambda b: abs(per[b])) if per else ""
        change = per.get(worst, 0.0)
        red = 1.0 - ea[m] / eb[m] if eb[m] > 0 else 0.0
        rows.append({"marker": str(m), "emd_before": round(eb[m], 6), "emd_after": round(ea[m], 6),
                     "emd_reduction": round(red, 4), "mad_change": round(change, 4), "mad_batch": worst,
                     "flagged": bool(abs(change) > flag or red < -0.05)})
    return rows


# ----------------------------------------------------------------------------------------- file level


@dataclass
class _Read:
    """One file read, compensated and transformed as a template says."""

    sample: Any
    resolved: Any
    x: np.ndarray
    pnn: list[str]


def _check_template(template: Any) -> None:
    """Refuse a template whose transforms are estimated per file (no common scale across batches)."""
    bad = [k for k, ts in template.transforms.items() if ts.params == "estimate"]
    if bad:
        msg = (f"template {template.name!r} ({template.source}) estimates its transform per file for {bad}; "
               "normalisation needs one scale for every file: give fixed transform parameters")
        raise NormalizationError(msg)


def read_transformed(
    file: str | os.PathLike[str], template: Any, markers: Sequence[str] | None, *, batch: str = "",
) -> _Read:
    """Read an FCS file; return its markers' values compensated and transformed as ``template`` says.

    Parameters
    ----------
    file : path
    template : flowtools.gating.templates.Template
    markers : sequence of str or None
        Markers (``$PnS``) or channels; None: the file's fluorescence parameters.
    batch : str
        For error messages.

    Returns
    -------
    _Read
        ``sample`` (the FCSSample), ``resolved`` (its :class:`ResolvedSample`), ``x``
        (n_events, n_markers) and ``pnn`` (the channel of every marker).

    Raises
    ------
    NormalizationError
        The file cannot be read, compensated or transformed, or lacks a marker (named).
    """
    import dataclasses

    from flowtools.errors import FlowtoolsError
    from flowtools.gating.templates import resolve
    from flowtools.io.fcs import read_fcs

    where = f"batch {batch!r}, file {file}" if batch else f"file {file}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a repaired file is still normalised; gating reports it
            sample = read_fcs(file)
            (res,) = resolve(dataclasses.replace(template, populations=()), [sample],
                             sample_ids=[Path(file).name])
    except (FlowtoolsError, OSError) as exc:
        msg = f"{where}: cannot be read for normalisation: {exc}"
        raise NormalizationError(msg) from None
    if res.error is not None:
        msg = f"{where}: {res.error}"
        raise NormalizationError(msg)
    if markers is None:
        fl = [c for c in sample.channels if res.kind(c.pnn) == "fluorescence"]
        named = [c for c in fl if c.pns]
        markers = [c.pns for c in named] if named else [c.pnn for c in fl]
    pnn: list[str] = []
    missing = []
    for m in markers:
        try:
            pnn.append(sample.channels[sample.channel_index(m)].pnn)
        except KeyError:
            missing.append(m)
    if missing:
        msg = (f"{where}: marker{'s' if len(missing) > 1 else ''} {missing} absent (its markers are "
               f"{[c.pns for c in sample.channels if c.pns]}, its channels {sample.pnn})")
        raise NormalizationError(msg)
    x = np.column_stack([res.values(m) for m in markers]) if markers else np.empty((sample.n_events, 0))
    return _Read(sample, res, np.asarray(x, dtype=np.float64), pnn)


@dataclass
class FitResult:
    """What :func:`fit_sheet` did.

    Attributes
    ----------
    model : CytoNorm
    path : pathlib.Path
        The model file written.
    anchors : dict of str to list of str
        Batch -> its anchors' sample IDs.
    markers : list of str
    seconds : float
    """

    model: CytoNorm
    path: Path
    anchors: dict[str, list[str]]
    markers: list[str]
    seconds: float

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (for ``--json``)."""
        m = self.model
        return {"model": str(self.path), "mode": m.mode, "goal": m.goal, "batches": m.batches_,
                "markers": self.markers, "anchors": self.anchors, "n_clusters": m.n_clusters_,
                "fallbacks": m.fallbacks_, "unstable_clusters": m.cluster_cv_["unstable"],
                "cluster_cv": m.cluster_cv_["cv"], "seconds": round(self.seconds, 3)}


def _template(template: Any) -> Any:
    from flowtools.gating.templates import Template, load_template

    return template if isinstance(template, Template) else load_template(template)


def fit_sheet(
    sheet: str | os.PathLike[str],
    template: Any,
    out: str | os.PathLike[str],
    *,
    markers: Sequence[str] | None = None,
    min_events: int = 1000,
    holdout: Sequence[str] = (),
    command: str | None = None,
    **params: Any,
) -> FitResult:
    """Fit a :class:`CytoNorm` model on the anchors of a sample sheet and write it.

    Parameters
    ----------
    sheet : path
        Sample sheet with ``anchor`` (and optionally ``batch``) columns.
    template : path or Template
        Names the compensation and transforms (and the tube: only its rows are used).
    out : path
        The model file (JSON) to write.
    markers : sequence of str, optional
        Markers to normalise; default every fluorescence marker of the first anchor.
    min_events : int, default 1000
        Fewest events an anchor may have.
    holdout : sequence of str
        Sample IDs of anchors left out of the fit (for validation).
    command : str, optional
        Recorded in the provenance.
    **params
        :class:`CytoNorm` parameters (``mode``, ``goal``, ``n_clusters``...).

    Returns
    -------
    FitResult

    Raises
    ------
    NormalizationError
        A batch without an anchor, an anchor with too few events or without a marker
        (batch, file and marker named); nothing is written then.
    """
    from flowtools.io.sample_sheet import check_anchors, read_sample_sheet
    from flowtools.provenance import file_sha256, provenance_record

    t0 = time.perf_counter()
    t = _template(template)
    _check_template(t)
    sh = read_sample_sheet(sheet, tubes=None)
    tube = t.tube if t.tube and any(r.tube == t.tube for r in sh.rows) else None
    found = check_anchors(sh, tube=tube)
    held = set(holdout)
    anchors: dict[str, list[np.ndarray]] = {}
    used: dict[str, list[str]] = {}
    inputs: dict[str, str] = {}
    for b, rows in found.items():
        rows = [r for r in rows if r.sample_id not in held]
        if not rows:
            msg = f"{sh.path}: batch {b!r} has no anchor left once the held-out anchors are set aside"
            raise NormalizationError(msg)
        for r in rows:
            rd = read_transformed(r.file, t, markers, batch=b)
            if markers is None:
                markers = [r_ for r_ in _marker_names(rd)]
            if rd.x.shape[0] < min_events:
                msg = (f"batch {b!r}, anchor {r.sample_id} ({r.file}): {rd.x.shape[0]} events, fewer than "
                       f"the {min_events} an anchor needs (min_events)")
                raise NormalizationError(msg)
            anchors.setdefault(b, []).append(rd.x)
            used.setdefault(b, []).append(r.sample_id)
            inputs[r.sample_id] = str(r.file)
    model = CytoNorm(**params).fit(anchors, list(markers or []))
    prov = provenance_record(
        inputs=inputs, parameters={**model.get_params(), "markers": list(model.markers_),
                                   "min_events": int(min_events), "holdout": sorted(held)},
        template=t.source if t.source and Path(t.source).is_file() else None,
        seed=int(model.random_state), command=command)
    prov["sample_sheet"] = {"path": str(Path(sheet)), "sha256": file_sha256(sheet)}
    prov["anchors"] = {b: [{"sample_id": s, "file": Path(inputs[s]).name, "sha256": prov["inputs"][s]}
                           for s in ids] for b, ids in used.items()}
    prov["template_info"] = {"name": t.name, "tube": t.tube, "source": str(t.source), "sha256": t.sha256,
                             "compensation": t.compensation}
    path = model.save(out, provenance=prov)
    model.provenance_ = prov
    return FitResult(model, path, used, list(model.markers_), time.perf_counter() - t0)


def _marker_names(rd: _Read) -> list[str]:
    s = rd.sample
    names = []
    for p in rd.pnn:
        ch = s.channels[s.channel_index(p)]
        names.append(ch.pns or ch.pnn)
    return names


@dataclass
class ApplyResult:
    """What :func:`apply_sheet` wrote.

    Attributes
    ----------
    out_dir : pathlib.Path
    samples_csv : pathlib.Path
        The new sample sheet (pointing at the normalised files).
    files : list of pathlib.Path
    drift : list of dict
        :func:`drift_table` over every normalised file (pooled per batch).
    drift_anchors : list of dict
        The same over the anchors only (includes held-out anchors).
    drift_others : list of dict
        The same over the non-anchor files (which the fit never saw).
    before, after : dict of str to ndarray
        Per batch, a subsample of the values before and after (for the batch QC report).
    medians : list of dict
        Per file and marker: median before and after (for Levey-Jennings charts and outliers).
    seconds : float
    """

    out_dir: Path
    samples_csv: Path
    files: list[Path]
    drift: list[dict[str, Any]]
    drift_anchors: list[dict[str, Any]]
    before: dict[str, np.ndarray] = field(repr=False)
    after: dict[str, np.ndarray] = field(repr=False)
    medians: list[dict[str, Any]] = field(repr=False)
    seconds: float = 0.0
    drift_others: list[dict[str, Any]] = field(default_factory=list)

    @property
    def flagged_markers(self) -> list[str]:
        """Markers flagged in any drift table (all files, anchors, non-anchor files)."""
        rows = [*self.drift, *self.drift_anchors, *self.drift_others]
        return sorted({r["marker"] for r in rows if r["flagged"]})

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (for ``--json``)."""
        return {"out_dir": str(self.out_dir), "samples_csv": str(self.samples_csv), "files": len(self.files),
                "drift": self.drift, "drift_anchors": self.drift_anchors, "drift_others": self.drift_others,
                "flagged_markers": self.flagged_markers,
                "seconds": round(self.seconds, 3)}


_KEEP_KEYWORDS = ("$CYT", "$CYTSN", "$DATE", "$BTIM", "$ETIM", "$TIMESTEP")  # never free text ($SRC, $OP...)


def apply_sheet(
    sheet: str | os.PathLike[str],
    model: str | os.PathLike[str] | CytoNorm,
    out_dir: str | os.PathLike[str],
    *,
    template: Any = None,
    keep_events: int = 5000,
    command: str | None = None,
) -> ApplyResult:
    """Normalise every file of a sample sheet and write the files and a new sheet.

    Each file is compensated and transformed as the model's template says, normalised,
    mapped back to the raw scale (inverse transform, spillover re-applied) and written
    as FCS 3.1 under ``out_dir/fcs/``; ``out_dir/samples.csv`` is the input sheet
    pointing at them, and ``out_dir/normalize.json`` the provenance. Everything is
    first written to a temporary folder beside ``out_dir`` and moved in place only
    once all files are done, so a failure leaves nothing half-written.

    Parameters
    ----------
    sheet : path
    model : path or CytoNorm
        A model written by :func:`fit_sheet` (or :meth:`CytoNorm.save`).
    out_dir : path
        Created; files of the same names are replaced.
    template : path or Template, optional
        Default: the template recorded in the model (its hash must match).
    keep_events : int, default 5000
        Events per file kept for the returned before/after values.
    command : str, optional

    Returns
    -------
    ApplyResult

    Raises
    ------
    NormalizationError
        A row's batch is not in the model, a file lacks a marker of the model, the
        template is not the one the model was fitted with.
    """
    from flowtools.io.sample_sheet import SampleSheetRow, read_sample_sheet, write_sample_sheet
    from flowtools.provenance import atomic_write_text, file_sha256, provenance_record, safe_name

    t0 = time.perf_counter()
    model_path = None
    if not isinstance(model, CytoNorm):
        model_path = Path(model)
        model = CytoNorm.load(model_path)
    prov = getattr(model, "provenance_", {}) or {}
    t = model_template(model, template)
    sh = read_sample_sheet(sheet, tubes=None)
    rows = [r for r in sh.rows if not t.tube or r.tube == t.tube] or list(sh.rows)
    unknown = sorted({r.batch for r in rows} - set(model.batches_))
    if unknown:
        files = [str(r.file) for r in rows if r.batch in unknown][:5]
        msg = (f"{sh.path}: batch{'es' if len(unknown) > 1 else ''} {unknown} not in the normalisation model "
               f"(fitted on {model.batches_}; e.g. files {files}); fit a model with their anchors")
        raise NormalizationError(msg)

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    new_rows: list[SampleSheetRow] = []
    before: dict[str, list[np.ndarray]] = {}
    after: dict[str, list[np.ndarray]] = {}
    anchors_b: dict[str, list[np.ndarray]] = {}
    anchors_a: dict[str, list[np.ndarray]] = {}
    others_b: dict[str, list[np.ndarray]] = {}
    others_a: dict[str, list[np.ndarray]] = {}
    medians: list[dict[str, Any]] = []
    names: list[str] = []
    try:
        (tmp / "fcs").mkdir()
        for r in rows:
            ns = normalize_sample(r.file, model, r.batch, template=t, checked=True)
            rd, y = ns.read, ns.after
            name = f"{safe_name(r.sample_id)}.fcs"
            names.append(name)
            ns.write(tmp / "fcs" / name)
            new_rows.append(SampleSheetRow(file=out / "fcs" / name, sample_id=r.sample_id,
                                           woman_id=r.woman_id, tube=r.tube, plate=r.plate, well=r.well,
                                           line=r.line, extra=r.extra))
            pick = np.random.default_rng([model.random_state, len(new_rows)]).permutation(rd.x.shape[0])
            keep = np.sort(pick[:keep_events])
            before.setdefault(r.batch, []).append(rd.x[keep])
            after.setdefault(r.batch, []).append(y[keep])
            if r.is_anchor:
                anchors_b.setdefault(r.batch, []).append(rd.x[keep])
                anchors_a.setdefault(r.batch, []).append(y[keep])
            else:
                others_b.setdefault(r.batch, []).append(rd.x[keep])
                others_a.setdefault(r.batch, []).append(y[keep])
            # median per marker: on the transposed (marker-contiguous) copy, several times faster
            mb = np.median(np.ascontiguousarray(rd.x.T), axis=1)
            ma = np.median(np.ascontiguousarray(y.T), axis=1)
            for j, m in enumerate(model.markers_):
                medians.append({"sample_id": r.sample_id, "batch": r.batch, "plate": r.plate,
                                "anchor": r.is_anchor, "marker": m, "median_before": float(mb[j]),
                                "median_after": float(ma[j])})
        write_sample_sheet(
            (SampleSheetRow(file=tmp / "fcs" / Path(x.file).name, sample_id=x.sample_id, woman_id=x.woman_id,
                            tube=x.tube, plate=x.plate, well=x.well, extra=x.extra) for x in new_rows),
            tmp / "samples.csv")
        bb = {b: np.concatenate(v) for b, v in before.items()}
        aa = {b: np.concatenate(v) for b, v in after.items()}
        drift = drift_table(bb, aa, model.markers_)
        drift_anchors = drift_table({b: np.concatenate(v) for b, v in anchors_b.items()},
                                    {b: np.concatenate(v) for b, v in anchors_a.items()},
                                    model.markers_) if len(anchors_b) > 1 else []
        drift_others = drift_table({b: np.concatenate(v) for b, v in others_b.items()},
                                   {b: np.concatenate(v) for b, v in others_a.items()},
                                   model.markers_) if len(others_b) > 1 else []
        record = provenance_record(
            inputs={r.sample_id: r.file for r in rows}, parameters={"markers": model.markers_,
                                                                     "mode": model.mode, "goal": model.goal},
            template=t.source if t.source and Path(t.source).is_file() else None,
            seed=int(model.random_state), command=command)
        record["model"] = ({"path": str(model_path), "sha256": file_sha256(model_path)}
                           if model_path is not None else None)
        record["model_provenance"] = {k: prov.get(k) for k in ("anchors", "template_info", "created")}
        record["sample_sheet"] = {"path": str(Path(sheet)), "sha256": file_sha256(sheet)}
        record["drift"] = drift
        record["drift_anchors"] = drift_anchors
        record["drift_others"] = drift_others
        atomic_write_text(tmp / "normalize.json", json.dumps(record, indent=1, allow_nan=False) + "\n")
        # All written: move in place (files first, the sheet that points at them last).
        (out / "fcs").mkdir(parents=True, exist_ok=True)
        for name in names:
            os.replace(tmp / "fcs" / name, out / "fcs" / name)
        os.replace(tmp / "normalize.json", out / "normalize.json")
        os.replace(tmp / "samples.csv", out / "samples.csv")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ApplyResult(out, out / "samples.csv", [out / "fcs" / n for n in names], drift, drift_anchors,
                       bb, aa, medians, time.perf_counter() - t0, drift_others)


def model_template(model: CytoNorm, template: Any = None) -> Any:
    """The template a model is applied with: ``template``, or the one its provenance names; checked.

    Parameters
    ----------
    model : CytoNorm
        A fitted model (its ``provenance_`` names the template it was fitted with).
    template : path or Template, optional
        Default: the template file recorded in the model.

    Returns
    -------
    flowtools.gating.templates.Template

    Raises
    ------
    NormalizationError
        No template given and the recorded one is not there; the template is not the one the
        model was fitted with (its SHA-256 differs); or it estimates its transforms per file.
    """
    info = (getattr(model, "provenance_", {}) or {}).get("template_info") or {}
    if template is None:
        src = info.get("source")
        if not src or not Path(src).is_file():
            msg = (f"the normalisation model does not name a template file that exists ({src!r}); "
                   "give the template (-t)")
            raise NormalizationError(msg)
        template = src
    t = _template(template)
    _check_template(t)
    if info.get("sha256") and info["sha256"] != t.sha256:
        msg = (f"template {t.source} is not the one the model was fitted with ({info.get('source')}, "
               f"sha256 {info['sha256'][:12]}...): the transformed scale would differ")
        raise NormalizationError(msg)
    return t


@dataclass
class NormalizedSample:
    """One file normalised for its batch (:func:`normalize_sample`).

    Attributes
    ----------
    read : _Read
        The file as read, compensated and transformed (``read.x``: the values before).
    after : ndarray, shape (n_events, n_markers)
        The normalised transformed values (columns: the model's markers).
    raw : ndarray, shape (n_events, n_channels)
        Every channel back on the file's raw (uncompensated, untransformed) scale.
    keywords : dict of str to str
        The TEXT keywords the normalised file carries (never free text).
    """

    read: _Read = field(repr=False)
    after: np.ndarray = field(repr=False)
    raw: np.ndarray = field(repr=False)
    keywords: dict[str, str]

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the normalised file (FCS 3.1, float32; atomically)."""
        from flowtools.io.fcs_write import write_fcs

        s = self.read.sample
        return write_fcs(path, self.raw, s.pnn, markers=[c.pns or None for c in s.channels],
                         ranges=[c.pnr or 262144.0 for c in s.channels], spillover=s.spillover,
                         keywords=self.keywords)

    def to_sample(self) -> Any:
        """The normalised file as :func:`~flowtools.io.fcs.read_fcs` reads it back, in memory.

        Written and read back (a temporary file), so that it is the sample of the file
        :func:`apply_sheet` writes to the last bit (float32 storage, keywords, scaling).
        """
        from flowtools.io.fcs import read_fcs

        with tempfile.TemporaryDirectory(prefix="flowtools-norm-") as d:
            data = self.write(Path(d) / "sample.fcs").read_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return read_fcs(data)


def normalize_sample(
    file: str | os.PathLike[str],
    model: CytoNorm,
    batch: str,
    *,
    template: Any = None,
    checked: bool = False,
) -> NormalizedSample:
    """Normalise one FCS file for its batch, as :func:`apply_sheet` does for each file of a sheet.

    The file is compensated and transformed as the model's template says, its markers go
    through the model's map for ``batch``, and every channel goes back to the raw scale
    (inverse transform, spillover re-applied). :func:`apply_sheet` writes
    :meth:`NormalizedSample.write`; a gate run (``run_plate(normalize=...)``) gates
    :meth:`NormalizedSample.to_sample`: the same function, so the two never differ.

    Parameters
    ----------
    file : path
    model : CytoNorm
        A fitted model.
    batch : str
        The file's batch (the sample sheet's ``batch``, by default its plate).
    template : path or Template, optional
        Default: the template recorded in the model (its hash must match).
    checked : bool, default False
        ``template`` is already :func:`model_template`'s (skip the check).

    Returns
    -------
    NormalizedSample

    Raises
    ------
    NormalizationError
        The batch is not in the model, the file lacks a marker of the model, the template is
        not the model's (batch, file and marker named).
    """
    t = template if checked else model_template(model, template)
    where = f"batch {batch!r}, file {file}"
    if batch not in model.batches_:
        msg = (f"{where}: batch {batch!r} is not in the normalisation model (fitted on batches "
               f"{model.batches_}); fit a model with an anchor of this batch")
        raise NormalizationError(msg)
    rd = read_transformed(file, t, model.markers_, batch=batch)
    y = model.transform(rd.x, batch, where=where)
    raw = _back_to_raw(rd, t, y)
    s = rd.sample
    kw = {k: s.keywords[k] for k in _KEEP_KEYWORDS if s.keywords.get(k)}
    kw["FLOWTOOLS NORMALIZED"] = f"CytoNorm {model.mode}, batch {batch}"
    return NormalizedSample(rd, y, raw, kw)


def _transform_of(t: Any, rd: _Read, marker: str, pnn: str) -> Any:
    kind = rd.resolved.kind(pnn)
    spec = t.transforms.get(marker) or t.transforms.get(pnn) or t.transforms.get(kind)
    return None if spec is None or spec.kind == "none" else spec.build(None)


def _back_to_raw(rd: _Read, t: Any, y: np.ndarray) -> np.ndarray:
    """Normalised transformed values -> the file's raw (uncompensated, untransformed) scale, every channel."""
    from flowtools.compensation import SpilloverMatrix
    from flowtools.gating.gates import FCS_COMPENSATION, UNCOMPENSATED

    s = rd.sample
    comp = np.column_stack([np.asarray(rd.resolved.channel(p), dtype=np.float64) for p in s.pnn])
    for j, (m, p) in enumerate(zip(_marker_names_or(rd), rd.pnn, strict=True)):
        tr = _transform_of(t, rd, m, p)
        comp[:, s.pnn.index(p)] = y[:, j] if tr is None else np.asarray(tr.inverse(y[:, j]), dtype=np.float64)
    if t.compensation == UNCOMPENSATED:
        return comp
    matrix = (SpilloverMatrix.from_fcs(s) if t.compensation == FCS_COMPENSATION
              else SpilloverMatrix.from_csv(t.compensation))
    return matrix.inverse_apply(comp, s.pnn)


def _marker_names_or(rd: _Read) -> list[str]:
    return _marker_names(rd)
