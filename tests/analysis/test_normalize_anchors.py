"""Several anchors per batch (pooled, or matched by donor); the soft blend that keeps populations whole."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from flowtools.analysis.normalize import CytoNorm, fit_sheet
from flowtools.errors import NormalizationError

MARKERS = ["CD3", "CD4"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory):
    from flowtools.synth.batch import make_batch_cohort

    return make_batch_cohort(tmp_path_factory.mktemp("anchors") / "cohort", n_plates=3, n_women=6,
                             events=1500, seed=4)


@pytest.fixture(scope="module")
def template() -> Path:
    from flowtools._resources import study_template

    return Path(study_template("TBNK-NK"))


def _sheet(cohort, tmp: Path, cells: dict[str, str]) -> Path:
    """The cohort's sheet with the ``anchor`` cell of the named samples replaced."""
    with cohort.samples_csv.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        if r["sample_id"] in cells:
            r["anchor"] = cells[r["sample_id"]]
    out = cohort.samples_csv.parent / f"{tmp.name}.csv"  # beside the original: its file paths are relative
    with out.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return out


def _others(cohort, tube: str = "TBNK-NK") -> dict[str, list[str]]:
    """Batch -> its non-anchor sample IDs of the tube."""
    from flowtools.io.sample_sheet import read_sample_sheet

    out: dict[str, list[str]] = {}
    for r in read_sample_sheet(cohort.samples_csv):
        if r.tube == tube and not r.is_anchor:
            out.setdefault(r.batch, []).append(r.sample_id)
    return out


def test_pooled_uses_every_anchor_of_a_batch(cohort, template: Path, tmp_path: Path) -> None:
    extra = _others(cohort)["P01"][0]
    sheet = _sheet(cohort, tmp_path, {extra: "D900"})  # a second anchor donor on P01
    fr = fit_sheet(sheet, template, tmp_path / "m.json", min_events=500, markers=MARKERS, mode="global")
    m = fr.model
    assert m.anchor_files_ == {"P01": 2, "P02": 1, "P03": 1}
    assert m.n_events_["P01"] == 2 * m.n_events_["P02"]  # both files' events, pooled
    prov = json.loads((tmp_path / "m.json").read_text())["provenance"]
    assert sorted(a["donor"] for a in prov["anchors"]["P01"]) == ["D001", "D900"]
    assert any("anchor donors differ" in n for n in fr.notes)
    # pooling = fitting on the concatenation
    ref = CytoNorm(mode="global").fit(
        {b: [np.concatenate(list(v))] for b, v in _arrays(sheet, template, MARKERS).items()}, MARKERS)
    np.testing.assert_allclose(m.global_quantiles_, ref.global_quantiles_)


def _arrays(sheet: Path, template: Path, markers: list[str]) -> dict[str, list[np.ndarray]]:
    from flowtools.analysis.normalize import read_transformed
    from flowtools.gating.templates import load_template
    from flowtools.io.sample_sheet import read_sample_sheet

    t = load_template(template)
    out: dict[str, list[np.ndarray]] = {}
    for r in read_sample_sheet(sheet):
        if r.tube == t.tube and r.is_anchor:
            out.setdefault(r.batch, []).append(read_transformed(r.file, t, markers).x)
    return out


def test_matched_uses_the_common_donors_balanced(cohort, template: Path, tmp_path: Path) -> None:
    others = _others(cohort)
    # donor D900 on P01 and P02 (two aliquots on P01), not on P03: matched leaves it out
    cells = {others["P01"][0]: "D900", others["P01"][1]: "D900", others["P02"][0]: "D900"}
    sheet = _sheet(cohort, tmp_path, cells)
    fr = fit_sheet(sheet, template, tmp_path / "m.json", min_events=500, markers=MARKERS, mode="global",
                   anchors="matched")
    assert fr.model.anchor_files_ == {"P01": 1, "P02": 1, "P03": 1}
    assert len(set(fr.model.n_events_.values())) == 1  # D001 balanced to the same count on every plate
    assert fr.notes == []
    pooled = fit_sheet(sheet, template, tmp_path / "mp.json", min_events=500, markers=MARKERS, mode="global")
    assert any("anchor donors differ" in note for note in pooled.notes)  # what matched avoids
    # drop D001 from P03: P03's only donor is then D900 ... which P01 and P02 share, but P03 lacks D001
    cells[next(r for r in fr.anchors["P03"])] = "false"
    cells[others["P03"][0]] = "D900"
    sheet = _sheet(cohort, tmp_path, cells)
    fr = fit_sheet(sheet, template, tmp_path / "m2.json", min_events=500, markers=MARKERS, mode="global",
                   anchors="matched")
    assert {b: len(v) for b, v in fr.anchors.items()} == {"P01": 2, "P02": 1, "P03": 1}
    n = fr.model.n_events_
    assert n["P01"] == n["P02"] == n["P03"]  # D900 balanced, its P01 share split over two aliquots


