"""The synthetic cohort (and its gate run) shared by the analysis tests: the session's gated cohort."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # _synth_events


@pytest.fixture(scope="session")
def study_run(gated_cohort):
    """4 women x 20,000 events (seed 11, no artefacts), gated with the TBNK-NK study template."""
    gc = gated_cohort(n_women=4, events=20_000, seed=11, artefacts=False, templates=("TBNK-NK",))
    assert gc.plate.n_ok == 4
    return gc


@pytest.fixture(scope="session")
def synth_cohort(study_run) -> Path:
    return study_run.cohort_dir


@pytest.fixture(scope="session")
def gate_run(study_run) -> Path:
    return study_run.run_dir
