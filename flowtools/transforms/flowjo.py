"""FlowJo's own scales, as FlowJo 10 computes them (workspace transforms, not Gating-ML's).

:class:`FlowJoBiexTransform` (FlowJo's lookup-table biex, channels 0..4096),
:class:`FlowJoLogTransform` and :class:`FlowJoLinearTransform`; the same ``apply``/``inverse``
interface as the Gating-ML transforms of :mod:`flowtools.transforms.scales`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np

from flowtools.transforms._params import solve_d
from flowtools.transforms.scales import (
    LN10,
    _as_float,
    _check_finite,
)

__all__ = ["FlowJoBiexTransform", "FlowJoLinearTransform", "FlowJoLogTransform"]


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
