"""The compensation kernel against its numpy reference: random data and corner cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from reference.compensation_ref import compensate_ref

from flowtools.compensation._kernels import compensate_rows


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 1023, 1024, 1025, 5000])
def test_kernel_matches_reference(parallel, dtype, n):
    rng = np.random.default_rng(n)
    x = rng.normal(0, 1e4, size=(n, 9)).astype(dtype)
    idx = np.array([7, 1, 4, 2], dtype=np.intp)
    unmix = np.linalg.inv(np.eye(4) + rng.uniform(0, 0.2, (4, 4)))
    out = compensate_rows(x, idx, unmix, parallel=parallel)
    np.testing.assert_allclose(out, compensate_ref(x, idx, unmix), rtol=1e-12, atol=1e-9)


def test_kernel_propagates_nan_and_writes_into_out():
    x = np.array([[1.0, np.nan, 3.0], [4.0, 5.0, 6.0]])
    idx = np.array([1, 2], dtype=np.intp)
    out = np.full(x.shape, -1.0)
    res = compensate_rows(x, idx, np.array([[1.0, 0.1], [0.0, 1.0]]), out)
    assert res is out
    assert np.isnan(out[0, 1]) and np.isnan(out[0, 2]) and out[0, 0] == 1.0
    np.testing.assert_allclose(out[1], [4.0, 5.0, 6.5])


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(0, 300), st.just(5)), elements=st.floats(-1e6, 1e6)),
    st.permutations([0, 1, 2, 3, 4]),
    st.integers(1, 5),
)
def test_kernel_property(x, perm, k):
    idx = np.array(perm[:k], dtype=np.intp)
    unmix = np.linalg.inv(np.eye(k) + 0.1 * np.triu(np.ones((k, k)), 1))
    np.testing.assert_allclose(
        compensate_rows(x, idx, unmix), compensate_ref(x, idx, unmix), rtol=1e-10, atol=1e-6
    )
