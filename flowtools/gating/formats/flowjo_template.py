"""A FlowJo workspace's gate tree as a static-gate YAML template (see README "Gating templates")."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from flowtools.gating.formats._flowjo_xml import INSIDE_SUFFIX, WorkspaceError
from flowtools.gating.gates import (
    UNCOMPENSATED,
    BooleanGate,
    Dimension,
    EllipsoidGate,
    Gate,
    PolygonGate,
    RectangleGate,
)
from flowtools.provenance import atomic_write_text
from flowtools.transforms import AsinhTransform, FlowJoLinearTransform, LogicleTransform

if TYPE_CHECKING:
    from flowtools.gating.formats.flowjo import Workspace, WorkspaceSample

__all__ = ["TemplateFiles", "matrix_path_for", "workspace_to_template", "write_workspace_template"]

MATRIX_SUFFIX = ".matrix.csv"


class TemplateFiles(NamedTuple):
    """The files :func:`write_workspace_template` wrote.

    Attributes
    ----------
    template : pathlib.Path
        The YAML template, as given.
    matrix : pathlib.Path or None
        The spillover matrix CSV beside it (None when no gate uses a compensated dimension).
    """

    template: Path
    matrix: Path | None


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
        Path written verbatim into ``compensation:`` when the gates use compensated dimensions (the
        caller writes the matrix there, e.g. with ``SpilloverMatrix.to_csv_text``).
        :func:`~flowtools.gating.templates.load_template` resolves a relative path against the
        template file's folder, not the working directory: give a path relative to where the
        template will be written (or an absolute one). :func:`write_workspace_template` does this.

    Returns
    -------
    str
        YAML text accepted by :func:`flowtools.gating.templates.load_template`.
    """
    s = _pick_sample(ws, group, sample)
    fail = lambda msg: WorkspaceError(ws.path, msg, element=f"sample {s.name!r}")  # noqa: E731
    comp = "uncompensated"
    if _compensation_ids(s):
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


def write_workspace_template(
    ws: Workspace, group: str, out: str | os.PathLike[str], *, sample: str | None = None
) -> TemplateFiles:
    """Write a group's gate tree as a template at ``out``, with its matrix CSV beside it.

    When the gates use compensated dimensions, the sample's spillover matrix is written to
    :func:`matrix_path_for` ``(out)`` (same folder, ``<stem>.matrix.csv``) and the template's
    ``compensation:`` names that file by its bare name, so it resolves against the template's own
    folder: the template loads from any working directory and keeps working when the folder is
    moved as a whole. Both files are written atomically (temporary file + rename), the matrix
    first, so a template on disk always has its matrix; nothing is written when the conversion
    fails.

    Parameters
    ----------
    ws : Workspace
    group : str
        Group whose gate tree is written.
    out : path
        The YAML template to write (relative to the working directory or absolute); missing
        folders are created.
    sample : str, optional
        Sample id or name whose tree is written (default: the group's first sample).

    Returns
    -------
    TemplateFiles
        ``(template, matrix)``: the paths written; ``matrix`` is None when not needed.

    Raises
    ------
    WorkspaceError
        The tree cannot be written as a template (see :func:`workspace_to_template`), or its gates
        use more than one matrix.
    """
    out = Path(out)
    s = _pick_sample(ws, group, sample)
    ids = _compensation_ids(s)
    matrix_path = None
    matrix_text = None
    if ids:
        if len(ids) > 1:
            msg = f"the gates use {len(ids)} matrices {sorted(ids)}; a template holds one"
            raise WorkspaceError(ws.path, msg, element=f"sample {s.name!r}")
        (mid,) = ids
        matrix = s.strategy.matrices.get(mid, s.matrix)
        if matrix is None:
            msg = f"the gates use matrix {mid!r}, which the workspace does not define"
            raise WorkspaceError(ws.path, msg, element=f"sample {s.name!r}")
        matrix_path = matrix_path_for(out)
        matrix_text = matrix.to_csv_text()
    text = workspace_to_template(
        ws, group, sample=sample, matrix_csv=matrix_path.name if matrix_path is not None else None
    )
    if matrix_path is not None and matrix_text is not None:
        atomic_write_text(matrix_path, matrix_text)
    atomic_write_text(out, text)
    return TemplateFiles(out, matrix_path)


def matrix_path_for(template: str | os.PathLike[str]) -> Path:
    """Where :func:`write_workspace_template` puts a template's matrix: ``<stem>.matrix.csv`` beside it.

    Examples
    --------
    >>> matrix_path_for("runs/tbnk.yaml").as_posix()
    'runs/tbnk.matrix.csv'
    """
    p = Path(template)
    return p.with_name(p.stem + MATRIX_SUFFIX) if p.suffix else p.with_name(p.name + MATRIX_SUFFIX)


def _pick_sample(ws: Workspace, group: str, sample: str | None) -> WorkspaceSample:
    """The sample whose tree is written: ``sample`` if given, else the group's first."""
    members = ws.group_samples(group)
    if sample is not None:
        return ws.sample(sample)
    if members:
        return members[0]
    raise WorkspaceError(ws.path, f"group {group!r} has no samples, so no gate tree to write")


def _compensation_ids(s: WorkspaceSample) -> set[str]:
    """The matrices the sample's gate dimensions are compensated with."""
    return {
        d.compensation
        for g in s.strategy.gates
        for d in getattr(g, "dimensions", ())
        if d.compensation != UNCOMPENSATED
    }


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
