"""``flowtools wsp to-template``: the matrix CSV written beside the template, named relative to it.

Regression for issue 17: with ``--out DIR/x.yaml`` the template named its matrix by the path as given
(``DIR/x.matrix.csv``), which the loader resolves against the template's folder (``DIR/DIR/...``), so
the template did not load. Checked with a workspace built here (always runs) and with the FlowKit
8-colour workspace from the shared data (skipped when absent).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import typer
from _helpers import read_quiet, shared_data_or_skip
from typer.testing import CliRunner

from flowtools._cli.wsp import wsp_app
from flowtools.gating.formats.flowjo import gate_workspace_sample, read_workspace, workspace_rows
from flowtools.gating.formats.flowjo_template import (
    TemplateFiles,
    matrix_path_for,
    write_workspace_template,
)
from flowtools.gating.templates import load_template, resolve

ICS = "flowjo/8_color_data_set/8_color_ICS.wsp"

_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Workspace flowJoVersion="10.8.1" '
    'xmlns:gating="http://www.isac-net.org/std/Gating-ML/v2.0/gating" '
    'xmlns:transforms="http://www.isac-net.org/std/Gating-ML/v2.0/transformations" '
    'xmlns:data-type="http://www.isac-net.org/std/Gating-ML/v2.0/datatypes">'
)
# A sample with its own (inline) matrix: B receives 25 % of A's signal.
_MATRIX = (
    '<transforms:spilloverMatrix spectral="0" prefix="Comp-" name="Acquisition-defined" suffix="" '
    'transforms:id="m-1"><data-type:parameters><data-type:parameter data-type:name="A"/>'
    '<data-type:parameter data-type:name="B"/></data-type:parameters>'
    '<transforms:spillover data-type:parameter="A">'
    '<transforms:coefficient data-type:parameter="A" transforms:value="1"/>'
    '<transforms:coefficient data-type:parameter="B" transforms:value="0.25"/></transforms:spillover>'
    '<transforms:spillover data-type:parameter="B">'
    '<transforms:coefficient data-type:parameter="A" transforms:value="0"/>'
    '<transforms:coefficient data-type:parameter="B" transforms:value="1"/></transforms:spillover>'
    "</transforms:spilloverMatrix>"
)


def _rect(dim: str, lo: float) -> str:
    return (
        f'<gating:RectangleGate eventsInside="1"><gating:dimension gating:min="{lo}">'
        f'<data-type:fcs-dimension data-type:name="{dim}"/></gating:dimension></gating:RectangleGate>'
    )


def _workspace(path: Path, *, compensated: bool = True) -> Path:
    """A one-sample FlowJo 10 workspace (group "All Samples") gating B+ on Comp-B, or on raw A."""
    matrix = _MATRIX if compensated else ""
    gate = _rect("Comp-B", 100) if compensated else _rect("A", 100)
    text = (
        _HEAD + '<Groups><GroupNode name="All Samples"><Group name="All Samples"><SampleRefs>'
        '<SampleRef sampleID="1"/></SampleRefs></Group></GroupNode></Groups>'
        f'<SampleList><Sample><DataSet uri="s1.fcs" sampleID="1"/>{matrix}<Transformations/><Keywords/>'
        '<SampleNode name="s1.fcs" sampleID="1" count="500"><Subpopulations>'
        f'<Population name="B+" count="-1"><Gate>{gate}</Gate></Population>'
        "</Subpopulations></SampleNode></Sample></SampleList></Workspace>"
    )
    path.write_text(text, encoding="utf-8")
    return path


def _fcs(path: Path) -> Path:
    from flowtools.io import write_fcs

    rng = np.random.default_rng(17)
    events = rng.uniform(0, 400, size=(500, 2)).astype(np.float32)
    write_fcs(path, events, ["A", "B"])
    return path


def _invoke(*args: str) -> tuple[int, str]:
    app = typer.Typer()
    app.add_typer(wsp_app, name="wsp")
    res = CliRunner().invoke(app, ["wsp", *args])
    return res.exit_code, res.output


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# The --out forms of the issue: beside the working directory, a nested relative folder, a folder
# reached with '..', and an absolute path elsewhere.
OUTS = ["x.yaml", "nested/deeper/x.yaml", "../sibling/x.yaml", "ABSOLUTE"]


@pytest.mark.parametrize("out_form", OUTS)
def test_cli_template_loads_from_any_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, out_form: str
) -> None:
    ws_path = _workspace(tmp_path / "w.wsp")
    fcs = read_quiet(_fcs(tmp_path / "s1.fcs"))
    work = tmp_path / "work"
    work.mkdir()
    out = str(tmp_path / "abs" / "x.yaml") if out_form == "ABSOLUTE" else out_form
    monkeypatch.chdir(work)
    code, output = _invoke("to-template", str(ws_path), "--group", "All Samples", "--out", out)
    assert code == 0, output
    template = (work / out).resolve()
    matrix = template.with_name("x.matrix.csv")
    assert _files(template.parent) == {"x.yaml", "x.matrix.csv"}  # no temporary files left behind
    assert 'compensation: "x.matrix.csv"' in template.read_text(encoding="utf-8")
    ws = read_workspace(ws_path)
    assert matrix.read_text(encoding="utf-8") == ws.sample("1").matrix.to_csv_text()

    expected = {
        r["population"]: r["count"]
        for r in workspace_rows(ws.sample("1"), gate_workspace_sample(ws.sample("1"), fcs))
    }
    assert expected["B+"] > 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for cwd, ref in ((elsewhere, str(template)), (template.parent, "x.yaml"), (work, out)):
        monkeypatch.chdir(cwd)
        t = load_template(ref)
        assert Path(t.compensation) == matrix
        (res,) = resolve(t, [fcs])
        assert {r["population"]: r["count"] for r in res.rows()} == expected  # compensated as FlowJo does


def test_template_keeps_loading_when_its_folder_moves(tmp_path: Path) -> None:
    ws = read_workspace(_workspace(tmp_path / "w.wsp"))
    written = write_workspace_template(ws, "All Samples", tmp_path / "a" / "t.yaml")
    assert written == TemplateFiles(tmp_path / "a" / "t.yaml", tmp_path / "a" / "t.matrix.csv")
    moved = tmp_path / "b"
    (tmp_path / "a").rename(moved)
    assert Path(load_template(moved / "t.yaml").compensation) == (moved / "t.matrix.csv").resolve()


def test_rewriting_replaces_both_files(tmp_path: Path) -> None:
    ws = read_workspace(_workspace(tmp_path / "w.wsp"))
    out = tmp_path / "t.yaml"
    out.write_text("old", encoding="utf-8")
    matrix_path_for(out).write_text("old", encoding="utf-8")
    write_workspace_template(ws, "All Samples", out)
    write_workspace_template(ws, "All Samples", out)
    assert out.read_text(encoding="utf-8").startswith("name:")
    assert matrix_path_for(out).read_text(encoding="utf-8") == ws.sample("1").matrix.to_csv_text()
    assert _files(tmp_path) == {"w.wsp", "t.yaml", "t.matrix.csv"}


def test_uncompensated_gates_write_no_matrix(tmp_path: Path) -> None:
    ws = read_workspace(_workspace(tmp_path / "w.wsp", compensated=False))
    written = write_workspace_template(ws, "All Samples", tmp_path / "out" / "t.yaml")
    assert written.matrix is None
    assert _files(tmp_path / "out") == {"t.yaml"}
    assert load_template(written.template).compensation == "uncompensated"


def test_failure_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws_path = _workspace(tmp_path / "w.wsp")
    monkeypatch.chdir(tmp_path)
    code, output = _invoke("to-template", str(ws_path), "--group", "No such group", "--out", "out/x.yaml")
    assert code == 1
    assert "no group 'No such group'" in " ".join(output.split())
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("template", "matrix"),
    [
        ("t.yaml", "t.matrix.csv"),
        ("dir/t.yml", "dir/t.matrix.csv"),
        ("dir/t", "dir/t.matrix.csv"),
        ("dir/a.b.yaml", "dir/a.b.matrix.csv"),
    ],
)
def test_matrix_path_for(template: str, matrix: str) -> None:
    assert matrix_path_for(template) == Path(matrix)


def test_ics_workspace_to_nested_out_loads_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The FlowKit 8-colour ICS workspace (compensated gates, shared data)."""
    root = shared_data_or_skip()
    wsp = root / ICS
    monkeypatch.chdir(tmp_path)
    code, output = _invoke("to-template", str(wsp), "--group", "DEN", "--out", "runs/ics/den.yaml")
    assert code == 0, output
    folder = tmp_path / "runs" / "ics"
    assert _files(folder) == {"den.yaml", "den.matrix.csv"}
    ws = read_workspace(wsp)
    assert (folder / "den.matrix.csv").read_text(encoding="utf-8") == ws.sample("1").matrix.to_csv_text()
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    t = load_template(os.path.relpath(folder / "den.yaml", other))
    assert Path(t.compensation) == (folder / "den.matrix.csv").resolve()
    assert len(t.population_paths) == len(ws.group_samples("DEN")[0].paths)
