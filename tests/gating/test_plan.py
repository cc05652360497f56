"""The plan (the one mask evaluator): its kernels against their references, block and whole-column modes
against each other bit for bit, and every mask against a plain-numpy evaluation of the strategy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from reference.compensation_ref import compensate_ref
from reference.gating_ref import strategy_masks_ref

from flowtools.compensation import SpilloverMatrix
from flowtools.compensation._kernels import compensate_rows
from flowtools.errors import ChannelError, GatingError
from flowtools.gating import (
    BooleanGate,
    Dimension,
    EllipsoidGate,
    GatingStrategy,
    PolygonGate,
    Quadrant,
    QuadrantDivider,
    QuadrantGate,
    RatioDefinition,
    RectangleGate,
    gate_events,
)
from flowtools.gating.engine import Plan
from flowtools.gating.engine import _kernels as k
from flowtools.transforms import (
    AsinhTransform,
    HyperlogTransform,
    LinearTransform,
    LogicleTransform,
    LogTransform,
    RatioTransform,
)
from flowtools.transforms import _kernels as tk

CH = ["FSC-A", "SSC-A", "D1", "D2", "D3", "D4", "Time"]


# ------------------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extract_columns_equals_compensate_rows_bitwise(dtype):
    rng = np.random.default_rng(1)
    n, p = 5000, 7
    x = (rng.normal(0, 2000, size=(n, p))).astype(dtype)
    idx = np.array([2, 3, 4, 5], dtype=np.intp)
    s = np.eye(4) + rng.uniform(0, 0.2, size=(4, 4)) * (1 - np.eye(4))
    unmix = np.ascontiguousarray(np.linalg.inv(s))
    full = compensate_rows(x, idx, unmix, parallel=False)
    np.testing.assert_allclose(full, compensate_ref(x, idx, unmix), rtol=1e-12, atol=1e-9)
    dets = np.array([3, -1, 0, -1, 2], dtype=np.intp)  # detectors D4, D1, D3 and two raw columns
    raws = np.array([-1, 0, -1, 6, -1], dtype=np.intp)
    for lo, hi in [(0, n), (17, 1041), (4000, 5000), (n - 1, n)]:
        out = np.empty((hi - lo, dets.size), dtype=np.float64, order="F")
        k.extract_columns(x, lo, hi, idx, unmix, dets, raws, out)
        want = np.column_stack([full[lo:hi, 5], x[lo:hi, 0], full[lo:hi, 2], x[lo:hi, 6], full[lo:hi, 4]])
        assert np.array_equal(out, want.astype(np.float64))  # bit for bit, not approximately


@given(
    v=arrays(
        np.float64, st.integers(0, 300), elements=st.floats(allow_nan=True, allow_infinity=True, width=64)
    ),
    lo=st.floats(-1e6, 1e6),
    width=st.one_of(st.floats(0, 1e6), st.just(np.inf)),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=100, deadline=None)
def test_range_and_matches_numpy(v, lo, width, seed):
    hi = lo + width
    src = np.random.default_rng(seed).random(v.size) < 0.6
    out = np.empty(v.size, dtype=bool)
    k.range_and(v, lo, hi, src, out)
    assert np.array_equal(out, src & (v >= lo) & ((v < hi) | (hi == np.inf)))
    k.range_and(v, lo, hi, out, out)  # in place: ANDing the same range again changes nothing
    assert np.array_equal(out, src & (v >= lo) & ((v < hi) | (hi == np.inf)))


@pytest.mark.parametrize("share", [0.0, 0.03, 0.099, 0.101, 0.5, 1.0])
def test_polygon_serial_both_paths_match_the_reference(share):
    """Below a tenth of parent events the point-by-point loop runs, above it the edge-major one."""
    from reference.gating_ref import polygon_ref

    rng = np.random.default_rng(11)
    n = 5000
    verts = np.array([[0.1, 0.1], [0.8, 0.15], [0.9, 0.7], [0.5, 0.5], [0.5, 0.95], [0.2, 0.6], [0.1, 0.6]])
    # points on the vertices' coordinates and on the edges' lines exercise the edge rules
    x = np.concatenate([rng.uniform(0, 1, n), verts[:, 0], np.full(3, 0.5), [np.nan, 0.3]])
    y = np.concatenate([rng.uniform(0, 1, n), verts[:, 1], [0.5, 0.6, 0.1], [0.3, np.nan]])
    parent = rng.random(x.size) < share
    out = np.empty(x.size, dtype=bool)
    k.polygon_serial(x, y, np.ascontiguousarray(verts[:, 0]), np.ascontiguousarray(verts[:, 1]), parent, out)
    assert np.array_equal(out, parent & polygon_ref(x, y, verts))


_SPECIAL = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 262144.0, -262144.0, 1e300, -1e300, 5e-324, 1e-30])


@pytest.mark.parametrize(
    "transform",
    [
        LogicleTransform(262144, 0.5, 4.5, 0.0),
        LogicleTransform(1e4, 1.0, 4.0, 1.0),
        HyperlogTransform(262144, 0.5, 4.5, 0.0),
    ],
)
@pytest.mark.parametrize("share", [0.02, 0.3, 0.95, 1.0])
def test_exact_masked_is_bitwise_exact_serial_on_the_wanted_entries(transform, share):
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.lognormal(5, 3, 4000) * rng.choice([-1.0, 1.0], 4000), _SPECIAL])
    rng.shuffle(x)
    full = transform.apply(x)  # exact_serial
    need = rng.random(x.size) < share
    done = rng.random(x.size) < 0.1
    out = np.full(x.size, 12345.0)
    before = done.copy()
    transform.apply_where(x, need, done, out)
    wanted = need & ~before
    assert np.array_equal(out[wanted], full[wanted], equal_nan=True)
    assert np.all(out[~wanted] == 12345.0)  # the others are left alone
    assert np.array_equal(done, before | need)
    again = out.copy()
    transform.apply_where(x, need, done, out)  # everything wanted is done: nothing changes
    assert np.array_equal(out, again, equal_nan=True)


def test_exact_masked_kernel_signature_matches_exact_serial():
    t = LogicleTransform(262144, 0.5, 4.5, 0.0)
    p, table = t._state()
    x = np.linspace(-1000, 300000, 257)
    out = np.empty_like(x)
    tk.exact_masked(x, p, *table, np.ones(x.size, bool), np.zeros(x.size, bool), out)
    assert np.array_equal(out, tk.exact_serial(x, p, *table, np.empty_like(x)))


# ------------------------------------------------------------- plan against the plain evaluation


def _rich_strategy() -> tuple[GatingStrategy, SpilloverMatrix]:
    lg = Dimension("D1", "FCS", "lg")
    lg2 = Dimension("D2", "FCS", "lg")
    hy = Dimension("D3", "M", "hy")
    xf = {
        "lg": LogicleTransform(262144, 0.5, 4.5, 0.0),
        "hy": HyperlogTransform(262144, 0.5, 4.5, 0.0),
        "as": AsinhTransform(262144, 4.5, 0.0),
        "lin": LinearTransform(262144, 0.0),
        "log": LogTransform(262144, 5.0),
        "R": RatioDefinition(RatioTransform(1.0, 0.0, 1.0), "D2", "D4"),
    }
    m = SpilloverMatrix.from_array([[1.0, 0.1], [0.05, 1.0]], ["D3", "D4"])
    gates = (
        PolygonGate(
            "cells",
            (Dimension("FSC-A", transform="lin"), Dimension("SSC-A", transform="lin")),
            ((0.05, 0.05), (0.9, 0.1), (0.8, 0.9), (0.1, 0.7)),
        ),
        RectangleGate("time", (Dimension("Time"),), (5.0,), (None,), "cells"),
        RectangleGate("pos", (lg, lg2), (0.3, None), (None, 0.8), "time"),
        QuadrantGate(
            "q",
            (QuadrantDivider("a", lg, (0.45,)), QuadrantDivider("b", hy, (0.4,))),
            (
                Quadrant("pp", (("a", 1.0), ("b", 1.0))),
                Quadrant("pn", (("a", 1.0), ("b", 0.0))),
                Quadrant("np", (("a", 0.0), ("b", 1.0))),
                Quadrant("nn", (("a", 0.0), ("b", 0.0))),
            ),
            "pos",
        ),
        EllipsoidGate(
            "ell", (Dimension("D4", "M", "as"), hy), (0.3, 0.3), ((0.02, 0.004), (0.004, 0.03)), 1.0, "cells"
        ),
        RectangleGate("ratio", (Dimension("R", "FCS", ratio=True),), (-2.0,), (2.0,), "pp"),
        RectangleGate("logd", (Dimension("D1", "uncompensated", "log"),), (0.5,), (None,), "nn"),
        PolygonGate("small", (lg, hy), ((0.5, -0.2), (0.9, 0.1), (0.6, 0.35)), "pn"),
        BooleanGate("either", "or", (("ell", False), ("small", False))),
        BooleanGate("notell", "and", (("cells", False), ("ell", True)), "cells"),
        BooleanGate("neither", "not", (("either", False),), "time"),
        BooleanGate("twice", "not", (("ell", True),)),
    )
    return GatingStrategy(gates, xf, {"M": m}), SpilloverMatrix.from_array(
        [[1.0, 0.2, 0.0, 0.01], [0.1, 1.0, 0.03, 0.0], [0.0, 0.02, 1.0, 0.15], [0.0, 0.0, 0.1, 1.0]],
        ["D1", "D2", "D3", "D4"],
    )


def _events(n: int, seed: int, dtype=np.float32) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    ev = np.column_stack(
        [
            rng.uniform(0, 262144, n),
            rng.uniform(0, 262144, n),
            *(rng.lognormal(6, 2.5, n) * rng.choice([-0.2, 1.0], n) for _ in range(4)),
            rng.uniform(0, 100, n),
        ]
    ).astype(dtype)
    time = np.asarray(ev[:, 6], dtype=np.float64) * 0.1  # a scaled column, as FCSSample.scaled_events gives
    return ev, {"Time": time}


def _whole_masks(s, ev, fcs, cols):
    return Plan(s, ev, CH, fcs, cols, where="ref").run()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("block_rows", [1, 7, 1000, 16384, 10**9, None])
def test_plan_masks_equal_the_plain_evaluation_in_every_mode(dtype, block_rows):
    s, fcs = _rich_strategy()
    ev, cols = _events(6000, 3, dtype)
    ref = strategy_masks_ref(s, ev, CH, fcs, cols)
    got = Plan(s, ev, CH, fcs, cols, block_rows=block_rows).run()
    assert list(got) == list(s.order)
    for pid in ref:
        assert np.array_equal(got[pid], ref[pid]), pid
    counts = {pid: int(m.sum()) for pid, m in ref.items()}
    assert all(counts[p] > 0 for p in ("pos", "pp", "pn", "nn", "ell", "ratio", "small", "either", "neither"))
    assert 0 < counts["small"] < counts["pn"]


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 400), block=st.integers(1, 64))
@settings(max_examples=40, deadline=None)
def test_plan_property_random_events_and_blocks(seed, n, block):
    s, fcs = _rich_strategy()
    ev, cols = _events(n, seed)
    whole = _whole_masks(s, ev, fcs, cols)
    got = Plan(s, ev, CH, fcs, cols, block_rows=block).run()
    assert all(np.array_equal(got[p], whole[p]) for p in whole)
    ref = strategy_masks_ref(s, ev, CH, fcs, cols)
    assert all(np.array_equal(whole[p], ref[p]) for p in ref)


def test_integer_and_byte_swapped_events_gate_as_float64():
    s, fcs = _rich_strategy()
    ev, cols = _events(2000, 8, np.float64)
    want = _whole_masks(s, ev, fcs, cols)
    for other in (ev.astype(">f8"), np.round(ev).astype(np.int64)):
        exp = want if other.dtype.kind == "f" else _whole_masks(s, np.round(ev), fcs, cols)
        got = Plan(s, other, CH, fcs, cols, block_rows=333).run()
        assert all(np.array_equal(got[p], exp[p]) for p in exp)


def test_gate_events_names_a_missing_parameter_in_both_modes():
    ev, _ = _events(300, 4)
    bad = GatingStrategy((RectangleGate("g", (Dimension("CD99-A"),), (1.0,), (None,)),))
    with pytest.raises(ChannelError, match="S1: no parameter 'CD99-A'"):
        gate_events(bad, ev, CH, sample_id="S1")
    with pytest.raises(ChannelError, match="no parameter 'CD99-A'"):
        Plan(bad, ev, CH, block_rows=None)


def test_a_missing_detector_raises_the_matrix_error():
    from flowtools.errors import CompensationError

    m = SpilloverMatrix.from_array([[1.0, 0.1], [0.1, 1.0]], ["D1", "D9"])
    s = GatingStrategy((RectangleGate("g", (Dimension("D1", "M"),), (1.0,), (None,)),), {}, {"M": m})
    ev, _ = _events(100, 4)
    for block in (16, None):
        with pytest.raises(CompensationError, match="D9"):
            Plan(s, ev, CH, block_rows=block)


def test_spectral_matrix_runs_on_whole_columns():
    spec = SpilloverMatrix.from_array([[1.0, 0.2, 0.1], [0.1, 1.0, 0.3]], ["D1", "D2", "D3"], ["F1", "F2"])
    s = GatingStrategy(
        (
            RectangleGate("g", (Dimension("F1", "S"),), (100.0,), (None,)),
            RectangleGate("t", (Dimension("Time", "S"),), (10.0,), (None,), "g"),
        ),
        {},
        {"S": spec},
    )
    ev, _ = _events(500, 5, np.float64)
    p = Plan(s, ev, CH, block_rows=64)
    assert p.whole  # unmixing is a least-squares product over whole columns
    r = gate_events(s, ev, CH)
    true = ev[:, 2:5] @ spec.unmixing
    assert r.count("g") == int(np.sum(true[:, 0] >= 100.0))
    assert r.count("t") == int(
        np.sum((true[:, 0] >= 100.0) & (ev[:, 6] >= 10.0))
    )  # raw column outside the matrix


def test_values_on_parent_events_only_then_completed_exactly():
    """Deep gates transform only their parent's events; a later full-column request completes the
    column bit for bit, and extend() evaluates only the new populations."""
    lg = LogicleTransform(T=262144, W=0.5, M=4.5, A=0)
    rng = np.random.default_rng(5)
    ev = rng.normal(0, 3000, size=(20_000, len(CH)))
    db, dc = Dimension("D1", transform="lg"), Dimension("D2", transform="lg")
    few = RectangleGate("few", (Dimension("FSC-A"),), (4000.0,), (None,))
    s1 = GatingStrategy((few,), {"lg": lg})
    p = Plan(s1, ev, CH)
    p.run()
    col = p.column_on(db, p.masks["few"], "few")
    sel = ev[:, 0] >= 4000.0
    full_b = lg.apply(ev[:, 2])
    assert np.array_equal(col[sel], full_b[sel])
    assert not p.dims[("uncompensated", "D1", "lg", False)]["done"].all()  # only the parent's events so far
    s2 = s1.extended([PolygonGate("poly", (db, dc), ((0.5, 0.5), (3.0, 0.5), (3.0, 3.0)), "few")])
    masks = p.extend(s2)
    assert list(masks) == ["few", "poly"]
    assert np.array_equal(masks["poly"], strategy_masks_ref(s2, ev, CH)["poly"])
    np.testing.assert_array_equal(p.column(db), full_b)  # completed on request, bit-identical
    np.testing.assert_array_equal(p.column(dc), lg.apply(ev[:, 3]))


def test_values_need_a_whole_column_plan():
    s, fcs = _rich_strategy()
    ev, cols = _events(100, 2)
    p = Plan(s, ev, CH, fcs, cols, block_rows=10)
    with pytest.raises(GatingError, match="whole-column"):
        p.column(Dimension("D1"))
