"""Shared synthetic cohorts (truth tables only, no FCS files) for the statistics tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def planted_cohort(tmp_path_factory):
    """A 400-woman cohort with the planted effects (truth tables only)."""
    from flowtools.synth import make_cohort

    d = tmp_path_factory.mktemp("planted")
    make_cohort(d, n_women=400, seed=7, write_fcs=False, overwrite=True)
    return d


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory):
    """A 120-woman cohort with the planted effects."""
    from flowtools.synth import make_cohort

    d = tmp_path_factory.mktemp("small")
    make_cohort(d, n_women=120, seed=11, write_fcs=False, overwrite=True)
    return d
