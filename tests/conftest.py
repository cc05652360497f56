"""Shared fixtures: the conformance data, and small generated FCS files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _helpers import shared_data_or_skip


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return shared_data_or_skip()


@pytest.fixture
def small_fcs(tmp_path: Path) -> Path:
    """A small FCS 3.1 file written by flowtools (500 events x 5 channels, with spillover)."""
    from flowtools.io import Spillover, write_fcs

    rng = np.random.default_rng(7)
    events = rng.normal(1000, 300, size=(500, 5)).astype(np.float32)
    events[:, 4] = np.arange(500, dtype=np.float32)
    spill = Spillover(("FITC-A", "PE-A"), np.array([[1.0, 0.12], [0.02, 1.0]]))
    path = tmp_path / "small.fcs"
    write_fcs(
        path,
        events,
        ["FSC-A", "SSC-A", "FITC-A", "PE-A", "Time"],
        markers=[None, None, "CD3", "CD4", None],
        spillover=spill,
        keywords={"$CYT": "test", "$SRC": "CANARY-PII source", "$OP": "CANARY-PII operator"},
    )
    return path
