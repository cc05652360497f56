"""The built-in data-driven gating methods (registered on import; loaded lazily by the registry).

Every method receives the parent population's values on the gate's dimensions
(float64, shape ``(n, d)``, compensated and transformed) and returns a
geometry. Methods work from the data and ``ctx.ranges`` only: they assume no
particular scale (logicle 0..1 or 0..4.5, linear scatter 0..262144 or 0..1).

Common rules
------------
- Rows with a NaN or infinite value are ignored (they are never inside a gate).
- A gate that cannot be computed (no events, too few distinct values, no
  spread) raises :class:`~flowtools.errors.GatingError` naming the population.
- Randomness (subsampling, mixture initialisation) comes from ``ctx.seed``
  only: the same data and seed give the same geometry.

Methods
-------
mindensity
    Cut at the deepest density valley between the two most prominent peaks
    (openCyto ``mindensity``).
tail
    Cut where the main peak's tail falls below a fraction of its height
    (openCyto ``tailgate``).
quantile
    Cut at a quantile.
singlet
    A band along the area/height singlet line (doublets fall outside).
boundary
    Drop events piled at the range limits (margin events).
gmm
    One component of a Gaussian mixture, as an ellipse (flowClust-like).
quad
    Quadrant cuts from ``mindensity`` on each axis (or fixed values).
qc
    Time windows free of flow-rate gaps and signal shifts (PeacoQC/flowAI-like).
"""

from __future__ import annotations

import logging
import math
from statistics import NormalDist
from typing import Any

import numpy as np

from flowtools.errors import GatingError
from flowtools.gating.methods import (
    REQUIRED,
    ArgSpec,
    Ellipse,
    Interval,
    MethodContext,
    Polygon,
    Quadrants,
    Rectangle,
    TimeWindows,
    register,
)

__all__: list[str] = []

_log = logging.getLogger(__name__)

_GRID = 1024  # density grid points
_MAD_SD = 1.482602218505602  # MAD -> standard deviation of a normal
_SIDES = ("positive", "negative")
_TARGETS = ("largest", "highest_x", "lowest_x", "highest_y", "lowest_y", "highest_z", "lowest_z")

# ------------------------------------------------------------------------------------------ helpers


def _fail(ctx: MethodContext, method: str, why: str) -> GatingError:
    return GatingError(f"population {ctx.population!r}: method {method!r} cannot compute a gate: {why}")


def _finite_rows(values: np.ndarray, ctx: MethodContext, method: str, *, min_n: int = 1) -> np.ndarray:
    """The rows of ``values`` without NaN or inf, as float64 (n, d); GatingError when fewer than min_n."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise _fail(ctx, method, f"expected a 2-D array of events, got shape {x.shape}")
    finite = np.isfinite(x)
    if not finite.all():  # one flat pass in the usual all-finite case; rows only when needed
        x = x[finite.all(axis=1)]
    if x.shape[0] < min_n:
        what = "no events" if x.shape[0] == 0 else f"only {x.shape[0]} finite event(s)"
        raise _fail(ctx, method, f"{what} in the parent population (need at least {min_n})")
    return np.ascontiguousarray(x)


def _restrict(x: np.ndarray, rng: tuple[float, float] | None, ctx: MethodContext, method: str) -> np.ndarray:
    if rng is None:
        return x
    a, b = rng
    if not a < b:
        raise _fail(ctx, method, f"range [{a}, {b}] is empty (needs a < b)")
    from flowtools.gating import _qc_kernels as QK

    # x[(x >= a) & (x <= b)] in one pass (numpy compares with the bounds as float64 too)
    return QK.restrict(x, float(a), float(b))


def _quantiles_sorted(s: np.ndarray, q: np.ndarray, unsorted: np.ndarray | None = None) -> np.ndarray:
    """``np.quantile(s, q)`` (method "linear") of an ascending, NaN-free 1-D array, bit for bit.

    np.quantile selects its order statistics with a multi-position partition even when
    the input is sorted (about 1 ms for 1001 positions of 100k values); on sorted input
    they are plain lookups. The interpolation repeats numpy's own steps: virtual index
    ``(n - 1) * q``, floor and next (the last value at or above ``n - 1``), gamma = the
    fractional part, and numpy's ``_lerp`` (``a + (b - a) * g``, or ``b - (b - a) * (1 - g)``
    when ``g >= 0.5``). Tested equal to np.quantile on random and tied data. Empty input,
    NaN and zeros of both signs go to np.quantile itself, of ``unsorted`` when given (the
    array ``s`` was sorted from, which np.quantile would have been given: which of -0.0 and
    0.0 its partition picks depends on the input order). Zeros of one sign are like any other
    tie: every order statistic has the same bits whatever the order. The signs are read from
    ``unsorted`` when given: np.sort's SIMD sort may turn 0.0 into -0.0 when both occur.
    """
    n = s.shape[0]
    q = np.asarray(q, dtype=np.float64)
    src = s if unsorted is None else unsorted
    if n == 0 or np.isnan(s[-1]) or (s[0] <= 0.0 <= s[-1] and _mixed_zeros(src, ascending=unsorted is None)):
        # empty, NaN (sorted last), or both -0.0 and 0.0: which of them np.quantile's
        # partition picks is its own business, so let it pick
        return np.quantile(src, q)
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


def _mixed_zeros(v: np.ndarray, *, ascending: bool) -> bool:
    """Whether a NaN-free 1-D array holds both -0.0 and 0.0 (ascending: its zeros are one run)."""
    if ascending:
        zeros = v[np.searchsorted(v, 0.0, side="left") : np.searchsorted(v, 0.0, side="right")]
    else:
        zeros = v[v == 0.0]
    neg = np.signbit(zeros)
    return bool(neg.any() and not neg.all())


def _median(v: np.ndarray) -> float:
    """``float(np.median(v))`` of a 1-D array, bit for bit, at a fraction of the cost.

    np.median partitions at the two middle positions at once, which numpy does without its
    SIMD selection (~10x slower than one position for 50k values); here one partition at
    the upper middle, and the lower middle of an even count is the largest value left of it.
    The mean of the two is computed as np.median does ((0.0 + lo + hi) / 2). NaN if any value is NaN.
    """
    n = v.size
    if n == 0 or np.isnan(v).any():
        return math.nan
    return _select_median(np.partition(v, n // 2))


def _median_owned(v: np.ndarray) -> float:
    """``_median(v)`` of a temporary the caller gives up: partitioned in place, no copy."""
    if v.size == 0 or np.isnan(v).any():
        return math.nan
    v.partition(v.size // 2)
    return _select_median(v)


def _select_median(p: np.ndarray) -> float:
    """The median of a non-empty, NaN-free 1-D array already partitioned at ``size // 2``."""
    n = p.size
    k = n // 2
    # np.median's mean sums from +0.0 (so -0.0 medians come out +0.0), then divides by the count.
    if n % 2:
        return float(0.0 + p[k])
    return float((0.0 + p[:k].max() + p[k]) / 2)


