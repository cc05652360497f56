"""Helpers of the built-in methods: input checks, errors, sorted quantiles, robust scale, subsampling."""

from __future__ import annotations

import numpy as np

from flowtools.errors import GatingError
from flowtools.gating.methods.registry import MethodContext

__all__: list[str] = []

_MAD_SD = 1.482602218505602  # MAD -> standard deviation of a normal


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
    if not finite.all():  # rows are selected only when some value is not finite
        x = x[finite.all(axis=1)]
    if x.shape[0] < min_n:
        what = "no events" if x.shape[0] == 0 else f"only {x.shape[0]} finite event(s)"
        raise _fail(ctx, method, f"{what} in the parent population (need at least {min_n})")
    return np.ascontiguousarray(x)


def _quantiles_sorted(s: np.ndarray, q: np.ndarray, unsorted: np.ndarray | None = None) -> np.ndarray:
    """``np.quantile(s, q)`` (method "linear") of an ascending, NaN-free 1-D array, bit for bit.

    On sorted input the order statistics are lookups (np.quantile partitions at every
    position, sorted or not). The interpolation repeats numpy's own steps: virtual index
    ``(n - 1) * q``, floor and next (the last value at or above ``n - 1``), gamma = the
    fractional part, and numpy's ``_lerp`` (``a + (b - a) * g``, or ``b - (b - a) * (1 - g)``
    when ``g >= 0.5``). Empty input, NaN and zeros of both signs go to np.quantile itself, of
    ``unsorted`` when given (the array ``s`` was sorted from: which of -0.0 and 0.0 numpy's
    partition picks depends on the input order). Zeros of one sign are like any other tie:
    every order statistic has the same bits whatever the order. The signs are read from
    ``unsorted`` when given, as np.sort may turn 0.0 into -0.0 when both occur.
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


_RADIX_MIN = 4096
"""Values from which the radix kernels sort faster than numpy (below, their tables cost more)."""


def _sorted(v: np.ndarray) -> np.ndarray:
    """``np.sort`` of a 1-D float64 array (by the radix argsort of :mod:`._sort_kernels` on large ones)."""
    if v.shape[0] < _RADIX_MIN:
        return np.sort(v)
    v = np.ascontiguousarray(v, dtype=np.float64)
    return v[_argsorted(v)]


def _argsorted(v: np.ndarray) -> np.ndarray:
    """An ascending order of a 1-D float64 array (ties in any order; stable on large ones)."""
    if v.shape[0] < _RADIX_MIN:
        return np.argsort(v)
    from flowtools.gating.methods import _sort_kernels

    return _sort_kernels.argsort_f64(np.ascontiguousarray(v, dtype=np.float64))


def _median(v: np.ndarray) -> float:
    """The median of a non-empty 1-D array (NaN if any value is NaN)."""
    return float(np.median(v))


def _robust_center_scale(v: np.ndarray) -> tuple[float, float]:
    """The median and the MAD scaled to a normal's standard deviation."""
    med = _median(v)
    return med, _MAD_SD * _median(np.abs(v - med))


def _subsample(x: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """At most ``limit`` rows of ``x``, drawn without replacement from ``seed``, in their original order."""
    if x.shape[0] <= limit:
        return x
    idx = np.random.default_rng(seed).choice(x.shape[0], size=limit, replace=False)
    # the drawn rows in ascending row order (the sorted draw), read through a mask of the draw
    pick = np.zeros(x.shape[0], dtype=bool)
    pick[idx] = True
    return np.take(x, np.flatnonzero(pick), axis=0)
