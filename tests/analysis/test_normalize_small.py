"""Small clusters (``small_cluster``): coarse splines, the global spline, identity; old model files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flowtools.analysis.normalize import CytoNorm
from flowtools.analysis.normalize_model import FORMAT, FORMAT_V1
from flowtools.errors import NormalizationError

MARKERS = ["m1", "m2"]
SHIFT = 0.6  # batch B reads every value this much higher


def _sample(rng: np.random.Generator, n: int, bright: int, shift: float = 0.0) -> np.ndarray:
    """A dim population, a mid one and a rare bright one (``bright`` events) on two markers."""
    dim = rng.normal(1.0, 0.3, (n // 2, 2))
    mid = rng.normal(3.0, 0.3, (n - n // 2 - bright, 2))
    hi = rng.normal(7.0, 0.3, (bright, 2))
    return np.concatenate([dim, mid, hi]) + shift


def _anchors() -> dict[str, list[np.ndarray]]:
    # the rare population's share differs between the aliquots (30 and 70 events): composition, not batch
    rng = np.random.default_rng(21)
    return {"A": [_sample(rng, 3000, 30)], "B": [_sample(rng, 3000, 70, SHIFT)]}


def _fit(**kw: object) -> CytoNorm:
    params = {"n_clusters": 3, "xdim": 4, "ydim": 4, "n_resamples": 5, "rlen": 5, "random_state": 0,
              "soft": 0.0}
    params.update(kw)
    return CytoNorm(**params).fit(_anchors(), MARKERS)


def _bright_error(model: CytoNorm) -> float:
    """|median of B's rare population after normalisation - A's|, on new samples (mean over markers)."""
    rng = np.random.default_rng(5)
    a, b = _sample(rng, 3000, 50), _sample(rng, 3000, 50, SHIFT)
    ya, yb = model.transform(a, "A"), model.transform(b, "B")
    return float(np.mean(np.abs(np.median(yb[-50:], axis=0) - np.median(ya[-50:], axis=0))))


def test_small_cluster_is_found_and_recorded() -> None:
    model = _fit()
    assert model.small_cluster == "coarse"
    (small,) = model.small_clusters_
    c = small["cluster"]
    assert small["map"] == "coarse" and small["knots"] == 3  # 30 events // 10 per knot
    assert 25 <= small["n_events"]["A"] <= 35 and 60 <= small["n_events"]["B"] <= 80  # the rare cells
    assert [row[c] for row in model.cluster_map_] == ["coarse", "coarse"]
    assert model.fallbacks_ == []  # no cluster x batch uses the global spline
    # its quantile rows are 3 knots, each repeated
    assert np.unique(model.quantiles_[0, c, 0]).size == 3
    assert np.unique(model.goal_[c, 0]).size == 3


def test_rule_matters_for_a_rare_population() -> None:
    # the global spline maps the rare cells by the pooled tail, which the share difference bends;
    # identity leaves the batch shift; the cluster's own coarse spline removes it
    coarse, glob, ident = (_bright_error(_fit(small_cluster=s)) for s in ("coarse", "global", "identity"))
    assert coarse < 0.15
    assert glob > 2 * coarse and ident > 2 * coarse
    assert ident == pytest.approx(SHIFT, abs=0.15)


def test_global_and_identity_maps() -> None:
    glob = _fit(small_cluster="global")
    c = glob.small_clusters_[0]["cluster"]
    assert glob.small_clusters_[0]["map"] == "global" and "knots" not in glob.small_clusters_[0]
    assert [row[c] for row in glob.cluster_map_] == ["global", "global"]
    assert {(f["batch"], f["cluster"]) for f in glob.fallbacks_} == {("A", c), ("B", c)}
    ident = _fit(small_cluster="identity")
    b = _sample(np.random.default_rng(8), 3000, 50, SHIFT)
    lab = ident.predict_clusters(b, "B")
    y = ident.transform(b, "B")
    assert np.any(lab == c)
    np.testing.assert_allclose(y[lab == c], b[lab == c], atol=1e-9)  # unchanged, hard assignment
    assert not np.allclose(y[lab != c], b[lab != c])
    # the reference splines agree with the tables
    m = ident.markers_.index("m1")
    sp = ident._spline(1, c, m)
    np.testing.assert_allclose(sp(b[lab == c, m]), b[lab == c, m], atol=1e-9)


def test_bad_small_cluster_value() -> None:
    with pytest.raises(ValueError, match="small_cluster must be one of"):
        _fit(small_cluster="shrink")


def test_saved_model_keeps_rule(tmp_path: Path) -> None:
    model = _fit()
    path = model.save(tmp_path / "m.json")
    doc = json.loads(path.read_text())
    assert doc["format"] == FORMAT == "flowtools-cytonorm/2"
    assert doc["params"]["small_cluster"] == "coarse"
    assert doc["cluster_map"] == model.cluster_map_ and doc["small_clusters"] == model.small_clusters_
    back = CytoNorm.load(path)
    b = _sample(np.random.default_rng(9), 2000, 40, SHIFT)
    np.testing.assert_allclose(back.transform(b, "B"), model.transform(b, "B"), atol=1e-8)  # 10 decimals


def _as_v1(doc: dict) -> dict:
    """A model document as ``flowtools-cytonorm/1`` wrote it (before small_cluster)."""
    old = {k: v for k, v in doc.items() if k not in ("cluster_map", "small_clusters")}
    old["format"] = FORMAT_V1
    old["params"] = {k: v for k, v in doc["params"].items() if k != "small_cluster"}
    return old


def test_v1_model_loads_as_global(tmp_path: Path) -> None:
    glob = _fit(small_cluster="global")
    doc = _as_v1(json.loads(json.dumps(glob.to_dict())))
    p = tmp_path / "old.json"
    p.write_text(json.dumps(doc))
    old = CytoNorm.load(p)
    assert old.small_cluster == "global"
    assert old.cluster_map_ == glob.cluster_map_
    b = _sample(np.random.default_rng(10), 2000, 40, SHIFT)
    same = CytoNorm.from_dict(glob.to_dict())  # the file's 10 decimals on both sides
    np.testing.assert_array_equal(old.transform(b, "B"), same.transform(b, "B"))
    # a /1 file claiming the new parameter, or an unknown format, is refused with the file named
    doc["params"]["small_cluster"] = "coarse"
    p.write_text(json.dumps(doc))
    with pytest.raises(NormalizationError, match=r"old\.json.*cannot have the small_cluster"):
        CytoNorm.load(p)
    doc["format"] = "flowtools-cytonorm/9"
    p.write_text(json.dumps(doc))
    with pytest.raises(NormalizationError, match=r"old\.json.*flowtools-cytonorm/9.*refit"):
        CytoNorm.load(p)


def test_v2_model_without_cluster_map_refused(tmp_path: Path) -> None:
    doc = _fit().to_dict()
    del doc["cluster_map"]
    p = tmp_path / "cut.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(NormalizationError, match=r"cut\.json.*incomplete or malformed"):
        CytoNorm.load(p)


def test_nearest_is_the_first_closest_node() -> None:
    model = _fit(small_cluster="global")
    vt = np.ascontiguousarray(np.repeat(model.codes_[[3, 3, 7]], 2, axis=0).T)  # on a node: ties impossible
    tie = np.ascontiguousarray(((model.codes_[0] + model.codes_[1]) / 2)[:, None])
    lab, dist = model._nearest(np.concatenate([vt, tie], axis=1))
    d2 = ((np.concatenate([vt, tie], axis=1).T[:, None, :] - model.codes_[None]) ** 2).sum(axis=2)
    np.testing.assert_array_equal(lab, model.node_cluster_[np.argmin(d2, axis=1)])  # argmin: first on ties
    np.testing.assert_allclose(dist, d2.min(axis=1))
