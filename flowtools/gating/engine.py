"""Evaluate a gating strategy on a sample: masks and counts per population.

Each compensation, each transformed dimension and each gate mask is computed
once per sample (the per-run cache lives here, not in the strategy); populations
are evaluated parents and references first, and a child's geometry is tested
only on its parent's events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flowtools.compensation import SpilloverMatrix
from flowtools.errors import ChannelError, GatingError
from flowtools.gating.gates import (
    FCS_COMPENSATION,
    UNCOMPENSATED,
    BooleanGate,
    Dimension,
    EllipsoidGate,
    PolygonGate,
    QuadrantGate,
    RectangleGate,
)
from flowtools.gating.strategy import GatingStrategy, Population
from flowtools.io.fcs import FCSSample

__all__ = ["GatingResult", "gate_events", "gate_sample"]

_ANY_ROWS = object()  # column_on without a population id: no lineage shortcut


@dataclass
class GatingResult:
    """Membership and counts of every population of a strategy in one sample.

    Attributes
    ----------
    strategy : GatingStrategy
    n_events : int
    masks : dict of str to ndarray of bool, shape (n_events,)
        Population id -> event membership (parents applied).
    sample_id : str or None
    """

    strategy: GatingStrategy
    n_events: int
    masks: dict[str, np.ndarray] = field(repr=False)
    sample_id: str | None = None

    def mask(self, population: str) -> np.ndarray:
        """Boolean membership of a population (parents applied)."""
        try:
            return self.masks[population]
        except KeyError:
            msg = f"no population {population!r}; populations are {list(self.masks)}"
            raise KeyError(msg) from None

    def count(self, population: str) -> int:
        """Number of events in a population."""
        return int(np.count_nonzero(self.mask(population)))

    def counts(self) -> dict[str, int]:
        """Population id -> count, in evaluation order."""
        return {pid: int(np.count_nonzero(m)) for pid, m in self.masks.items()}

    def rows(self) -> list[dict[str, Any]]:
        """One dict per population: population, path, parent, count, % of parent, % of total."""
        counts = self.counts()
        out = []
        s = self.strategy
        for pid in s.order:
            pop = s.population(pid)
            parent_n = counts[pop.parent] if pop.parent is not None else self.n_events
            n = counts[pid]
            out.append(
                {
                    "population": pid,
                    "path": s.path(pid),
                    "parent": pop.parent or "",
                    "count": n,
                    "pct_parent": 100.0 * n / parent_n if parent_n else float("nan"),
                    "pct_total": 100.0 * n / self.n_events if self.n_events else float("nan"),
                }
            )
        return out


class _Evaluator:
    """Per-sample cache of compensated matrices, dimension values and masks."""

    def __init__(
        self,
        strategy: GatingStrategy,
        events: np.ndarray,
        channels: Sequence[str],
        fcs_matrix: SpilloverMatrix | None,
        where: str,
        columns: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        self.s = strategy
        self.events = events
        # Scaled float64 values replacing some columns of ``events`` (see FCSSample.scaled_events);
        # never detectors of a matrix, so they pass through compensation unchanged.
        self.columns = dict(columns or {})
        self.channels = list(channels)
        self.fcs_matrix = fcs_matrix
        self.where = where
        self.n = events.shape[0]
        self._comp: dict[str, tuple[np.ndarray, dict[str, int]]] = {}
        self._cols: dict[tuple[Any, ...], np.ndarray] = {}
        # Transformed columns computed on some rows only: key -> mask of the rows done.
        self._partial: dict[tuple[Any, ...], np.ndarray] = {}
        # Populations on whose events each partial column is done, and population lineages.
        self._covered: dict[tuple[Any, ...], set[Any]] = {}
        self._lineages: dict[str | None, frozenset[str | None]] = {}
        self.masks: dict[str, np.ndarray] = {}

    # -- values ----------------------------------------------------------------------------------

    def _compensated(self, ref: str) -> tuple[np.ndarray, dict[str, int]]:
        if ref not in self._comp:
            matrix: SpilloverMatrix | None
            if ref == UNCOMPENSATED:
                matrix = None
            elif ref == FCS_COMPENSATION:
                matrix = self.fcs_matrix  # a file without a spillover keyword: FCS means uncompensated
            else:
                matrix = self.s.matrices[ref]
            if matrix is None:
                data, names = self.events, self.channels
            elif not matrix.is_spectral and matrix.fluorochromes == matrix.detectors:
                # one-pass kernel, column-major so every channel is a contiguous array
                data, names = matrix.apply(self.events, self.channels, order="F"), self.channels
            else:
                data, names = matrix.unmix(self.events, self.channels)
            self._comp[ref] = (data, {name: i for i, name in enumerate(names)})
        return self._comp[ref]

    def _base(self, compensation: str, name: str) -> np.ndarray:
        key = ("base", compensation, name)
        if key not in self._cols and name in self.columns:
            self._cols[key] = self.columns[name]
        if key not in self._cols:
            data, index = self._compensated(compensation)
            if name not in index:
                # A matrix's output keeps the detectors' raw columns only outside the matrix;
                # fall back to the uncompensated parameter for names the matrix does not cover.
                raw, raw_index = self._compensated(UNCOMPENSATED)
                if (
                    name in raw_index
                    and compensation != UNCOMPENSATED
                    and not self._is_detector(compensation, name)
                ):
                    self._cols[key] = raw[:, raw_index[name]]
                    return self._cols[key]
                msg = (
                    f"{self.where}: no parameter {name!r} (compensation {compensation!r}); "
                    f"available: {sorted(index)}"
                )
                raise ChannelError(msg, channel=name, available=tuple(index))
            # A strided view, not a copy: gates gather their rows from it, and transforms accept it.
            self._cols[key] = data[:, index[name]]
        return self._cols[key]

    def _is_detector(self, compensation: str, name: str) -> bool:
        m = self.fcs_matrix if compensation == FCS_COMPENSATION else self.s.matrices.get(compensation)
        return m is not None and name in m.detectors

    def _transformed(self, d: Dimension, rows: np.ndarray | None = None) -> np.ndarray:
        """Dimension values (the (compensated) parameter, ratio, then transform) of all events or of ``rows``."""
        def base(name: str) -> np.ndarray:
            # float64 before any arithmetic: uncompensated channels may be the file's float32 values.
            v = self._base(d.compensation, name)
            return np.asarray(v if rows is None else v[rows], dtype=np.float64)

        if d.ratio:
            ratio = self.s.transforms[d.name]
            values = ratio.transform.apply(base(ratio.numerator), base(ratio.denominator))
        else:
            values = base(d.name)
        if d.transform is not None:
            values = self.s.transforms[d.transform].apply(values)
        return np.asarray(values, dtype=np.float64)

    @staticmethod
    def _key(d: Dimension) -> tuple[Any, ...]:
        return ("dim", d.compensation, d.name, d.transform, d.ratio)

    def column(self, d: Dimension) -> np.ndarray:
        """Values of a gate dimension for all events (compensated, ratio, transformed as stated)."""
        key = self._key(d)
        if key not in self._cols:
            self._cols[key] = self._transformed(d)
        elif key in self._partial:  # complete a column computed on some rows only
            self._fill(d, key, ~self._partial.pop(key))
        return self._cols[key]

    def column_on(self, d: Dimension, rows: np.ndarray | None, rows_id: Any = _ANY_ROWS) -> np.ndarray:
        """Values of a gate dimension, valid at least on the events where ``rows`` is True.

        Transforms (the costly part: logicle solves an equation per value) run
        only on events no earlier call needed; deep populations cover a few
        percent of the events. Other entries of the returned array are
        unspecified: callers read only ``rows`` (the gate kernels test only
        their parent's events). ``rows=None`` is :meth:`column`. ``rows_id``,
        when given, names the population whose mask ``rows`` is: a column done
        on that population or an ancestor's events (a mask lies within its
        parent's) is returned without another pass over the events.
        """
        key = self._key(d)
        if rows is None or (d.transform is None and not d.ratio):
            return self.column(d)
        if key in self._cols and key not in self._partial:
            return self._cols[key]
        covered = self._covered.setdefault(key, set())
        if rows_id is not _ANY_ROWS:
            if not covered.isdisjoint(self._lineage(rows_id)):
                return self._cols[key]
            covered.add(rows_id)
        if key not in self._cols:
            if np.count_nonzero(rows) > 0.75 * self.n:  # nearly everything: skip the gather
                return self.column(d)
            self._cols[key] = np.empty(self.n, dtype=np.float64)
            self._partial[key] = np.zeros(self.n, dtype=np.bool_)
        done = self._partial[key]
        transform = self.s.transforms[d.transform] if d.transform is not None else None
        if not d.ratio and hasattr(transform, "apply_where"):
            # logicle/hyperlog: the masked kernel transforms rows not yet done in place (no gather/scatter)
            transform.apply_where(self._base_f64(d.compensation, d.name), np.ascontiguousarray(rows, dtype=np.bool_),
                                  done, self._cols[key])
            return self._cols[key]
        need = rows & ~done
        if need.any():
            self._fill(d, key, need)
            done |= need
        return self._cols[key]

    def _lineage(self, pid: str | None) -> frozenset[str | None]:
        """A population and its ancestors (None: all events)."""
        got = self._lineages.get(pid)
        if got is None:
            parent = self.s.population(pid).parent if pid is not None else None
            got = frozenset({pid}) | (self._lineage(parent) if pid is not None else frozenset())
            self._lineages[pid] = got
        return got

    def _base_f64(self, compensation: str, name: str) -> np.ndarray:
        """A parameter's (compensated) values as one contiguous float64 array (copied once if strided)."""
        col = self._base(compensation, name)
        if col.dtype == np.float64 and col.flags.c_contiguous:
            return col
        key = ("base64", compensation, name)
        if key not in self._cols:
            self._cols[key] = np.ascontiguousarray(col, dtype=np.float64)
        return self._cols[key]

    def _fill(self, d: Dimension, key: tuple[Any, ...], need: np.ndarray) -> None:
        idx = np.flatnonzero(need)
        if idx.size:
            self._cols[key][idx] = self._transformed(d, idx)

    def values(self, d: Dimension, rows: np.ndarray | None = None, rows_id: Any = _ANY_ROWS) -> np.ndarray:
        """One dimension's values, contiguous float64 (valid at least on ``rows``; see :meth:`column_on`)."""
        col = self.column_on(d, rows, rows_id)
        if col.flags.c_contiguous and col.dtype == np.float64:
            return col
        key = ("contiguous", *self._key(d))  # a strided channel of row-major events: copy it once
        if key not in self._cols:
            self._cols[key] = np.ascontiguousarray(col, dtype=np.float64)
        return self._cols[key]

    def matrix(self, dims: Sequence[Dimension], rows: np.ndarray | None = None, rows_key: Any = None) -> np.ndarray:
        """Values of several dimensions as a column-major (n_events, n_dims) array.

        With ``rows`` (a parent's mask), valid at least on those events; stacks are
        cached per sample under ``rows_key`` (the parent's id): quadrants of one
        gate share their dimensions and parent.
        """
        if len(dims) == 1:
            return self.values(dims[0], rows).reshape(-1, 1)  # a view, no copy
        key = ("stack", rows_key, *((d.compensation, d.name, d.transform, d.ratio) for d in dims))
        if key not in self._cols:
            stack = np.empty((self.n, len(dims)), dtype=np.float64, order="F")
            for j, d in enumerate(dims):
                stack[:, j] = self.column_on(d, rows)  # contiguous column copies
            self._cols[key] = stack
        return self._cols[key]

    # -- gates -----------------------------------------------------------------------------------

    def extend(self, strategy: GatingStrategy) -> dict[str, np.ndarray]:
        """Switch to a strategy that extends the current one and evaluate only its new populations.

        Used by template resolution, which adds gates one at a time; every
        cached compensation, column and mask is reused.
        """
        self.s = strategy
        return self.evaluate()

    def evaluate(self) -> dict[str, np.ndarray]:
        from flowtools.gating import _kernels as k  # numba: loaded on first evaluation only

        s, masks = self.s, self.masks
        for pid in s.order:  # no populations dict copy: extend() runs this once per added gate
            if pid in masks:
                continue
            pop = s.population(pid)
            parent = self.masks[pop.parent] if pop.parent is not None else None
            g = pop.gate
            if isinstance(g, BooleanGate):
                self.masks[pid] = self._boolean(g, parent)
                continue
            # Every kernel takes the parent mask: children are tested on their parent's events only,
            # with no gather or scatter of rows.
            self.masks[pid] = self._geometry(k, pop, parent)
        return self.masks

    def _geometry(self, k: Any, pop: Population, parent: np.ndarray | None) -> np.ndarray:
        g = pop.gate
        rk = pop.parent
        if isinstance(g, RectangleGate):
            lo = [-np.inf if v is None else float(v) for v in g.mins]
            hi = [np.inf if v is None else float(v) for v in g.maxs]
            return self._ranges(k, g.dimensions, lo, hi, parent, rk)
        if isinstance(g, PolygonGate):
            verts = np.array(g.vertices, dtype=np.float64)
            return k.polygon_mask(self.values(g.dimensions[0], parent, rk), self.values(g.dimensions[1], parent, rk),
                                  verts, parent=parent)
        if isinstance(g, EllipsoidGate):
            return k.ellipsoid_mask(self.matrix(g.dimensions, parent, rk), np.array(g.mean, dtype=np.float64),
                                    g.inverse_covariance, g.distance_square, parent=parent)
        if isinstance(g, QuadrantGate):
            quadrant = next(q for q in g.quadrants if q.id == pop.quadrant)
            bounds = g.bounds(quadrant)
            dims = [div.dimension for div, _, _ in bounds]
            return self._ranges(k, dims, [float(b[1]) for b in bounds], [float(b[2]) for b in bounds], parent, rk)
        msg = f"unsupported gate type {type(g).__name__}"
        raise GatingError(msg)

    def _ranges(self, k: Any, dims: Sequence[Dimension], lo: Sequence[float], hi: Sequence[float],
                parent: np.ndarray | None, parent_id: str | None) -> np.ndarray:
        """``lo <= v < hi`` on every dimension (hi = +inf open), within ``parent``.

        One pass per dimension over its column, no stacked copy (the rectangle rule:
        ``_kernels.range_and``).
        """
        out = np.empty(self.n, dtype=np.bool_)
        src = parent if parent is not None else np.ones(self.n, dtype=np.bool_)
        if not dims:
            out[:] = src
        for d, a, b in zip(dims, lo, hi, strict=True):
            k.range_and(self.values(d, parent, parent_id), a, b, src, out)
            src = out
        return out

    def _boolean(self, g: BooleanGate, parent: np.ndarray | None) -> np.ndarray:
        terms = [~self.masks[ref] if complement else self.masks[ref] for ref, complement in g.refs]
        if g.op == "not":
            out = ~terms[0]
        elif g.op == "and":
            out = np.logical_and.reduce(terms)
        else:
            out = np.logical_or.reduce(terms)
        return out & parent if parent is not None else out


def gate_events(
    strategy: GatingStrategy,
    events: np.ndarray,
    channels: Sequence[str],
    *,
    fcs_matrix: SpilloverMatrix | None = None,
    sample_id: str | None = None,
    columns: Mapping[str, np.ndarray] | None = None,
) -> GatingResult:
    """Evaluate a strategy on an event matrix of scale values.

    Parameters
    ----------
    strategy : GatingStrategy
    events : ndarray, shape (n_events, n_channels)
        Scale values (gain, log and time-step scaling applied; see
        :meth:`FCSSample.as_array` with ``preprocess=True``), uncompensated.
    channels : sequence of str
        ``$PnN`` of the columns.
    fcs_matrix : SpilloverMatrix, optional
        What compensation ``"FCS"`` means (the file's own matrix); None means
        the file has none, and ``"FCS"`` is then uncompensated.
    sample_id : str, optional
    columns : mapping of str to ndarray of float64, optional
        Scaled values that replace some channels of ``events`` (``$PnN`` -> column),
        for events whose other channels need no scaling (see
        :meth:`FCSSample.scaled_events`); never detectors of a matrix in use.

    Returns
    -------
    GatingResult

    Raises
    ------
    ChannelError
        A gate needs a parameter the events do not have.
    """
    x = np.asarray(events)
    if x.ndim != 2 or x.shape[1] != len(channels):
        msg = f"events of shape {x.shape} do not match {len(channels)} channel names"
        raise GatingError(msg)
    from flowtools.gating._blockwise import plan

    # Block-wise where it applies (bit-identical, faster, a few MB of working memory);
    # the whole-column evaluator otherwise, which also raises the errors of bad input.
    blocks = plan(strategy, x, channels, fcs_matrix, dict(columns or {}))
    if blocks is not None:
        return GatingResult(strategy, x.shape[0], blocks.run(), sample_id)
    ev = _Evaluator(strategy, x, channels, fcs_matrix, sample_id or "sample", dict(columns or {}))
    return GatingResult(strategy, x.shape[0], ev.evaluate(), sample_id)


def sample_events(
    strategy: GatingStrategy, sample: FCSSample, fcs_matrix: SpilloverMatrix | None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A sample's scaled events for an evaluator: the stored matrix plus scaled columns where possible.

    Channels that need scaling (time step, gain, log) may be replaced column-wise
    only when no matrix the strategy can use compensates them (see
    :meth:`FCSSample.scaled_events`).
    """
    detectors = set(fcs_matrix.detectors) if fcs_matrix is not None else set()
    for m in strategy.matrices.values():
        detectors.update(m.detectors)
    return sample.scaled_events(keep_raw=sorted(detectors))


def gate_sample(strategy: GatingStrategy, sample: FCSSample, *, sample_id: str | None = None) -> GatingResult:
    """Evaluate a strategy on an FCS sample (scale values; ``"FCS"`` = the file's own spillover)."""
    fcs_matrix = None
    if sample.spillover is not None and any(c == FCS_COMPENSATION for c, _ in strategy.channels_used()):
        fcs_matrix = SpilloverMatrix.from_fcs(sample)
    name = sample_id or (sample.path.name if sample.path is not None else None)
    events, columns = sample_events(strategy, sample, fcs_matrix)
    return gate_events(strategy, events, sample.pnn, fcs_matrix=fcs_matrix, sample_id=name, columns=columns)
