"""Numba kernel for compensation: one pass over the events, row by row.

``compensate_rows`` reads each event once, writes the compensated detector
values and copies the other columns, so a compensated sample costs one read
and one write of the matrix (numpy needs a gather, a GEMM and a scatter).
Reference: ``out[:, idx] = x[:, idx] @ unmix`` (tests/reference/compensation_ref.py).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from flowtools._config import NUMBA_CACHE

__all__ = ["compensate_rows"]


def _compensate_rows(x, idx, unmix, out):  # noqa: ANN001, ANN202 - numba kernel, typed by signature
    n, p = x.shape
    k = idx.shape[0]
    is_det = np.zeros(p, dtype=np.bool_)
    for j in range(k):
        is_det[idx[j]] = True
    chunk = 1024
    n_chunks = (n + chunk - 1) // chunk
    for c in nb.prange(n_chunks):
        lo = c * chunk
        hi = min(n, lo + chunk)
        size = hi - lo
        # Transpose the chunk's detector values so the products run over contiguous
        # vectors (axpy), which LLVM vectorises; a row-by-row loop does not.
        blk = np.empty((k, chunk), dtype=np.float64)
        res = np.zeros((k, chunk), dtype=np.float64)
        for m in range(k):
            col = idx[m]
            for i in range(size):
                blk[m, i] = x[lo + i, col]
        for m in range(k):
            for j in range(k):
                u = unmix[m, j]
                for i in range(size):
                    res[j, i] += u * blk[m, i]
        # Column by column: contiguous writes for a column-major ``out`` (what gating asks for).
        for col in range(p):
            if not is_det[col]:
                for i in range(size):
                    out[lo + i, col] = x[lo + i, col]
        for j in range(k):
            col = idx[j]
            for i in range(size):
                out[lo + i, col] = res[j, i]
    return out


def _sig(x_dtype: nb.types.Type, layout: str) -> nb.core.typing.templates.Signature:
    # Inputs are typed read-only so that read-only arrays (memory maps, frozen matrices) need no copy;
    # writable arrays convert to these types at dispatch. ``out`` may be row- or column-major.
    ro2 = nb.types.Array(x_dtype, 2, "C", readonly=True)
    out_t = nb.types.Array(nb.float64, 2, layout)
    return out_t(
        ro2,
        nb.types.Array(nb.intp, 1, "C", readonly=True),
        nb.types.Array(nb.float64, 2, "C", readonly=True),
        out_t,
    )


_SIGS = [_sig(dt, layout) for dt in (nb.float32, nb.float64) for layout in ("C", "F")]
_serial = nb.njit(_SIGS, cache=NUMBA_CACHE, nogil=True)(_compensate_rows)
_parallel = nb.njit(_SIGS, cache=NUMBA_CACHE, nogil=True, parallel=True)(_compensate_rows)


def compensate_rows(
    x: np.ndarray,
    idx: np.ndarray,
    unmix: np.ndarray,
    out: np.ndarray | None = None,
    *,
    parallel: bool = True,
    order: str = "C",
) -> np.ndarray:
    """Compensate events row by row.

    Parameters
    ----------
    x : ndarray of float32 or float64, shape (n, p), C-contiguous
    idx : ndarray of intp, shape (k,)
        Columns of the detectors, in matrix order.
    unmix : ndarray of float64, shape (k, k)
        ``inv(S)``.
    out : ndarray of float64, shape (n, p), C or Fortran order, optional
    parallel : bool, default True
        Use the ``prange`` version (threads over events).
    order : {"C", "F"}, default "C"
        Layout of a newly allocated ``out``; "F" makes every channel contiguous
        (what gating wants: it reads channels, not events).

    Returns
    -------
    ndarray of float64, shape (n, p)
    """
    if out is None:
        out = np.empty(x.shape, dtype=np.float64, order=order)
    fn = _parallel if parallel else _serial
    return fn(x, idx, np.ascontiguousarray(unmix, dtype=np.float64), out)
