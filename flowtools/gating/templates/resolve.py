"""Resolution: a template's gates computed and evaluated on each sample, kept as plain gates.

:func:`resolve` turns a :class:`~flowtools.gating.templates.model.Template` into plain gates
for each sample (data-driven gates computed on the parent's events, optionally pooled over a
group of samples), evaluates them and keeps them, so each sample's gates export to Gating-ML
2.0 and re-apply to the same counts anywhere. :func:`pool_values` and :func:`compute_pooled`
are the two halves of a pooled (``group_by``) gate for a runner that holds one file at a time.
"""

from __future__ import annotations

import copy
import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flowtools.compensation import SpilloverMatrix
from flowtools.errors import CompensationError, FlowtoolsError, GatingError, GatingWarning
from flowtools.gating.engine import GatingResult, Plan, sample_events
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
    MethodContext,
    Polygon,
    Quadrants,
    Rectangle,
    TimeWindows,
    get_method,
)
from flowtools.gating.strategy import GatingStrategy
from flowtools.gating.templates.model import (
    _RESOLVER_METHODS,
    PopulationSpec,
    Template,
    TransformSpec,
    _channel_map,
)
from flowtools.io.fcs import FCSSample
from flowtools.io.processing import processing_state

__all__ = ["FALLBACK_FLAG_PCT", "ResolvedSample", "compute_pooled", "pool_values", "resolve"]

_log = logging.getLogger(__name__)
_NO_TRANSFORM = TransformSpec("none", {})
#: A gate that a method's fallback made, keeping less than this % of its parent (or more than
#: 100 minus it), is flagged: it is the signature of a fallback that emptied (or filled) a gate.
FALLBACK_FLAG_PCT = 1.0
_POOL_PER_SAMPLE = 20_000  # events per sample when a gate is computed on a pooled group


_ID_BAD = re.compile(r"[^A-Za-z0-9_.-]")


def _gate_id(path: str, taken: set[str]) -> str:
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


