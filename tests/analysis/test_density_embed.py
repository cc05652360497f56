"""HDBSCAN and UMAP wrappers: seeded subsample fits, extension to every event, quality floors."""

from __future__ import annotations

import os

import numpy as np
import pytest

from flowtools.analysis import HDBSCAN, UMAP, hungarian_f1


def _blobs(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0, 0], [5, 0, 0], [0, 5, 0]], dtype=float)
    y = rng.integers(0, 3, size=n)
    return centres[y] + rng.normal(scale=0.5, size=(n, 3)), y


@pytest.mark.parametrize("backend", ["sklearn", "hdbscan"])
def test_hdbscan_on_subsample_labels_every_event(backend):
    if backend == "hdbscan":
        pytest.importorskip("hdbscan")
    x, y = _blobs()
    m = HDBSCAN(min_cluster_size=50, max_fit_events=1500, backend=backend, random_state=0).fit(x)
    assert m.labels_.shape == (4000,) and m.fit_index_.size == 1500
    assert hungarian_f1(y, m.labels_)["mean_f1"] > 0.95
    np.testing.assert_array_equal(m.predict(x[m.fit_index_]), m.labels_[m.fit_index_])
    again = HDBSCAN(min_cluster_size=50, max_fit_events=1500, backend=backend, random_state=0).fit(x)
    np.testing.assert_array_equal(m.labels_, again.labels_)


def test_sklearn_and_hdbscan_backends_agree():
    pytest.importorskip("hdbscan")
    x, _ = _blobs(1500)
    a = HDBSCAN(min_cluster_size=40, backend="sklearn").fit(x).labels_
    b = HDBSCAN(min_cluster_size=40, backend="hdbscan").fit(x).labels_
    assert hungarian_f1(a, b)["mean_f1"] > 0.99


def test_hdbscan_corner_cases():
    one = HDBSCAN(min_cluster_size=5).fit(np.ones((1, 2)))
    assert one.labels_.tolist() == [-1]
    with pytest.raises(ValueError, match="min_cluster_size"):
        HDBSCAN(min_cluster_size=1).fit(np.ones((10, 2)))


@pytest.mark.skipif(not os.environ.get("FLOWTOOLS_SLOW_TESTS"),
                    reason="umap-learn compiles for ~40 s on first use; set FLOWTOOLS_SLOW_TESTS=1")
def test_umap_subsample_fit_keeps_trustworthiness():
    pytest.importorskip("umap")
    from flowtools.analysis.embed import trustworthiness_subsample

    x, _ = _blobs(3000)
    m = UMAP(max_fit_events=1000, random_state=0).fit(x)
    assert m.embedding_.shape == (3000, 2)
    # Scored on the events the layout was NOT fitted on (placed by transform), and overall
    # on a subsample drawn independently of the fit's.
    rest = np.setdiff1d(np.arange(3000), m.fit_index_)
    assert trustworthiness_subsample(x[rest], m.embedding_[rest], n=1500) > 0.9
    assert trustworthiness_subsample(x, m.embedding_, n=1500, seed=99) > 0.9
