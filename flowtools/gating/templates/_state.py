"""The state of resolving one sample's template, and how method geometries become plain gates."""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from flowtools.compensation import SpilloverMatrix
from flowtools.errors import CompensationError, GatingError, GatingWarning
from flowtools.gating.engine import Plan, sample_events
from flowtools.gating.gates import (
    FCS_COMPENSATION,
    UNCOMPENSATED,
    BooleanGate,
    Dimension,
    EllipsoidGate,
    Gate,
    PolygonGate,
    Quadrant,
    QuadrantDivider,
    QuadrantGate,
    RectangleGate,
)
from flowtools.gating.methods import (
    Decision,
    Ellipse,
    Geometry,
    Interval,
    Polygon,
    Quadrants,
    Rectangle,
    TimeWindows,
)
from flowtools.gating.strategy import GatingStrategy
from flowtools.gating.templates.model import (
    PopulationSpec,
    Template,
    TransformSpec,
    _channel_map,
)
from flowtools.io.fcs import FCSSample
from flowtools.io.processing import processing_state

__all__ = ["FALLBACK_FLAG_PCT", "State", "gate_id"]


_log = logging.getLogger(__name__)
_NO_TRANSFORM = TransformSpec("none", {})
#: A gate that a method's fallback made, keeping less than this % of its parent (or more than
#: 100 minus it), is flagged: it is the signature of a fallback that emptied (or filled) a gate.
FALLBACK_FLAG_PCT = 1.0
_POOL_PER_SAMPLE = 20_000  # events per sample when a gate is computed on a pooled group


_ID_BAD = re.compile(r"[^A-Za-z0-9_.-]")


def gate_id(path: str, taken: set[str]) -> str:
    """The Gating-ML id of a population path (``+``/``-`` spelled out), made unique in ``taken`` (added)."""
    segs = []
    for seg in path.split("/"):
        s = seg.replace("+", "pos")
        if s.endswith("-"):
            s = s[:-1] + "neg"
        segs.append(_ID_BAD.sub("_", s))
    gid = "__".join(segs)
    if not gid or not (gid[0].isalpha() or gid[0] == "_"):
        gid = "p_" + gid
    base, k = gid, 2
    while gid in taken:
        gid = f"{base}_{k}"
        k += 1
    taken.add(gid)
    return gid


