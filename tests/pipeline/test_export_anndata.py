"""AnnData export of a gate run: round trip, counts equal to populations.csv, errors."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pandas as pd
import pytest

from flowtools.errors import ExportError

TUBES = ("TBNK-NK", "Treg-Th")


@pytest.fixture(scope="module", autouse=True)
def ad():
    """anndata (every test here is skipped without it), imported when the first test runs.

    Not at module level: collection would import it (~2 s with zarr and h5py) in every worker.
    """
    return pytest.importorskip("anndata")


@pytest.fixture(scope="module")
def gc(gated_cohort):
    return gated_cohort(n_women=2, events=3000, seed=0, templates=TUBES)


@pytest.fixture(scope="module")
def pops(gc):
    from flowtools.analysis.populations import read_populations

    return read_populations(gc.run_dir / "populations.csv")


@pytest.fixture(scope="module")
def exported(gc, tmp_path_factory):
    from flowtools.pipeline.export import export_anndata

    out = tmp_path_factory.mktemp("h5ad") / "tbnk.h5ad"
    adata = export_anndata(gc.run_dir, tube="TBNK-NK", out=out)
    return adata, out


def test_round_trip_values_names_dtypes(exported, ad):
    adata, out = exported
    back = ad.read_h5ad(out)
    assert back.X.dtype == np.float32
    assert back.layers["transformed"].dtype == np.float32
    np.testing.assert_array_equal(back.X, adata.X)
    np.testing.assert_array_equal(back.layers["transformed"], adata.layers["transformed"])
    assert list(back.var_names) == list(adata.var_names)
    assert list(back.var["marker"]) == list(adata.var["marker"])
    assert set(back.var["kind"]) <= {"fluorescence", "scatter", "time", "other"}
    assert back.var.loc["Time", "kind"] == "time"
    assert back.var.loc["FSC-A", "kind"] == "scatter"
    assert back.var.loc["FITC-A", "marker"] == "CD3"
    for c in ("sample_id", "woman_id", "plate", "tube", "well", "population"):
        assert str(back.obs[c].dtype) == "category", c
    for col in back.uns["populations"]["column"]:
        assert back.obs[col].dtype == bool, col
    assert list(back.obs.columns) == list(adata.obs.columns)
    assert back.uns["template"]["sha256"] == adata.uns["template"]["sha256"]
    assert "populations:" in back.uns["template"]["text"]
    assert back.uns["provenance"]["export"]["command"] == "flowtools export anndata"
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]  # written atomically


def test_counts_equal_populations_csv(exported, pops):
    adata, _ = exported
    tb = pops[pops["tube"] == "TBNK-NK"]
    assert set(adata.obs["sample_id"]) == set(tb["sample_id"])
    cols = dict(zip(adata.uns["populations"]["path"], adata.uns["populations"]["column"], strict=True))
    checked = 0
    for r in tb.itertuples(index=False):
        if r.status == "failed":
            continue
        sel = (adata.obs["sample_id"] == r.sample_id).to_numpy()
        assert int(adata.obs[cols[r.population]].to_numpy()[sel].sum()) == int(r.count), r.population
        checked += 1
    assert checked >= 20
    # every event of the file is there, once
    n = adata.obs.groupby("sample_id", observed=True).size()
    for sid, k in n.items():
        assert k == int(tb[(tb["sample_id"] == sid) & (tb["parent"] == "")]["parent_count"].iloc[0])


def test_values_are_compensated_and_transformed_as_the_gates(gc, exported):
    from flowtools.compensation import SpilloverMatrix
    from flowtools.gating.formats.gatingml import read_gatingml
    from flowtools.io.fcs import read_fcs

    adata, _ = exported
    sid = "S0001-TBNK"
    sample = read_fcs(gc.cohort_dir / "fcs" / f"{sid}.fcs")
    comp = SpilloverMatrix.from_fcs(sample).apply(sample.as_array(preprocess=True), sample.pnn)
    sel = (adata.obs["sample_id"] == sid).to_numpy()
    np.testing.assert_allclose(adata.X[sel], comp.astype(np.float32), rtol=1e-6, atol=1e-3)
    strategy = read_gatingml(gc.run_dir / "gates" / f"{sid}.gating-ml.xml")
    tr = strategy.transforms["logicle_FITC-A"]
    j = list(adata.var_names).index("FITC-A")
    want = np.asarray(tr.apply(comp[:, j]), dtype=np.float32)
    np.testing.assert_allclose(adata.layers["transformed"][sel, j], want, rtol=1e-6, atol=1e-6)


def test_population_only_and_subsample(gc, pops):
    from flowtools.pipeline.export import export_anndata

    nk = "qc/margin/cells/singlets/live/lymphocytes/CD3-/non-B/NK cells"
    adata = export_anndata(gc.run_dir, population="NK cells")
    tb = pops[(pops["tube"] == "TBNK-NK") & (pops["population"] == nk)]
    assert adata.n_obs == int(tb["count"].sum())
    col = dict(zip(adata.uns["populations"]["path"], adata.uns["populations"]["column"], strict=True))[nk]
    assert adata.obs[col].all()
    assert adata.uns["exported_population"] == nk
    small = export_anndata(gc.run_dir, tube="TBNK-NK", events_per_sample=50, seed=1)
    assert (small.obs.groupby("sample_id", observed=True).size() == 50).all()
    again = export_anndata(gc.run_dir, tube="TBNK-NK", events_per_sample=50, seed=1)
    np.testing.assert_array_equal(small.X, again.X)


def test_knn_graph_on_x(exported):
    from sklearn.neighbors import kneighbors_graph

    adata, _ = exported
    g = kneighbors_graph(adata.layers["transformed"], n_neighbors=5)
    assert g.shape == (adata.n_obs, adata.n_obs)
    assert g.nnz == adata.n_obs * 5


def test_scanpy_neighbors(exported):
    sc = pytest.importorskip("scanpy")
    adata, _ = exported
    sc.pp.neighbors(adata, use_rep="X", n_neighbors=5)
    assert "connectivities" in adata.obsp


def test_several_tubes_need_a_choice(gc):
    from flowtools.pipeline.export import export_anndata

    with pytest.raises(ExportError, match="several tubes"):
        export_anndata(gc.run_dir)


def test_unknown_population_and_missing_run(gc, tmp_path):
    from flowtools.pipeline.export import export_anndata

    with pytest.raises(ExportError, match="populations are .*NK cells"):
        export_anndata(gc.run_dir, population="no-such-cells")
    with pytest.raises(ExportError, match="no such run folder"):
        export_anndata(tmp_path / "nothing")
    with pytest.raises(ExportError, match="not the output folder"):
        export_anndata(tmp_path)


def test_missing_extra(gc, monkeypatch):
    from flowtools.pipeline.export import export_anndata

    monkeypatch.setitem(sys.modules, "anndata", None)
    with pytest.raises(ExportError, match=r"pip install flowtools\[anndata\]"):
        export_anndata(gc.run_dir, tube="TBNK-NK")


def test_counts_that_do_not_regate_raise(gc, tmp_path):
    from flowtools.pipeline.export import export_anndata

    run = tmp_path / "run"
    shutil.copytree(gc.run_dir, run)
    (run / "populations.parquet").unlink(missing_ok=True)
    csv = run / "populations.csv"
    lines = csv.read_text(encoding="utf-8").splitlines()
    head = lines[0].split(",")
    k = head.index("count")
    row = lines[3].split(",")
    row[k] = str(int(row[k]) + 1)
    lines[3] = ",".join(row)
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ExportError, match="does not give the run's counts"):
        export_anndata(run, tube="TBNK-NK")


def test_changed_file_raises(gc, tmp_path):
    import json

    from flowtools.pipeline.export import export_anndata

    run = tmp_path / "run"
    shutil.copytree(gc.run_dir, run)
    prov = json.loads((run / "provenance.json").read_text(encoding="utf-8"))
    prov["fcs_sha256"]["S0001-TBNK"] = "0" * 64
    (run / "provenance.json").write_text(json.dumps(prov), encoding="utf-8")
    with pytest.raises(ExportError, match="changed since the run"):
        export_anndata(run, tube="TBNK-NK")


def test_cluster_labels_and_embedding_joined(gc, tmp_path, ad):
    """A cluster folder with per-event results gives obs labels and obsm coordinates (NaN elsewhere)."""
    import json

    import pandas as pd

    from flowtools.pipeline.export import export_anndata

    run = tmp_path / "run"
    shutil.copytree(gc.run_dir, run)
    nk = "qc/margin/cells/singlets/live/lymphocytes/CD3-/non-B/NK cells"
    d = run / "clusters" / "nk"
    d.mkdir(parents=True)
    (d / "provenance.json").write_text(json.dumps({"parameters": {"population": nk, "method": "flowsom"}}))
    pd.DataFrame({"cluster": [0, 1], "label": ["CD56dim", "CD56bright"], "n": [10, 5]}).to_csv(
        d / "cluster_annotation.csv", index=False)
    base = export_anndata(run, population="NK cells")
    ev = base.obs[["sample_id", "event"]].reset_index(drop=True).copy()
    ev["cluster"] = np.arange(len(ev)) % 2
    ev["label"] = np.where(ev["cluster"] == 0, "CD56dim", "CD56bright")
    ev["umap_1"] = np.arange(len(ev), dtype=float)
    ev["umap_2"] = -np.arange(len(ev), dtype=float)
    ev.loc[0, ["umap_1", "umap_2"]] = np.nan
    ev.iloc[1:].to_csv(d / "cluster_events.csv", index=False)  # the first event was not clustered
    adata = export_anndata(run, population="NK cells", out=tmp_path / "nk.h5ad")
    back = ad.read_h5ad(tmp_path / "nk.h5ad")
    labels = back.obs["cluster_nk"].astype(str).to_numpy()
    assert labels[0] == ""
    np.testing.assert_array_equal(labels[1:], ev["label"].to_numpy()[1:])
    assert back.obsm["X_umap"].shape == (adata.n_obs, 2)
    assert np.isnan(back.obsm["X_umap"][0]).all()
    np.testing.assert_array_equal(back.obsm["X_umap"][1:, 0], ev["umap_1"].to_numpy()[1:])
    rec = back.uns["clusters"]["nk"]
    assert rec["obs_column"] == "cluster_nk" and list(rec["obsm"]) == ["X_umap"]
    assert list(rec["annotation"]["label"]) == ["CD56dim", "CD56bright"]
    # a cluster folder without per-event results: its annotation only, and why
    (d / "cluster_events.csv").unlink()
    again = export_anndata(run, population="NK cells")
    assert "cluster_nk" not in again.obs and "not available" in again.uns["clusters"]["nk"]["per_event"]


def test_a_real_cluster_run_reaches_obs_and_obsm(gc, tmp_path):
    """flowtools cluster writes cluster_events.parquet; the export joins its labels and PCA coordinates."""
    from flowtools.analysis.cohort import cluster_cohort
    from flowtools.pipeline.export import export_anndata

    run = tmp_path / "run"
    shutil.copytree(gc.run_dir, run)
    res = cluster_cohort(run, population="lymphocytes", tube="TBNK-NK", markers=["CD3", "CD4", "CD8", "CD19"],
                         n_clusters=4, events_per_sample=500, embed="pca", seed=0)
    adata = export_anndata(run, population="lymphocytes", tube="TBNK-NK")
    col = next(c for c in adata.obs.columns if c.startswith("cluster_"))
    assert (adata.obs[col].astype(str) != "").all()  # every lymphocyte has its cluster's label
    ev = pd.read_parquet(res.out_dir / "cluster_events.parquet")
    assert adata.n_obs == len(ev)
    assert adata.obsm["X_pca"].shape == (adata.n_obs, 2)
    assert int(np.isfinite(adata.obsm["X_pca"][:, 0]).sum()) == res.embedding.shape[0]