def test_matched_without_a_common_donor_refuses(cohort, template: Path, tmp_path: Path) -> None:
    others = _others(cohort)
    anchors = {r: "false" for r in ("D001-P03-TBNK",)}
    sheet = _sheet(cohort, tmp_path, {**anchors, others["P03"][0]: "D777"})
    with pytest.raises(NormalizationError, match=r"needs an anchor donor present in every batch.*D777"):
        fit_sheet(sheet, template, tmp_path / "m.json", min_events=500, markers=MARKERS, anchors="matched")
    assert not (tmp_path / "m.json").exists()
    with pytest.raises(ValueError, match="anchors must be one of"):
        fit_sheet(sheet, template, tmp_path / "m.json", markers=MARKERS, anchors="every")


# ----------------------------------------------------------------------------------- split populations


def test_soft_blend_does_not_split_a_population_on_a_cluster_boundary() -> None:
    """Hard assignment (CytoNorm's) jumps between two clusters' splines at their boundary: a
    population that straddles it is torn apart. The soft blend passes smoothly from one to the other."""
    rng = np.random.default_rng(0)

    def pops(n: int, d1: float, d2: float) -> np.ndarray:
        # two populations told apart by m2; in batch B m1 moves up in one and down in the other
        p1 = np.column_stack([rng.normal(2.0, 0.3, n) + d1, rng.normal(1.0, 0.3, n)])
        p2 = np.column_stack([rng.normal(2.0, 0.3, n) + d2, rng.normal(3.0, 0.3, n)])
        return np.concatenate([p1, p2])

    anchors = {"A": [pops(3000, 0, 0)], "B": [pops(3000, 0.5, -0.5)]}
    path = np.column_stack([np.full(401, 2.0), np.linspace(1.0, 3.0, 401)])  # across the boundary
    steps = {}
    for soft in (0.0, 0.3):
        model = CytoNorm(n_clusters=2, xdim=4, ydim=4, rlen=5, n_resamples=5, soft=soft, goal="A",
                         prealign=False).fit(anchors, ["m1", "m2"])
        out = model.transform(path, "B")[:, 0]
        steps[soft] = float(np.max(np.abs(np.diff(out))))
        assert out[0] == pytest.approx(1.5, abs=0.1) and out[-1] == pytest.approx(2.5, abs=0.1)
    assert steps[0.0] > 0.5, steps  # hard: one jump of about the two shifts' difference
    assert steps[0.3] < 0.05, steps  # soft: no step larger than a tenth of it


def test_balance_donors_keeps_exactly_the_smallest_count() -> None:
    """Aliquots whose proportional shares do not round to the total (3 x 2/3 event) still sum to n."""
    from types import SimpleNamespace

    from flowtools.analysis.normalize_files import _balance_donors

    def rows(donor: str, sizes: list[int]) -> list[tuple[SimpleNamespace, np.ndarray]]:
        return [(SimpleNamespace(anchor_id=donor), np.zeros((m, 2))) for m in sizes]

    reads = {"P01": rows("D1", [1, 1, 1]), "P02": rows("D1", [2]), "P03": rows("D1", [5, 2])}
    out = _balance_donors(reads, seed=0)
    assert {b: sum(x.shape[0] for x in v) for b, v in out.items()} == {"P01": 2, "P02": 2, "P03": 2}
