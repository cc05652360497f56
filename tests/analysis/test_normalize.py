"""CytoNorm-class batch normalisation: splines, modes, model files, validation, file-level errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flowtools.analysis.normalize import (
    CytoNorm,
    _Spline,
    apply_sheet,
    batch_emd,
    cluster_cv,
    drift_table,
    fit_sheet,
    mad_change,
)
from flowtools.analysis.normalize_model import soft_weights_ref
from flowtools.errors import NormalizationError

MARKERS = ["m1", "m2"]


def _two_pops(rng: np.random.Generator, n: int, shift_lo: float = 0.0, shift_hi: float = 0.0) -> np.ndarray:
    """Two populations on two markers; each population can be shifted on its own."""
    lo = rng.normal(1.0, 0.3, (n // 2, 2)) + shift_lo
    hi = rng.normal(3.0, 0.3, (n - n // 2, 2)) + shift_hi
    return np.concatenate([lo, hi])


def _fit(anchors: dict[str, list[np.ndarray]], **kw: object) -> CytoNorm:
    params = {"n_clusters": 2, "xdim": 4, "ydim": 4, "n_resamples": 5, "rlen": 5, "random_state": 0}
    params.update(kw)
    return CytoNorm(**params).fit(anchors, MARKERS)


# ---------------------------------------------------------------------------------------------- splines


def test_spline_is_monotone_and_bounded() -> None:
    rng = np.random.default_rng(0)
    xq = np.sort(rng.normal(0, 1, 101))
    yq = np.sort(rng.normal(0.5, 2, 101))
    sp = _Spline.build(xq, yq, limit=0.5, max_slope=4.0)
    v = np.linspace(-100, 100, 20001)
    out = sp(v)
    assert np.all(np.diff(out) >= -1e-12)
    span = yq[-1] - yq[0]
    assert out.min() >= yq[0] - 0.5 * span - 1e-9
    assert out.max() <= yq[-1] + 0.5 * span + 1e-9
    # just beyond the knots it is linear with a tamed slope, no jump
    assert abs(sp(np.array([xq[-1] + 1e-6]))[0] - yq[-1]) < 1e-4


@pytest.mark.parametrize("n", [2, 3, 101])
def test_pchip_matches_scipy(n: int) -> None:
    from scipy.interpolate import PchipInterpolator

    from flowtools.analysis.normalize import _pchip

    rng = np.random.default_rng(n)
    x = np.sort(rng.normal(0, 1, n)) + np.arange(n) * 1e-3
    y = np.cumsum(rng.exponential(1.0, n))
    if n > 3:
        y[n // 2] = y[n // 2 - 1]  # a flat step (tied goal quantiles)
    v = np.linspace(x[0], x[-1], 777)
    np.testing.assert_allclose(_pchip(x, y, v), PchipInterpolator(x, y)(v), rtol=1e-10, atol=1e-10)


def test_spline_identity_when_quantiles_equal_and_ties() -> None:
    xq = np.linspace(0, 4, 51)
    sp = _Spline.build(xq, xq, limit=0.5, max_slope=4.0)
    v = np.linspace(-0.5, 4.5, 1001)
    np.testing.assert_allclose(sp(v), v, atol=1e-9)
    tied = np.r_[np.zeros(10), np.linspace(0, 1, 41)]
    out = _Spline.build(tied, tied + 1, limit=0.5, max_slope=4.0)(np.linspace(-1, 2, 301))
    assert np.all(np.isfinite(out)) and np.all(np.diff(out) >= -1e-12)


def test_kernel_matches_numpy_reference() -> None:
    rng = np.random.default_rng(12)
    anchors = {"A": [_two_pops(rng, 3000)], "B": [_two_pops(rng, 3000, 0.4, -0.2)]}
    x = np.concatenate([_two_pops(rng, 2000, 0.4, -0.2), [[np.nan, 1.0], [50.0, -50.0]]])
    nan_rows = np.isnan(x).any(axis=1)
    # hard assignment (CytoNorm's): every event through its cluster's spline
    hard = _fit(anchors, soft=0.0)
    got = hard.transform(x, "B")
    labels = hard.predict_clusters(np.nan_to_num(x), "B")
    ref = np.empty_like(x)
    for e in range(x.shape[0]):
        for m in range(2):
            ref[e, m] = hard._spline(1, int(labels[e]), m)(x[e:e + 1, m])[0]
    ref[nan_rows] = x[nan_rows]  # an event with a NaN is left as it is
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    # soft membership: the weighted mean of the cluster splines
    soft = _fit(anchors, soft=0.5)
    assert soft.sigma2_ > 0 and abs(soft.blend_share_ - 0.5) < 0.05
    got = soft.transform(x, "B")
    ok = ~nan_rows
    v = soft._view(x[ok], 1)
    w = soft_weights_ref(v, soft.codes_, soft.node_cluster_, soft.n_clusters_, soft.sigma2_)
    np.testing.assert_allclose(soft._weights(soft._view(x[ok], 1)), w, rtol=1e-9, atol=1e-12)
    ref = np.zeros((int(ok.sum()), 2))
    for c in range(soft.n_clusters_):
        for m in range(2):
            ref[:, m] += w[:, c] * soft._spline(1, c, m)(x[ok, m])
    np.testing.assert_allclose(got[ok], ref, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(got[nan_rows], x[nan_rows])


def test_identity_when_batches_equal() -> None:
    rng = np.random.default_rng(1)
    a = _two_pops(rng, 3000)
    model = _fit({"A": [a], "B": [a.copy()]}, mode="global")
    test = _two_pops(rng, 2000)
    np.testing.assert_allclose(model.transform(test, "B"), test, atol=1e-6)


def test_recovers_planted_shift_and_scale() -> None:
    rng = np.random.default_rng(2)
    ref = rng.normal(2.0, 0.5, (5000, 2))
    shifted = 0.4 + 1.2 * rng.normal(2.0, 0.5, (5000, 2))
    model = _fit({"A": [ref], "B": [shifted]}, mode="global", goal="A")
    probe = np.linspace(1.0, 3.0, 11)
    x = np.column_stack([0.4 + 1.2 * probe, 0.4 + 1.2 * probe])
    np.testing.assert_allclose(model.transform(x, "B")[:, 0], probe, atol=0.06)
    np.testing.assert_allclose(model.transform(ref[:50], "A"), ref[:50], atol=1e-6)  # goal batch unchanged


def test_no_wild_extrapolation() -> None:
    rng = np.random.default_rng(3)
    model = _fit({"A": [rng.normal(0, 1, (3000, 2))], "B": [rng.normal(1, 0.2, (3000, 2))]}, mode="global",
                 limit=0.25)
    far = np.array([[1e6, -1e6], [50.0, -50.0]])
    out = model.transform(far, "B")
    g = model.global_goal_
    for m in range(2):
        span = g[m, -1] - g[m, 0]
        assert g[m, 0] - 0.25 * span - 1e-9 <= out[:, m].min()
        assert out[:, m].max() <= g[m, -1] + 0.25 * span + 1e-9


def test_identity_mode() -> None:
    rng = np.random.default_rng(4)
    model = _fit({"A": [_two_pops(rng, 1000)], "B": [_two_pops(rng, 1000, 1, 1)]}, mode="identity")
    x = _two_pops(rng, 500, 1, 1)
    np.testing.assert_array_equal(model.transform(x, "B"), x)


def test_cluster_mode_beats_global_on_cluster_specific_shift() -> None:
    rng = np.random.default_rng(5)

    def pops(n: int, d1: float, d2: float) -> tuple[np.ndarray, np.ndarray]:
        # two populations told apart by m2; on m1 they overlap, and in batch B m1 moves up
        # in one and down in the other: no single per-marker map can undo that
        p1 = np.column_stack([rng.normal(2.0, 0.4, n), rng.normal(1.0, 0.3, n)])
        p2 = np.column_stack([rng.normal(2.0, 0.4, n), rng.normal(3.0, 0.3, n)])
        shifted = np.concatenate([p1 + [d1, 0.0], p2 + [d2, 0.0]])
        return shifted, np.concatenate([p1, p2])

    anchors = {"A": [pops(3000, 0, 0)[0]], "B": [pops(3000, 0.5, -0.5)[0]]}
    test_b, truth_b = pops(2000, 0.5, -0.5)
    errs = {}
    for mode in ("cluster", "global"):
        model = _fit(anchors, mode=mode, goal="A")
        errs[mode] = float(np.median(np.abs(model.transform(test_b, "B")[:, 0] - truth_b[:, 0])))
    assert errs["cluster"] < 0.5 * errs["global"], errs
    assert errs["cluster"] < 0.1, errs


def test_emd_reduced_on_held_out_anchors() -> None:
    rng = np.random.default_rng(6)
    shifts = {"A": (0.0, 0.0), "B": (0.5, 0.3), "C": (-0.3, -0.2)}
    model = _fit({b: [_two_pops(rng, 4000, *s)] for b, s in shifts.items()}, n_clusters=2)
    held = {b: _two_pops(rng, 3000, *s) for b, s in shifts.items()}
    after = {b: model.transform(v, b) for b, v in held.items()}
    before_emd, after_emd = batch_emd(held, MARKERS), batch_emd(after, MARKERS)
    for m in MARKERS:
        assert after_emd[m] < 0.2 * before_emd[m]
    rows = drift_table(held, after, MARKERS)
    assert [r["marker"] for r in rows] == MARKERS
    assert all(r["emd_reduction"] > 0.8 and not r["flagged"] for r in rows)
    assert model.cluster_cv_["unstable"] == []


def test_fallback_recorded_for_small_cluster() -> None:
    rng = np.random.default_rng(7)
    a = _two_pops(rng, 4000)
    b = np.concatenate([rng.normal(1.0, 0.3, (3960, 2)), rng.normal(3.0, 0.3, (40, 2))])  # bright: 40 events
    model = _fit({"A": [a], "B": [b]}, min_cluster_events=100, small_cluster="global")
    assert any(f["batch"] == "B" and f["n_events"] < 100 for f in model.fallbacks_)
    assert np.all(np.isfinite(model.transform(b, "B")))
    coarse = _fit({"A": [a], "B": [b]}, min_cluster_events=100)  # the default: its own coarse splines
    (small,) = coarse.small_clusters_
    c = small["cluster"]
    assert small["map"] == "coarse" and small["n_events"]["B"] >= 10
    # a batch with fewer than 10 of the cluster's events (A's stray few) falls back to the global spline
    assert coarse.fallbacks_ == [{"batch": "A", "cluster": c, "n_events": small["n_events"]["A"]}]
    assert small["n_events"]["A"] < 10 and [row[c] for row in coarse.cluster_map_] == ["global", "coarse"]
    assert np.all(np.isfinite(coarse.transform(b, "B")))


def test_batch_emd_matches_scipy() -> None:
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(11)
    a, b = rng.normal(0, 1, (5000, 2)), rng.gamma(2.0, 0.7, (3000, 2))
    got = batch_emd({"A": a, "B": b}, MARKERS)
    for j, m in enumerate(MARKERS):
        assert got[m] == pytest.approx(wasserstein_distance(a[:, j], b[:, j]), rel=5e-3)
    per = batch_emd({"A": a, "B": b}, MARKERS, labels={"A": np.zeros(5000, int), "B": np.zeros(3000, int)})
    assert per["clusters"]["0"]["m1"] == pytest.approx(got["m1"])


def test_mad_change_and_cluster_cv() -> None:
    rng = np.random.default_rng(8)
    x = rng.normal(0, 1, (2000, 2))
    mc = mad_change({"A": x}, {"A": x * np.array([1.0, 1.5])}, MARKERS)
    assert abs(mc["m1"]["A"]) < 1e-12 and mc["m2"]["A"] == pytest.approx(0.5)
    rows = drift_table({"A": x, "B": x + 1}, {"A": x, "B": x * np.array([1.0, 1.5])}, MARKERS)
    assert rows[1]["flagged"] and rows[1]["mad_batch"] == "B"
    cv = cluster_cv({"A": np.r_[np.zeros(50), np.ones(50)].astype(int),
                     "B": np.r_[np.zeros(95), np.ones(5)].astype(int)}, 2)
    assert cv["unstable"] == [1]


def test_model_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    model = _fit({"A": [_two_pops(rng, 2000)], "B": [_two_pops(rng, 2000, 0.3, 0.3)]})
    path = model.save(tmp_path / "m.json", provenance={"anchors": {"A": ["x"]}})
    back = CytoNorm.load(path)
    x = _two_pops(rng, 1000, 0.3, 0.3)
    np.testing.assert_allclose(back.transform(x, "B"), model.transform(x, "B"), atol=1e-8)
    assert back.provenance_["anchors"] == {"A": ["x"]}
    assert back.get_params() == model.get_params()
    json.loads(path.read_text())  # strict JSON (no NaN)


def test_bad_inputs_name_batch_and_marker(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    model = _fit({"A": [_two_pops(rng, 1000)], "B": [_two_pops(rng, 1000)]}, mode="global")
    with pytest.raises(NormalizationError, match="batch 'Z' is not in the normalisation model"):
        model.transform(np.zeros((3, 2)), "Z")
    with pytest.raises(NormalizationError, match="markers"):
        model.transform(np.zeros((3, 3)), "A")
    with pytest.raises(NormalizationError, match="batch 'B'.*shape"):
        CytoNorm(mode="global").fit({"A": [np.zeros((10, 2))], "B": [np.zeros((10, 3))]}, MARKERS)
    with pytest.raises(NormalizationError, match="batch 'B' has no anchor events"):
        CytoNorm(mode="global").fit({"A": [np.zeros((10, 2))], "B": []}, MARKERS)
    with pytest.raises(NormalizationError, match="goal batch 'C'"):
        CytoNorm(mode="global", goal="C").fit({"A": [np.zeros((10, 2))]}, MARKERS)
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "other"}')
    with pytest.raises(NormalizationError, match="not a flowtools normalisation model"):
        CytoNorm.load(bad)
    with pytest.raises(NormalizationError, match="not found"):
        CytoNorm.load(tmp_path / "missing.json")


# ------------------------------------------------------------------------------------------- file level


@pytest.fixture(scope="module")
def batch_cohort(tmp_path_factory: pytest.TempPathFactory):
    from flowtools.synth.batch import make_batch_cohort

    return make_batch_cohort(tmp_path_factory.mktemp("bc") / "cohort", n_plates=3, n_women=6, events=3000,
                             seed=3)


@pytest.fixture(scope="module")
def template() -> Path:
    from flowtools._resources import study_template

    return Path(study_template("TBNK-NK"))


def test_fit_apply_files(batch_cohort, template: Path, tmp_path: Path) -> None:
    from flowtools.io.fcs import read_fcs
    from flowtools.io.sample_sheet import read_sample_sheet

    # the only anchor of P02 held out: P02 cannot be normalised, refused naming it
    with pytest.raises(NormalizationError, match="batch 'P02' has no anchor left"):
        fit_sheet(batch_cohort.samples_csv, template, tmp_path / "model.json", min_events=500,
                  holdout=["D001-P02-TBNK"])
    assert not (tmp_path / "model.json").exists()
    fr = fit_sheet(batch_cohort.samples_csv, template, tmp_path / "model.json", min_events=500,
                   markers=["CD3", "CD4", "CD8", "CD56"])
    prov = json.loads((tmp_path / "model.json").read_text())["provenance"]
    assert set(prov["anchors"]) == {"P01", "P02", "P03"}
    assert len(prov["anchors"]["P01"][0]["sha256"]) == 64
    res = apply_sheet(batch_cohort.samples_csv, tmp_path / "model.json", tmp_path / "norm")
    sheet = read_sample_sheet(res.samples_csv)
    assert len(sheet) == 9 and all(r.file.parent == tmp_path / "norm" / "fcs" for r in sheet)
    assert {r.batch for r in sheet} == {"P01", "P02", "P03"} and sum(r.is_anchor for r in sheet) == 3
    for r in res.drift_anchors:
        assert r["emd_after"] < 0.5 * r["emd_before"], r
    s = read_fcs(sheet.rows[0].file)
    assert "$SRC" not in s.keywords and s.spillover is not None
    assert not list(tmp_path.glob(".norm.partial-*"))
    # re-reading a written file gives the normalised values (the raw round trip is exact enough)
    from flowtools.analysis.normalize import read_transformed
    from flowtools.gating.templates import load_template

    t = load_template(template)
    row = sheet.rows[0]
    orig = read_transformed(batch_cohort.out_dir / "fcs" / f"{row.sample_id}.fcs", t, fr.markers)
    y = fr.model.transform(orig.x, row.batch)
    back = read_transformed(row.file, t, fr.markers)
    assert np.median(np.abs(back.x - y)) < 1e-3
    # qc=False: the same files and sheet, without the drift tables (what a CytoNorm run does)
    bare = apply_sheet(batch_cohort.samples_csv, tmp_path / "model.json", tmp_path / "bare", qc=False)
    assert bare.drift == [] and bare.drift_anchors == []
    for a, b in zip(sheet.rows, read_sample_sheet(bare.samples_csv).rows, strict=True):
        assert read_fcs(a.file).events.tobytes() == read_fcs(b.file).events.tobytes(), a.sample_id


def test_file_level_errors(batch_cohort, template: Path, tmp_path: Path) -> None:
    import csv

    # anchor with too few events
    with pytest.raises(NormalizationError, match=r"batch 'P01', anchor D001-P01-TBNK .*fewer than"):
        fit_sheet(batch_cohort.samples_csv, template, tmp_path / "m.json", min_events=10_000)
    assert not (tmp_path / "m.json").exists()
    # a marker absent
    with pytest.raises(NormalizationError, match=r"batch 'P01'.*\['FOXP3'\] absent"):
        fit_sheet(batch_cohort.samples_csv, template, tmp_path / "m.json", min_events=500,
                  markers=["CD3", "FOXP3"])
    # a batch without an anchor
    with batch_cohort.samples_csv.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    header = rows[0]
    col = header.index("anchor")
    edited = [header] + [r for r in rows[1:] if not (r[col] != "false" and r[4] == "P02")]
    sheet2 = batch_cohort.samples_csv.parent / "no_anchor_p02.csv"
    sheet2.write_text("\n".join(",".join(r) for r in edited) + "\n")
    with pytest.raises(NormalizationError, match="'P02' has no anchor"):
        fit_sheet(sheet2, template, tmp_path / "m.json", min_events=500)
    # a model applied to a batch it was not fitted on: nothing written
    model = fit_sheet(sheet2.parent / "samples.csv", template, tmp_path / "m.json", min_events=500,
                      markers=["CD3"], mode="global").model
    model_p = tmp_path / "m2.json"
    d = json.loads((tmp_path / "m.json").read_text())
    keep = [i for i, b in enumerate(d["batches"]) if b != "P03"]
    d["batches"] = [d["batches"][i] for i in keep]
    for k in ("quantiles", "global_quantiles", "cluster_map"):
        d[k] = [d[k][i] for i in keep]
    model_p.write_text(json.dumps(d))
    with pytest.raises(NormalizationError, match=r"\['P03'\] not in the normalisation model"):
        apply_sheet(batch_cohort.samples_csv, model_p, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert model.markers_ == ["CD3"]
    # a model applied to another panel (Treg-Th has no CD56): names the file and marker
    from flowtools._resources import study_template

    with pytest.raises(NormalizationError, match="not the one the model was fitted with"):
        apply_sheet(batch_cohort.samples_csv, tmp_path / "m.json", tmp_path / "out2",
                    template=study_template("Treg-Th"))
    assert not (tmp_path / "out2").exists() or not any((tmp_path / "out2").iterdir())
