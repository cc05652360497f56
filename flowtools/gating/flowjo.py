"""FlowJo workspaces (FlowJo 10 .wsp, or the same XML under another name): import, template, export.

What is read
------------
* **Samples** (``SampleList/Sample``): id, name, FCS file name (``DataSet/@uri``), keywords (kept in
  memory; :meth:`WorkspaceSample.safe_keywords` is what may be shown), the per-channel transforms, the
  spillover matrix and the sample's own gate tree (``SampleNode``), with FlowJo's recorded ``count`` of
  every population.
* **Groups** (``Groups/GroupNode``): name, member sample ids and the group's template gate paths.
* **Gates**: ``RectangleGate`` (rectangle, range; FlowJo stores a quadrant gate as four rectangles),
  ``PolygonGate``, ``EllipsoidGate``, and the boolean ``AndNode``/``OrNode``/``NotNode``;
  ``eventsInside="0"`` (a gate's outside) becomes a ``not`` of the inside.
* **Transforms** (``Transformations``): ``linear``, ``log``, ``biex`` (with its ``maxRange``, ``neg``,
  ``width``, ``pos`` and ``length``), ``logicle``, ``fasinh``.
* **Compensation**: ``spilloverMatrix`` embedded in a sample, or shared in ``Matrices`` and referenced by
  its id; gate dimensions named with the matrix's prefix/suffix (``Comp-X``, renamed infixes from
  ``userProvidedCompInfix``) are the *compensated* ``X``.

Conventions
-----------
FlowJo stores gate coordinates as data values (ellipses: in its 256-bin display space). A gate becomes
a flowtools gate on the transformed dimension, with coordinates passed through the same transform, as
FlowKit does; this reproduces FlowJo's counts exactly for rectangles and quadrants. FlowJo evaluates
polygons and ellipses on binned display coordinates, so those counts can differ by a few events per
population near the boundary. Population paths (``"Time/Singlets/CD3+"``) are the identity: a gate's id
*is* its path, so equal names under different parents never collide.

Anything FlowJo writes that flowtools does not model where a gate or transform is expected
(``CurlyQuad``, a ``hyperlog`` or ``miltenyi`` transform, ...) raises :class:`WorkspaceError` naming the
file, the sample and the element; nothing is skipped silently. A ``CurlyQuad`` holds only its crosshair
and quadrant; its curved arms are FlowJo's own undocumented computation (see ``_curly_quad_message``).
FlowJo 9 workspaces (``version`` 1.6x, 2.0, 3.0) and Gating-ML documents are refused with a message
saying so (FlowJo's Gating-ML export, e.g. ``8_color_ICS.xml``, is read by
:func:`flowtools.gating.gatingml.read_gatingml`).
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET  # noqa: S405 - used only to build (write) documents
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import defusedxml.ElementTree as SafeET
import numpy as np
from defusedxml import DefusedXmlException

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
from flowtools.gating.strategy import GatingStrategy
from flowtools.io.keywords import is_safe_keyword
from flowtools.transforms import (
    AsinhTransform,
    FlowJoBiexTransform,
    FlowJoLinearTransform,
    FlowJoLogTransform,
    LogicleTransform,
)

__all__ = [
    "Workspace",
    "WorkspaceError",
    "WorkspaceGroup",
    "WorkspaceSample",
    "gate_workspace_sample",
    "read_workspace",
    "workspace_rows",
    "workspace_to_template",
    "write_workspace",
]

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


# ---------------------------------------------------------------------------------------------- model


@dataclass(frozen=True)
class WorkspaceSample:
    """One sample of a workspace: its file, keywords, transforms, matrix and gate tree.

    Attributes
    ----------
    sample_id : str
        FlowJo's ``sampleID``.
    name : str
        The sample node's name (usually the FCS file name).
    fcs_name : str or None
        File name from ``DataSet/@uri`` (None when the workspace has no URI).
    keywords : mapping of str to str
        Every keyword FlowJo stored (may hold personal free text: show :meth:`safe_keywords`).
    transforms : mapping of str to transform
        FlowJo parameter name (``"Comp-CD4 PE-Cy7 FLR-A"`` included) -> transform.
    matrix : SpilloverMatrix or None
        The sample's compensation (None: uncompensated).
    matrix_id : str or None
        Id of ``matrix`` in :attr:`strategy` (FlowJo's matrix name).
    strategy : GatingStrategy
        Gates with population paths as ids (plus ``#inside`` helpers for outside-gates).
    paths : tuple of str
        FlowJo population paths, in document order.
    flowjo_counts : mapping of str to int
        Path -> FlowJo's recorded ``count`` (-1 where FlowJo did not compute it).
    total_count : int or None
        FlowJo's count of all events (``SampleNode/@count``).
    """

    sample_id: str
    name: str
    fcs_name: str | None
    keywords: Mapping[str, str] = field(repr=False)
    transforms: Mapping[str, Any] = field(repr=False)
    matrix: SpilloverMatrix | None
    matrix_id: str | None
    strategy: GatingStrategy = field(repr=False)
    paths: tuple[str, ...]
    flowjo_counts: Mapping[str, int] = field(repr=False)
    total_count: int | None

    def safe_keywords(self) -> dict[str, str]:
        """Structural keywords only (no ``$SRC``, ``$OP``, ``$FIL``, patient fields, ...)."""
        return {k: v for k, v in self.keywords.items() if is_safe_keyword(k)}

    def parent(self, path: str) -> str | None:
        """Parent path of a population (None at the root)."""
        return self.strategy.populations[path].parent

    def gate(self, path: str) -> Gate:
        """The gate of a population path (the ``not`` gate for an outside-gate)."""
        return self.strategy.populations[path].gate


@dataclass(frozen=True)
class WorkspaceGroup:
    """A FlowJo group: member sample ids and the paths of the group's template gates."""

    name: str
    sample_ids: tuple[str, ...]
    gate_paths: tuple[str, ...]


@dataclass(frozen=True)
class Workspace:
    """A parsed FlowJo workspace.

    Attributes
    ----------
    path : str
    flowjo_version : str
    groups : mapping of str to WorkspaceGroup
        In document order.
    samples : mapping of str to WorkspaceSample
        By sample id, in document order.
    matrices : mapping of str to SpilloverMatrix
        The shared ``Matrices`` section, by matrix name.
    """

    path: str
    flowjo_version: str
    groups: Mapping[str, WorkspaceGroup]
    samples: Mapping[str, WorkspaceSample]
    matrices: Mapping[str, SpilloverMatrix] = field(default_factory=dict)

    def sample(self, key: str) -> WorkspaceSample:
        """A sample by id, name or FCS file name."""
        if key in self.samples:
            return self.samples[key]
        for s in self.samples.values():
            if key in (s.name, s.fcs_name):
                return s
        msg = f"no sample {key!r}; samples are {[s.name for s in self.samples.values()]}"
        raise WorkspaceError(self.path, msg)

    def group_samples(self, group: str) -> list[WorkspaceSample]:
        """The samples of a group, in the group's order."""
        if group not in self.groups:
            raise WorkspaceError(self.path, f"no group {group!r}; groups are {list(self.groups)}")
        return [self.samples[i] for i in self.groups[group].sample_ids if i in self.samples]


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


class _Reader:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)

    def fail_for(self, element: str) -> Any:
        return lambda msg: WorkspaceError(self.path, msg, element=element)

    def read(self) -> Workspace:
        try:
            root = SafeET.parse(self.path).getroot()
        except DefusedXmlException as exc:
            raise WorkspaceError(self.path, f"refused unsafe XML ({type(exc).__name__})") from None
        except ET.ParseError as exc:
            raise WorkspaceError(self.path, f"not well-formed XML: {exc}") from None
        except OSError as exc:
            raise WorkspaceError(self.path, f"cannot read: {exc.strerror or exc}") from None
        if _local(root.tag) != "Workspace":
            msg = f"root element is <{_local(root.tag)}>, not a FlowJo <Workspace>"
            if root.tag == G + "Gating-ML":
                msg += (
                    ": this is a Gating-ML 2.0 document (gates without FlowJo's samples, groups or counts); "
                    "read it with flowtools.gating.gatingml.read_gatingml or `flowtools gml`"
                )
            raise WorkspaceError(self.path, msg)
        if root.get("version") in _FLOWJO9_VERSIONS:
            msg = (
                f"FlowJo 9 workspace (version {root.get('version')!r}): its layout (workspace-wide "
                "transforms and compensation, pre-2.0 Gating-ML gates) is not the FlowJo 10 one "
                "flowtools reads; open and save it in FlowJo 10"
            )
            raise WorkspaceError(self.path, msg, element="<Workspace version>")
        version = root.get("flowJoVersion") or root.get("version") or ""
        shared: dict[str, SpilloverMatrix] = {}
        shared_names: dict[str, tuple[str, dict[str, str]]] = {}  # id or name -> (name, param names)
        mats = root.find("Matrices")
        for m in mats.findall(T + "spilloverMatrix") if mats is not None else []:
            name, matrix, names = _matrix_from_element(
                m, self.path, self.fail_for(f"Matrices/{m.get('name')}")
            )
            shared[name] = matrix
            shared_names[name] = (name, names)
            if m.get(T + "id"):
                shared_names[m.get(T + "id", "")] = (name, names)
        samples: dict[str, WorkspaceSample] = {}
        slist = root.find("SampleList")
        if slist is None:
            raise WorkspaceError(self.path, "no <SampleList>")
        for s_el in slist.findall("Sample"):
            ws = self._sample(s_el, shared, shared_names)
            samples[ws.sample_id] = ws
        groups: dict[str, WorkspaceGroup] = {}
        gnode_parent = root.find("Groups")
        for gn in gnode_parent.findall("GroupNode") if gnode_parent is not None else []:
            gname = gn.get("name", "")
            refs = gn.find("Group/SampleRefs")
            ids = tuple(r.get("sampleID", "") for r in refs.findall("SampleRef")) if refs is not None else ()
            for sid in ids:
                if sid not in samples:
                    raise WorkspaceError(
                        self.path,
                        f"group {gname!r} refers to unknown sample id {sid!r}",
                        element=f"GroupNode {gname!r}",
                    )
            gpaths = _group_paths(gn.find("Subpopulations"), None)
            groups[gname] = WorkspaceGroup(gname, ids, tuple(gpaths))
        return Workspace(self.path, version, groups, samples, shared)

    def _sample(
        self,
        s_el: ET.Element,
        shared: Mapping[str, SpilloverMatrix],
        shared_names: Mapping[str, tuple[str, dict[str, str]]],
    ) -> WorkspaceSample:
        node = s_el.find("SampleNode")
        ds = s_el.find("DataSet")
        sid = (node.get("sampleID") if node is not None else None) or (
            ds.get("sampleID") if ds is not None else None
        )
        if node is None or sid is None:
            raise WorkspaceError(
                self.path, "a <Sample> needs a <SampleNode> with a sampleID", element="Sample"
            )
        name = node.get("name", sid)
        who = f"sample {name!r} (id {sid})"
        fail = self.fail_for(who)
        uri = ds.get("uri") if ds is not None else None
        fcs_name = Path(unquote(urlparse(uri).path)).name if uri else None
        transforms: dict[str, Any] = {}
        tr_el = s_el.find("Transformations")
        for t_el in tr_el if tr_el is not None else []:
            pname, t = _transform_from_element(t_el, self.fail_for(f"{who}, <Transformations>"))
            transforms[pname] = t
        keywords: dict[str, str] = {}
        kw_el = s_el.find("Keywords")
        for k in kw_el.findall("Keyword") if kw_el is not None else []:
            keywords[k.get("name", "")] = k.get("value", "")
        matrix, matrix_id, comp_names = None, None, {}
        m_els = s_el.findall(T + "spilloverMatrix")
        if len(m_els) > 1:
            msg = "more than one spilloverMatrix in one sample is not supported"
            raise fail(msg)
        if m_els:
            m = m_els[0]
            if m.find(T + "spillover") is None:  # a reference to a shared matrix, by id or by name
                refs = [r for r in (m.get(T + "id"), m.get("name")) if r]
                hit = next((r for r in refs if r in shared_names), None)
                if hit is None:
                    msg = (
                        f"spilloverMatrix refers to {' / '.join(map(repr, refs)) or 'nothing'}, "
                        f"which is not in <Matrices> (it holds {sorted(shared)})"
                    )
                    raise fail(msg)
                matrix_id, comp_names = shared_names[hit]
                matrix = shared[matrix_id]
            else:
                matrix_id, matrix, comp_names = _matrix_from_element(m, self.path, fail)
        else:
            # no matrix of its own: 'Comp-' names may still refer to the workspace's shared matrix
            if len(shared) == 1:
                ((matrix_id, matrix),) = shared.items()
                comp_names = shared_names[matrix_id][1]
        others = frozenset(n for _, names in shared_names.values() for n in names) - set(comp_names)
        builder = _SampleBuilder(self, who, transforms, matrix_id, comp_names, others)
        builder.walk(node.find("Subpopulations"), None)
        known = {g.id for g in builder.gates}
        for g in builder.gates:
            if isinstance(g, BooleanGate):
                for ref, _ in g.refs:
                    if ref not in known:
                        raise WorkspaceError(
                            self.path,
                            f"refers to unknown population {ref!r}",
                            element=f"{who}, population {g.id!r}, <Dependent>",
                        )
        used_matrix = (
            {matrix_id: matrix}
            if matrix is not None
            and matrix_id is not None
            and any(d.compensation == matrix_id for g in builder.gates for d in getattr(g, "dimensions", ()))
            else {}
        )
        try:
            strategy = GatingStrategy(tuple(builder.gates), dict(builder.used_transforms), used_matrix)
        except GatingError as exc:
            raise fail(str(exc)) from None
        try:
            total = int(node.get("count", "")) if node.get("count") is not None else None
        except ValueError:
            total = None
        return WorkspaceSample(
            sid,
            name,
            fcs_name,
            keywords,
            transforms,
            matrix,
            matrix_id,
            strategy,
            tuple(builder.paths),
            builder.counts,
            total,
        )


def _group_paths(sub: ET.Element | None, parent: str | None) -> list[str]:
    out: list[str] = []
    if sub is None:
        return out
    for node in sub:
        tag = _local(node.tag)
        if tag in ("Population", *_BOOLEAN_NODES) and node.get("name"):
            path = f"{parent}/{node.get('name')}" if parent else node.get("name", "")
            out.append(path)
            out += _group_paths(node.find("Subpopulations"), path)
    return out


def read_workspace(path: str | os.PathLike[str]) -> Workspace:
    """Read a FlowJo workspace.

    Parameters
    ----------
    path : str or PathLike
        A ``.wsp`` (FlowJo 10) or FlowJo XML workspace.

    Returns
    -------
    Workspace

    Raises
    ------
    WorkspaceError
        Malformed XML, unsafe XML (entities), or an element flowtools does not support; the message
        names the file, the sample and the element.
    """
    return _Reader(path).read()


# ---------------------------------------------------------------------------------------------- gating


def gate_workspace_sample(sample: WorkspaceSample, fcs: Any) -> Any:
    """Evaluate a workspace sample's gates on its FCS file.

    Parameters
    ----------
    sample : WorkspaceSample
    fcs : FCSSample
        The sample's data (:func:`flowtools.io.read_fcs`).

    Returns
    -------
    GatingResult
        Masks by population path (``#inside`` helpers included).
    """
    from flowtools.gating.engine import gate_sample

    return gate_sample(sample.strategy, fcs, sample_id=sample.name)


def workspace_rows(sample: WorkspaceSample, result: Any) -> list[dict[str, Any]]:
    """Population-table rows with FlowJo's count beside ours.

    Returns
    -------
    list of dict
        ``sample_id, population, count, pct_parent, pct_total, flowjo_count, count_difference``
        (``count - flowjo_count``; empty when FlowJo recorded no count), one per FlowJo path.
    """
    counts = result.counts()
    n = result.n_events
    out = []
    for path in sample.paths:
        c = counts[path]
        parent = sample.parent(path)
        pn = counts[parent] if parent is not None else n
        fj = sample.flowjo_counts.get(path, -1)
        out.append(
            {
                "sample_id": sample.name,
                "population": path,
                "count": c,
                "pct_parent": 100.0 * c / pn if pn else float("nan"),
                "pct_total": 100.0 * c / n if n else float("nan"),
                "flowjo_count": fj if fj >= 0 else None,
                "count_difference": c - fj if fj >= 0 else None,
            }
        )
    return out


# ---------------------------------------------------------------------------------------------- template


def _yaml_num(x: float | None) -> str:
    if x is None:
        return "null"
    return repr(float(x))


def workspace_to_template(
    ws: Workspace, group: str, *, sample: str | None = None, matrix_csv: str | None = None
) -> str:
    """A static-gate YAML template (see README "Gating templates") from a group's gate tree.

    FlowJo keeps one gate tree per sample; the tree of ``sample`` (default: the group's first
    sample) is written. Linear, log and biex dimensions are written untransformed with FlowJo's own
    data-value coordinates (exact for rectangles and ranges; polygons and ellipses only on linear
    scales); logicle and arcsinh dimensions keep their transform.

    Parameters
    ----------
    ws : Workspace
    group : str
    sample : str, optional
        Sample id or name whose tree is written.
    matrix_csv : str, optional
        Path to write into ``compensation:`` when the gates use compensated dimensions (the caller
        writes the matrix there, e.g. with ``SpilloverMatrix.to_csv_text``).

    Returns
    -------
    str
        YAML text accepted by :func:`flowtools.gating.template.load_template`.
    """
    members = ws.group_samples(group)
    if sample is not None:
        s = ws.sample(sample)
    elif members:
        s = members[0]
    else:
        raise WorkspaceError(ws.path, f"group {group!r} has no samples, so no gate tree to write")
    fail = lambda msg: WorkspaceError(ws.path, msg, element=f"sample {s.name!r}")  # noqa: E731
    comp = "uncompensated"
    if any(d.compensation != UNCOMPENSATED for g in s.strategy.gates for d in getattr(g, "dimensions", ())):
        if matrix_csv is None:
            msg = "the gates use compensated dimensions: give matrix_csv for the template's compensation"
            raise fail(msg)
        comp = matrix_csv
    channel_tf: dict[str, str] = {}

    def keep(dim: Dimension) -> Any:
        """The transform to keep on this dimension in the template (None: raw data values)."""
        t = s.strategy.transforms.get(dim.transform) if dim.transform else None
        if isinstance(t, LogicleTransform):
            channel_tf[dim.name] = f"{{logicle: {{T: {t.T!r}, W: {t.W!r}, M: {t.M!r}, A: {t.A!r}}}}}"
            return t
        if isinstance(t, AsinhTransform):
            channel_tf[dim.name] = f"{{asinh: {{T: {t.T!r}, M: {t.M!r}, A: {t.A!r}}}}}"
            return t
        return None

    def raw(dim: Dimension, v: float | None, kept: Any) -> float | None:
        if v is None or kept is not None or dim.transform is None:
            return v
        return float(np.asarray(s.strategy.transforms[dim.transform].inverse(np.array([v])))[0])

    lines: list[str] = []
    wanted = set(s.paths)
    for path in [p for p in s.strategy.populations if p in wanted]:  # references before boolean gates
        g = s.gate(path)
        parent = s.parent(path)
        name = path.rsplit("/", 1)[-1]
        head = [f"  - name: {_q(name)}", f"    parent: {_q(parent) if parent else 'root'}"]
        if isinstance(g, BooleanGate):
            if g.op == "not" and g.refs[0][0] == path + INSIDE_SUFFIX:
                g = s.strategy.gate(path + INSIDE_SUFFIX)
                if not isinstance(g, RectangleGate | PolygonGate | EllipsoidGate):
                    msg = f"{path}: unsupported outside-gate"
                    raise fail(msg)
                outside = True
            else:
                of = ", ".join(_q(("!" if c else "") + r) for r, c in g.refs)
                lines += [*head, "    method: bool", f"    args: {{op: {g.op}, of: [{of}]}}"]
                continue
        else:
            outside = False
        dims = g.dimensions
        kept = [keep(d) for d in dims]
        linear = [
            d.transform is None or isinstance(s.strategy.transforms[d.transform], FlowJoLinearTransform)
            for d in dims
        ]
        dim_txt = "[" + ", ".join(_q(d.name) for d in dims) + "]"
        if outside:
            inner = f"{name} (inside)"
            lines += [
                f"  - name: {_q(inner)}",
                head[1],
                f"    dims: {dim_txt}",
                "    gate: " + _gate_yaml(g, dims, kept, linear, raw, fail, path),
            ]
            inner_path = f"{parent}/{inner}" if parent else inner
            lines += [*head, "    method: bool", f"    args: {{op: not, of: [{_q(inner_path)}]}}"]
            continue
        lines += [
            *head,
            f"    dims: {dim_txt}",
            "    gate: " + _gate_yaml(g, dims, kept, linear, raw, fail, path),
        ]
    tf = ["transforms:", "  fluorescence: none", "  scatter: none", "  time: none"]
    if channel_tf:
        tf.append("  channels:")
        tf += [f"    {_q(k)}: {v}" for k, v in sorted(channel_tf.items())]
    header = [
        f"name: {_q(f'{Path(ws.path).stem} {group}')}",
        f"compensation: {_q(comp)}",
        *tf,
        "populations:",
    ]
    return "\n".join([*header, *lines]) + "\n"


def _q(text: str) -> str:
    """A double-quoted YAML scalar."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _gate_yaml(
    g: Gate,
    dims: Sequence[Dimension],
    kept: Sequence[Any],
    linear: Sequence[bool],
    raw: Any,
    fail: Any,
    path: str,
) -> str:
    if isinstance(g, RectangleGate):
        pairs = [
            f"[{_yaml_num(raw(d, lo, k))}, {_yaml_num(raw(d, hi, k))}]"
            for d, lo, hi, k in zip(dims, g.mins, g.maxs, kept, strict=True)
        ]
        if len(dims) == 1:
            return f"{{range: {pairs[0]}}}"
        return "{rectangle: [" + ", ".join(pairs) + "]}"
    nonlinear = [d.name for d, k, ok in zip(dims, kept, linear, strict=True) if k is None and not ok]
    if nonlinear:
        msg = (
            f"{path}: a {type(g).__name__} on FlowJo biex/log scale ({nonlinear}) cannot be written "
            "as a template gate (its shape is not preserved on the raw scale)"
        )
        raise fail(msg)
    if isinstance(g, PolygonGate):
        vs = ", ".join(
            f"[{_yaml_num(raw(dims[0], x, kept[0]))}, {_yaml_num(raw(dims[1], y, kept[1]))}]"
            for x, y in g.vertices
        )
        return "{polygon: [" + vs + "]}"
    if isinstance(g, EllipsoidGate):
        # affine per-dimension maps: an ellipse stays an ellipse
        scale = np.ones(len(dims))
        shift = np.zeros(len(dims))
        for i, (d, k) in enumerate(zip(dims, kept, strict=True)):
            if k is None and d.transform is not None:
                lo, hi = raw(d, 0.0, None), raw(d, 1.0, None)
                scale[i], shift[i] = hi - lo, lo
        mean = np.array(g.mean) * scale + shift
        cov = np.array(g.covariance) * np.outer(scale, scale)
        return (
            "{ellipse: {mean: ["
            + ", ".join(_yaml_num(m) for m in mean)
            + "], covariance: ["
            + ", ".join("[" + ", ".join(_yaml_num(c) for c in row) + "]" for row in cov)
            + f"], distance_square: {_yaml_num(g.distance_square)}}}}}"
        )
    msg = f"{path}: {type(g).__name__} cannot be written as a template gate"
    raise fail(msg)


# ---------------------------------------------------------------------------------------------- export


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
    """An :class:`ExportSample` from a resolved template sample (:func:`flowtools.gating.template.resolve`).

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
