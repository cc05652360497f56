"""GatingStrategy.extended equals a build from scratch (populations, order, errors) on random strategies."""

from __future__ import annotations

import numpy as np
import pytest

from flowtools.errors import GatingError
from flowtools.gating.gates import (
    FCS_COMPENSATION,
    UNCOMPENSATED,
    BooleanGate,
    Dimension,
    EllipsoidGate,
    Gate,
    PolygonGate,
    Quadrant,
    QuadrantDivider,
    QuadrantGate,
    RatioDefinition,
    RectangleGate,
)
from flowtools.gating.strategy import GatingStrategy
from flowtools.transforms import LogicleTransform, RatioTransform


def _dim(rng: np.random.Generator, transforms: dict[str, object]) -> Dimension:
    comp = [UNCOMPENSATED, FCS_COMPENSATION][rng.integers(2)]
    kind = rng.integers(3)
    if kind == 0 and "ratio" in transforms:
        return Dimension("ratio", comp, None, ratio=True)
    tid = "lg" if kind == 1 and "lg" in transforms else None
    return Dimension(f"FL{rng.integers(1, 5)}-A", comp, tid)


def random_gates(rng: np.random.Generator, n: int, transforms: dict[str, object]) -> list[Gate]:
    """``n`` valid gates of every kind, parents and references among earlier populations."""
    gates: list[Gate] = []
    pops: list[str] = []
    for k in range(n):
        gid = f"g{k}"
        parent = None if not pops or rng.random() < 0.3 else pops[rng.integers(len(pops))]
        kind = rng.integers(5)
        if kind == 0:
            lo = (float(rng.random()),)
            gates.append(RectangleGate(gid, (_dim(rng, transforms),), lo, (None,), parent))
        elif kind == 1:
            verts = ((0.0, 0.0), (1.0, 0.0), (float(rng.random()), 1.0))
            gates.append(PolygonGate(gid, (_dim(rng, transforms), _dim(rng, transforms)), verts, parent))
        elif kind == 2:
            gates.append(EllipsoidGate(gid, (_dim(rng, transforms), _dim(rng, transforms)), (0.5, 0.5),
                                       ((1.0, 0.1), (0.1, 2.0)), 1.5, parent))
        elif kind == 3:
            divs = (QuadrantDivider(f"{gid}_x", _dim(rng, transforms), (0.5,)),
                    QuadrantDivider(f"{gid}_y", _dim(rng, transforms), (0.5,)))
            quads = tuple(Quadrant(f"{gid}_q{j}", ((f"{gid}_x", sx), (f"{gid}_y", sy)))
                          for j, (sx, sy) in enumerate([(1.0, 1.0), (0.0, 1.0), (1.0, 0.0)]))
            gates.append(QuadrantGate(gid, divs, quads, parent))
            pops.extend(q.id for q in quads)
            continue
        elif pops:
            refs = tuple((pops[i], bool(rng.integers(2))) for i in rng.choice(len(pops), min(2, len(pops)),
                                                                                replace=False))
            op = "not" if len(refs) == 1 else ["and", "or"][rng.integers(2)]
            gates.append(BooleanGate(gid, op, refs[:1] if op == "not" else refs, parent))
        else:
            gates.append(RectangleGate(gid, (_dim(rng, transforms),), (None,), (1.0,), parent))
        pops.append(gid)
    return gates


def _transforms() -> dict[str, object]:
    return {"lg": LogicleTransform(T=262144.0, W=0.5, M=4.5, A=0.0),
            "ratio": RatioDefinition(RatioTransform(1.0, 0.0, 0.0), "FL1-A", "FL2-A")}


def _same(a: GatingStrategy, b: GatingStrategy) -> None:
    assert a == b
    assert list(a.populations.items()) == list(b.populations.items())
    assert a.order == b.order == tuple(b.populations)
    assert all(a.path(p) == b.path(p) for p in b.populations)
    assert a.channels_used() == b.channels_used()


