"""The faster paths of ``qc``, ``singlet`` and ``mindensity`` against the code they replaced: same bits.

The references below are the methods and helpers as they were before (``*_ref``); every
comparison is exact (``==`` on the returned geometry, or on the bit patterns of arrays,
signed zeros included). Inputs: hypothesis-drawn float64 with ties, -0.0 beside 0.0,
constant columns, tiny counts; and the events of a generated cohort, method by method.
The numba kernels of ``flowtools.gating._qc_kernels`` are also checked one by one against
the plain numpy they replace.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import methods_ref as R

from flowtools.errors import GatingError
from flowtools.gating import _methods as M
from flowtools.gating import _methods_kernels as K
from flowtools.gating import _qc_kernels as QK
from flowtools.gating.methods import Interval, MethodContext, Polygon, TimeWindows

# ------------------------------------------------------------------------------------------ references


def _quantiles_sorted_ref(s, q, unsorted=None):
    n = s.shape[0]
    q = np.asarray(q, dtype=np.float64)
    if n == 0 or np.isnan(s[-1]) or (s[0] <= 0.0 <= s[-1] and np.any(s == 0.0)):
        return np.quantile(s if unsorted is None else unsorted, q)
    virtual = (n - 1) * q
    prev = np.floor(virtual)
    nxt = prev + 1
    top = virtual >= n - 1
    prev[top] = -1
    nxt[top] = -1
    low = virtual < 0
    prev[low] = 0
    nxt[low] = 0
    prev_i = prev.astype(np.intp)
    nxt_i = nxt.astype(np.intp)
    gamma = np.asarray(virtual - prev_i, dtype=np.float64)
    a = s[prev_i]
    b = s[nxt_i]
    diff = b - a
    out = a + diff * gamma
    np.subtract(b, diff * (1 - gamma), out=out, where=gamma >= 0.5)
    return out


def _median_ref(v):
    n = v.size
    if n == 0 or np.isnan(v).any():
        return math.nan
    k = n // 2
    p = np.partition(v, k)
    if n % 2:
        return float(0.0 + p[k])
    return float((0.0 + p[:k].max() + p[k]) / 2)


def _robust_center_scale_ref(v):
    med = _median_ref(v)
    return med, M._MAD_SD * _median_ref(np.abs(v - med))


def _subsample_ref(x, limit, seed):
    if x.shape[0] <= limit:
        return x
    idx = np.random.default_rng(seed).choice(x.shape[0], size=limit, replace=False)
    idx.sort()
    return x[idx]


def _restrict_ref(x, rng, ctx, method):
    if rng is None:
        return x
    a, b = rng
    if not a < b:
        raise M._fail(ctx, method, f"range [{a}, {b}] is empty (needs a < b)")
    return x[(x >= a) & (x <= b)]


class _DensityRef(M._Density):
    """``_Density`` as it was (its valley and tail are unchanged, so inherited)."""

    def __init__(self, x, factor, ctx, method):  # noqa: D107
        n = x.size
        if n < 2:
            raise M._fail(ctx, method, f"{n} event(s) in range: too few to estimate a density")
        q = _quantiles_sorted_ref(np.sort(x), np.array([0.001, 0.25, 0.75, 0.999]), unsorted=x)
        lo_x, hi_x = float(x.min()), float(x.max())
        if not hi_x > lo_x:
            raise M._fail(ctx, method, f"all {n} values are identical ({lo_x:g}): no density to cut")
        sd = float(np.std(x))
        spread = min(sd, float(q[2] - q[1]) / 1.34) or sd
        core = float(q[3] - q[0]) or (hi_x - lo_x)
        bw = factor * max(0.9 * spread * n**-0.2, 2e-3 * core)
        lo = max(lo_x, float(q[0]) - 0.5 * core) - 3.0 * bw
        hi = min(hi_x, float(q[3]) + 0.5 * core) + 3.0 * bw
        dx = (hi - lo) / (M._GRID - 1)
        idx = np.floor((x - lo) / dx + 0.5)
        idx = idx[(idx >= 0) & (idx < M._GRID)].astype(np.intp)
        hist = np.bincount(idx, minlength=M._GRID).astype(np.float64)
        s = bw / dx
        half = int(min(M._GRID - 1, math.ceil(4.0 * s)))
        k = np.exp(-0.5 * (np.arange(-half, half + 1) / s) ** 2) if s > 0 else np.ones(1)
        # Fixed alongside the code (mode="same" returned the kernel's length when it was the longer).
        self.density = np.convolve(hist, k / (k.sum() * n * dx), mode="full")[half : half + M._GRID]
        self.grid = lo + dx * np.arange(M._GRID)
        self.bandwidth = bw

    def peaks(self):  # noqa: D102
        return _peaks_ref(self.density)


def _peaks_ref(d):
    inner = np.flatnonzero((d[1:-1] > d[:-2]) & (d[1:-1] >= d[2:])) + 1
    cand = list(inner)
    if d[0] > d[1]:
        cand.insert(0, 0)
    if d[-1] > d[-2]:
        cand.append(len(d) - 1)
    idx = np.array(cand, dtype=np.intp)
    prom = np.empty(idx.size)
    for j, i in enumerate(idx):
        higher_l = np.flatnonzero(d[:i] > d[i])
        left = d[higher_l[-1] if higher_l.size else 0 : i + 1].min()
        higher_r = np.flatnonzero(d[i + 1 :] > d[i])
        right = d[i : i + 1 + (higher_r[0] + 1 if higher_r.size else len(d))].min()
        prom[j] = d[i] - max(left, right)
    return idx, prom


def _mindensity_cut_ref(x, ctx, method, *, range_, bandwidth, peaks, min_peak_height, single_peak, tolerance):
    x = _restrict_ref(x, range_, ctx, method)
    dens = _DensityRef(x, bandwidth, ctx, method)
    g = dens.grid
    if peaks is not None:
        a, b = sorted(peaks)
        i, j = (int(np.clip(np.searchsorted(g, v), 0, g.size - 1)) for v in (a, b))
        if j <= i:
            raise M._fail(ctx, method, f"peaks {list(peaks)} are not separated on the density grid")
        cut = dens.valley(i, j)
    else:
        idx, prom = dens.peaks()
        keep = prom >= min_peak_height * float(dens.density.max())
        idx, prom = idx[keep], prom[keep]
        if idx.size >= 2:
            top = np.sort(idx[np.argsort(-prom, kind="stable")[:2]])
            cut = dens.valley(int(top[0]), int(top[1]))
        else:
            if single_peak == "error":
                raise M._fail(ctx, method, "the density has a single peak (no valley to cut at)")
            main = int(np.argmax(dens.density))
            cut = dens.tail(main, tolerance, upper=single_peak == "upper")
    if range_ is not None:
        cut = float(np.clip(cut, range_[0], range_[1]))
    return cut


def mindensity_ref(values, ctx, *, side, range, bandwidth, peaks,  # noqa: A002
                   min_peak_height, single_peak, tolerance):
    x = M._finite_rows(values, ctx, "mindensity")[:, 0]
    cut = _mindensity_cut_ref(x, ctx, "mindensity", range_=range, bandwidth=bandwidth, peaks=peaks,
                              min_peak_height=min_peak_height, single_peak=single_peak, tolerance=tolerance)
    return M._side_interval(cut, side)


def tail_ref(values, ctx, *, side, tolerance, range, bandwidth):  # noqa: A002
    x = _restrict_ref(M._finite_rows(values, ctx, "tail")[:, 0], range, ctx, "tail")
    dens = _DensityRef(x, bandwidth, ctx, "tail")
    cut = dens.tail(int(np.argmax(dens.density)), tolerance, upper=side == "positive")
    if range is not None:
        cut = float(np.clip(cut, range[0], range[1]))
    return M._side_interval(cut, side)


def _scale_model_ref(a_s, e_s, floor):
    edges = _quantiles_sorted_ref(a_s, np.linspace(0.0, 1.0, 17))
    which = np.clip(np.searchsorted(edges, a_s, side="right") - 1, 0, 15)
    bounds = np.searchsorted(which, np.arange(17), side="left")
    mids, scales = [], []
    for b in range(16):
        lo, hi = bounds[b], bounds[b + 1]
        if hi - lo >= 10:
            eb = e_s[lo:hi]
            m = hi - lo
            mid = 0.0 + a_s[lo + m // 2] if m % 2 else (0.0 + a_s[lo + m // 2 - 1] + a_s[lo + m // 2]) / 2
            mids.append(float(mid))
            scales.append(M._MAD_SD * _median_ref(np.abs(eb - _median_ref(eb))))
    if len(mids) < 2 or np.ptp(mids) == 0:
        return max(_robust_center_scale_ref(e_s)[1], floor), 0.0
    c1, c0 = np.polyfit(np.asarray(mids), np.asarray(scales), 1)
    return float(c0), float(c1)


def singlet_ref(values, ctx, *, width, max_events):
    full = M._finite_rows(values, ctx, "singlet", min_n=20)
    x = _subsample_ref(full, max_events, ctx.seed)
    a, h = x[:, 0], x[:, 1]
    a_sd = _robust_center_scale_ref(a)[1] or float(np.std(a))
    h_sd = _robust_center_scale_ref(h)[1] or float(np.std(h))
    if not (a_sd > 0 and h_sd > 0):
        raise M._fail(ctx, "singlet", "area or height has no spread")
    pos = (a > np.quantile(a, 0.1)) & (a != 0)
    if pos.sum() >= 10:
        b = _median_ref(h[pos] / a[pos])
        c = _median_ref(h - b * a)
    else:
        b, c = 1.0, _median_ref(h - a)
    keep = np.ones(a.size, dtype=bool)
    floor = 1e-9 * max(h_sd, 1e-300)
    s0, s1 = _robust_center_scale_ref(h - (c + b * a))[1], 0.0
    a = np.ascontiguousarray(a)
    h = np.ascontiguousarray(h)
    order = np.argsort(a, kind="stable")  # the old code's K.stable_argsort (the same order, tested then)
    new = np.empty(a.size, dtype=bool)
    design, rhs = np.empty((a.size, 2)), np.empty(a.size)
    a_buf, e_buf = np.empty(a.size), np.empty(a.size)
    for _ in range(12):
        m = R.singlet_band(a, h, float(c), float(b), float(s0), float(s1), float(floor), new, design, rhs)
        if m < 10:
            break
        # The line solve is the new code's (line_lstsq, tested against exact rationals in
        # test_methods_kernels.py), so this compares everything else bit for bit.
        ok, c, b = K.line_lstsq(design, rhs, m)
        if not ok:
            (c, b), *_ = np.linalg.lstsq(design[:m], rhs[:m], rcond=None)
        R.singlet_kept(a, h, order, new, float(c), float(b), a_buf, e_buf)
        a_kept, e_new = a_buf[:m], e_buf[:m]
        s0, s1 = _scale_model_ref(a_kept, e_new, floor)
        med_s = _median_ref(np.abs(e_new)) * M._MAD_SD
        floor = max(floor, 0.25 * med_s)
        if np.array_equal(new, keep):
            break
        keep = new.copy()
    if not (np.isfinite(b) and np.isfinite(c)):
        raise M._fail(ctx, "singlet", "the singlet line could not be fitted")
    lo = min(float(full[:, 0].min()), ctx.ranges[0][0] if ctx.ranges else np.inf)
    hi = max(float(full[:, 0].max()), ctx.ranges[0][1] if ctx.ranges else -np.inf)
    pad = 0.01 * (hi - lo) or 1.0
    xs = np.linspace(lo - pad, hi + pad, 33)
    half = width * np.maximum(s0 + s1 * xs, floor)
    line = c + b * xs
    upper = [(float(u), float(v)) for u, v in zip(xs, line + half, strict=True)]
    lower = [(float(u), float(v)) for u, v in zip(xs[::-1], (line - half)[::-1], strict=True)]
    return Polygon(tuple(upper + lower))


def _ranks_ref(v):
    order = np.argsort(v)
    v_sorted = v[order]
    stride = max(1, v.size // 200_000)
    if stride == 1 and not (v_sorted[0] <= 0.0 <= v_sorted[-1] and np.any(v == 0.0)):
        sample = v_sorted
    else:
        sample = np.sort(v[::stride])
    q = _quantiles_sorted_ref(sample, np.linspace(0.0, 1.0, 1001))
    xp, inv = np.unique(q, return_inverse=True)
    fp = np.bincount(inv, weights=np.linspace(0.0, 1.0, 1001)) / np.bincount(inv)
    if xp.size == 1:
        return np.full(v.size, 0.5)
    out = np.empty(v.size)
    out[order] = np.interp(v_sorted, xp, fp)
    return out


def _robust_z_ref(v):
    med, s = _robust_center_scale_ref(v)
    s = max(s, 0.01 * abs(med), 1e-12)
    return (v - med) / s


def qc_ref(values, ctx, *, bins, binning, z, min_events, min_run):
    x = M._finite_rows(values, ctx, "qc")
    if not (x[1:, 0] >= x[:-1, 0]).all():
        x = x[np.argsort(x[:, 0], kind="stable")]
    t = x[:, 0]
    n = t.size
    t_end = float(np.nextafter(t[-1], np.inf))
    nb = min(bins, n // min_events)
    if nb < 5 or t[-1] == t[0]:
        return TimeWindows(((float(t[0]), t_end),))
    if binning == "count":
        starts = (np.arange(nb) * n) // nb
        edges_t = np.append(t[starts], t_end)
        stops = np.append(starts[1:], n)
        counts = stops - starts
        rate = (edges_t[1:] - edges_t[:-1]) / counts
    else:
        edges_t = np.linspace(float(t[0]), t_end, nb + 1)
        bounds = np.searchsorted(t, edges_t, side="left")
        starts, stops = bounds[:-1], bounds[1:]
        counts = stops - starts
        rate = counts.astype(np.float64)
    bad = counts == 0
    bad |= np.abs(_robust_z_ref(rate)) > z
    if x.shape[1] > 1:
        full = counts > 0
        null_sd = 1.0 / math.sqrt(12.0 * float(np.median(counts[full])))
        for c in range(1, x.shape[1]):
            r = _ranks_ref(x[:, c])
            means = np.add.reduceat(r, np.minimum(starts[full], n - 1)) / counts[full]
            center, spread = _robust_center_scale_ref(means)
            zc = np.zeros(nb)
            zc[full] = (means - center) / max(spread, null_sd)
            bad |= np.abs(zc) > z
    windows = []
    b = 0
    while b < nb:
        if bad[b]:
            b += 1
            continue
        e = b
        while e + 1 < nb and not bad[e + 1]:
            e += 1
        if e - b + 1 >= min_run:
            windows.append((float(edges_t[b]), float(edges_t[e + 1])))
        b = e + 1
    if not windows:
        raise M._fail(ctx, "qc", "every time bin was flagged")
    return TimeWindows(tuple(windows))


# ------------------------------------------------------------------------------------------ helpers


def _bits(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float64)).view(np.int64)


def _same(got, want) -> None:
    """Same geometry, float for float, signed zeros included (or the same GatingError)."""
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


def _both(new, ref, *args, **kwargs) -> None:
    """Run the new and the reference code; same result or the same GatingError message.

    Warnings (overflow in degenerate draws, polyfit's RankWarning) are silenced for both.
    """
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            want = ref(*args, **kwargs)
        except GatingError as e:
            with pytest.raises(GatingError) as got_e:
                new(*args, **kwargs)
            assert str(got_e.value) == str(e)
            return
        got = new(*args, **kwargs)
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


_KINDS = st.sampled_from(["normal", "lognormal", "ties", "int_scatter", "const", "mixed"])
_HYP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------ kernels


@_HYP
@given(data=st.data(), n=st.integers(1, 3000), kind=_KINDS, n_p=st.integers(2, 1001),
       seed=st.integers(0, 2**32 - 1))
def test_interp_kernel_is_np_interp(data, n, kind, n_p, seed):
    rng = np.random.default_rng(seed)
    x = _column(data.draw, n, kind, rng)
    pool = np.concatenate([x, rng.normal(0.0, 1e3, 50), [0.0, -1e300, 1e300]])
    xp = np.unique(rng.choice(pool, size=min(n_p, pool.size), replace=False))
    if xp.size < 2:
        xp = np.array([-1.0, 1.0])
    fp = np.sort(rng.random(xp.size)) if data.draw(st.booleans()) else rng.normal(size=xp.size)
    x = np.concatenate([x, xp, [np.nan, -np.inf, np.inf]])
    assert np.array_equal(_bits(QK.interp(x, xp, fp)), _bits(np.interp(x, xp, fp)))
    strided = np.repeat(x, 2)[::2]  # non-contiguous input (a column of the events)
    assert np.array_equal(_bits(QK.interp(strided, xp, fp)), _bits(np.interp(strided, xp, fp)))


def test_interp_kernel_extreme_knots():
    xp = np.array([-np.inf, -1.0, 0.0, 5e-324, 1e308, np.inf])  # overflowing spans and slopes
    fp = np.array([0.0, 0.1, 0.5, 0.5, 0.9, 1.0])
    x = np.array([-np.inf, -2.0, -1.0, -0.5, -0.0, 0.0, 5e-324, 1.0, 1e308, 1.5e308, np.inf, np.nan])
    with np.errstate(all="ignore"):
        want = np.interp(x, xp, fp)
    assert np.array_equal(_bits(QK.interp(x, xp, fp)), _bits(want))


@_HYP
@given(data=st.data(), n=st.integers(0, 2000), kind=_KINDS, seed=st.integers(0, 2**32 - 1))
def test_restrict_and_density_hist_kernels(data, n, kind, seed):
    rng = np.random.default_rng(seed)
    x = _column(data.draw, n, kind, rng)
    lo, hi = sorted(rng.choice(np.concatenate([x, [-1.0, 0.0, 1.0, -0.0]]), 2))
    assert np.array_equal(_bits(QK.restrict(x, lo, hi)), _bits(x[(x >= lo) & (x <= hi)]))
    grid = int(data.draw(st.sampled_from([1, 7, 1024])))
    span = float(np.ptp(x)) if n else 1.0
    start = float(x.min()) - 0.1 * span if n else 0.0
    dx = (span or 1.0) / max(grid - 1, 1) * data.draw(st.sampled_from([0.5, 1.0, 2.0]))
    idx = np.floor((x - start) / dx + 0.5)
    idx = idx[(idx >= 0) & (idx < grid)].astype(np.intp)
    want = np.bincount(idx, minlength=grid).astype(np.float64)
    assert np.array_equal(_bits(QK.density_hist(x, start, dx, grid)), _bits(want))


@_HYP
@given(n=st.integers(3, 400), levels=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
def test_prominences_kernel_is_the_peaks_loop(n, levels, seed):
    rng = np.random.default_rng(seed)
    d = rng.integers(0, levels + 1, n).astype(float) * rng.choice([1.0, 0.25]) + 0.0  # plateaus, ties
    idx, prom = _peaks_ref(d)
    assert np.array_equal(_bits(QK.prominences(d, idx)), _bits(prom))


# ------------------------------------------------------------------------------------------ helpers


@_HYP
@given(data=st.data(), n=st.integers(1, 3000), kind=_KINDS, seed=st.integers(0, 2**32 - 1))
def test_quantiles_sorted_and_medians_match_the_old_helpers(data, n, kind, seed):
    rng = np.random.default_rng(seed)
    x = _column(data.draw, n, kind, rng)
    q = np.concatenate([[0.0, 0.1, 0.5, 1.0, 0.001, 0.999], rng.random(5), np.linspace(0, 1, 17)])
    for s in (np.sort(x), x[np.argsort(x)]):  # zeros in np.sort's order or argsort's
        got = M._quantiles_sorted(s, q, unsorted=x)
        assert np.array_equal(_bits(got), _bits(_quantiles_sorted_ref(s, q, unsorted=x)))
        assert np.array_equal(_bits(got), _bits(np.quantile(x, q)))
        assert np.array_equal(_bits(M._quantiles_sorted(s, q)), _bits(_quantiles_sorted_ref(s, q)))
        assert np.array_equal(_bits([M._sorted_median(s)]), _bits([_median_ref(x)]))
    assert np.array_equal(_bits([M._median_owned(x.copy())]), _bits([_median_ref(x)]))
    assert np.array_equal(_bits(M._robust_center_scale(x)), _bits(_robust_center_scale_ref(x)))


@_HYP
@given(n=st.integers(1, 3000), d=st.integers(1, 3), frac=st.floats(0.05, 1.5), seed=st.integers(0, 2**32 - 1))
def test_subsample_is_the_sorted_draw(n, d, frac, seed):
    x = np.random.default_rng(seed).normal(size=(n, d))
    limit = max(1, int(frac * n))
    assert np.array_equal(_bits(M._subsample(x, limit, seed)), _bits(_subsample_ref(x, limit, seed)))


@_HYP
@given(data=st.data(), n=st.integers(10, 3000), kind=_KINDS, shuffle=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_scale_model_any_tie_order_matches_the_old_one(data, n, kind, shuffle, seed):
    rng = np.random.default_rng(seed)
    a = _column(data.draw, n, kind, rng)
    e = _column(data.draw, n, data.draw(_KINDS), rng)
    if data.draw(st.booleans()):  # residuals that overflowed: the NaN-checked path
        e[rng.random(n) < 0.05] = data.draw(st.sampled_from([np.inf, -np.inf, np.nan]))
    order_old = np.argsort(a, kind="stable")
    # the new singlet passes np.argsort's order: ties (and -0.0 / 0.0) in any order
    order_new = np.argsort(a) if not shuffle else np.lexsort((rng.random(n), a))
    want = _scale_model_ref(a[order_old], e[order_old], 1e-9)
    assert np.array_equal(_bits(M._scale_model(a[order_new], e[order_new], 1e-9)), _bits(want))


# ------------------------------------------------------------------------------------------ methods


def _ctx(d: int, ranges=None, seed: int = 0) -> MethodContext:
    return MethodContext("Root/x", tuple(f"d{i}" for i in range(d)), ranges or ((0.0, 1.0),) * d, seed)


@_HYP
@given(data=st.data(), n=st.integers(1, 4000), kind=_KINDS, seed=st.integers(0, 2**32 - 1))
def test_ranks_match_the_old_ranks(data, n, kind, seed):
    v = _column(data.draw, n, kind, np.random.default_rng(seed))
    assert np.array_equal(_bits(M._ranks(v)), _bits(_ranks_ref(v)))
    col = np.column_stack([v, v])[:, 1]  # a strided column, as qc passes
    assert np.array_equal(_bits(M._ranks(col)), _bits(_ranks_ref(col)))


@_HYP
@given(data=st.data(), n=st.integers(1, 4000), d=st.integers(1, 3), sorted_t=st.booleans(),
       binning=st.sampled_from(["count", "time"]), seed=st.integers(0, 2**32 - 1))
def test_qc_matches_the_old_qc(data, n, d, sorted_t, binning, seed):
    rng = np.random.default_rng(seed)
    t = np.round(rng.uniform(0.0, 100.0, n), int(data.draw(st.sampled_from([0, 1, 6]))))
    if sorted_t:
        t = np.sort(t)
    cols = [t] + [_column(data.draw, n, data.draw(_KINDS), rng) for _ in range(d - 1)]
    x = np.column_stack(cols)
    args = {"bins": data.draw(st.sampled_from([5, 20, 100])), "binning": binning, "z": 4.0,
            "min_events": data.draw(st.sampled_from([1, 20])), "min_run": 1}
    _both(M.qc, qc_ref, x, _ctx(d), **args)


@_HYP
@given(data=st.data(), n=st.integers(20, 3000), seed=st.integers(0, 2**32 - 1),
       max_events=st.sampled_from([25, 500, 1000, 50_000]))
def test_singlet_matches_the_old_singlet(data, n, seed, max_events):
    rng = np.random.default_rng(seed)
    kind = data.draw(st.sampled_from(["scatter", "log", "ties", "columns"]))
    if kind == "columns":  # anything: constant, tied, signed zeros
        a = _column(data.draw, n, data.draw(_KINDS), rng)
        h = _column(data.draw, n, data.draw(_KINDS), rng)
    else:
        a = rng.lognormal(11.0, 0.4, n) if kind != "ties" else np.round(rng.lognormal(4.0, 0.4, n))
        doublet = rng.random(n) < 0.1
        h = a * np.where(doublet, 0.56, 0.88) * rng.normal(1.0, 0.03, n)
        if kind == "log":
            a, h = np.log10(a), np.log10(np.abs(h) + 1.0)
        elif kind == "ties":
            h = np.round(h)
    x = np.column_stack([a, h])
    c = _ctx(2, ((0.0, 262144.0),) * 2, seed=int(seed % 7))
    _both(M.singlet, singlet_ref, x, c, width=4.0, max_events=max_events)


@_HYP
@given(data=st.data(), n=st.integers(1, 3000), seed=st.integers(0, 2**32 - 1))
def test_mindensity_and_tail_match_the_old_ones(data, n, seed):
    rng = np.random.default_rng(seed)
    kind = data.draw(st.sampled_from(["bimodal", "column"]))
    if kind == "bimodal":
        v = np.where(rng.random(n) < 0.6, rng.normal(0.2, 0.08, n), rng.normal(0.7, 0.06, n))
        if data.draw(st.booleans()):
            v = np.round(v, 2)
    else:
        v = _column(data.draw, n, data.draw(_KINDS), rng)
    rng_arg = data.draw(st.sampled_from([None, (0.1, 0.9), (0.0, 1.0), (-1.0, 2e3), (2, 3)]))
    args = {"side": data.draw(st.sampled_from(["positive", "negative"])), "range": rng_arg,
            "bandwidth": data.draw(st.sampled_from([0.05, 1.0, 3.0])),
            "peaks": data.draw(st.sampled_from([None, (0.2, 0.7)])),
            "min_peak_height": data.draw(st.sampled_from([0.0, 0.05, 0.5])),
            "single_peak": data.draw(st.sampled_from(["upper", "lower", "error"])), "tolerance": 0.01}
    _both(M.mindensity, mindensity_ref, v[:, None], _ctx(1), **args)
    _both(M.tail, tail_ref, v[:, None], _ctx(1), side=args["side"], tolerance=0.01, range=rng_arg,
          bandwidth=args["bandwidth"])


def test_degenerate_inputs_fail_alike():
    c1, c2, c3 = _ctx(1), _ctx(2), _ctx(3)
    md = {"side": "positive", "range": None, "bandwidth": 1.0, "peaks": None, "min_peak_height": 0.05,
          "single_peak": "upper", "tolerance": 0.01}
    for v in (np.zeros(50), np.full(50, -0.0), np.array([0.0, -0.0] * 20), np.array([1.0]), np.zeros(0)):
        _both(M.mindensity, mindensity_ref, v[:, None], c1, **md)
        _both(M.singlet, singlet_ref, np.column_stack([v, v]), c2, width=4.0, max_events=1000)
        x = np.column_stack([np.arange(v.size, dtype=float), v, v])
        _both(M.qc, qc_ref, x, c3, bins=100, binning="count", z=4.0, min_events=1, min_run=1)


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


def test_cohort_events_give_the_same_gates(cohort_events):
    scatter = ((0.0, 262144.0),) * 3
    md = {"bandwidth": 1.0, "peaks": None, "min_peak_height": 0.05, "single_peak": "upper",
          "tolerance": 0.01}
    for ev, names in cohort_events:
        col = {n: j for j, n in enumerate(names)}
        fsc = ev[:, [col["FSC-A"], col["FSC-H"]]]
        _both(M.singlet, singlet_ref, fsc, _ctx(2, scatter[:2]), width=4.0, max_events=50_000)
        _both(M.singlet, singlet_ref, fsc, _ctx(2, scatter[:2], seed=5), width=4.0, max_events=5_000)
        qcx = ev[:, [col["Time"], col["FSC-A"], col["SSC-A"]]]
        _both(M.qc, qc_ref, qcx, _ctx(3, scatter), bins=100, binning="count", z=4.0, min_events=20, min_run=1)
        _both(M.qc, qc_ref, qcx, _ctx(3, scatter), bins=50, binning="time", z=3.0, min_events=20, min_run=2)
        _both(M.mindensity, mindensity_ref, ev[:, [col["SSC-A"]]], _ctx(1, scatter[:1]), side="positive",
              range=(2000.0, 50000.0), **md)
        for name in names:
            if name in ("FSC-A", "FSC-H", "SSC-A", "Time"):
                continue
            _both(M.mindensity, mindensity_ref, ev[:, [col[name]]], _ctx(1), side="negative", range=None,
                  **md)


@_HYP
@given(n=st.integers(200, 4000), seed=st.integers(0, 2**32 - 1), log=st.booleans())
def test_singlet_line_solve_agrees_with_the_svd_it_replaced(n, seed, log):
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
    got = M.singlet(x, c, width=4.0, max_events=50_000)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(K, "line_lstsq", lambda design, rhs, m: (False, 0.0, 0.0))  # every fit through the SVD
        want = M.singlet(x, c, width=4.0, max_events=50_000)
    scale = float(np.abs(x).max())
    assert np.abs(np.array(got.vertices) - np.array(want.vertices)).max() <= 1e-9 * scale


@_HYP
@given(data=st.data(), n=st.integers(1, 3000), seed=st.integers(0, 2**32 - 1))
def test_singlet_step_and_sorted_kept_are_band_and_kept(data, n, seed):
    rng = np.random.default_rng(seed)
    a = _column(data.draw, n, data.draw(_KINDS), rng)
    h = _column(data.draw, n, data.draw(_KINDS), rng)
    if data.draw(st.booleans()):
        h[rng.random(n) < 0.05] = data.draw(st.sampled_from([np.inf, -np.inf, np.nan]))
    c, b = float(rng.normal()), float(rng.uniform(0.5, 1.5))
    s0, s1 = float(rng.uniform(0.0, 2.0)), float(data.draw(st.sampled_from([0.0, 1e-3, -1e-3])))
    floor = float(data.draw(st.sampled_from([1e-309, 1e-9, 0.5])))
    want_new, want_d, want_r = np.empty(n, dtype=bool), np.empty((n, 2)), np.empty(n)
    m_want = R.singlet_band(a, h, c, b, s0, s1, floor, want_new, want_d, want_r)
    before = rng.random(n) < 0.5 if data.draw(st.booleans()) else want_new.copy()
    new, design, rhs = before.copy(), np.empty((n, 2)), np.empty(n)
    m, same = K.singlet_step(a, h, c, b, s0, s1, floor, new, design, rhs, np.empty(n))
    assert m == m_want
    assert same == np.array_equal(want_new, before)
    assert np.array_equal(new, want_new)
    assert np.array_equal(_bits(design[:m]), _bits(want_d[:m]))
    assert np.array_equal(_bits(rhs[:m]), _bits(want_r[:m]))
    order = np.argsort(a)
    c2, b2 = c + 0.25, b * 0.9
    a_want, e_want = np.empty(n), np.empty(n)
    R.singlet_kept(a, h, order, want_new, c2, b2, a_want, e_want)
    a_got, e_got = np.empty(n), np.empty(n)
    assert K.singlet_kept_sorted(a[order], h[order], c, b, s0, s1, floor, c2, b2, a_got, e_got) == m
    assert np.array_equal(_bits(a_got[:m]), _bits(a_want[:m]))
    assert np.array_equal(_bits(e_got[:m]), _bits(e_want[:m]))
