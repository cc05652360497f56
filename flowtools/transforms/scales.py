"""Scale transforms of Gating-ML 2.0 and FlowJo, as frozen dataclasses.

Every transform maps data values (any float array, any shape; a 1-D channel or
one column) to float64 display values with ``apply`` and back with ``inverse``.
Parameters carry their Gating-ML names (``T``, ``W``, ``M``, ``A``) and are
checked when the object is built (``ValueError`` naming the rule broken).

Gating-ML 2.0 (section 6): :class:`LinearTransform` (flin), :class:`LogTransform`
(flog), :class:`AsinhTransform` (fasinh), :class:`LogicleTransform` (logicle),
:class:`HyperlogTransform` (hyperlog) and :class:`RatioTransform` (fratio).
FlowJo's own scales are in :mod:`flowtools.transforms.flowjo`.

Logicle and hyperlog run as numba kernels (imported on first use, so that
``import flowtools.transforms`` loads no numba). ``exact=True`` solves each value
to full double precision (agrees with flowutils within 1e-15 on the display
scale); ``exact=False`` uses a lookup table with linear interpolation whose
error is below 2.5e-7 (see :mod:`flowtools.transforms._kernels`), tested below 1e-6.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np

from flowtools._config import NUM_THREADS
from flowtools.transforms._params import biexponential, hyperlog_params, logicle_params

__all__ = [
    "AsinhTransform",
    "HyperlogTransform",
    "LinearTransform",
    "LogTransform",
    "LogicleTransform",
    "RatioTransform",
    "estimate_logicle",
]

LN10 = math.log(10.0)
PARALLEL_MIN_SIZE = 200_000
"""``parallel=None`` runs the parallel kernels from this many values on."""


# ----------------------------------------------------------------------------- helpers


def _as_float(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _check_finite(**values: float) -> None:
    for name, value in values.items():
        if not isinstance(value, int | float | np.floating | np.integer) or isinstance(value, bool):
            msg = f"{name} must be a real number, got {value!r}"
            raise TypeError(msg)
        if not math.isfinite(value):
            msg = f"{name} must be finite, got {value!r}"
            raise ValueError(msg)


def _prepare(x, out: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Flat C-contiguous float64 input and output views (output checked when given)."""
    arr = np.ascontiguousarray(x, dtype=np.float64)
    shape = arr.shape
    if out is None:
        out = np.empty(shape, dtype=np.float64)
    elif out.dtype != np.float64 or out.shape != shape or not out.flags.c_contiguous:
        msg = f"out must be a C-contiguous float64 array of shape {shape}, got {out.dtype} {out.shape}"
        raise ValueError(msg)
    return arr.reshape(-1), out.reshape(-1), shape


def _use_parallel(n: int, *, parallel: bool | None) -> bool:
    if parallel is None:
        # The prange kernel only pays with more than one thread (one thread: the serial loop is faster).
        return n >= PARALLEL_MIN_SIZE and _threads() > 1
    return bool(parallel)


def _threads() -> int:
    import numba

    return int(numba.get_num_threads())


def _run(serial, par, *args, parallel: bool):
    if not parallel:
        return serial(*args)
    if NUM_THREADS is None:
        return par(*args)
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(min(NUM_THREADS, numba.config.NUMBA_NUM_THREADS))
    try:
        return par(*args)
    finally:
        numba.set_num_threads(before)


@lru_cache(maxsize=64)
def _biex_state(kind: str, T: float, W: float, M: float, A: float) -> tuple:
    """Packed constants and fast-path table of one logicle/hyperlog parameter set."""
    from flowtools.transforms import _kernels

    p = logicle_params(T, W, M, A) if kind == "logicle" else hyperlog_params(T, W, M, A)
    p.setflags(write=False)
    table = _kernels.make_table(p, T)
    table[0].setflags(write=False)
    return p, table


# ----------------------------------------------------------------------------- Gating-ML