class State:
    """What resolving one sample's template holds: its gates so far, their masks, scales and decisions."""

    def __init__(self, t: Template, sample: FCSSample, sample_id: str) -> None:
        self.sample = sample
        self.sample_id = sample_id
        self.error: str | None = None
        self.gates: list[Gate] = []
        self.transforms: dict[str, Any] = {}
        self.matrices: dict[str, SpilloverMatrix] = {}
        self.ids: dict[str, str] = {}
        self.taken: set[str] = set()
        self.geometry: dict[str, Geometry] = {}
        self.chmap = _channel_map(t, sample)
        self.kinds = sample.channel_kinds(t.time)
        self.notes: dict[str, str] = {}
        if self.kinds.time is not None:
            self.notes["time"] = f"{self.kinds.time} ({self.kinds.reasons[self.kinds.time]})"
        else:
            self.notes["time"] = "none: no parameter is named or typed as time"
        state = processing_state(sample.keywords, sample.channels)
        redo = []
        if state.compensated and t.compensation != UNCOMPENSATED:
            redo.append(f"compensated again (the file: {state.compensated})")
        if state.transformed and any(ts.kind != "none" for ts in t.transforms.values()):
            redo.append(f"transformed again (the file: {state.transformed})")
        if redo:
            self.notes["processing"] = "; ".join(redo)
            warnings.warn(f"{sample_id}: the file looks already processed and is " + "; ".join(redo)
                          + "; set compensation: uncompensated / transforms: none in the template if so",
                          GatingWarning, stacklevel=3)
        self.fcs_matrix: SpilloverMatrix | None = None
        if t.compensation == FCS_COMPENSATION:
            if sample.spillover is None:
                msg = (f"{sample_id}: template {t.name!r} compensates with the file's $SPILLOVER, "
                       "but it has none")
                raise CompensationError(msg)
            self.fcs_matrix = SpilloverMatrix.from_fcs(sample)
            self.comp_ref = FCS_COMPENSATION
        elif t.compensation == UNCOMPENSATED:
            self.comp_ref = UNCOMPENSATED
        else:
            self.matrices["template_matrix"] = SpilloverMatrix.from_csv(t.compensation)
            self.comp_ref = "template_matrix"
        self.strategy = GatingStrategy((), {}, self.matrices)
        events, columns = sample_events(self.strategy, sample, self.fcs_matrix)
        # whole columns: methods read values, gates are added one at a time
        self.ev = Plan(self.strategy, events, sample.pnn, self.fcs_matrix, columns, where=sample_id)
        self.t = t
        self._parents = {p: spec.parent for spec in t.populations for p in spec.outputs}
        self.dims: dict[str, Dimension] = {}
        self._rows: dict[str, np.ndarray] = {}  # population id -> its event indices (masks never change)
        self.failed: dict[str, str] = {}
        self.flags: dict[str, list[str]] = {}
        self.decisions: dict[str, Decision] = {}
        self.decision_gates: dict[str, str] = {}
        self._counts: dict[str, int] = {}  # gate id -> events in it

    def fail_population(self, spec: PopulationSpec, why: str) -> None:
        """Mark every population of one template entry as failed (the sample goes on)."""
        for p in spec.outputs:
            self.failed.setdefault(p, why)
        if spec.path in self.decisions:
            d = self.decisions[spec.path]
            d.status = "failed"
            d.reasons.append(why)
        _log.warning("%s: population %r failed: %s", self.sample_id, spec.path, why)

    def flag(self, path: str, why: str, decision: Decision | None) -> None:
        self.flags.setdefault(path, []).append(why)
        if decision is not None:
            if decision.status == "ok":
                decision.status = "flagged"
            decision.reasons.append(why)
        _log.warning("%s: population %r flagged: %s", self.sample_id, path, why)

    def _events_in(self, gid: str) -> int:
        n = self._counts.get(gid)
        if n is None:  # masks never change once added: count each once (siblings share a parent)
            n = self._counts[gid] = int(np.count_nonzero(self.ev.masks[gid]))
        return n

    def count(self, path: str) -> tuple[int, int]:
        """(events in a population, events in its parent) of a population already added."""
        parent = self._parents.get(path, "")
        parent_n = self._events_in(self.ids[parent]) if parent else int(self.ev.n)
        return self._events_in(self.ids[path]), parent_n

    def base_channel(self, pnn: str) -> np.ndarray:
        """Compensated (as the template says), untransformed values of one parameter."""
        matrix = self.fcs_matrix if self.comp_ref == FCS_COMPENSATION else self.matrices.get(self.comp_ref)
        comp = self.comp_ref if matrix is not None and pnn in matrix.detectors else UNCOMPENSATED
        return self.ev.column(Dimension(pnn, comp))

    def pnn_of(self, name: str) -> str:
        """The ``$PnN`` of a template dimension, or of any marker/channel of the file."""
        if name in self.chmap:
            return self.chmap[name]
        try:
            return self.sample.channels[self.sample.channel_index(name)].pnn
        except KeyError as exc:
            raise GatingError(str(exc.args[0])) from None

    def kind(self, name: str) -> str:
        return self.kinds.of(self.pnn_of(name))

    def scaled(self, name: str) -> np.ndarray:
        """Compensated and transformed values of any parameter, without adding it to the strategy."""
        if name in self.dims:
            return np.asarray(self.ev.column(self.dims[name]))
        pnn = self.pnn_of(name)
        col = self.base_channel(pnn)
        spec = (self.t.transforms.get(name) or self.t.transforms.get(pnn)
                or self.t.transforms.get(self.kinds.of(pnn)) or _NO_TRANSFORM)
        tid = f"{spec.kind}_{_ID_BAD.sub('_', pnn)}"
        tr = self.transforms.get(tid)
        if tr is None and spec.kind != "none":
            tr = spec.build(col if spec.params == "estimate" else None)
        return np.array(col, dtype=np.float64) if tr is None else np.asarray(tr.apply(col), dtype=np.float64)

    def dimension(self, name: str) -> Dimension:
        """The engine dimension (compensation + transform) for a template dimension name."""
        if name in self.dims:
            return self.dims[name]
        pnn = self.chmap[name]
        kind = self.kinds.of(pnn)
        matrix = self.fcs_matrix if self.comp_ref == FCS_COMPENSATION else self.matrices.get(self.comp_ref)
        comp = self.comp_ref if matrix is not None and pnn in matrix.detectors else UNCOMPENSATED
        # instrument bookkeeping ("other": CyTOF pulse shape, event counters) stays linear
        spec = (self.t.transforms.get(name) or self.t.transforms.get(pnn)
                or self.t.transforms.get(kind) or _NO_TRANSFORM)
        tid = None
        if spec.kind != "none":
            tid = f"{spec.kind}_{_ID_BAD.sub('_', pnn)}"
            if tid not in self.transforms:
                values = self.ev.column(Dimension(pnn, comp)) if spec.params == "estimate" else None
                self.transforms[tid] = spec.build(values)
                self._refresh(())
        d = Dimension(pnn, comp, tid)
        self.dims[name] = d
        return d

    def _refresh(self, new_gates: Sequence[Gate]) -> None:
        # Extend, not rebuild: only the new gates are validated (equal to a build from scratch).
        self.strategy = self.strategy.extended(new_gates, self.transforms)
        self.ev.extend(self.strategy)

    def add(self, gates: Sequence[Gate], outputs: Mapping[str, str]) -> None:
        self.gates.extend(gates)
        self.ids.update(outputs)
        self._refresh(gates)

    def values(self, dims: Sequence[str], parent: str) -> np.ndarray:
        ds = [self.dimension(d) for d in dims]
        if not parent:
            cols = [self.ev.column(d) for d in ds]
        else:
            pid = self.ids[parent]
            mask = self.ev.masks[pid]
            rows = self._rows.get(pid)
            if rows is None:  # several methods often read one parent's events (one marker each)
                rows = self._rows[pid] = np.flatnonzero(mask)
            cols = [self.ev.column_on(d, mask, pid)[rows] for d in ds]  # transforms run on the parent only
        if len(cols) == 1 and parent:
            # One dimension gathered from a parent: already a fresh contiguous array (a method may
            # modify it); a column view of it, no stacking copy.
            return np.ascontiguousarray(cols[0], dtype=np.float64).reshape(-1, 1)
        return np.ascontiguousarray(np.column_stack(cols)) if cols else np.empty((0, 0))

    def ranges(self, dims: Sequence[str]) -> tuple[tuple[float, float], ...]:
        out = []
        for name in dims:
            d = self.dimension(name)
            ch = self.sample.channels[self.sample.channel_index(d.name)]
            if ch.pnr:
                top = float(ch.pnr)
            else:
                top = float(np.nanmax(self.ev.column(Dimension(d.name, d.compensation))))
            lo_hi = np.array([0.0, top])
            if d.transform is not None:
                lo_hi = np.asarray(self.transforms[d.transform].apply(lo_hi), dtype=np.float64)
            out.append((float(lo_hi[0]), float(lo_hi[1])))
        return tuple(out)