@dataclass
class ResolvedSample:
    """One sample's resolved gates and their evaluation.

    Attributes
    ----------
    sample_id : str
    strategy : GatingStrategy
        Plain gates (Gating-ML 2.0 exportable), ids derived from the paths.
    ids : dict of str to str
        Population path -> population id in ``strategy``.
    result : GatingResult or None
        Masks and counts (None when resolution failed).
    error : str or None
        Why this sample could not be gated (file, population, reason).
    geometry : dict of str to Geometry
        Data-driven populations' computed geometry, by path.
    roles : dict of str to str
        Population path -> its template ``role`` (``"qc"``), for the populations that have one.
    failed : dict of str to str
        Population path -> why it has no numbers (its gate could not be computed, it broke
        its ``expect`` with ``on_violation: fail``, or an ancestor failed). The rest of the
        sample is kept.
    flags : dict of str to list of str
        Population path -> why its numbers need a look (a fallback kept < 1% or > 99% of the
        parent; outside its ``expect``).
    decisions : dict of str to dict
        Template entry path -> how its data-driven gate was decided
        (:class:`flowtools.gating.methods.Decision`, as plain data).
    order : list of str
        Every population path of the template, in template order.
    parents : dict of str to str
        Population path -> parent path ("" at the top), for every path of the template.
    decision_gates : dict of str to str
        Template entry path -> id of the gate its decision made (a quad entry: the quadrant gate),
        so the decision can travel with the gate (:meth:`gate_decisions`).
    notes : dict of str to str
        The sample-level automatic decisions: ``time`` (which parameter is time, and why),
        ``processing`` (the file looks compensated or transformed already: it was done again).
    """

    sample_id: str
    strategy: GatingStrategy | None
    ids: dict[str, str]
    result: GatingResult | None
    error: str | None = None
    geometry: dict[str, Geometry] = field(default_factory=dict)
    _channel: Any = field(default=None, repr=False, compare=False)
    roles: dict[str, str] = field(default_factory=dict)
    _scaled: Any = field(default=None, repr=False, compare=False)
    _kind: Any = field(default=None, repr=False, compare=False)
    failed: dict[str, str] = field(default_factory=dict)
    flags: dict[str, list[str]] = field(default_factory=dict)
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    parents: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    decision_gates: dict[str, str] = field(default_factory=dict)
    _column: Any = field(default=None, repr=False, compare=False)

    def gate_decisions(self) -> dict[str, str]:
        """Gate id -> its decision record as JSON, for the gates' provenance (Gating-ML custom_info)."""
        import json

        return {gid: json.dumps(self.decisions[p], sort_keys=True, allow_nan=False)
                for p, gid in self.decision_gates.items() if p in self.decisions}

    def status(self, path: str) -> str:
        """``"failed"``, ``"flagged"`` or ``"ok"`` for one population."""
        if path in self.failed:
            return "failed"
        return "flagged" if self.flags.get(path) else "ok"

    def channel(self, pnn: str) -> np.ndarray:
        """A parameter's values for all events, compensated as the template says and not transformed.

        The same array the gates were computed from (no second read or compensation).
        """
        if self._channel is None:
            raise GatingError(self.error or "sample not resolved")
        return self._channel(pnn)

    def values(self, name: str) -> np.ndarray:
        """A parameter's values for all events on the gates' scale (compensated and transformed).

        Compensated and transformed as the template says.

        ``name`` is a marker (``$PnS``) or channel (``$PnN``), in the template or not; a
        parameter the template does not read gets the transform of its kind (time, scatter,
        fluorescence). Clustering and embedding read these, so they see what the gates saw.
        """
        if self._scaled is None:
            raise GatingError(self.error or "sample not resolved")
        return self._scaled(name)

    def column(self, d: Any) -> np.ndarray:
        """A dimension of :attr:`strategy` for every event, as its gates see it (the resolver's own values).

        ``d`` is a :class:`~flowtools.gating.gates.Dimension` of the resolved strategy (compensation
        and transform ids as its gates name them). The returned array belongs to the resolver: do not
        modify it. Plots read these instead of reading and gating the file again.
        """
        if self._column is None:
            raise GatingError(self.error or "sample not resolved")
        return self._column(d)

    def kind(self, name: str) -> str:
        """A parameter's kind (``time``, ``scatter``, ``fluorescence``, ``other``) as the run decided it."""
        if self._kind is None:
            raise GatingError(self.error or "sample not resolved")
        return self._kind(name)

    def mask(self, path: str) -> np.ndarray:
        """Membership of a population given by its template path."""
        if self.result is None:
            raise GatingError(self.error or "sample not resolved")
        return self.result.mask(self.ids[path])

    def rows(self) -> list[dict[str, Any]]:
        """Per population path: gate id, parent path, role, count, parent count, % of parent, % of total.

        ``gate_id`` is the id of the population's mask in :attr:`strategy` (and in the
        Gating-ML a run writes), so later stages look a population up by it instead of
        deriving an id from the path again. ``parent`` is the parent's path ("" for a
        population of all events) and ``parent_count`` its event count (all events at the top).
        ``role`` is the template population's role: ``"qc"`` for an acquisition or clean-up
        gate, ``""`` otherwise.
        """
        if self.result is None:
            return []
        paths = {v: k for k, v in self.ids.items()}
        found: dict[str, dict[str, Any]] = {}
        for r in self.result.rows():
            if r["population"] in paths:
                p = paths[r["population"]]
                # a template child of a quadrant/window gate has the gate's parent; find its path
                parent_id = r["parent"] or None
                while parent_id is not None and parent_id not in paths:
                    parent_id = self.strategy.population(parent_id).parent  # helper gates the template hides
                parent_count = self.result.count(parent_id) if parent_id is not None else self.result.n_events
                found[p] = {"population": p, "gate_id": r["population"],
                            "parent": paths[parent_id] if parent_id is not None else "",
                            "role": self.roles.get(p, ""),
                            "count": r["count"], "parent_count": parent_count, "pct_parent": r["pct_parent"],
                            "pct_total": r["pct_total"]}
        out = []
        nan = float("nan")
        for p in self.order or list(found):
            row = found.get(p)
            if p in self.failed:
                row = {"population": p, "gate_id": row["gate_id"] if row else "",
                       "parent": self.parents.get(p, row["parent"] if row else ""),
                       "role": self.roles.get(p, ""), "count": nan, "parent_count": nan,
                       "pct_parent": nan, "pct_total": nan}
            elif row is None:
                continue
            row["status"] = self.status(p)
            row["reason"] = self.failed[p] if p in self.failed else "; ".join(self.flags.get(p, ()))
            out.append(row)
        return out


