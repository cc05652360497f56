"""Self-organising map and FlowSOM-class clustering (SOM + consensus metaclustering).

:class:`SOM` trains a map of ``xdim x ydim`` nodes on the events; :class:`FlowSOM`
adds consensus metaclustering of the node codes (hierarchical clustering over
resamples, as ConsensusClusterPlus does for FlowSOM) and labels every event with
the metacluster of its best-matching node. Both follow the scikit-learn
estimator contract: ``__init__`` only stores parameters, ``fit`` validates and
returns ``self``, learned state ends in ``_`` and ``predict`` never changes the
estimator. The numba kernels (:mod:`flowtools.analysis._som_kernels`) and scipy
are imported when ``fit``/``predict`` run, never at import.

Examples
--------
>>> import numpy as np
>>> from flowtools.analysis import FlowSOM
>>> x = np.random.default_rng(0).normal(size=(2000, 4))
>>> model = FlowSOM(xdim=5, ydim=5, n_clusters=3, random_state=0).fit(x)  # doctest: +SKIP
>>> model.labels_.shape  # doctest: +SKIP
(2000,)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

__all__ = ["SOM", "FlowSOM", "consensus_metacluster", "flowsom", "grid_distances"]

_PARALLEL_MIN = 20_000  # events from which the parallel kernels pay off


def grid_distances(xdim: int, ydim: int, *, metric: str = "chebyshev") -> np.ndarray:
    """Distances between the nodes of a rectangular ``xdim x ydim`` grid.

    Parameters
    ----------
    xdim, ydim : int
    metric : {"chebyshev", "euclidean", "manhattan"}, default "chebyshev"
        FlowSOM uses the maximum (Chebyshev) distance.

    Returns
    -------
    ndarray of float64, shape (xdim * ydim, xdim * ydim)
        Node ``i`` sits at grid position ``(i % xdim, i // xdim)``.
    """
    k = np.arange(xdim * ydim)
    pos = np.column_stack([k % xdim, k // xdim]).astype(np.float64)
    diff = np.abs(pos[:, None, :] - pos[None, :, :])
    if metric == "chebyshev":
        return diff.max(axis=2)
    if metric == "euclidean":
        return np.sqrt((diff**2).sum(axis=2))
    if metric == "manhattan":
        return diff.sum(axis=2)
    msg = f"metric must be 'chebyshev', 'euclidean' or 'manhattan', not {metric!r}"
    raise ValueError(msg)


def _check_x(x: Any, *, n_features: int | None = None, min_rows: int = 1) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float64))
    if arr.ndim != 2:
        msg = f"expected a 2-D array of events x markers, got shape {arr.shape}"
        raise ValueError(msg)
    if arr.shape[0] < min_rows:
        msg = f"need at least {min_rows} event(s), got {arr.shape[0]}"
        raise ValueError(msg)
    if not np.all(np.isfinite(arr)):
        msg = "events contain NaN or infinite values; remove or impute them first"
        raise ValueError(msg)
    if n_features is not None and arr.shape[1] != n_features:
        msg = f"expected {n_features} markers (as in fit), got {arr.shape[1]}"
        raise ValueError(msg)
    return arr


def _bmu(x: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from flowtools.analysis import _som_kernels as K

    idx = np.empty(x.shape[0], dtype=np.int64)
    dist = np.empty(x.shape[0], dtype=np.float64)
    (K.bmu_parallel if x.shape[0] >= _PARALLEL_MIN else K.bmu)(x, codes, idx, dist)
    return idx, dist


class SOM(TransformerMixin, BaseEstimator):
    """Self-organising map on a rectangular grid (numba kernels).

    Parameters
    ----------
    xdim, ydim : int, default 10
        Grid size; the map has ``xdim * ydim`` nodes.
    rlen : int, default 10
        Passes over the data (online: ``rlen * n`` event draws; batch: ``rlen`` updates).
    alpha : tuple of float, default (0.05, 0.01)
        Learning rate at the start and end of online training (linear schedule;
        batch training has no learning rate).
    radius : tuple of float, optional
        Neighbourhood radius (grid distance, inclusive) at the start and end; by
        default ``(q67, 0)`` with ``q67`` the 0.67 quantile of the grid distances, as FlowSOM.
    algorithm : {"online", "batch"}, default "online"
        ``online`` is Kohonen's rule as FlowSOM runs it (serial); ``batch`` updates
        every node once per pass from all events (parallel; on the benchmark cohort
        its F1 is lower, 0.85 against 0.999, so it is not the default).
    grid_metric : {"chebyshev", "euclidean", "manhattan"}, default "chebyshev"
    random_state : int, numpy Generator or None
        Seeds the initial codes (events drawn without replacement) and the online draw order.

    Attributes
    ----------
    codes_ : ndarray of float64, shape (xdim * ydim, n_features_in_)
        Node codes (prototypes).
    grid_distances_ : ndarray of float64, shape (k, k)
    labels_ : ndarray of int64, shape (n_samples,)
        Best-matching node of every training event.
    n_features_in_ : int
    """

    def __init__(
        self,
        *,
        xdim: int = 10,
        ydim: int = 10,
        rlen: int = 10,
        alpha: tuple[float, float] = (0.05, 0.01),
        radius: tuple[float, float] | None = None,
        algorithm: str = "online",
        grid_metric: str = "chebyshev",
        random_state: int | np.random.Generator | None = None,
    ) -> None:
        self.xdim = xdim
        self.ydim = ydim
        self.rlen = rlen
        self.alpha = alpha
        self.radius = radius
        self.algorithm = algorithm
        self.grid_metric = grid_metric
        self.random_state = random_state

    def _validate(self) -> None:
        for name in ("xdim", "ydim", "rlen"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
                msg = f"{name} must be a positive integer, not {v!r}"
                raise ValueError(msg)
        if self.algorithm not in ("batch", "online"):
            msg = f"algorithm must be 'batch' or 'online', not {self.algorithm!r}"
            raise ValueError(msg)
        if len(self.alpha) != 2 or not all(0 < a <= 1 for a in self.alpha):
            msg = f"alpha must be two learning rates in (0, 1], not {self.alpha!r}"
            raise ValueError(msg)
        if self.radius is not None and (len(self.radius) != 2 or min(self.radius) < 0):
            msg = f"radius must be two non-negative grid distances, not {self.radius!r}"
            raise ValueError(msg)

    def fit(self, X: Any, y: Any = None) -> SOM:  # noqa: N803 - scikit-learn's name
        """Train the map.

        Parameters
        ----------
        X : array-like of float, shape (n_samples, n_features)
            Finite values (transformed scale, e.g. logicle).
        y : ignored

        Returns
        -------
        SOM
            ``self``.
        """
        from flowtools.analysis import _som_kernels as K

        self._validate()
        x = _check_x(X)
        rng = np.random.default_rng(self.random_state)
        k = self.xdim * self.ydim
        n = x.shape[0]
        grid = grid_distances(self.xdim, self.ydim, metric=self.grid_metric)
        r0, r1 = self.radius if self.radius is not None else (float(np.quantile(grid, 0.67)), 0.0)
        init = rng.choice(n, size=k, replace=n < k)
        codes = np.ascontiguousarray(x[init])
        if self.algorithm == "online":
            order = rng.integers(0, n, size=self.rlen * n, dtype=np.int64)
            alpha0, alpha1 = float(self.alpha[0]), float(self.alpha[1])
            K.som_online(x, codes, grid, order, alpha0, alpha1, float(r0), float(r1))
        else:
            sums = np.empty_like(codes)
            counts = np.empty(k)
            fn = K.node_sums_parallel if n >= _PARALLEL_MIN else K.node_sums
            steps = max(self.rlen, 1)
            for t in range(steps):
                radius = r0 + (r1 - r0) * (t / (steps - 1) if steps > 1 else 1.0)
                fn(x, codes, sums, counts)
                K.som_batch_update(codes, sums, counts, grid, float(radius))
        self.codes_ = codes
        self.grid_distances_ = grid
        self.n_features_in_ = x.shape[1]
        self.labels_ = _bmu(x, codes)[0]
        return self

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        """Best-matching node of every event.

        Parameters
        ----------
        X : array-like of float, shape (n_samples, n_features_in_)

        Returns
        -------
        ndarray of int64, shape (n_samples,)
        """
        check_is_fitted(self, "codes_")
        return _bmu(_check_x(X, n_features=self.n_features_in_, min_rows=0), self.codes_)[0]

    def transform(self, X: Any) -> np.ndarray:  # noqa: N803
        """Euclidean distance of every event to its best-matching node.

        Parameters
        ----------
        X : array-like of float, shape (n_samples, n_features_in_)

        Returns
        -------
        ndarray of float64, shape (n_samples,)
        """
        check_is_fitted(self, "codes_")
        return np.sqrt(_bmu(_check_x(X, n_features=self.n_features_in_, min_rows=0), self.codes_)[1])


def consensus_metacluster(
    codes: np.ndarray,
    n_clusters: int,
    *,
    n_resamples: int = 100,
    resample_frac: float = 0.9,
    linkage: str = "average",
    random_state: int | np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Consensus hierarchical clustering of SOM codes (ConsensusClusterPlus, ``clusterAlg="hc"``).

    Each resample draws ``resample_frac`` of the codes without replacement and
    cuts their hierarchical clustering (Euclidean, ``linkage``) into
    ``n_clusters``; the consensus of two codes is the share of the resamples
    holding both in which they fell together. The result cuts the hierarchical
    clustering of ``1 - consensus`` (same linkage) into ``n_clusters``.

    Parameters
    ----------
    codes : ndarray of float64, shape (k, d)
    n_clusters : int
        Metaclusters (1 <= n_clusters <= k).
    n_resamples : int, default 100
    resample_frac : float, default 0.9
    linkage : {"average", "complete", "single", "ward"}, default "average"
    random_state : int, numpy Generator or None

    Returns
    -------
    labels : ndarray of int64, shape (k,)
        Metacluster of each code, numbered 0.. by decreasing size (ties: lowest node first).
    consensus : ndarray of float64, shape (k, k)
        Consensus matrix (1 on the diagonal).
    """
    from scipy.cluster.hierarchy import fcluster
    from scipy.cluster.hierarchy import linkage as hlinkage
    from scipy.spatial.distance import squareform

    codes = np.asarray(codes, dtype=np.float64)
    k = codes.shape[0]
    if not 1 <= n_clusters <= k:
        msg = f"n_clusters must be between 1 and the number of nodes ({k}), not {n_clusters}"
        raise ValueError(msg)
    if not 0 < resample_frac <= 1:
        msg = f"resample_frac must be in (0, 1], not {resample_frac}"
        raise ValueError(msg)
    rng = np.random.default_rng(random_state)
    together = np.zeros((k, k))
    sampled = np.zeros((k, k))
    m = max(2, int(round(resample_frac * k))) if k >= 2 else 1
    if k >= 2:
        for _ in range(n_resamples):
            idx = np.sort(rng.choice(k, size=min(m, k), replace=False))
            cut = min(n_clusters, idx.size)
            lab = fcluster(hlinkage(codes[idx], method=linkage), cut, criterion="maxclust")
            same = (lab[:, None] == lab[None, :]).astype(np.float64)
            together[np.ix_(idx, idx)] += same
            sampled[np.ix_(idx, idx)] += 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        consensus = np.where(sampled > 0, together / np.maximum(sampled, 1), 0.0)
    np.fill_diagonal(consensus, 1.0)
    if k == 1 or n_clusters == 1:
        return np.zeros(k, dtype=np.int64), consensus
    dist = squareform(1.0 - consensus, checks=False)
    # ward needs Euclidean input; on a dissimilarity it is applied as is (as ConsensusClusterPlus does).
    raw = fcluster(hlinkage(dist, method=linkage), n_clusters, criterion="maxclust")
    return _relabel(raw), consensus


def _relabel(raw: np.ndarray) -> np.ndarray:
    """Renumber labels 0.. by decreasing size (ties: the label whose first member comes first)."""
    uniq, first, counts = np.unique(raw, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    mapping = np.empty(uniq.max() + 1, dtype=np.int64)
    mapping[uniq[order]] = np.arange(uniq.size)
    return mapping[raw]


class FlowSOM(ClusterMixin, BaseEstimator):
    """FlowSOM-class clustering: a SOM, then consensus metaclustering of its nodes.

    Parameters
    ----------
    n_clusters : int, default 10
        Metaclusters.
    xdim, ydim, rlen, alpha, radius, algorithm, grid_metric
        As :class:`SOM`.
    n_resamples : int, default 100
        Resamples of the consensus metaclustering.
    resample_frac : float, default 0.9
    linkage : str, default "average"
    random_state : int, numpy Generator or None
        Seeds the SOM and the resamples (independent streams of one seed).

    Attributes
    ----------
    som_ : SOM
        The trained map.
    codes_ : ndarray of float64, shape (xdim * ydim, n_features_in_)
    node_metacluster_ : ndarray of int64, shape (xdim * ydim,)
        Metacluster of every node.
    consensus_ : ndarray of float64, shape (k, k)
    node_labels_ : ndarray of int64, shape (n_samples,)
        Best-matching node of every training event.
    labels_ : ndarray of int64, shape (n_samples,)
        Metacluster of every training event.
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(1000, 3))
    >>> FlowSOM(xdim=4, ydim=4, n_clusters=2, random_state=0).fit_predict(x).shape  # doctest: +SKIP
    (1000,)
    """

    def __init__(
        self,
        *,
        n_clusters: int = 10,
        xdim: int = 10,
        ydim: int = 10,
        rlen: int = 10,
        alpha: tuple[float, float] = (0.05, 0.01),
        radius: tuple[float, float] | None = None,
        algorithm: str = "online",
        grid_metric: str = "chebyshev",
        n_resamples: int = 100,
        resample_frac: float = 0.9,
        linkage: str = "average",
        random_state: int | np.random.Generator | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.xdim = xdim
        self.ydim = ydim
        self.rlen = rlen
        self.alpha = alpha
        self.radius = radius
        self.algorithm = algorithm
        self.grid_metric = grid_metric
        self.n_resamples = n_resamples
        self.resample_frac = resample_frac
        self.linkage = linkage
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> FlowSOM:  # noqa: N803
        """Train the SOM and metacluster its nodes.

        Parameters
        ----------
        X : array-like of float, shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        FlowSOM
            ``self``.
        """
        if isinstance(self.random_state, np.random.Generator):
            som_seed, meta_seed = self.random_state.spawn(2)
        else:
            seeds = np.random.SeedSequence(self.random_state).spawn(2)
            som_seed, meta_seed = (np.random.default_rng(s) for s in seeds)
        som = SOM(xdim=self.xdim, ydim=self.ydim, rlen=self.rlen, alpha=self.alpha, radius=self.radius,
                  algorithm=self.algorithm, grid_metric=self.grid_metric, random_state=som_seed).fit(X)
        node_meta, consensus = consensus_metacluster(
            som.codes_, self.n_clusters, n_resamples=self.n_resamples, resample_frac=self.resample_frac,
            linkage=self.linkage, random_state=meta_seed)
        self.som_ = som
        self.codes_ = som.codes_
        self.node_metacluster_ = node_meta
        self.consensus_ = consensus
        self.node_labels_ = som.labels_
        self.labels_ = node_meta[som.labels_]
        self.n_features_in_ = som.n_features_in_
        return self

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        """Metacluster of every event (via its best-matching node).

        Parameters
        ----------
        X : array-like of float, shape (n_samples, n_features_in_)

        Returns
        -------
        ndarray of int64, shape (n_samples,)
        """
        check_is_fitted(self, "node_metacluster_")
        return self.node_metacluster_[self.som_.predict(X)]

    def predict_nodes(self, X: Any) -> np.ndarray:  # noqa: N803
        """Best-matching SOM node of every event; ndarray of int64, shape (n_samples,)."""
        check_is_fitted(self, "node_metacluster_")
        return self.som_.predict(X)


def flowsom(X: Any, *, n_clusters: int = 10, **params: Any) -> np.ndarray:  # noqa: N803
    """Function twin of :class:`FlowSOM`: fit on ``X`` and return the metacluster of every event.

    Parameters
    ----------
    X : array-like of float, shape (n_samples, n_features)
    n_clusters : int, default 10
    **params
        Any other :class:`FlowSOM` parameter.

    Returns
    -------
    ndarray of int64, shape (n_samples,)
    """
    return FlowSOM(n_clusters=n_clusters, **params).fit(X).labels_
