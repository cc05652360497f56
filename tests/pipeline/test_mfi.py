"""Population MFIs (``analysis._population_kernels.middle_values``) against the references."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from reference.tables_ref import middle_order_statistics_ref

from flowtools.analysis._population_kernels import middle_values as _middle_values


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(0, 400),
    m=st.integers(1, 4),
    p=st.integers(1, 140),
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
    if n and p > 1:
        masks[0][:] = True  # the root: every event
    lo, hi = _middle_values(list(values), masks)
    rlo, rhi = middle_order_statistics_ref(values, masks)
    np.testing.assert_array_equal(lo, rlo)
    np.testing.assert_array_equal(hi, rhi)


def test_mfi_is_numpy_median_of_nested_populations():
    rng = np.random.default_rng(3)
    values = rng.lognormal(size=(3, 20001)).astype(np.float32).astype(np.float64)
    root = np.ones(20001, bool)
    child = values[0] > 1.0
    grandchild = child & (values[1] < 2.0)
    empty = np.zeros(20001, bool)
    single = np.zeros(20001, bool)
    single[7] = True
    lo, hi = _middle_values(list(values), [root, child, grandchild, empty, single])
    for p, mk in ((0, root), (1, child), (2, grandchild), (4, single)):
        assert ((lo[:, p] + hi[:, p]) / 2 == np.median(values[:, mk], axis=1)).all()
    assert np.isnan(lo[:, 3]).all() and np.isnan(hi[:, 3]).all()


def test_no_columns_or_no_populations():
    lo, hi = _middle_values([], [np.ones(3, bool)])
    assert lo.shape == hi.shape == (0, 1)
    lo, hi = _middle_values([np.arange(3.0)], [])
    assert lo.shape == hi.shape == (1, 0)
