"""flowtools and FlowKit give identical counts for the same Gating-ML strategy on synthetic files.

A small version of ``benchmarks/bench_gating.py``: two synthetic FCS files (one woman, both tubes,
5000 events each, with ``$SPILLOVER``), a strategy with every gate type (rectangle, range,
polygon, self-intersecting polygon, ellipsoid, quadrant, a child of a quadrant, boolean
and/or/not with complements), dimensions compensated with the file's own spillover
(``compensation-ref="FCS"``) or uncompensated, logicle and linear transformations. The strategy
is exported with ``write_gatingml`` and the same XML document is evaluated by both tools.

One known disagreement is kept apart and documented: a gate that mixes an ``"FCS"`` and an
``"uncompensated"`` dimension, which FlowKit 1.3.2 evaluates with both dimensions compensated
(see ``test_mixed_compensation_*``).
"""

from __future__ import annotations

import gc
import warnings
from pathlib import Path

import numpy as np
import pytest

from flowtools.gating import (
    BooleanGate,
    Dimension,
    EllipsoidGate,
    GatingStrategy,
    PolygonGate,
    Quadrant,
    QuadrantDivider,
    QuadrantGate,
    RectangleGate,
    gate_sample,
)
from flowtools.gating.formats.gatingml import read_gatingml, write_gatingml
from flowtools.io import read_fcs
from flowtools.synth import make_cohort
from flowtools.transforms import LinearTransform, LogicleTransform


def _fl(detector: str, comp: str = "FCS") -> Dimension:
    return Dimension(detector, comp, "logicle")


def _strategy(edges: tuple[float, float, float]) -> GatingStrategy:
    """Gates on detectors both tubes have (FITC, PE, PerCP-Cy5.5, PE-Cy7, APC, APC-Cy7, BV421, BV510, BV605).

    ``edges``: FSC-A min, FSC-A max and an SSC-A cut that are values of actual events (scatter is
    integer-valued), so the inclusive minimum and exclusive maximum of rectangles and quadrant
    intervals are exercised on events that lie exactly on them.
    """
    fsc_lo, fsc_hi, ssc_cut = edges
    fsc_a, fsc_h, ssc_a = Dimension("FSC-A"), Dimension("FSC-H"), Dimension("SSC-A")
    fsc_lin, ssc_lin = Dimension("FSC-A", transform="lin"), Dimension("SSC-A", transform="lin")
    gates = [
        # polygon on raw scatter (uncompensated, no transformation)
        PolygonGate("Singlets", (fsc_a, fsc_h),
                    ((-1000.0, -1000.0), (262144.0, 190000.0), (262144.0, 262144.0), (-1000.0, 20000.0))),
        # 2-D rectangle on flin-scaled scatter, open above on SSC
        RectangleGate("Scatter", (fsc_lin, ssc_lin), (0.1, None), (0.7, 0.35), parent="Singlets"),
        # range (1-D rectangle, min only) on compensated, logicle CD45
        RectangleGate("CD45pos", (_fl("BV510-A"),), (0.45,), (None,), parent="Singlets"),
        # concave polygon on compensated logicle FITC x PerCP-Cy5.5
        PolygonGate("Concave", (_fl("FITC-A"), _fl("PerCP-Cy5.5-A")),
                    ((-0.2, -0.2), (0.9, -0.2), (0.9, 0.9), (0.45, 0.4), (-0.2, 0.9)), parent="CD45pos"),
        # self-intersecting (bow-tie) polygon: even-odd rule
        PolygonGate("Bowtie", (_fl("PE-A"), _fl("PE-Cy7-A")),
                    ((-0.2, -0.2), (0.9, 0.9), (0.9, -0.2), (-0.2, 0.9)), parent="CD45pos"),
        # ellipse with correlated axes
        EllipsoidGate("Ellipse", (_fl("PerCP-Cy5.5-A"), _fl("APC-Cy7-A")), (0.3, 0.3),
                      ((0.04, 0.01), (0.01, 0.03)), 4.0, parent="CD45pos"),
        # 3-D ellipsoid (all three dimensions compensated: see _MIXED for mixed references)
        EllipsoidGate("Ellipsoid3D", (_fl("FITC-A"), _fl("APC-A"), _fl("BV421-A")),
                      (0.7, 0.2, 0.2), ((0.004, 0.0, 0.001), (0.0, 0.01, 0.0), (0.001, 0.0, 0.01)), 4.0),
        # every fluorescence dimension above is compensated; this one is not (a gate of its own)
        RectangleGate("RawAPC", (_fl("APC-A", "uncompensated"),), (0.35,), (None,), parent="CD45pos"),
        # quadrants, and a range gate whose parent is one quadrant
        QuadrantGate(
            "Quad",
            (QuadrantDivider("qx", _fl("FITC-A"), (0.45,)),
             QuadrantDivider("qy", _fl("PerCP-Cy5.5-A"), (0.42,))),
            (
                Quadrant("Qpp", (("qx", 0.8), ("qy", 0.8))),
                Quadrant("Qpn", (("qx", 0.8), ("qy", 0.1))),
                Quadrant("Qnp", (("qx", 0.1), ("qy", 0.8))),
                Quadrant("Qnn", (("qx", 0.1), ("qy", 0.1))),
            ),
            parent="CD45pos",
        ),
        RectangleGate("QppChild", (_fl("BV605-A"),), (None,), (0.15,), parent="Qpp"),
        # events exactly on the bounds: min inclusive, max exclusive (rectangle and quadrant)
        RectangleGate("Edges", (fsc_a,), (fsc_lo,), (fsc_hi,)),
        QuadrantGate(
            "SSCsplit",
            (QuadrantDivider("ssc", ssc_a, (ssc_cut,)),),
            (Quadrant("SSClow", (("ssc", ssc_cut - 1.0),)), Quadrant("SSChigh", (("ssc", ssc_cut),))),
        ),
        # booleans, with complements, one with a parent
        BooleanGate("AndGate", "and", (("Concave", False), ("Ellipse", True))),
        BooleanGate("OrGate", "or", (("Bowtie", False), ("Qnp", False), ("Ellipsoid3D", False))),
        BooleanGate("NotGate", "not", (("Scatter", False),), parent="Singlets"),
    ]
    return GatingStrategy(
        tuple(gates),
        transforms={"logicle": LogicleTransform(T=262144.0, W=0.5, M=4.5, A=0.0),
                    "lin": LinearTransform(T=262144.0, A=0.0)},
    )


