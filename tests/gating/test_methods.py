"""Data-driven gating methods: known answers on simulated data, arguments, corner cases, a cohort file."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from reference.gating_ref import ellipsoid_ref, polygon_ref
from reference.methods_ref import chi2_ppf_ref, mindensity_ref, mixture_valley

from flowtools.errors import GatingError
from flowtools.gating.methods import (
    Ellipse,
    Interval,
    MethodContext,
    Polygon,
    Quadrants,
    Rectangle,
    TimeWindows,
    get_method,
    methods,
)

TOP = 262143.0
UNIT = (0.0, 1.0)
SCATTER = (0.0, 262144.0)


def ctx(d: int = 1, ranges=None, seed: int = 0) -> MethodContext:
    return MethodContext("Root/Parent/Test", tuple(f"d{i}" for i in range(d)), ranges or (UNIT,) * d, seed)


def run(name: str, values, c: MethodContext | None = None, **args):
    spec = get_method(name)
    v = np.ascontiguousarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    return spec.fn(v, c or ctx(v.shape[1]), **spec.check_args(args, "test.yaml:1"))


def interval_mask(x: np.ndarray, g: Interval) -> np.ndarray:
    lo = -np.inf if g.lo is None else g.lo
    hi = np.inf if g.hi is None else g.hi
    return (x >= lo) & (x < hi)


def rectangle_mask(x: np.ndarray, g: Rectangle) -> np.ndarray:
    m = np.ones(x.shape[0], dtype=bool)
    for j, (lo, hi) in enumerate(zip(g.los, g.his, strict=True)):
        m &= interval_mask(x[:, j], Interval(lo, hi))
    return m


def windows_mask(t: np.ndarray, g: TimeWindows) -> np.ndarray:
    m = np.zeros(t.size, dtype=bool)
    for lo, hi in g.windows:
        m |= (t >= lo) & (t < hi)
    return m


def ellipse_mask(x: np.ndarray, g: Ellipse) -> np.ndarray:
    return ellipsoid_ref(x, np.array(g.mean), np.linalg.inv(np.array(g.covariance)), g.distance_square)


def bimodal(n: int, seed: int, w=0.6, m=(0.2, 0.7), s=(0.08, 0.06)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    first = rng.random(n) < w
    return np.where(first, rng.normal(m[0], s[0], n), rng.normal(m[1], s[1], n))


def singlet_data(n: int, seed: int, *, log: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Area/height as the synthetic generator draws them: ratio 0.88 (3%) singlets, 0.56 (8%) doublets."""
    rng = np.random.default_rng(seed)
    nd = n // 15
    ns = n - nd
    area = np.exp(rng.normal(np.log(50_000), 0.6, n))
    area[ns:] = np.exp(rng.normal(np.log(50_000), 0.4, nd)) * 2.0
    ratio = np.r_[
        0.88 * np.exp(0.03 * rng.standard_normal(ns)), 0.56 * np.exp(0.08 * rng.standard_normal(nd))
    ]
    area = np.clip(area + 200 * rng.standard_normal(n), 0, TOP)
    x = np.c_[area, np.clip(area * ratio, 0, TOP)]
    if log:
        x = np.log10(np.maximum(x, 1.0))
    return x, np.r_[np.zeros(ns, bool), np.ones(nd, bool)]


