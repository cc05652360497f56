"""Gating templates in YAML: static and data-driven gates, validated, resolved per sample.

A template names its tube, its compensation, its transforms and a list of
populations. Each population has a name, a parent (a path, or a name that is
unique in the template), dimensions by marker (``$PnS``) or channel (``$PnN``)
and either a static ``gate`` or a data-driven ``method`` with typed ``args``
(see :mod:`flowtools.gating.methods`). Full paths are the identity, so the same
name may appear under different parents.

:func:`load_template` validates the whole file before any FCS file is touched
(errors name the file, line, population and field). :func:`resolve` turns the
template into plain gates for each sample (data-driven gates computed on the
parent's events, optionally pooled over a group of samples), evaluates them and
keeps them, so each sample's gates export to Gating-ML 2.0 and re-apply to the
same counts anywhere.

The format, with a complete example, is documented in the README
("Gating templates").
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flowtools.compensation import SpilloverMatrix
from flowtools.errors import ChannelError, CompensationError, GatingError, TemplateError
from flowtools.gating.engine import GatingResult, _Evaluator, sample_events
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
from flowtools.io.fcs import FCSSample

__all__ = [
    "PopulationSpec",
    "ResolvedSample",
    "Template",
    "TransformSpec",
    "compute_pooled",
    "load_template",
    "pool_values",
    "resolve",
]

ROOT = "root"
_RESOLVER_METHODS = ("ref", "bool")
_TRANSFORM_KINDS = {"logicle": ("T", "W", "M", "A"), "hyperlog": ("T", "W", "M", "A"), "asinh": ("T", "M", "A"),
                    "log": ("T", "M"), "linear": ("T", "A"), "none": ()}
_SIGNS = ("++", "+-", "-+", "--")
_POOL_PER_SAMPLE = 20_000  # events per sample when a gate is computed on a pooled group


# ------------------------------------------------------------------------------------------ YAML


def _yaml_load(text: str, where: str) -> Any:
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    def construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[str, Any]:
        mapping = _LineDict(loader.construct_mapping(node, deep=True))
        mapping.line = node.start_mark.line + 1
        keys = [loader.construct_object(k, deep=True) for k, _ in node.value]
        dupes = sorted({str(k) for k in keys if keys.count(k) > 1})
        if dupes:
            msg = f"{where}, line {mapping.line}: key(s) {dupes} given twice"
            raise TemplateError(msg)
        return mapping

    _Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        msg = f"{where}{line}: not valid YAML ({getattr(exc, 'problem', None) or exc})"
        raise TemplateError(msg) from None


class _LineDict(dict):  # type: ignore[type-arg]
    line: int = 0


# ------------------------------------------------------------------------------------------ model


@dataclass(frozen=True)
class TransformSpec:
    """How one class of channels is transformed: a kind and its parameters (or ``"estimate"``)."""

    kind: str
    params: Mapping[str, float] | str = field(default_factory=dict)

    def build(self, values: np.ndarray | None = None) -> Any:
        """The transform object (``None`` for ``kind == "none"``); ``values`` feed ``estimate``."""
        from flowtools import transforms as tr

        if self.kind == "none":
            return None
        if self.params == "estimate":
            p = {"T": 262144.0, "M": 4.5, "A": 0.0}
            data = np.asarray(values if values is not None else np.zeros(0))
            est = tr.estimate_logicle(data[np.isfinite(data)], T=p["T"], M=p["M"], A=p["A"])
            return est
        cls = {"logicle": tr.LogicleTransform, "hyperlog": tr.HyperlogTransform, "asinh": tr.AsinhTransform,
               "log": tr.LogTransform, "linear": tr.LinearTransform}[self.kind]
        return cls(**dict(self.params))  # type: ignore[arg-type]


@dataclass(frozen=True)
class PopulationSpec:
    """One entry of a template's population list (validated)."""

    name: str
    path: str
    parent: str  # full path of the parent ("" for the root)
    dims: tuple[str, ...]
    gate: Mapping[str, Any] | None
    method: str | None
    args: Mapping[str, Any]
    quadrants: Mapping[str, str] | None
    group_by: str | None
    line: int

    @property
    def outputs(self) -> tuple[str, ...]:
        """Population paths this entry defines (one, or one per quadrant)."""
        if self.quadrants is not None:
            base = f"{self.parent}/" if self.parent else ""
            return tuple(base + q for q in self.quadrants)
        return (self.path,)