def _sorted_median(s: np.ndarray) -> float:
    """``_median`` of an ascending, NaN-free, non-empty array: its middle, no selection.

    The middle values are the order statistics a partition finds (only the sign of a zero
    can differ, and ``0.0 + z`` is +0.0 for both signs, as in ``_select_median``).
    """
    n = s.size
    k = n // 2
    if n % 2:
        return float(0.0 + s[k])
    return float((0.0 + s[k - 1] + s[k]) / 2)


def _robust_center_scale(v: np.ndarray) -> tuple[float, float]:
    med = _median(v)
    return med, _MAD_SD * _median_owned(np.abs(v - med))


def _subsample(x: np.ndarray, limit: int, seed: int) -> np.ndarray:
    if x.shape[0] <= limit:
        return x
    idx = np.random.default_rng(seed).choice(x.shape[0], size=limit, replace=False)
    # The drawn rows in ascending order, as sorting the (distinct) indices gives them: a mask's
    # nonzero positions are cheaper; np.take of rows is several times faster than x[idx].
    pick = np.zeros(x.shape[0], dtype=bool)
    pick[idx] = True
    return np.take(x, np.flatnonzero(pick), axis=0)


class _Density:
    """A Gaussian-smoothed histogram (binned KDE) of 1-D values on a regular grid."""

    def __init__(self, x: np.ndarray, factor: float, ctx: MethodContext, method: str) -> None:
        n = x.size
        if n < 2:
            raise _fail(ctx, method, f"{n} event(s) in range: too few to estimate a density")
        from flowtools.gating import _qc_kernels as QK

        # np.quantile of a sorted copy: lookups, not a 10-position partition (same values)
        xs = np.sort(x)
        q = _quantiles_sorted(xs, np.array([0.001, 0.25, 0.75, 0.999]), unsorted=x)
        # min and max are the sorted ends (a zero end: np.min's own pick of -0.0 or 0.0)
        lo_x = float(xs[0]) if xs[0] != 0.0 and not np.isnan(xs[-1]) else float(x.min())
        hi_x = float(xs[-1]) if xs[-1] != 0.0 and not np.isnan(xs[-1]) else float(x.max())
        if not hi_x > lo_x:
            raise _fail(ctx, method, f"all {n} values are identical ({lo_x:g}): no density to cut")
        sd = float(np.std(x))
        spread = min(sd, float(q[2] - q[1]) / 1.34) or sd
        core = float(q[3] - q[0]) or (hi_x - lo_x)
        # Silverman's rule (R's bw.nrd0), floored so that a huge n never gives a noise-following density.
        bw = factor * max(0.9 * spread * n**-0.2, 2e-3 * core)
        lo = max(lo_x, float(q[0]) - 0.5 * core) - 3.0 * bw
        hi = min(hi_x, float(q[3]) + 0.5 * core) + 3.0 * bw
        dx = (hi - lo) / (_GRID - 1)
        # bincount of floor((x - lo) / dx + 0.5) within the grid, as float64, in one pass
        hist = QK.density_hist(x, lo, dx, _GRID)
        s = bw / dx
        half = int(min(_GRID - 1, math.ceil(4.0 * s)))
        k = np.exp(-0.5 * (np.arange(-half, half + 1) / s) ** 2) if s > 0 else np.ones(1)
        # The centred _GRID values of the full convolution: mode="same" itself, except that "same"
        # returns the kernel's length when the kernel is the longer one (a wide bandwidth over
        # few events), which put the density off the grid.
        dens = np.convolve(hist, k / (k.sum() * n * dx), mode="full")[half : half + _GRID]
        self.grid = lo + dx * np.arange(_GRID)
        self.density = dens
        self.bandwidth = bw

    def peaks(self) -> tuple[np.ndarray, np.ndarray]:
        """Local maxima (grid indices) and their prominences, in grid order."""
        d = self.density
        inner = np.flatnonzero((d[1:-1] > d[:-2]) & (d[1:-1] >= d[2:])) + 1
        cand = list(inner)
        if d[0] > d[1]:
            cand.insert(0, 0)
        if d[-1] > d[-2]:
            cand.append(len(d) - 1)
        idx = np.array(cand, dtype=np.intp)
        if np.isfinite(d).all() and not np.signbit(d).any():
            # finite, no -0.0: every min is one value, whatever scan finds it
            from flowtools.gating import _qc_kernels as QK

            return idx, QK.prominences(d, idx)
        prom = np.empty(idx.size)
        for j, i in enumerate(idx):
            higher_l = np.flatnonzero(d[:i] > d[i])
            left = d[higher_l[-1] if higher_l.size else 0 : i + 1].min()
            higher_r = np.flatnonzero(d[i + 1 :] > d[i])
            right = d[i : i + 1 + (higher_r[0] + 1 if higher_r.size else len(d))].min()
            prom[j] = d[i] - max(left, right)
        return idx, prom

    def valley(self, i: int, j: int) -> float:
        """The middle of the lowest stretch of density between grid indices i < j."""
        seg = self.density[i : j + 1]
        m = int(np.argmin(seg))
        flat = seg <= seg[m] + 1e-3 * float(self.density.max())
        a = m
        while a > 0 and flat[a - 1]:
            a -= 1
        b = m
        while b < seg.size - 1 and flat[b + 1]:
            b += 1
        return float(self.grid[i + a] + self.grid[i + b]) / 2.0

    def tail(self, peak: int, fraction: float, *, upper: bool) -> float:
        """Where the density first falls below ``fraction`` of the peak's height, beyond the peak."""
        d, g = self.density, self.grid
        level = fraction * d[peak]
        if upper:
            below = np.flatnonzero(d[peak:] < level)
            if not below.size:
                return float(g[-1])
            j = peak + int(below[0])
        else:
            below = np.flatnonzero(d[: peak + 1] < level)
            if not below.size:
                return float(g[0])
            j = int(below[-1])
        k = j - 1 if upper else j + 1  # the grid point just inside (density >= level)
        d0, d1 = d[k], d[j]
        t = (d0 - level) / (d0 - d1) if d0 != d1 else 0.0
        return float(g[k] + t * (g[j] - g[k]))


