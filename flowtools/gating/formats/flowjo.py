"""FlowJo workspaces (FlowJo 10 .wsp, or the same XML under another name): import.

A workspace's gate tree becomes a YAML template with :func:`workspace_to_template`
(:mod:`.flowjo_template`); resolved template samples are written as a workspace by
:mod:`.flowjo_export`.

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
and quadrant; its curved arms are FlowJo's own undocumented computation (see
``_flowjo_xml._curly_quad_message``).
FlowJo 9 workspaces (``version`` 1.6x, 2.0, 3.0) and Gating-ML documents are refused with a message
saying so (FlowJo's Gating-ML export, e.g. ``8_color_ICS.xml``, is read by
:func:`flowtools.gating.formats.gatingml.read_gatingml`).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET  # noqa: S405 - used only to build (write) documents
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from flowtools.compensation import SpilloverMatrix
from flowtools.errors import GatingError
from flowtools.gating.formats._flowjo_xml import (
    _BOOLEAN_NODES,
    _FLOWJO9_VERSIONS,
    INSIDE_SUFFIX,
    G,
    T,
    WorkspaceError,
    _local,
    _matrix_from_element,
    _SampleBuilder,
    _transform_from_element,
)
from flowtools.gating.formats.flowjo_template import workspace_to_template
from flowtools.gating.gates import BooleanGate, Gate
from flowtools.gating.strategy import GatingStrategy
from flowtools.io.keywords import is_safe_keyword

__all__ = [
    "INSIDE_SUFFIX",
    "Workspace",
    "WorkspaceError",
    "WorkspaceGroup",
    "WorkspaceSample",
    "gate_workspace_sample",
    "read_workspace",
    "workspace_rows",
    "workspace_to_template",
]


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
                    "read it with flowtools.gating.formats.gatingml.read_gatingml or `flowtools gml`"
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