@pytest.mark.parametrize("seed", range(40))
def test_extending_gate_by_gate_equals_building_from_scratch(seed: int) -> None:
    rng = np.random.default_rng(seed)
    transforms = _transforms()
    gates = random_gates(rng, int(rng.integers(1, 30)), transforms)
    s = GatingStrategy((), {}, {})
    added: list[Gate] = []
    cuts = sorted({0, len(gates), *rng.integers(0, len(gates) + 1, size=4).tolist()})
    for lo, hi in zip(cuts, cuts[1:], strict=False):
        # transformations arrive along the way, as templates add them (a superset each time)
        ts = transforms if hi > len(gates) // 2 else {**transforms}
        s = s.extended(gates[lo:hi], ts)
        added.extend(gates[lo:hi])
        _same(s, GatingStrategy(tuple(added), ts, {}))


def test_extended_without_arguments_is_a_copy_and_leaves_the_original_alone() -> None:
    s = GatingStrategy(tuple(random_gates(np.random.default_rng(1), 12, _transforms())), _transforms(), {})
    before = list(s.populations.items())
    t = s.extended()
    _same(t, s)
    u = t.extended([RectangleGate("extra", (Dimension("FL1-A"),), (0.0,), (None,), s.order[-1])])
    assert u.order == (*s.order, "extra")
    with pytest.raises(GatingError, match="defined twice"):
        t.extended([s.gates[0]])
    assert list(s.populations.items()) == before
    assert t.transforms is not s.transforms and t.matrices is not s.matrices


def test_populations_is_a_fresh_dict_each_time() -> None:
    s = GatingStrategy(tuple(random_gates(np.random.default_rng(3), 8, _transforms())), _transforms(), {})
    p = s.populations
    p.clear()
    assert len(s.populations) == len(s.order) > 0


def test_a_changed_transformation_rebuilds_and_validates_everything() -> None:
    lg = Dimension("FL1-A", UNCOMPENSATED, "lg")
    first = {"lg": LogicleTransform(T=1e4, W=0.5, M=4.5, A=0.0)}
    s = GatingStrategy((RectangleGate("a", (lg,), (0.1,), (None,)),), first)
    other = {"lg": LogicleTransform(T=262144.0, W=0.5, M=4.5, A=0.0)}
    _same(s.extended((), other), GatingStrategy(s.gates, other))
    with pytest.raises(GatingError, match="transformation 'lg' is not defined"):
        s.extended((), {})


def _error(fn):  # noqa: ANN001, ANN202 - test helper
    try:
        fn()
    except GatingError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("seed", range(30))
def test_invalid_extensions_raise_what_a_build_from_scratch_raises(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    transforms = _transforms()
    base = random_gates(rng, int(rng.integers(2, 15)), transforms)
    s = GatingStrategy(tuple(base), transforms, {})
    d = Dimension("FL1-A")
    bad = [
        [RectangleGate(base[0].id, (d,), (0.0,), (None,))],  # gate id repeats
        [RectangleGate("new", (d,), (0.0,), (None,), "nowhere")],  # unknown parent
        [RectangleGate("new", (Dimension("FL1-A", UNCOMPENSATED, "nope"),), (0.0,), (None,))],
        [RectangleGate("new", (Dimension("FL1-A", "no-matrix"),), (0.0,), (None,))],
        [RectangleGate("new", (Dimension("lg", UNCOMPENSATED, None, ratio=True),), (0.0,), (None,))],
        [BooleanGate("new", "and", ((base[0].id, False), ("ghost", True)))],
        # a cycle among new gates: each the other's parent
        [RectangleGate("c1", (d,), (0.0,), (None,), "c2"), RectangleGate("c2", (d,), (0.0,), (None,), "c1")],
        [BooleanGate("b1", "or", (("b2", False), (base[-1].id, False))),
         BooleanGate("b2", "not", (("b1", False),))],
    ]
    if isinstance(base[0], QuadrantGate):  # a population id (quadrant) that repeats
        bad.append([RectangleGate(base[0].quadrants[0].id, (d,), (0.0,), (None,))])
    for gates in bad:
        want = _error(lambda g=gates: GatingStrategy((*base, *g), transforms, {}))
        assert want is not None
        assert _error(lambda g=gates: s.extended(g, transforms)) == want

