"""Templates: validation errors (file, line, population, field), resolution, export to Gating-ML."""

from __future__ import annotations

import textwrap
import warnings

import numpy as np
import pytest

from flowtools.errors import ChannelError, TemplateError
from flowtools.gating import gate_sample
from flowtools.gating.formats.gatingml import read_gatingml, to_gatingml_string
from flowtools.gating.templates import load_template, resolve
from flowtools.io import Spillover, read_fcs, write_fcs

BASE = """\
name: t
tube: TBNK-NK
compensation: FCS
populations:
  - name: cells
    dims: [FSC-A, SSC-A]
    gate: {rectangle: [[100, null], [null, 900]]}
  - name: CD3+
    parent: cells
    dims: [CD3]
    gate: {range: [0.5, null]}
  - name: CD3-
    parent: cells
    dims: [CD3]
    method: ref
    args: {population: CD3+, side: negative}
  - name: T48
    parent: CD3+
    dims: [CD4, CD8]
    gate: {quad: [0.5, 0.5]}
    quadrants: {CD4: "+-", CD8: "-+", DP: "++", DN: "--"}
  - name: notCD4
    parent: CD3+
    method: bool
    args: {op: and, of: ["!CD4", "CD3+"]}
"""


def _load(text: str):
    return load_template("t.yaml", text=textwrap.dedent(text))


@pytest.fixture(scope="module")
def fcs(tmp_path_factory):
    rng = np.random.default_rng(0)
    n = 4000
    ev = np.empty((n, 6), np.float32)
    ev[:, 0] = rng.uniform(0, 1000, n)  # FSC-A
    ev[:, 1] = rng.uniform(0, 1000, n)  # SSC-A
    low = rng.random((n, 3)) < 0.5  # drawn first, then the two normals: the same events as before
    ev[:, 2:5] = np.where(low, rng.normal(30, 20, (n, 3)), rng.normal(20000, 3000, (n, 3)))
    ev[:, 5] = np.arange(n)
    path = tmp_path_factory.mktemp("t") / "s.fcs"
    write_fcs(path, ev, ["FSC-A", "SSC-A", "FITC-A", "PE-A", "APC-A", "Time"],
              markers=[None, None, "CD3", "CD4", "CD8", None],
              spillover=Spillover(("FITC-A", "PE-A", "APC-A"), np.eye(3) + 0.05 * np.eye(3, k=1)))
    return path


def test_load_paths_and_tree():
    t = _load(BASE)
    assert t.population_paths == ["cells", "cells/CD3+", "cells/CD3-", "cells/CD3+/CD4", "cells/CD3+/CD8",
                                  "cells/CD3+/DP", "cells/CD3+/DN", "cells/CD3+/notCD4"]
    assert t.tube == "TBNK-NK"
    assert len(t.sha256) == 64
    assert t.tree()[0][:2] == (0, "cells")


def test_resolve_counts_match_numpy_and_gatingml_export(fcs):
    t = _load(BASE)
    s = read_fcs(fcs)
    (r,) = resolve(t, [s])
    assert r.error is None
    comp = s.events[:, 2:5].astype(np.float64) @ np.linalg.inv(np.eye(3) + 0.05 * np.eye(3, k=1))
    from flowtools.transforms import LogicleTransform

    lg = LogicleTransform(T=262144, W=0.5, M=4.5, A=0)
    cd3, cd4, cd8 = (lg.apply(comp[:, k]) for k in range(3))
    cells = (s.events[:, 0] >= 100) & (s.events[:, 1] < 900)
    counts = {row["population"]: row["count"] for row in r.rows()}
    assert counts["cells"] == cells.sum()
    assert counts["cells/CD3+"] == (cells & (cd3 >= 0.5)).sum()
    assert counts["cells/CD3-"] == (cells & (cd3 < 0.5)).sum()
    assert counts["cells/CD3+/CD4"] == (cells & (cd3 >= 0.5) & (cd4 >= 0.5) & (cd8 < 0.5)).sum()
    assert counts["cells/CD3+/notCD4"] == counts["cells/CD3+"] - counts["cells/CD3+/CD4"]
    again = read_gatingml(to_gatingml_string(r.strategy))
    assert gate_sample(again, s).counts() == r.result.counts()


