"""The plan's block and whole-column modes equal a plain-numpy evaluation on every real FCS file under
../shared/data.

Each readable file gets a strategy built from its own channels and values: a range
and a polygon on the first two channels (uncompensated, scale values), a child
quadrant on logicle-transformed channels compensated with the file's $SPILLOVER
where it has one, and a boolean gate. Masks must be identical bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import manifest_rows, read_quiet, shared_data_or_skip
from reference.gating_ref import strategy_masks_ref

from flowtools.compensation import SpilloverMatrix
from flowtools.errors import FlowtoolsError
from flowtools.gating import (
    BooleanGate,
    Dimension,
    GatingStrategy,
    PolygonGate,
    Quadrant,
    QuadrantDivider,
    QuadrantGate,
    RectangleGate,
)
from flowtools.gating.engine import Plan, sample_events
from flowtools.transforms import LogicleTransform

FCS_ROWS = manifest_rows("fcs")

pytestmark = pytest.mark.conformance


def _strategy(sample, fcs: SpilloverMatrix | None) -> GatingStrategy:
    ev = sample.as_array(preprocess=True)
    names = sample.pnn
    a, b = names[0], names[1 % len(names)]
    qa, qb = np.nanquantile(ev[:, 0], [0.1, 0.9]), np.nanquantile(ev[:, 1 % len(names)], [0.1, 0.9])
    gates = [
        RectangleGate("range", (Dimension(a),), (float(qa[0]),), (None,)),
        PolygonGate("poly", (Dimension(a), Dimension(b)),
                    ((float(qa[0]), float(qb[0])), (float(qa[1]), float(qb[0])),
                     (float(qa[1]), float(qb[1]))),
                    "range"),
    ]
    if fcs is not None:
        d1, d2 = fcs.detectors[0], fcs.detectors[-1]
        dims = (Dimension(d1, "FCS", "lg"), Dimension(d2, "FCS", "lg"))
        gates.append(QuadrantGate(
            "q", (QuadrantDivider("x", dims[0], (0.3,)), QuadrantDivider("y", dims[1], (0.3,))),
            (Quadrant("pp", (("x", 1.0), ("y", 1.0))), Quadrant("nn", (("x", 0.0), ("y", 0.0)))), "poly"))
        gates.append(BooleanGate("either", "or", (("pp", False), ("nn", False)), "range"))
    else:
        gates.append(BooleanGate("notpoly", "and", (("range", False), ("poly", True))))
    top = float(np.nanmax(np.abs(ev))) if ev.size else 1.0
    return GatingStrategy(tuple(gates), {"lg": LogicleTransform(max(top, 1.0), 0.5, 4.5, 0.0)})


@pytest.mark.parametrize("row", FCS_ROWS, ids=[r["path"] for r in FCS_ROWS] or None)
def test_plan_equals_the_plain_evaluation_on_real_files(row):
    data = shared_data_or_skip()
    try:
        sample = read_quiet(data / row["path"])
    except FlowtoolsError:
        pytest.skip("refused by the reader (tested in test_fcs_conformance)")
    if sample.n_events == 0 or sample.n_channels < 2:
        pytest.skip("no events or a single channel")
    fcs = SpilloverMatrix.from_fcs(sample) if sample.spillover is not None else None
    if fcs is not None and (fcs.is_spectral or not set(fcs.detectors) <= set(sample.pnn)):
        fcs = None
    s = _strategy(sample, fcs)
    events, columns = sample_events(s, sample, fcs)
    ref = strategy_masks_ref(s, events, sample.pnn, fcs, columns)
    assert ref, "the reference evaluated no population"
    for block in (1000, 16_384, None):
        got = Plan(s, events, sample.pnn, fcs, columns, where=row["path"], block_rows=block).run()
        for pid in ref:
            assert np.array_equal(got[pid], ref[pid]), (pid, block)
