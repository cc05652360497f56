"""The population table: identity columns, and the stages that read a population by them.

Regression: ``T/CD4+`` and ``T/CD4pos`` spell alike as gate ids (``T__CD4pos``; the second
one gets ``T__CD4pos_2``). ``flowtools cluster`` used to rebuild an id from the path, so it
read ``T/CD4pos`` from the ``T/CD4+`` mask.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from flowtools.analysis.populations import (
    TABLE_COLUMNS,
    columns_doc,
    descendants,
    is_qc_name,
    qc_populations,
    read_populations,
)

# CD4+ and CD4pos are siblings with different gates (CD4 high / CD4 low), so reading one for
# the other shows in the counts and the events.
COLLIDING = """\
name: colliding
tube: TBNK-NK
compensation: FCS
transforms:
  fluorescence: {logicle: {T: 262144, W: 0.5, M: 4.5, A: 0}}
  scatter: none
  time: none
populations:
  - name: cells
    dims: [FSC-A, SSC-A]
    gate: {rectangle: [[20000, 250000], [5000, 250000]]}
  - name: T
    parent: cells
    dims: [CD3]
    gate: {range: [0.55, null]}
  - name: CD4+
    parent: T
    dims: [CD4]
    gate: {range: [0.5, null]}
  - name: CD4pos
    parent: T
    dims: [CD4]
    gate: {range: [null, 0.5]}
