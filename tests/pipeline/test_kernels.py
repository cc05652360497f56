"""The population-median kernel against its plain-numpy reference (property tests)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from reference.tables_ref import middle_order_statistics_ref

from flowtools.pipeline._kernels import _DEBRUIJN, _DEBRUIJN_INDEX, middle_order_statistics


def _kernel(values: np.ndarray, masks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    m, n = values.shape
    p = len(masks)
    bits = np.zeros((n, max(1, (p + 63) // 64)), dtype=np.uint64)
    for i, mk in enumerate(masks):
        bits[mk, i // 64] |= np.uint64(1) << np.uint64(i % 64)
    sizes = np.array([mk.sum() for mk in masks], dtype=np.int64)
    lo, hi = np.empty((m, p)), np.empty((m, p))
    middle_order_statistics(values, np.argsort(values, axis=1), bits, sizes, lo, hi, _DEBRUIJN, _DEBRUIJN_INDEX)
    return lo, hi


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 300),
    m=st.integers(1, 4),
    p=st.integers(1, 140),  # up to three 64-bit words of membership
    ties=st.booleans(),
    nans=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_middle_values_match_partition_reference(n, m, p, ties, nans, seed):
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 5, size=(m, n)).astype(float) if ties else rng.normal(size=(m, n))
    if nans and n:
        values[rng.random((m, n)) < 0.1] = np.nan
    masks = [rng.random(n) < rng.random() for _ in range(p)]
    lo, hi = _kernel(values, masks)
    rlo, rhi = middle_order_statistics_ref(values, masks)
    np.testing.assert_array_equal(lo, rlo)
    np.testing.assert_array_equal(hi, rhi)


def test_nested_populations_give_numpy_medians():
    rng = np.random.default_rng(1)
    values = rng.lognormal(size=(3, 5001))
    root = np.ones(5001, bool)
    child = values[0] > 1.0
    grandchild = child & (values[1] < 2.0)
    empty = np.zeros(5001, bool)
    lo, hi = _kernel(values, [root, child, grandchild, empty])
    for p, mk in enumerate([root, child, grandchild]):
        np.testing.assert_array_equal((lo[:, p] + hi[:, p]) / 2, np.median(values[:, mk], axis=1))
    assert np.isnan(lo[:, 3]).all() and np.isnan(hi[:, 3]).all()
