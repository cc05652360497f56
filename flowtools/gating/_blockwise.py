"""Block-wise evaluation of a gating strategy: the fast path of :func:`~flowtools.gating.engine.gate_events`.

The events are processed in blocks of rows (16,384 by default). Per block, one
pass over the stored events extracts the columns the gates read (compensating
only the detectors they need, see ``_kernels.extract_columns``); each
transformed dimension is computed only on the events of the parents of the
gates that read it (``apply_where``, no gather or scatter); each gate writes
its block of the population's mask. Every buffer is allocated once and reused
by every block, so the working set stays in cache and the memory beyond the
stored events and the output masks is a few MB whatever the file size.

Every value is bit-identical to the whole-column evaluator
(:class:`~flowtools.gating.engine._Evaluator`): the same compensation sums in
the same order, the same transform code per value, the same gate kernels and
edge rules. Strategies this module does not cover (spectral unmixing,
fluorochrome-named matrices, parameters the events lack, which must raise the
evaluator's errors) make :func:`plan` return None and the caller uses the
evaluator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from flowtools.compensation import SpilloverMatrix
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

__all__ = ["BLOCK_ROWS", "BlockPlan", "plan"]

BLOCK_ROWS = 16_384
"""Rows per block: the block's float64 columns (128 KiB each) stay in a core's L2 cache.
On the 200k-event benchmark files, 8k-16k rows per block were fastest; 64k was 10-20% slower,
whole files 40-65% (CPU time, in-process, on a loaded 2-core machine)."""


class _Unsupported(Exception):
    """The strategy needs something only the whole-column evaluator does (or raises)."""


def _dim_key(d: Dimension) -> tuple[Any, ...]:
    return (d.compensation, d.name, d.transform, d.ratio)


class BlockPlan:
    """A strategy compiled against one sample's layout (channels, matrix, scaled columns).

    Use :func:`plan`, which returns None where the whole-column evaluator is needed.
    """

    def __init__(
        self,
        strategy: GatingStrategy,
        events: np.ndarray,
        channels: Sequence[str],
        fcs_matrix: SpilloverMatrix | None,
        columns: Mapping[str, np.ndarray],
        block_rows: int = BLOCK_ROWS,
    ) -> None:
        if events.dtype not in (np.float32, np.float64) or not events.dtype.isnative:
            raise _Unsupported
        self.s = strategy
        self.events = np.ascontiguousarray(events)
        self.n = events.shape[0]
        self.block = max(1, min(int(block_rows), max(self.n, 1)))
        self.channel_index = {name: i for i, name in enumerate(channels)}
        self.fcs_matrix = fcs_matrix
        self.columns = {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in columns.items()}
        # Extraction groups: compensation reference -> matrix, its outputs (dets/raws) and their names.
        self.groups: dict[str, dict[str, Any]] = {}
        self.bases: dict[tuple[str, str], tuple[str, Any, int]] = {}
        self.dims: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.ops: list[tuple[str, str, Any]] = []
        for pid, pop in strategy.populations.items():
            g = pop.gate
            if isinstance(g, BooleanGate):
                self.ops.append(("boolean", pid, g))
            elif isinstance(g, RectangleGate):
                ranges = [
                    (self._dim(d), -np.inf if lo is None else float(lo), np.inf if hi is None else float(hi))
                    for d, lo, hi in zip(g.dimensions, g.mins, g.maxs, strict=True)
                ]
                self.ops.append(("ranges", pid, ranges))
            elif isinstance(g, QuadrantGate):
                quadrant = next(q for q in g.quadrants if q.id == pop.quadrant)
                ranges = [(self._dim(div.dimension), float(lo), float(hi)) for div, lo, hi in g.bounds(quadrant)]
                self.ops.append(("ranges", pid, ranges))
            elif isinstance(g, PolygonGate):
                v = np.array(g.vertices, dtype=np.float64)
                spec = (self._dim(g.dimensions[0]), self._dim(g.dimensions[1]),
                        np.ascontiguousarray(v[:, 0]), np.ascontiguousarray(v[:, 1]))
                self.ops.append(("polygon", pid, spec))
            elif isinstance(g, EllipsoidGate):
                spec = ([self._dim(d) for d in g.dimensions], np.ascontiguousarray(g.mean, dtype=np.float64),
                        np.ascontiguousarray(g.inverse_covariance, dtype=np.float64), float(g.distance_square))
                self.ops.append(("ellipsoid", pid, spec))
            else:
                raise _Unsupported
        # Each population's mask lies within its parent's: a dimension transformed on the events
        # of a population covers every descendant's events too (the root covers everything).
        self.lineage: dict[str | None, frozenset[str | None]] = {None: frozenset({None})}
        for pid, pop in strategy.populations.items():
            self.lineage[pid] = self.lineage[pop.parent] | {pid}
        self._finish_groups()

    # -- compilation -----------------------------------------------------------------------------

    def _matrix(self, ref: str) -> SpilloverMatrix | None:
        if ref == UNCOMPENSATED:
            return None
        if ref == FCS_COMPENSATION:
            return self.fcs_matrix
        return self.s.matrices[ref]

    def _group(self, ref: str, matrix: SpilloverMatrix | None) -> dict[str, Any]:
        if ref not in self.groups:
            if matrix is None:
                idx = np.zeros(0, dtype=np.intp)
                unmix = np.zeros((0, 0), dtype=np.float64)
                detectors: tuple[str, ...] = ()
            else:
                if matrix.is_spectral or tuple(matrix.fluorochromes) != tuple(matrix.detectors):
                    raise _Unsupported
                try:
                    idx = np.ascontiguousarray(
                        [self.channel_index[d] for d in matrix.detectors], dtype=np.intp
                    )
                except KeyError:
                    raise _Unsupported from None  # the evaluator names the missing detector
                unmix = np.ascontiguousarray(matrix.unmixing, dtype=np.float64)
                detectors = tuple(matrix.detectors)
            self.groups[ref] = {"idx": idx, "unmix": unmix, "detectors": detectors, "dets": [], "raws": []}
        return self.groups[ref]

    def _base(self, compensation: str, name: str) -> tuple[str, Any, int]:
        """Where a (compensated) parameter comes from: ("column", array, 0) or ("extract", ref, output)."""
        key = (compensation, name)
        if key in self.bases:
            return self.bases[key]
        if name in self.columns:  # scaled column (Time): never a detector, the same under every matrix
            src: tuple[str, Any, int] = ("column", self.columns[name], 0)
        else:
            matrix = self._matrix(compensation)
            if name not in self.channel_index:
                raise _Unsupported  # the evaluator raises ChannelError with the available names
            ref = compensation if matrix is not None else UNCOMPENSATED
            grp = self._group(ref, matrix)
            if name in grp["detectors"]:
                det, raw = grp["detectors"].index(name), -1
            else:  # outside the matrix (or no matrix): the raw value, widened to float64
                det, raw = -1, self.channel_index[name]
            out_index = len(grp["dets"])
            grp["dets"].append(det)
            grp["raws"].append(raw)
            src = ("extract", ref, out_index)
        self.bases[key] = src
        return src

    def _dim(self, d: Dimension) -> tuple[Any, ...]:
        key = _dim_key(d)
        if key in self.dims:
            return key
        transform = self.s.transforms[d.transform] if d.transform is not None else None
        if d.ratio:
            ratio = self.s.transforms[d.name]
            spec = {"kind": "full", "ratio": ratio.transform,
                    "inputs": (self._base(d.compensation, ratio.numerator),
                               self._base(d.compensation, ratio.denominator))}
        else:
            src = self._base(d.compensation, d.name)
            if transform is None:
                spec = {"kind": "base", "src": src}
            elif hasattr(transform, "apply_where"):
                spec = {"kind": "masked", "src": src}
            else:
                spec = {"kind": "full", "ratio": None, "inputs": (src,)}
        spec["transform"] = transform
        self.dims[key] = spec
        return key

    def _finish_groups(self) -> None:
        b = self.block
        for grp in self.groups.values():
            grp["dets"] = np.ascontiguousarray(grp["dets"], dtype=np.intp)
            grp["raws"] = np.ascontiguousarray(grp["raws"], dtype=np.intp)
            grp["out"] = np.empty((b, len(grp["dets"])), dtype=np.float64, order="F")
        for spec in self.dims.values():
            if spec["kind"] != "base":
                spec["buf"] = np.empty(b, dtype=np.float64)
            if spec["kind"] == "masked":
                spec["done"] = np.zeros(b, dtype=np.bool_)
        self.ones = np.ones(b, dtype=np.bool_)

    # -- execution -------------------------------------------------------------------------------

    def _source(self, src: tuple[str, Any, int], lo: int, size: int) -> np.ndarray:
        kind, where, o = src
        if kind == "column":
            return where[lo : lo + size]
        return self.groups[where]["out"][:size, o]

    def _value(self, key: tuple[Any, ...], parent: np.ndarray, parent_id: str | None, lo: int,
               size: int) -> np.ndarray:
        """A dimension's block values, valid at least where ``parent`` (population ``parent_id``) is True."""
        spec = self.dims[key]
        kind = spec["kind"]
        if kind == "base":
            return self._source(spec["src"], lo, size)
        buf = spec["buf"][:size]
        if kind == "masked":
            covered = spec["covered"]
            if covered.isdisjoint(self.lineage[parent_id]):  # not yet done on an ancestor's events
                spec["transform"].apply_where(self._source(spec["src"], lo, size), parent, spec["done"][:size],
                                              buf)
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

    def run(self) -> dict[str, np.ndarray]:
        """Population id -> boolean mask over all events, in evaluation order."""
        from flowtools.gating import _kernels as k  # numba: loaded on first evaluation only

        masks = {pid: np.empty(self.n, dtype=np.bool_) for _, pid, _ in self.ops}
        pops = self.s.populations
        for lo in range(0, self.n, self.block):
            size = min(self.block, self.n - lo)
            hi = lo + size
            for grp in self.groups.values():
                k.extract_columns(self.events, lo, hi, grp["idx"], grp["unmix"], grp["dets"], grp["raws"],
                                  grp["out"])
            for spec in self.dims.values():
                if spec["kind"] == "masked":
                    spec["done"][:size] = False
                    spec["covered"] = set()
                elif spec["kind"] == "full":
                    spec["fresh"] = False
            ones = self.ones[:size]
            for op, pid, spec in self.ops:
                parent_id = pops[pid].parent
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
                    k.polygon_serial(self._value(kx, parent, parent_id, lo, size),
                                     self._value(ky, parent, parent_id, lo, size), vx, vy, parent, out)
                elif op == "ellipsoid":
                    keys, mean, inv_cov, dist2 = spec
                    stack = np.empty((size, len(keys)), dtype=np.float64, order="F")
                    for j, key in enumerate(keys):
                        stack[:, j] = self._value(key, parent, parent_id, lo, size)
                    k.ellipsoid_serial(stack, mean, inv_cov, dist2, parent, out)
                else:
                    self._boolean(spec, masks, lo, hi, parent, out)
        return masks

    @staticmethod
    def _boolean(g: BooleanGate, masks: dict[str, np.ndarray], lo: int, hi: int, parent: np.ndarray,
                 out: np.ndarray) -> None:
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


def plan(
    strategy: GatingStrategy,
    events: np.ndarray,
    channels: Sequence[str],
    fcs_matrix: SpilloverMatrix | None,
    columns: Mapping[str, np.ndarray],
    *,
    block_rows: int = BLOCK_ROWS,
) -> BlockPlan | None:
    """The block-wise plan of a strategy for these events, or None where the evaluator is needed."""
    try:
        return BlockPlan(strategy, events, channels, fcs_matrix, columns, block_rows)
    except _Unsupported:
        return None
