"""Templates in YAML: parse and validate a file into the model (:mod:`.model`).

:func:`load_template` validates the whole file before any FCS file is touched; every error
names the file, line, population and field. The format, with a complete example, is
documented in the README ("Gating templates").
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any

from flowtools.errors import GatingError, TemplateError
from flowtools.gating.gates import FCS_COMPENSATION, UNCOMPENSATED, Dimension, EllipsoidGate
from flowtools.gating.methods import get_method
from flowtools.gating.templates.model import _RESOLVER_METHODS, ROLES, PopulationSpec, Template, TransformSpec

__all__ = ["load_template"]

ROOT = "root"
_TRANSFORM_KINDS = {"logicle": ("T", "W", "M", "A"), "hyperlog": ("T", "W", "M", "A"),
                    "asinh": ("T", "M", "A"), "log": ("T", "M"), "linear": ("T", "A"), "none": ()}
_SIGNS = ("++", "+-", "-+", "--")


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


# ------------------------------------------------------------------------------------------ validation


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
    top = getattr(doc, "line", None)
    known = {"name", "version", "tube", "description", "compensation", "transforms", "populations", "time"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise ck.err(top, None, None, f"unknown key(s) {unknown}; allowed: {sorted(known)}")
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise ck.err(top, None, "name", "a template needs a name")
    comp = doc.get("compensation", FCS_COMPENSATION)
    if not isinstance(comp, str):
        raise ck.err(top, None, "compensation", "must be FCS, uncompensated or a CSV path")
    if comp not in (FCS_COMPENSATION, UNCOMPENSATED) and text is None:
        comp_path = (Path(source).parent / comp).resolve()
        if not comp_path.is_file():
            raise ck.err(top, None, "compensation", f"matrix file {comp_path} not found")
        comp = str(comp_path)
    transforms = _parse_transforms(doc.get("transforms") or {}, ck)
    pops = _parse_populations(doc.get("populations"), ck)
    tube = doc.get("tube")
    if tube is not None and not isinstance(tube, str):
        raise ck.err(top, None, "tube", "must be text (the sample sheet's tube name)")
    time = doc.get("time")
    if time is not None and (not isinstance(time, str) or not time):
        raise ck.err(top, None, "time", "the time parameter's $PnN or $PnS (e.g. time: HDR-T)")
    sha = hashlib.sha256(raw.encode("utf-8")).hexdigest()
    return Template(name, tube, comp, transforms, pops, where, sha, str(doc.get("description") or ""), time)


def _parse_transform(value: Any, ck: _Checker, line: int | None, key: str) -> TransformSpec:
    fld = f"transforms.{key}"
    if value is None or value == "none":
        return TransformSpec("none", {})
    if not isinstance(value, dict) or len(value) != 1:
        raise ck.err(line, None, fld, f"give one of {sorted(_TRANSFORM_KINDS)} with its parameters")
    (kind, params), = value.items()
    if kind not in _TRANSFORM_KINDS:
        raise ck.err(line, None, fld, f"unknown transform {kind!r}; known: {sorted(_TRANSFORM_KINDS)}")
    if params == "estimate":
        if kind != "logicle":
            raise ck.err(line, None, fld, "only logicle parameters can be estimated")
        return TransformSpec(kind, "estimate")
    if not isinstance(params, dict):
        raise ck.err(line, None, fld, "parameters must be a mapping like {T: 262144, W: 0.5}")
    takes = list(_TRANSFORM_KINDS[kind])
    bad = sorted(set(params) - set(takes))
    if bad:
        raise ck.err(line, None, fld, f"{kind} takes {takes}, not {bad}")
    missing = [p for p in takes if p not in params and not (p == "A")]
    if missing:
        raise ck.err(line, None, fld, f"{kind} needs {missing} (parameters: {takes})")
    try:
        spec = TransformSpec(kind, {k: float(v) for k, v in params.items()})
    except (TypeError, ValueError):
        raise ck.err(line, None, fld, f"{kind} parameters must be numbers") from None
    try:
        spec.build()
    except (ValueError, TypeError) as exc:
        raise ck.err(line, None, fld, str(exc)) from None
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

    allowed = {"name", "parent", "dims", "gate", "method", "args", "quadrants", "group_by", "role",
               "description", "expect", "on_violation"}
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
            msg = f"{parent!r} is ambiguous: {sorted(set(hits))}; give the full path"
            raise ck.err(line, pop, "parent", msg)
        later = [str(it.get("name")) for it, _ in raw]
        hint = " (parents must be listed before their children)" if parent.split("/")[-1] in later else ""
        msg = f"unknown parent {parent!r}{hint}; known: {sorted(paths) or ['root']}"
        raise ck.err(line, pop, "parent", msg)

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
            msg = "only for data-driven methods; a sample-sheet column (plate, tube)"
            raise ck.err(line, name, "group_by", msg)
        role = item.get("role")
        if role is not None and role not in ROLES:
            msg = (f"unknown role {role!r}; roles are 'qc' (acquisition and clean-up gates: time, margin, "
                   "boundary, singlets, live, debris removal) and 'counting_beads' (the counting beads of "
                   "an absolute count); leave it out otherwise")
            raise ck.err(line, name, "role", msg)
        is_quad = method == "quad" or (isinstance(gate, dict) and "quad" in gate)
        if is_quad:
            if not isinstance(quadrants, dict) or not quadrants:
                msg = "a quad gate maps population names to signs ++, +-, -+, --"
                raise ck.err(line, name, "quadrants", msg)
            signs = list(quadrants.values())
            if any(v not in _SIGNS for v in signs) or len(set(signs)) != len(signs):
                raise ck.err(line, name, "quadrants", f"signs must be distinct, from {list(_SIGNS)}")
            if len(dims) != 2:
                raise ck.err(line, name, "dims", "a quad gate needs exactly 2 dimensions")
        elif quadrants is not None:
            raise ck.err(line, name, "quadrants", "only for quad gates")
        where = f"{ck.where}, line {line}: population {path!r}"
        if method is not None:
            if method == "ref":
                if not isinstance(args.get("population"), str):
                    msg = "ref needs the population whose gate is reused"
                    raise ck.err(line, name, "args.population", msg)
                args = {**args, "population": resolve_parent(args["population"], line, name)}
                side = args.get("side", "same")
                if side not in ("same", "positive", "negative"):
                    raise ck.err(line, name, "args.side", "same, positive or negative")
            elif method == "bool":
                op = args.get("op")
                refs = args.get("of")
                if op not in ("and", "or", "not") or not isinstance(refs, list) or not refs:
                    msg = "bool needs op (and/or/not) and of: [populations, '!pop' = not]"
                    raise ck.err(line, name, "args", msg)
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
                    fld = "method" if "unknown gating method" in str(exc) else "args"
                    raise ck.err(line, name, fld, str(exc).removeprefix(where + ": ")) from None
                if len(dims) not in spec.dims:
                    msg = f"method {method!r} takes {list(spec.dims)} dimension(s), got {len(dims)}"
                    raise ck.err(line, name, "dims", msg)
        else:
            _check_static(gate, dims, ck, line, name)
        expect = _parse_expect(item.get("expect"), ck, line, name)
        on_violation = item.get("on_violation", "flag")
        if on_violation not in ("flag", "fail"):
            msg = "flag (keep the numbers, mark them) or fail (no numbers)"
            raise ck.err(line, name, "on_violation", msg)
        if "on_violation" in item and expect is None:
            raise ck.err(line, name, "on_violation", "only with expect")
        out = PopulationSpec(name, path, parent, tuple(dims), gate, method, dict(args),
                             dict(quadrants) if quadrants else None, group_by, line, role, expect,
                             on_violation)
        for p in out.outputs:
            if p in paths:
                msg = f"population path {p!r} is defined twice (line {paths[p]})"
                raise ck.err(line, name, "name", msg)
            paths[p] = line
            names.setdefault(p.split("/")[-1], []).append(p)
        specs.append(out)
    return tuple(specs)


_EXPECT_KEYS = ("pct", "pct_total", "count")


_Bounds = tuple[float | None, float | None]


def _parse_expect(value: Any, ck: _Checker, line: int, name: str) -> dict[str, _Bounds] | None:
    """``expect: {pct: [lo, hi], pct_total: [lo, hi], count: [lo, hi]}``; null = an open end."""
    if value is None:
        return None
    if not isinstance(value, dict) or not value:
        raise ck.err(line, name, "expect", f"a mapping of {list(_EXPECT_KEYS)} to [lo, hi]")
    out: dict[str, _Bounds] = {}
    for key, rng in value.items():
        if key not in _EXPECT_KEYS:
            raise ck.err(line, name, f"expect.{key}", f"unknown; use {list(_EXPECT_KEYS)} "
                         "(pct: % of parent, pct_total: % of all events, count: events)")
        ok = isinstance(rng, list) and len(rng) == 2 and all(
            v is None or (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v))
            for v in rng)
        if not ok or rng == [None, None]:
            raise ck.err(line, name, f"expect.{key}", "[lo, hi] with numbers (null = open), e.g. [40, 80]")
        lo, hi = (None if v is None else float(v) for v in rng)
        if lo is not None and hi is not None and lo > hi:
            raise ck.err(line, name, f"expect.{key}", f"lo {lo:g} is above hi {hi:g}")
        if key != "count" and any(v is not None and not 0.0 <= v <= 100.0 for v in (lo, hi)):
            raise ck.err(line, name, f"expect.{key}", "percentages lie in [0, 100]")
        out[key] = (lo, hi)
    return out


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
        pairs = isinstance(value, list) and all(isinstance(r, list) and len(r) == 2 for r in value)
        if not pairs or len(value) != n:
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