class _State:
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
    st: _State, spec: PopulationSpec, geom: Geometry
) -> tuple[list[Gate], dict[str, str]]:
    dims = tuple(st.dimension(d) for d in spec.dims)
    parent_id = st.ids[spec.parent] if spec.parent else None
    if isinstance(geom, Quadrants):
        if spec.quadrants is None:
            msg = f"{spec.path}: method returned quadrants but the template names none"
            raise GatingError(msg)
        gid = _gate_id(spec.path, st.taken)
        divs = (QuadrantDivider(f"{gid}_x", dims[0], (geom.x_cut,)),
                QuadrantDivider(f"{gid}_y", dims[1], (geom.y_cut,)))
        quads, outputs = [], {}
        for qname, sign in spec.quadrants.items():
            qpath = f"{spec.parent}/{qname}" if spec.parent else qname
            qid = _gate_id(qpath, st.taken)
            locs = tuple((div.id, div.values[0] + (1.0 if s == "+" else -1.0))
                         for div, s in zip(divs, sign, strict=True))
            quads.append(Quadrant(qid, locs))
            outputs[qpath] = qid
        return [QuadrantGate(gid, divs, tuple(quads), parent_id)], outputs
    gid = _gate_id(spec.path, st.taken)
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
            wid = _gate_id(f"{spec.path}_window{k}", st.taken)
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


def _ref_geometry(st: _State, spec: PopulationSpec) -> Geometry:
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


def resolve(
    template: Template,
    samples: Sequence[FCSSample],
    *,
    sample_ids: Sequence[str] | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
    pinned: Mapping[str, Geometry] | None = None,
    seed: int = 0,
) -> list[ResolvedSample]:
    """Resolve a template on samples: compute data-driven gates, evaluate, keep the gates.

    Parameters
    ----------
    template : Template
    samples : sequence of FCSSample
    sample_ids : sequence of str, optional
        Names for messages and results (default: file names).
    groups : mapping of str to sequence of str, optional
        For ``group_by``: column name -> one group value per sample (e.g.
        ``{"plate": [...]}``). A population with ``group_by: plate`` computes
        its gate once on the pooled parent events of each plate.
    pinned : mapping of str to Geometry, optional
        Population path -> geometry computed elsewhere (e.g. on a pooled group
        by a batch runner that holds one file at a time); used instead of
        running the population's method.
    seed : int, default 0
        Seed passed to every method (results are reproducible).

    Returns
    -------
    list of ResolvedSample
        One per sample, in order; a sample that cannot be gated carries an
        ``error`` (file, population, reason) and no result, and the others go on.
    """
    ids = _sample_ids(samples, sample_ids)
    states, errors = _start(template, samples, ids)
    _run(template, states, errors, ids, groups=groups, pinned=pinned or {}, seed=seed, stop_before=None)
    roles = template.roles
    out = []
    for i, sid in enumerate(ids):
        st = states[i]
        if st is None:
            out.append(ResolvedSample(sid, None, {}, None, errors.get(i, "not resolved"), roles=dict(roles)))
            continue
        result = GatingResult(st.strategy, st.ev.n, dict(st.ev.masks), sid)
        out.append(ResolvedSample(sid, st.strategy, dict(st.ids), result, None, dict(st.geometry),
                                  st.base_channel, dict(roles), st.scaled, st.kind, dict(st.failed),
                                  {k: list(v) for k, v in st.flags.items()},
                                  {k: d.to_dict() for k, d in st.decisions.items()},
                                  list(template.population_paths), dict(st._parents), dict(st.notes),
                                  dict(st.decision_gates), st.ev.column))
    return out


