"""The fast paths of ``mindensity``, ``qc`` and ``singlet`` against plain numpy; what they must not change.

The numba kernels of the density, ``qc`` and the singlet band, and the sorted-order shortcuts
(sorted quantiles, the scale model's contiguous bins, ranks, subsampling, the density itself)
are compared with their plain-numpy references in ``tests/reference/methods_ref.py`` bit for
bit (on the bit patterns, signed zeros included). Inputs: hypothesis-drawn float64 with ties,
-0.0 beside 0.0, constant columns, tiny counts; and the events of a generated cohort. The
method-level tests check what the shortcuts must not change: the order of the events, their
memory layout, a search range as a pre-filter, the errors on degenerate input.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import methods_ref as R

from flowtools.errors import GatingError
from flowtools.gating.methods import Interval, MethodContext, Polygon, TimeWindows
from flowtools.gating.methods import _common as C
from flowtools.gating.methods import _density_kernels as DK
from flowtools.gating.methods import _qc_kernels as QK
from flowtools.gating.methods import _singlet_kernels as SK
from flowtools.gating.methods import density as D
from flowtools.gating.methods import qc as Q
from flowtools.gating.methods import singlet as S

# ------------------------------------------------------------------------------------------ helpers


def _bits(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float64)).view(np.int64)


def _same(got, want) -> None:
    """Same geometry, float for float, signed zeros included."""
    assert type(got) is type(want)
    assert got == want
    assert np.array_equal(_bits(_flat(got)), _bits(_flat(want)))


def _flat(g) -> list[float]:
    if isinstance(g, Interval):
        return [v for v in (g.lo, g.hi) if v is not None]
    if isinstance(g, Polygon):
        return [c for p in g.vertices for c in p]
    if isinstance(g, TimeWindows):
        return [c for w in g.windows for c in w]
    raise TypeError(type(g))


def _run(fn, *args, **kwargs):
    """The method's geometry, or its GatingError (warnings of degenerate draws silenced)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            return fn(*args, **kwargs)
        except GatingError as e:
            return e


def _same_outcome(got, want) -> None:
    """The same geometry (bit for bit) or a GatingError with the same message."""
    if isinstance(want, GatingError):
        assert isinstance(got, GatingError) and str(got) == str(want)
    else:
        _same(got, want)