def _gates_from_geometry(
    st: State, spec: PopulationSpec, geom: Geometry
) -> tuple[list[Gate], dict[str, str]]:
    dims = tuple(st.dimension(d) for d in spec.dims)
    parent_id = st.ids[spec.parent] if spec.parent else None
    if isinstance(geom, Quadrants):
        if spec.quadrants is None:
            msg = f"{spec.path}: method returned quadrants but the template names none"
            raise GatingError(msg)
        gid = gate_id(spec.path, st.taken)
        divs = (QuadrantDivider(f"{gid}_x", dims[0], (geom.x_cut,)),
                QuadrantDivider(f"{gid}_y", dims[1], (geom.y_cut,)))
        quads, outputs = [], {}
        for qname, sign in spec.quadrants.items():
            qpath = f"{spec.parent}/{qname}" if spec.parent else qname
            qid = gate_id(qpath, st.taken)
            locs = tuple((div.id, div.values[0] + (1.0 if s == "+" else -1.0))
                         for div, s in zip(divs, sign, strict=True))
            quads.append(Quadrant(qid, locs))
            outputs[qpath] = qid
        return [QuadrantGate(gid, divs, tuple(quads), parent_id)], outputs
    gid = gate_id(spec.path, st.taken)
    out = {spec.path: gid}
    if isinstance(geom, Interval):
        return [RectangleGate(gid, dims, (geom.lo,), (geom.hi,), parent_id)], out
    if isinstance(geom, Rectangle):
        return [RectangleGate(gid, dims, tuple(geom.los), tuple(geom.his), parent_id)], out
    if isinstance(geom, Polygon):
        return [PolygonGate(gid, dims, tuple(tuple(v) for v in geom.vertices), parent_id)], out  # type: ignore[arg-type]
    if isinstance(geom, Ellipse):
        return [EllipsoidGate(gid, dims, tuple(geom.mean), tuple(tuple(r) for r in geom.covariance),
                              float(geom.distance_square), parent_id)], out
    if isinstance(geom, TimeWindows):
        if not geom.windows:
            msg = f"{spec.path}: QC kept no time window"
            raise GatingError(msg)
        if len(geom.windows) == 1:
            (lo, hi), = geom.windows
            return [RectangleGate(gid, dims[:1], (lo,), (hi,), parent_id)], out
        parts = []
        for k, (lo, hi) in enumerate(geom.windows, start=1):
            wid = gate_id(f"{spec.path}_window{k}", st.taken)
            parts.append(RectangleGate(wid, dims[:1], (lo,), (hi,), parent_id))
        return [*parts, BooleanGate(gid, "or", tuple((p.id, False) for p in parts), parent_id)], out
    msg = f"{spec.path}: unsupported geometry {type(geom).__name__}"
    raise GatingError(msg)