def pool_values(
    template: Template,
    sample: FCSSample,
    population: str,
    *,
    pinned: Mapping[str, Geometry] | None = None,
    max_events: int = _POOL_PER_SAMPLE,
    sample_id: str | None = None,
    seed: int = 0,
    position: int = 0,
) -> np.ndarray:
    """A sample's contribution to a pooled (``group_by``) gate: its parent events on the gate's dimensions.

    Resolves the template up to ``population`` (with ``pinned`` geometries for
    earlier pooled gates) and returns at most ``max_events`` rows (a subsample
    seeded by ``seed`` and the sample's ``position`` in its group, the same rule
    as :func:`resolve` uses) of the parent's values, shape (n, n_dims).

    Raises
    ------
    GatingError
        The sample cannot be resolved up to that population.
    """
    spec = next((p for p in template.populations if population in p.outputs), None)
    if spec is None:
        msg = f"template {template.name!r} has no population {population!r}"
        raise GatingError(msg)
    ids = _sample_ids([sample], [sample_id] if sample_id else None)
    states, errors = _start(template, [sample], ids)
    _run(template, states, errors, ids, groups=None, pinned=pinned or {}, seed=seed, stop_before=spec.path)
    st = states[0]
    if st is None:
        raise GatingError(errors.get(0, "not resolved"))
    blocked = next((p for p in _depends_on(spec) if p in st.failed), None)
    if blocked is not None:
        msg = f"{st.sample_id}: population {blocked!r} failed: {st.failed[blocked]}"
        raise GatingError(msg)
    v = st.values(spec.dims, spec.parent)
    if v.shape[0] > max_events:
        pick = np.random.default_rng([seed, position]).choice(v.shape[0], max_events, replace=False)
        v = v[np.sort(pick)]
    return v


def compute_pooled(
    template: Template, population: str, values: np.ndarray, reference: FCSSample, *, seed: int = 0
) -> Geometry:
    """Run a population's method on pooled values (from :func:`pool_values` of a group's samples).

    ``reference`` supplies channel ranges (any member of the group).
    """
    spec = next((p for p in template.populations if p.path == population), None)
    if spec is None or spec.method in (None, *_RESOLVER_METHODS):
        msg = f"{population!r} is not a data-driven population of template {template.name!r}"
        raise GatingError(msg)
    st = _State(template, reference, "pool")
    ctx = MethodContext(spec.path, spec.dims, st.ranges(spec.dims), seed,
                        kinds=tuple(st.kind(d) for d in spec.dims))
    return get_method(spec.method).fn(np.ascontiguousarray(values, dtype=np.float64), ctx, **spec.args)


def _sample_ids(samples: Sequence[FCSSample], sample_ids: Sequence[str] | None) -> list[str]:
    if sample_ids is not None:
        return list(sample_ids)
    return [(s.path.name if s.path is not None else f"sample{i + 1}") for i, s in enumerate(samples)]


def _start(
    template: Template, samples: Sequence[FCSSample], ids: Sequence[str]
) -> tuple[list[_State | None], dict[int, str]]:
    states: list[_State | None] = []
    errors: dict[int, str] = {}
    for i, (s, sid) in enumerate(zip(samples, ids, strict=True)):
        try:
            states.append(_State(template, s, sid))
        except (GatingError, CompensationError) as exc:
            states.append(None)
            errors[i] = str(exc)
    return states, errors


