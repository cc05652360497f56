"""``flowtools cluster`` on any gate run, on the values the gates saw (issue 17, item 4).

Regression: clustering accepted only the study's two tubes, found the sample sheet only when it
was named ``samples.csv``, and clustered on each file's $SPILLOVER and a fixed logicle whatever the
template said. Here a run is made with a template that is not a study template (tube
``NK-panel``, a spillover matrix from a CSV file, asinh for fluorescence and a non-default logicle
for CD56), from a sheet named ``plate7_sheet.csv`` in a folder of its own.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from flowtools.analysis import cluster_cohort
from flowtools.errors import FlowtoolsWarning

TUBE = "NK-panel"
TEMPLATE = """\
name: nk_custom
tube: NK-panel
compensation: spill_half.csv
transforms:
  fluorescence: {asinh: {T: 262144, M: 4.0, A: 0.5}}
  scatter: none
  time: none
  channels: {CD56: {logicle: {T: 262144, W: 1.0, M: 4.5, A: 0.5}}}
populations:
  - name: cells
    dims: [FSC-A, SSC-A]
    gate: {rectangle: [[20000, 250000], [5000, 250000]]}
  - name: T
    parent: cells
    dims: [CD3]
    gate: {range: [0.6, null]}
"""
FLUORESCENCE = ["CD3", "CD16", "CD4", "CD56", "CD19", "CD8", "Viability", "CD45", "CD14", "HLA-DR"]
SMALL = {"n_clusters": 4, "embed": None, "seed": 0, "method_params": {"xdim": 4, "ydim": 4}}


def _read(path):
    from flowtools.io import read_fcs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_fcs(path)


@pytest.fixture(scope="module")
def custom_run(study_run, tmp_path_factory):
    """A gate run of the session cohort's TBNK-NK files as tube NK-panel, with the custom template."""
    from flowtools.pipeline.plate import run_plate

    root = tmp_path_factory.mktemp("any_run")
    sheet = pd.read_csv(study_run.cohort.samples_csv)
    sheet = sheet[sheet["tube"] == "TBNK-NK"].copy()
    sheet["file"] = [str((study_run.cohort_dir / f).resolve()) for f in sheet["file"]]
    sheet["tube"] = TUBE
    (root / "inputs").mkdir()
    sheet_path = root / "inputs" / "plate7_sheet.csv"
    sheet.to_csv(sheet_path, index=False)
    # a matrix of its own: half the files' spillover (neither the $SPILLOVER nor none)
    first = _read(sheet["file"].iloc[0])
    m = np.asarray(first.spillover.matrix, dtype=float)
    half = np.eye(len(m)) + 0.5 * (m - np.eye(len(m)))
    tdir = root / "templates"
    tdir.mkdir()
    (tdir / "spill_half.csv").write_text(
        ",".join(first.spillover.detectors) + "\n"
        + "\n".join(",".join(repr(float(v)) for v in row) for row in half) + "\n", encoding="utf-8")
    (tdir / "nk_custom.yaml").write_text(TEMPLATE, encoding="utf-8")
    plate = run_plate(sheet_path, [tdir / "nk_custom.yaml"], root / "run", jobs=1)
    assert plate.n_ok == len(sheet) == 4
    return root, root / "run", sheet_path, tdir / "nk_custom.yaml"


def test_any_tube_any_sheet_name_default_markers(custom_run, tmp_path):
    root, run, sheet_path, template_path = custom_run
    res = cluster_cohort(run, population="cells", out_dir=tmp_path / "cl", events_per_sample=1000, **SMALL)
    assert res.tube == TUBE and len(res.samples) == 4 and not res.errors and not res.warnings
    # the fluorescence parameters, by marker (no scatter, no time)
    assert res.markers == FLUORESCENCE
    pops = pd.read_csv(run / "populations.csv")
    cells = pops[pops["population"] == "cells"].set_index("sample_id")["count"]
    assert res.table.groupby("sample_id")["count"].sum().to_dict() == cells.to_dict()
    assert (res.table["tube"] == TUBE).all()
    prov = json.loads(res.files["provenance"].read_text())
    assert prov["inputs"]["samples.csv"] == json.loads((run / "provenance.json").read_text())["inputs"][
        "samples.csv"]
    scale = prov["scale"]
    assert scale["template"] == "nk_custom" and scale["tube"] == TUBE
    assert Path(scale["file"]) == template_path and prov["template"]["path"] == "nk_custom.yaml"
    assert scale["compensation"]["kind"] == "matrix"
    assert Path(scale["compensation"]["file"]).name == "spill_half.csv"
    assert scale["markers"]["CD3"] == {"channel": "FITC-A", "kind": "fluorescence",
                                       "transform": {"asinh": {"T": 262144, "M": 4.0, "A": 0.5}}}
    assert scale["markers"]["CD56"]["transform"] == {"logicle": {"T": 262144, "W": 1.0, "M": 4.5, "A": 0.5}}
    assert res.scale == scale


