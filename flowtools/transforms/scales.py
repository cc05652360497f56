"""Scale transforms of Gating-ML 2.0 and FlowJo, as frozen dataclasses.

Every transform maps data values (any float array, any shape; a 1-D channel or
one column) to float64 display values with ``apply`` and back with ``inverse``.
Parameters carry their Gating-ML names (``T``, ``W``, ``M``, ``A``) and are
checked when the object is built (``ValueError`` naming the rule broken).

Gating-ML 2.0 (section 6): :class:`LinearTransform` (flin), :class:`LogTransform`
(flog), :class:`AsinhTransform` (fasinh), :class:`LogicleTransform` (logicle),
:class:`HyperlogTransform` (hyperlog) and :class:`RatioTransform` (fratio).
FlowJo: :class:`FlowJoBiexTransform`, :class:`FlowJoLogTransform`,
:class:`FlowJoLinearTransform`.

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
from flowtools.transforms._params import biexponential, hyperlog_params, logicle_params, solve_d

__all__ = [
    "AsinhTransform",
    "FlowJoBiexTransform",
    "FlowJoLinearTransform",
    "FlowJoLogTransform",
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


# ----------------------------------------------------------------------------- FlowJo


def _biex_root(b: float, w: float) -> float:
    return solve_d(b, w)


@lru_cache(maxsize=32)
def _flowjo_biex_table(
    neg: float, width: float, pos: float, max_value: float, channels: int
) -> tuple[np.ndarray, np.ndarray]:
    """FlowJo's biex lookup table: data values at channels 0..channels (both increasing).

    FlowJo's algorithm as published in cytolib (``biexponential`` transform) and
    FlowKit's ``generate_biex_lut``: a logicle-type function on a grid of
    ``channels + 1`` points, its zero channel chosen from the decades.
    """
    width_decades = math.log10(-width)
    decades = pos - width_decades / 2.0
    extra = max(neg, 0.0) + width_decades / 2.0
    zero = int(extra * channels / (extra + decades))
    zero = int(min(zero, channels / 2))
    if zero > 0:
        decades = extra * channels / zero
    w = width_decades / (2.0 * decades)
    positive_range = LN10 * decades
    minimum = max_value / math.exp(positive_range)
    negative_range = _biex_root(positive_range, w)
    n = channels + 1
    i = np.arange(n, dtype=np.float64)
    positive = np.exp(i / n * positive_range)
    shift = math.exp((positive_range + negative_range) * (w + extra / decades))
    negative = np.exp(i / n * -negative_range) * shift
    values = np.empty(n)
    s = positive[zero] - negative[zero]
    values[zero:] = minimum * ((positive[zero:] - negative[zero:]) - s)
    values[:zero] = -values[2 * zero - np.arange(zero)]
    values.setflags(write=False)
    i.setflags(write=False)
    return values, i


@dataclass(frozen=True)
class FlowJoBiexTransform:
    """FlowJo's biex ("biexponential") transform, as FlowJo 10 computes it.

    The output is FlowJo's lookup-table channel, 0 .. 4096 (``CHANNELS``), as in
    FlowJo's exported tables and FlowKit's ``WSPBiexTransform``. Values between
    table points are interpolated linearly; values outside the table are
    clamped to its ends (as FlowJo and FlowKit do).

    Parameters
    ----------
    neg : float
        Extra negative decades (FlowJo "negative"), ``>= 0``.
    width : float
        FlowJo width basis, ``<= -1`` (e.g. -10, -100).
    pos : float
        Positive decades (FlowJo "positive"), ``> 0``.
    max_value : float
        Top of the data range (FlowJo ``maxRange``), ``> 0``.
    length : int
        FlowJo's ``length`` attribute; only 256 (the value FlowJo writes) is supported.
    """

    neg: float = 0.0
    width: float = -10.0
    pos: float = 4.418540
    max_value: float = 262144.000029
    length: int = 256

    CHANNELS: ClassVar[int] = 4096

    def __post_init__(self) -> None:
        _check_finite(neg=self.neg, width=self.width, pos=self.pos, max_value=self.max_value)
        if self.length != 256:
            msg = f"FlowJo biex supports length=256 only, got length={self.length}"
            raise ValueError(msg)
        if self.neg < 0:
            msg = f"FlowJo biex needs neg >= 0, got neg={self.neg}"
            raise ValueError(msg)
        if self.width > -1:
            msg = f"FlowJo biex needs width <= -1 (a negative width basis), got width={self.width}"
            raise ValueError(msg)
        if self.pos <= 0 or self.max_value <= 0:
            msg = (
                f"FlowJo biex needs pos > 0 and max_value > 0, got pos={self.pos}, "
                f"max_value={self.max_value}"
            )
            raise ValueError(msg)
        if math.log10(-self.width) / 2 >= self.pos:
            msg = f"FlowJo biex width {self.width} is too wide for pos={self.pos} decades"
            raise ValueError(msg)

    def table(self) -> tuple[np.ndarray, np.ndarray]:
        """The lookup table: (data values, channels), float64 (4097,) each, read-only."""
        return _flowjo_biex_table(
            float(self.neg), float(self.width), float(self.pos), float(self.max_value), self.CHANNELS
        )

    def apply(self, x) -> np.ndarray:
        """Data values to FlowJo channels 0..4096; float64, same shape as ``x``."""
        values, channels = self.table()
        arr = _as_float(x)
        return np.interp(arr.reshape(-1), values, channels).reshape(arr.shape)

    def inverse(self, y) -> np.ndarray:
        """FlowJo channels to data values (clamped to the table); float64."""
        values, channels = self.table()
        arr = _as_float(y)
        return np.interp(arr.reshape(-1), channels, values).reshape(arr.shape)


@dataclass(frozen=True)
class FlowJoLogTransform:
    """FlowJo's log transform: ``(log10(max(x, offset)) - log10(offset)) / decades``.

    Values below ``offset`` are clipped to it (so they map to 0), as FlowJo does.

    Parameters
    ----------
    offset : float
        Smallest data value shown, ``> 0``.
    decades : float
        Decades of the scale, ``> 0``; ``offset * 10**decades`` maps to 1.
    """

    offset: float = 1.0
    decades: float = 4.5

    def __post_init__(self) -> None:
        _check_finite(offset=self.offset, decades=self.decades)
        if self.offset <= 0 or self.decades <= 0:
            msg = (
                f"FlowJo log needs offset > 0 and decades > 0, got offset={self.offset}, "
                f"decades={self.decades}"
            )
            raise ValueError(msg)

    def apply(self, x) -> np.ndarray:
        """Data values to display values; float64, same shape as ``x``."""
        arr = np.maximum(_as_float(x), self.offset)
        return (np.log10(arr) - math.log10(self.offset)) / self.decades

    def inverse(self, y) -> np.ndarray:
        """Display values to data values (>= offset); float64."""
        with np.errstate(over="ignore"):
            return self.offset * np.power(10.0, _as_float(y) * self.decades)


@dataclass(frozen=True)
class FlowJoLinearTransform:
    """FlowJo's linear transform: ``(x - min_range) / (max_range - min_range)``.

    Equal to Gating-ML ``flin`` with ``T = max_range`` and ``A = -min_range``.
    (FlowKit builds ``flin(T=maxRange, A=minRange)`` instead; the two agree when
    ``min_range == 0``, FlowJo's usual value, and gate membership agrees always.)

    Parameters
    ----------
    min_range, max_range : float
        Data values shown at 0 and 1; ``min_range < max_range``.
    """

    min_range: float = 0.0
    max_range: float = 262144.0

    def __post_init__(self) -> None:
        _check_finite(min_range=self.min_range, max_range=self.max_range)
        if not self.min_range < self.max_range:
            msg = f"FlowJo linear needs min_range < max_range, got {self.min_range}, {self.max_range}"
            raise ValueError(msg)

    def apply(self, x) -> np.ndarray:
        """Data values to display values; float64, same shape as ``x``."""
        return (_as_float(x) - self.min_range) / (self.max_range - self.min_range)

    def inverse(self, y) -> np.ndarray:
        """Display values to data values; float64."""
        return _as_float(y) * (self.max_range - self.min_range) + self.min_range


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