def clusters(n: int, seed: int, d: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    means = np.array([[0.3, 0.3, 0.3], [0.7, 0.4, 0.6], [0.5, 0.8, 0.2]])[:, :d]
    sds = np.array([[0.06, 0.05, 0.05], [0.045, 0.07, 0.05], [0.055, 0.045, 0.04]])[:, :d]
    sizes = (np.array([0.5, 0.3, 0.2]) * n).astype(int)
    lab = np.repeat(np.arange(3), sizes)
    x = means[lab] + sds[lab] * rng.standard_normal((lab.size, d))
    if d >= 2:  # some correlation in the first cluster
        x[lab == 0, 1] += 0.5 * (x[lab == 0, 0] - 0.3)
    return x, lab


def clog_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Time (units of 10 ms) plus FSC-like and logicle-like signals; a 5 s gap then an 8% signal drop."""
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1 / 1500, n))
    start, width = int(n * 0.45), int(n * 0.08)
    t[start:] += 5.0
    sig = np.c_[rng.normal(60_000, 15_000, n), rng.normal(0.5, 0.2, n)]
    sig[start : start + width] *= 0.65
    bad = np.zeros(n, dtype=bool)
    bad[start : start + width] = True
    return np.c_[t * 100, sig], bad


# ------------------------------------------------------------------------------------------ registry


def test_registry_has_the_builtin_methods():
    got = methods()
    assert {"mindensity", "tail", "quantile", "singlet", "boundary", "gmm", "quad", "qc"} <= set(got)
    assert "ref" not in got and "bool" not in got
    assert get_method("mindensity").dims == (1,)
    assert get_method("singlet").dims == (2,) and get_method("quad").dims == (2,)
    assert get_method("gmm").dims == (1, 2, 3)
    assert 1 in get_method("qc").dims and 4 in get_method("qc").dims
    for spec in got.values():
        assert spec.doc, spec.name


# ------------------------------------------------------------------------------------------ mindensity


@pytest.mark.parametrize("n", [2_000, 200_000])
@pytest.mark.parametrize("side", ["positive", "negative"])
def test_mindensity_finds_the_valley(n, side):
    x = bimodal(n, seed=n)
    truth = mixture_valley((0.6, 0.4), (0.2, 0.7), (0.08, 0.06), 0.2, 0.7)
    g = run("mindensity", x, side=side)
    cut = g.lo if side == "positive" else g.hi
    assert abs(cut - truth) < (0.03 if n < 10_000 else 0.01)
    assert (g.hi is None) if side == "positive" else (g.lo is None)


def test_mindensity_agrees_with_scipy_reference():
    for seed, (w, m, s) in enumerate([(0.6, (0.2, 0.7), (0.08, 0.06)), (0.85, (0.15, 0.6), (0.07, 0.05))]):
        x = bimodal(50_000, seed, w, m, s)
        ours = run("mindensity", x).lo
        assert abs(ours - mindensity_ref(x)) < 0.02
        assert abs(ours - mixture_valley((w, 1 - w), m, s, m[0], m[1])) < 0.015


def test_mindensity_is_scale_free():
    x = bimodal(50_000, 3)
    unit = run("mindensity", x).lo
    big = run("mindensity", x * 262144.0, ctx(1, (SCATTER,))).lo
    decades = run("mindensity", x * 4.5 - 0.3, ctx(1, ((-0.3, 4.2),))).lo
    assert big / 262144.0 == pytest.approx(unit, abs=2e-3)
    assert (decades + 0.3) / 4.5 == pytest.approx(unit, abs=2e-3)


def test_mindensity_empty_gap_cuts_in_the_middle():
    rng = np.random.default_rng(4)
    x = np.r_[rng.uniform(0.0, 0.2, 5000), rng.uniform(0.6, 0.8, 5000)]
    assert run("mindensity", x).lo == pytest.approx(0.4, abs=0.03)


def test_mindensity_two_most_prominent_of_three_and_range():
    rng = np.random.default_rng(5)
    x = np.r_[rng.normal(0.1, 0.04, 40_000), rng.normal(0.45, 0.05, 40_000), rng.normal(0.85, 0.04, 3_000)]
    assert run("mindensity", x).lo == pytest.approx(
        mixture_valley((40, 40, 3), (0.1, 0.45, 0.85), (0.04, 0.05, 0.04), 0.1, 0.45), abs=0.01
    )
    in_range = run("mindensity", x, range=[0.3, 1.0]).lo
    assert in_range == pytest.approx(
        mixture_valley((40, 3), (0.45, 0.85), (0.05, 0.04), 0.45, 0.85), abs=0.02
    )
    guided = run("mindensity", x, peaks=[0.45, 0.85]).lo
    assert guided == pytest.approx(in_range, abs=0.02)


def test_mindensity_single_peak_fallbacks():
    x = np.random.default_rng(6).normal(0.3, 0.1, 100_000)
    upper = 0.3 + 0.1 * math.sqrt(-2 * math.log(0.01))
    assert run("mindensity", x, single_peak="upper").lo == pytest.approx(upper, abs=0.01)
    # 3 SDs from zero: the negative population (auto), cut at its upper tail
    assert run("mindensity", x).lo == pytest.approx(upper, abs=0.01)
    # the cut does not depend on side: sibling gates stay complementary
    assert run("mindensity", x, side="negative").hi == run("mindensity", x).lo
    assert run("mindensity", x, single_peak="lower").lo == pytest.approx(0.6 - upper, abs=0.01)
    assert run("mindensity", x, single_peak="upper", tolerance=0.1).lo == pytest.approx(
        0.3 + 0.1 * math.sqrt(2 * math.log(10)), abs=0.01
    )
    with pytest.raises(GatingError, match="Root/Parent/Test.*single peak"):
        run("mindensity", x, single_peak="error")


# ------------------------------------------------------------------------------------------ tail, quantile


@pytest.mark.parametrize("tolerance", [0.01, 0.05])
def test_tail_cuts_where_the_peak_falls(tolerance):
    rng = np.random.default_rng(7)
    x = np.r_[rng.normal(0.3, 0.1, 100_000), rng.normal(0.9, 0.03, 1_000)]  # a small positive bump
    k = 0.1 * math.sqrt(-2 * math.log(tolerance))
    up = run("tail", x, tolerance=tolerance)
    assert up.hi is None and up.lo == pytest.approx(0.3 + k, abs=0.01)
    down = run("tail", x, tolerance=tolerance, side="negative")
    assert down.lo is None and down.hi == pytest.approx(0.3 - k, abs=0.01)


def test_quantile_matches_numpy():
    x = np.random.default_rng(8).normal(size=10_001)
    assert run("quantile", x, q=0.9) == Interval(float(np.quantile(x, 0.9)), None)
    assert run("quantile", x, q=0.1, side="negative") == Interval(None, float(np.quantile(x, 0.1)))
    with pytest.raises(GatingError, match="needs argument 'q'"):
        get_method("quantile").check_args({}, "t.yaml:3")


# ------------------------------------------------------------------------------------------ singlet


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("n", [5_000, 300_000])
def test_singlet_excludes_doublets(n, log):
    x, doublet = singlet_data(n, seed=n, log=log)
    ranges = ((0.0, math.log10(262144.0)),) * 2 if log else (SCATTER, SCATTER)
    g = run("singlet", x, ctx(2, ranges))
    assert isinstance(g, Polygon) and len(g.vertices) >= 4
    inside = polygon_ref(x[:, 0], x[:, 1], np.array(g.vertices))
    assert inside[~doublet].mean() >= 0.98
    assert 1 - inside[doublet].mean() >= 0.99


def test_singlet_band_spans_the_range():
    x, _ = singlet_data(5_000, seed=1)
    xs = np.array(run("singlet", x, ctx(2, (SCATTER, SCATTER))).vertices)[:, 0]
    assert xs.min() < 0 and xs.max() > 262144.0


# ------------------------------------------------------------------------------------------ boundary


def test_boundary_removes_piles_only():
    rng = np.random.default_rng(9)
    n = 100_000
    x = np.c_[np.clip(rng.normal(60_000, 20_000, n), 0, TOP), rng.normal(0.4, 0.15, n)]
    top = rng.choice(n, 3_000, replace=False)
    x[top, 0] = TOP
    bottom = np.setdiff1d(rng.choice(n, 2_000, replace=False), top)
    x[bottom, 0] = 0.0
    g = run("boundary", x, ctx(2, (SCATTER, (0.111, 1.0))))
    keep = rectangle_mask(x, g)
    assert not keep[top].any() and not keep[bottom].any()
    clean = np.ones(n, dtype=bool)
    clean[np.r_[top, bottom]] = False
    assert keep[clean].mean() >= 0.99
    assert g.los[1] is None  # compensated negatives below the range are not margin events
    below = clean & (x[:, 1] < 0.111)
    assert below.sum() > 100 and interval_mask(x[below, 1], Interval(g.los[1], g.his[1])).all()


def test_boundary_without_piles_keeps_everything():
    x = np.random.default_rng(10).normal(0.5, 0.1, (20_000, 2))
    g = run("boundary", x, ctx(2))
    assert g.los == (None, None) and rectangle_mask(x, g).all()


# ------------------------------------------------------------------------------------------ gmm


@pytest.mark.parametrize(
    ("target", "want"),
    [("largest", 0), ("highest_x", 1), ("lowest_x", 0), ("highest_y", 2), ("lowest_y", 0), ([0.5, 0.8], 2)],
)
def test_gmm_picks_and_covers_the_target(target, want):
    x, lab = clusters(30_000, seed=11)
    g = run("gmm", x, k=3, target=target)
    inside = ellipse_mask(x, g)
    assert inside[lab == want].mean() >= 0.90
    assert inside[lab != want].mean() < 0.02


@pytest.mark.parametrize("d", [1, 3])
def test_gmm_other_dimensions(d):
    x, lab = clusters(20_000, seed=12, d=d)
    g = run("gmm", x, ctx(d), k=3, target="highest_x", level=0.99)
    inside = ellipse_mask(x, g)
    assert inside[lab == 1].mean() >= 0.95 and inside[lab != 1].mean() < 0.02
    assert g.distance_square == pytest.approx(chi2_ppf_ref(0.99, d), rel=1e-9)


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("p", [0.5, 0.9, 0.95, 0.999])
def test_chi2_quantile(d, p):
    from flowtools.gating.methods.mixture import _chi2_ppf

    assert _chi2_ppf(p, d) == pytest.approx(chi2_ppf_ref(p, d), rel=1e-9)


def test_gmm_target_must_fit_the_dimensions():
    x, _ = clusters(3_000, seed=13, d=1)
    with pytest.raises(GatingError, match="Root/Parent/Test"):
        run("gmm", x, ctx(1), k=2, target="highest_y")
    with pytest.raises(GatingError, match="coordinates"):
        run("gmm", x, ctx(1), k=2, target=[0.1, 0.2])


# ------------------------------------------------------------------------------------------ quad


def test_quad_cuts_both_axes():
    rng = np.random.default_rng(14)
    n = 20_000
    sx, sy = rng.random(n) < 0.6, rng.random(n) < 0.3
    x = np.c_[
        np.where(sx, rng.normal(0.7, 0.06, n), rng.normal(0.2, 0.08, n)),
        np.where(sy, rng.normal(0.75, 0.05, n), rng.normal(0.25, 0.07, n)),
    ]
    g = run("quad", x, ctx(2))
    assert isinstance(g, Quadrants)
    assert g.x_cut == pytest.approx(mixture_valley((0.4, 0.6), (0.2, 0.7), (0.08, 0.06), 0.2, 0.7), abs=0.02)
    assert g.y_cut == pytest.approx(
        mixture_valley((0.7, 0.3), (0.25, 0.75), (0.07, 0.05), 0.25, 0.75), abs=0.02
    )
    fixed = run("quad", x, ctx(2), x_cut=0.5)
    assert fixed.x_cut == 0.5 and fixed.y_cut == g.y_cut
    assert run("quad", np.empty((0, 2)), ctx(2), x_cut=1.0, y_cut=2.0) == Quadrants(1.0, 2.0)


# ------------------------------------------------------------------------------------------ qc


@pytest.mark.parametrize("binning", ["count", "time"])
@pytest.mark.parametrize("n", [20_000, 300_000])
def test_qc_removes_the_clog(n, binning):
    x, bad = clog_data(n, seed=n)
    g = run("qc", x, ctx(3, ((0.0, x[-1, 0]), SCATTER, UNIT)), binning=binning)
    keep = windows_mask(x[:, 0], g)
    assert 1 - keep[bad].mean() >= 0.99
    assert keep[~bad].mean() >= 0.95
    assert keep[np.argmax(x[:, 0])]  # the last event is inside the last window


def test_qc_keeps_clean_acquisitions_whole():
    rng = np.random.default_rng(15)
    t = np.cumsum(rng.exponential(1.0, 50_000))
    x = np.c_[t, rng.normal(0.5, 0.1, t.size)]
    g = run("qc", x, ctx(2))
    assert windows_mask(t, g).mean() >= 0.97
    assert run("qc", t[:50], ctx(1)) == TimeWindows(((t[0], float(np.nextafter(t[49], np.inf))),))


# ------------------------------------------------------------------------------------------ arguments


@pytest.mark.parametrize(
    ("name", "args", "match"),
    [
        ("mindensity", {"sid": "positive"}, "no argument"),
        ("mindensity", {"side": "up"}, "must be one of"),
        ("mindensity", {"bandwidth": 0.0}, "outside"),
        ("mindensity", {"bandwidth": "wide"}, "must be a number"),
        ("mindensity", {"range": [0.1]}, "pair"),
        ("tail", {"tolerance": 1.5}, "outside"),
        ("quantile", {"q": 1.2}, "outside"),
        ("singlet", {"width": -1.0}, "outside"),
        ("gmm", {"k": 2.5}, "integer"),
        ("gmm", {"k": 0}, "outside"),
        ("gmm", {"target": "biggest"}, "must be one of"),
        ("gmm", {"target": [1.0, 2.0, 3.0, 4.0]}, "1 to 3 numbers"),
        ("gmm", {"target": [1.0, "x"]}, "must be a number"),
        ("gmm", {"level": 1.0}, "outside"),
        ("qc", {"bins": True}, "must be a number"),
        ("qc", {"binning": "events"}, "must be one of"),
        ("boundary", {"tolerance": float("nan")}, "finite"),
    ],
)
def test_bad_arguments_are_named(name, args, match):
    with pytest.raises(GatingError, match=match) as info:
        get_method(name).check_args(args, "panel.yaml:12")
    assert "panel.yaml:12" in str(info.value)


def test_empty_range_is_an_error():
    with pytest.raises(GatingError, match="range"):
        run("mindensity", bimodal(1000, 0), range=[0.5, 0.2])


# ------------------------------------------------------------------------------------------ determinism


def test_same_seed_same_geometry():
    x, _ = clusters(80_000, seed=16)
    s, _ = singlet_data(80_000, seed=16)
    c, _ = clog_data(20_000, seed=16)
    for name, v, kw in [
        ("gmm", x, {"k": 3, "max_events": 10_000}),
        ("singlet", s, {"max_events": 10_000}),
        ("mindensity", x[:, :1], {}),
        ("quad", x, {}),
        ("qc", c, {}),
        ("boundary", s, {}),
    ]:
        c1 = ctx(v.shape[1], seed=3)
        assert run(name, v, c1, **kw) == run(name, v.copy(), c1, **kw), name
    g1 = run("gmm", x, ctx(2, seed=1), k=3, max_events=10_000)
    g2 = run("gmm", x, ctx(2, seed=2), k=3, max_events=10_000)
    assert g1.mean == pytest.approx(g2.mean, abs=0.01)  # another seed: another subsample, same answer


# ------------------------------------------------------------------------------------------ corner cases

_CORNER_ARGS = {"quantile": {"q": 0.5}, "gmm": {"k": 2}}
_DIMS = {"singlet": 2, "quad": 2, "gmm": 2}


@pytest.mark.parametrize(
    "name", ["mindensity", "tail", "quantile", "singlet", "boundary", "gmm", "quad", "qc"]
)
@pytest.mark.parametrize("case", ["empty", "one", "constant", "all_nan", "some_nan", "two_values", "inf"])
def test_corner_cases_give_a_gate_or_a_gating_error(name, case):
    d = _DIMS.get(name, 1)
    rng = np.random.default_rng(17)
    v = {
        "empty": np.empty((0, d)),
        "one": np.full((1, d), 0.5),
        "constant": np.full((500, d), 0.5),
        "all_nan": np.full((500, d), np.nan),
        "some_nan": np.where(rng.random((2000, d)) < 0.1, np.nan, rng.normal(0.5, 0.1, (2000, d))),
        "two_values": np.repeat([[0.2] * d, [0.8] * d], 300, axis=0),
        "inf": np.r_[rng.normal(0.5, 0.1, (1000, d)), np.full((5, d), np.inf)],
    }[case]
    if name == "qc" and case in ("some_nan", "two_values", "inf"):
        v = np.c_[np.arange(v.shape[0], dtype=float), v]
    try:
        g = run(name, v, ctx(v.shape[1]), **_CORNER_ARGS.get(name, {}))
    except GatingError as exc:
        assert "Root/Parent/Test" in str(exc)
        assert case in ("empty", "one", "constant", "all_nan", "two_values"), (case, exc)
    else:
        assert isinstance(g, Interval | Rectangle | Polygon | Ellipse | Quadrants | TimeWindows)
        numbers = np.array([v for v in _flatten(g) if v is not None], dtype=float)
        assert np.isfinite(numbers).all(), g


def _flatten(obj):
    if isinstance(obj, tuple | list):
        for o in obj:
            yield from _flatten(o)
    elif hasattr(obj, "__dataclass_fields__"):
        for f in obj.__dataclass_fields__:
            yield from _flatten(getattr(obj, f))
    else:
        yield obj


# ------------------------------------------------------------------------------------------ cohort file


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from flowtools.synth import make_cohort

    out = tmp_path_factory.mktemp("cohort")
    make_cohort(out, n_women=2, events=20_000, seed=1)
    return out


def _load(cohort, sample_id):
    from flowtools.compensation import SpilloverMatrix
    from flowtools.io import read_fcs
    from flowtools.transforms import LogicleTransform

    sample = read_fcs(cohort / "fcs" / f"{sample_id}.fcs")
    events = SpilloverMatrix.from_fcs(sample).apply(np.asarray(sample.events, dtype=np.float64), sample.pnn)
    logicle = LogicleTransform(T=262144, W=0.5, M=4.5, A=0)
    names = list(sample.pnn)
    for j, name in enumerate(names):
        if name not in ("FSC-A", "FSC-H", "SSC-A", "Time"):
            events[:, j] = logicle.apply(np.ascontiguousarray(events[:, j]))
    pops = json.loads((cohort / "truth" / "populations.json").read_text())
    labels = np.array([pops[str(k)] for k in np.load(cohort / "truth" / f"{sample_id}.labels.npy")])
    markers = dict(zip(sample.pns, names, strict=True))
    return events, names, markers, labels, float(logicle.apply(np.array([0.0]))[0])


def test_cohort_singlets_and_cd3(cohort):
    events, names, markers, labels, zero = _load(cohort, "S0001-TBNK")
    fsc = events[:, [names.index("FSC-A"), names.index("FSC-H")]]
    g = run("singlet", fsc, ctx(2, (SCATTER, SCATTER)))
    inside = polygon_ref(fsc[:, 0], fsc[:, 1], np.array(g.vertices))
    doublet = labels == "Doublets"
    assert 1 - inside[doublet].mean() >= 0.99
    assert inside[~doublet].mean() >= 0.98

    lymph = np.char.startswith(labels, "Singlets/Live/Lymphocytes")
    cd3 = events[lymph, names.index(markers["CD3"])]
    truth = np.char.startswith(labels[lymph], "Singlets/Live/Lymphocytes/T cells") | (
        labels[lymph] == "Singlets/Live/Lymphocytes/NKT-like"
    )
    pos = interval_mask(cd3, run("mindensity", cd3, ctx(1, ((zero, 1.0),))))
    tp = np.sum(pos & truth)
    f1 = 2 * tp / (pos.sum() + truth.sum())
    assert f1 >= 0.95


def test_cohort_artefacts(cohort):
    planted = json.loads((cohort / "truth" / "artefacts.json").read_text())
    kinds = {a["kind"]: sid for sid, arts in planted.items() for a in arts}
    if "clog" not in kinds or "margin" not in kinds:
        pytest.skip("this cohort seed planted no clog or margin file")
    events, names, _, _, zero = _load(cohort, kinds["clog"])
    clog = (np.load(cohort / "truth" / f"{kinds['clog']}.qc.npy") & 2).astype(bool)
    cols = [names.index(c) for c in ("Time", "FSC-A", "SSC-A")]
    keep = windows_mask(events[:, cols[0]], run("qc", events[:, cols], ctx(3)))
    assert 1 - keep[clog].mean() >= 0.95 and keep[~clog].mean() >= 0.95

    events, names, _, _, _ = _load(cohort, kinds["margin"])
    margin = (np.load(cohort / "truth" / f"{kinds['margin']}.qc.npy") & 1).astype(bool)
    cols = [names.index(c) for c in ("FSC-A", "SSC-A")]
    keep = rectangle_mask(events[:, cols], run("boundary", events[:, cols], ctx(2, (SCATTER, SCATTER))))
    assert not keep[margin].any() and keep[~margin].mean() >= 0.99


def test_density_of_two_events_with_a_wide_bandwidth_stays_on_its_grid():
    """Regression: np.convolve(mode="same") returned the kernel's length (2047) when the kernel was
    longer than the 1024-point grid, and a tail cut indexed past the grid (IndexError)."""
    from flowtools.gating.methods import density as D

    v = np.array([[0.66785984], [0.20839201]])
    ctx = MethodContext("p", ("x",), ((0.0, 1.0),), 0)
    d = D._Density(v[:, 0], 3.0, ctx, "mindensity")
    assert d.density.shape == d.grid.shape == (D._GRID,)
    cut = D.tail(v, ctx, side="positive", tolerance=0.01, range=None, bandwidth=3.0)
    assert np.isfinite([x for x in (cut.lo, cut.hi) if x is not None]).all()
