"""FlowJo workspace XML, element by element: namespaces, errors, matrices, transforms, gate trees.

The shared layer of :mod:`flowtools.gating.formats.flowjo` (reading) and
:mod:`flowtools.gating.formats.flowjo_export` (writing). A sample's gate tree becomes
flowtools gates keyed by population path here (:class:`_SampleBuilder`); see
:mod:`flowtools.gating.formats.flowjo` for the conventions.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET  # noqa: S405 - element types only; documents are parsed with defusedxml
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from flowtools.compensation import SpilloverMatrix
from flowtools.errors import CompensationError, GatingError
from flowtools.gating.gates import (
    UNCOMPENSATED,
    BooleanGate,
    Dimension,
    EllipsoidGate,
    Gate,
    PolygonGate,
    RectangleGate,
)
from flowtools.transforms import (
    AsinhTransform,
    FlowJoBiexTransform,
    FlowJoLinearTransform,
    FlowJoLogTransform,
    LogicleTransform,
)

if TYPE_CHECKING:
    from flowtools.gating.formats.flowjo import _Reader

NS_GATING = "http://www.isac-net.org/std/Gating-ML/v2.0/gating"
NS_TRANSFORMS = "http://www.isac-net.org/std/Gating-ML/v2.0/transformations"
NS_DATATYPE = "http://www.isac-net.org/std/Gating-ML/v2.0/datatypes"
G, T, D = (f"{{{ns}}}" for ns in (NS_GATING, NS_TRANSFORMS, NS_DATATYPE))

#: Elements that may sit beside populations in ``Subpopulations`` and carry no gate.
_NON_GATE_NODES = frozenset({"Statistic", "Graph"})
_BOOLEAN_NODES = {"AndNode": "and", "OrNode": "or", "NotNode": "not"}
#: Suffix of the helper population that holds a gate's inside when FlowJo keeps its outside.
INSIDE_SUFFIX = "#inside"
#: ``Workspace/@version`` of FlowJo 9 workspaces (PC 1.6x, Mac 2.0 and 3.0); FlowJo 10 writes 20.0 (or 1.8).
_FLOWJO9_VERSIONS = frozenset({"1.6", "1.61", "2.0", "3.0"})


class WorkspaceError(GatingError):
    """A FlowJo workspace is malformed or uses an element flowtools does not support.

    Attributes
    ----------
    path : str
        The workspace file.
    element : str or None
        The offending element (tag, with the population or sample it belongs to).
    """

    def __init__(self, path: str | os.PathLike[str], message: str, *, element: str | None = None) -> None:
        self.path = str(path)
        self.element = element
        where = f"{self.path}: {element}: " if element else f"{self.path}: "
        super().__init__(where + message)


# ---------------------------------------------------------------------------------------------- reading


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _float(value: str | None, fail: Any, what: str) -> float:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        msg = f"{what} must be a number, got {value!r}"
        raise fail(msg) from None
    if not math.isfinite(out):
        msg = f"{what} must be finite, got {value!r}"
        raise fail(msg)
    return out


def _matrix_from_element(
    el: ET.Element, where: str, fail: Any
) -> tuple[str, SpilloverMatrix, dict[str, str]]:
    """(name, matrix, FlowJo parameter name -> detector) of a ``spilloverMatrix`` element."""
    name = el.get("name") or el.get(T + "id") or "matrix"
    if el.get("spectral", "0") not in ("0", "false"):
        msg = f"spectral spilloverMatrix {name!r} is not supported"
        raise fail(msg)
    prefix, suffix = el.get("prefix", "Comp-"), el.get("suffix", "")
    params = el.find(D + "parameters")
    detectors = [p.get(D + "name", "") for p in params] if params is not None else []
    rows: dict[str, dict[str, float]] = {}
    for sp in el.findall(T + "spillover"):
        row = sp.get(D + "parameter", "")
        rows[row] = {
            c.get(D + "parameter", ""): _float(c.get(T + "value"), fail, f"matrix {name!r} coefficient")
            for c in sp.findall(T + "coefficient")
        }
    if not detectors:
        detectors = list(rows)
    try:
        arr = np.array([[rows[r][c] for c in detectors] for r in detectors], dtype=np.float64)
    except KeyError as exc:
        msg = f"matrix {name!r} has no coefficient for {exc.args[0]!r}"
        raise fail(msg) from None
    try:
        matrix = SpilloverMatrix(arr, tuple(detectors), source=f"{where} matrix {name!r}")
    except CompensationError as exc:
        raise fail(str(exc)) from None
    names: dict[str, str] = {}
    for d in detectors:
        names[f"{prefix}{d}{suffix}"] = d
    for p in [*(params if params is not None else []), *el.findall(T + "spillover")]:
        infix = p.get("userProvidedCompInfix")
        det = p.get(D + "name") or p.get(D + "parameter")
        if infix and det:
            names[infix] = det
    return name, matrix, names


def _transform_from_element(el: ET.Element, fail: Any) -> tuple[str, Any]:
    kind = _local(el.tag)
    param = el.find(D + "parameter")
    if param is None or not param.get(D + "name"):
        msg = f"<{kind}> transform names no parameter"
        raise fail(msg)
    pname = param.get(D + "name", "")

    def a(name: str, default: str | None = None) -> float:
        return _float(el.get(T + name, default), fail, f"{kind} {name} of {pname!r}")

    try:
        if kind == "linear":
            return pname, FlowJoLinearTransform(a("minRange", "0"), a("maxRange", "262144"))
        if kind == "log":
            return pname, FlowJoLogTransform(a("offset", "1"), a("decades", "4.5"))
        if kind == "biex":
            length = el.get(T + "length", "256")
            return pname, FlowJoBiexTransform(
                neg=a("neg", "0"),
                width=a("width", "-10"),
                pos=a("pos", "4.418540"),
                max_value=a("maxRange", "262144"),
                length=int(float(length)),
            )
        if kind == "logicle":
            return pname, LogicleTransform(T=a("T"), W=a("W"), M=a("M"), A=a("A", "0"))
        if kind == "fasinh":
            # FlowJo's extra 'length', 'maxRange' and 'W' attributes do not change gate membership.
            return pname, AsinhTransform(T=a("T"), M=a("M"), A=a("A", "0"))
    except ValueError as exc:
        msg = f"<{kind}> of {pname!r}: {exc}"
        raise fail(msg) from None
    msg = (
        f"unsupported FlowJo transform <{kind}> on {pname!r} (supported: linear, log, biex, logicle, fasinh)"
    )
    raise fail(msg)


class _SampleBuilder:
    """Gate tree of one SampleNode (or GroupNode) -> flowtools gates keyed by path."""

    def __init__(
        self,
        reader: _Reader,
        who: str,
        transforms: Mapping[str, Any],
        matrix_id: str | None,
        comp_names: Mapping[str, str],
        other_comp_names: frozenset[str] = frozenset(),
    ) -> None:
        self.r = reader
        self.who = who
        self.transforms = transforms
        self.matrix_id = matrix_id
        self.comp_names = comp_names
        #: compensated names of the workspace's shared matrices: such a dimension needs one of them
        self.other_comp_names = other_comp_names
        self.gates: list[Gate] = []
        self.paths: list[str] = []
        self.counts: dict[str, int] = {}
        self.used_transforms: dict[str, Any] = {}

    def fail(self, path: str | None, tag: str | None, msg: str) -> WorkspaceError:
        el = self.who + (f", population {path!r}" if path else "") + (f", <{tag}>" if tag else "")
        return WorkspaceError(self.r.path, msg, element=el)

    def dimension(self, name: str, path: str, tag: str) -> Dimension:
        comp = UNCOMPENSATED
        base = name
        if name in self.comp_names:
            if self.matrix_id is None:
                raise self.fail(path, tag, f"dimension {name!r} is compensated, but the sample has no matrix")
            base, comp = self.comp_names[name], self.matrix_id
        elif name in self.other_comp_names:
            msg = (
                f"dimension {name!r} is compensated by a matrix in the workspace's <Matrices>, but the "
                f"sample's matrix ({self.matrix_id or 'none; it names none of several shared'}) is not it"
            )
            raise self.fail(path, tag, msg)
        tid = None
        for key in (name, base):  # FlowJo lists both "Comp-X" and "X"; older files only one
            if key in self.transforms:
                tid = key
                self.used_transforms[tid] = self.transforms[key]
                break
        return Dimension(base, comp, tid)

    def coord(self, dim: Dimension, value: float) -> float:
        if dim.transform is None:
            return value
        return float(np.asarray(self.transforms[dim.transform].apply(np.array([value])))[0])

    def walk(self, sub: ET.Element | None, parent: str | None) -> None:
        if sub is None:
            return
        for node in sub:
            tag = _local(node.tag)
            if tag in _NON_GATE_NODES:
                continue
            name = node.get("name")
            if tag not in ("Population", *_BOOLEAN_NODES):
                raise self.fail(
                    parent,
                    tag,
                    "unsupported element in Subpopulations (expected Population, AndNode, OrNode or NotNode)",
                )
            if not name:
                raise self.fail(parent, tag, "population without a name")
            if "/" in name:
                raise self.fail(parent, tag, f"population name {name!r} contains '/', which FlowJo paths use")
            path = f"{parent}/{name}" if parent else name
            if path in self.counts:
                raise self.fail(path, tag, "population defined twice under the same parent")
            if tag == "Population":
                self.population(node, path, parent)
            else:
                self.boolean(node, tag, path, parent)
            self.paths.append(path)
            try:
                self.counts[path] = int(node.get("count", "-1"))
            except ValueError:
                raise self.fail(path, tag, f"count {node.get('count')!r} is not an integer") from None
            self.walk(node.find("Subpopulations"), path)

    def boolean(self, node: ET.Element, tag: str, path: str, parent: str | None) -> None:
        deps = node.find("Dependents")
        refs = [d.get("name", "") for d in deps.findall("Dependent")] if deps is not None else []
        for ref in refs:
            if not ref:
                raise self.fail(path, "Dependent", "dependent without a name")
        op = _BOOLEAN_NODES[tag]
        try:
            self.gates.append(BooleanGate(path, op, tuple((ref, False) for ref in refs), parent))
        except GatingError as exc:
            raise self.fail(path, tag, str(exc)) from None

    def population(self, node: ET.Element, path: str, parent: str | None) -> None:
        gate_el = node.find("Gate")
        if gate_el is None or len(gate_el) != 1:
            raise self.fail(path, "Gate", "a Population needs one Gate element with exactly one gate")
        g = gate_el[0]
        kind = _local(g.tag)
        ns = g.tag[1:].split("}", 1)[0] if g.tag.startswith("{") else ""
        if ns != NS_GATING:
            msg = (
                f"gate element in namespace {ns or '(none)'!r}, not Gating-ML 2.0 ({NS_GATING}): "
                "this looks like a FlowJo 9 or older workspace; open and save it in FlowJo 10"
            )
            raise self.fail(path, kind, msg)
        inside = g.get("eventsInside", "1") != "0"
        gid = path if inside else path + INSIDE_SUFFIX
        dims_el = g.findall(G + "dimension")
        names = []
        for d in dims_el:
            fd = d.find(D + "fcs-dimension")
            if fd is None or not fd.get(D + "name"):
                raise self.fail(
                    path, kind, "a gate dimension needs <data-type:fcs-dimension data-type:name=...>"
                )
            names.append(fd.get(D + "name", ""))
        dims = tuple(self.dimension(n, path, kind) for n in names)
        try:
            gate = self._geometry(g, kind, gid, dims, parent, path)
        except GatingError as exc:
            if isinstance(exc, WorkspaceError):
                raise
            raise self.fail(path, kind, str(exc)) from None
        self.gates.append(gate)
        if not inside:
            self.gates.append(BooleanGate(path, "not", ((gid, False),), parent))

    def _geometry(
        self, g: ET.Element, kind: str, gid: str, dims: tuple[Dimension, ...], parent: str | None, path: str
    ) -> Gate:
        fail = lambda msg: self.fail(path, kind, msg)  # noqa: E731
        if kind == "RectangleGate":
            if not dims:
                msg = "a rectangle gate needs at least one dimension"
                raise fail(msg)
            mins, maxs = [], []
            for d_el, dim in zip(g.findall(G + "dimension"), dims, strict=True):
                lo, hi = d_el.get(G + "min"), d_el.get(G + "max")
                mins.append(None if lo is None else self.coord(dim, _float(lo, fail, "min")))
                maxs.append(None if hi is None else self.coord(dim, _float(hi, fail, "max")))
            return RectangleGate(gid, dims, tuple(mins), tuple(maxs), parent)
        if kind == "PolygonGate":
            if len(dims) != 2:
                msg = f"a polygon gate needs 2 dimensions, got {len(dims)}"
                raise fail(msg)
            verts = []
            for v in g.findall(G + "vertex"):
                cs = [
                    _float(c.get(D + "value"), fail, "vertex coordinate") for c in v.findall(G + "coordinate")
                ]
                if len(cs) != 2:
                    msg = "each polygon vertex needs 2 coordinates"
                    raise fail(msg)
                verts.append((self.coord(dims[0], cs[0]), self.coord(dims[1], cs[1])))
            return PolygonGate(gid, (dims[0], dims[1]), tuple(verts), parent)
        if kind == "EllipsoidGate":
            return self._ellipse(g, gid, dims, parent, fail)
        if kind == "CurlyQuad":
            raise fail(_curly_quad_message(g, dims))
        msg = (
            f"unsupported FlowJo gate <{kind}> (supported: RectangleGate, PolygonGate, EllipsoidGate, "
            "AndNode, OrNode, NotNode)"
        )
        raise fail(msg)

    def _ellipse(
        self, g: ET.Element, gid: str, dims: tuple[Dimension, ...], parent: str | None, fail: Any
    ) -> EllipsoidGate:
        """FlowJo ellipse: 2 foci and 4 edge points in 256-bin display space -> an ellipsoid gate."""
        if len(dims) != 2:
            msg = f"an ellipse gate needs 2 dimensions, got {len(dims)}"
            raise fail(msg)

        def points(tag: str, n: int) -> np.ndarray:
            el = g.find(G + tag)
            vs = (
                []
                if el is None
                else [
                    [
                        _float(c.get(D + "value"), fail, f"{tag} coordinate")
                        for c in v.findall(G + "coordinate")
                    ]
                    for v in el.findall(G + "vertex")
                ]
            )
            if len(vs) != n or any(len(v) != 2 for v in vs):
                msg = f"a FlowJo ellipse needs {n} <{tag}> vertices of 2 coordinates"
                raise fail(msg)
            return np.array(vs, dtype=np.float64)

        foci, edge = points("foci", 2), points("edge", 4)
        center = foci.mean(axis=0)
        half_focal = float(np.linalg.norm(foci[1] - foci[0])) / 2
        u = (foci[1] - foci[0]) / (2 * half_focal) if half_focal > 0 else np.array([1.0, 0.0])
        v = np.array([-u[1], u[0]])
        rel = edge - center
        a = float(np.max(np.abs(rel @ u)))
        b2 = a * a - half_focal * half_focal
        b = math.sqrt(b2) if b2 > 0 else float(np.max(np.abs(rel @ v)))
        if not (a > 0 and b > 0):
            msg = "degenerate ellipse (zero axis)"
            raise fail(msg)
        cov = a * a * np.outer(u, u) + b * b * np.outer(v, v)
        scale = np.ones(2)
        for i, dim in enumerate(dims):
            t = self.transforms.get(dim.transform) if dim.transform else None
            if t is None:
                msg = "a FlowJo ellipse on an untransformed dimension has no display scale"
                raise fail(msg)
            # display bins 0..256 span the transform's output: 0..4096 for biex, 0..1 otherwise
            scale[i] = FlowJoBiexTransform.CHANNELS / 256 if isinstance(t, FlowJoBiexTransform) else 1 / 256
        mean = center * scale
        cov = cov * np.outer(scale, scale)
        return EllipsoidGate(
            gid, dims, tuple(mean.tolist()), tuple(tuple(r) for r in cov.tolist()), 1.0, parent
        )


def _curly_quad_message(g: ET.Element, dims: tuple[Dimension, ...]) -> str:
    """Why a ``CurlyQuad`` is refused, with the crosshair and quadrant it holds (when readable).

    A FlowJo ``CurlyQuad`` stores one quadrant the way a quadrant rectangle does: per dimension
    either ``min`` (the + side) or ``max`` (the - side), both the crosshair's data value. The curved
    arms are computed by FlowJo and not written (FlowJo's manual gives only their form,
    p2 = a * p1^0.5 + b, without a or b); readers that accept the gate substitute curves of their own
    (CytoML/cytolib: a fixed parabola in 256-channel display space, compared with FlowJo only to
    7e-3..1.6e-2 in frequency), so no exact membership rule exists to reproduce FlowJo's counts.
    """
    where = ""
    parts = []
    for d_el, dim in zip(g.findall(G + "dimension"), dims, strict=False):
        lo, hi = d_el.get(G + "min"), d_el.get(G + "max")
        if (lo is None) == (hi is None):
            parts = []
            break
        parts.append(f"{dim.name} {'+' if lo is not None else '-'} (at {lo if lo is not None else hi})")
    if len(parts) == 2:
        where = f" (quadrant {parts[0]}, {parts[1]})"
    return (
        f"FlowJo curly quadrant gates (CurlyQuad) are not supported{where}: the workspace stores only the "
        "crosshair and FlowJo computes the curved arms with parameters it neither writes nor documents, "
        "so FlowJo's membership cannot be reproduced (a straight quadrant would change the counts); "
        "redraw it as a quadrant or polygon gate in FlowJo"
    )