def _static_geometry(spec: PopulationSpec) -> Geometry:
    assert spec.gate is not None  # noqa: S101 - checked at load time
    (kind, v), = spec.gate.items()
    if kind == "range":
        return Interval(v[0], v[1])
    if kind == "rectangle":
        return Rectangle(tuple(r[0] for r in v), tuple(r[1] for r in v))
    if kind == "polygon":
        return Polygon(tuple((float(a), float(b)) for a, b in v))
    if kind == "ellipse":
        return Ellipse(tuple(v["mean"]), tuple(tuple(r) for r in v["covariance"]),
                       float(v["distance_square"]))
    return Quadrants(float(v[0]), float(v[1]))


def _ref_geometry(st: State, spec: PopulationSpec) -> Geometry:
    src = spec.args["population"]
    geom = st.geometry.get(src)
    if geom is None:
        msg = f"{spec.path}: ref to {src!r}, which is not a data-driven or static gate of this template"
        raise GatingError(msg)
    side = spec.args.get("side", "same")
    if side != "same":
        if not isinstance(geom, Interval):
            msg = f"{spec.path}: side= only applies to a 1-D threshold"
            raise GatingError(msg)
        cut = geom.lo if geom.lo is not None else geom.hi
        geom = Interval(cut, None) if side == "positive" else Interval(None, cut)
    return geom
