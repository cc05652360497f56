"""The radix argsort kernel against numpy's, and the methods that use it against numpy's path.

``argsort_f64`` must give exactly ``np.argsort(kind="stable")`` (NaN last, -0.0 tied with 0.0),
the ``_sorted`` wrapper ``np.sort``'s values bit for bit (a -0.0/0.0 pair may sit in either
order, as with numpy); the ``qc`` ranks and the ``singlet`` band must not change when the
kernel replaces numpy's sorts.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from reference import methods_ref as MR
from reference import sort_ref as R

from flowtools.gating.methods import MethodContext, get_method
from flowtools.gating.methods import _common as C
from flowtools.gating.methods import _sort_kernels as K
from flowtools.gating.methods import qc as QC

_SPECIAL = np.array([0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, 5e-324, -5e-324,
                     np.finfo(np.float64).max, -np.finfo(np.float64).max, 1.0, -1.0])


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal values with equal bits, except that a -0.0/0.0 pair may sit in either order."""
    if a.shape != b.shape or not np.array_equal(a, b, equal_nan=True):
        return False
    nz = (a != 0.0) & ~np.isnan(a)
    return bool((a[nz].view(np.uint64) == b[nz].view(np.uint64)).all())


@pytest.mark.parametrize("kind", ["normal", "float32", "integers", "constant", "special", "tiny"])
def test_kernel_matches_numpy(kind: str) -> None:
    rng = np.random.default_rng(3)
    v = {
        "normal": rng.normal(size=50_000),
        "float32": rng.uniform(0, 262144, 50_000).astype(np.float32).astype(np.float64),
        "integers": np.round(rng.exponential(500.0, 50_000)),
        "constant": np.full(10_000, 7.5),
        "special": rng.choice(_SPECIAL, 20_000),
        "tiny": np.array([2.0, 1.0]),
    }[kind]
    assert np.array_equal(K.argsort_f64(v), R.argsort_f64_ref(v))
    assert _same_bits(v[K.argsort_f64(v)], np.sort(v))


def test_signed_zeros_tie_in_the_stable_order() -> None:
    v = np.array([0.0, -0.0, 1.0, -0.0, 0.0, -1.0])
    assert np.array_equal(K.argsort_f64(v), [5, 0, 1, 3, 4, 2])


def test_empty_and_nan_only() -> None:
    assert K.argsort_f64(np.empty(0)).shape == (0,)
    assert np.array_equal(K.argsort_f64(np.full(3, np.nan)), [0, 1, 2])
    assert np.array_equal(K.argsort_f64(np.array([np.nan, 1.0, -np.nan, -np.inf])), [3, 1, 0, 2])


@settings(max_examples=150, deadline=None)
@given(arrays(np.float64, st.integers(0, 400), elements=st.floats(allow_nan=True, allow_infinity=True)))
def test_kernels_match_numpy_on_any_floats(v: np.ndarray) -> None:
    assert np.array_equal(K.argsort_f64(v), R.argsort_f64_ref(v))
    assert _same_bits(v[K.argsort_f64(v)], np.sort(v))


def test_wrappers_use_numpy_below_the_threshold_and_the_kernel_above() -> None:
    rng = np.random.default_rng(5)
    big = rng.normal(size=(C._RADIX_MIN + 10, 2))[:, 1]  # a strided column: copied for the kernel
    assert _same_bits(C._sorted(big), np.sort(big))
    assert np.array_equal(C._argsorted(big), np.argsort(big, kind="stable"))
    small = big[:50]
    assert _same_bits(C._sorted(small), np.sort(small))
    assert np.array_equal(np.sort(small[C._argsorted(small)]), np.sort(small))


def test_qc_ranks_equal_the_numpy_reference() -> None:
    rng = np.random.default_rng(11)
    for v in (rng.normal(size=120_000), np.round(rng.exponential(300.0, 60_000)),
              rng.uniform(0, 1e5, 30_000).astype(np.float32).astype(np.float64)):
        assert np.array_equal(QC._ranks(v), MR.ranks_ref(v))


def test_singlet_band_does_not_depend_on_the_order_of_tied_areas(monkeypatch: pytest.MonkeyPatch) -> None:
    # Scatter read from float32 FCS data has many tied areas: the kernel's stable order and
    # numpy's unstable one put them differently; the band must be the same to the bit.
    import flowtools.gating.methods.singlet as S

    rng = np.random.default_rng(2)
    a = np.round(rng.normal(60_000, 12_000, 30_000) / 64.0) * 64.0  # ~1/3 of the areas tied
    h = 0.8 * a + rng.normal(0, 1500, a.size)
    doublets = rng.random(a.size) < 0.08
    a[doublets] *= 1.8
    x = np.column_stack([a, h])
    spec = get_method("singlet")
    ctx = MethodContext("singlets", ("FSC-A", "FSC-H"), ((0.0, 262144.0),) * 2, 0)
    args = spec.check_args({}, "test")
    kernel = spec.fn(x, ctx, **args)
    monkeypatch.setattr(S, "_argsorted", lambda v: np.argsort(v))  # numpy's order of the ties
    numpy_path = spec.fn(x, ctx, **args)
    assert np.array_equal(np.asarray(kernel.vertices), np.asarray(numpy_path.vertices))