@dataclass(frozen=True)
class LinearTransform:
    """Gating-ML 2.0 ``flin``: ``(x + A) / (T + A)``.

    Maps ``[-A, T]`` onto ``[0, 1]`` (defined for every real ``x``).

    Parameters
    ----------
    T : float
        Top of scale, ``T > 0``.
    A : float
        Bottom offset, ``0 <= A <= T``.

    Examples
    --------
    >>> LinearTransform(T=1000.0, A=0.0).apply([0.0, 500.0, 1000.0]).tolist()
    [0.0, 0.5, 1.0]
    """

    T: float
    A: float = 0.0

    def __post_init__(self) -> None:
        _check_finite(T=self.T, A=self.A)
        if self.T <= 0:
            msg = f"flin needs T > 0, got T={self.T}"
            raise ValueError(msg)
        if not 0 <= self.A <= self.T:
            msg = f"flin needs 0 <= A <= T, got A={self.A}, T={self.T}"
            raise ValueError(msg)

    def apply(self, x) -> np.ndarray:
        """Data values to display values; float64, same shape as ``x``."""
        return (_as_float(x) + self.A) / (self.T + self.A)

    def inverse(self, y) -> np.ndarray:
        """Display values to data values; float64, same shape as ``y``."""
        return _as_float(y) * (self.T + self.A) - self.A