@dataclass(frozen=True)
class Template:
    """A validated gating template."""

    name: str
    tube: str | None
    compensation: str
    transforms: Mapping[str, TransformSpec]  # "fluorescence", "scatter", "time", and per channel/marker
    populations: tuple[PopulationSpec, ...]
    source: str
    sha256: str
    description: str = ""

    @property
    def population_paths(self) -> list[str]:
        """Every population path, in resolution order."""
        return [p for spec in self.populations for p in spec.outputs]

    def dimensions(self) -> set[str]:
        """Every marker or channel the template reads."""
        out = {d for p in self.populations for d in p.dims}
        out |= {k for k in self.transforms if k not in ("fluorescence", "scatter", "time")}
        return out

    def check_sample(self, sample: FCSSample) -> dict[str, str]:
        """Map every dimension to this sample's ``$PnN``; raise ChannelError naming what is missing."""
        return _channel_map(self, sample)

    def tree(self) -> list[tuple[int, str, str]]:
        """(depth, path, description) for display."""
        out = []
        for spec in self.populations:
            how = f"{spec.method}({', '.join(f'{k}={v}' for k, v in spec.args.items())})" if spec.method else (
                f"static {next(iter(spec.gate))}" if spec.gate else "")
            for path in spec.outputs:
                out.append((path.count("/"), path, f"[{', '.join(spec.dims)}] {how}".strip()))
        return out


class _Checker:
    def __init__(self, where: str) -> None:
        self.where = where

    def err(self, line: int | None, population: str | None, fld: str | None, what: str) -> TemplateError:
        parts = [self.where + (f", line {line}" if line else "")]
        if population:
            parts.append(f"population {population!r}")
        if fld:
            parts.append(f"field {fld!r}")
        return TemplateError(": ".join([", ".join(parts), what]))


