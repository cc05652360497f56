"""Shared fixtures: the conformance data, small generated FCS files, and the gated synthetic cohorts."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


# ------------------------------------------------------------------------------------------ gated cohorts


@dataclass(frozen=True)
class GatedCohort:
    """A synthetic cohort and one serial plate run over it, shared by the whole session: read-only.

    A test that must change an input or an output copies it into its own ``tmp_path`` first
    (``shutil.copytree(gc.cohort.out_dir, ...)``); the fixture checks at the end of the session that
    nothing under ``root`` was changed, added or removed.
    """

    root: Path
    cohort: Any  # flowtools.synth.CohortResult
    templates: tuple[Path, ...]  # the template files the run used
    plate: Any  # flowtools.pipeline.plate.PlateResult of run_plate(samples.csv, templates, run_dir, jobs=1)

    @property
    def cohort_dir(self) -> Path:
        return self.cohort.out_dir

    @property
    def run_dir(self) -> Path:
        return self.plate.out_dir


#: Study templates are named by tube; anything with a newline is a template's YAML text.
TemplateSpec = str


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="session")
def gated_cohort(tmp_path_factory) -> Iterator[Callable[..., GatedCohort]]:
    """``gated_cohort(n_women=, events=, seed=, artefacts=, templates=)``: a cohort + one plate run.

    Each distinct request is built once per session (``make_cohort`` then ``run_plate(..., jobs=1)``)
    and handed to every module that asks for the same one. ``templates``: study template tube names
    (``"TBNK-NK"``) or template YAML texts. ``templates=()`` gives the cohort without a run
    (``plate`` is None).
    """
    from flowtools._resources import study_template
    from flowtools.pipeline.plate import run_plate
    from flowtools.synth import make_cohort

    built: dict[tuple, GatedCohort] = {}

    def get(
        *,
        n_women: int,
        events: int,
        seed: int,
        artefacts: bool = True,
        templates: Sequence[TemplateSpec] = (),
    ) -> GatedCohort:
        key = (n_women, events, seed, artefacts, tuple(templates))
        if key not in built:
            root = tmp_path_factory.mktemp("gated_cohort")
            cohort = make_cohort(
                root / "cohort", n_women=n_women, events=events, seed=seed, artefacts=artefacts
            )
            paths = []
            for k, t in enumerate(templates):
                if "\n" in t:
                    p = root / f"template{k}.yaml"
                    p.write_text(t, encoding="utf-8")
                    paths.append(p)
                else:
                    paths.append(study_template(t))
            plate = run_plate(cohort.samples_csv, paths, root / "run", jobs=1) if paths else None
            built[key] = GatedCohort(root, cohort, tuple(paths), plate)
            digests[key] = _tree_digest(root)
        return built[key]

    digests: dict[tuple, dict[str, str]] = {}
    yield get
    for key, gc in built.items():
        after = _tree_digest(gc.root)
        before = digests[key]
        changed = sorted(set(after) ^ set(before) | {f for f in after if after[f] != before.get(f)})
        assert not changed, f"a test changed the shared gated cohort {key} under {gc.root}: {changed[:10]}"