"""


@pytest.fixture(scope="module")
def colliding_run(gated_cohort):
    gc = gated_cohort(n_women=2, events=20_000, seed=5, artefacts=False, templates=(COLLIDING,))
    assert gc.plate.n_ok == 2
    return gc.cohort, gc.run_dir


def test_table_carries_distinct_gate_ids_and_parents(colliding_run):
    from flowtools.gating.engine import gate_sample
    from flowtools.gating.formats.gatingml import read_gatingml
    from flowtools.io.fcs import read_fcs

    cohort, run = colliding_run
    pops = read_populations(run / "populations.csv")
    assert list(pops.columns[: len(TABLE_COLUMNS)]) == list(TABLE_COLUMNS)
    pd.testing.assert_frame_equal(pops, read_populations(run / "populations.parquet")[pops.columns],
                                  check_dtype=False)
    for sid, rows in pops.groupby("sample_id"):
        ids = dict(zip(rows["population"], rows["gate_id"], strict=True))
        assert ids["cells/T/CD4+"] == "cells__T__CD4pos"
        assert ids["cells/T/CD4pos"] == "cells__T__CD4pos_2"
        assert len(set(ids.values())) == len(ids)
        parents = dict(zip(rows["population"], rows["parent"], strict=True))
        assert parents == {"cells": "", "cells/T": "cells", "cells/T/CD4+": "cells/T",
                           "cells/T/CD4pos": "cells/T"}
        counts = dict(zip(rows["population"], rows["count"], strict=True))
        parent_counts = dict(zip(rows["population"], rows["parent_count"], strict=True))
        assert parent_counts["cells/T/CD4+"] == parent_counts["cells/T/CD4pos"] == counts["cells/T"]
        assert counts["cells/T/CD4+"] != counts["cells/T/CD4pos"]
        assert (rows["role"] == "").all()
        # each gate id is that population's mask in the run's Gating-ML
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sample = read_fcs(cohort.fcs_dir / f"{sid}.fcs")
        assert parent_counts["cells"] == sample.n_events
        result = gate_sample(read_gatingml(run / "gates" / f"{sid}.gating-ml.xml"), sample)
        for path, gid in ids.items():
            assert int(result.mask(gid).sum()) == counts[path], (sid, path)
    doc = (run / "populations.columns.md").read_text(encoding="utf-8")
    for c in pops.columns:
        assert f"| {c} |" in doc


def test_cluster_reads_each_population_by_its_own_gate_id(colliding_run, tmp_path):
    from flowtools.analysis import cluster_cohort

    cohort, run = colliding_run
    pops = read_populations(run / "populations.csv")
    common = {"markers": ["CD3", "CD4"], "n_clusters": 2, "embed": None, "events_per_sample": 300, "seed": 0,
              "samples_csv": cohort.samples_csv, "method_params": {"xdim": 3, "ydim": 3}}
    low = cluster_cohort(run, population="cells/T/CD4pos", out_dir=tmp_path / "cl_pos", **common)
    want = pops[pops["population"] == "cells/T/CD4pos"].set_index("sample_id")["count"].to_dict()
    assert low.table.groupby("sample_id")["count"].sum().to_dict() == want
    # its events are the CD4-low ones (the T/CD4+ mask would give CD4-high events)
    assert low.fit_x[:, 1].max() < 0.5 + 1e-6

    # the populations below the clustered one are found by their parents, each with its own mask
    t = cluster_cohort(run, population="cells/T", out_dir=tmp_path / "cl_t", **common)
    gate_n = t.overlap.drop_duplicates(["sample_id", "gate"]).set_index(["sample_id", "gate"])["gate_n"]
    below = pops[pops["parent"] == "cells/T"].set_index(["sample_id", "population"])["count"]
    assert gate_n.sort_index().to_dict() == below.sort_index().to_dict()


def test_cluster_refuses_a_table_without_gate_ids(colliding_run, tmp_path):
    import shutil

    from flowtools.analysis import cluster_cohort
    from flowtools.errors import GatingError

    cohort, run = colliding_run
    old = tmp_path / "old"
    shutil.copytree(run / "gates", old / "gates")
    shutil.copy(run / "provenance.json", old / "provenance.json")
    pops = pd.read_csv(run / "populations.csv").drop(columns=["gate_id", "parent", "role", "parent_count"])
    pops.to_csv(old / "populations.csv", index=False)
    with pytest.raises(GatingError, match="gate_id or parent column"):
        cluster_cohort(old, population="cells/T", markers=["CD3"], samples_csv=cohort.samples_csv, embed=None)


# ------------------------------------------------------------------------------------------ QC rule


def test_qc_name_rule_covers_both_former_lists():
    # the report's substrings and the statistics' technical gates, and the synthetic truth's names
    for name in ("qc", "margin", "boundary", "singlets", "Singlets", "clean-up", "cells", "live", "Live",
                 "Dead", "Debris", "Doublets", "a/b/singlet"):
        assert is_qc_name(name), name
    for name in ("T cells", "NK cells", "lymphocytes", "Live CD45+/T", "Classical", "CD4 CD8", "monocytes"):
        assert not is_qc_name(name), name


def test_roles_decide_where_the_template_gives_any():
    named = [{"population": "qc", "role": ""}, {"population": "qc/live", "role": ""},
             {"population": "qc/live/T", "role": ""}]
    assert qc_populations(named) == {"qc", "qc/live"}  # no role anywhere: by name
    marked = [{"population": "qc", "role": "qc"}, {"population": "qc/live", "role": ""},
              {"population": "qc/live/T", "role": ""}]
    assert qc_populations(marked) == {"qc"}  # the template marks its QC gates: its roles decide
    assert qc_populations([{"population": "singlets"}]) == {"singlets"}  # rows without the key


def test_descendants_follow_the_parent_links():
    rows = [{"population": p, "parent": q} for p, q in
            [("a", ""), ("a/b", "a"), ("a/b/c", "a/b"), ("a/bx", "a"), ("ab", ""), ("ab/c", "ab")]]
    assert [r["population"] for r in descendants(rows, "a")] == ["a/b", "a/b/c", "a/bx"]
    assert [r["population"] for r in descendants(list(reversed(rows)), "a/b")] == ["a/b/c"]
    assert descendants(rows, "ab/c") == []


def test_read_populations_keeps_empty_text_and_nan_numbers(tmp_path):
    p = tmp_path / "populations.csv"
    p.write_text("sample_id,woman_id,population,gate_id,parent,role,count,parent_count,pct_parent,mfi_CD3\n"
                 "NA,001,a,a,,,0,0,,\n", encoding="utf-8")
    t = read_populations(p)
    assert t.loc[0, "sample_id"] == "NA" and t.loc[0, "woman_id"] == "001"
    assert t.loc[0, "parent"] == "" and t.loc[0, "role"] == ""
    assert np.isnan(t.loc[0, "pct_parent"]) and np.isnan(t.loc[0, "mfi_CD3"])
    assert t["count"].dtype == np.int64


def test_columns_doc_names_every_column():
    doc = columns_doc([*TABLE_COLUMNS, "mfi_CD3", "mfi_CD3_transformed"])
    assert "| mfi_CD3_transformed | median of CD3 on the template's transformed scale |" in doc
    assert "| gate_id |" in doc and "| parent_count |" in doc