def _mindensity_cut(
    x: np.ndarray,
    ctx: MethodContext,
    method: str,
    *,
    range_: tuple[float, float] | None,
    bandwidth: float,
    peaks: tuple[float, float] | None,
    min_peak_height: float,
    single_peak: str,
    tolerance: float,
) -> float:
    x = _restrict(x, range_, ctx, method)
    dens = _Density(x, bandwidth, ctx, method)
    g = dens.grid
    if peaks is not None:
        a, b = sorted(peaks)
        i, j = (int(np.clip(np.searchsorted(g, v), 0, g.size - 1)) for v in (a, b))
        if j <= i:
            raise _fail(ctx, method, f"peaks {list(peaks)} are not separated on the density grid")
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
                raise _fail(ctx, method, "the density has a single peak (no valley to cut at)")
            main = int(np.argmax(dens.density))
            cut = dens.tail(main, tolerance, upper=single_peak == "upper")
            _log.info(
                "%s: %s found one peak; cut at its %s tail (%.4g)", ctx.population, method, single_peak, cut
            )
    if range_ is not None:
        cut = float(np.clip(cut, range_[0], range_[1]))
    return cut


def _side_interval(cut: float, side: str) -> Interval:
    return Interval(cut, None) if side == "positive" else Interval(None, cut)


def _chi2_ppf(p: float, d: int) -> float:
    """Quantile of the chi-square distribution with d = 1, 2 or 3 degrees of freedom (stdlib only)."""
    if d == 1:
        return NormalDist().inv_cdf((1.0 + p) / 2.0) ** 2
    if d == 2:
        return -2.0 * math.log1p(-p)

    def cdf3(x: float) -> float:
        return math.erf(math.sqrt(x / 2.0)) - math.sqrt(2.0 * x / math.pi) * math.exp(-x / 2.0)

    lo, hi = 0.0, 200.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cdf3(mid) < p else (lo, mid)
    return 0.5 * (lo + hi)


# ------------------------------------------------------------------------------------------ 1-D cuts

_DENSITY_ARGS = {
    "range": ArgSpec(tuple, None, doc="[a, b]: use only events with a <= x <= b; the cut lies in it"),
    "bandwidth": ArgSpec(float, 1.0, lo=0.05, hi=20.0, doc="multiplier of the rule-of-thumb KDE bandwidth"),
}


@register(
    "mindensity",
    dims=1,
    args={
        "side": ArgSpec(
            str, "positive", choices=_SIDES, doc="positive: keep x >= cut; negative: keep x < cut"
        ),
        **_DENSITY_ARGS,
        "peaks": ArgSpec(
            tuple, None, doc="[a, b]: approximate peak positions; cut at the lowest density between"
        ),
        "min_peak_height": ArgSpec(
            float, 0.05, lo=0.0, hi=1.0, doc="a peak counts when its prominence is >= this share of the top"
        ),
        "single_peak": ArgSpec(
            str,
            "upper",
            choices=("upper", "lower", "error"),
            doc="one peak only: cut at its upper / lower tail (tolerance), or fail",
        ),
        "tolerance": ArgSpec(
            float, 0.01, lo=1e-6, hi=0.99, doc="single-peak fallback: tail level / peak height"
        ),
    },
)
def mindensity(
    values: np.ndarray,
    ctx: MethodContext,
    *,
    side: str,
    range: tuple[float, float] | None,  # noqa: A002 - the template's argument name
    bandwidth: float,
    peaks: tuple[float, float] | None,
    min_peak_height: float,
    single_peak: str,
    tolerance: float,
) -> Interval:
    """Threshold at the deepest density valley between the two most prominent peaks.

    The density is a Gaussian-smoothed histogram (1024 points; bandwidth: R's
    ``bw.nrd0`` times ``bandwidth``). Peaks are local maxima whose prominence is
    at least ``min_peak_height`` of the highest density; the cut is the middle
    of the lowest stretch of density between the two most prominent ones.

    With a single peak, the cut does not depend on ``side`` (so that the
    positive and negative gates of one parent stay complementary): by default
    (``single_peak="upper"``) the peak is taken as the negative population and
    the cut is where its upper tail falls below ``tolerance`` of its height;
    ``"lower"`` uses the lower tail; ``"error"`` raises GatingError.

    Parameters
    ----------
    values : ndarray of float64, shape (n, 1)
    ctx : MethodContext

    Returns
    -------
    Interval
        ``[cut, +inf)`` for ``side="positive"``, ``(-inf, cut)`` for ``"negative"``.
    """
    x = _finite_rows(values, ctx, "mindensity")[:, 0]
    cut = _mindensity_cut(
        x,
        ctx,
        "mindensity",
        range_=range,
        bandwidth=bandwidth,
        peaks=peaks,
        min_peak_height=min_peak_height,
        single_peak=single_peak,
        tolerance=tolerance,
    )
    return _side_interval(cut, side)


