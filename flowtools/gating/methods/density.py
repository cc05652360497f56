"""Density-based cuts: ``mindensity``, ``tail``, ``quantile`` and ``quad`` (``mindensity`` on two axes).

The density is a Gaussian-smoothed histogram (binned KDE) on a regular grid of
1024 points; a cut is a valley between peaks or the point where a peak's tail
falls below a share of its height. The histogram, range selection and peak
prominences run in the numba kernels of
:mod:`flowtools.gating.methods._density_kernels` (imported on first use: numba
stays out of ``import flowtools``).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from flowtools.gating.methods._common import _fail, _finite_rows, _quantiles_sorted
from flowtools.gating.methods.registry import REQUIRED, ArgSpec, Interval, MethodContext, Quadrants, register

__all__ = ["mindensity", "quad", "quantile", "tail"]

_log = logging.getLogger(__name__)

_GRID = 1024  # density grid points
_SIDES = ("positive", "negative")

# ------------------------------------------------------------------------------------------ density


def _restrict(x: np.ndarray, rng: tuple[float, float] | None, ctx: MethodContext, method: str) -> np.ndarray:
    if rng is None:
        return x
    a, b = rng
    if not a < b:
        raise _fail(ctx, method, f"range [{a}, {b}] is empty (needs a < b)")
    from flowtools.gating.methods import _density_kernels as DK

    # x[(x >= a) & (x <= b)]: the kernel compares with the bounds as float64, as numpy does
    return DK.restrict(x, float(a), float(b))


class _Density:
    """A Gaussian-smoothed histogram (binned KDE) of 1-D values on a regular grid."""

    def __init__(self, x: np.ndarray, factor: float, ctx: MethodContext, method: str) -> None:
        n = x.size
        if n < 2:
            raise _fail(ctx, method, f"{n} event(s) in range: too few to estimate a density")
        from flowtools.gating.methods import _density_kernels as DK

        # the quantiles and the ends come from one sorted copy
        xs = np.sort(x)
        q = _quantiles_sorted(xs, np.array([0.001, 0.25, 0.75, 0.999]), unsorted=x)
        # min and max: the sorted ends, but np.min / np.max's own pick for a zero end (its sign) or NaN
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
        # events per grid point: the nearest index floor((x - lo) / dx + 0.5); events off the grid dropped
        hist = DK.density_hist(x, lo, dx, _GRID)
        s = bw / dx
        half = int(min(_GRID - 1, math.ceil(4.0 * s)))
        k = np.exp(-0.5 * (np.arange(-half, half + 1) / s) ** 2) if s > 0 else np.ones(1)
        # The centred _GRID values of the full convolution (mode="same" would return the kernel's
        # length when the kernel is the longer one: a wide bandwidth over few events).
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
            # one scan per peak; on a finite density without -0.0 its minima are those of the slices below
            from flowtools.gating.methods import _density_kernels as DK

            return idx, DK.prominences(d, idx)
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
