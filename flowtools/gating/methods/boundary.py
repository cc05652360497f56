"""The ``boundary`` method: drop the margin events piled at the limits of the range."""

from __future__ import annotations

import numpy as np

from flowtools.gating.methods._common import _fail, _finite_rows
from flowtools.gating.methods.registry import ArgSpec, MethodContext, Rectangle, register

__all__ = ["boundary"]


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
        if vmax == vmin and v.size >= 3:  # one value only: no margin to tell from the rest
            name = ctx.dimensions[j] if j < len(ctx.dimensions) else str(j)
            raise _fail(ctx, "boundary", f"every event has the same {name} value ({vmin:g}): "
                        "a masked or constant parameter, not a margin")
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
    piled = [d for d, lo_ in zip(ctx.dimensions or [str(j) for j in range(len(los))], los, strict=False)
             if lo_ is not None]
    ctx.note(rule=f"drop events within {tolerance:g} of the range ends"
             + (f"; piles at the bottom of {piled}" if piled else ""), los=list(los), his=list(his))
    return Rectangle(tuple(los), tuple(his))
