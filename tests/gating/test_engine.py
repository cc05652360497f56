"""Engine semantics: parents, booleans, quadrants, compensation refs, transforms, errors."""

from __future__ import annotations

import numpy as np
import pytest

from flowtools.compensation import SpilloverMatrix
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
from flowtools.transforms import LinearTransform, RatioTransform

CH = ["A", "B", "C"]
EV = np.array([[1.0, 1.0, 5.0], [3.0, 3.0, 6.0], [5.0, 1.0, 7.0], [7.0, 7.0, 8.0], [9.0, 9.0, 9.0]])


def _rect(gid, dim, lo=None, hi=None, parent=None, **kw):
    return RectangleGate(gid, (Dimension(dim, **kw),), (lo,), (hi,), parent)


def test_parent_and_counts():
    s = GatingStrategy((_rect("big", "A", 2.0), _rect("mid", "B", None, 8.0, parent="big")))
    r = gate_events(s, EV, CH)
    assert r.counts() == {"big": 4, "mid": 3}
    rows = {row["population"]: row for row in r.rows()}
    assert rows["mid"]["path"] == "big/mid"
    assert rows["mid"]["pct_parent"] == pytest.approx(75.0)
    assert rows["mid"]["pct_total"] == pytest.approx(60.0)


def test_child_only_sees_parent_events():
    s = GatingStrategy((_rect("none", "A", 100.0), _rect("child", "B", 0.0, parent="none")))
    assert gate_events(s, EV, CH).count("child") == 0


def test_boolean_gates_and_complement():
    a = _rect("a", "A", 4.0)
    b = _rect("b", "B", None, 5.0)
    gates = (
        a,
        b,
        BooleanGate("and", "and", (("a", False), ("b", False))),
        BooleanGate("or", "or", (("a", False), ("b", False))),
        BooleanGate("not", "not", (("a", False),)),
        BooleanGate("andnot", "and", (("a", False), ("b", True))),
    )
    r = gate_events(GatingStrategy(gates), EV, CH)
    ma, mb = EV[:, 0] >= 4, EV[:, 1] < 5
    np.testing.assert_array_equal(r.mask("and"), ma & mb)
    np.testing.assert_array_equal(r.mask("or"), ma | mb)
    np.testing.assert_array_equal(r.mask("not"), ~ma)
    np.testing.assert_array_equal(r.mask("andnot"), ma & ~mb)


def test_quadrants():
    q = QuadrantGate(
        "Q",
        (QuadrantDivider("x", Dimension("A"), (4.0,)), QuadrantDivider("y", Dimension("B"), (4.0,))),
        (
            Quadrant("pp", (("x", 10), ("y", 10))),
            Quadrant("nn", (("x", 0), ("y", 0))),
            Quadrant("p_", (("x", 5),)),
        ),
    )
    r = gate_events(GatingStrategy((q,)), EV, CH)
    assert r.counts() == {"pp": 2, "nn": 2, "p_": 3}


def test_polygon_and_ellipsoid():
    poly = PolygonGate("p", (Dimension("A"), Dimension("B")), ((0, 0), (6, 0), (6, 6), (0, 6)))
    ell = EllipsoidGate("e", (Dimension("A"), Dimension("B")), (9.0, 9.0), ((1.0, 0.0), (0.0, 1.0)), 1.0)
    r = gate_events(GatingStrategy((poly, ell)), EV, CH)
    assert r.counts() == {"p": 3, "e": 1}


def test_compensation_refs_and_ratio_and_transform():
    m = SpilloverMatrix.from_array([[1.0, 0.5], [0.0, 1.0]], ["A", "B"], ["FA", "FB"])
    gates = (
        _rect("compB", "FB", None, 0.5, compensation="M"),  # B - 0.5 A < 0.5
        _rect("scaled", "C", 0.5, transform="lin"),  # (C + 0) / 10 >= 0.5
        RectangleGate("ratio", (Dimension("R", ratio=True),), (1.0,), (None,)),  # A / B >= 1
        _rect("fcs", "A", 4.0, compensation="FCS"),
    )
    s = GatingStrategy(
        gates,
        {
            "lin": LinearTransform(T=10.0, A=0.0),
            "R": RatioDefinition(RatioTransform(1.0, 0.0, 0.0), "A", "B"),
        },
        {"M": m},
    )
    r = gate_events(s, EV, CH)
    comp_b = EV[:, 1] - 0.5 * EV[:, 0]
    np.testing.assert_array_equal(r.mask("compB"), comp_b < 0.5)
    np.testing.assert_array_equal(r.mask("scaled"), EV[:, 2] / 10 >= 0.5)
    np.testing.assert_array_equal(r.mask("ratio"), EV[:, 0] / EV[:, 1] >= 1)
    np.testing.assert_array_equal(r.mask("fcs"), EV[:, 0] >= 4)  # no file matrix: FCS = uncompensated
    fcs = SpilloverMatrix.from_array([[1.0, 0.0], [1.0, 1.0]], ["A", "B"])
    r2 = gate_events(s, EV, CH, fcs_matrix=fcs)
    np.testing.assert_array_equal(r2.mask("fcs"), EV[:, 0] - EV[:, 1] >= 4)


def test_missing_channel_names_it():
    s = GatingStrategy((_rect("g", "CD99-A", 1.0),))
    with pytest.raises(ChannelError, match="no parameter 'CD99-A'") as exc:
        gate_events(s, EV, CH, sample_id="S1")
    assert exc.value.channel == "CD99-A" and "S1" in str(exc.value)


@pytest.mark.parametrize(
    ("gates", "match"),
    [
        ((_rect("a", "A", 1.0), _rect("a", "B", 1.0)), "defined twice"),
        ((_rect("a", "A", 1.0, parent="zz"),), "parent 'zz'"),
        (
            (BooleanGate("b", "and", (("a", False), ("c", False))), _rect("a", "A", 1.0)),
            "unknown population 'c'",
        ),
        ((_rect("a", "A", 1.0, parent="b"), _rect("b", "A", 1.0, parent="a")), "cycle"),
        ((_rect("a", "A", 1.0, compensation="nope"),), "compensation 'nope'"),
        ((_rect("a", "A", 1.0, transform="nope"),), "transformation 'nope'"),
    ],
)
def test_strategy_validation(gates, match):
    with pytest.raises(GatingError, match=match):
        GatingStrategy(gates)


def test_gate_geometry_validation():
    with pytest.raises(GatingError, match="min 5.0 > max 1.0"):
        RectangleGate("r", (Dimension("A"),), (5.0,), (1.0,))
    with pytest.raises(GatingError, match="at least 3 vertices"):
        PolygonGate("p", (Dimension("A"), Dimension("B")), ((0, 0), (1, 1)))
    with pytest.raises(GatingError, match="invertible"):
        EllipsoidGate("e", (Dimension("A"), Dimension("B")), (0.0, 0.0), ((1.0, 1.0), (1.0, 1.0)), 1.0)
    with pytest.raises(GatingError, match="exactly one reference"):
        BooleanGate("n", "not", (("a", False), ("b", False)))
