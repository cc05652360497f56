"""Stability between seeds on the real blood files (CyTOF, ../shared/data/blood/cytonorm).

Skipped when the files are absent.
"""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import read_quiet, shared_data_or_skip

from flowtools.analysis import FlowSOM

pytestmark = pytest.mark.conformance


def blood_matrix() -> np.ndarray:
    d = shared_data_or_skip() / "blood" / "cytonorm"
    files = sorted(d.glob("*.fcs"))
    if not files:
        pytest.skip(f"no blood files in {d}")
    parts = []
    for f in files:
        s = read_quiet(f)
        cols = [i for i, c in enumerate(s.channels) if c.pns and c.pns != c.pnn
                and not c.pnn.lower().startswith(("time", "event", "cell_length", "bead", "dna"))]
        parts.append(np.arcsinh(s.as_array()[:, cols] / 5.0))
    widths = {p.shape[1] for p in parts}
    if len(widths) != 1:
        pytest.skip("blood files do not share one marker set")
    return np.ascontiguousarray(np.concatenate(parts))


def test_flowsom_is_stable_between_seeds():
    from sklearn.metrics import adjusted_rand_score  # here, not at collection (~1 s in every worker)

    x = blood_matrix()
    a = FlowSOM(n_clusters=10, random_state=0).fit_predict(x)
    b = FlowSOM(n_clusters=10, random_state=1).fit_predict(x)
    ari = adjusted_rand_score(a, b)
    assert ari > 0.6, ari
