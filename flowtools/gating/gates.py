"""Gates as plain, frozen data: dimensions plus geometry, no evaluation and no file formats.

Semantics follow Gating-ML 2.0:

* a **dimension** names an FCS parameter (``$PnN``) or, for a compensated
  dimension, a fluorochrome of a spectrum matrix; ``compensation`` is
  ``"uncompensated"``, ``"FCS"`` (the file's own spillover) or the id of a
  matrix in the strategy; ``transform`` is the id of a transformation applied
  to the values before the gate's coordinates are compared; ``ratio`` marks a
  "new dimension" whose ``name`` is the id of an ``fratio`` transformation;
* rectangle bounds include the minimum and exclude the maximum (``None`` is
  open); polygons use the even-odd rule; ellipsoids include their boundary
  (``d^2 <= distance_square``); quadrant intervals include their lower divider
  and exclude their upper one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flowtools.errors import GatingError

__all__ = [
    "BooleanGate",
    "Dimension",
    "EllipsoidGate",
    "Gate",
    "PolygonGate",
    "Quadrant",
    "QuadrantDivider",
    "QuadrantGate",
    "RatioDefinition",
    "RectangleGate",
]

UNCOMPENSATED = "uncompensated"
FCS_COMPENSATION = "FCS"


@dataclass(frozen=True)
class Dimension:
    """One axis of a gate.

    Attributes
    ----------
    name : str
        ``$PnN`` of the parameter, a fluorochrome of the compensation matrix, or
        (with ``ratio``) the id of a ratio transformation.
    compensation : str
        ``"uncompensated"``, ``"FCS"`` or a spillover matrix id.
    transform : str or None
        Id of the transformation applied to the values (None: scale values).
    ratio : bool
        True for a Gating-ML ``new-dimension`` defined by an ``fratio``.
    """

    name: str
    compensation: str = UNCOMPENSATED
    transform: str | None = None
    ratio: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            msg = "a gate dimension needs a name"
            raise GatingError(msg)


def _finite(values: tuple[float, ...], what: str, gate_id: str) -> None:
    if not all(math.isfinite(v) for v in values):
        msg = f"gate {gate_id!r}: {what} must be finite numbers, got {values}"
        raise GatingError(msg)


@dataclass(frozen=True)
class RectangleGate:
    """An n-dimensional rectangle; a 1-D one with an open side is a range gate.

    ``mins[i] <= x_i < maxs[i]`` for every dimension; ``None`` is unbounded.
    """

    id: str
    dimensions: tuple[Dimension, ...]
    mins: tuple[float | None, ...]
    maxs: tuple[float | None, ...]
    parent: str | None = None

    def __post_init__(self) -> None:
        n = len(self.dimensions)
        if n == 0 or len(self.mins) != n or len(self.maxs) != n:
            msg = f"rectangle gate {self.id!r}: needs one min and one max (or None) per dimension"
            raise GatingError(msg)
        for lo, hi, d in zip(self.mins, self.maxs, self.dimensions, strict=True):
            if lo is None and hi is None:
                msg = f"rectangle gate {self.id!r}: dimension {d.name!r} has neither min nor max"
                raise GatingError(msg)
            if lo is not None and hi is not None and not lo <= hi:
                msg = f"rectangle gate {self.id!r}: min {lo} > max {hi} on {d.name!r}"
                raise GatingError(msg)
            if (lo is not None and math.isnan(lo)) or (hi is not None and math.isnan(hi)):
                msg = f"rectangle gate {self.id!r}: NaN bound on {d.name!r}"
                raise GatingError(msg)


@dataclass(frozen=True)
class PolygonGate:
    """A polygon in two dimensions (even-odd rule; self-intersecting allowed)."""

    id: str
    dimensions: tuple[Dimension, Dimension]
    vertices: tuple[tuple[float, float], ...]
    parent: str | None = None

    def __post_init__(self) -> None:
        if len(self.dimensions) != 2:
            msg = f"polygon gate {self.id!r}: needs exactly 2 dimensions, got {len(self.dimensions)}"
            raise GatingError(msg)
        if len(self.vertices) < 3 or any(len(v) != 2 for v in self.vertices):
            msg = f"polygon gate {self.id!r}: needs at least 3 vertices of 2 coordinates"
            raise GatingError(msg)
        _finite(tuple(c for v in self.vertices for c in v), "vertices", self.id)


@dataclass(frozen=True)
class EllipsoidGate:
    """An n-dimensional ellipsoid: ``(x - mean)^T inv(covariance) (x - mean) <= distance_square``."""

    id: str
    dimensions: tuple[Dimension, ...]
    mean: tuple[float, ...]
    covariance: tuple[tuple[float, ...], ...]
    distance_square: float
    parent: str | None = None

    def __post_init__(self) -> None:
        n = len(self.dimensions)
        if (
            n < 1
            or len(self.mean) != n
            or len(self.covariance) != n
            or any(len(r) != n for r in self.covariance)
        ):
            msg = f"ellipsoid gate {self.id!r}: mean and covariance must match {n} dimensions"
            raise GatingError(msg)
        _finite(self.mean, "mean", self.id)
        _finite(tuple(c for r in self.covariance for c in r), "covariance", self.id)
        if not (math.isfinite(self.distance_square) and self.distance_square > 0):
            msg = f"ellipsoid gate {self.id!r}: distance_square must be positive, got {self.distance_square}"
            raise GatingError(msg)
        cov = np.array(self.covariance, dtype=np.float64)
        # Gating-ML uses inv(covariance) as given: the compliance suite's Ellipsoid3D is not even
        # symmetric, so only invertibility is required.
        if np.linalg.matrix_rank(cov) < n:
            msg = f"ellipsoid gate {self.id!r}: covariance must be invertible"
            raise GatingError(msg)

    @property
    def inverse_covariance(self) -> np.ndarray:
        """``inv(covariance)``, shape (n, n)."""
        return np.linalg.inv(np.array(self.covariance, dtype=np.float64))


@dataclass(frozen=True)
class QuadrantDivider:
    """A divider of a quadrant gate: one dimension cut at one or more values."""

    id: str
    dimension: Dimension
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.values:
            msg = f"quadrant divider {self.id!r} needs at least one value"
            raise GatingError(msg)
        _finite(self.values, "divider values", self.id)

    def interval(self, location: float) -> tuple[float, float]:
        """The ``[lower, upper)`` interval between dividing values that contains ``location``."""
        cuts = sorted(self.values)
        lo, hi = -math.inf, math.inf
        for c in cuts:
            if location >= c:
                lo = c
            else:
                hi = c
                break
        return lo, hi


@dataclass(frozen=True)
class Quadrant:
    """One named region of a quadrant gate: per divider it uses, a location inside the wanted interval."""

    id: str
    positions: tuple[tuple[str, float], ...]  # (divider id, location)


@dataclass(frozen=True)
class QuadrantGate:
    """A quadrant gate: dividers and the named quadrants (each quadrant is a population)."""

    id: str
    dividers: tuple[QuadrantDivider, ...]
    quadrants: tuple[Quadrant, ...]
    parent: str | None = None

    def __post_init__(self) -> None:
        ids = {d.id for d in self.dividers}
        if len(ids) != len(self.dividers):
            msg = f"quadrant gate {self.id!r}: divider ids repeat"
            raise GatingError(msg)
        if not self.quadrants:
            msg = f"quadrant gate {self.id!r}: defines no quadrant"
            raise GatingError(msg)
        for q in self.quadrants:
            for ref, _loc in q.positions:
                if ref not in ids:
                    msg = f"quadrant {q.id!r} of gate {self.id!r}: unknown divider {ref!r}"
                    raise GatingError(msg)

    def bounds(self, quadrant: Quadrant) -> list[tuple[QuadrantDivider, float, float]]:
        """``(divider, lower, upper)`` for each divider a quadrant constrains."""
        by_id = {d.id: d for d in self.dividers}
        return [(by_id[ref], *by_id[ref].interval(loc)) for ref, loc in quadrant.positions]


@dataclass(frozen=True)
class BooleanGate:
    """``and``/``or``/``not`` over other populations; each reference may be used as its complement."""

    id: str
    op: str
    refs: tuple[tuple[str, bool], ...] = field(default=())  # (population id, use as complement)
    parent: str | None = None

    def __post_init__(self) -> None:
        if self.op not in ("and", "or", "not"):
            msg = f"boolean gate {self.id!r}: operator must be and/or/not, got {self.op!r}"
            raise GatingError(msg)
        if self.op == "not" and len(self.refs) != 1:
            msg = f"boolean gate {self.id!r}: 'not' takes exactly one reference"
            raise GatingError(msg)
        if self.op != "not" and len(self.refs) < 2:
            msg = f"boolean gate {self.id!r}: '{self.op}' needs at least two references"
            raise GatingError(msg)


Gate = RectangleGate | PolygonGate | EllipsoidGate | QuadrantGate | BooleanGate


@dataclass(frozen=True)
class RatioDefinition:
    """A ratio dimension (Gating-ML ``fratio``): a ratio transform of two named parameters.

    Attributes
    ----------
    transform : RatioTransform
        ``A (x - B) / (y - C)`` (from :mod:`flowtools.transforms`).
    numerator, denominator : str
        Parameter names (``$PnN`` or fluorochromes), compensated as the
        dimension that uses the ratio says.
    """

    transform: Any
    numerator: str
    denominator: str

    @property
    def dimensions(self) -> tuple[str, str]:
        """``(numerator, denominator)``."""
        return (self.numerator, self.denominator)


def gate_dimensions(gate: Gate) -> tuple[Dimension, ...]:
    """Every dimension a gate reads (none for boolean gates)."""
    if isinstance(gate, QuadrantGate):
        return tuple(d.dimension for d in gate.dividers)
    if isinstance(gate, BooleanGate):
        return ()
    return gate.dimensions
