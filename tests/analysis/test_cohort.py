"""Cohort-consistent clustering over a gate run: tables, annotation, overlap, CLI, figures."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from flowtools.analysis import annotate_clusters, cluster_cohort, cluster_figures
from flowtools.errors import GatingError

MARKERS = ["CD3", "CD4", "CD8", "CD19", "CD56", "CD16"]


@pytest.fixture(scope="module")
def result(gate_run, tmp_path_factory):
    return cluster_cohort(gate_run, population="lymphocytes", markers=MARKERS, n_clusters=8, embed="pca",
                          events_per_sample=2000, out_dir=tmp_path_factory.mktemp("clusters"), seed=0)


def test_tables_have_the_gated_formats(result):
    t = pd.read_csv(result.files["clusters"])
    assert list(t.columns[:11]) == ["sample_id", "woman_id", "tube", "plate", "well", "population", "cluster",
                                    "label", "count", "pct_parent", "pct_total"]
    assert {f"mfi_{m}" for m in MARKERS} <= set(t.columns)
    assert t["population"].str.startswith("qc/margin/cells/singlets/live/lymphocytes/cluster_").all()
    sums = t.groupby("sample_id")["pct_parent"].sum()
    np.testing.assert_allclose(sums, 100.0)
    w = pd.read_csv(result.files["per_woman"])
    assert list(w["woman_id"]) == ["W001", "W002", "W003", "W004"]
    assert all(c.startswith("TBNK-NK|") for c in w.columns[1:])
    assert (result.out_dir / "clusters.parquet").is_file()
    prov = json.loads(result.files["provenance"].read_text())
    assert prov["command"] == "flowtools cluster" and prov["parameters"]["markers"] == MARKERS


def test_counts_match_the_gated_population(result, gate_run):
    pops = pd.read_csv(gate_run / "populations.csv")
    lymph = pops[pops["population"] == result.population].set_index("sample_id")["count"]
    per = result.table.groupby("sample_id")["count"].sum()
    assert per.to_dict() == lymph.to_dict()


def test_balanced_fit_and_consistent_assignment(result):
    counts = np.bincount(result.fit_sample)
    assert counts.max() == counts.min() == 2000
    # the model assigns the fitted events as in fit (predict is consistent)
    np.testing.assert_array_equal(result.model.predict(result.fit_x), result.fit_labels)


def test_clusters_match_gated_populations(result):
    ann = result.annotation
    assert len(ann) == 8
    big = ann[ann["pct_of_population"] > 5]
    assert (big["f1"] > 0.5).all()
    b = ann[ann["label"].str.contains("CD19\\+")]
    assert len(b) >= 1 and b.iloc[0]["best_gate"].endswith("B cells") and b.iloc[0]["f1"] > 0.9
    t4 = ann[ann["label"].str.contains("CD3\\+ CD4\\+ CD8-")]
    assert t4.iloc[0]["best_gate"].endswith("T cells/CD4")


def test_annotate_clusters_levels():
    rng = np.random.default_rng(0)
    neg = rng.normal(0.2, 0.02, 300)
    lo = rng.normal(0.55, 0.02, 300)
    hi = rng.normal(0.9, 0.02, 300)
    mid = rng.normal(0.72, 0.02, 300)
    x = np.concatenate([neg, lo, mid, hi])[:, None]
    lab = np.repeat([0, 1, 2, 3], 300)
    assert annotate_clusters(x, lab, ["CD56"]) == {0: "CD56-", 1: "CD56lo", 2: "CD56+", 3: "CD56hi"}


def test_unknown_or_ambiguous_population(gate_run):
    with pytest.raises(GatingError, match="no gated population"):
        cluster_cohort(gate_run, population="nope", markers=MARKERS)
    from flowtools.analysis.cohort_inputs import resolve_population as _resolve_population

    pops = pd.DataFrame({"tube": ["A", "B", "B"], "population": ["x/lymphocytes", "y/lymphocytes", "y/CD4"]})
    with pytest.raises(GatingError, match="ambiguous"):
        _resolve_population(pops, "lymphocytes", None)
    assert _resolve_population(pops, "lymphocytes", "B") == ("B", "y/lymphocytes")
    with pytest.raises(GatingError, match="no tube"):
        _resolve_population(pops, "lymphocytes", "C")


def test_figures_are_deterministic(result, tmp_path):
    a = cluster_figures(result, tmp_path / "a")
    b = cluster_figures(result, tmp_path / "b")
    assert [p.name for p in a] == ["cluster_heatmap.png", "cluster_abundance.png", "embedding_clusters.png",
                                   "embedding_markers.png"]
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(a, b, strict=True))


def test_cli_cluster(gate_run, tmp_path):
    from flowtools._cli.cluster import cluster_app

    app = typer.Typer()

    @app.command()
    def other() -> None:  # a second command, as in flowtools.cli
        pass

    app.add_typer(cluster_app)
    out = tmp_path / "cli"
    r = CliRunner().invoke(app, ["cluster", str(gate_run), "--population", "lymphocytes", "--markers",
                                 ",".join(MARKERS), "--out", str(out), "-k", "6", "--embed", "none",
                                 "--events-per-sample", "1000", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert len(summary["clusters"]) == 6 and (out / "per_woman_clusters.csv").is_file()
    figures = [p.rsplit("/", 1)[-1] for p in summary["figures"]]
    assert figures == ["cluster_heatmap.png", "cluster_abundance.png"]
    bad = CliRunner().invoke(app, ["cluster", str(gate_run), "-p", "nope", "-m", "CD3"])
    assert bad.exit_code == 1


def test_per_event_table_labels_every_event_and_places_the_embedding(result, gate_run):
    ev = pd.read_parquet(result.out_dir / "cluster_events.parquet")
    assert list(ev.columns) == ["sample_id", "event", "cluster", "cluster_name", "label", "pca_1", "pca_2"]
    counts = ev.groupby(["sample_id", "cluster_name"]).size()
    table = result.table.set_index(["sample_id", "cluster"])["count"]
    assert counts.to_dict() == table[table > 0].to_dict()  # the same events as the cluster table
    assert not ev.duplicated(["sample_id", "event"]).any()
    placed = ev[["pca_1", "pca_2"]].dropna().to_numpy()
    assert placed.shape == result.embedding.shape
    want = np.sort(result.embedding.astype(np.float32), axis=0)
    np.testing.assert_array_equal(np.sort(placed, axis=0), want)
    # the fitted events' labels are the fit's, at their rows in their files
    first = ev[ev.sample_id == result.samples[0]["sample_id"]].reset_index(drop=True)
    take = np.flatnonzero(result.fit_sample == 0)
    assert set(first["cluster"].unique()) >= set(np.unique(result.fit_labels[take]))
