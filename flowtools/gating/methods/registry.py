"""The method registry: geometry types, typed arguments, :func:`register` and :func:`get_method`.

The built-in methods register themselves here when :mod:`flowtools.gating.methods` is imported;
this module imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flowtools.errors import GatingError

__all__ = [
    "ArgSpec",
    "Decision",
    "Ellipse",
    "Geometry",
    "Interval",
    "MethodContext",
    "MethodSpec",
    "Polygon",
    "REQUIRED",
    "Quadrants",
    "Rectangle",
    "TimeWindows",
    "get_method",
    "methods",
    "register",
]


# ------------------------------------------------------------------------------------------ geometry


@dataclass(frozen=True)
class Interval:
    """A 1-D range ``lo <= x < hi`` (None: open)."""

    lo: float | None
    hi: float | None


@dataclass(frozen=True)
class Rectangle:
    """An n-D box: ``los[i] <= x_i < his[i]`` (None: open)."""

    los: tuple[float | None, ...]
    his: tuple[float | None, ...]


@dataclass(frozen=True)
class Polygon:
    """A 2-D polygon (even-odd rule)."""

    vertices: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Ellipse:
    """``(x - mean)^T inv(covariance) (x - mean) <= distance_square``."""

    mean: tuple[float, ...]
    covariance: tuple[tuple[float, ...], ...]
    distance_square: float


@dataclass(frozen=True)
class Quadrants:
    """Cuts of a 2-D quadrant gate: four populations ``++``, ``-+``, ``--``, ``+-`` (x sign first)."""

    x_cut: float
    y_cut: float


@dataclass(frozen=True)
class TimeWindows:
    """Keep events whose value (time) lies in any of the ``[lo, hi)`` windows (a QC result)."""

    windows: tuple[tuple[float, float], ...]


Geometry = Interval | Rectangle | Polygon | Ellipse | Quadrants | TimeWindows


# ------------------------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class ArgSpec:
    """A typed method argument.

    Attributes
    ----------
    type : type
        ``float``, ``int``, ``str``, ``bool`` or ``tuple`` (a pair of floats).
    default : Any
        Default value; ``REQUIRED`` for a mandatory argument.
    lo, hi : float, optional
        Inclusive numeric bounds.
    choices : tuple, optional
        Allowed values for a ``str`` argument.
    doc : str
    """

    type: type
    default: Any = None
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] | None = None
    doc: str = ""

    def check(self, name: str, value: Any, where: str) -> Any:
        """Validate and convert ``value``; raise GatingError naming ``where`` and the argument."""
        t = self.type
        if t is bool:
            if not isinstance(value, bool):
                msg = f"{where}: argument {name!r} must be true or false, got {value!r}"
                raise GatingError(msg)
            return value
        if t is tuple:
            if not isinstance(value, list | tuple) or len(value) != 2:
                msg = f"{where}: argument {name!r} must be a pair [a, b], got {value!r}"
                raise GatingError(msg)
            return tuple(self._number(name, v, where, float) for v in value)
        if t in (int, float):
            return self._number(name, value, where, t)
        if t is str:
            if not isinstance(value, str):
                msg = f"{where}: argument {name!r} must be text, got {value!r}"
                raise GatingError(msg)
            if self.choices is not None and value not in self.choices:
                msg = f"{where}: argument {name!r} must be one of {list(self.choices)}, got {value!r}"
                raise GatingError(msg)
            return value
        return value

    def _number(self, name: str, value: Any, where: str, t: type) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            msg = f"{where}: argument {name!r} must be a number, got {value!r}"
            raise GatingError(msg)
        if t is int and not float(value).is_integer():
            msg = f"{where}: argument {name!r} must be an integer, got {value!r}"
            raise GatingError(msg)
        v = t(value)
        if not np.isfinite(v):
            msg = f"{where}: argument {name!r} must be finite, got {value!r}"
            raise GatingError(msg)
        if (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
            msg = f"{where}: argument {name!r}={value!r} is outside [{self.lo}, {self.hi}]"
            raise GatingError(msg)
        return v


REQUIRED = object()


@dataclass
class Decision:
    """How a data-driven gate was decided: what the method saw, chose and why (one per population).

    Methods fill ``details`` (peaks found with their heights, the valley chosen, components,
    ...) and ``fallback`` (which fallback was used and why) through :meth:`MethodContext.note`
    and :meth:`MethodContext.fall_back`; the resolver fills the rest.

    Attributes
    ----------
    method : str
    params : dict
        The method's arguments, defaults filled.
    details : dict
        Method-specific facts, plain JSON values.
    fallback : str or None
        The fallback that produced the gate and why; None when the method's main rule did.
    events_in : int or None
        Events the method was given (the parent's, or the pooled group's).
    events_kept : int or None
        Events of the sample in the resulting population (for quadrants: their sum).
    status : str
        ``"ok"``, ``"flagged"`` (kept, with a reason) or ``"failed"`` (no numbers).
    reasons : list of str
        Why flagged or failed.
    """

    method: str
    params: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    fallback: str | None = None
    events_in: int | None = None
    events_kept: int | None = None
    status: str = "ok"
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {"method": self.method, "params": _plain(self.params), "details": _plain(self.details),
                "fallback": self.fallback, "events_in": self.events_in, "events_kept": self.events_kept,
                "status": self.status, "reasons": list(self.reasons)}


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple | np.ndarray):
        return [_plain(x) for x in v]
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating | float):
        f = float(v)
        return f if np.isfinite(f) else None
    return v


@dataclass(frozen=True)
class MethodContext:
    """What a method may know besides the values.

    Attributes
    ----------
    population : str
        Full path of the population being resolved (for messages).
    dimensions : tuple of str
        Names of the value columns.
    ranges : tuple of (float, float)
        Per dimension, the instrument's range on the same (transformed) scale:
        ``(transform(0), transform($PnR))`` or the data range when unknown.
    seed : int
        Seed for any randomness (fixed by default: results are reproducible).
    decision : Decision or None
        Where the method records how it decided (:meth:`note`, :meth:`fall_back`); None when
        nobody asks (a method then records nothing).
    kinds : tuple of str
        Per dimension, what it measures (``"time"``, ``"scatter"``, ``"fluorescence"``,
        ``"other"``; :mod:`flowtools.io.channels`); empty when unknown.
    """

    population: str
    dimensions: tuple[str, ...]
    ranges: tuple[tuple[float, float], ...]
    seed: int = 0
    decision: Decision | None = field(default=None, compare=False)
    kinds: tuple[str, ...] = ()

    def note(self, **details: Any) -> None:
        """Record facts of the decision (plain values: numbers, text, lists of them)."""
        if self.decision is not None:
            self.decision.details.update(details)

    def fall_back(self, what: str) -> None:
        """Record that a fallback produced the gate, and why (e.g. "one peak: upper tail at 1%")."""
        if self.decision is not None:
            self.decision.fallback = what


MethodFn = Callable[..., Geometry]


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its function, number of dimensions and argument specs."""

    name: str
    fn: MethodFn
    dims: tuple[int, ...]
    args: dict[str, ArgSpec] = field(default_factory=dict)
    doc: str = ""

    def check_args(self, args: dict[str, Any], where: str) -> dict[str, Any]:
        """Validate arguments against the specs; fill defaults; raise GatingError naming ``where``."""
        unknown = sorted(set(args) - set(self.args))
        if unknown:
            msg = f"{where}: method {self.name!r} has no argument(s) {unknown}; it takes {sorted(self.args)}"
            raise GatingError(msg)
        out = {}
        for name, spec in self.args.items():
            if name in args:
                out[name] = spec.check(name, args[name], where)
            elif spec.default is REQUIRED:
                msg = f"{where}: method {self.name!r} needs argument {name!r}"
                raise GatingError(msg)
            else:
                out[name] = spec.default
        return out


_REGISTRY: dict[str, MethodSpec] = {}


def register(name: str, *, dims: int | tuple[int, ...], args: dict[str, ArgSpec] | None = None) -> Callable[
    [MethodFn], MethodFn
]:
    """Register a gating method under ``name`` (decorator).

    Parameters
    ----------
    name : str
    dims : int or tuple of int
        Number(s) of dimensions the method accepts.
    args : dict of str to ArgSpec
    """

    def deco(fn: MethodFn) -> MethodFn:
        if name in _REGISTRY:
            msg = f"gating method {name!r} is already registered"
            raise GatingError(msg)
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        ndims = (dims,) if isinstance(dims, int) else tuple(dims)
        _REGISTRY[name] = MethodSpec(name, fn, ndims, dict(args or {}), doc)
        return fn

    return deco


def get_method(name: str) -> MethodSpec:
    """The registered method of that name (GatingError listing the known ones otherwise)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        msg = f"unknown gating method {name!r}; known methods: {sorted(_REGISTRY)}"
        raise GatingError(msg) from None


def methods() -> dict[str, MethodSpec]:
    """All registered methods."""
    return dict(_REGISTRY)

