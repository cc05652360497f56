"""SOM kernels against their numpy references: random data and corner cases."""

from __future__ import annotations

import numpy as np
import pytest
from reference.som_ref import bmu_ref, node_sums_ref, som_batch_update_ref, som_online_ref

from flowtools.analysis import _som_kernels as K
from flowtools.analysis.som import grid_distances


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("n", [0, 1, 7, 5000])
def test_bmu_matches_reference(parallel, n):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 5))
    codes = rng.normal(size=(12, 5))
    idx = np.empty(n, np.int64)
    dist = np.empty(n)
    (K.bmu_parallel if parallel else K.bmu)(x, codes, idx, dist)
    ri, rd = bmu_ref(x, codes)
    np.testing.assert_array_equal(idx, ri)
    np.testing.assert_allclose(dist, rd, rtol=1e-12)


def test_bmu_ties_take_lowest_index_and_nan_rows_give_node0():
    codes = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [-1.0, 0.0]])
    x = np.array([[0.0, 0.0], [np.nan, 1.0], [0.5, 0.0]])
    idx = np.empty(3, np.int64)
    dist = np.empty(3)
    K.bmu(x, codes, idx, dist)
    assert idx.tolist() == [1, 0, 0]
    assert dist[1] == np.inf
    ri, _ = bmu_ref(x, codes)
    assert ri.tolist() == idx.tolist()


def test_online_training_matches_reference():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 4))
    codes = x[:9].copy()
    grid = grid_distances(3, 3)
    order = rng.integers(0, 300, size=900)
    ref = som_online_ref(x, codes, grid, order, 0.05, 0.01, 2.0, 0.0)
    K.som_online(x, codes, grid, order, 0.05, 0.01, 2.0, 0.0)
    np.testing.assert_allclose(codes, ref, rtol=1e-10, atol=1e-12)


def test_online_training_with_no_steps_leaves_codes():
    codes = np.ones((4, 2))
    K.som_online(np.zeros((1, 2)), codes, grid_distances(2, 2), np.zeros(0, np.int64), 0.05, 0.01, 1.0, 0.0)
    np.testing.assert_array_equal(codes, 1.0)


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("n", [0, 1, 4095, 4097, 20000])
def test_node_sums_match_reference(parallel, n):
    rng = np.random.default_rng(n + 1)
    x = rng.normal(size=(n, 3))
    codes = rng.normal(size=(16, 3))
    sums = np.full((16, 3), 9.0)
    counts = np.full(16, 9.0)
    (K.node_sums_parallel if parallel else K.node_sums)(x, codes, sums, counts)
    rs, rc = node_sums_ref(x, codes)
    np.testing.assert_allclose(sums, rs, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(counts, rc)


@pytest.mark.parametrize("radius", [0.0, 1.0, 2.5])
def test_batch_update_matches_reference_and_keeps_empty_nodes(radius):
    rng = np.random.default_rng(5)
    codes = rng.normal(size=(16, 3))
    sums = rng.normal(size=(16, 3))
    counts = rng.integers(0, 5, size=16).astype(np.float64)
    counts[:4] = 0
    sums[counts == 0] = 0  # consistent input: an empty node has a zero sum
    grid = grid_distances(4, 4)
    ref = som_batch_update_ref(codes, sums, counts, grid, radius)
    K.som_batch_update(codes, sums, counts, grid, radius)
    np.testing.assert_allclose(codes, ref, rtol=1e-12)