def test_missing_marker_names_file_markers_and_channels(fcs):
    t = _load(BASE.replace("dims: [CD3]", "dims: [CD19]", 1))
    with pytest.raises(ChannelError, match=r"needs \['CD19'\].*markers are \['CD3', 'CD4', 'CD8'\]"):
        t.check_sample(read_fcs(fcs))
    (r,) = resolve(t, [read_fcs(fcs)])
    assert r.result is None and "CD19" in r.error


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        ("parent: cells\n    dims: [CD3]\n    gate", "parent: nope\n    dims: [CD3]\n    gate",
         r"t.yaml, line 8, population 'CD3\+', field 'parent': unknown parent 'nope'; known: \['cells'\]"),
        ("name: CD3-", "name: CD3+", r"'cells/CD3\+' is defined twice"),
        ("gate: {range: [0.5, null]}", "method: mindensityy", r"field 'method': unknown gating method"),
        ("gate: {range: [0.5, null]}", "gate: {range: [0.5]}", r"field 'gate.range'"),
        ("gate: {range: [0.5, null]}", "gate: {circle: 1}", r"unknown gate 'circle'"),
        ("gate: {range: [0.5, null]}", "gate: {range: [0.5, null]}\n    method: quantile",
         "either a static"),
        ("args: {population: CD3+, side: negative}", "args: {population: CD3+, side: up}", "side"),
        ('quadrants: {CD4: "+-", CD8: "-+", DP: "++", DN: "--"}', 'quadrants: {CD4: "+-", CD8: "+-"}',
         "distinct"),
        ("name: t\n", "name: t\nbogus: 1\n", r"unknown key\(s\) \['bogus'\]"),
        ("compensation: FCS",
         "compensation: FCS\ntransforms: {fluorescence: {logicle: {T: -1, W: 0.5, M: 4.5}}}",
         "transforms.fluorescence"),
        ('of: ["!CD4", "CD3+"]', 'of: ["!CD44", "CD3+"]', "unknown parent 'CD44'"),
        ("  - name: cells\n", "  - name: cells\n    parent: CD3+\n", "parents must be listed before"),
    ],
)
def test_validation_errors(old, new, match):
    assert old in BASE
    with pytest.raises(TemplateError, match=match):
        _load(BASE.replace(old, new, 1))


def test_yaml_errors_and_duplicate_keys():
    with pytest.raises(TemplateError, match="line 3: not valid YAML"):
        _load("name: t\npopulations: [\n")
    with pytest.raises(TemplateError, match=r"key\(s\) \['name'\] given twice"):
        _load("name: t\nname: u\npopulations: []\n")


def test_ambiguous_parent_needs_full_path():
    text = BASE + """\
  - name: X
    parent: CD3+
    dims: [CD4]
    gate: {range: [0.1, null]}
  - name: X
    parent: CD3-
    dims: [CD4]
    gate: {range: [0.1, null]}
  - name: Y
    parent: X
    dims: [CD8]
    gate: {range: [0.1, null]}
"""
    with pytest.raises(TemplateError, match="ambiguous"):
        _load(text)
    ok = _load(text.replace("parent: X\n", "parent: cells/CD3-/X\n"))
    assert "cells/CD3-/X/Y" in ok.population_paths


def test_study_templates_load():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "gating_templates"
    files = sorted(folder.glob("*.yaml"))
    assert files, f"no study template (*.yaml) in {folder}"
    for f in files:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            t = load_template(f)
        # the acquisition/clean-up gates say so (role: qc), and only they
        qc = {p for p in t.population_paths if p.rsplit("/", 1)[-1] in ("qc", "margin", "singlets")}
        assert qc, f
        assert t.roles == dict.fromkeys(qc, "qc"), f


