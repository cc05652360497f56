"""Gating kernels against their numpy references: random data, edges, NaN, empty input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from reference.gating_ref import ellipsoid_ref, polygon_ref, rectangle_ref

from flowtools.gating.engine._kernels import ellipsoid_mask, polygon_mask, range_and

SQUARE = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]])
BOWTIE = np.array([[0.0, 0.0], [10.0, 10.0], [10.0, 0.0], [0.0, 10.0]])  # self-intersecting


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("poly", [SQUARE, BOWTIE, np.array([[5.0, 5], [500, 5], [500, 500]])])
def test_polygon_matches_reference(parallel, poly):
    rng = np.random.default_rng(0)
    pts = rng.uniform(-5, 510, size=(20000, 2))
    pts[:200] = np.round(pts[:200])  # many exactly on vertices/edges
    got = polygon_mask(pts[:, 0].copy(), pts[:, 1].copy(), poly, parallel=parallel)
    np.testing.assert_array_equal(got, polygon_ref(pts[:, 0], pts[:, 1], poly))


def test_polygon_edge_rules():
    x = np.array([0.0, 10.0, 5.0, 5.0, 5.0, np.nan, 5.0])
    y = np.array([5.0, 5.0, 0.0, 10.0, 5.0, 5.0, np.nan])
    # left edge in, right edge out, bottom edge in, top edge out, centre in, NaN out
    assert polygon_mask(x, y, SQUARE).tolist() == [True, False, True, False, True, False, False]
    assert polygon_mask(np.array([]), np.array([]), SQUARE).shape == (0,)


def test_polygon_even_odd_excludes_doubly_wound_region():
    # A star-like polygon whose centre is wound twice: even-odd says outside.
    star = np.array([[0, 0], [4, 10], [8, 0], [-2, 6], [10, 6]], dtype=float)
    assert not polygon_mask(np.array([4.0]), np.array([4.0]), star)[0]
    assert polygon_mask(np.array([4.0]), np.array([8.0]), star)[0]


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_ellipsoid_matches_reference(parallel, d):
    rng = np.random.default_rng(d)
    a = rng.normal(size=(d, d))
    cov = a @ a.T + d * np.eye(d)
    mean = rng.normal(size=d)
    vals = rng.normal(0, 3, size=(5000, d))
    inv = np.linalg.inv(cov)
    got = ellipsoid_mask(vals, mean, inv, 2.5, parallel=parallel)
    ref = ellipsoid_ref(vals, mean, inv, 2.5)
    q = np.einsum("ij,jk,ik->i", vals - mean, inv, vals - mean)
    close = np.isclose(q, 2.5, rtol=1e-12)  # summation order may differ exactly at the boundary
    np.testing.assert_array_equal(got[~close], ref[~close])


def test_ellipsoid_boundary_inclusive_and_nan():
    inv = np.eye(2)
    vals = np.array([[1.0, 0.0], [0.0, -1.0], [1.0, 1e-4], [np.nan, 0.0]])
    assert ellipsoid_mask(vals, np.zeros(2), inv, 1.0).tolist() == [True, True, False, False]


def rectangle_mask(vals: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """A rectangle as the engines evaluate it: one range pass per dimension, ANDed in place."""
    out = np.empty(vals.shape[0], dtype=bool)
    src = np.ones(vals.shape[0], dtype=bool)
    for j in range(vals.shape[1]):
        range_and(np.ascontiguousarray(vals[:, j]), float(lo[j]), float(hi[j]), src, out)
        src = out
    return out


def test_rectangle_matches_reference():
    rng = np.random.default_rng(3)
    vals = np.round(rng.uniform(0, 10, size=(10000, 3)), 1)
    vals[0, 1] = np.nan
    lo = np.array([2.0, -np.inf, 1.0])
    hi = np.array([8.0, 5.0, np.inf])
    np.testing.assert_array_equal(rectangle_mask(vals, lo, hi), rectangle_ref(vals, lo, hi))


def test_rectangle_min_inclusive_max_exclusive():
    vals = np.array([[1.0], [2.0], [1.5], [np.inf], [-np.inf]])
    assert rectangle_mask(vals, np.array([1.0]), np.array([2.0])).tolist() == [
        True,
        False,
        True,
        False,
        False,
    ]
    # open bounds (+-inf) admit every value but NaN, infinities included
    assert rectangle_mask(vals, np.array([-np.inf]), np.array([np.inf])).tolist() == [True] * 5


@settings(max_examples=80, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(0, 200), st.just(2)), elements=st.floats(-100, 100)),
    arrays(np.float64, st.tuples(st.integers(3, 9), st.just(2)), elements=st.integers(-100, 100).map(float)),
)
def test_polygon_property(points, poly):
    got = polygon_mask(points[:, 0].copy(), points[:, 1].copy(), poly)
    np.testing.assert_array_equal(got, polygon_ref(points[:, 0], points[:, 1], poly))


@pytest.mark.parametrize("parallel", [False, True])
def test_polygon_bounding_box_shortcut_is_exact_at_the_ulp(parallel):
    """Points one ulp around the box of slanted polygons get the full edge rule's answer."""
    rng = np.random.default_rng(11)
    for _ in range(20):
        poly = rng.uniform(-1e5, 2.6e5, size=(7, 2))
        xs, ys = [], []
        for vx, vy in poly:
            for dx in (-2, -1, 0, 1, 2):
                for dy in (-1, 0, 1):
                    xs.append(vx + dx * np.spacing(vx))
                    ys.append(vy + dy * np.spacing(vy))
        x, y = np.array(xs), np.array(ys)
        got = polygon_mask(x, y, poly, parallel=parallel)
        np.testing.assert_array_equal(got, polygon_ref(x, y, poly))