def _column(draw, n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A float64 column of one of several awkward kinds (ties, signed zeros, constants, wide spans)."""
    if kind == "normal":
        v = rng.normal(0.0, 1e3, n)
    elif kind == "lognormal":
        v = rng.lognormal(9.0, 1.0, n)
    elif kind == "ties":
        v = rng.integers(-3, 4, n).astype(float)
    elif kind == "int_scatter":  # integer-valued scatter, as read from FCS files
        v = np.round(rng.gamma(3.0, 2e4, n))
    elif kind == "const":
        v = np.full(n, draw(st.sampled_from([0.0, -0.0, 1.5])))
    else:  # "mixed": a few distinct values, zeros of both signs, and noise
        v = np.where(rng.random(n) < 0.5, rng.integers(-2, 3, n).astype(float), rng.normal(size=n))
    zeros = draw(st.sampled_from(["none", "pos", "neg", "both"]))
    if zeros != "none" and n:
        at = rng.random(n) < 0.15
        v[at] = 0.0
        if zeros == "neg":
            v[at] = -0.0
        elif zeros == "both":
            v[at & (rng.random(n) < 0.5)] = -0.0
    return v


def _ctx(d: int, ranges=None, seed: int = 0) -> MethodContext:
    return MethodContext("Root/x", tuple(f"d{i}" for i in range(d)), ranges or ((0.0, 1.0),) * d, seed)


_KINDS = st.sampled_from(["normal", "lognormal", "ties", "int_scatter", "const", "mixed"])
_HYP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_MD = {"bandwidth": 1.0, "peaks": None, "min_peak_height": 0.05, "single_peak": "upper", "tolerance": 0.01}


# ------------------------------------------------------------------------------------------ kernels


@_HYP
@given(data=st.data(), n=st.integers(1, 3000), kind=_KINDS, n_p=st.integers(2, 1001),
       seed=st.integers(0, 2**32 - 1))
def test_interp_kernel(data, n, kind, n_p, seed):
    rng = np.random.default_rng(seed)
    x = _column(data.draw, n, kind, rng)
    pool = np.concatenate([x, rng.normal(0.0, 1e3, 50), [0.0, -1e300, 1e300]])
    xp = np.unique(rng.choice(pool, size=min(n_p, pool.size), replace=False))
    if xp.size < 2:
        xp = np.array([-1.0, 1.0])
    fp = np.sort(rng.random(xp.size)) if data.draw(st.booleans()) else rng.normal(size=xp.size)
    x = np.concatenate([x, xp, [np.nan, -np.inf, np.inf]])
    assert np.array_equal(_bits(QK.interp(x, xp, fp)), _bits(R.interp_ref(x, xp, fp)))
    strided = np.repeat(x, 2)[::2]  # non-contiguous input (a column of the events)
    assert np.array_equal(_bits(QK.interp(strided, xp, fp)), _bits(R.interp_ref(strided, xp, fp)))


def test_interp_kernel_extreme_knots():
    xp = np.array([-np.inf, -1.0, 0.0, 5e-324, 1e308, np.inf])  # overflowing spans and slopes
    fp = np.array([0.0, 0.1, 0.5, 0.5, 0.9, 1.0])
    x = np.array([-np.inf, -2.0, -1.0, -0.5, -0.0, 0.0, 5e-324, 1.0, 1e308, 1.5e308, np.inf, np.nan])
    with np.errstate(all="ignore"):
        want = R.interp_ref(x, xp, fp)
    assert np.array_equal(_bits(QK.interp(x, xp, fp)), _bits(want))


@_HYP
@given(data=st.data(), n=st.integers(0, 2000), kind=_KINDS, seed=st.integers(0, 2**32 - 1))
def test_restrict_and_density_hist_kernels(data, n, kind, seed):
    rng = np.random.default_rng(seed)
    x = _column(data.draw, n, kind, rng)
    lo, hi = sorted(rng.choice(np.concatenate([x, [-1.0, 0.0, 1.0, -0.0]]), 2))
    assert np.array_equal(_bits(DK.restrict(x, lo, hi)), _bits(R.restrict_ref(x, lo, hi)))
    grid = int(data.draw(st.sampled_from([1, 7, 1024])))
    span = float(np.ptp(x)) if n else 1.0
    start = float(x.min()) - 0.1 * span if n else 0.0
    dx = (span or 1.0) / max(grid - 1, 1) * data.draw(st.sampled_from([0.5, 1.0, 2.0]))
    want = R.density_hist_ref(x, start, dx, grid)
    assert np.array_equal(_bits(DK.density_hist(x, start, dx, grid)), _bits(want))


@_HYP
@given(n=st.integers(3, 400), levels=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
def test_prominences_kernel(n, levels, seed):
    rng = np.random.default_rng(seed)
    d = rng.integers(0, levels + 1, n).astype(float) * rng.choice([1.0, 0.25]) + 0.0  # plateaus, ties
    idx, _ = R.peaks_ref(d)
    assert np.array_equal(_bits(DK.prominences(d, idx)), _bits(R.prominences_ref(d, idx)))


@_HYP
@given(data=st.data(), n=st.integers(1, 3000), seed=st.integers(0, 2**32 - 1))
def test_singlet_step_and_kept_sorted_kernels(data, n, seed):
    rng = np.random.default_rng(seed)
    a = _column(data.draw, n, data.draw(_KINDS), rng)
    h = _column(data.draw, n, data.draw(_KINDS), rng)
    if data.draw(st.booleans()):
        h[rng.random(n) < 0.05] = data.draw(st.sampled_from([np.inf, -np.inf, np.nan]))
    c, b = float(rng.normal()), float(rng.uniform(0.5, 1.5))
    s0, s1 = float(rng.uniform(0.0, 2.0)), float(data.draw(st.sampled_from([0.0, 1e-3, -1e-3])))
    floor = float(data.draw(st.sampled_from([1e-309, 1e-9, 0.5])))
    with np.errstate(all="ignore"):
        want_new, want_d, want_r = R.singlet_band_ref(a, h, c, b, s0, s1, floor)
    before = rng.random(n) < 0.5 if data.draw(st.booleans()) else want_new.copy()
    new, design, rhs = before.copy(), np.empty((n, 2)), np.empty(n)
    m, same = SK.singlet_step(a, h, c, b, s0, s1, floor, new, design, rhs, np.empty(n))
    assert m == int(want_new.sum())
    assert same == np.array_equal(want_new, before)
    assert np.array_equal(new, want_new)
    assert np.array_equal(_bits(design[:m]), _bits(want_d))
    assert np.array_equal(_bits(rhs[:m]), _bits(want_r))
    order = np.argsort(a)
    c2, b2 = c + 0.25, b * 0.9
    with np.errstate(all="ignore"):
        a_want, e_want = R.singlet_kept_ref(a[order], h[order], c, b, s0, s1, floor, c2, b2)
    a_got, e_got = np.empty(n), np.empty(n)
    assert SK.singlet_kept_sorted(a[order], h[order], c, b, s0, s1, floor, c2, b2, a_got, e_got) == m
    assert np.array_equal(_bits(a_got[:m]), _bits(a_want))
    assert np.array_equal(_bits(e_got[:m]), _bits(e_want))


# ------------------------------------------------------------------------------------------ sorted shortcuts


@_HYP
@given(data=st.data(), n=st.integers(1, 3000), kind=_KINDS, seed=st.integers(0, 2**32 - 1))
def test_quantiles_sorted_are_np_quantile(data, n, kind, seed):
    rng = np.random.default_rng(seed)
    x = _column(data.draw, n, kind, rng)
    q = np.concatenate([[0.0, 0.1, 0.5, 1.0, 0.001, 0.999], rng.random(5), np.linspace(0, 1, 17)])
    for s in (np.sort(x), x[np.argsort(x)]):  # zeros in np.sort's order or argsort's
        assert np.array_equal(_bits(C._quantiles_sorted(s, q, unsorted=x)), _bits(np.quantile(x, q)))
        # callers that hold only the sorted values: np.quantile of those
        assert np.array_equal(_bits(C._quantiles_sorted(s, q)), _bits(np.quantile(s, q)))


def test_quantiles_sorted_nan_and_empty_go_to_numpy():
    s = np.array([1.0, 2.0, np.nan])
    assert np.isnan(C._quantiles_sorted(s, np.array([0.5]))).all()
    with pytest.raises((ValueError, IndexError)):  # as np.quantile of nothing
        C._quantiles_sorted(np.array([]), np.array([0.5]))


@_HYP
@given(n=st.integers(1, 3000), d=st.integers(1, 3), frac=st.floats(0.05, 1.5), seed=st.integers(0, 2**32 - 1))
def test_subsample_is_the_sorted_draw(n, d, frac, seed):
    x = np.random.default_rng(seed).normal(size=(n, d))
    limit = max(1, int(frac * n))
    assert np.array_equal(_bits(C._subsample(x, limit, seed)), _bits(R.subsample_ref(x, limit, seed)))


@_HYP
@given(data=st.data(), n=st.integers(10, 3000), kind=_KINDS,
       order=st.sampled_from(["argsort", "shuffled", "kept"]), seed=st.integers(0, 2**32 - 1))
def test_scale_model_on_sorted_events_in_any_tie_order(data, n, kind, order, seed):
    rng = np.random.default_rng(seed)
    a = _column(data.draw, n, kind, rng)
    e = _column(data.draw, n, data.draw(_KINDS), rng)
    if data.draw(st.booleans()):  # residuals that overflowed
        e[rng.random(n) < 0.05] = data.draw(st.sampled_from([np.inf, -np.inf, np.nan]))
    if order == "kept":  # what singlet passes: a subset of the events, in area order
        keep = rng.random(n) < 0.8
        a, e = a[keep], e[keep]
    # ties (and -0.0 / 0.0) in np.argsort's order, or in any order
    sort = np.lexsort((rng.random(a.size), a)) if order == "shuffled" else np.argsort(a)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # polyfit's RankWarning on degenerate bins
        want = R.scale_model_ref(a, e, 1e-9)
        got = S._scale_model(a[sort], e[sort], 1e-9)
    assert np.array_equal(_bits(got), _bits(want))


@_HYP
@given(data=st.data(), n=st.integers(1, 3000), kind=_KINDS, seed=st.integers(0, 2**32 - 1))
def test_bin_scales_kernel_is_np_median_per_bin(data, n, kind, seed):
    rng = np.random.default_rng(seed)
    a = np.sort(_column(data.draw, n, kind, rng))
    e = _column(data.draw, n, data.draw(_KINDS), rng)
    if data.draw(st.booleans()):
        e[rng.random(n) < 0.05] = data.draw(st.sampled_from([np.inf, -np.inf, np.nan]))
    cuts = np.sort(rng.integers(0, n + 1, size=data.draw(st.integers(1, 17))))
    bounds = np.concatenate([[0], cuts, [n]]).astype(np.int64)
    min_n = data.draw(st.integers(1, 12))
    mids, mads = np.empty(bounds.size), np.empty(bounds.size)
    with np.errstate(all="ignore"):
        k = SK.bin_scales(a, e, bounds, min_n, mids, mads, np.empty(n))
        want_mid, want_mad = [], []
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            if hi - lo >= min_n:
                want_mid.append(np.median(a[lo:hi]))
                want_mad.append(np.median(np.abs(e[lo:hi] - np.median(e[lo:hi]))))
    assert k == len(want_mid)
    assert np.array_equal(_bits(np.abs(mids[:k])), _bits(np.abs(want_mid)))  # zero's sign: numpy's pick
    assert np.array_equal(_bits(mads[:k]), _bits(want_mad))


@_HYP
@given(data=st.data(), n=st.integers(1, 4000), kind=_KINDS, seed=st.integers(0, 2**32 - 1))
def test_ranks_are_np_interp_in_np_quantiles(data, n, kind, seed):
    v = _column(data.draw, n, kind, np.random.default_rng(seed))
    assert np.array_equal(_bits(Q._ranks(v)), _bits(R.ranks_ref(v)))
    col = np.column_stack([v, v])[:, 1]  # a strided column, as qc passes
    assert np.array_equal(_bits(Q._ranks(col)), _bits(R.ranks_ref(col)))


def _check_density(x: np.ndarray, factor: float) -> None:
    want = R.density_ref(x, factor)
    try:
        dens = D._Density(x, factor, _ctx(1), "mindensity")
    except GatingError:
        assert want is None
        return
    assert want is not None
    grid, density, bw = want
    assert np.array_equal(_bits(dens.grid), _bits(grid))
    assert np.array_equal(_bits(dens.density), _bits(density))
    assert np.array_equal(_bits([dens.bandwidth]), _bits([bw]))
    idx, prom = dens.peaks()
    want_idx, want_prom = R.peaks_ref(dens.density)
    assert np.array_equal(idx, want_idx)
    assert np.array_equal(_bits(prom), _bits(want_prom))


@_HYP
@given(data=st.data(), n=st.integers(0, 3000), kind=_KINDS, factor=st.sampled_from([0.05, 1.0, 3.0]),
       seed=st.integers(0, 2**32 - 1))
def test_density_is_the_plain_numpy_density(data, n, kind, factor, seed):
    _check_density(_column(data.draw, n, kind, np.random.default_rng(seed)), factor)


# ------------------------------------------------------------------------------------------ methods


@_HYP
@given(data=st.data(), n=st.integers(1, 3000), seed=st.integers(0, 2**32 - 1))
def test_a_search_range_is_a_prefilter(data, n, seed):
    rng = np.random.default_rng(seed)
    if data.draw(st.booleans()):
        v = np.where(rng.random(n) < 0.6, rng.normal(0.2, 0.08, n), rng.normal(0.7, 0.06, n))
    else:
        v = _column(data.draw, n, data.draw(_KINDS), rng)
    a, b = data.draw(st.sampled_from([(0.1, 0.9), (0.0, 1.0), (-1.0, 2e3), (2, 3), (-0.0, 0.0)]))
    inside = v[(v >= a) & (v <= b)][:, None]
    side = data.draw(st.sampled_from(["positive", "negative"]))
    md = {**_MD, "single_peak": data.draw(st.sampled_from(["auto", "upper", "lower", "error"]))}
    if inside.shape[0]:  # (an empty pre-filter fails earlier, with another message)
        _same_outcome(_run(D.mindensity, v[:, None], _ctx(1), side=side, range=(a, b), **md),
                      _run(D.mindensity, inside, _ctx(1), side=side, range=(a, b), **md))
        tl = {"side": side, "tolerance": 0.01, "range": (a, b), "bandwidth": 1.0}
        _same_outcome(_run(D.tail, v[:, None], _ctx(1), **tl), _run(D.tail, inside, _ctx(1), **tl))
    q = _run(D.quad, np.column_stack([v, v[::-1]]), _ctx(2), x_cut=None, y_cut=None, x_range=(a, b),
             y_range=None, bandwidth=1.0, min_peak_height=0.05, tolerance=0.01, single_peak="auto")
    auto = {**_MD, "single_peak": "auto"}
    want = _run(D.mindensity, v[:, None], _ctx(1), side="positive", range=(a, b), **auto)
    if isinstance(want, GatingError):
        assert isinstance(q, GatingError)
    elif not isinstance(q, GatingError):
        assert np.array_equal(_bits([q.x_cut]), _bits([want.lo]))  # quad's x cut is mindensity's


@_HYP
@given(data=st.data(), n=st.integers(1, 4000), d=st.integers(1, 3),
       binning=st.sampled_from(["count", "time"]), seed=st.integers(0, 2**32 - 1))
def test_qc_does_not_depend_on_the_order_of_the_events(data, n, d, binning, seed):
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1.0, n))  # distinct times: one time order
    cols = [t] + [_column(data.draw, n, data.draw(_KINDS), rng) for _ in range(d - 1)]
    x = np.column_stack(cols)
    args = {"bins": data.draw(st.sampled_from([5, 20, 100])), "binning": binning, "z": 4.0,
            "min_events": data.draw(st.sampled_from([1, 20])), "min_run": 1}
    ordered = _run(Q.qc, x, _ctx(d), **args)
    _same_outcome(_run(Q.qc, x[rng.permutation(n)], _ctx(d), **args), ordered)
    _same_outcome(_run(Q.qc, np.asfortranarray(x), _ctx(d), **args), ordered)
    if not isinstance(ordered, GatingError):
        lo, hi = zip(*ordered.windows, strict=True)
        assert lo[0] >= t[0] and hi[-1] <= np.nextafter(t[-1], np.inf)
        assert all(a < b for a, b in ordered.windows)
        assert all(w[1] <= nxt[0] for w, nxt in zip(ordered.windows[:-1], ordered.windows[1:], strict=True))


@_HYP
@given(data=st.data(), n=st.integers(20, 3000), seed=st.integers(0, 2**32 - 1),
       max_events=st.sampled_from([25, 500, 1000, 50_000]))
def test_singlet_band_on_awkward_events(data, n, seed, max_events):
    rng = np.random.default_rng(seed)
    kind = data.draw(st.sampled_from(["scatter", "log", "ties", "columns"]))
    if kind == "columns":  # anything: constant, tied, signed zeros
        a = _column(data.draw, n, data.draw(_KINDS), rng)
        h = _column(data.draw, n, data.draw(_KINDS), rng)
    else:
        a = rng.lognormal(11.0, 0.4, n) if kind != "ties" else np.round(rng.lognormal(4.0, 0.4, n))
        h = a * np.where(rng.random(n) < 0.1, 0.56, 0.88) * rng.normal(1.0, 0.03, n)
        if kind == "log":
            a, h = np.log10(a), np.log10(np.abs(h) + 1.0)
        elif kind == "ties":
            h = np.round(h)
    x = np.column_stack([a, h])
    c = _ctx(2, ((0.0, 262144.0),) * 2, seed=int(seed % 7))
    g = _run(S.singlet, x, c, width=4.0, max_events=max_events)
    _same_outcome(_run(S.singlet, np.asfortranarray(x), c, width=4.0, max_events=max_events), g)
    _same_outcome(_run(S.singlet, x.copy(), c, width=4.0, max_events=max_events), g)  # deterministic
    if isinstance(g, GatingError):
        assert str(g).startswith("population 'Root/x': method 'singlet' cannot compute a gate: ")
        return
    v = np.array(g.vertices)
    assert v.shape == (66, 2)
    upper, lower = v[:33], v[33:][::-1]
    assert np.array_equal(upper[:, 0], lower[:, 0])  # one x grid, along and back
    assert np.all(np.diff(upper[:, 0]) > 0) and upper[0, 0] < min(0.0, a.min()) and upper[-1, 0] > a.max()
    if np.isfinite(v).all():
        assert np.all(upper[:, 1] >= lower[:, 1])
    if kind == "scatter" and n >= 1000:  # the singlet line h = 0.88 a, through the band's middle
        mid = (upper[:, 1] + lower[:, 1]) / 2
        assert np.interp(np.median(a), upper[:, 0], mid) == pytest.approx(0.88 * np.median(a), rel=0.05)


@_HYP
@given(n=st.integers(200, 4000), seed=st.integers(0, 2**32 - 1), log=st.booleans())
def test_singlet_line_solve_agrees_with_the_svd(n, seed, log):
    """singlet with line_lstsq against singlet with np.linalg.lstsq (line_lstsq declining every system).

    Not bit for bit: the band's intercept is ill-conditioned (a line through points ~1e5 from
    the origin), so the two solves differ in its last ~11 digits; the band moves by less than
    1e-9 of the data's scale.
    """
    rng = np.random.default_rng(seed)
    a = rng.lognormal(11.0, 0.4, n)
    h = a * np.where(rng.random(n) < 0.1, 0.56, 0.88) * rng.normal(1.0, 0.03, n)
    if log:
        a, h = np.log10(a), np.log10(np.abs(h) + 1.0)
    x = np.column_stack([a, h])
    c = _ctx(2, ((0.0, 262144.0),) * 2)
    got = S.singlet(x, c, width=4.0, max_events=50_000)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SK, "line_lstsq", lambda design, rhs, m: (False, 0.0, 0.0))  # every fit through the SVD
        want = S.singlet(x, c, width=4.0, max_events=50_000)
    scale = float(np.abs(x).max())
    assert np.abs(np.array(got.vertices) - np.array(want.vertices)).max() <= 1e-9 * scale


@pytest.mark.parametrize(
    "v", [np.zeros(50), np.full(50, -0.0), np.array([0.0, -0.0] * 20), np.array([1.0]), np.zeros(0)],
    ids=["zeros", "negative_zeros", "mixed_zeros", "one", "empty"],
)
def test_degenerate_inputs(v):
    where = "population 'Root/x': method {!r} cannot compute a gate: "
    n = v.size
    md = _run(D.mindensity, v[:, None], _ctx(1), side="positive", range=None, **_MD)
    sg = _run(S.singlet, np.column_stack([v, v]), _ctx(2), width=4.0, max_events=1000)
    qc = _run(Q.qc, np.column_stack([np.arange(n, dtype=float), v, v]), _ctx(3), bins=100, binning="count",
              z=4.0, min_events=1, min_run=1)
    if n == 0:
        for name, g in (("mindensity", md), ("singlet", sg), ("qc", qc)):
            assert isinstance(g, GatingError)
            assert str(g).startswith(where.format(name) + "no events in the parent population")
        return
    assert isinstance(md, GatingError) and str(md).startswith(where.format("mindensity"))
    assert ("too few to estimate a density" if n == 1 else f"all {n} values are identical") in str(md)
    assert isinstance(sg, GatingError)
    assert str(sg) == where.format("singlet") + (
        "only 1 finite event(s) in the parent population (need at least 20)" if n == 1
        else "area or height has no spread")
    assert isinstance(qc, TimeWindows) and qc.windows[0][0] == 0.0  # constant signals flag no bin


# ------------------------------------------------------------------------------------------ cohort events


@pytest.fixture(scope="module")
def cohort_events(tmp_path_factory):
    """Compensated, logicle-transformed events of a small generated cohort (as the templates see them)."""
    from flowtools.compensation import SpilloverMatrix
    from flowtools.io import read_fcs
    from flowtools.synth import make_cohort
    from flowtools.transforms import LogicleTransform

    out = tmp_path_factory.mktemp("cohort_speed")
    make_cohort(out, n_women=3, events=40_000, seed=3)
    logicle = LogicleTransform(T=262144, W=0.5, M=4.5, A=0)
    samples = []
    for path in sorted((out / "fcs").glob("*.fcs")):
        s = read_fcs(path)
        ev = SpilloverMatrix.from_fcs(s).apply(np.asarray(s.events, dtype=np.float64), s.pnn)
        names = list(s.pnn)
        for j, name in enumerate(names):
            if name not in ("FSC-A", "FSC-H", "SSC-A", "Time"):
                ev[:, j] = logicle.apply(np.ascontiguousarray(ev[:, j]))
        samples.append((ev, names))
    assert len(samples) >= 2
    return samples


def test_cohort_events_take_the_reference_paths(cohort_events):
    for ev, names in cohort_events:
        col = {n: j for j, n in enumerate(names)}
        ssc = np.ascontiguousarray(ev[:, col["SSC-A"]])
        for name in names:  # the density of every fluorescence channel, and of SSC-A in a range
            if name not in ("FSC-A", "FSC-H", "SSC-A", "Time"):
                _check_density(np.ascontiguousarray(ev[:, col[name]]), 1.0)
        rng = (2000.0, 50000.0)
        _check_density(R.restrict_ref(ssc, *rng), 1.0)
        md = {"side": "positive", "range": rng, **_MD}
        _same_outcome(_run(D.mindensity, ssc[:, None], _ctx(1), **md),
                      _run(D.mindensity, R.restrict_ref(ssc, *rng)[:, None], _ctx(1), **md))
        for name in ("FSC-A", "SSC-A"):  # qc's ranks of the watched scatter (a strided column)
            assert np.array_equal(_bits(Q._ranks(ev[:, col[name]])), _bits(R.ranks_ref(ev[:, col[name]])))
        # singlet's steps on the scatter pair, around the line the method fits
        a, h = np.ascontiguousarray(ev[:, col["FSC-A"]]), np.ascontiguousarray(ev[:, col["FSC-H"]])
        g = S.singlet(ev[:, [col["FSC-A"], col["FSC-H"]]], _ctx(2, ((0.0, 262144.0),) * 2), width=4.0,
                      max_events=50_000)
        v = np.array(g.vertices)
        (x0, y0), (x1, y1) = (v[0] + v[65]) / 2, (v[32] + v[33]) / 2  # the band's middle line
        b = float((y1 - y0) / (x1 - x0))
        c, s0 = float(y0 - b * x0), 0.02 * float(np.median(h))
        new = np.ones(a.size, dtype=bool)
        design, rhs = np.empty((a.size, 2)), np.empty(a.size)
        m, _ = SK.singlet_step(a, h, c, b, s0, 0.0, 1e-9, new, design, rhs, np.empty(a.size))
        want_new, want_d, want_r = R.singlet_band_ref(a, h, c, b, s0, 0.0, 1e-9)
        assert m > 0.5 * a.size and np.array_equal(new, want_new)  # most events are singlets
        assert np.array_equal(_bits(design[:m]), _bits(want_d))
        assert np.array_equal(_bits(rhs[:m]), _bits(want_r))
        order = np.argsort(a)
        a_kept, e_kept = R.singlet_kept_ref(a[order], h[order], c, b, s0, 0.0, 1e-9, c, b)
        assert np.array_equal(_bits(S._scale_model(a_kept, e_kept, 1e-9)),
                              _bits(R.scale_model_ref(a_kept, e_kept, 1e-9)))
