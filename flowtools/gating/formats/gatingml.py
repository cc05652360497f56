"""Gating-ML 2.0 import and export.

Reads every gate (rectangle, polygon, ellipsoid, quadrant, boolean), every
transformation (flin, flog, fasinh, logicle, hyperlog, fratio) and
``spectrumMatrix`` compensation that the standard defines, into a
:class:`~flowtools.gating.strategy.GatingStrategy`; :func:`write_gatingml`
writes one back, so that export -> import gives the same strategy.

XML is parsed with defusedxml: no external entities, no entity expansion
bombs, no network. A malformed document, or an element the standard does not
define where a gate or transformation is expected, raises
:class:`~flowtools.errors.GatingMLError` naming the file and the element.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET  # noqa: S405 - used only to build (write) documents
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from flowtools.compensation import SpilloverMatrix
from flowtools.errors import CompensationError, GatingError, GatingMLError
from flowtools.gating.gates import (
    UNCOMPENSATED,
    BooleanGate,
    Dimension,
    EllipsoidGate,
    Gate,
    PolygonGate,
    Quadrant,
    QuadrantDivider,
    QuadrantGate,
    RatioDefinition,
    RectangleGate,
)
from flowtools.gating.strategy import GatingStrategy
from flowtools.provenance import atomic_write_bytes
from flowtools.transforms import (
    AsinhTransform,
    HyperlogTransform,
    LinearTransform,
    LogicleTransform,
    LogTransform,
    RatioTransform,
)

__all__ = ["read_gatingml", "to_gatingml_string", "write_gatingml"]

NS = {
    "gating": "http://www.isac-net.org/std/Gating-ML/v2.0/gating",
    "transforms": "http://www.isac-net.org/std/Gating-ML/v2.0/transformations",
    "data-type": "http://www.isac-net.org/std/Gating-ML/v2.0/datatypes",
}
G, T, D = (f"{{{NS[k]}}}" for k in ("gating", "transforms", "data-type"))

_SIMPLE_TRANSFORMS: dict[str, tuple[type, tuple[str, ...]]] = {
    "flin": (LinearTransform, ("T", "A")),
    "flog": (LogTransform, ("T", "M")),
    "fasinh": (AsinhTransform, ("T", "M", "A")),
    "logicle": (LogicleTransform, ("T", "W", "M", "A")),
    "hyperlog": (HyperlogTransform, ("T", "W", "M", "A")),
}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


class _Reader:
    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, el: ET.Element | None, what: str) -> GatingMLError:
        name = "document" if el is None else f"<{_local(el.tag)}>"
        ident = "" if el is None else (el.get(G + "id") or el.get(T + "id") or "")
        ident = f" {ident!r}" if ident else ""
        return GatingMLError(f"{self.where}: {name}{ident}: {what}")

    def num(self, el: ET.Element, attr: str, *, required: bool = True) -> float | None:
        raw = el.get(attr)
        if raw is None:
            if required:
                raise self.fail(el, f"missing attribute {_local(attr)}")
            return None
        try:
            value = float(raw)
        except ValueError:
            raise self.fail(el, f"attribute {_local(attr)}={raw!r} is not a number") from None
        if math.isnan(value):
            raise self.fail(el, f"attribute {_local(attr)} is NaN")
        return value

    # -- transformations -------------------------------------------------------------------------

    def transformation(self, el: ET.Element) -> tuple[str, Any]:
        tid = el.get(T + "id")
        if not tid:
            raise self.fail(el, "transformation without transforms:id")
        kids = [c for c in el if _local(c.tag) != "custom_info"]
        if len(kids) != 1:
            raise self.fail(
                el, "a transformation holds exactly one of flin, flog, fasinh, logicle, hyperlog, fratio"
            )
        (body,) = kids
        kind = _local(body.tag)
        try:
            if kind in _SIMPLE_TRANSFORMS and body.tag == T + kind:
                cls, params = _SIMPLE_TRANSFORMS[kind]
                return tid, cls(**{p: self.num(body, T + p) for p in params})
            if kind == "fratio" and body.tag == T + kind:
                dims = [c.get(D + "name") for c in body if c.tag == D + "fcs-dimension"]
                if len(dims) != 2 or not all(dims):
                    raise self.fail(body, "fratio needs two data-type:fcs-dimension children with names")
                ratio = RatioTransform(*(self.num(body, T + p) for p in ("A", "B", "C")))
                return tid, RatioDefinition(ratio, dims[0], dims[1])  # type: ignore[arg-type]
        except (ValueError, TypeError) as exc:
            if isinstance(exc, GatingMLError):
                raise
            raise self.fail(body, f"invalid parameters: {exc}") from None
        raise self.fail(body, "unsupported transformation element")

    def spectrum_matrix(self, el: ET.Element) -> tuple[str, SpilloverMatrix]:
        mid = el.get(T + "id")
        if not mid:
            raise self.fail(el, "spectrumMatrix without transforms:id")

        def names(tag: str) -> list[str]:
            holder = el.find(T + tag)
            if holder is None:
                raise self.fail(el, f"missing <{tag}>")
            out = [c.get(D + "name") or "" for c in holder if c.tag == D + "fcs-dimension"]
            if not out or not all(out):
                raise self.fail(holder, "needs data-type:fcs-dimension children with names")
            return out

        fluo, dets = names("fluorochromes"), names("detectors")
        rows = [
            [self.num(c, T + "value") for c in sp if c.tag == T + "coefficient"]
            for sp in el
            if sp.tag == T + "spectrum"
        ]
        if len(rows) != len(fluo) or any(len(r) != len(dets) for r in rows):
            raise self.fail(el, f"needs {len(fluo)} spectrum rows of {len(dets)} coefficients")
        import numpy as np

        m = np.array(rows, dtype=np.float64)
        if (el.get(T + "matrix-inverted-already") or "false").strip().lower() == "true":
            if m.shape[0] != m.shape[1]:
                raise self.fail(el, "an inverted (compensation) matrix must be square")
            try:
                m = np.linalg.inv(m)
            except np.linalg.LinAlgError:
                raise self.fail(el, "the inverted (compensation) matrix is singular") from None
        try:
            return mid, SpilloverMatrix(m, tuple(dets), tuple(fluo), f"{self.where} spectrumMatrix {mid!r}")
        except CompensationError as exc:
            raise self.fail(el, str(exc)) from None

    # -- gates -----------------------------------------------------------------------------------

    def dimension(self, el: ET.Element, *, divider: bool = False) -> Dimension:
        comp = el.get(G + "compensation-ref") or UNCOMPENSATED
        xform = el.get(G + "transformation-ref")
        fcs = el.find(D + "fcs-dimension")
        new = el.find(D + "new-dimension")
        if fcs is not None and fcs.get(D + "name"):
            return Dimension(fcs.get(D + "name"), comp, xform, ratio=False)  # type: ignore[arg-type]
        if new is not None and new.get(D + "transformation-ref"):
            return Dimension(new.get(D + "transformation-ref"), comp, xform, ratio=True)  # type: ignore[arg-type]
        what = "divider" if divider else "dimension"
        raise self.fail(
            el, f"{what} needs a data-type:fcs-dimension name or a data-type:new-dimension reference"
        )

    def coords(self, el: ET.Element) -> tuple[float, ...]:
        return tuple(self.num(c, D + "value") for c in el if c.tag == G + "coordinate")  # type: ignore[misc]

    def gate(self, el: ET.Element) -> Gate:
        kind = _local(el.tag)
        gid = el.get(G + "id")
        if not gid:
            raise self.fail(el, "gate without gating:id")
        parent = el.get(G + "parent_id") or None
        dims = [self.dimension(d) for d in el if d.tag == G + "dimension"]
        try:
            if kind == "RectangleGate":
                dim_els = [d for d in el if d.tag == G + "dimension"]
                mins = tuple(self.num(d, G + "min", required=False) for d in dim_els)
                maxs = tuple(self.num(d, G + "max", required=False) for d in dim_els)
                return RectangleGate(gid, tuple(dims), mins, maxs, parent)
            if kind == "PolygonGate":
                verts = tuple(self.coords(v) for v in el if v.tag == G + "vertex")
                return PolygonGate(gid, tuple(dims), verts, parent)  # type: ignore[arg-type]
            if kind == "EllipsoidGate":
                mean_el = el.find(G + "mean")
                cov_el = el.find(G + "covarianceMatrix")
                d2_el = el.find(G + "distanceSquare")
                if mean_el is None or cov_el is None or d2_el is None:
                    raise self.fail(el, "needs mean, covarianceMatrix and distanceSquare")
                cov = tuple(
                    tuple(self.num(e, D + "value") for e in row if e.tag == G + "entry")
                    for row in cov_el
                    if row.tag == G + "row"
                )
                return EllipsoidGate(
                    gid,
                    tuple(dims),
                    self.coords(mean_el),
                    cov,  # type: ignore[arg-type]
                    self.num(d2_el, D + "value"),
                    parent,
                )  # type: ignore[arg-type]
            if kind == "QuadrantGate":
                dividers = []
                for dv in el.findall(G + "divider"):
                    values = []
                    for v in dv.findall(G + "value"):
                        try:
                            values.append(float((v.text or "").strip()))
                        except ValueError:
                            raise self.fail(dv, f"divider value {v.text!r} is not a number") from None
                    dividers.append(
                        QuadrantDivider(
                            dv.get(G + "id") or "", self.dimension(dv, divider=True), tuple(values)
                        )
                    )
                quads = []
                for q in el.findall(G + "Quadrant"):
                    pos = tuple(
                        (p.get(G + "divider_ref") or "", self.num(p, G + "location"))
                        for p in q.findall(G + "position")
                    )
                    quads.append(Quadrant(q.get(G + "id") or "", pos))  # type: ignore[arg-type]
                return QuadrantGate(gid, tuple(dividers), tuple(quads), parent)
            if kind == "BooleanGate":
                ops = [c for c in el if c.tag in (G + "and", G + "or", G + "not")]
                if len(ops) != 1:
                    raise self.fail(el, "a boolean gate holds exactly one of and, or, not")
                op = ops[0]
                refs = []
                for r in op:
                    if r.tag != G + "gateReference":
                        continue
                    comp = (r.get(G + "use-as-complement") or "false").strip().lower() == "true"
                    refs.append((r.get(G + "ref") or "", comp))
                return BooleanGate(gid, _local(op.tag), tuple(refs), parent)
        except GatingMLError:
            raise
        except GatingError as exc:
            raise self.fail(el, str(exc)) from None
        raise self.fail(el, "unsupported gate element")


def _parse_root(source: str | os.PathLike[str] | bytes, where: str) -> ET.Element:
    try:
        if isinstance(source, bytes):
            return SafeET.fromstring(source, forbid_dtd=True)
        return SafeET.parse(os.fspath(source), forbid_dtd=True).getroot()
    except DefusedXmlException as exc:
        msg = f"{where}: refused unsafe XML ({type(exc).__name__}: entities or a DTD)"
        raise GatingMLError(msg) from None
    except ET.ParseError as exc:
        msg = f"{where}: not well-formed XML ({exc})"
        raise GatingMLError(msg) from None


def read_gatingml(source: str | os.PathLike[str] | bytes) -> GatingStrategy:
    """Read a Gating-ML 2.0 document into a gating strategy.

    Parameters
    ----------
    source : path or bytes
        The XML file, or its bytes.

    Returns
    -------
    GatingStrategy

    Raises
    ------
    GatingMLError
        Malformed or unsafe XML, an unsupported or invalid element, or an
        inconsistent strategy (unknown parent or reference), naming the file
        and the element.
    """
    where = "<Gating-ML bytes>" if isinstance(source, bytes) else str(source)
    root = _parse_root(source, where)
    reader = _Reader(where)
    if root.tag != G + "Gating-ML":
        raise reader.fail(root, "the root element must be gating:Gating-ML")
    gates: list[Gate] = []
    transforms: dict[str, Any] = {}
    matrices: dict[str, SpilloverMatrix] = {}
    for el in root:
        if not isinstance(el.tag, str):
            continue  # comments and processing instructions
        kind = _local(el.tag)
        if el.tag == D + "custom_info":
            continue
        if el.tag == T + "transformation":
            tid, t = reader.transformation(el)
            if tid in transforms:
                raise reader.fail(el, "transformation id defined twice")
            transforms[tid] = t
        elif el.tag == T + "spectrumMatrix":
            mid, m = reader.spectrum_matrix(el)
            if mid in matrices:
                raise reader.fail(el, "spectrumMatrix id defined twice")
            matrices[mid] = m
        elif el.tag.startswith(G) and kind.endswith("Gate"):
            gates.append(reader.gate(el))
        else:
            raise reader.fail(el, "not a Gating-ML 2.0 gate, transformation or spectrumMatrix element")
    try:
        return GatingStrategy(tuple(gates), transforms, matrices)
    except GatingError as exc:
        msg = f"{where}: {exc}"
        raise GatingMLError(msg) from None


# ------------------------------------------------------------------------------------------------ export


def _fmt(x: float) -> str:
    return repr(float(x))


def _dimension_el(parent: ET.Element, tag: str, d: Dimension, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {G + "compensation-ref": d.compensation, **attrs})
    if d.transform is not None:
        el.set(G + "transformation-ref", d.transform)
    if d.ratio:
        ET.SubElement(el, D + "new-dimension", {D + "transformation-ref": d.name})
    else:
        ET.SubElement(el, D + "fcs-dimension", {D + "name": d.name})
    return el


def _transform_el(root: ET.Element, tid: str, t: Any) -> None:
    el = ET.SubElement(root, T + "transformation", {T + "id": tid})
    if isinstance(t, RatioDefinition):
        body = ET.SubElement(
            el, T + "fratio", {T + p: _fmt(getattr(t.transform, p)) for p in ("A", "B", "C")}
        )
        for name in t.dimensions:
            ET.SubElement(body, D + "fcs-dimension", {D + "name": name})
        return
    for kind, (cls, params) in _SIMPLE_TRANSFORMS.items():
        if type(t) is cls:
            ET.SubElement(el, T + kind, {T + p: _fmt(getattr(t, p)) for p in params})
            return
    msg = f"transformation {tid!r} of type {type(t).__name__} has no Gating-ML 2.0 form"
    raise GatingMLError(msg)


def _matrix_el(root: ET.Element, mid: str, m: SpilloverMatrix) -> None:
    el = ET.SubElement(root, T + "spectrumMatrix", {T + "id": mid})
    for tag, names in (("fluorochromes", m.fluorochromes), ("detectors", m.detectors)):
        holder = ET.SubElement(el, T + tag)
        for n in names:
            ET.SubElement(holder, D + "fcs-dimension", {D + "name": n})
    for row in m.matrix:
        sp = ET.SubElement(el, T + "spectrum")
        for v in row:
            ET.SubElement(sp, T + "coefficient", {T + "value": _fmt(v)})


def _gate_el(root: ET.Element, g: Gate, info: str | None = None) -> None:
    kind = type(g).__name__
    el = ET.SubElement(root, G + kind, {G + "id": g.id})
    if g.parent is not None:
        el.set(G + "parent_id", g.parent)
    if info is not None:
        ET.SubElement(el, D + "custom_info").text = info
    if isinstance(g, RectangleGate):
        for d, lo, hi in zip(g.dimensions, g.mins, g.maxs, strict=True):
            attrs = {}
            if lo is not None:
                attrs[G + "min"] = _fmt(lo)
            if hi is not None:
                attrs[G + "max"] = _fmt(hi)
            _dimension_el(el, G + "dimension", d, **attrs)
    elif isinstance(g, PolygonGate):
        for d in g.dimensions:
            _dimension_el(el, G + "dimension", d)
        for v in g.vertices:
            ve = ET.SubElement(el, G + "vertex")
            for c in v:
                ET.SubElement(ve, G + "coordinate", {D + "value": _fmt(c)})
    elif isinstance(g, EllipsoidGate):
        for d in g.dimensions:
            _dimension_el(el, G + "dimension", d)
        mean = ET.SubElement(el, G + "mean")
        for c in g.mean:
            ET.SubElement(mean, G + "coordinate", {D + "value": _fmt(c)})
        cov = ET.SubElement(el, G + "covarianceMatrix")
        for row in g.covariance:
            r = ET.SubElement(cov, G + "row")
            for v in row:
                ET.SubElement(r, G + "entry", {D + "value": _fmt(v)})
        ET.SubElement(el, G + "distanceSquare", {D + "value": _fmt(g.distance_square)})
    elif isinstance(g, QuadrantGate):
        for dv in g.dividers:
            de = _dimension_el(el, G + "divider", dv.dimension, **{G + "id": dv.id})
            for v in dv.values:
                ET.SubElement(de, G + "value").text = _fmt(v)
        for q in g.quadrants:
            qe = ET.SubElement(el, G + "Quadrant", {G + "id": q.id})
            for ref, loc in q.positions:
                ET.SubElement(qe, G + "position", {G + "divider_ref": ref, G + "location": _fmt(loc)})
    elif isinstance(g, BooleanGate):
        op = ET.SubElement(el, G + g.op)
        for ref, comp in g.refs:
            attrs = {G + "ref": ref}
            if comp:
                attrs[G + "use-as-complement"] = "true"
            ET.SubElement(op, G + "gateReference", attrs)


def to_gatingml_string(strategy: GatingStrategy, custom_info: Mapping[str, str] | None = None) -> bytes:
    """The strategy as a Gating-ML 2.0 document (UTF-8 bytes).

    ``custom_info``: gate id -> text written as the gate's ``data-type:custom_info`` (the
    schema's place for a tool's own notes; readers ignore it), e.g. how a data-driven gate was
    decided.
    """
    info = custom_info or {}
    for prefix, uri in NS.items():
        ET.register_namespace(prefix, uri)
    root = ET.Element(G + "Gating-ML")
    for tid, t in strategy.transforms.items():
        _transform_el(root, tid, t)
    for mid, m in strategy.matrices.items():
        _matrix_el(root, mid, m)
    for g in strategy.gates:
        _gate_el(root, g, info.get(g.id))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def write_gatingml(strategy: GatingStrategy, path: str | os.PathLike[str]) -> Path:
    """Write the strategy as Gating-ML 2.0, atomically."""
    atomic_write_bytes(path, to_gatingml_string(strategy))
    return Path(path)
