"""The one mask evaluator: a gating strategy compiled against one sample's layout.

A :class:`Plan` turns every population of a strategy into an operation (ranges
for rectangles and quadrants, polygon, ellipsoid, boolean) that reads
dimension values and writes the population's mask, children tested on their
parent's events only. It runs in one of two modes:

* **blocks** (``block_rows`` below the number of events): rows are processed
  in blocks (16,384 by default). Per block, one pass over the stored events
  extracts the columns the gates read, compensating only the detectors they
  need; every buffer is allocated once and reused, so the working memory beyond
  the events and the output masks is a few MB whatever the file size. This is
  what :func:`~flowtools.gating.engine.gate_events` uses.
* **whole columns** (``block_rows=None``): one block of every event, whose
  values are kept. Values can then be read (:meth:`Plan.column`,
  :meth:`Plan.column_on`: method inputs, MFIs, plot values) and populations
  added to a running plan (:meth:`Plan.extend`: template resolution adds gates
  one at a time, reusing every column and mask). Spectral and
  fluorochrome-named matrices always run in this mode.

Both modes give bit-identical masks and values: the same compensation sums in
the same order (``_kernels.extract_columns``, equal to
``compensation._kernels.compensate_rows``), the same transform per value
(``apply_where`` of logicle/hyperlog is bit-identical to ``apply``), the same
gate kernels and edge rules. A transformed dimension is computed only on the
events of the parents of the gates that read it: a population's mask lies
within its parent's, so values done on an ancestor's events cover it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
from flowtools.gating.strategy import GatingStrategy

__all__ = ["BLOCK_ROWS", "Plan"]

BLOCK_ROWS = 16_384
"""Rows per block: the block's float64 columns (128 KiB each) stay in a core's L2 cache.
On the 200k-event benchmark files, 8k-16k rows per block were fastest; 64k was 10-20% slower,
whole files 40-65% (CPU time, in-process, on a loaded 2-core machine)."""

_ANY_ROWS = object()  # column_on without a population id: no lineage shortcut


class _WholeColumns(Exception):  # noqa: N818 - control flow, never leaves this module
    """The strategy needs whole columns (a spectral or fluorochrome-named matrix)."""


def _dim_key(d: Dimension) -> tuple[Any, ...]:
    return (d.compensation, d.name, d.transform, d.ratio)


class Plan:
    """A gating strategy compiled against one sample's events, channels, matrix and scaled columns.

    Parameters
    ----------
    strategy : GatingStrategy
    events : ndarray, shape (n_events, n_channels)
        Scale values, uncompensated (any numeric dtype; float32/float64 are used as stored).
    channels : sequence of str
        ``$PnN`` of the columns.
    fcs_matrix : SpilloverMatrix, optional
        What compensation ``"FCS"`` means (the file's own matrix); None: ``"FCS"`` is uncompensated.
    columns : mapping of str to ndarray of float64, optional
        Scaled values that replace some channels of ``events`` (never detectors of a matrix in use).
    where : str, default "sample"
        Names the sample in error messages.
    block_rows : int, optional
        Rows per block; None (or at least the number of events) keeps whole columns, which
        :meth:`column`, :meth:`column_on` and :meth:`extend` need.

    Raises
    ------
    ChannelError
        A gate reads a parameter the events do not have.
    CompensationError
        A matrix's detectors are not among the channels.

    Notes
    -----
    Compiling checks every parameter; :meth:`run` computes the masks.
    """

    def __init__(
        self,
        strategy: GatingStrategy,
        events: np.ndarray,
        channels: Sequence[str],
        fcs_matrix: SpilloverMatrix | None = None,
        columns: Mapping[str, np.ndarray] | None = None,
        *,
        where: str = "sample",
        block_rows: int | None = None,
    ) -> None:
        x = np.asarray(events)
        if x.ndim != 2 or x.shape[1] != len(channels):
            msg = f"{where}: events of shape {x.shape} do not match {len(channels)} channel names"
            raise GatingError(msg)
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float64)  # integer (or other) storage: exact in float64
        elif not x.dtype.isnative:
            x = x.astype(x.dtype.newbyteorder("="))
        self.events = np.ascontiguousarray(x)
        self.n = int(x.shape[0])
        self.channels = list(channels)
        self.channel_index = {name: i for i, name in enumerate(self.channels)}
        self.fcs_matrix = fcs_matrix
        self.where = where
        self.columns = {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in (columns or {}).items()}
        self.whole = block_rows is None or block_rows >= self.n
        self._block_rows = block_rows
        try:
            self._start(strategy)
        except _WholeColumns:
            self.whole = True
            self._start(strategy)

    # -- compilation -----------------------------------------------------------------------------

    def _start(self, strategy: GatingStrategy) -> None:
        self.block = self.n if self.whole else max(1, int(self._block_rows or 1))
        self.s = strategy
        self.groups: dict[str, dict[str, Any]] = {}  # blocks: compensation ref -> extraction group
        self.bases: dict[tuple[str, str], tuple[str, Any, int]] = {}
        self.dims: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.lineage: dict[str | None, frozenset[str | None]] = {None: frozenset({None})}
        self.masks: dict[str, np.ndarray] = {}
        self._store: dict[tuple[Any, ...], Any] = {}  # whole columns: raw, compensated, unmixed values
        self._pending = self._compile(strategy.order)
        if not self.whole:
            self._finish_groups()

    def _compile(self, pids: Sequence[str]) -> list[tuple[str, str, Any]]:
        ops: list[tuple[str, str, Any]] = []
        for pid in pids:
            pop = self.s.population(pid)
            g = pop.gate
            if isinstance(g, BooleanGate):
                ops.append(("boolean", pid, g))
            elif isinstance(g, RectangleGate):
                ranges = [
                    (self._dim(d), -np.inf if lo is None else float(lo), np.inf if hi is None else float(hi))
                    for d, lo, hi in zip(g.dimensions, g.mins, g.maxs, strict=True)
                ]
                ops.append(("ranges", pid, ranges))
            elif isinstance(g, QuadrantGate):
                quadrant = next(q for q in g.quadrants if q.id == pop.quadrant)
                ranges = [
                    (self._dim(div.dimension), float(lo), float(hi)) for div, lo, hi in g.bounds(quadrant)
                ]
                ops.append(("ranges", pid, ranges))
            elif isinstance(g, PolygonGate):
                v = np.array(g.vertices, dtype=np.float64)
                spec = (
                    self._dim(g.dimensions[0]),
                    self._dim(g.dimensions[1]),
                    np.ascontiguousarray(v[:, 0]),
                    np.ascontiguousarray(v[:, 1]),
                )
                ops.append(("polygon", pid, spec))
            elif isinstance(g, EllipsoidGate):
                spec = (
                    [self._dim(d) for d in g.dimensions],
                    np.ascontiguousarray(g.mean, dtype=np.float64),
                    np.ascontiguousarray(g.inverse_covariance, dtype=np.float64),
                    float(g.distance_square),
                )
                ops.append(("ellipsoid", pid, spec))
            else:
                msg = f"unsupported gate type {type(g).__name__}"
                raise GatingError(msg)
            self.lineage[pid] = self.lineage[pop.parent] | {pid}
        return ops

    def _matrix(self, ref: str) -> SpilloverMatrix | None:
        if ref == UNCOMPENSATED:
            return None
        if ref == FCS_COMPENSATION:
            return self.fcs_matrix  # a file without a spillover keyword: FCS means uncompensated
        return self.s.matrices[ref]

    def _missing(self, name: str, compensation: str, available: Sequence[str]) -> ChannelError:
        msg = (
            f"{self.where}: no parameter {name!r} (compensation {compensation!r}); "
            f"available: {sorted(available)}"
        )
        return ChannelError(msg, channel=name, available=tuple(available))

    def _base(self, compensation: str, name: str) -> tuple[str, Any, int]:
        """Where a (compensated) parameter's values come from: ``(kind, where, index)``."""
        key = (compensation, name)
        if key in self.bases:
            return self.bases[key]
        if name in self.columns:  # scaled column (Time): never a detector, the same under every matrix
            src: tuple[str, Any, int] = ("column", self.columns[name], 0)
        else:
            matrix = self._matrix(compensation)
            square = (
                matrix is not None
                and not matrix.is_spectral
                and tuple(matrix.fluorochromes) == tuple(matrix.detectors)
            )
            if matrix is not None and not square:
                src = self._unmixed_base(compensation, matrix, name)
            else:
                if name not in self.channel_index:
                    raise self._missing(name, compensation, self.channels)
                ref = compensation if matrix is not None else UNCOMPENSATED
                if matrix is not None:
                    matrix.channel_indices(self.channels)  # CompensationError names missing detectors
                det = matrix.detectors.index(name) if matrix is not None and name in matrix.detectors else -1
                if self.whole:
                    src = ("det", ref, det) if det >= 0 else ("raw", None, self.channel_index[name])
                else:
                    grp = self._group(ref, matrix)
                    grp["dets"].append(det)
                    grp["raws"].append(-1 if det >= 0 else self.channel_index[name])
                    src = ("extract", ref, len(grp["dets"]) - 1)
        self.bases[key] = src
        return src

    def _unmixed_base(self, ref: str, matrix: SpilloverMatrix, name: str) -> tuple[str, Any, int]:
        # Least-squares unmixing (or fluorochrome-named outputs): whole columns only.
        if not self.whole:
            raise _WholeColumns
        key = ("unmixed", ref)
        if key not in self._store:
            data, names = matrix.unmix(self.events, self.channels)
            self._store[key] = (data, {nm: i for i, nm in enumerate(names)})
        _, index = self._store[key]
        if name in index:
            return ("unmixed", ref, index[name])
        if name in self.channel_index and name not in matrix.detectors:
            return ("raw", None, self.channel_index[name])  # a parameter the matrix does not cover
        raise self._missing(name, ref, list(index))

    def _group(self, ref: str, matrix: SpilloverMatrix | None) -> dict[str, Any]:
        if ref not in self.groups:
            if matrix is None:
                idx = np.zeros(0, dtype=np.intp)
                unmix = np.zeros((0, 0), dtype=np.float64)
            else:
                idx = np.ascontiguousarray(matrix.channel_indices(self.channels), dtype=np.intp)
                unmix = np.ascontiguousarray(matrix.unmixing, dtype=np.float64)
            self.groups[ref] = {"idx": idx, "unmix": unmix, "dets": [], "raws": []}
        return self.groups[ref]

    def _dim(self, d: Dimension) -> tuple[Any, ...]:
        key = _dim_key(d)
        if key in self.dims:
            return key
        transform = self.s.transforms[d.transform] if d.transform is not None else None
        if d.ratio:
            ratio = self.s.transforms[d.name]
            spec = {
                "kind": "full",
                "ratio": ratio.transform,
                "inputs": (
                    self._base(d.compensation, ratio.numerator),
                    self._base(d.compensation, ratio.denominator),
                ),
            }
        else:
            src = self._base(d.compensation, d.name)
            if transform is None:
                spec = {"kind": "base", "src": src}
            elif hasattr(transform, "apply_where"):
                spec = {"kind": "masked", "src": src}
            else:
                spec = {"kind": "full", "ratio": None, "inputs": (src,)}
        spec["transform"] = transform
        if spec["kind"] != "base":
            spec["buf"] = np.empty(self.block, dtype=np.float64)
            spec["fresh"] = False
        if spec["kind"] == "masked":
            spec["done"] = np.zeros(self.block, dtype=np.bool_)
            spec["covered"] = set()
        self.dims[key] = spec
        return key

    def _finish_groups(self) -> None:
        for grp in self.groups.values():
            grp["dets"] = np.ascontiguousarray(grp["dets"], dtype=np.intp)
            grp["raws"] = np.ascontiguousarray(grp["raws"], dtype=np.intp)
            grp["out"] = np.empty((self.block, len(grp["dets"])), dtype=np.float64, order="F")

    # -- values ----------------------------------------------------------------------------------

    def _whole(self, kind: str, where: Any, o: int) -> np.ndarray:
        """A whole column of raw, compensated or unmixed values (computed once, contiguous float64)."""
        if kind == "raw":
            key: tuple[Any, ...] = ("raw", o)
            if key not in self._store:
                self._store[key] = np.ascontiguousarray(self.events[:, o], dtype=np.float64)
            return self._store[key]
        if kind == "det":
            key = ("det", where)
            if key not in self._store:  # every detector of the matrix in one pass over the events
                from flowtools.gating.engine import _kernels as k

                matrix = self._matrix(where)
                assert matrix is not None  # noqa: S101 - "det" sources exist only for a matrix
                idx = np.ascontiguousarray(matrix.channel_indices(self.channels), dtype=np.intp)
                m = idx.size
                out = np.empty((self.n, m), dtype=np.float64, order="F")
                k.extract_columns(
                    self.events,
                    0,
                    self.n,
                    idx,
                    np.ascontiguousarray(matrix.unmixing),
                    np.arange(m, dtype=np.intp),
                    np.full(m, -1, dtype=np.intp),
                    out,
                )
                self._store[key] = out
            return self._store[key][:, o]
        key = ("unmixed column", where, o)
        if key not in self._store:
            self._store[key] = np.ascontiguousarray(self._store[("unmixed", where)][0][:, o])
        return self._store[key]

    def _source(self, src: tuple[str, Any, int], lo: int, size: int) -> np.ndarray:
        kind, where, o = src
        if kind == "column":
            return where[lo : lo + size]
        if kind == "extract":
            return self.groups[where]["out"][:size, o]
        return self._whole(kind, where, o)  # whole-column mode: lo == 0, size == n

    def _value(
        self, key: tuple[Any, ...], parent: np.ndarray, parent_id: Any, lo: int, size: int
    ) -> np.ndarray:
        """A dimension's block values, valid at least where ``parent`` (population ``parent_id``) is True."""
        spec = self.dims[key]
        kind = spec["kind"]
        if kind == "base":
            return self._source(spec["src"], lo, size)
        buf = spec["buf"][:size]
        if kind == "masked":
            covered = spec["covered"]
            lineage = self.lineage.get(parent_id) if parent_id is not _ANY_ROWS else None
            if lineage is None or covered.isdisjoint(lineage):  # not yet done on an ancestor's events
                spec["transform"].apply_where(
                    self._source(spec["src"], lo, size), parent, spec["done"][:size], buf
                )
                if lineage is not None:
                    covered.add(parent_id)
            return buf
        if not spec["fresh"]:
            inputs = [self._source(s, lo, size) for s in spec["inputs"]]
            values = spec["ratio"].apply(*inputs) if spec["ratio"] is not None else inputs[0]
            if spec["transform"] is not None:
                values = spec["transform"].apply(values)
            buf[:] = values
            spec["fresh"] = True
        return buf

    def _need_whole(self, what: str) -> None:
        if not self.whole:
            msg = f"{self.where}: {what} needs a whole-column plan (block_rows=None)"
            raise GatingError(msg)

    def column(self, d: Dimension) -> np.ndarray:
        """Values of a dimension for every event (compensated, ratio, transformed as it says).

        The plan's own array: do not modify it.
        """
        self._need_whole("column()")
        return self._value(self._dim(d), np.ones(self.n, dtype=np.bool_), None, 0, self.n)

    def column_on(self, d: Dimension, rows: np.ndarray | None, rows_id: Any = _ANY_ROWS) -> np.ndarray:
        """Values of a dimension, valid at least on the events where ``rows`` is True.

        Transforms run only on events no earlier call needed; other entries are
        unspecified (read only ``rows``). ``rows_id``, when given, names the
        population whose mask ``rows`` is: values done on that population's or an
        ancestor's events are returned without another pass. ``rows=None`` is
        :meth:`column`.
        """
        if rows is None:
            return self.column(d)
        self._need_whole("column_on()")
        return self._value(self._dim(d), np.ascontiguousarray(rows, dtype=np.bool_), rows_id, 0, self.n)

    # -- execution -------------------------------------------------------------------------------

    def extend(self, strategy: GatingStrategy) -> dict[str, np.ndarray]:
        """Switch to a strategy that extends the current one and evaluate only its new populations.

        Every compiled column and mask is reused (template resolution adds gates one at a time).
        """
        self._need_whole("extend()")
        known = set(self.lineage)
        self.s = strategy
        self._pending += self._compile([pid for pid in strategy.order if pid not in known])
        return self.run()

    def run(self) -> dict[str, np.ndarray]:
        """Population id -> boolean mask over all events, in evaluation order."""
        from flowtools.gating.engine import _kernels as k  # numba: loaded on first evaluation only

        pending, self._pending = self._pending, []
        for _, pid, _ in pending:
            self.masks[pid] = np.empty(self.n, dtype=np.bool_)
        if self.whole:
            self._run_block(k, pending, 0, self.n)
            return self.masks
        for lo in range(0, self.n, self.block):
            size = min(self.block, self.n - lo)
            for grp in self.groups.values():
                k.extract_columns(
                    self.events, lo, lo + size, grp["idx"], grp["unmix"], grp["dets"], grp["raws"], grp["out"]
                )
            for spec in self.dims.values():
                if spec["kind"] == "masked":
                    spec["done"][:size] = False
                    spec["covered"] = set()
                elif spec["kind"] == "full":
                    spec["fresh"] = False
            self._run_block(k, pending, lo, size)
        return self.masks

    def _run_block(self, k: Any, ops: Sequence[tuple[str, str, Any]], lo: int, size: int) -> None:
        masks, population = self.masks, self.s.population
        ones = np.ones(size, dtype=np.bool_)
        hi = lo + size
        for op, pid, spec in ops:
            parent_id = population(pid).parent
            parent = masks[parent_id][lo:hi] if parent_id is not None else ones
            out = masks[pid][lo:hi]
            if op == "ranges":
                src = parent
                for key, a, b in spec:
                    k.range_and(self._value(key, parent, parent_id, lo, size), a, b, src, out)
                    src = out
                if not spec:
                    out[:] = parent
            elif op == "polygon":
                kx, ky, vx, vy = spec
                k.polygon_serial(
                    self._value(kx, parent, parent_id, lo, size),
                    self._value(ky, parent, parent_id, lo, size),
                    vx,
                    vy,
                    parent,
                    out,
                )
            elif op == "ellipsoid":
                keys, mean, inv_cov, dist2 = spec
                stack = np.empty((size, len(keys)), dtype=np.float64, order="F")
                for j, key in enumerate(keys):
                    stack[:, j] = self._value(key, parent, parent_id, lo, size)
                k.ellipsoid_serial(stack, mean, inv_cov, dist2, parent, out)
            else:
                _boolean(spec, masks, lo, hi, parent, out)


def _boolean(
    g: BooleanGate, masks: dict[str, np.ndarray], lo: int, hi: int, parent: np.ndarray, out: np.ndarray
) -> None:
    terms = [masks[ref][lo:hi] for ref, _ in g.refs]
    if g.op == "not":
        np.logical_not(terms[0], out=out) if not g.refs[0][1] else np.copyto(out, terms[0])
    else:
        first = ~terms[0] if g.refs[0][1] else terms[0]
        np.copyto(out, first)
        fn = np.logical_and if g.op == "and" else np.logical_or
        for (_, complement), t in zip(g.refs[1:], terms[1:], strict=True):
            fn(out, ~t if complement else t, out=out)
    np.logical_and(out, parent, out=out)