def test_clustered_values_are_the_gates_values(custom_run, tmp_path):
    """Every event of the population, on the template's compensation and transforms (not $SPILLOVER)."""
    from flowtools.compensation import SpilloverMatrix
    from flowtools.gating.templates import load_template, resolve
    from flowtools.transforms.scales import LogicleTransform

    root, run, sheet_path, template_path = custom_run
    markers = ["CD3", "CD56", "CD4", "CD8"]
    # more events per sample than the population has: the fit holds every event, in file order
    res = cluster_cohort(run, population="T", markers=markers, out_dir=tmp_path / "cl",
                         events_per_sample=10**9, **SMALL)
    t = load_template(template_path)
    sheet = pd.read_csv(sheet_path).set_index("sample_id")
    for i, row in enumerate(res.samples):
        sample = _read(sheet.loc[row["sample_id"], "file"])
        (resolved,) = resolve(t, [sample], sample_ids=[row["sample_id"]])
        mask = resolved.mask("cells/T")
        want = np.column_stack([resolved.values(m)[mask] for m in markers])
        got = res.fit_x[res.fit_sample == i]
        np.testing.assert_array_equal(got, want)
        # the gate cut CD3 on this scale: every clustered event is at or above it
        assert got[:, 0].min() >= 0.6
        # the old rule (file's $SPILLOVER, one fixed logicle) gives other values
        old = SpilloverMatrix.from_fcs(sample).apply(sample.as_array(preprocess=True), sample.pnn)
        old_cd3 = LogicleTransform(T=262144.0, W=0.5, M=4.5, A=0.0).apply(
            np.ascontiguousarray(old[mask, sample.channel_index("CD3")]))
        assert np.abs(old_cd3 - got[:, 0]).max() > 0.05
        # MFIs: medians of the template-compensated (untransformed) and of the transformed values
        labels = res.model.predict(want)
        c = int(np.bincount(labels).argmax())
        rec = res.table[(res.table["sample_id"] == row["sample_id"])
                        & (res.table["cluster"] == f"cluster_{c:02d}")].iloc[0]
        cd4 = resolved.channel(sample.channels[sample.channel_index("CD4")].pnn)[mask]
        assert rec["mfi_CD4"] == pytest.approx(float(np.median(cd4[labels == c])))
        assert rec["mfi_CD4_transformed"] == pytest.approx(float(np.median(want[labels == c, 2])))


def _bare_copy(run: Path, dest: Path, *, cache: bool = False) -> Path:
    """The run's tables, gates and provenance without its neighbours (and its cache only if asked).

    The recorded input paths are dropped, as on another machine (or a run written before they were
    recorded): the sheet and template are then found by their hashes only.
    """
    dest.mkdir(parents=True)
    shutil.copy(run / "populations.csv", dest / "populations.csv")
    prov = json.loads((run / "provenance.json").read_text())
    prov.pop("input_paths", None)
    for rec in prov.get("templates", {}).values():
        rec.pop("path", None)
    (dest / "provenance.json").write_text(json.dumps(prov))
    shutil.copytree(run / "gates", dest / "gates")
    if cache:
        shutil.copytree(run / ".cache", dest / ".cache")
    return dest


def test_missing_sheet_names_what_was_looked_for(custom_run, tmp_path):
    root, run, sheet_path, template_path = custom_run
    moved = _bare_copy(run, tmp_path / "elsewhere" / "run", cache=True)
    want = json.loads((run / "provenance.json").read_text())["inputs"]["samples.csv"]
    with pytest.raises(FileNotFoundError) as info:
        cluster_cohort(moved, population="cells", markers=["CD3"], **SMALL)
    msg = str(info.value)
    assert want in msg and "--samples" in msg
    fcs_dir = Path(pd.read_csv(sheet_path)["file"].iloc[0]).parent
    for place in (moved, moved.parent, fcs_dir, fcs_dir.parent):
        assert str(place) in msg
    # the sheet given: the template is looked for next, and named as the run recorded it
    with pytest.raises(FileNotFoundError) as info:
        cluster_cohort(moved, population="cells", markers=["CD3"], samples_csv=sheet_path, **SMALL)
    msg = str(info.value)
    assert "nk_custom.yaml" in msg and "--template" in msg and str(moved) in msg
    # both given: it clusters, on the same values as beside the run
    a = cluster_cohort(moved, population="cells", markers=["CD3", "CD56"], samples_csv=sheet_path,
                       template=template_path, out_dir=tmp_path / "a", events_per_sample=500, **SMALL)
    b = cluster_cohort(run, population="cells", markers=["CD3", "CD56"], out_dir=tmp_path / "b",
                       events_per_sample=500, **SMALL)
    np.testing.assert_array_equal(a.fit_x, b.fit_x)
    assert not a.warnings


