"""The CytoNorm-class estimator: :class:`CytoNorm` (fit on anchors, transform, save, load).

Re-exported by :mod:`flowtools.analysis.normalize`, which documents the method; the file-level
functions (:mod:`flowtools.analysis.normalize_files`, :mod:`flowtools.analysis.normalize_apply`)
build on this class, so it sits below them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flowtools.analysis._subsample import subsample_index
from flowtools.analysis.normalize_model import (
    BLEND_THRESHOLD,
    _probs,
    _Spline,
    build_tables,
    load_model,
    model_from_dict,
    model_to_dict,
    quantiles_t,
    save_model,
)
from flowtools.analysis.normalize_validate import cluster_cv
from flowtools.errors import NormalizationError

__all__ = ["CytoNorm"]

_MODES = ("cluster", "global", "identity")
_SMALL = ("coarse", "global", "identity")
#: A knot of a small cluster's coarse spline per this many of its anchor events (fewer: the global spline).
EVENTS_PER_KNOT = 10
_MIN_KNOTS = 3
_CHUNK = 65_536  # events per block in transform: nodes x events distances stay small
_SIGMA_EVENTS = 5_000  # anchor events the soft kernel's width is fitted on


def _coarse(xt: np.ndarray, n_knots: int, n_probs: int) -> np.ndarray:
    """Quantiles of marker-major ``xt`` at ``(j + 0.5) / n_knots``, each repeated to fill ``n_probs`` slots.

    A run of equal knots is one knot to the spline builders, so the table is the coarse spline's
    and the model keeps one shape for every cluster.
    """
    p = (np.arange(n_knots) + 0.5) / n_knots
    return quantiles_t(xt, p)[:, (np.arange(n_probs) * n_knots) // n_probs]


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
        A cluster with fewer anchor events than this in some batch is *small*: it is mapped as
        ``small_cluster`` says.
    small_cluster : {"coarse", "global", "identity"}, default "coarse"
        How a small cluster is mapped. ``"coarse"``: by its own splines, in every batch, through
        only as many quantiles as its smallest batch supports, one per ``EVENTS_PER_KNOT`` (10)
        events, at least 3 (at probabilities ``(j + 0.5) / n_knots``), the goal the mean (or the
        goal batch) of those coarse quantiles; a batch with fewer than 10 of its events uses the
        batch's global spline. ``"global"``: the batch's global spline in every batch where the
        cluster is short (flowtools before this parameter). ``"identity"``: left unchanged there
        (CytoNorm/cytonormpy leave clusters under 50 events unnormalised). Why coarse: a rare
        population (a bright 2-5% cluster) is where the global spline is most wrong, since its
        upper quantiles are those of the rare cells themselves and follow their share, which
        differs between aliquots, so the global spline maps a change of composition as a batch
        effect; identity ignores a real batch shift; 101 quantiles of 25 events are noise. Measured
        (``benchmarks/bench_normalize.py``, CytoNorm CyTOF example, two clusters of 22-51 anchor
        events per batch; mean EMD reduction over 37 markers and 6 seeds of ``random_state``):
        coarse 0.19, identity 0.17, global 0.15; a blend of the cluster's full spline and the global
        one weighted ``n / (n + 25)`` 0.17, the choice between global and identity by the anchors'
        EMD 0.16. The synthetic cohort has no small cluster (no change).
    xdim, ydim, rlen, n_resamples : int
        FlowSOM grid, training passes and consensus resamples.
    max_cluster_events : int, default 20_000
        Anchor events the SOM is trained on: a seeded subsample of the pooled anchors, the
        same number from every batch (the quantiles and cluster labels use every event).
    cv_limit : float, default 0.5
        A cluster whose share of the anchor events has a CV across batches above this is
        reported unstable.
    prealign : bool, default True
        Cluster (and assign events to clusters) on values first put through the global
        per-marker splines. CytoNorm clusters the raw values, so a batch shift larger than a
        population's spread sends one population of two batches to different clusters (the
        "split populations" its users see, and a high cluster CV); pre-aligned, the clusters
        are the same cells in every batch. The per-cluster splines still map the raw values.
    soft : float, default 0.3
        Soft cluster membership: an event goes through the weighted mean of the cluster
        splines, the weights a Gaussian kernel of its distance to the SOM nodes (summed over
        each cluster's nodes). ``soft`` is the share of the anchors' events that are blended
        (their second cluster weighing at least 0.1); the kernel's variance is found so (by
        bisection on the anchors), which makes the blend the same in 10 or 40 dimensions, where
        a fixed multiple of the distances blended most events of a 37-channel CyTOF panel.
        0: hard assignment, as CytoNorm, where an event on a cluster boundary jumps from one
        spline to another and a population that straddles it is split. Measured
        (``benchmarks/bench_normalize.py --plates 4``; synthetic TBNK-NK cohort, effect 1.5):
        hard assignment gave CD4+CD8+ F1 0.94, 0.3 gave 0.99 (no batch effect: 1.00); on the
        CyTOF example (37 channels) the mean EMD reduction was 0.16 at 0.3 and 0.17 hard, where a
        kernel variance of 4x the median distance (this parameter's former meaning) blended 72%
        of the events and gave 0.09.
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
    blend_share_ : float
        Share of the anchors' events blended at ``sigma2_`` (close to ``soft``).
    node_cluster_ : ndarray of int64 or None
        Metacluster of every node.
    n_clusters_ : int
        Clusters actually used (1 in global mode).
    quantiles_ : ndarray, shape (n_batches, n_clusters_, n_markers, n_probs)
        The anchors' quantiles (NaN where a cluster uses the global spline or identity; a coarse
        cluster's few quantiles repeated, see :attr:`cluster_map_`).
    global_quantiles_ : ndarray, shape (n_batches, n_markers, n_probs)
    goal_ : ndarray, shape (n_clusters_, n_markers, n_probs)
        Goal quantiles (NaN rows: the cluster uses the global splines).
    global_goal_ : ndarray, shape (n_markers, n_probs)
    fallbacks_ : list of dict
        ``{"batch", "cluster", "n_events"}`` per cluster and batch that used the global spline.
    small_clusters_ : list of dict
        ``{"cluster", "n_events" (per batch), "map"}`` per small cluster: ``map`` is ``"coarse"``
        (with ``"knots"``), ``"global"`` or ``"identity"``.
    cluster_map_ : list of list of str, shape (n_batches, n_clusters_)
        The map of every cluster in every batch: ``"spline"`` (its own, :attr:`probs_`),
        ``"coarse"`` (its own, coarse: :attr:`quantiles_` holds each of the coarse quantiles
        repeated, a run of equal knots being one knot), ``"global"`` or ``"identity"``.
    cluster_cv_ : dict
        Output of :func:`cluster_cv` on the anchors (shares per batch, CV, unstable clusters).
    n_events_ : dict of str to int
        Anchor events per batch (all its anchors pooled).
    anchor_files_ : dict of str to int
        Anchor samples per batch.
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
        max_cluster_events: int = 20_000,
        cv_limit: float = 0.5,
        prealign: bool = True,
        soft: float = 0.3,
        small_cluster: str = "coarse",
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
        self.small_cluster = small_cluster
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
            "small_cluster": str(self.small_cluster),
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
        if self.small_cluster not in _SMALL:
            msg = f"small_cluster must be one of {list(_SMALL)}, not {self.small_cluster!r}"
            raise ValueError(msg)
        if not 0 <= self.soft < 1:
            msg = (f"soft must be in [0, 1) (the share of anchor events blended between clusters), "
                   f"not {self.soft!r}")
            raise ValueError(msg)
        if self.goal != "mean" and self.goal not in batches:
            msg = f"goal batch {self.goal!r} has no anchors; the batches are {batches}"
            raise NormalizationError(msg)

    def _reset_cache(self) -> None:
        self._splines: dict[tuple[int, int, int], _Spline] = {}
        self._table_cache: dict[int, tuple[np.ndarray, ...]] = {}

    # ------------------------------------------------------------------ fit
    def fit(self, anchors: Mapping[str, Sequence[np.ndarray]], markers: Sequence[str]) -> CytoNorm:
        """Learn the splines from the anchors of every batch.

        Parameters
        ----------
        anchors : mapping of str to sequence of ndarray
            Batch -> its anchor samples, each an (n_events, n_markers) array of
            transformed values (columns in ``markers`` order). Several samples of a batch
            are pooled.
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
        xt: dict[str, np.ndarray] = {}  # marker-major: (n_markers, n_events)
        n_files: dict[str, int] = {}
        for b in batches:
            arrays = [np.asarray(a) for a in anchors[b]]
            for i, a in enumerate(arrays):
                if a.ndim != 2 or a.shape[1] != len(markers):
                    msg = (f"batch {b!r}: anchor {i + 1} has shape {a.shape}, expected "
                           f"(n_events, {len(markers)}) for markers {markers}")
                    raise NormalizationError(msg)
                bad = ~np.all(np.isfinite(a), axis=0)
                if bad.any():
                    msg = (f"batch {b!r}: anchor {i + 1} has NaN or infinite values in marker(s) "
                           f"{[m for m, x in zip(markers, bad, strict=True) if x]}")
                    raise NormalizationError(msg)
            if not arrays or sum(a.shape[0] for a in arrays) == 0:
                msg = f"batch {b!r} has no anchor events"
                raise NormalizationError(msg)
            xt[b] = np.ascontiguousarray(np.concatenate(arrays).T, dtype=np.float64)
            n_files[b] = len(arrays)
        self.batches_, self.markers_, self.probs_ = batches, markers, probs
        self.n_events_ = {b: int(xt[b].shape[1]) for b in batches}
        self.anchor_files_ = n_files
        nb, nm, nq = len(batches), len(markers), probs.size
        self.codes_ = self.node_cluster_ = None
        self.sigma2_ = 0.0
        self.blend_share_ = 0.0
        self.fallbacks_: list[dict[str, Any]] = []
        self.global_quantiles_ = np.stack([quantiles_t(xt[b], probs) for b in batches])
        self.global_goal_ = self._goal(self.global_quantiles_)
        self._reset_cache()
        if self.mode == "cluster":
            gt = build_tables(self.global_quantiles_, np.broadcast_to(self.global_goal_, (nb, nm, nq)),
                              limit=self.limit, max_slope=self.max_slope)
            view = {b: self._prealign(xt[b], tuple(a[i][None] for a in gt)) if self.prealign else xt[b]
                    for i, b in enumerate(batches)}
            rng = np.random.default_rng(self.random_state)
            self._fit_som(view, rng)
            labels = {b: self._nearest(view[b])[0] for b in batches}
            k = int(self.node_cluster_.max()) + 1
            self.n_clusters_ = k
            if self.soft > 0 and k > 1:
                self.sigma2_, self.blend_share_ = self._fit_sigma2(view, rng)
        else:
            labels = {b: np.zeros(xt[b].shape[1], dtype=np.int64) for b in batches}
            k = 1
        self.n_clusters_ = k
        q = np.full((nb, k, nm, nq), np.nan)
        counts = np.stack([np.bincount(labels[b], minlength=k) for b in batches])  # (nb, k)
        small = (counts < self.min_cluster_events).any(axis=0) & (self.mode == "cluster")
        knots = np.full(k, nq, dtype=np.int64)
        if self.small_cluster == "coarse":  # one knot per EVENTS_PER_KNOT events of the smallest batch
            knots[small] = np.clip(counts.min(axis=0)[small] // EVENTS_PER_KNOT, _MIN_KNOTS, nq)
        cmap = [["spline"] * k for _ in batches]
        for i, b in enumerate(batches):
            if self.mode != "cluster":
                q[i, 0] = self.global_quantiles_[i]
                continue
            # group the events by cluster once (a stable sort of the labels), then each cluster a slice
            order = np.argsort(labels[b], kind="stable")
            grouped = np.ascontiguousarray(xt[b][:, order], dtype=np.float32)
            start = 0
            for c in range(k):
                n = int(counts[i, c])
                if not small[c]:
                    q[i, c] = quantiles_t(grouped[:, start:start + n], probs)
                elif self.small_cluster == "coarse" and n >= EVENTS_PER_KNOT:
                    q[i, c] = _coarse(grouped[:, start:start + n], int(knots[c]), nq)
                    cmap[i][c] = "coarse"
                elif self.small_cluster == "identity" and n < self.min_cluster_events:
                    cmap[i][c] = "identity"
                elif n < self.min_cluster_events or self.small_cluster == "coarse":
                    self.fallbacks_.append({"batch": b, "cluster": c, "n_events": n})
                    cmap[i][c] = "global"
                else:  # a batch where the small cluster has enough events keeps its full spline
                    q[i, c] = quantiles_t(grouped[:, start:start + n], probs)
                start += n
        self.quantiles_ = q
        self.goal_ = np.full((k, nm, nq), np.nan)
        for c in range(k):
            ok = ~np.isnan(q[:, c, 0, 0])
            if self.goal == "mean" and ok.any():
                self.goal_[c] = q[ok, c].mean(axis=0)
            elif self.goal != "mean" and ok[batches.index(self.goal)]:
                self.goal_[c] = q[batches.index(self.goal), c]
            if np.isnan(self.goal_[c, 0, 0]):  # no goal (the goal batch lacks it): the global splines
                for row in cmap:
                    row[c] = "global" if row[c] in ("spline", "coarse") else row[c]
        self.cluster_map_ = cmap
        coarse = self.small_cluster == "coarse"
        self.small_clusters_ = [
            {"cluster": c, "n_events": {b: int(counts[i, c]) for i, b in enumerate(batches)},
             "map": self.small_cluster, **({"knots": int(knots[c])} if coarse else {})}
            for c in np.flatnonzero(small).tolist()]
        self.cluster_cv_ = cluster_cv(labels, k, cv_limit=self.cv_limit)
        self._reset_cache()
        return self

    def _goal(self, q: np.ndarray) -> np.ndarray:
        return q.mean(axis=0) if self.goal == "mean" else q[self.batches_.index(self.goal)]

    def _fit_som(self, view: Mapping[str, np.ndarray], rng: np.random.Generator) -> None:
        from flowtools.analysis.som import FlowSOM

        per = max(1, -(-int(self.max_cluster_events) // len(self.batches_)))
        parts = []
        for b in self.batches_:  # every batch the same weight in the clustering
            v = view[b]
            parts.append(v[:, subsample_index(v.shape[1], per, rng)] if v.shape[1] > per else v)
        pooled = np.ascontiguousarray(np.concatenate(parts, axis=1).T)
        n_nodes = self.xdim * self.ydim
        if pooled.shape[0] < n_nodes:
            msg = f"the anchors have {pooled.shape[0]} events, fewer than the {n_nodes} SOM nodes"
            raise NormalizationError(msg)
        fs = FlowSOM(n_clusters=min(self.n_clusters, n_nodes), xdim=self.xdim, ydim=self.ydim,
                     rlen=self.rlen, n_resamples=self.n_resamples, random_state=self.random_state).fit(pooled)
        self.codes_ = np.ascontiguousarray(fs.codes_, dtype=np.float64)
        self.node_cluster_ = np.ascontiguousarray(fs.node_metacluster_, dtype=np.int64)

    def _fit_sigma2(self, view: Mapping[str, np.ndarray], rng: np.random.Generator) -> tuple[float, float]:
        """Kernel variance at which a share ``soft`` of the anchors' events is blended (bisection).

        On a seeded subsample of the pre-aligned anchors (at most 5,000 events, the same number from
        every batch); the share grows with the variance.
        """
        from flowtools.analysis._normalize_kernels import blend_share

        per = max(1, -(-_SIGMA_EVENTS // len(self.batches_)))
        parts = [v if v.shape[1] <= per else v[:, subsample_index(v.shape[1], per, rng)]
                 for v in (view[b] for b in self.batches_)]
        d2 = self._node_d2(np.concatenate(parts, axis=1))
        base = float(np.median(d2.min(axis=0)))
        base = base if base > 0 else 1.0
        k = self.n_clusters_

        def share(log_s2: float) -> float:
            return blend_share(d2, self.node_cluster_, k, 0.5 / np.exp(log_s2), BLEND_THRESHOLD)

        lo, hi = np.log(base) - 14.0, np.log(base) + 9.0
        if share(hi) <= self.soft:
            return float(np.exp(hi)), share(hi)
        for _ in range(26):  # to ~1e-6 of the log range: far below the share's own sampling error
            mid = 0.5 * (lo + hi)
            if share(mid) > self.soft:
                hi = mid
            else:
                lo = mid
        return float(np.exp(lo)), share(lo)

    # ------------------------------------------------------------------ evaluation
    def _prealign(self, xt: np.ndarray, tables: tuple[np.ndarray, ...]) -> np.ndarray:
        """Marker-major values through the batch's global splines (one slot of ``tables``)."""
        from flowtools.analysis._normalize_kernels import apply_tables

        out = np.empty_like(xt)
        apply_tables(xt, np.zeros(xt.shape[1], dtype=np.int64), *tables, out)
        return out

    def _nearest(self, vt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cluster of the nearest SOM node, and the squared distance to it, of marker-major ``vt``.

        The SOM's best-matching unit (first node on ties, distances summed marker by marker).
        """
        from flowtools.analysis.som import _bmu

        nodes, dist = _bmu(np.ascontiguousarray(np.asarray(vt, dtype=np.float64).T), self.codes_)
        return self.node_cluster_[nodes], dist

    def _node_d2(self, vt: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Squared distances (n_nodes, n_events) of marker-major ``vt`` to the SOM nodes (into ``out``)."""
        from flowtools.analysis._normalize_kernels import node_d2

        vt = np.ascontiguousarray(vt, dtype=np.float64)
        d2 = np.empty((self.codes_.shape[0], vt.shape[1])) if out is None else out
        node_d2(vt, self.codes_, d2)
        return d2

    def _tables(self, i: int) -> tuple[np.ndarray, ...]:
        """Batch ``i``'s spline tables: slots 0..k-1 the clusters and slot k the global splines."""
        cached = self._table_cache.get(i)
        if cached is not None:
            return cached
        k = self.n_clusters_
        gq, gg = self.global_quantiles_[i], self.global_goal_
        xq = np.concatenate([self.quantiles_[i], gq[None]])
        yq = np.concatenate([self.goal_, gg[None]])
        fell = np.isnan(xq[:, :, 0]) | np.isnan(yq[:, :, 0])  # a cluster that fell back: the global spline
        xq = np.where(fell[:, :, None], gq[None], xq)
        yq = np.where(fell[:, :, None], gg[None], yq)
        out = build_tables(xq, yq, limit=self.limit, max_slope=self.max_slope)
        assert out[0].shape[0] == k + 1
        ident = [c for c in range(k) if self.cluster_map_[i][c] == "identity"]
        if ident:  # values unchanged (up to rounding): the unit line, unbounded
            x0, xn, inv, slo, shi, blo, bhi, tab = out
            x0[ident], xn[ident], inv[ident] = 0.0, 1.0, float(tab.shape[-1] - 1)
            slo[ident], shi[ident], blo[ident], bhi[ident] = 1.0, 1.0, -np.inf, np.inf
            tab[ident] = np.linspace(0.0, 1.0, tab.shape[-1])
        self._table_cache[i] = out
        return out

    def _check_fitted(self) -> None:
        if not hasattr(self, "batches_"):
            msg = "this CytoNorm model is not fitted; call fit() or load() first"
            raise NormalizationError(msg)

    def _spline(self, i: int, c: int, m: int) -> _Spline:
        """The plain-numpy spline of batch ``i``, cluster ``c`` (-1: global) and marker ``m`` (reference)."""
        key = (i, c, m)
        sp = self._splines.get(key)
        if sp is None:
            limit = self.limit
            if c < 0:  # the batch's global spline
                xq, yq = self.global_quantiles_[i, m], self.global_goal_[m]
            elif self.cluster_map_[i][c] == "identity":
                xq = yq = self.global_quantiles_[i, m]
                limit = np.inf
            else:
                xq, yq = self.quantiles_[i, c, m], self.goal_[c, m]
            if np.isnan(xq[0]) or np.isnan(yq[0]):  # this cluster fell back: the batch's global spline
                xq, yq = self.global_quantiles_[i, m], self.global_goal_[m]
            sp = self._splines[key] = _Spline.build(xq, yq, limit=limit, max_slope=self.max_slope)
        return sp

    def _view(self, x: np.ndarray, i: int) -> np.ndarray:
        """Event-major values clusters are found on: pre-aligned by the global splines, or as they are."""
        if not self.prealign or self.mode != "cluster":
            return np.asarray(x, dtype=np.float64)
        k = self.n_clusters_
        tabs = self._tables(i)
        xt = np.ascontiguousarray(np.asarray(x, dtype=np.float64).T)
        return self._prealign(xt, tuple(a[k:k + 1] for a in tabs)).T

    def _weights(self, v: np.ndarray) -> np.ndarray:
        """Soft cluster membership of event-major ``v`` (see :meth:`_view`), shape (n, n_clusters_)."""
        from flowtools.analysis._normalize_kernels import soft_weights

        d2 = self._node_d2(np.asarray(v, dtype=np.float64).T)
        w = np.empty((self.n_clusters_, d2.shape[1]))
        soft_weights(d2, self.node_cluster_, 0.5 / self.sigma2_, w)
        return w.T

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
            An event with a NaN value is returned unchanged.

        Raises
        ------
        NormalizationError
            The batch is not in the model, or the events have the wrong number of columns.
        """
        from flowtools.analysis._normalize_kernels import (
            apply_blend,
            apply_tables,
            soft_weights,
        )

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
        finite = np.isfinite(x).all(axis=1)
        every = bool(finite.all())
        xt = np.ascontiguousarray((x if every else x[finite]).T)
        tabs = self._tables(i)
        k = self.n_clusters_
        res = np.empty_like(xt)
        if self.mode != "cluster":
            apply_tables(xt, np.zeros(xt.shape[1], dtype=np.int64), *tabs, res)
        else:
            vt = self._prealign(xt, tuple(a[k:k + 1] for a in tabs)) if self.prealign else xt
            clusters = tuple(a[:k] for a in tabs)
            d2 = np.empty((self.codes_.shape[0], min(xt.shape[1], _CHUNK)))
            w = np.empty((k, d2.shape[1]))
            for s in range(0, xt.shape[1], _CHUNK):  # chunks: nodes x events stays small
                one = xt.shape[1] <= _CHUNK
                part = xt if one else np.ascontiguousarray(xt[:, s:s + _CHUNK])
                n = part.shape[1]
                view = vt if one else np.ascontiguousarray(vt[:, s:s + _CHUNK])
                out = res if one else np.empty_like(part)
                if self.sigma2_ > 0:
                    ww = w[:, :n]
                    dd = self._node_d2(view, out=d2[:, :n])
                    soft_weights(dd, self.node_cluster_, 0.5 / self.sigma2_, ww)
                    apply_blend(part, ww, *clusters, out)
                else:
                    apply_tables(part, self._nearest(view)[0], *clusters, out)
                if not one:
                    res[:, s:s + n] = out
        if every:
            return np.ascontiguousarray(res.T)
        out = x.copy()
        out[finite] = res.T
        return out

    def predict_clusters(self, events: np.ndarray, batch: str) -> np.ndarray:
        """Cluster of every event of a batch (its nearest SOM node's; all 0 outside cluster mode)."""
        self._check_fitted()
        x = np.asarray(events, dtype=np.float64)
        if self.mode != "cluster":
            return np.zeros(x.shape[0], dtype=np.int64)
        if batch not in self.batches_:
            msg = f"batch {batch!r} is not in the normalisation model (fitted on batches {self.batches_})"
            raise NormalizationError(msg)
        return self._nearest(np.ascontiguousarray(self._view(x, self.batches_.index(batch)).T))[0]

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        """The fitted model as JSON-ready data."""
        self._check_fitted()
        return model_to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, where: str = "model") -> CytoNorm:
        """Rebuild a fitted model from :meth:`to_dict` data."""
        return model_from_dict(cls, d, where=where)

    def save(self, path: str | os.PathLike[str], *, provenance: Mapping[str, Any] | None = None) -> Path:
        """Write the model as JSON (atomically), ``provenance`` (anchors' hashes, template...) with it."""
        self._check_fitted()
        return save_model(self, path, provenance)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CytoNorm:
        """Read a model written by :meth:`save`; ``model.provenance_`` holds its provenance record."""
        return load_model(cls, path)