@register(
    "tail",
    dims=1,
    args={
        "side": ArgSpec(str, "positive", choices=_SIDES, doc="positive: the upper tail (keep x >= cut)"),
        "tolerance": ArgSpec(float, 0.01, lo=1e-6, hi=0.99, doc="tail level as a share of the peak height"),
        **_DENSITY_ARGS,
    },
)
def tail(
    values: np.ndarray,
    ctx: MethodContext,
    *,
    side: str,
    tolerance: float,
    range: tuple[float, float] | None,  # noqa: A002 - the template's argument name
    bandwidth: float,
) -> Interval:
    """Cut where the main peak's tail falls below ``tolerance`` of its height (openCyto tailgate).

    The main peak is the highest point of the density (see ``mindensity``).
    ``side="positive"`` walks up from the peak and keeps the events beyond the
    cut (``x >= cut``); ``"negative"`` walks down and keeps ``x < cut``.

    Parameters
    ----------
    values : ndarray of float64, shape (n, 1)
    ctx : MethodContext

    Returns
    -------
    Interval
    """
    x = _restrict(_finite_rows(values, ctx, "tail")[:, 0], range, ctx, "tail")
    dens = _Density(x, bandwidth, ctx, "tail")
    cut = dens.tail(int(np.argmax(dens.density)), tolerance, upper=side == "positive")
    if range is not None:
        cut = float(np.clip(cut, range[0], range[1]))
    return _side_interval(cut, side)


@register(
    "quantile",
    dims=1,
    args={
        "q": ArgSpec(float, REQUIRED, lo=0.0, hi=1.0, doc="the quantile of the cut"),
        "side": ArgSpec(
            str, "positive", choices=_SIDES, doc="positive: keep x >= cut; negative: keep x < cut"
        ),
    },
)
def quantile(values: np.ndarray, ctx: MethodContext, *, q: float, side: str) -> Interval:
    """Cut at the ``q`` quantile of the values (linear interpolation).

    ``side="positive"`` keeps about ``1 - q`` of the events, ``"negative"`` about ``q``.

    Parameters
    ----------
    values : ndarray of float64, shape (n, 1)
    ctx : MethodContext

    Returns
    -------
    Interval
    """
    x = _finite_rows(values, ctx, "quantile")[:, 0]
    return _side_interval(float(np.quantile(x, q)), side)


# ------------------------------------------------------------------------------------------ singlets