def test_recorded_paths_find_the_sheet_and_template_of_a_moved_run(custom_run, tmp_path):
    root, run, sheet_path, template_path = custom_run
    moved = tmp_path / "far" / "run"
    moved.mkdir(parents=True)
    for name in ("populations.csv", "provenance.json"):
        shutil.copy(run / name, moved / name)
    shutil.copytree(run / "gates", moved / "gates")
    a = cluster_cohort(moved, population="cells", markers=["CD3"], out_dir=tmp_path / "a",
                       events_per_sample=500, **SMALL)
    assert not a.warnings


def test_a_population_failed_in_one_sample_is_reported(custom_run, tmp_path):
    root, run, sheet_path, template_path = custom_run
    moved = _bare_copy(run, tmp_path / "run")
    pops = pd.read_csv(moved / "populations.csv", dtype={"status": object, "reason": object})
    sid = pops["sample_id"].iloc[0]
    hit = (pops["sample_id"] == sid) & (pops["population"] == "cells/T")
    pops.loc[hit, ["gate_id", "count"]] = np.nan
    pops.loc[hit, ["status", "reason"]] = ["failed", "no valley"]
    pops.to_csv(moved / "populations.csv", index=False)
    res = cluster_cohort(moved, population="T", markers=["CD3"], samples_csv=sheet_path,
                         template=template_path, out_dir=tmp_path / "cl", events_per_sample=200, **SMALL)
    assert len(res.samples) == 3 and res.errors == [f"{sid}: population 'cells/T' failed in the gate run "
                                                   "(no valley)"]


def test_no_provenance_is_named(tmp_path):
    from flowtools.analysis.cohort import find_sample_sheet

    with pytest.raises(FileNotFoundError, match="provenance.json"):
        find_sample_sheet(tmp_path)


def test_another_template_warns_and_a_wrong_tube_fails(custom_run, tmp_path):
    from flowtools._resources import study_template
    from flowtools.errors import GatingError

    root, run, sheet_path, template_path = custom_run
    shutil.copy(template_path.parent / "spill_half.csv", tmp_path / "spill_half.csv")
    edited = tmp_path / "edited.yaml"
    edited.write_text(TEMPLATE.replace("M: 4.0", "M: 4.5"), encoding="utf-8")
    with pytest.warns(FlowtoolsWarning, match="not the one the run gated"):
        res = cluster_cohort(run, population="T", markers=["CD3"], template=edited, out_dir=tmp_path / "cl",
                             events_per_sample=200, **SMALL)
    assert res.warnings and json.loads(res.files["provenance"].read_text())["warnings"] == res.warnings
    with pytest.raises(GatingError, match="is for tube 'TBNK-NK'"):
        cluster_cohort(run, population="T", markers=["CD3"], template=study_template("TBNK-NK"), **SMALL)


def test_linear_scatter_beside_transformed_markers_warns(custom_run, tmp_path):
    root, run, sheet_path, template_path = custom_run
    with pytest.warns(FlowtoolsWarning, match="'FSC-A' spreads over"):
        res = cluster_cohort(run, population="cells", markers=["FSC-A", "CD3"], out_dir=tmp_path / "cl",
                             events_per_sample=200, **SMALL)
    assert res.scale["markers"]["FSC-A"] == {"channel": "FSC-A", "kind": "scatter", "transform": "none"}


def test_cli_on_a_custom_run(custom_run, tmp_path):
    from flowtools._cli.cluster import cluster_app

    root, run, sheet_path, template_path = custom_run
    app = typer.Typer()

    @app.command()
    def other() -> None:  # a second command, as in flowtools.cli
        pass

    app.add_typer(cluster_app)
    out = tmp_path / "cli"
    r = CliRunner().invoke(app, ["cluster", str(run), "-p", "T", "--out", str(out), "-k", "3", "--embed",
                                 "none", "--events-per-sample", "300", "--no-figures", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["tube"] == TUBE and summary["markers"] == FLUORESCENCE
    assert summary["template"] == "nk_custom" and summary["compensation"]["kind"] == "matrix"
    moved = _bare_copy(run, tmp_path / "moved" / "run")
    bad = CliRunner().invoke(app, ["cluster", str(moved), "-p", "T", "--embed", "none"])
    assert bad.exit_code == 1 and "--samples" in bad.output
    ok = CliRunner().invoke(app, ["cluster", str(moved), "-p", "T", "-m", "CD3,CD4", "--samples",
                                  str(sheet_path), "--template", str(template_path), "-k", "3", "--embed",
                                  "none", "--events-per-sample", "300", "--no-figures", "--out",
                                  str(tmp_path / "cli2")])
    assert ok.exit_code == 0, ok.output