def load_template(source: str | os.PathLike[str], *, text: str | None = None) -> Template:
    """Read and validate a YAML template.

    Parameters
    ----------
    source : path
        The YAML file (or, with ``text``, a name used in messages).
    text : str, optional
        YAML text to parse instead of reading ``source``.

    Returns
    -------
    Template

    Raises
    ------
    TemplateError
        Anything wrong, naming file, line, population and field.
    """
    where = str(source)
    if text is None:
        try:
            raw = Path(source).read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            msg = f"{where}: not UTF-8 text (byte {exc.start}); save the template as UTF-8"
            raise TemplateError(msg) from None
    else:
        raw = text
    doc = _yaml_load(raw, where)
    ck = _Checker(where)
    if not isinstance(doc, dict):
        raise ck.err(None, None, None, "a template is a mapping with 'name' and 'populations'")
    known = {"name", "version", "tube", "description", "compensation", "transforms", "populations"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise ck.err(getattr(doc, "line", None), None, None, f"unknown key(s) {unknown}; allowed: {sorted(known)}")
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise ck.err(getattr(doc, "line", None), None, "name", "a template needs a name")
    comp = doc.get("compensation", FCS_COMPENSATION)
    if not isinstance(comp, str):
        raise ck.err(getattr(doc, "line", None), None, "compensation", "must be FCS, uncompensated or a CSV path")
    if comp not in (FCS_COMPENSATION, UNCOMPENSATED) and text is None:
        comp_path = (Path(source).parent / comp).resolve()
        if not comp_path.is_file():
            raise ck.err(getattr(doc, "line", None), None, "compensation", f"matrix file {comp_path} not found")
        comp = str(comp_path)
    transforms = _parse_transforms(doc.get("transforms") or {}, ck)
    pops = _parse_populations(doc.get("populations"), ck)
    tube = doc.get("tube")
    if tube is not None and not isinstance(tube, str):
        raise ck.err(getattr(doc, "line", None), None, "tube", "must be text (the sample sheet's tube name)")
    return Template(name, tube, comp, transforms, pops, where, hashlib.sha256(raw.encode("utf-8")).hexdigest(),
                    str(doc.get("description") or ""))


def _parse_transform(value: Any, ck: _Checker, line: int | None, key: str) -> TransformSpec:
    if value is None or value == "none":
        return TransformSpec("none", {})
    if not isinstance(value, dict) or len(value) != 1:
        raise ck.err(line, None, f"transforms.{key}", f"give one of {sorted(_TRANSFORM_KINDS)} with its parameters")
    (kind, params), = value.items()
    if kind not in _TRANSFORM_KINDS:
        raise ck.err(line, None, f"transforms.{key}", f"unknown transform {kind!r}; known: {sorted(_TRANSFORM_KINDS)}")
    if params == "estimate":
        if kind != "logicle":
            raise ck.err(line, None, f"transforms.{key}", "only logicle parameters can be estimated")
        return TransformSpec(kind, "estimate")
    if not isinstance(params, dict):
        raise ck.err(line, None, f"transforms.{key}", "parameters must be a mapping like {T: 262144, W: 0.5}")
    bad = sorted(set(params) - set(_TRANSFORM_KINDS[kind]))
    if bad:
        raise ck.err(line, None, f"transforms.{key}", f"{kind} takes {list(_TRANSFORM_KINDS[kind])}, not {bad}")
    missing = [p for p in _TRANSFORM_KINDS[kind] if p not in params and not (p == "A")]
    if missing:
        raise ck.err(line, None, f"transforms.{key}", f"{kind} needs {missing} (parameters: {list(_TRANSFORM_KINDS[kind])})")
    try:
        spec = TransformSpec(kind, {k: float(v) for k, v in params.items()})
    except (TypeError, ValueError):
        raise ck.err(line, None, f"transforms.{key}", f"{kind} parameters must be numbers") from None
    try:
        spec.build()
    except (ValueError, TypeError) as exc:
        raise ck.err(line, None, f"transforms.{key}", str(exc)) from None
    return spec


def _parse_transforms(section: Any, ck: _Checker) -> dict[str, TransformSpec]:
    if not isinstance(section, dict):
        raise ck.err(None, None, "transforms", "must be a mapping")
    line = getattr(section, "line", None)
    out = {"fluorescence": TransformSpec("logicle", {"T": 262144.0, "W": 0.5, "M": 4.5, "A": 0.0}),
           "scatter": TransformSpec("none", {}), "time": TransformSpec("none", {})}
    for key, value in section.items():
        if key == "channels":
            if not isinstance(value, dict):
                raise ck.err(line, None, "transforms.channels", "must map a marker or channel to a transform")
            for ch, v in value.items():
                out[str(ch)] = _parse_transform(v, ck, getattr(value, "line", line), f"channels.{ch}")
        elif key in ("fluorescence", "scatter", "time"):
            out[key] = _parse_transform(value, ck, line, key)
        else:
            raise ck.err(line, None, f"transforms.{key}", "use fluorescence, scatter, time or channels")
    return out


_STATIC_KINDS = ("range", "rectangle", "polygon", "ellipse", "quad")


def _parse_populations(items: Any, ck: _Checker) -> tuple[PopulationSpec, ...]:
    if not isinstance(items, list) or not items:
        raise ck.err(None, None, "populations", "must be a non-empty list")
    raw: list[tuple[dict[str, Any], int]] = []
    for item in items:
        line = getattr(item, "line", None)
        if not isinstance(item, dict):
            raise ck.err(line, None, "populations", "each population is a mapping with name, parent, dims")
        raw.append((item, line or 0))

    allowed = {"name", "parent", "dims", "gate", "method", "args", "quadrants", "group_by", "description"}
    specs: list[PopulationSpec] = []
    paths: dict[str, int] = {}  # path -> line
    names: dict[str, list[str]] = {}  # last segment -> paths

    def resolve_parent(parent: Any, line: int, pop: str) -> str:
        if parent in (None, ROOT, ""):
            return ""
        if not isinstance(parent, str):
            raise ck.err(line, pop, "parent", "must be a population path or name")
        if parent in paths:
            return parent
        hits = [p for p in paths if p.endswith("/" + parent)] or names.get(parent, [])
        if len(set(hits)) == 1:
            return hits[0]
        if hits:
            raise ck.err(line, pop, "parent", f"{parent!r} is ambiguous: {sorted(set(hits))}; give the full path")
        later = [str(it.get("name")) for it, _ in raw]
        hint = " (parents must be listed before their children)" if parent.split("/")[-1] in later else ""
        raise ck.err(line, pop, "parent", f"unknown parent {parent!r}{hint}; known: {sorted(paths) or ['root']}")

    for item, line in raw:
        name = item.get("name")
        if not isinstance(name, str) or not name.strip() or "/" in name:
            raise ck.err(line, None, "name", "each population needs a name without '/'")
        unknown = sorted(set(item) - allowed)
        if unknown:
            raise ck.err(line, name, None, f"unknown key(s) {unknown}; allowed: {sorted(allowed)}")
        parent = resolve_parent(item.get("parent"), line, name)
        path = f"{parent}/{name}" if parent else name
        dims = item.get("dims", [])
        if isinstance(dims, str):
            dims = [dims]
        if not isinstance(dims, list) or not all(isinstance(d, str) and d for d in dims):
            raise ck.err(line, name, "dims", "a list of markers or channel names")
        gate, method = item.get("gate"), item.get("method")
        if (gate is None) == (method is None):
            raise ck.err(line, name, None, "give either a static 'gate' or a data-driven 'method'")
        args = item.get("args") or {}
        if not isinstance(args, dict):
            raise ck.err(line, name, "args", "must be a mapping")
        quadrants = item.get("quadrants")
        group_by = item.get("group_by")
        if group_by is not None and (not isinstance(group_by, str) or method in (None, *_RESOLVER_METHODS)):
            raise ck.err(line, name, "group_by", "only for data-driven methods; a sample-sheet column (plate, tube)")
        is_quad = method == "quad" or (isinstance(gate, dict) and "quad" in gate)
        if is_quad:
            if not isinstance(quadrants, dict) or not quadrants:
                raise ck.err(line, name, "quadrants", "a quad gate maps population names to signs ++, +-, -+, --")
            if any(v not in _SIGNS for v in quadrants.values()) or len(set(quadrants.values())) != len(quadrants):
                raise ck.err(line, name, "quadrants", f"signs must be distinct, from {list(_SIGNS)}")
            if len(dims) != 2:
                raise ck.err(line, name, "dims", "a quad gate needs exactly 2 dimensions")
        elif quadrants is not None:
            raise ck.err(line, name, "quadrants", "only for quad gates")
        where = f"{ck.where}, line {line}: population {path!r}"
        if method is not None:
            if method == "ref":
                if not isinstance(args.get("population"), str):
                    raise ck.err(line, name, "args.population", "ref needs the population whose gate is reused")
                args = {**args, "population": resolve_parent(args["population"], line, name)}
                side = args.get("side", "same")
                if side not in ("same", "positive", "negative"):
                    raise ck.err(line, name, "args.side", "same, positive or negative")
            elif method == "bool":
                op = args.get("op")
                refs = args.get("of")
                if op not in ("and", "or", "not") or not isinstance(refs, list) or not refs:
                    raise ck.err(line, name, "args", "bool needs op (and/or/not) and of: [populations, '!pop' = not]")
                resolved = []
                for r in refs:
                    if not isinstance(r, str):
                        raise ck.err(line, name, "args.of", "population paths or names")
                    neg = r.startswith("!")
                    resolved.append(("!" if neg else "") + resolve_parent(r[1:] if neg else r, line, name))
                args = {"op": op, "of": resolved}
                if dims:
                    raise ck.err(line, name, "dims", "a bool population reads no dimension")
            else:
                try:
                    spec = get_method(method)
                    args = spec.check_args(dict(args), where)
                except GatingError as exc:
                    raise ck.err(line, name, "method" if "unknown gating method" in str(exc) else "args",
                                 str(exc).removeprefix(where + ": ")) from None
                if len(dims) not in spec.dims:
                    raise ck.err(line, name, "dims", f"method {method!r} takes {list(spec.dims)} dimension(s), "
                                                     f"got {len(dims)}")
        else:
            _check_static(gate, dims, ck, line, name)
        out = PopulationSpec(name, path, parent, tuple(dims), gate, method, dict(args),
                             dict(quadrants) if quadrants else None, group_by, line)
        for p in out.outputs:
            if p in paths:
                raise ck.err(line, name, "name", f"population path {p!r} is defined twice (line {paths[p]})")
            paths[p] = line
            names.setdefault(p.split("/")[-1], []).append(p)
        specs.append(out)
    return tuple(specs)


def _check_static(gate: Any, dims: list[str], ck: _Checker, line: int, name: str) -> None:
    if not isinstance(gate, dict) or len(gate) != 1:
        raise ck.err(line, name, "gate", f"one of {list(_STATIC_KINDS)}")
    (kind, value), = gate.items()
    n = len(dims)

    def nums(v: Any, what: str, *, allow_none: bool = False) -> None:
        flat = v if isinstance(v, list) else [v]
        for x in flat:
            if x is None and allow_none:
                continue
            if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
                raise ck.err(line, name, f"gate.{kind}", f"{what} must be finite numbers, got {x!r}")

    if kind == "range":
        if n != 1 or not isinstance(value, list) or len(value) != 2:
            raise ck.err(line, name, "gate.range", "range: [min, max] on exactly one dimension (null = open)")
        nums(value, "bounds", allow_none=True)
    elif kind == "rectangle":
        if not isinstance(value, list) or len(value) != n or not all(isinstance(r, list) and len(r) == 2 for r in value):
            raise ck.err(line, name, "gate.rectangle", f"one [min, max] pair per dimension ({n})")
        for r in value:
            nums(r, "bounds", allow_none=True)
    elif kind == "polygon":
        if n != 2 or not isinstance(value, list) or len(value) < 3 or not all(
                isinstance(v, list) and len(v) == 2 for v in value):
            raise ck.err(line, name, "gate.polygon", "at least 3 [x, y] vertices on exactly 2 dimensions")
        for v in value:
            nums(v, "vertices")
    elif kind == "ellipse":
        if not isinstance(value, dict) or set(value) != {"mean", "covariance", "distance_square"}:
            raise ck.err(line, name, "gate.ellipse", "needs mean, covariance and distance_square")
        try:
            EllipsoidGate("x", tuple(Dimension(d) for d in dims), tuple(value["mean"]),
                          tuple(tuple(r) for r in value["covariance"]), float(value["distance_square"]))
        except (GatingError, TypeError, ValueError) as exc:
            raise ck.err(line, name, "gate.ellipse", str(exc)) from None
    elif kind == "quad":
        if not isinstance(value, list) or len(value) != 2:
            raise ck.err(line, name, "gate.quad", "quad: [x_cut, y_cut]")
        nums(value, "cuts")
    else:
        raise ck.err(line, name, "gate", f"unknown gate {kind!r}; one of {list(_STATIC_KINDS)}")


# ------------------------------------------------------------------------------------------ per sample


def _channel_map(t: Template, sample: FCSSample) -> dict[str, str]:
    by_pnn = {c.pnn: c.pnn for c in sample.channels}
    by_pns: dict[str, list[str]] = {}
    for c in sample.channels:
        if c.pns:
            by_pns.setdefault(c.pns, []).append(c.pnn)
    out, missing = {}, []
    for d in sorted(t.dimensions()):
        if d in by_pnn:
            out[d] = d
        elif len(by_pns.get(d, [])) == 1:
            out[d] = by_pns[d][0]
        else:
            folded = [c.pnn for c in sample.channels if d.lower() in (c.pnn.lower(), c.pns.lower())]
            if len(folded) == 1:
                out[d] = folded[0]
            else:
                missing.append(d)
    if missing:
        where = sample.path.name if sample.path is not None else "sample"
        markers = [c.pns for c in sample.channels if c.pns]
        msg = (f"{where}: template {t.name!r} needs {missing}, which the file does not have; "
               f"its markers are {markers} and its channels {[c.pnn for c in sample.channels]}")
        raise ChannelError(msg, channel=missing[0], available=tuple(c.pnn for c in sample.channels))
    return out


def _kind_of(pnn: str) -> str:
    low = pnn.lower()
    if low.startswith(("fsc", "ssc")):
        return "scatter"
    if low == "time" or low.startswith("time"):
        return "time"
    return "fluorescence"


_ID_BAD = re.compile(r"[^A-Za-z0-9_.-]")


def _gate_id(path: str, taken: set[str]) -> str:
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
    """

    sample_id: str
    strategy: GatingStrategy | None
    ids: dict[str, str]
    result: GatingResult | None
    error: str | None = None
    geometry: dict[str, Geometry] = field(default_factory=dict)
    _channel: Any = field(default=None, repr=False, compare=False)

    def channel(self, pnn: str) -> np.ndarray:
        """A parameter's values for all events, compensated as the template says and not transformed.

        The same array the gates were computed from (no second read or compensation).
        """
        if self._channel is None:
            raise GatingError(self.error or "sample not resolved")
        return self._channel(pnn)

    def mask(self, path: str) -> np.ndarray:
        """Membership of a population given by its template path."""
        if self.result is None:
            raise GatingError(self.error or "sample not resolved")
        return self.result.mask(self.ids[path])

    def rows(self) -> list[dict[str, Any]]:
        """Per population path: its gate id, parent path, count, parent count, % of parent, % of total.

        ``gate_id`` is the id of the population's mask in :attr:`strategy` (and in the
        Gating-ML a run writes), so later stages look a population up by it instead of
        deriving an id from the path again. ``parent`` is the parent's path ("" for a
        population of all events) and ``parent_count`` its event count (all events at the top).
        """
        if self.result is None:
            return []
        paths = {v: k for k, v in self.ids.items()}
        out = []
        for r in self.result.rows():
            if r["population"] in paths:
                p = paths[r["population"]]
                # a template child of a quadrant/window gate has the gate's parent; find its path
                parent_id = r["parent"] or None
                while parent_id is not None and parent_id not in paths:
                    parent_id = self.strategy.population(parent_id).parent  # helper gates the template hides
                parent_count = self.result.count(parent_id) if parent_id is not None else self.result.n_events
                out.append({"population": p, "gate_id": r["population"],
                            "parent": paths[parent_id] if parent_id is not None else "",
                            "count": r["count"], "parent_count": parent_count, "pct_parent": r["pct_parent"],
                            "pct_total": r["pct_total"]})
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
        self.fcs_matrix: SpilloverMatrix | None = None
        if t.compensation == FCS_COMPENSATION:
            if sample.spillover is None:
                msg = f"{sample_id}: template {t.name!r} compensates with the file's $SPILLOVER, but it has none"
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
        self.ev = _Evaluator(self.strategy, events, sample.pnn, self.fcs_matrix, sample_id, columns)
        self.t = t
        self.dims: dict[str, Dimension] = {}
        self._rows: dict[str, np.ndarray] = {}  # population id -> its event indices (masks never change)

    def base_channel(self, pnn: str) -> np.ndarray:
        """Compensated (as the template says), untransformed values of one parameter."""
        matrix = self.fcs_matrix if self.comp_ref == FCS_COMPENSATION else self.matrices.get(self.comp_ref)
        comp = self.comp_ref if matrix is not None and pnn in matrix.detectors else UNCOMPENSATED
        return self.ev.column(Dimension(pnn, comp))

    def dimension(self, name: str) -> Dimension:
        """The engine dimension (compensation + transform) for a template dimension name."""
        if name in self.dims:
            return self.dims[name]
        pnn = self.chmap[name]
        kind = _kind_of(pnn)
        matrix = self.fcs_matrix if self.comp_ref == FCS_COMPENSATION else self.matrices.get(self.comp_ref)
        comp = self.comp_ref if matrix is not None and pnn in matrix.detectors else UNCOMPENSATED
        spec = self.t.transforms.get(name) or self.t.transforms.get(pnn) or self.t.transforms[kind]
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
            top = float(ch.pnr) if ch.pnr else float(np.nanmax(self.ev.column(Dimension(d.name, d.compensation))))
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
        divs = (QuadrantDivider(f"{gid}_x", dims[0], (geom.x_cut,)), QuadrantDivider(f"{gid}_y", dims[1], (geom.y_cut,)))
        quads, outputs = [], {}
        for qname, sign in spec.quadrants.items():
            qpath = f"{spec.parent}/{qname}" if spec.parent else qname
            qid = _gate_id(qpath, st.taken)
            locs = tuple((div.id, div.values[0] + (1.0 if s == "+" else -1.0)) for div, s in zip(divs, sign, strict=True))
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
            parts.append(RectangleGate(_gate_id(f"{spec.path}_window{k}", st.taken), dims[:1], (lo,), (hi,), parent_id))
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
        return Ellipse(tuple(v["mean"]), tuple(tuple(r) for r in v["covariance"]), float(v["distance_square"]))
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
    out = []
    for i, sid in enumerate(ids):
        st = states[i]
        if st is None:
            out.append(ResolvedSample(sid, None, {}, None, errors.get(i, "not resolved")))
            continue
        result = GatingResult(st.strategy, st.ev.n, dict(st.ev.masks), sid)
        out.append(ResolvedSample(sid, st.strategy, dict(st.ids), result, None, dict(st.geometry), st.base_channel))
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
    ctx = MethodContext(spec.path, spec.dims, st.ranges(spec.dims), seed)
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
    def fail(i: int, exc: Exception) -> None:
        errors[i] = str(exc)
        states[i] = None

    for spec in template.populations:
        if spec.path == stop_before:
            return
        live = [(i, st) for i, st in enumerate(states) if st is not None]
        if not live:
            return
        geoms: dict[int, Geometry] = {}
        if spec.path in pinned:
            geoms = {i: pinned[spec.path] for i, _ in live}
        elif spec.method is None:
            g = _static_geometry(spec)
            geoms = {i: g for i, _ in live}
        elif spec.method == "ref":
            for i, st in live:
                try:
                    geoms[i] = _ref_geometry(st, spec)
                except GatingError as exc:
                    fail(i, GatingError(f"{st.sample_id}: {exc}"))
        elif spec.method == "bool":
            for i, st in live:
                refs = tuple((st.ids[r.lstrip("!")], r.startswith("!")) for r in spec.args["of"])
                parent_id = st.ids[spec.parent] if spec.parent else None
                gid = _gate_id(spec.path, st.taken)
                try:
                    st.add([BooleanGate(gid, spec.args["op"], refs, parent_id)], {spec.path: gid})
                except GatingError as exc:
                    fail(i, GatingError(f"{st.sample_id}: {spec.path}: {exc}"))
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
                    ctx = MethodContext(spec.path, spec.dims, first.ranges(spec.dims), seed)
                    g = method.fn(values, ctx, **spec.args)
                except GatingError as exc:
                    for i in members:
                        st = states[i]
                        fail(i, GatingError(f"{st.sample_id if st else ids[i]}: {exc}"))
                    continue
                for i in members:
                    geoms[i] = g
        for i, g in geoms.items():
            st = states[i]
            if st is None:
                continue
            try:
                gates, outputs = _gates_from_geometry(st, spec, g)
                st.add(gates, outputs)
                for p in outputs:
                    st.geometry[p] = g
            except (GatingError, ValueError) as exc:
                fail(i, GatingError(f"{st.sample_id}: population {spec.path!r}: {exc}"))
