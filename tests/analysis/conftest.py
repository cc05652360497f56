"""A small synthetic cohort (and its gate run) shared by the analysis tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # _synth_events


@pytest.fixture(scope="session")
def synth_cohort(tmp_path_factory) -> Path:
    from flowtools.synth import make_cohort

    out = tmp_path_factory.mktemp("cohort")
    make_cohort(out, n_women=4, events=20_000, seed=11, artefacts=False)
    return out


@pytest.fixture(scope="session")
def gate_run(synth_cohort, tmp_path_factory) -> Path:
    from flowtools._resources import study_template
    from flowtools.pipeline.plate import run_plate

    out = synth_cohort / "gated"
    res = run_plate(synth_cohort / "samples.csv", [study_template("TBNK-NK")], out, jobs=1)
    assert res.n_ok == 4
    return out
