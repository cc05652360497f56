"""Numba kernels for gate membership: polygon (even-odd), ellipsoid and range (rectangle) masks.

Each takes plain C-contiguous float64 arrays and writes a bool mask; each has a
plain-numpy reference in ``tests/reference/gating_ref.py``. Serial and
``prange`` versions are compiled from the same function when this module loads
(and cached on disk: see ``FLOWTOOLS_NUMBA_CACHE``). Block-wise gating
(:mod:`flowtools.gating.engine.plan`) uses ``extract_columns`` (the compensated
and raw columns of a block of rows, bit-identical to
``compensation._kernels.compensate_rows``; tested against it) and ``range_and``
(one rectangle dimension ANDed into a mask: rectangles and quadrants are one
pass per dimension; tested against the rectangle reference).

Edge rules (Gating-ML 2.0 compliance suite): a polygon point counts as inside
when a horizontal ray to its right crosses the boundary an odd number of times,
with an edge counted when one end is strictly above the point and the other is
not (``(yi > y) != (yj > y)``) and the crossing lies strictly right of the point.
NaN coordinates are never inside any gate.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from flowtools._config import NUMBA_CACHE
from flowtools._numba import NOALIAS as _NOALIAS

__all__ = [
    "ellipsoid_mask",
    "ellipsoid_serial",
    "extract_columns",
    "polygon_mask",
    "polygon_serial",
    "range_and",
]

_PARALLEL_MIN = 50_000  # below this, threads cost more than they save


def _polygon(x, y, vx, vy, parent, out):  # noqa: ANN001, ANN202
    n = x.shape[0]
    m = vx.shape[0]
    # Bounding-box shortcut. Rows outside [ymin, ymax] meet no edge (the same comparisons
    # as the edge rule, so exact). Left or right of the box, every crossing lies on one
    # side, so the count is even: outside; x is tested with a margin far above the
    # rounding of the crossing abscissa, so no point the full rule would admit is skipped.
    ymin = vy.min()
    ymax = vy.max()
    xmin = vx.min()
    xmax = vx.max()
    margin = 1e-9 * (xmax - xmin) + 1e-12 * max(abs(xmin), abs(xmax)) + 1e-300
    xlo = xmin - margin
    xhi = xmax + margin
    for i in nb.prange(n):
        if not parent[i]:  # children are tested only on their parent's events
            out[i] = False
            continue
        px = x[i]
        py = y[i]
        if not (py >= ymin and py < ymax and px > xlo and px < xhi):
            # NaN fails every comparison: outside, as the full rule gives
            out[i] = False
            continue
        inside = False
        j = m - 1
        for k in range(m):
            yi = vy[k]
            yj = vy[j]
            if (yi > py) != (yj > py):
                xc = (vx[j] - vx[k]) * (py - yi) / (yj - yi) + vx[k]
                if px < xc:
                    inside = not inside
            j = k
        out[i] = inside
    return out


def _polygon_edges(x, y, vx, vy, acc):  # noqa: ANN001, ANN202
    # The same even-odd rule, edge by edge over all points: no branch per point, so LLVM
    # vectorises it (about 10x faster per point than _polygon's point-by-point loop).
    # Every crossing abscissa is computed with _polygon's expression and operand order
    # (dx and dy are the same differences it takes), so the parity is bit-identical; a
    # horizontal edge divides by zero (error_model="numpy": inf or NaN) but never straddles.
    n = x.shape[0]
    m = vx.shape[0]
    for i in range(n):
        acc[i] = 0
    j = m - 1
    for k in range(m):
        yi = vy[k]
        yj = vy[j]
        xk = vx[k]
        dx = vx[j] - vx[k]
        dy = yj - yi
        for i in range(n):
            py = y[i]
            straddle = (yi > py) != (yj > py)
            xc = dx * (py - yi) / dy + xk
            acc[i] ^= np.uint8(straddle & (x[i] < xc))
        j = k
    return acc


def _polygon_auto(x, y, vx, vy, parent, out):  # noqa: ANN001, ANN202
    # Edge-major over every point unless the parent holds few of them (below a tenth,
    # testing only the parent's points one by one is cheaper).
    n = x.shape[0]
    held = 0
    for i in range(n):
        held += parent[i]
    if 10 * held < n:
        return _polygon_point(x, y, vx, vy, parent, out)
    acc = _polygon_edges_k(x, y, vx, vy, np.empty(n, dtype=np.uint8))
    for i in range(n):
        out[i] = parent[i] & (acc[i] != 0)  # NaN coordinates never straddle nor cross: outside
    return out


def _ellipsoid(values, mean, inv_cov, dist2, parent, out):  # noqa: ANN001, ANN202
    n, d = values.shape
    for i in nb.prange(n):
        if not parent[i]:
            out[i] = False
            continue
        acc = 0.0
        for a in range(d):
            da = values[i, a] - mean[a]
            row = 0.0
            for b in range(d):
                row += inv_cov[a, b] * (values[i, b] - mean[b])
            acc += da * row
        out[i] = acc <= dist2  # NaN compares False: outside
    return out


def _extract(x, lo, hi, idx, unmix, dets, raws, out):  # noqa: ANN001, ANN202
    # Rows lo..hi of the columns a block-wise plan reads, as float64 columns of ``out``.
    # Output o is the compensated detector dets[o] (a position in matrix order) when
    # dets[o] >= 0, else the raw column raws[o] widened to float64. The products run in
    # the order of compensation._kernels.compensate_rows (0.0, then + unmix[m, j] * x_m
    # for m = 0, 1, ...), so every value is bit-identical to it.
    p = x.shape[1]
    k = idx.shape[0]
    q = dets.shape[0]
    chunk = 1024
    blk = np.empty((k, chunk), dtype=np.float64)
    res = np.empty(chunk, dtype=np.float64)
    for start in range(lo, hi, chunk):
        size = min(hi, start + chunk) - start
        base = start - lo
        for m in range(k):  # transposed detector values: the products below run over vectors
            col = idx[m]
            for i in range(size):
                blk[m, i] = x[start + i, col]
        for o in range(q):
            j = dets[o]
            if j >= 0:
                for i in range(size):
                    res[i] = 0.0
                for m in range(k):
                    u = unmix[m, j]
                    for i in range(size):
                        res[i] += u * blk[m, i]
                for i in range(size):
                    out[base + i, o] = res[i]
            else:
                col = raws[o]
                if col < 0 or col >= p:
                    continue
                for i in range(size):
                    out[base + i, o] = x[start + i, col]
    return out


def _range_and(v, lo, hi, src, out):  # noqa: ANN001, ANN202
    # out = src & (lo <= v < hi), hi = +inf open (rectangle rule); ``out`` may be ``src``.
    for i in range(v.shape[0]):
        if src[i]:
            x = v[i]
            out[i] = x >= lo and (x < hi or hi == np.inf)
        else:
            out[i] = False
    return out


_ro1 = nb.types.Array(nb.float64, 1, "C", readonly=True)
_b1 = nb.types.Array(nb.boolean, 1, "C")
_rob1 = nb.types.Array(nb.boolean, 1, "C", readonly=True)
_POLY_SIG = [_b1(_ro1, _ro1, _ro1, _ro1, _rob1, _b1)]
# 2-D inputs may come row-major (a single column reshaped) or column-major (stacked channels).
_ELL_SIG = [
    _b1(
        nb.types.Array(nb.float64, 2, lay, readonly=True),
        _ro1,
        nb.types.Array(nb.float64, 2, "C", readonly=True),
        nb.float64,
        _rob1,
        _b1,
    )
    for lay in ("C", "F")
]

_polygon_point = nb.njit(_POLY_SIG, cache=NUMBA_CACHE, nogil=True)(_polygon)
_polygon_edges_k = nb.njit(
    [nb.types.Array(nb.uint8, 1, "C")(_ro1, _ro1, _ro1, _ro1, nb.types.Array(nb.uint8, 1, "C"))],
    cache=NUMBA_CACHE,
    nogil=True,
    error_model="numpy",
    **_NOALIAS,
)(_polygon_edges)
_polygon_s = nb.njit(_POLY_SIG, cache=NUMBA_CACHE, nogil=True)(_polygon_auto)
_polygon_p = nb.njit(_POLY_SIG, cache=NUMBA_CACHE, nogil=True, parallel=True)(_polygon)
_ellipsoid_s = nb.njit(_ELL_SIG, cache=NUMBA_CACHE, nogil=True)(_ellipsoid)
_ellipsoid_p = nb.njit(_ELL_SIG, cache=NUMBA_CACHE, nogil=True, parallel=True)(_ellipsoid)

# ``out`` is column-major; numba types a one-row or one-column buffer as "C" (it is both).
_EXTRACT_SIG = [
    nb.types.Array(nb.float64, 2, lay)(
        nb.types.Array(dt, 2, "C", readonly=True),
        nb.intp,
        nb.intp,
        nb.types.Array(nb.intp, 1, "C", readonly=True),
        nb.types.Array(nb.float64, 2, "C", readonly=True),
        nb.types.Array(nb.intp, 1, "C", readonly=True),
        nb.types.Array(nb.intp, 1, "C", readonly=True),
        nb.types.Array(nb.float64, 2, lay),
    )
    for dt in (nb.float32, nb.float64)
    for lay in ("F", "C")
]
_RANGE_SIG = [_b1(_ro1, nb.float64, nb.float64, _rob1, _b1)]
extract_columns = nb.njit(_EXTRACT_SIG, cache=NUMBA_CACHE, nogil=True)(_extract)
range_and = nb.njit(_RANGE_SIG, cache=NUMBA_CACHE, nogil=True)(_range_and)
polygon_serial = _polygon_s
ellipsoid_serial = _ellipsoid_s


def _use_threads(n: int, *, parallel: bool | None) -> bool:
    if parallel is not None:
        return bool(parallel)
    # A prange loop on one thread (plate workers, NUMBA_NUM_THREADS=1) only adds overhead.
    return n >= _PARALLEL_MIN and nb.get_num_threads() > 1


def _f64(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64)


def _f64_cols(a: np.ndarray) -> np.ndarray:
    return np.asfortranarray(a, dtype=np.float64)


def _out(n: int, out: np.ndarray | None) -> np.ndarray:
    return np.empty(n, dtype=np.bool_) if out is None else out


def _parent(n: int, parent: np.ndarray | None) -> np.ndarray:
    return np.ones(n, dtype=np.bool_) if parent is None else np.ascontiguousarray(parent, dtype=np.bool_)


def polygon_mask(
    x: np.ndarray,
    y: np.ndarray,
    vertices: np.ndarray,
    out: np.ndarray | None = None,
    *,
    parent: np.ndarray | None = None,
    parallel: bool | None = None,
) -> np.ndarray:
    """Even-odd point-in-polygon test.

    Parameters
    ----------
    x, y : ndarray of float64, shape (n,)
    vertices : ndarray of float64, shape (m, 2)
    out : ndarray of bool, shape (n,), optional
    parent : ndarray of bool, shape (n,), optional
        Only these events are tested (the others are False): a child gate on its parent.
    parallel : bool, optional
        Default: serial (the edge-major kernel on one core beats threads point by point).

    Returns
    -------
    ndarray of bool, shape (n,)
    """
    v = _f64(vertices)
    n = x.shape[0]
    # Default serial: the edge-major kernel on one core beats the point-by-point prange loop.
    fn = _polygon_p if parallel else _polygon_s
    return fn(
        _f64(x),
        _f64(y),
        np.ascontiguousarray(v[:, 0]),
        np.ascontiguousarray(v[:, 1]),
        _parent(n, parent),
        _out(n, out),
    )


def ellipsoid_mask(
    values: np.ndarray,
    mean: np.ndarray,
    inv_cov: np.ndarray,
    distance_square: float,
    out: np.ndarray | None = None,
    *,
    parent: np.ndarray | None = None,
    parallel: bool | None = None,
) -> np.ndarray:
    """``(v - mean)^T inv_cov (v - mean) <= distance_square`` per row of ``values`` (n, d)."""
    n = values.shape[0]
    fn = _ellipsoid_p if _use_threads(n, parallel=parallel) else _ellipsoid_s
    return fn(
        _f64_cols(values), _f64(mean), _f64(inv_cov), float(distance_square), _parent(n, parent), _out(n, out)
    )
