"""FlowJo workspace export: resolved samples' gates written as a FlowJo 10 workspace.

Gates are written in FlowJo's data-value coordinates, one gate tree per sample, in a minimal
workspace that FlowJo and FlowKit's ``Workspace`` read (:func:`write_workspace`);
:func:`export_sample_from_resolved` turns a resolved template sample into what is written.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET  # noqa: S405 - used only to build (write) documents
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flowtools.compensation import SpilloverMatrix
from flowtools.errors import GatingError
from flowtools.gating.formats._flowjo_xml import (
    NS_DATATYPE,
    NS_GATING,
    NS_TRANSFORMS,
    D,
    G,
    T,
    WorkspaceError,
)
from flowtools.gating.gates import (
    UNCOMPENSATED,
    BooleanGate,
    Dimension,
    Gate,
    PolygonGate,
    RectangleGate,
)
from flowtools.gating.strategy import GatingStrategy
from flowtools.transforms import FlowJoBiexTransform, FlowJoLinearTransform, LogicleTransform

__all__ = ["ACQUISITION_MATRIX", "ExportSample", "export_sample_from_resolved", "write_workspace"]


@dataclass(frozen=True)
class ExportSample:
    """One sample to write into a workspace: its file, its gates and their population paths.

    Attributes
    ----------
    name : str
        Sample name (FlowJo shows it; FlowKit keys samples by it). Use the FCS file name.
    uri : str
        ``DataSet/@uri`` (a file name or ``file:`` URI).
    strategy : GatingStrategy
    paths : mapping of str to str
        Population path -> population id in ``strategy``, in tree order (parents first).
    n_events : int
    counts : mapping of str to int, optional
        Path -> count written as FlowJo's ``count`` attribute.
    """

    name: str
    uri: str
    strategy: GatingStrategy
    paths: Mapping[str, str]
    n_events: int = -1
    counts: Mapping[str, int] = field(default_factory=dict)


def write_workspace(path: str | os.PathLike[str], groups: Mapping[str, Sequence[ExportSample]]) -> None:
    """Write a minimal FlowJo 10 workspace that FlowJo and FlowKit's ``Workspace`` read.

    Gates are written in FlowJo's data-value coordinates (inverse-transformed), each sample with
    its own transforms and gate tree; compensated dimensions are written with the ``Comp-``
    prefix and the matrix is embedded in each sample. Supported gates: rectangle/range,
    polygon, and quadrant gates (written as FlowJo writes them, one rectangle per quadrant).

    Parameters
    ----------
    path : str or PathLike
        The .wsp to write (atomically).
    groups : mapping of str to sequence of ExportSample
        Group name (e.g. one per tube) -> its samples. Every sample is also in "All Samples".
    """
    from flowtools.gating.gates import QuadrantGate
    from flowtools.provenance import atomic_write_bytes

    ET.register_namespace("gating", NS_GATING)
    ET.register_namespace("transforms", NS_TRANSFORMS)
    ET.register_namespace("data-type", NS_DATATYPE)
    root = ET.Element("Workspace", {"version": "20.0", "flowJoVersion": "10.6.2", "curGroup": "All Samples"})
    ET.SubElement(root, "Matrices")
    groups_el = ET.SubElement(root, "Groups")
    slist = ET.SubElement(root, "SampleList")
    ids: dict[int, str] = {}
    everyone: list[ExportSample] = []
    for members in groups.values():
        for s in members:
            if id(s) not in ids:
                ids[id(s)] = str(len(ids) + 1)
                everyone.append(s)
    names = [s.name for s in everyone]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise WorkspaceError(path, f"sample names repeat: {dupes}")

    def group(name: str, members: Sequence[ExportSample]) -> None:
        gn = ET.SubElement(groups_el, "GroupNode", {"name": name, "annotation": "", "owningGroup": name})
        gr = ET.SubElement(gn, "Group", {"name": name})
        refs = ET.SubElement(gr, "SampleRefs")
        for s in members:
            ET.SubElement(refs, "SampleRef", {"sampleID": ids[id(s)]})

    group("All Samples", everyone)
    for gname, members in groups.items():
        if gname != "All Samples":
            group(gname, members)
    for s in everyone:
        _write_sample(slist, s, ids[id(s)], path, QuadrantGate)
    ET.indent(root)
    data = b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8")
    atomic_write_bytes(path, data)


def _write_sample(slist: ET.Element, s: ExportSample, sid: str, wpath: Any, quad_cls: type) -> None:
    fail = lambda msg: WorkspaceError(wpath, msg, element=f"sample {s.name!r}")  # noqa: E731
    st = s.strategy
    s_el = ET.SubElement(slist, "Sample")
    ET.SubElement(s_el, "DataSet", {"uri": s.uri, "sampleID": sid})
    matrices = {d.compensation for g in st.gates for d in _dims(g)} - {UNCOMPENSATED}
    if len(matrices) > 1:
        msg = f"gates use {len(matrices)} compensations; a FlowJo sample has one matrix"
        raise fail(msg)
    prefix = "Comp-"
    if matrices:
        (mid,) = matrices
        if mid not in st.matrices:
            msg = f"compensation {mid!r} ('FCS') must be given as a matrix of the strategy"
            raise fail(msg)
        m = st.matrices[mid]
        m_el = ET.SubElement(
            s_el,
            T + "spilloverMatrix",
            {"spectral": "0", "prefix": prefix, "name": mid, "suffix": "", T + "id": mid},
        )
        ps = ET.SubElement(m_el, D + "parameters")
        for det in m.detectors:
            ET.SubElement(ps, D + "parameter", {D + "name": det, "userProvidedCompInfix": prefix + det})
        for i, det in enumerate(m.detectors):
            row = ET.SubElement(
                m_el, T + "spillover", {D + "parameter": det, "userProvidedCompInfix": prefix + det}
            )
            for j, det2 in enumerate(m.detectors):
                ET.SubElement(
                    row, T + "coefficient", {D + "parameter": det2, T + "value": repr(float(m.matrix[i, j]))}
                )
    # one transform per written parameter name
    xf: dict[str, Any] = {}
    for g in st.gates:
        for d in _dims(g):
            label = _label(d, prefix)
            t = st.transforms.get(d.transform) if d.transform else None
            if label in xf and xf[label] != t:
                msg = f"parameter {label!r} is gated on two different transforms; FlowJo allows one"
                raise fail(msg)
            xf[label] = t
    tr_el = ET.SubElement(s_el, "Transformations")
    written: set[str] = set()
    for label, t in xf.items():
        if t is None:
            continue
        # FlowJo lists a compensated parameter's transform under both names (FlowKit looks up the bare one)
        for name in (label, label.removeprefix(prefix)):
            if name in written:
                continue
            written.add(name)
            el = _transform_element(tr_el, t, fail)
            ET.SubElement(el, D + "parameter", {D + "name": name})
    ET.SubElement(s_el, "Keywords")
    node = ET.SubElement(
        s_el,
        "SampleNode",
        {"name": s.name, "annotation": "", "owningGroup": "", "sampleID": sid, "count": str(s.n_events)},
    )
    subs: dict[str | None, ET.Element] = {None: ET.SubElement(node, "Subpopulations")}
    pops = st.populations
    counter = [0]
    for path, pid in s.paths.items():
        pop = pops[pid]
        parent_path = path.rsplit("/", 1)[0] if "/" in path else None
        if parent_path not in subs:
            msg = f"population {path!r} is listed before its parent"
            raise fail(msg)
        parent_el = subs[parent_path]
        g = pop.gate
        name = path.rsplit("/", 1)[-1]
        counter[0] += 1
        attrs = {"name": name, "annotation": "", "owningGroup": "", "count": str(s.counts.get(path, -1))}
        if isinstance(g, BooleanGate):
            tag = {"and": "AndNode", "or": "OrNode", "not": "NotNode"}[g.op]
            id_to_path = {v: k for k, v in s.paths.items()}
            if any(c for _, c in g.refs):
                msg = f"{path}: FlowJo boolean nodes cannot take a complement reference"
                raise fail(msg)
            b_el = ET.SubElement(parent_el, tag, attrs)
            deps = ET.SubElement(b_el, "Dependents")
            for ref, _ in g.refs:
                ET.SubElement(deps, "Dependent", {"name": id_to_path[ref]})
            subs[path] = ET.SubElement(b_el, "Subpopulations")
            continue
        p_el = ET.SubElement(parent_el, "Population", attrs)
        gid = f"ID{sid}{counter[0]:04d}"
        gate_el = ET.SubElement(p_el, "Gate", {G + "id": gid})
        if isinstance(g, quad_cls):
            bounds = g.bounds(next(q for q in g.quadrants if q.id == pop.quadrant))  # type: ignore[attr-defined]
            dims = tuple(div.dimension for div, _, _ in bounds)
            lo_hi = [(None if math.isinf(lo) else lo, None if math.isinf(hi) else hi) for _, lo, hi in bounds]
            _rect_el(gate_el, dims, lo_hi, st, prefix, gid)
        elif isinstance(g, RectangleGate):
            _rect_el(gate_el, g.dimensions, list(zip(g.mins, g.maxs, strict=True)), st, prefix, gid)
        elif isinstance(g, PolygonGate):
            el = ET.SubElement(
                gate_el,
                G + "PolygonGate",
                {"eventsInside": "1", "quadId": "-1", "gateResolution": "256", G + "id": gid},
            )
            for d in g.dimensions:
                dim_el = ET.SubElement(el, G + "dimension")
                ET.SubElement(dim_el, D + "fcs-dimension", {D + "name": _label(d, prefix)})
            for x, y in g.vertices:
                v = ET.SubElement(el, G + "vertex")
                for d, c in zip(g.dimensions, (x, y), strict=True):
                    ET.SubElement(v, G + "coordinate", {D + "value": repr(_data_value(st, d, c))})
        else:
            msg = (
                f"{path}: exporting {type(g).__name__} to FlowJo is not supported (rectangle, range, "
                "polygon, quadrant and boolean gates are)"
            )
            raise fail(msg)
        subs[path] = ET.SubElement(p_el, "Subpopulations")


def _dims(g: Gate) -> tuple[Dimension, ...]:
    from flowtools.gating.gates import gate_dimensions

    return gate_dimensions(g)


def _label(d: Dimension, prefix: str) -> str:
    return d.name if d.compensation == UNCOMPENSATED else prefix + d.name


def _data_value(st: GatingStrategy, d: Dimension, v: float) -> float:
    if d.transform is None:
        return float(v)
    return float(np.asarray(st.transforms[d.transform].inverse(np.array([v])))[0])


def _rect_el(
    gate_el: ET.Element,
    dims: Sequence[Dimension],
    lo_hi: Sequence[tuple[float | None, float | None]],
    st: GatingStrategy,
    prefix: str,
    gid: str,
) -> None:
    el = ET.SubElement(
        gate_el, G + "RectangleGate", {"eventsInside": "1", "percentX": "0", "percentY": "0", G + "id": gid}
    )
    for d, (lo, hi) in zip(dims, lo_hi, strict=True):
        attrs = {}
        if lo is not None:
            attrs[G + "min"] = repr(_data_value(st, d, lo))
        if hi is not None:
            attrs[G + "max"] = repr(_data_value(st, d, hi))
        dim_el = ET.SubElement(el, G + "dimension", attrs)
        ET.SubElement(dim_el, D + "fcs-dimension", {D + "name": _label(d, prefix)})


def _transform_element(parent: ET.Element, t: Any, fail: Any) -> ET.Element:
    from flowtools.transforms import LinearTransform

    if isinstance(t, FlowJoLinearTransform):
        return ET.SubElement(
            parent,
            T + "linear",
            {T + "minRange": repr(t.min_range), T + "maxRange": repr(t.max_range), "gain": "1"},
        )
    if isinstance(t, LinearTransform) and t.A == 0:
        return ET.SubElement(
            parent, T + "linear", {T + "minRange": "0", T + "maxRange": repr(t.T), "gain": "1"}
        )
    if isinstance(t, LogicleTransform):
        return ET.SubElement(
            parent,
            T + "logicle",
            {
                T + "length": "256",
                T + "T": repr(t.T),
                T + "W": repr(t.W),
                T + "M": repr(t.M),
                T + "A": repr(t.A),
            },
        )
    if isinstance(t, FlowJoBiexTransform):
        return ET.SubElement(
            parent,
            T + "biex",
            {
                T + "length": str(t.length),
                T + "maxRange": repr(t.max_value),
                T + "neg": repr(t.neg),
                T + "width": repr(t.width),
                T + "pos": repr(t.pos),
            },
        )
    msg = (
        f"transform {type(t).__name__} has no FlowJo equivalent that FlowKit reads "
        "(linear with A=0, logicle, biex)"
    )
    raise fail(msg)


def export_sample_from_resolved(resolved: Any, fcs: Any, *, name: str | None = None) -> ExportSample:
    """An :class:`ExportSample` from a resolved template sample (:func:`flowtools.gating.templates.resolve`).

    Compensation ``"FCS"`` becomes the file's own spillover matrix, embedded in the workspace.

    Parameters
    ----------
    resolved : ResolvedSample
    fcs : FCSSample
        The file it was resolved on.
    name : str, optional
        Sample name in the workspace (default: the FCS file name).
    """
    from flowtools.gating.gates import FCS_COMPENSATION

    if resolved.strategy is None or resolved.result is None:
        msg = f"{resolved.sample_id}: not resolved: {resolved.error}"
        raise GatingError(msg)
    st = resolved.strategy
    matrices = dict(st.matrices)
    uses_fcs = any(d.compensation == FCS_COMPENSATION for g in st.gates for d in _dims(g))
    gates = st.gates
    if uses_fcs:
        # FlowJo's name for the file's own matrix ("FCS" is reserved in Gating-ML and FlowKit)
        matrices[ACQUISITION_MATRIX] = SpilloverMatrix.from_fcs(fcs)
        gates = tuple(_recompensate(g, FCS_COMPENSATION, ACQUISITION_MATRIX) for g in gates)
    fname = fcs.path.name if fcs.path is not None else resolved.sample_id
    counts = resolved.result.counts()
    paths = {p: pid for p, pid in resolved.ids.items()}
    return ExportSample(
        name or fname,
        fname,
        GatingStrategy(gates, st.transforms, matrices),
        paths,
        resolved.result.n_events,
        {p: counts[pid] for p, pid in paths.items()},
    )


ACQUISITION_MATRIX = "Acquisition-defined"


def _recompensate(g: Gate, old: str, new: str) -> Gate:
    """The same gate with every dimension compensated by ``old`` switched to ``new``."""
    from dataclasses import replace

    from flowtools.gating.gates import QuadrantGate

    def fix(d: Dimension) -> Dimension:
        return replace(d, compensation=new) if d.compensation == old else d

    if isinstance(g, QuadrantGate):
        return replace(g, dividers=tuple(replace(v, dimension=fix(v.dimension)) for v in g.dividers))
    if isinstance(g, BooleanGate):
        return g
    return replace(g, dimensions=tuple(fix(d) for d in g.dimensions))
