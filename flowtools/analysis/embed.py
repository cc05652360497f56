"""UMAP embedding, fitted on a seeded subsample and applied to the rest (umap-learn, imported lazily)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from flowtools.analysis._subsample import subsample_index
from flowtools.analysis.som import _check_x

__all__ = ["UMAP", "trustworthiness_subsample"]


class UMAP(TransformerMixin, BaseEstimator):
    """UMAP fitted on at most ``max_fit_events`` events; the others are placed by ``umap``'s transform.

    Parameters
    ----------
    n_components : int, default 2
    n_neighbors : int, default 15
    min_dist : float, default 0.1
    n_epochs : int, optional
        Optimisation epochs of the fit (umap's default: 200 above 10 000 events, else 500).
    max_fit_events : int or None, default 12_000
        Size of the seeded subsample the layout is learned on; None: all events.
        On 100k x 10 synthetic-cohort events (bench_cluster.py), 12k gives trustworthiness 0.950-0.953
        on events it was not fitted on (umap-learn on all events: 0.952) in a quarter of the time.
    random_state : int or None
        Seeds the subsample and umap (umap then runs single-threaded, reproducibly).

    Attributes
    ----------
    embedding_ : ndarray of float32, shape (n_samples, n_components)
        Coordinates of every training event.
    fit_index_ : ndarray of int64
        Rows of the training data the layout was learned on.
    umap_ : umap.UMAP
    n_features_in_ : int
    """

    def __init__(
        self,
        *,
        n_components: int = 2,
        n_neighbors: int = 15,
        min_dist: float = 0.1,
        n_epochs: int | None = None,
        max_fit_events: int | None = 12_000,
        random_state: int | None = None,
    ) -> None:
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.n_epochs = n_epochs
        self.max_fit_events = max_fit_events
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> UMAP:  # noqa: N803
        """Learn the layout on a subsample and place every event.

        Parameters
        ----------
        X : array-like of float, shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        UMAP
            ``self``.
        """
        with warnings.catch_warnings():
            # umap warns at import that the optional TensorFlow (ParametricUMAP) is absent.
            warnings.simplefilter("ignore", ImportWarning)
            import umap

        x = _check_x(X, min_rows=2)
        rng = np.random.default_rng(self.random_state)
        idx = subsample_index(x.shape[0], self.max_fit_events, rng)
        with warnings.catch_warnings():
            # umap says it runs single-threaded when seeded: that is the point of seeding.
            warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
            model = umap.UMAP(n_components=self.n_components, n_neighbors=min(self.n_neighbors, idx.size - 1),
                              min_dist=self.min_dist, n_epochs=self.n_epochs, random_state=self.random_state)
            sub_emb = model.fit_transform(x[idx])
        emb = np.empty((x.shape[0], self.n_components), dtype=np.float32)
        emb[idx] = sub_emb
        rest = np.ones(x.shape[0], dtype=bool)
        rest[idx] = False
        if rest.any():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                emb[rest] = model.transform(x[rest])
        self.umap_ = model
        self.fit_index_ = idx
        self.embedding_ = emb
        self.n_features_in_ = x.shape[1]
        return self

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:  # noqa: N803
        """Fit and return :attr:`embedding_`; ndarray of float32, shape (n_samples, n_components)."""
        return self.fit(X).embedding_

    def transform(self, X: Any) -> np.ndarray:  # noqa: N803
        """Place new events in the learned layout.

        Parameters
        ----------
        X : array-like of float, shape (n_samples, n_features_in_)

        Returns
        -------
        ndarray of float32, shape (n_samples, n_components)
        """
        check_is_fitted(self, "umap_")
        x = _check_x(X, n_features=self.n_features_in_, min_rows=0)
        if x.shape[0] == 0:
            return np.zeros((0, self.n_components), dtype=np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return np.asarray(self.umap_.transform(x), dtype=np.float32)


def trustworthiness_subsample(
    x: np.ndarray, emb: np.ndarray, *, n: int = 5000, n_neighbors: int = 15, seed: int = 0
) -> float:
    """scikit-learn's trustworthiness on a seeded subsample of ``n`` events (it is quadratic in events).

    To judge a :class:`UMAP` fitted on a subsample, use a ``seed`` other than its
    ``random_state``: the same seed draws a subsample nested in the fit's, so no
    event placed by ``transform`` would be scored.

    Parameters
    ----------
    x : ndarray, shape (n_samples, n_features)
    emb : ndarray, shape (n_samples, n_components)
    n : int, default 5000
    n_neighbors : int, default 15
    seed : int, default 0

    Returns
    -------
    float
    """
    from sklearn.manifold import trustworthiness

    idx = subsample_index(x.shape[0], n, np.random.default_rng(seed))
    return float(trustworthiness(x[idx], emb[idx], n_neighbors=n_neighbors))
