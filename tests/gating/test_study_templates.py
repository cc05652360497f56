"""The study's own templates on a synthetic cohort, scored against its truth labels.

Targets (issue): F1 >= 0.95 for the major populations in every sample, and median absolute error
of % of parent <= 0.5 points for NK (% of lymphocytes), Treg and Th17 (% of CD4).
`python scripts/template_accuracy.py` prints the full table on a bigger cohort.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from flowtools.gating.formats.gatingml import read_gatingml, to_gatingml_string
from flowtools.gating.templates import load_template, resolve
from flowtools.io import read_fcs
from flowtools.io.sample_sheet import read_sample_sheet
from flowtools.synth import make_cohort
from flowtools.synth.evaluate import STUDY_PARENTS, STUDY_TRUTH_MAP, read_labels, score_sample, summarise

TEMPLATES = Path(__file__).resolve().parents[2] / "gating_templates"
MAJOR = {
    "rm_tbnk_nk": ["singlets", "live", "lymphocytes", "monocytes", "granulocytes", "T cells", "T cells/CD4",
                   "T cells/CD8", "B cells", "NK cells"],
    "rm_treg_th": ["singlets", "lymphocytes", "CD3+/CD4", "CD3+/CD8"],
}
PCT_TARGETS = {"rm_tbnk_nk": ["NK cells"], "rm_treg_th": ["Treg", "Th17"]}


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    cohort = make_cohort(tmp_path_factory.mktemp("study") / "c", n_women=6, events=20_000, seed=21)
    sheet = read_sample_sheet(cohort.samples_csv)
    out = {}
    for name in ("rm_tbnk_nk", "rm_treg_th"):
        t = load_template(TEMPLATES / f"{name}.yaml")
        rows = []
        for r in sheet:
            if r.tube != t.tube:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                s = read_fcs(r.file)
            (res,) = resolve(t, [s], sample_ids=[r.sample_id])
            assert res.error is None, res.error
            # Each sample's resolved gates export to Gating-ML and re-apply to the same counts.
            from flowtools.gating import gate_sample

            again = read_gatingml(to_gatingml_string(res.strategy))
            assert gate_sample(again, s).counts() == res.result.counts()
            labels, codes, valid = read_labels(cohort.truth_dir, r.sample_id)
            masks = {p: res.mask(p) for p in res.ids}
            rows += score_sample(masks, labels, codes, STUDY_TRUTH_MAP[name], STUDY_PARENTS[name], valid)
        out[name] = rows
    return out


@pytest.mark.parametrize("name", ["rm_tbnk_nk", "rm_treg_th"])
def test_major_populations_f1(scored, name):
    low = [(r["population"], round(r["f1"], 3)) for r in scored[name] if r["population"] in MAJOR[name]
           and not r["f1"] >= 0.95]
    assert not low, low


@pytest.mark.parametrize("name", ["rm_tbnk_nk", "rm_treg_th"])
def test_key_percentages(scored, name):
    summary = {r["population"]: r for r in summarise(scored[name])}
    for pop in PCT_TARGETS[name]:
        assert summary[pop]["median_abs_error_points"] <= 0.5, summary[pop]