@dataclass(frozen=True)
class LogTransform:
    """Gating-ML 2.0 ``flog``: ``log10(x / T) / M + 1``.

    Maps ``(0, T]`` onto ``(-inf, 1]`` with ``M`` decades in ``[0, 1]``. Zero
    gives ``-inf`` and negative values NaN (no warning is raised).

    Parameters
    ----------
    T : float
        Top of scale, ``T > 0``.
    M : float
        Decades, ``M > 0``.
    """

    T: float
    M: float

    def __post_init__(self) -> None:
        _check_finite(T=self.T, M=self.M)
        if self.T <= 0 or self.M <= 0:
            msg = f"flog needs T > 0 and M > 0, got T={self.T}, M={self.M}"
            raise ValueError(msg)

    def apply(self, x) -> np.ndarray:
        """Data values to display values; float64, same shape as ``x``."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log10(_as_float(x) / self.T) / self.M + 1.0

    def inverse(self, y) -> np.ndarray:
        """Display values to data values; float64, same shape as ``y``."""
        with np.errstate(over="ignore"):
            return self.T * np.power(10.0, (_as_float(y) - 1.0) * self.M)


@dataclass(frozen=True)
class AsinhTransform:
    """Gating-ML 2.0 ``fasinh``: ``(asinh(x sinh(M ln10) / T) + A ln10) / ((M + A) ln10)``.

    Parameters
    ----------
    T : float
        Top of scale, ``T > 0``.
    M : float
        Decades at the top of the scale, ``M > 0``.
    A : float
        Extra negative decades, ``A >= 0``.
    """

    T: float
    M: float
    A: float = 0.0

    def __post_init__(self) -> None:
        _check_finite(T=self.T, M=self.M, A=self.A)
        if self.T <= 0 or self.M <= 0:
            msg = f"fasinh needs T > 0 and M > 0, got T={self.T}, M={self.M}"
            raise ValueError(msg)
        if self.A < 0:
            msg = f"fasinh needs A >= 0, got A={self.A}"
            raise ValueError(msg)

    @property
    def _constants(self) -> tuple[float, float, float]:
        return math.sinh(self.M * LN10) / self.T, self.A * LN10, (self.M + self.A) * LN10

    def apply(self, x, *, parallel: bool | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """Data values to display values (numpy on one core, a numba kernel in parallel).

        Parameters
        ----------
        x : array_like of float
            Data values, any shape.
        parallel : bool or None
            True: the multi-threaded numba kernel. False or None: numpy in place
            (SIMD arcsinh; on 2 cores it beats the kernel).
        out : ndarray of float64, optional
            C-contiguous array of ``x``'s shape to write into.

        Returns
        -------
        ndarray of float64, same shape as ``x``
        """
        flat, res, shape = _prepare(x, out)
        scale, shift, divisor = self._constants
        if not parallel:  # None included: numpy's SIMD arcsinh is the faster default
            # one core: numpy's SIMD arcsinh, in place, beats the scalar libm call of the kernel
            np.multiply(flat, scale, out=res)
            np.arcsinh(res, out=res)
            res += shift
            res *= 1.0 / divisor
            return res.reshape(shape)
        from flowtools.transforms import _kernels

        _run(_kernels.asinh_serial, _kernels.asinh_parallel, flat, scale, shift, divisor, res, parallel=True)
        return res.reshape(shape)

    def inverse(self, y) -> np.ndarray:
        """Display values to data values; float64, same shape as ``y``."""
        scale, shift, divisor = self._constants
        with np.errstate(over="ignore"):
            return np.sinh(_as_float(y) * divisor - shift) / scale


class _Biexponential:
    """Shared apply/inverse of logicle and hyperlog (root of a biexponential)."""

    _kind: ClassVar[str]

    def _state(self) -> tuple:
        return _biex_state(self._kind, float(self.T), float(self.W), float(self.M), float(self.A))

    def apply(
        self,
        x,
        *,
        exact: bool = True,
        parallel: bool | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Data values to display values.

        Parameters
        ----------
        x : array_like of float
            Data values, any shape (a channel, or one column of an event matrix).
        exact : bool
            True: root finding to full double precision. False: lookup table
            with linear interpolation, error < 2.5e-7 (tested <= 1e-6) on the
            display scale.
        parallel : bool or None
            Use the multi-threaded kernel; None: when ``x`` has 200 000 values or more.
        out : ndarray of float64, optional
            C-contiguous array of ``x``'s shape to write into.

        Returns
        -------
        ndarray of float64, same shape as ``x``
            0 is data value 0 mapped to ``x1 = (W + A) / (M + A)``; ``T`` maps to 1.
            NaN stays NaN, +-inf stays +-inf.
        """
        from flowtools.transforms import _kernels

        flat, res, shape = _prepare(x, out)
        p, table = self._state()
        use = _use_parallel(flat.size, parallel=parallel)
        if exact:
            _run(_kernels.exact_serial, _kernels.exact_parallel, flat, p, *table, res, parallel=use)
        else:
            _run(_kernels.fast_serial, _kernels.fast_parallel, flat, p, *table, res, parallel=use)
        return res.reshape(shape)

    def apply_where(self, x: np.ndarray, need: np.ndarray, done: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Exact display values of ``x`` where ``need`` is set and ``done`` is not, in place.

        Serial. All four are 1-D C-contiguous arrays of one length: ``x`` and
        ``out`` float64, ``need`` and ``done`` bool; ``done`` is set where values
        were written, other entries of ``out`` are left as they are. Each value
        is bit-identical to :meth:`apply` (``exact=True``). Block-wise gating
        uses it to transform a dimension only on its gates' parent events.
        """
        from flowtools.transforms import _kernels

        p, table = self._state()
        return _kernels.exact_masked(x, p, *table, need, done, out)

    def inverse(self, y) -> np.ndarray:
        """Display values to data values (closed form); float64, same shape as ``y``."""
        p = (logicle_params if self._kind == "logicle" else hyperlog_params)(
            self.T, self.W, self.M, self.A
        )
        return biexponential(p, _as_float(y))


def _check_biex_params(name: str, T: float, W: float, M: float, A: float, *, w_positive: bool) -> None:
    _check_finite(T=T, W=W, M=M, A=A)
    if T <= 0:
        msg = f"{name} needs T > 0, got T={T}"
        raise ValueError(msg)
    if M <= 0:
        msg = f"{name} needs M > 0, got M={M}"
        raise ValueError(msg)
    if w_positive and W <= 0:
        msg = f"{name} needs W > 0, got W={W}"
        raise ValueError(msg)
    if W < 0:
        msg = f"{name} needs W >= 0, got W={W}"
        raise ValueError(msg)
    if 2 * W > M:
        msg = f"{name} needs W <= M/2, got W={W}, M={M}"
        raise ValueError(msg)
    if not -W <= A <= M - 2 * W:
        msg = f"{name} needs -W <= A <= M - 2W, got A={A} (W={W}, M={M})"
        raise ValueError(msg)


@dataclass(frozen=True)
class LogicleTransform(_Biexponential):
    """Gating-ML 2.0 ``logicle``: the root ``y`` of ``B(y, T, W, M, A) = x``.

    ``B(y) = a e^(b y) - c e^(-d y) - f`` (Moore & Parks 2012), odd about
    ``x1 = (W + A) / (M + A)``, which is where data zero lands; ``T`` maps to 1.

    Parameters
    ----------
    T : float
        Top of scale, ``T > 0``.
    W : float
        Linearisation width in decades, ``0 <= W <= M/2``.
    M : float
        Decades of the full scale, ``M > 0``.
    A : float
        Extra negative decades, ``-W <= A <= M - 2W``.

    Examples
    --------
    >>> xf = LogicleTransform(T=262144.0, W=0.5, M=4.5, A=0.0)
    >>> round(float(xf.apply([262144.0])[0]), 12)
    1.0
    """

    T: float
    W: float
    M: float
    A: float = 0.0
    _kind: ClassVar[str] = "logicle"

    def __post_init__(self) -> None:
        _check_biex_params("logicle", self.T, self.W, self.M, self.A, w_positive=False)


@dataclass(frozen=True)
class HyperlogTransform(_Biexponential):
    """Gating-ML 2.0 ``hyperlog``: the root ``y`` of ``EH(y, T, W, M, A) = x``.

    ``EH(y) = a e^(b y) + c y - f`` (Bagwell 2005), odd about ``x1``.

    Parameters
    ----------
    T : float
        Top of scale, ``T > 0``.
    W : float
        Linear-region width in decades, ``0 < W <= M/2``.
    M : float
        Decades, ``M > 0``.
    A : float
        Extra negative decades, ``-W <= A <= M - 2W``.
    """

    T: float
    W: float
    M: float
    A: float = 0.0
    _kind: ClassVar[str] = "hyperlog"

    def __post_init__(self) -> None:
        _check_biex_params("hyperlog", self.T, self.W, self.M, self.A, w_positive=True)


@dataclass(frozen=True)
class RatioTransform:
    """Gating-ML 2.0 ``fratio`` of two columns: ``A (x - B) / (y - C)``.

    Parameters
    ----------
    A, B, C : float
        Scale, numerator offset and denominator offset.
    """

    A: float
    B: float
    C: float

    def __post_init__(self) -> None:
        _check_finite(A=self.A, B=self.B, C=self.C)

    def apply(self, x, y) -> np.ndarray:
        """Ratio of numerator ``x`` and denominator ``y`` (same shape); float64.

        ``y == C`` gives +-inf (or NaN when also ``x == B``), without a warning.
        """
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.A * (_as_float(x) - self.B) / (_as_float(y) - self.C)

    def inverse(self, r, y) -> np.ndarray:
        """Numerator values from ratios ``r`` and denominator values ``y``; float64."""
        return _as_float(r) * (_as_float(y) - self.C) / self.A + self.B


# ----------------------------------------------------------------------------- estimation


def estimate_logicle(
    data,
    *,
    T: float | None = None,
    M: float = 4.5,
    A: float = 0.0,
    quantile: float = 0.05,
) -> LogicleTransform:
    """Logicle parameters from data, as flowCore's ``estimateLogicle``.

    ``W = (M - log10(T / |r|)) / 2`` where ``r`` is the ``quantile`` quantile of
    the negative values (plus machine epsilon, as flowCore); ``W = 0`` when there
    are no negative values. flowCore stops when ``W`` is negative or above
    ``M/2``; here a negative ``W`` (negatives tinier than ``T 10**-M``) is
    clamped to 0, and ``W > M/2`` raises.

    Parameters
    ----------
    data : array_like of float
        One channel's values (NaN ignored).
    T : float, optional
        Top of scale: the channel range (``$PnR``) when known; default the data maximum.
    M : float
        Decades, default 4.5.
    A : float
        Extra negative decades, default 0.
    quantile : float
        Quantile of the negative values that sets ``W``, in ``(0, 1)``; default 0.05.

    Returns
    -------
    LogicleTransform

    Raises
    ------
    ValueError
        No finite data, ``T <= 0``, or the negative tail is too wide for ``M``.
    """
    arr = _as_float(data).reshape(-1)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        msg = "estimate_logicle needs at least one finite value"
        raise ValueError(msg)
    if not 0 < quantile < 1:
        msg = f"quantile must be in (0, 1), got {quantile}"
        raise ValueError(msg)
    top = float(arr.max()) if T is None else float(T)
    if top <= 0:
        msg = f"estimate_logicle needs T > 0 (data maximum or channel range), got {top}"
        raise ValueError(msg)
    negatives = arr[arr < 0]
    W = 0.0
    if negatives.size:
        r = np.finfo(np.float64).eps + float(np.quantile(negatives, quantile))
        W = (M - math.log10(top / abs(r))) / 2.0
        if W > M / 2:
            msg = f"estimated W={W:.4g} exceeds M/2={M / 2}; set a lower T or a higher M"
            raise ValueError(msg)
        W = max(W, 0.0)
    return LogicleTransform(T=top, W=W, M=M, A=A)