def _depends_on(spec: PopulationSpec) -> list[str]:
    """The populations an entry needs: its parent, and a ref's or bool's operands."""
    need = [spec.parent] if spec.parent else []
    if spec.method == "ref":
        need.append(spec.args["population"])
    elif spec.method == "bool":
        need.extend(r.lstrip("!") for r in spec.args["of"])
    return need


_POPULATION_ERRORS = (FlowtoolsError, ValueError, ArithmeticError)


def _run(
    template: Template,
    states: list[_State | None],
    errors: dict[int, str],
    ids: Sequence[str],
    *,
    groups: Mapping[str, Sequence[str]] | None,
    pinned: Mapping[str, Geometry],
    seed: int,
    stop_before: str | None,
) -> None:
    """Resolve every population in template order; a population that fails fails its subtree only."""
    for spec in template.populations:
        if spec.path == stop_before:
            return
        live = []
        for i, st in enumerate(states):
            if st is None:
                continue
            blocked = next((p for p in _depends_on(spec) if p in st.failed), None)
            if blocked is not None:
                for p in spec.outputs:  # quietly: the failure was reported where it happened
                    st.failed.setdefault(p, f"{blocked!r} failed")
                continue
            live.append((i, st))
        if not live:
            continue
        geoms: dict[int, Geometry] = {}
        decisions: dict[int, Decision] = {}
        if spec.path in pinned:
            geoms = {i: pinned[spec.path] for i, _ in live}
            if spec.method is not None:
                for i, _ in live:
                    decisions[i] = Decision(spec.method, dict(spec.args),
                                            {"rule": f"computed on the pooled {spec.group_by or 'group'}"})
        elif spec.method is None:
            g = _static_geometry(spec)
            geoms = {i: g for i, _ in live}
        elif spec.method == "ref":
            for i, st in live:
                try:
                    geoms[i] = _ref_geometry(st, spec)
                except _POPULATION_ERRORS as exc:
                    st.fail_population(spec, str(exc))
        elif spec.method == "bool":
            for _, st in live:
                refs = tuple((st.ids[r.lstrip("!")], r.startswith("!")) for r in spec.args["of"])
                parent_id = st.ids[spec.parent] if spec.parent else None
                gid = _gate_id(spec.path, st.taken)
                try:
                    st.add([BooleanGate(gid, spec.args["op"], refs, parent_id)], {spec.path: gid})
                except _POPULATION_ERRORS as exc:
                    st.fail_population(spec, str(exc))
                    continue
                _check(st, spec, None)
            continue
        else:
            method = get_method(spec.method)
            key = spec.group_by
            buckets: dict[Any, list[int]] = {}
            for i, _ in live:
                if key is None:
                    gval: Any = i
                elif groups is not None and key in groups:
                    gval = groups[key][i]
                else:
                    gval = "all"
                buckets.setdefault(gval, []).append(i)
            for members in buckets.values():
                decision = Decision(spec.method, dict(spec.args))
                try:
                    parts = []
                    for position, i in enumerate(members):
                        st = states[i]
                        assert st is not None  # noqa: S101 - live members only
                        v = st.values(spec.dims, spec.parent)
                        if key is not None and v.shape[0] > _POOL_PER_SAMPLE:  # same rule as pool_values
                            pick = np.random.default_rng([seed, position]).choice(
                                v.shape[0], _POOL_PER_SAMPLE, replace=False)
                            v = v[np.sort(pick)]
                        parts.append(v)
                    values = np.ascontiguousarray(np.concatenate(parts)) if len(parts) > 1 else parts[0]
                    first = states[members[0]]
                    assert first is not None  # noqa: S101
                    decision.events_in = int(values.shape[0])
                    kinds = tuple(first.kind(d) for d in spec.dims)
                    ctx = MethodContext(spec.path, spec.dims, first.ranges(spec.dims), seed, decision, kinds)
                    g = method.fn(values, ctx, **spec.args)
                except _POPULATION_ERRORS as exc:
                    for i in members:
                        st = states[i]
                        if st is not None:
                            st.decisions[spec.path] = copy.deepcopy(decision)
                            st.fail_population(spec, str(exc))
                    continue
                for i in members:
                    geoms[i] = g
                    decisions[i] = copy.deepcopy(decision) if len(members) > 1 else decision
        for i, g in geoms.items():
            st = states[i]
            if st is None:
                continue
            if i in decisions:
                st.decisions[spec.path] = decisions[i]
            try:
                gates, outputs = _gates_from_geometry(st, spec, g)
                st.add(gates, outputs)
                st.decision_gates[spec.path] = outputs.get(spec.path, gates[0].id)
                for p in outputs:
                    st.geometry[p] = g
            except _POPULATION_ERRORS as exc:
                st.fail_population(spec, str(exc))
                continue
            _check(st, spec, decisions.get(i))