def _scale_model(a_s: np.ndarray, e_s: np.ndarray, floor: float) -> tuple[float, float]:
    """Robust residual scale as a linear function of a: c0 + c1 * a, from MADs in 16 quantile bins.

    ``a_s`` is sorted (ties in any order) and ``e_s`` in the same order: every bin is a
    contiguous slice (same members, so the same medians as selecting each bin with a mask,
    at a fraction of the cost), and the median of a bin of ``a_s`` is its middle. A bin
    never splits a run of equal areas, so the order of ties changes nothing.
    """
    m_all = a_s.shape[0]
    edges = _quantiles_sorted(a_s, np.linspace(0.0, 1.0, 17))
    if (edges[1:] >= edges[:-1]).all():
        # Bin b (the clipped count of edges <= a, minus one) starts at the first a >= edges[b]:
        # 15 binary searches instead of one per event.
        bounds = np.empty(17, dtype=np.intp)
        bounds[0], bounds[16] = 0, m_all
        bounds[1:16] = np.searchsorted(a_s, edges[1:16], side="left")
    else:  # NaN or unordered edges (a span that overflows): the per-event form
        which = np.clip(np.searchsorted(edges, a_s, side="right") - 1, 0, 15)
        bounds = np.searchsorted(which, np.arange(17), side="left")
    # Finite residuals: the MADs of the bins from one scratch buffer, partitioned in place
    # (no NaN can arise, so the NaN checks of _median are skipped).
    finite = bool(np.isfinite(e_s).all())
    buf = np.empty(m_all)
    mids, scales = [], []
    for b in range(16):
        lo, hi = bounds[b], bounds[b + 1]
        if hi - lo >= 10:
            eb = e_s[lo:hi]
            m = hi - lo
            # np.median of a sorted slice: its middle value, or the mean of its two middle values
            # (summed from +0.0, as np.mean does).
            mid = 0.0 + a_s[lo + m // 2] if m % 2 else (0.0 + a_s[lo + m // 2 - 1] + a_s[lo + m // 2]) / 2
            mids.append(float(mid))
            if finite:
                p = buf[:m]
                p[:] = eb
                p.partition(m // 2)
                med = _select_median(p)
                np.subtract(p, med, out=p)  # the bin's values in another order: same median
                np.abs(p, out=p)
                p.partition(m // 2)
                scales.append(_MAD_SD * _select_median(p))
            else:
                scales.append(_MAD_SD * _median(np.abs(eb - _median(eb))))
    if len(mids) < 2 or np.ptp(mids) == 0:
        return max(_robust_center_scale(e_s)[1], floor), 0.0
    c1, c0 = np.polyfit(np.asarray(mids), np.asarray(scales), 1)
    return float(c0), float(c1)


@register(
    "singlet",
    dims=2,
    args={
        "width": ArgSpec(
            float, 4.0, lo=0.5, hi=50.0, doc="half-width of the band in robust SDs of the residual"
        ),
        "max_events": ArgSpec(
            int, 50_000, lo=1000, hi=10_000_000, doc="events used to fit (seeded subsample)"
        ),
    },
)
def singlet(values: np.ndarray, ctx: MethodContext, *, width: float, max_events: int) -> Polygon:
    """A band along the singlet line of an area (x) / height (y) pair; doublets fall below it.

    The line ``y = a + b x`` is fitted by iteratively trimmed weighted least
    squares, starting from the median ratio ``y / x``. The residual scale is
    modelled as ``s(x) = c0 + c1 x`` (robust SDs in 16 bins of x), so the band
    widens with the signal on a linear scale and stays even on a log-like one;
    it is floored at a quarter of the median scale. The band is
    ``|y - a - b x| <= width * s(x)`` over the full x span of the data and
    ``ctx.ranges`` (33 vertices per edge).

    Parameters
    ----------
    values : ndarray of float64, shape (n, 2)
        Area and height.
    ctx : MethodContext

    Returns
    -------
    Polygon
    """
    full = _finite_rows(values, ctx, "singlet", min_n=20)
    x = _subsample(full, max_events, ctx.seed)
    a, h = np.ascontiguousarray(x[:, 0]), np.ascontiguousarray(x[:, 1])
    # One argsort of the area serves its median and decile here and the kept events' order in
    # the loop. Ties may come in any order: bins and medians depend on the values only.
    order = np.argsort(a)
    a_sorted = a[order]
    a_med = _sorted_median(a_sorted)
    # np.std of the columns as before (views of x: the same summation whatever the layout)
    a_sd = _MAD_SD * _median_owned(np.abs(a - a_med)) or float(np.std(x[:, 0]))
    h_sd = _robust_center_scale(h)[1] or float(np.std(x[:, 1]))
    if not (a_sd > 0 and h_sd > 0):
        raise _fail(ctx, "singlet", "area or height has no spread")
    # Start: the median ratio over events above the lowest decile of area (where it is defined).
    pos = (a > _quantiles_sorted(a_sorted, np.array([0.1]), unsorted=a)[0]) & (a != 0)
    if pos.sum() >= 10:
        b = _median_owned(h[pos] / a[pos])
        c = _median_owned(h - b * a)
    else:
        b, c = 1.0, _median_owned(h - a)
    floor = 1e-9 * max(h_sd, 1e-300)
    s0, s1 = _robust_center_scale(h - (c + b * a))[1], 0.0
    from flowtools.gating import _methods_kernels as K

    # The elementwise steps run in numba kernels (the same operations as the numpy they
    # replaced: bit-identical); the kept events are taken in the area order above, which
    # gives every subset sorted by area.
    new = np.ones(a.size, dtype=bool)  # the band so far (all events at first)
    design, rhs = np.empty((a.size, 2)), np.empty(a.size)
    a_buf, e_buf, sw = np.empty(a.size), np.empty(a.size), np.empty(a.size)
    h_sorted = h[order]  # one gather: the kept events then come in area order from a sequential pass
    for _ in range(12):
        band = (float(c), float(b), float(s0), float(s1), float(floor))
        # the band, its weighted system, and whether it equals the last band (replaces
        # np.array_equal(new, keep) and the copy)
        m, same = K.singlet_step(a, h, *band, new, design, rhs, sw)
        if m < 10:
            break
        ok, c, b = K.line_lstsq(design, rhs, m)
        if not ok:  # (nearly) one area value: the SVD's minimum-norm solution
            (c, b), *_ = np.linalg.lstsq(design[:m], rhs[:m], rcond=None)
        K.singlet_kept_sorted(a_sorted, h_sorted, *band, float(c), float(b), a_buf, e_buf)
        a_kept, e_new = a_buf[:m], e_buf[:m]
        s0, s1 = _scale_model(a_kept, e_new, floor)
        med_s = _median_owned(np.abs(e_new)) * _MAD_SD
        floor = max(floor, 0.25 * med_s)
        if same:
            break
    if not (np.isfinite(b) and np.isfinite(c)):
        raise _fail(ctx, "singlet", "the singlet line could not be fitted")
    lo = min(float(full[:, 0].min()), ctx.ranges[0][0] if ctx.ranges else np.inf)
    hi = max(float(full[:, 0].max()), ctx.ranges[0][1] if ctx.ranges else -np.inf)
    pad = 0.01 * (hi - lo) or 1.0
    xs = np.linspace(lo - pad, hi + pad, 33)
    half = width * np.maximum(s0 + s1 * xs, floor)
    line = c + b * xs
    upper = [(float(u), float(v)) for u, v in zip(xs, line + half, strict=True)]
    lower = [(float(u), float(v)) for u, v in zip(xs[::-1], (line - half)[::-1], strict=True)]
    return Polygon(tuple(upper + lower))


# ------------------------------------------------------------------------------------------ margins


def _pile(x: np.ndarray, edge: float, tol: float, *, top: bool) -> bool:
    """Whether events pile up within tol of the edge (5x more than in the next band inward)."""
    if top:
        at = int(np.count_nonzero(x >= edge - tol))
        nxt = int(np.count_nonzero((x >= edge - 2 * tol) & (x < edge - tol)))
    else:
        at = int(np.count_nonzero(x <= edge + tol))
        nxt = int(np.count_nonzero((x <= edge + 2 * tol) & (x > edge + tol)))
    return at >= 3 and at > 5 * max(nxt, 1)


@register(
    "boundary",
    dims=(1, 2, 3, 4, 5, 6, 7, 8),
    args={
        "tolerance": ArgSpec(float, 1e-3, lo=0.0, hi=0.1, doc="margin as a share of each dimension's range"),
    },
)
def boundary(values: np.ndarray, ctx: MethodContext, *, tolerance: float) -> Rectangle:
    """Drop margin events: those piled at the top of the range, or piled at the bottom.

    Per dimension, with ``tol = tolerance * (range hi - range lo)`` (the
    observed span when the range is degenerate):

    - ``hi = range hi - tol``, lowered to ``observed max - tol`` when a pile
      sits at the observed max (at least 3 events within ``tol`` of it and
      5 times more than in the next ``tol`` band down);
    - ``lo = observed min + tol`` only when such a pile sits at the observed
      min; otherwise open (compensated fluorescence legitimately spreads below
      the range's low end).

    Parameters
    ----------
    values : ndarray of float64, shape (n, d)
    ctx : MethodContext

    Returns
    -------
    Rectangle
    """
    x = _finite_rows(values, ctx, "boundary")
    los: list[float | None] = []
    his: list[float | None] = []
    for j in range(x.shape[1]):
        v = x[:, j]
        vmin, vmax = float(v.min()), float(v.max())
        rlo, rhi = ctx.ranges[j] if j < len(ctx.ranges) else (vmin, vmax)
        span = rhi - rlo if rhi > rlo else vmax - vmin
        tol = tolerance * span
        hi = rhi - tol if rhi > rlo else vmax + tol
        if tol > 0 and _pile(v, vmax, tol, top=True):
            hi = min(hi, vmax - tol)
        elif tol == 0 and np.count_nonzero(v == vmax) >= 3:
            hi = min(hi, vmax)
        his.append(float(hi))
        lo: float | None = None
        if tol > 0 and _pile(v, vmin, tol, top=False):
            lo = vmin + tol
        elif tol == 0 and np.count_nonzero(v == vmin) >= 3:
            lo = float(np.nextafter(vmin, np.inf))
        los.append(lo)
    return Rectangle(tuple(los), tuple(his))


# ------------------------------------------------------------------------------------------ mixtures


_GMM_REG_COVAR = 1e-4
_GMM_TOL = 1e-3
_GMM_MAX_ITER = 300
_KMEANS_TOL = 1e-4
_KMEANS_MAX_ITER = 300


def _has_distinct_rows(z: np.ndarray, k: int) -> bool:
    """Whether ``z`` has at least ``k`` distinct rows (O(k n), without sorting the rows).

    Distinct as ``!=`` on some column; the rows are counted by elimination in one streaming
    pass (a numba kernel: usually decided on the first few rows).
    """
    if k <= 1:
        return z.shape[0] > 0
    from flowtools.gating import _methods_kernels as K

    return bool(K.distinct_rows_at_least(np.ascontiguousarray(z, dtype=np.float64), k))


_UNIFORM_CDF: dict[int, np.ndarray] = {}


def _uniform_choice(rs: np.random.RandomState, n: int) -> int:
    """``rs.choice(n, p=np.ones(n) / n)``: the same index and the same draw from ``rs``.

    RandomState.choice with ``p`` draws one ``random_sample()`` and searches it (side
    "right") in ``cumsum(p) / cumsum(p)[-1]``; its ~50 us of checks on ``p`` are skipped and
    the cdf of the last n is kept (gmm fits one subsample size over and over).
    """
    cdf = _UNIFORM_CDF.get(n)
    if cdf is None:
        weight = np.ones(n)
        cdf = (weight / weight.sum()).cumsum()
        cdf /= cdf[-1]
        _UNIFORM_CDF.clear()
        _UNIFORM_CDF[n] = cdf
    return int(cdf.searchsorted(rs.random_sample(), side="right"))


def _kmeans_plusplus(x: np.ndarray, k: int, sq_norms: np.ndarray, rs: np.random.RandomState) -> np.ndarray:
    """k-means++ seeding, step for step scikit-learn's ``_kmeans_plusplus`` (unit weights, same draws).

    The matrix products stay numpy's (BLAS: their rounding is BLAS's); the elementwise
    distance steps around them run in one kernel, in place.
    """
    from flowtools.gating import _methods_kernels as K

    n = x.shape[0]
    weight = np.ones(n)
    trials = 2 + int(np.log(k))
    centers = np.empty((k, x.shape[1]))
    first = _uniform_choice(rs, n) if n > 0 else rs.choice(n, p=weight / weight.sum())
    centers[0] = x[first]
    xt = x.T

    def sq_dist(c: np.ndarray, closest: np.ndarray | None) -> np.ndarray:
        # sklearn's _euclidean_distances(c, x, squared=True), then the minimum with closest
        d = c @ xt
        low = d[0] if closest is None else closest.reshape(-1)  # closest is (1, n) at first
        K.kpp_sq_dist(d, np.einsum("ij,ij->i", c, c), sq_norms, low, closest is not None)
        return d

    closest = sq_dist(centers[0, np.newaxis], None)
    pot = closest @ weight
    for c in range(1, k):
        draws = rs.uniform(size=trials) * pot
        cand = np.searchsorted(np.cumsum(closest), draws)  # weight * closest is closest
        np.clip(cand, None, closest.size - 1, out=cand)
        dist = sq_dist(x[cand], closest)
        cand_pot = dist @ weight.reshape(-1, 1)
        best = np.argmin(cand_pot)
        pot = cand_pot[best]
        closest = dist[best]
        centers[c] = x[cand[best]]
    return centers


def _fit_mixture(z: np.ndarray, k: int, seed: int) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray]:
    """A full-covariance Gaussian mixture fitted as scikit-learn's ``GaussianMixture`` does.

    ``GaussianMixture(k, covariance_type="full", reg_covar=1e-4, max_iter=300,
    random_state=seed).fit(z)``: k-means labels (``KMeans(k, n_init=1,
    random_state=RandomState(seed))``: k-means++ seeding, then Lloyd iterations on
    the mean-centred data) start the EM. Same steps, same random draws; sums are
    taken in a different order, so parameters agree with scikit-learn's to rounding.

    Returns
    -------
    (status, n_iter, weights, means, covariances)
        status 1 converged, 0 not converged, -1 a covariance was not positive definite.
    """
    from flowtools.gating import _methods_kernels as K

    rs = np.random.RandomState(seed)
    z = np.ascontiguousarray(z, dtype=np.float64)
    if z.shape[1] >= 2:
        # numpy's axis-0 mean / var and the row norms in two passes (numpy's own reductions
        # take an inner loop of d elements per row: ~20x slower); d = 1 sums pairwise.
        xc, var, sq_norms = K.center_columns(z)
        tol = float(np.mean(var)) * _KMEANS_TOL
        if z.shape[1] != 2:  # einsum's own summation order of three products
            sq_norms = np.einsum("ij,ij->i", xc, xc)
    else:
        tol = float(np.mean(np.var(z, axis=0))) * _KMEANS_TOL
        xc = z - z.mean(axis=0)
        sq_norms = np.einsum("ij,ij->i", xc, xc)
    centers = _kmeans_plusplus(xc, k, sq_norms, rs)
    labels = np.empty(z.shape[0], dtype=np.int64)
    K.kmeans_lloyd(xc, centers, tol, _KMEANS_MAX_ITER, labels)
    d = z.shape[1]
    weights, means, covs = np.empty(k), np.empty((k, d)), np.empty((k, d, d))
    status, n_iter, _ = K.gmm_em(z, labels, _GMM_REG_COVAR, _GMM_TOL, _GMM_MAX_ITER, weights, means, covs)
    return int(status), int(n_iter), weights, means, covs


class _TargetSpec(ArgSpec):
    """``target``: a keyword (``largest``, ``highest_x``...) or a point [x, y(, z)] (nearest mean)."""

    def check(self, name: str, value: Any, where: str) -> Any:  # noqa: D102 - see class docstring
        if isinstance(value, list | tuple):
            if not 1 <= len(value) <= 3:
                msg = f"{where}: argument {name!r} as a point needs 1 to 3 numbers, got {value!r}"
                raise GatingError(msg)
            return tuple(self._number(name, v, where, float) for v in value)
        return super().check(name, value, where)


@register(
    "gmm",
    dims=(1, 2, 3),
    args={
        "k": ArgSpec(int, 2, lo=1, hi=12, doc="number of mixture components"),
        "target": _TargetSpec(
            str,
            "largest",
            choices=_TARGETS,
            doc="component to gate: a keyword or a point [x, y] (nearest mean)",
        ),
        "level": ArgSpec(float, 0.95, lo=0.01, hi=0.9999, doc="probability mass of the ellipse (chi-square)"),
        "max_events": ArgSpec(
            int, 20_000, lo=100, hi=10_000_000, doc="events used to fit (seeded subsample)"
        ),
    },
)
def gmm(
    values: np.ndarray,
    ctx: MethodContext,
    *,
    k: int,
    target: str | tuple[float, ...],
    level: float,
    max_events: int,
) -> Ellipse:
    """One component of a Gaussian mixture, as its ``level`` ellipse (flowClust-like).

    Fits the model of scikit-learn's ``GaussianMixture(covariance_type="full",
    reg_covar=1e-4, max_iter=300, random_state=ctx.seed)`` (k-means++ / Lloyd
    k-means initialisation, then EM until the mean log-likelihood changes by less
    than 1e-3) on a seeded subsample of at most ``max_events`` events, in robustly
    standardised coordinates. The fit is flowtools' own (:func:`_fit_mixture`,
    numba kernels): the same algorithm and random draws as scikit-learn, agreeing
    with it to rounding (~1e-12), at a fraction of the cost. The target is
    the component with the largest weight, the highest/lowest mean on an axis,
    or the mean nearest a given point.

    Parameters
    ----------
    values : ndarray of float64, shape (n, d), d in 1..3
    ctx : MethodContext

    Returns
    -------
    Ellipse
        ``distance_square`` is the chi-square quantile of ``level`` with d degrees of freedom.
    """
    full = _finite_rows(values, ctx, "gmm", min_n=max(10, 5 * k))
    d = full.shape[1]
    if isinstance(target, tuple) and len(target) != d:
        raise _fail(
            ctx, "gmm", f"target point {list(target)} has {len(target)} coordinates for {d} dimensions"
        )
    if isinstance(target, str) and target != "largest" and "xyz".index(target[-1]) >= d:
        raise _fail(ctx, "gmm", f"target {target!r} needs {'xyz'.index(target[-1]) + 1} dimensions, got {d}")
    x = _subsample(full, max_events, ctx.seed)
    center, scale = np.empty(d), np.empty(d)
    for j in range(d):
        # the median once per column (it is also the MAD's centre); a contiguous copy to partition
        col = np.ascontiguousarray(x[:, j])
        center[j] = med = _median(col)
        scale[j] = _MAD_SD * _median_owned(np.abs(col - med)) or float(np.std(x[:, j]))
    if not np.all(scale > 0):
        raise _fail(ctx, "gmm", "a dimension has no spread (all values identical)")
    from flowtools.gating import _methods_kernels as K

    z = K.standardize(x, center, scale)  # (x - center) / scale, element for element
    if not _has_distinct_rows(z, k):
        raise _fail(ctx, "gmm", f"fewer distinct events than components (k={k})")
    try:
        status, n_iter, weights, mix_means, mix_covs = _fit_mixture(z, k, ctx.seed)
    except ValueError as exc:  # e.g. a seed that numpy's RandomState does not take
        raise _fail(ctx, "gmm", f"the mixture fit failed ({exc})") from None
    if status < 0:
        raise _fail(ctx, "gmm", "the mixture fit failed (a component's covariance is not positive definite)")
    if status == 0:
        _log.warning("%s: gmm did not converge in %d iterations", ctx.population, n_iter)
    means = mix_means * scale + center
    if isinstance(target, tuple):
        pick = int(np.argmin(((means - np.asarray(target)) ** 2).sum(axis=1)))
    elif target == "largest":
        pick = int(np.argmax(weights))
    else:
        col = means[:, "xyz".index(target[-1])]
        pick = int(np.argmax(col) if target.startswith("highest") else np.argmin(col))
    cov = mix_covs[pick] * np.outer(scale, scale)
    return Ellipse(
        tuple(float(m) for m in means[pick]),
        tuple(tuple(float(c) for c in row) for row in cov),
        _chi2_ppf(level, d),
    )


# ------------------------------------------------------------------------------------------ quadrants


@register(
    "quad",
    dims=2,
    args={
        "x_cut": ArgSpec(float, None, doc="fixed x cut (skips the density search on x)"),
        "y_cut": ArgSpec(float, None, doc="fixed y cut (skips the density search on y)"),
        "x_range": ArgSpec(tuple, None, doc="[a, b]: search the x cut among a <= x <= b"),
        "y_range": ArgSpec(tuple, None, doc="[a, b]: search the y cut among a <= y <= b"),
        "bandwidth": _DENSITY_ARGS["bandwidth"],
        "min_peak_height": ArgSpec(float, 0.05, lo=0.0, hi=1.0, doc="as in mindensity"),
        "tolerance": ArgSpec(float, 0.01, lo=1e-6, hi=0.99, doc="as in mindensity (single-peak fallback)"),
    },
)
def quad(
    values: np.ndarray,
    ctx: MethodContext,
    *,
    x_cut: float | None,
    y_cut: float | None,
    x_range: tuple[float, float] | None,
    y_range: tuple[float, float] | None,
    bandwidth: float,
    min_peak_height: float,
    tolerance: float,
) -> Quadrants:
    """Quadrant cuts: ``mindensity`` on each axis (single peak: its upper tail), or fixed values.

    Parameters
    ----------
    values : ndarray of float64, shape (n, 2)
    ctx : MethodContext

    Returns
    -------
    Quadrants
    """
    cuts = [x_cut, y_cut]
    if None in cuts:
        x = _finite_rows(values, ctx, "quad")
        for j, rng in ((0, x_range), (1, y_range)):
            if cuts[j] is None:
                cuts[j] = _mindensity_cut(
                    x[:, j],
                    ctx,
                    "quad",
                    range_=rng,
                    bandwidth=bandwidth,
                    peaks=None,
                    min_peak_height=min_peak_height,
                    single_peak="upper",
                    tolerance=tolerance,
                )
    return Quadrants(float(cuts[0]), float(cuts[1]))


# ------------------------------------------------------------------------------------------ QC


def _ranks(v: np.ndarray) -> np.ndarray:
    """Each value's position in the distribution of all values (0..1; ties share one).

    Interpolated in 1001 quantiles of at most ~200k values (a regular stride: no randomness).
    """
    from flowtools.gating import _qc_kernels as QK

    # The sorted sample is np.sort's: the same values as the argsorted copy this used to take
    # (and the same bits, signed zeros included); a sort is 3x cheaper than an argsort.
    sample = np.sort(v[:: max(1, v.size // 200_000)])
    q = _quantiles_sorted(sample, np.linspace(0.0, 1.0, 1001))
    xp, inv = np.unique(q, return_inverse=True)
    fp = np.bincount(inv, weights=np.linspace(0.0, 1.0, 1001)) / np.bincount(inv)
    if xp.size == 1:
        return np.full(v.size, 0.5)
    # np.interp(v, xp, fp) value for value (a kernel: numpy's own search is slow on unsorted v).
    return QK.interp(v, xp, fp)


def _robust_z(v: np.ndarray) -> np.ndarray:
    med, s = _robust_center_scale(v)
    s = max(s, 0.01 * abs(med), 1e-12)
    return (v - med) / s


@register(
    "qc",
    dims=tuple(range(1, 33)),
    args={
        "bins": ArgSpec(int, 100, lo=5, hi=100_000, doc="number of time bins"),
        "binning": ArgSpec(str, "count", choices=("count", "time"), doc="equal-count or equal-time bins"),
        "z": ArgSpec(float, 4.0, lo=1.0, hi=100.0, doc="robust z (MAD) beyond which a bin is flagged"),
        "min_events": ArgSpec(
            int, 20, lo=1, hi=1_000_000, doc="fewest events per bin (fewer bins if needed)"
        ),
        "min_run": ArgSpec(int, 1, lo=1, hi=1000, doc="drop runs of good bins shorter than this"),
    },
)
def qc(
    values: np.ndarray,
    ctx: MethodContext,
    *,
    bins: int,
    binning: str,
    z: float,
    min_events: int,
    min_run: int,
) -> TimeWindows:
    """Time windows free of flow-rate gaps and signal shifts (PeacoQC / flowAI-like).

    Column 0 is time; the other columns are signals to watch. Events are split
    into ``bins`` equal-count (default) or equal-time bins, with at most
    ``n / min_events`` bins. A bin is flagged when its flow rate (seconds per
    event for equal-count bins, events per bin for equal-time bins) is more
    than ``z`` robust SDs (1.4826 MAD across bins, floored at 1% of the
    median) from the median bin, or when the mean rank of any watched signal
    (each event's position in that signal's overall distribution, 0..1: a
    scale-free statistic that population mixtures do not make jumpy, unlike
    a median) is more than ``z`` robust SDs from the median bin (the SD
    floored at the sampling SD ``1 / sqrt(12 m)`` for ``m`` events per bin);
    an empty bin is flagged. Consecutive good bins merge into ``[lo, hi)`` windows;
    the last window's ``hi`` is just above the last event's time. With too few
    events for 5 bins, one window spans all events.

    Parameters
    ----------
    values : ndarray of float64, shape (n, d)
    ctx : MethodContext

    Returns
    -------
    TimeWindows
    """
    x = _finite_rows(values, ctx, "qc")
    if not (x[1:, 0] >= x[:-1, 0]).all():  # acquisition order is usually time order already
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
        rate = (edges_t[1:] - edges_t[:-1]) / counts  # seconds per event
    else:
        edges_t = np.linspace(float(t[0]), t_end, nb + 1)
        bounds = np.searchsorted(t, edges_t, side="left")
        starts, stops = bounds[:-1], bounds[1:]
        counts = stops - starts
        rate = counts.astype(np.float64)
    bad = counts == 0
    bad |= np.abs(_robust_z(rate)) > z
    if x.shape[1] > 1:
        full = counts > 0
        null_sd = 1.0 / math.sqrt(12.0 * float(np.median(counts[full])))
        for c in range(1, x.shape[1]):
            r = _ranks(x[:, c])
            means = np.add.reduceat(r, np.minimum(starts[full], n - 1)) / counts[full]
            center, spread = _robust_center_scale(means)
            zc = np.zeros(nb)
            zc[full] = (means - center) / max(spread, null_sd)
            bad |= np.abs(zc) > z
    windows: list[tuple[float, float]] = []
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
        raise _fail(ctx, "qc", "every time bin was flagged")
    _log.info("%s: qc kept %d window(s), %d of %d bins flagged", ctx.population, len(windows), bad.sum(), nb)
    return TimeWindows(tuple(windows))