def _flowkit():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip("flowkit")


@pytest.fixture(scope="module")
def plate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    _flowkit()  # skip before generating anything when FlowKit is missing
    tmp = tmp_path_factory.mktemp("flowkit-agreement")
    cohort = make_cohort(tmp / "cohort", n_women=1, events=5000, seed=11, artefacts=False)
    paths = [Path(p) for p in cohort.files]
    assert len(paths) == 2
    return tmp, paths


def _edges(path: Path) -> tuple[float, float, float]:
    """FSC-A and SSC-A values that several events of the file take exactly."""
    sample = read_fcs(path)
    x = sample.as_array(preprocess=True)
    out = []
    for ch, q in (("FSC-A", 0.3), ("FSC-A", 0.7), ("SSC-A", 0.5)):
        col = x[:, sample.pnn.index(ch)]
        values, n = np.unique(col, return_counts=True)
        lo, hi = np.quantile(col, [q - 0.1, q + 0.1])
        near = values[(values >= lo) & (values <= hi) & (n >= 2)]
        assert near.size, f"no repeated {ch} value near the {q} quantile"
        out.append(float(near[near.size // 2]))
    return out[0], out[1], out[2]


def _flowtools_counts(xml: Path, paths: list[Path]) -> dict[str, dict[str, int]]:
    strategy = read_gatingml(xml)
    return {p.stem: gate_sample(strategy, read_fcs(p)).counts() for p in paths}


def _flowkit_counts(xml: Path, paths: list[Path]) -> dict[str, dict[str, int]]:
    flowkit = _flowkit()
    counts: dict[str, dict[str, int]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FlowKit leaves files open (ResourceWarning), pandas warnings
        session = flowkit.Session(gating_strategy=str(xml))
        session.add_samples([str(p) for p in paths])
        session.analyze_samples(use_mp=False)
        report = session.get_analysis_report()
        for sample_id, gate, n in zip(report["sample_id"], report["gate_name"], report["count"], strict=True):
            counts.setdefault(str(sample_id).removesuffix(".fcs"), {})[str(gate)] = int(n)
        del session, report
        gc.collect()
    return counts


def _mismatches(ours: dict, theirs: dict) -> list[tuple[str, str, int | None, int | None]]:
    return [
        (sample, pop, ours.get(sample, {}).get(pop), theirs.get(sample, {}).get(pop))
        for sample in sorted(set(ours) | set(theirs))
        for pop in sorted(set(ours.get(sample, {})) | set(theirs.get(sample, {})))
        if ours.get(sample, {}).get(pop) != theirs.get(sample, {}).get(pop)
    ]


@pytest.fixture(scope="module")
def both_counts(plate) -> tuple[dict, dict, GatingStrategy]:
    tmp, paths = plate
    edges = _edges(paths[0])
    x = read_fcs(paths[0]).as_array(preprocess=True)
    for value, col in zip(edges, (0, 0, 2), strict=True):  # FSC-A, FSC-A, SSC-A: events on every edge
        assert np.count_nonzero(x[:, col] == value) >= 2
    strategy = _strategy(edges)
    xml = write_gatingml(strategy, tmp / "strategy.xml")
    return _flowtools_counts(xml, paths), _flowkit_counts(xml, paths), strategy


def test_every_count_of_every_population_agrees(both_counts):
    ours, theirs, strategy = both_counts
    assert set(ours) == set(theirs)
    mismatches = _mismatches(ours, theirs)
    assert not mismatches, f"(sample, population, flowtools, flowkit): {mismatches}"
    assert set(next(iter(ours.values()))) == set(strategy.populations)


def test_the_strategy_is_not_vacuous(both_counts):
    """Every population holds events in some file, and none holds every event of its parent."""
    ours, _, strategy = both_counts
    for pid, pop in strategy.populations.items():
        counts = [c[pid] for c in ours.values()]
        assert max(counts) > 0, pid
        parent = [c[pop.parent] for c in ours.values()] if pop.parent else [5000] * len(counts)
        assert any(c < n for c, n in zip(counts, parent, strict=True)), pid


# A gate whose dimensions mix compensation references: FITC-A compensated with the file's spillover,
# APC-A uncompensated. Gating-ML 2.0 gives every dimension its own compensation-ref; in the Treg-Th
# tube APC-A receives spill from APC-R700-A (CD8), so the two readings of APC-A differ for CD8+ cells.
_MIXED = GatingStrategy(
    (RectangleGate("Mixed", (_fl("FITC-A"), _fl("APC-A", "uncompensated")), (-0.5, 0.35), (None, None)),),
    transforms={"logicle": LogicleTransform(T=262144.0, W=0.5, M=4.5, A=0.0)},
)


def _mixed_expected(path: Path, *, compensate_apc: bool) -> int:
    """The Mixed count computed directly with NumPy (``compensate_apc``: FlowKit 1.3.2's reading)."""
    from flowtools.compensation import SpilloverMatrix

    sample = read_fcs(path)
    raw = sample.as_array(preprocess=True)
    comp, names = SpilloverMatrix.from_fcs(sample).unmix(raw, sample.pnn)
    xf = _MIXED.transforms["logicle"]
    fitc = xf.apply(comp[:, names.index("FITC-A")])
    apc = xf.apply(comp[:, names.index("APC-A")] if compensate_apc else raw[:, sample.pnn.index("APC-A")])
    return int(((fitc >= -0.5) & (apc >= 0.35)).sum())


def test_mixed_compensation_follows_gatingml(plate):
    """flowtools reads each dimension with its own compensation-ref, as Gating-ML 2.0 says."""
    tmp, paths = plate
    ours = _flowtools_counts(write_gatingml(_MIXED, tmp / "mixed.xml"), paths)
    for p in paths:
        assert ours[p.stem]["Mixed"] == _mixed_expected(p, compensate_apc=False)
    # the data make the distinction visible: compensating APC-A too changes the count
    treg = next(p for p in paths if "TREG" in p.stem)
    assert _mixed_expected(treg, compensate_apc=True) != _mixed_expected(treg, compensate_apc=False)


@pytest.mark.xfail(
    reason="FlowKit 1.3.2 compensates the whole event matrix with the one compensation-ref found among a "
    "gate's dimensions and reads every dimension from it, so an 'uncompensated' dimension next to an "
    "'FCS' one is compensated too (GatingStrategy._preprocess_sample_events / _compensate_sample)",
    strict=False,
)
def test_mixed_compensation_agrees_with_flowkit(plate):
    tmp, paths = plate
    xml = write_gatingml(_MIXED, tmp / "mixed_fk.xml")
    assert not _mismatches(_flowtools_counts(xml, paths), _flowkit_counts(xml, paths))