def _check(st: _State, spec: PopulationSpec, decision: Decision | None) -> None:
    """Counts into the decision record; flag a fallback's near-empty or near-full gate; check ``expect``."""
    kept = 0
    ambiguous = [] if decision is None else [
        str(decision.details.get(k.replace("ambiguous", "rule"), "")) for k, v in decision.details.items()
        if k.endswith("ambiguous") and v]
    counts = {p: st.count(p) for p in spec.outputs}
    if decision is not None and decision.fallback and spec.quadrants:
        # a quadrant gate's fallback is per axis: the share on that axis's positive side
        for j, ax in enumerate("xy"):
            if not decision.details.get(f"{ax}_fallback") or len(spec.quadrants) != 4:
                continue
            parent_n = next(iter(counts.values()))[1]
            pos = sum(counts[p][0] for p, sign in zip(spec.outputs, spec.quadrants.values(), strict=True)
                      if sign[j] == "+")
            pct = 100.0 * pos / parent_n if parent_n else float("nan")
            if parent_n and (pct < FALLBACK_FLAG_PCT or pct > 100.0 - FALLBACK_FLAG_PCT):
                for p in spec.outputs:
                    st.flag(p, f"fallback ({decision.fallback}) put {pct:.2f}% of the parent on the "
                            f"positive side of {spec.dims[j]}", decision)
    for p in spec.outputs:
        for rule in ambiguous:
            st.flag(p, f"one peak, negative or positive is a guess: {rule}", decision)
        n, parent_n = counts[p]
        kept += n
        pct = 100.0 * n / parent_n if parent_n else float("nan")
        if decision is not None and decision.fallback and not spec.quadrants and parent_n and (
                pct < FALLBACK_FLAG_PCT or pct > 100.0 - FALLBACK_FLAG_PCT):
            st.flag(p, f"fallback ({decision.fallback}) kept {pct:.2f}% of the parent", decision)
        if spec.expect:
            got = {"pct": pct, "pct_total": 100.0 * n / st.ev.n if st.ev.n else float("nan"), "count": n}
            for k, (lo, hi) in spec.expect.items():
                v = got[k]
                if not ((lo is None or v >= lo) and (hi is None or v <= hi)):
                    bounds = f"[{'' if lo is None else f'{lo:g}'}, {'' if hi is None else f'{hi:g}'}]"
                    why = f"{k} = {v:.4g} is outside expect {bounds}"
                    if spec.on_violation == "fail":
                        st.failed.setdefault(p, why)
                        if decision is not None:
                            decision.status = "failed"
                            decision.reasons.append(why)
                        _log.warning("%s: population %r failed: %s", st.sample_id, p, why)
                    else:
                        st.flag(p, why, decision)
    if decision is not None:
        decision.events_kept = kept
