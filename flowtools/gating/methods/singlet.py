"""The ``singlet`` method: a band along the area / height singlet line (doublets fall outside).

The line is fitted by iteratively trimmed weighted least squares; each iteration's
elementwise work (the band, its weighted system, the kept events in area order) and
the two-column least squares run in the numba kernels of
:mod:`flowtools.gating.methods._singlet_kernels` (imported on first use).
"""

from __future__ import annotations

import numpy as np

from flowtools.gating.methods._common import (
    _MAD_SD,
    _argsorted,
    _fail,
    _finite_rows,
    _median,
    _quantiles_sorted,
    _robust_center_scale,
    _subsample,
)
from flowtools.gating.methods.registry import ArgSpec, MethodContext, Polygon, register

__all__ = ["singlet"]


def _scale_model(a_s: np.ndarray, e_s: np.ndarray, floor: float) -> tuple[float, float]:
    """Robust residual scale as a linear function of a: c0 + c1 * a, from MADs in 16 quantile bins.

    ``a_s`` is sorted (ties in any order) and ``e_s`` in the same order, so every bin is a
    contiguous slice. A bin never splits a run of equal areas, so the order of ties changes
    nothing.
    """
    m_all = a_s.shape[0]
    edges = _quantiles_sorted(a_s, np.linspace(0.0, 1.0, 17))
    if (edges[1:] >= edges[:-1]).all():
        # Bin b (the clipped count of edges <= a, minus one) starts at the first a >= edges[b].
        bounds = np.empty(17, dtype=np.intp)
        bounds[0], bounds[16] = 0, m_all
        bounds[1:16] = np.searchsorted(a_s, edges[1:16], side="left")
    else:  # NaN or unordered edges (a span that overflows): each event's bin
        which = np.clip(np.searchsorted(edges, a_s, side="right") - 1, 0, 15)
        bounds = np.searchsorted(which, np.arange(17), side="left")
    from flowtools.gating.methods import _singlet_kernels as K

    # The 16 bins' medians and MADs in one kernel call (np.median's bits, without 48 calls into numpy).
    mids, mads = np.empty(16), np.empty(16)
    k = K.bin_scales(a_s, e_s, bounds.astype(np.int64), 10, mids, mads, np.empty(max(m_all, 1)))
    mids, scales = mids[:k], _MAD_SD * mads[:k]
    if k < 2 or np.ptp(mids) == 0:
        return max(_robust_center_scale(e_s)[1], floor), 0.0
    c1, c0 = np.polyfit(mids, scales, 1)
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
    # The events in area order (ties in any order: bins and medians depend on the values only):
    # the area's decile here, and the kept events in area order for the scale model below.
    order = _argsorted(a)
    a_sorted = a[order]
    a_sd = _robust_center_scale(a)[1] or float(np.std(x[:, 0]))
    h_sd = _robust_center_scale(h)[1] or float(np.std(x[:, 1]))
    if not (a_sd > 0 and h_sd > 0):
        raise _fail(ctx, "singlet", "area or height has no spread")
    # Start: the median ratio over events above the lowest decile of area (where it is defined).
    pos = (a > _quantiles_sorted(a_sorted, np.array([0.1]), unsorted=a)[0]) & (a != 0)
    if pos.sum() >= 10:
        b = _median(h[pos] / a[pos])
        c = _median(h - b * a)
    else:
        b, c = 1.0, _median(h - a)
    floor = 1e-9 * max(h_sd, 1e-300)
    s0, s1 = _robust_center_scale(h - (c + b * a))[1], 0.0
    from flowtools.gating.methods import _singlet_kernels as K

    # Each iteration: the 3-sigma band of the current line and its weighted system, the refitted
    # line, then the band's events in area order and their residuals for the next scale model.
    new = np.ones(a.size, dtype=bool)  # the band so far (all events at first)
    design, rhs = np.empty((a.size, 2)), np.empty(a.size)
    a_buf, e_buf, sw = np.empty(a.size), np.empty(a.size), np.empty(a.size)
    h_sorted = h[order]
    for _ in range(12):
        band = (float(c), float(b), float(s0), float(s1), float(floor))
        # the band, its weighted system, and whether no event changed side since the last band
        m, same = K.singlet_step(a, h, *band, new, design, rhs, sw)
        if m < 10:
            break
        ok, c, b = K.line_lstsq(design, rhs, m)
        if not ok:  # (nearly) one area value: the SVD's minimum-norm solution
            (c, b), *_ = np.linalg.lstsq(design[:m], rhs[:m], rcond=None)
        K.singlet_kept_sorted(a_sorted, h_sorted, *band, float(c), float(b), a_buf, e_buf)
        a_kept, e_new = a_buf[:m], e_buf[:m]
        s0, s1 = _scale_model(a_kept, e_new, floor)
        med_s = _median(np.abs(e_new)) * _MAD_SD
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
    ctx.note(rule=f"band of {width:g} robust SDs around the line h = {c:.4g} + {b:.4g} a",
             intercept=float(c), slope=float(b))
    upper = [(float(u), float(v)) for u, v in zip(xs, line + half, strict=True)]
    lower = [(float(u), float(v)) for u, v in zip(xs[::-1], (line - half)[::-1], strict=True)]
    return Polygon(tuple(upper + lower))
