"""Small synthetic bead plates shared by the bead tests (made once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def bead_plate(tmp_path_factory: pytest.TempPathFactory):
    """A 5-analyte plate, 12 women, 1500 events a well, with every planted problem."""
    from flowtools.synth.beads import make_bead_plate

    out = tmp_path_factory.mktemp("beadplate")
    return make_bead_plate(
        out,
        n_women=12,
        n_analytes=5,
        events_per_well=1500,
        seed=3,
        plate_id="T1",
        failed_region="IL-1b",
        sparse_region="TNF-a",
        shifted_region="IFN-a2",
        saturated_sample=True,
    )


@pytest.fixture(scope="session")
def bead_run(bead_plate, tmp_path_factory: pytest.TempPathFactory):
    """The plate above, analysed (tables written)."""
    from flowtools.beads.plate import run_bead_plate

    out: Path = tmp_path_factory.mktemp("beadrun")
    return run_bead_plate(bead_plate.sheet, bead_plate.panel, out)
