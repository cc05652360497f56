"""HDBSCAN density-based clustering, fitted on a seeded subsample and extended to every event.

The ``hdbscan`` package is imported when :meth:`HDBSCAN.fit` runs (scikit-learn's
own ``sklearn.cluster.HDBSCAN`` when it is absent), never at import.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils.validation import check_is_fitted

from flowtools.analysis._subsample import subsample_index
from flowtools.analysis.som import _check_x, _relabel

__all__ = ["HDBSCAN"]


class HDBSCAN(ClusterMixin, BaseEstimator):
    """HDBSCAN on a subsample; every other event takes the label of its nearest fitted event.

    Parameters
    ----------
    min_cluster_size : int, default 50
    min_samples : int, optional
        Density smoothing (default: ``min_cluster_size``, as the hdbscan package).
    cluster_selection_method : {"eom", "leaf"}, default "eom"
    max_fit_events : int or None, default 50_000
        Events HDBSCAN itself runs on (a seeded subsample); None: all.
    backend : {"auto", "hdbscan", "sklearn"}, default "auto"
        ``auto`` uses the hdbscan package when installed, else scikit-learn's.
    random_state : int, numpy Generator or None
        Seeds the subsample (HDBSCAN itself is deterministic).

    Attributes
    ----------
    labels_ : ndarray of int64, shape (n_samples,)
        Cluster of every training event (0.. by decreasing size); -1 is noise.
    fit_index_ : ndarray of int64
        Rows of the training data HDBSCAN ran on.
    backend_ : str
    n_features_in_ : int
    """

    def __init__(
        self,
        *,
        min_cluster_size: int = 50,
        min_samples: int | None = None,
        cluster_selection_method: str = "eom",
        max_fit_events: int | None = 50_000,
        backend: str = "auto",
        random_state: int | np.random.Generator | None = None,
    ) -> None:
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.cluster_selection_method = cluster_selection_method
        self.max_fit_events = max_fit_events
        self.backend = backend
        self.random_state = random_state

    def _backend(self) -> str:
        if self.backend not in ("auto", "hdbscan", "sklearn"):
            msg = f"backend must be 'auto', 'hdbscan' or 'sklearn', not {self.backend!r}"
            raise ValueError(msg)
        if self.backend != "auto":
            return self.backend
        try:
            import hdbscan  # noqa: F401
        except ImportError:
            return "sklearn"
        return "hdbscan"

    def fit(self, X: Any, y: Any = None) -> HDBSCAN:  # noqa: N803
        """Cluster a subsample, then label every event.

        Parameters
        ----------
        X : array-like of float, shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        HDBSCAN
            ``self``.
        """
        if not isinstance(self.min_cluster_size, int | np.integer) or self.min_cluster_size < 2:
            msg = f"min_cluster_size must be an integer >= 2, not {self.min_cluster_size!r}"
            raise ValueError(msg)
        x = _check_x(X)
        backend = self._backend()
        rng = np.random.default_rng(self.random_state)
        idx = subsample_index(x.shape[0], self.max_fit_events, rng)
        sub = x[idx]
        if sub.shape[0] <= self.min_cluster_size:
            raw = np.full(sub.shape[0], -1, dtype=np.int64)
        elif backend == "hdbscan":
            import hdbscan

            raw = hdbscan.HDBSCAN(min_cluster_size=int(self.min_cluster_size), min_samples=self.min_samples,
                                  cluster_selection_method=self.cluster_selection_method,
                                  core_dist_n_jobs=1).fit(sub).labels_.astype(np.int64)
        else:
            from sklearn.cluster import HDBSCAN as SkHDBSCAN

            raw = SkHDBSCAN(min_cluster_size=int(self.min_cluster_size), min_samples=self.min_samples,
                            cluster_selection_method=self.cluster_selection_method,
                            copy=True).fit(sub).labels_.astype(np.int64)
        fit_labels = raw.copy()
        if np.any(raw >= 0):
            fit_labels[raw >= 0] = _relabel(raw[raw >= 0])
        self.fit_index_ = idx
        self._fit_x = sub
        self._fit_labels = fit_labels
        self.backend_ = backend
        self.n_features_in_ = x.shape[1]
        self.labels_ = self._extend(x, idx)
        return self

    def _extend(self, x: np.ndarray, known: np.ndarray | None) -> np.ndarray:
        from sklearn.neighbors import NearestNeighbors

        out = np.empty(x.shape[0], dtype=np.int64)
        todo = np.ones(x.shape[0], dtype=bool)
        if known is not None:
            out[known] = self._fit_labels
            todo[known] = False
        if todo.any():
            nn = NearestNeighbors(n_neighbors=1).fit(self._fit_x)
            j = nn.kneighbors(x[todo], return_distance=False)[:, 0]
            out[todo] = self._fit_labels[j]
        return out

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        """Label of every event: that of its nearest event in the fitted subsample (-1 noise).

        Parameters
        ----------
        X : array-like of float, shape (n_samples, n_features_in_)

        Returns
        -------
        ndarray of int64, shape (n_samples,)
        """
        check_is_fitted(self, "labels_")
        x = _check_x(X, n_features=self.n_features_in_, min_rows=0)
        return self._extend(x, None) if x.shape[0] else np.zeros(0, dtype=np.int64)