def test_non_utf8_template_is_a_template_error(tmp_path):
    p = tmp_path / "lat.yaml"
    p.write_bytes("name: caf\xe9\npopulations: []\n".encode("latin-1"))
    with pytest.raises(TemplateError, match="not UTF-8"):
        load_template(p)


def test_resolved_strategy_equals_a_build_from_scratch(fcs):
    # resolution extends its strategy gate by gate (GatingStrategy.extended): same object as one build
    from flowtools.gating.strategy import GatingStrategy

    (r,) = resolve(_load(BASE), [read_fcs(fcs)])
    s = r.strategy
    scratch = GatingStrategy(s.gates, s.transforms, s.matrices)
    assert s == scratch
    assert list(s.populations.items()) == list(scratch.populations.items())
    assert s.order == scratch.order
    assert [row["population"] for row in r.rows()] == [p for p in r.ids if r.ids[p] in s.populations]
    full = gate_sample(scratch, read_fcs(fcs))
    assert all(np.array_equal(full.masks[k], m) for k, m in r.result.masks.items())


def test_role_qc_is_parsed_and_defaults_to_none():
    t = _load(BASE.replace("  - name: cells\n", "  - name: cells\n    role: qc\n", 1)
              .replace("    gate: {quad: [0.5, 0.5]}\n", "    gate: {quad: [0.5, 0.5]}\n    role: qc\n", 1))
    roles = {p.path: p.role for p in t.populations}
    assert roles["cells"] == "qc" and roles["cells/CD3+/T48"] == "qc"
    assert roles["cells/CD3+"] is None and roles["cells/CD3+/notCD4"] is None
    # a quad entry's role holds for every quadrant it defines
    assert t.roles == {"cells": "qc", "cells/CD3+/CD4": "qc", "cells/CD3+/CD8": "qc", "cells/CD3+/DP": "qc",
                       "cells/CD3+/DN": "qc"}
    assert _load(BASE).roles == {}
    assert all(p.role is None for p in _load(BASE).populations)
    # null is the same as leaving it out
    assert _load(BASE.replace("  - name: cells\n", "  - name: cells\n    role: null\n", 1)).roles == {}


@pytest.mark.parametrize("value", ["bio", "QC", "''", "[qc]", "1"])
def test_role_other_than_qc_is_a_template_error(value):
    old = "    parent: cells\n    dims: [CD3]\n    gate"
    text = BASE.replace(old, f"    parent: cells\n    role: {value}\n    dims: [CD3]\n    gate", 1)
    where = r"^t\.yaml, line 8, population 'CD3\+', field 'role': "
    with pytest.raises(TemplateError, match=where + r"unknown role .*roles are 'qc' .* and 'counting_beads'"):
        _load(text)


def test_rows_carry_the_role(fcs):
    t = _load(BASE.replace("  - name: cells\n", "  - name: cells\n    role: qc\n", 1))
    (r,) = resolve(t, [read_fcs(fcs)])
    assert r.error is None
    rows = {row["population"]: row for row in r.rows()}
    assert rows["cells"]["role"] == "qc"
    assert {p for p, row in rows.items() if row["role"]} == {"cells"}
    assert all(row["role"] == "" for p, row in rows.items() if p != "cells")
    # the role changes nothing else: the same rows as the template without it
    (plain,) = resolve(_load(BASE), [read_fcs(fcs)])
    keys = ("population", "gate_id", "parent", "count", "parent_count")
    assert [[row[k] for k in keys] for row in r.rows()] == [[row[k] for k in keys] for row in plain.rows()]
    assert [set(row) - {"role"} for row in r.rows()] == [set(row) - {"role"} for row in plain.rows()]
    assert all(row["role"] == "" for row in plain.rows())
