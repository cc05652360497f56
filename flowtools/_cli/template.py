"""``flowtools template``: gating templates (YAML): check, show, diff, methods, init.

Mounted by ``flowtools.cli`` with ``app.add_typer(template_app, name="template")``. Library modules are
imported inside the commands so that ``flowtools --help`` stays light. Exit status: 0 success,
1 failure, 2 partial (some inputs failed, the rest were processed).

``template methods`` documents every ``method:`` a template may name, generated from the method
registry (:func:`flowtools.gating.methods.methods`) plus the resolver's own ``ref`` and ``bool``;
``docs/methods.md`` is its ``--markdown`` output. ``template init`` writes a starting template from one
FCS file's channels and markers (:func:`starter_template`).
"""

from __future__ import annotations

import inspect
import json
import math
import re
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from flowtools._cli._common import EXIT_FAIL, EXIT_PARTIAL, console, err_console
from flowtools._cli._common import fail as _fail
from flowtools._cli._common import progress as _progress

template_app = typer.Typer(
    help="Gating templates (YAML): start one from a file, check, show, compare across samples, list methods.",
    no_args_is_help=True,
)
#: How to regenerate docs/methods.md (quoted by the freshness test's failure message).
METHODS_DOC_COMMAND = "flowtools template methods --markdown > docs/methods.md"


# --------------------------------------------------------------------------------------------- check


@template_app.command("check")
def template_check(
    template: Annotated[Path, typer.Argument(help="Template (YAML).", show_default=False)],
    files: Annotated[
        list[Path] | None, typer.Argument(help="FCS files to check the template against.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Validate a template; with FCS files, check each has every marker and channel it needs."""
    from flowtools.errors import FlowtoolsError
    from flowtools.gating.templates import load_template
    from flowtools.io.fcs import read_fcs

    try:
        t = load_template(template)
    except (FlowtoolsError, OSError) as exc:
        if json_out:
            failure = {"template": str(template), "valid": False, "error": str(exc)}
            sys.stdout.write(json.dumps(failure) + "\n")
            raise typer.Exit(EXIT_FAIL) from None
        raise _fail(exc) from None
    report: dict[str, Any] = {"template": str(template), "valid": True, "name": t.name, "tube": t.tube,
                              "populations": len(t.population_paths), "sha256": t.sha256, "files": []}
    failed = 0
    for f in files or []:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sample = read_fcs(f, lazy=True)
            mapping = t.check_sample(sample)
            report["files"].append({"file": str(f), "ok": True, "channels": mapping})
        except (FlowtoolsError, OSError) as exc:
            failed += 1
            report["files"].append({"file": str(f), "ok": False, "error": str(exc)})
    if json_out:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        console.print(f"[green]ok[/] {escape(str(template))}: template {escape(repr(t.name))} "
                      f"(tube {escape(t.tube or 'any')}), {report['populations']} populations",
                      highlight=False, soft_wrap=True)
        for rec in report["files"]:
            if rec["ok"]:
                console.print(f"  [green]ok[/] {escape(rec['file'])}", highlight=False, soft_wrap=True)
            else:
                err_console.print(f"  [red]error:[/] {escape(rec['error'])}", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(EXIT_FAIL if failed == len(files or []) else EXIT_PARTIAL)


# --------------------------------------------------------------------------------------------- show


@template_app.command("show")
def template_show(
    template: Annotated[Path, typer.Argument(help="Template (YAML).", show_default=False)],
) -> None:
    """Print the population tree of a template, with dimensions and methods."""
    from rich.tree import Tree

    from flowtools.errors import FlowtoolsError
    from flowtools.gating.templates import load_template

    try:
        t = load_template(template)
    except (FlowtoolsError, OSError) as exc:
        raise _fail(exc) from None
    # Names, dimensions and arguments are escaped: rich would read "[l/d]" or "[dim]" as markup.
    root = Tree(f"[bold]{escape(t.name)}[/] (tube {escape(t.tube or 'any')}, "
                f"compensation {escape(t.compensation)})")
    nodes: dict[str, Any] = {"": root}
    for _depth, path, desc in t.tree():
        parent = path.rpartition("/")[0]
        label = f"[bold]{escape(path.split('/')[-1])}[/]  [dim]{escape(desc)}[/]"
        nodes[path] = nodes.get(parent, root).add(label)
    console.print(root, highlight=False)


# --------------------------------------------------------------------------------------------- diff


@template_app.command("diff")
def template_diff(
    old: Annotated[Path, typer.Argument(help="Old template.", show_default=False)],
    new: Annotated[Path, typer.Argument(help="New template.", show_default=False)],
    samples: Annotated[Path, typer.Argument(help="Sample sheet (CSV).", show_default=False)],
    out: Annotated[Path | None, typer.Option("--out", help="Folder for diff.csv and diff.png.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Per sample and population, the change in % of parent between two templates (table + plot)."""
    from flowtools.errors import FlowtoolsError
    from flowtools.gating.templates import load_template
    from flowtools.io.sample_sheet import read_sample_sheet
    from flowtools.pipeline.template_diff import diff_templates

    try:
        t_old, t_new = load_template(old), load_template(new)
        sheet = read_sample_sheet(samples, tubes=None)
        with _progress() as bar:
            task = bar.add_task("resolving both templates", total=None)
            diff = diff_templates(t_old, t_new, sheet,
                                  progress=lambda d, n: bar.update(task, completed=d, total=n))
    except (FlowtoolsError, OSError) as exc:
        raise _fail(exc) from None
    summary = sorted(diff.summary(), key=lambda r: -r["max_abs_delta"])
    if out is not None:
        from flowtools.io.tables import csv_text
        from flowtools.provenance import atomic_write_text
        from flowtools.report.plots import delta_heatmap

        atomic_write_text(out / "diff.csv", csv_text(diff.rows))
        if diff.rows:
            delta_heatmap(diff.rows, out / "diff.png", title=f"{t_new.name} - {t_old.name}: % of parent")
    if json_out:
        doc = {"summary": summary, "rows": diff.rows, "errors": diff.errors}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        table = Table("population", "samples", "mean |change|", "max |change|", box=None, header_style="bold",
                      title="change in % of parent (points), new - old", title_justify="left")
        table.columns[0].overflow = "fold"
        for r in summary:
            style = "bold red" if r["max_abs_delta"] >= 1 else ""
            table.add_row(escape(r["population"]), str(r["samples"]), f"{r['mean_abs_delta']:.2f}",
                          f"{r['max_abs_delta']:.2f}", style=style)
        console.print(table)
        for sid, why in diff.errors.items():
            err_console.print(f"[red]error:[/] {escape(sid)}: {escape(why)}", highlight=False, soft_wrap=True)
        if out is not None:
            console.print(f"wrote {out / 'diff.csv'}" + (f" and {out / 'diff.png'}" if diff.rows else ""),
                          highlight=False, soft_wrap=True, markup=False)
    if diff.errors:
        raise typer.Exit(EXIT_PARTIAL if diff.rows else EXIT_FAIL)


# --------------------------------------------------------------------------------------------- methods

#: The methods the template resolver implements itself (not in the registry), as
#: :mod:`flowtools.gating.templates.yaml` reads them. Keys must equal ``model._RESOLVER_METHODS``.
_RESOLVER_DOCS: dict[str, dict[str, Any]] = {
    "ref": {
        "dims": "as its population",
        "summary": "Reuse another population's gate, or the other side of its threshold.",
        "description": (
            "The referenced population's gate, as computed for this sample, is applied again to this "
            "population's parent; with `side: negative` (or `positive`) a 1-D threshold is turned into "
            "its other side, so a marker's positive and negative populations share one cut. The "
            "referenced population must be listed earlier and be a data-driven or static gate."
        ),
        "args": [
            {"name": "population", "type": "population", "default": None, "required": True,
             "choices": None, "lo": None, "hi": None,
             "doc": "path, or name unique in the template, of the population whose gate is reused"},
            {"name": "side", "type": "text", "default": "same", "required": False,
             "choices": ["same", "positive", "negative"], "lo": None, "hi": None,
             "doc": "same: the same gate; positive: keep x >= cut; negative: keep x < cut "
                    "(1-D thresholds only)"},
        ],
    },
    "bool": {
        "dims": "0",
        "summary": "A Boolean combination (and, or, not) of other populations of the template.",
        "description": (
            "Events of the parent that are in all (`and`), any (`or`) or none (`not`) of the listed "
            "populations; a name written `!name` stands for the events not in it. The result is a "
            "Gating-ML Boolean gate."
        ),
        "args": [
            {"name": "op", "type": "text", "default": None, "required": True,
             "choices": ["and", "or", "not"], "lo": None, "hi": None, "doc": "the operation"},
            {"name": "of", "type": "list of populations", "default": None, "required": True,
             "choices": None, "lo": None, "hi": None,
             "doc": "paths or names of populations listed earlier; '!name' = not in it"},
        ],
    },
}

_TYPE_LABELS = {float: "number", int: "integer", str: "text", bool: "true/false", tuple: "pair [a, b]"}


def _dims_text(dims: Sequence[int]) -> str:
    """``(1,)`` -> ``"1"``; ``(1, 2, 3)`` -> ``"1-3"``; runs of consecutive counts joined with commas."""
    ds = sorted(set(dims))
    runs: list[list[int]] = []
    for d in ds:
        if runs and d == runs[-1][-1] + 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def _docstring_parts(fn: Any) -> tuple[str, str]:
    """(summary line, extended summary) of a numpydoc docstring; sections (Parameters...) left out."""
    lines = inspect.cleandoc(fn.__doc__ or "").splitlines()
    for i in range(len(lines) - 1):
        under = lines[i + 1].strip()
        if lines[i].strip() and len(under) >= 3 and set(under) == {"-"}:
            lines = lines[:i]
            break
    paras = [p.strip() for p in "\n".join(lines).strip().split("\n\n") if p.strip()]
    if not paras:
        return "", ""
    return " ".join(paras[0].split()), _reflow("\n\n".join(paras[1:]))


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def method_records() -> list[dict[str, Any]]:
    """Every ``method:`` a template may name, as plain data (the ``--json`` output).

    Returns
    -------
    list of dict
        One per method: the registered methods in registry order, then ``ref`` and ``bool``.
        Keys: ``name``, ``kind`` (``"data-driven"`` or ``"resolver"``), ``dims`` (list of int, or
        None), ``dims_text``, ``summary``, ``description`` and ``args`` (list of dicts with ``name``,
        ``type``, ``default``, ``required``, ``lo``, ``hi``, ``choices``, ``doc``).
    """
    from flowtools.gating.methods import REQUIRED, methods

    out: list[dict[str, Any]] = []
    for spec in methods().values():
        summary, description = _docstring_parts(spec.fn)
        args = []
        for name, a in spec.args.items():
            required = a.default is REQUIRED
            args.append({
                "name": name, "type": _TYPE_LABELS.get(a.type, getattr(a.type, "__name__", str(a.type))),
                "default": None if required else _plain(a.default), "required": required,
                "lo": a.lo, "hi": a.hi, "choices": None if a.choices is None else list(a.choices),
                "doc": a.doc,
            })
        out.append({"name": spec.name, "kind": "data-driven", "dims": list(spec.dims),
                    "dims_text": _dims_text(spec.dims), "summary": spec.doc or summary,
                    "description": description, "args": args})
    for name, rec in _RESOLVER_DOCS.items():
        out.append({"name": name, "kind": "resolver", "dims": None, "dims_text": rec["dims"],
                    "summary": rec["summary"], "description": rec["description"],
                    "args": [dict(a) for a in rec["args"]]})
    return out


def _default_text(arg: dict[str, Any]) -> str:
    if arg["required"]:
        return "required"
    v = arg["default"]
    if v is None:
        return "not set"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(str(x) for x in v) + "]"
    return str(v)


def _allowed_text(arg: dict[str, Any], *, code: bool = False) -> str:
    if arg["choices"]:
        q = "`" if code else ""
        return ", ".join(f"{q}{c}{q}" for c in arg["choices"])
    lo, hi = arg["lo"], arg["hi"]
    if lo is not None and hi is not None:
        return f"{_num(lo)} to {_num(hi)}"
    if lo is not None:
        return f">= {_num(lo)}"
    if hi is not None:
        return f"<= {_num(hi)}"
    return ""


def _md_text(text: str) -> str:
    """Docstring text as Markdown: RST ``literals`` and :role:`targets` to `literals`."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", text)
    return re.sub(r"``(.+?)``", r"`\1`", text, flags=re.DOTALL)


def _reflow(text: str) -> str:
    """Join the wrapped lines of each paragraph; a paragraph that is a list keeps one item per line."""
    out = []
    for para in text.split("\n\n"):
        lines = [ln.strip() for ln in para.splitlines() if ln.strip()]
        if any(ln.startswith(("- ", "* ")) for ln in lines):
            items: list[str] = []
            for ln in lines:
                if ln.startswith(("- ", "* ")) or not items:
                    items.append(ln)
                else:
                    items[-1] += " " + ln
            out.append("\n".join(items))
        else:
            out.append(" ".join(lines))
    return "\n\n".join(out)


def _md_cell(text: str) -> str:
    return _md_text(text).replace("|", "\\|").replace("\n", " ")


def methods_markdown(records: Sequence[dict[str, Any]] | None = None) -> str:
    """The Markdown reference of every method (``template methods --markdown``; ``docs/methods.md``).

    Parameters
    ----------
    records : sequence of dict, optional
        Output of :func:`method_records` (default: all methods).

    Returns
    -------
    str
        Markdown text ending with a newline; the same registry gives the same bytes.
    """
    recs = list(records if records is not None else method_records())
    lines = [
        "# Gating methods",
        "",
        "<!-- Generated from the method registry by `flowtools template methods --markdown`; do not edit.",
        f"     Regenerate with: {METHODS_DOC_COMMAND} -->",
        "",
        "Every `method:` a template population may name. A data-driven method computes the population's "
        "gate from its parent's events on the population's `dims` (compensated and transformed as the "
        "template says); its arguments go under `args:` and are checked when the template is loaded "
        "(types, bounds, choices). `ref` and `bool` are resolved from other populations of the "
        "template. Static gates use `gate:` instead (range, rectangle, polygon, ellipse, quad). "
        "`flowtools template methods NAME` shows one method in the terminal.",
        "",
        "| method | dims | summary |",
        "|---|---|---|",
    ]
    for r in recs:
        link = f"[`{r['name']}`](#{r['name']})"
        lines.append(f"| {link} | {_md_cell(r['dims_text'])} | {_md_cell(r['summary'])} |")
    for r in recs:
        kind = "resolved from other populations" if r["kind"] == "resolver" else "data-driven"
        lines += ["", f"## {r['name']}", "", f"Dimensions: {r['dims_text']} ({kind}).", "",
                  _md_text(r["summary"])]
        if r["description"]:
            lines += ["", _md_text(r["description"])]
        lines.append("")
        if r["args"]:
            lines += ["| argument | type | default | allowed | meaning |", "|---|---|---|---|---|"]
            for a in r["args"]:
                default = _default_text(a)
                default = default if a["required"] or a["default"] is None else f"`{default}`"
                lines.append(f"| `{a['name']}` | {_md_cell(a['type'])} | {_md_cell(default)} | "
                             f"{_md_cell(_allowed_text(a, code=True))} | {_md_cell(a['doc'])} |")
        else:
            lines.append("No arguments.")
    return "\n".join(lines) + "\n"


@template_app.command("methods")
def template_methods(
    name: Annotated[
        str | None, typer.Argument(help="A method: show its arguments (default: list every method).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print a Markdown reference of the methods (docs/methods.md).")
    ] = False,
) -> None:
    """List the gating methods a template may use, or one method's arguments, types, defaults and bounds.

    Generated from the method registry, so it always matches what templates accept; ref and bool
    (resolved from other populations) are listed too. --json: a list of methods, or with NAME that one.
    """
    if json_out and markdown:
        raise _fail(ValueError("give --json or --markdown, not both"))
    records = method_records()
    if name is not None:
        hits = [r for r in records if r["name"] == name]
        if not hits:
            known = ", ".join(r["name"] for r in records)
            raise _fail(ValueError(f"unknown method {name!r}; methods: {known}"))
        records = hits
    if markdown:
        sys.stdout.write(methods_markdown(records))
        return
    if json_out:
        doc: Any = records[0] if name is not None else records
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    if name is None:
        table = Table("method", "dims", "summary", box=None, header_style="bold")
        table.columns[2].overflow = "fold"
        for r in records:
            table.add_row(escape(r["name"]), escape(r["dims_text"]), escape(_md_text(r["summary"])))
        console.print(table)
        console.print("[dim]flowtools template methods NAME: its arguments; --markdown: a reference.[/]",
                      highlight=False)
        return
    (r,) = records
    kind = "resolved from other populations" if r["kind"] == "resolver" else "data-driven"
    console.print(f"[bold]{escape(r['name'])}[/]  dims {escape(r['dims_text'])}  ({kind})", highlight=False)
    console.print(escape(_md_text(r["summary"])), highlight=False)
    if r["description"]:
        console.print()
        console.print(escape(_md_text(r["description"])), highlight=False)
    console.print()
    if not r["args"]:
        console.print("no arguments", highlight=False)
        return
    table = Table("argument", "type", "default", "allowed", "meaning", box=None, header_style="bold")
    for a in r["args"]:
        table.add_row(escape(a["name"]), escape(a["type"]), escape(_default_text(a)),
                      escape(_allowed_text(a)), escape(_md_text(a["doc"])))
    console.print(table, highlight=False)


# --------------------------------------------------------------------------------------------- init

# Marker names of viability (live/dead) dyes.
_VIABILITY = re.compile(
    r"viab|\blive\b|\bdead\b|live/dead|live-dead|7-?aad|\bdapi\b|^\s*pi\s*$|propidium|zombie|\baqua\b|"
    r"fixable|\bl/d\b|\bld\b|\bfvs\d*\b|\bfvd\b|sytox|ghost dye|draq-?7|to-?pro|cisplatin",
    re.IGNORECASE,
)
_DNA_MARKER = re.compile(r"^\s*dna\s*\d*\s*$|iridium|intercalator", re.IGNORECASE)
_DNA_CHANNEL = re.compile(r"^Ir19[13]Di$")
_MASS_CHANNEL = re.compile(r"^[A-Z][a-z]?\d{2,3}Di$")
_MEASURES = {"a": "A", "area": "A", "int": "A", "h": "H", "height": "H", "peak": "H", "w": "W", "width": "W"}
_MEASURE_TOKEN = re.compile(r"(lin|log)?(a|h|w|area|height|width|int|peak)")  # Sony: "FSC LinA"
_YAML_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.+\-/]*(?: [A-Za-z0-9_.+\-/]+)*")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "none"}
_LN10 = math.log(10.0)
#: asinh cofactor for mass cytometry: values become asinh(x / 5).
MASS_COFACTOR = 5.0


def _q(text: str) -> str:
    """A YAML scalar for ``text``: plain when that reads back as the same string, else double-quoted."""
    if _YAML_PLAIN.fullmatch(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text, ensure_ascii=False)


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v))


@dataclass(frozen=True)
class _Channel:
    index: int
    pnn: str
    pns: str
    kind: str
    dim: str  # how the template names it (marker, or channel when the marker is absent or ambiguous)
    marker: bool  # has a real marker ($PnS set and not just the channel name again)
    top: float  # top of its scale (for the transform's T)


def _scatter_parts(name: str) -> tuple[str | None, str, int]:
    """(family ``"F"``/``"S"``/None, measure ``"A"``/``"H"``/``"W"``/``""``, rank: tokens, log last)."""
    low = name.lower()
    tokens = [t for t in re.split(r"[^0-9a-z]+", low) if t]
    if not tokens:
        return None, "", 0
    first = tokens[0]
    fam = None
    if re.fullmatch(r"\d*(fsc|fs)", first) or "forward" in low:
        fam = "F"
    elif re.fullmatch(r"\d*(ssc|ss|bsc)", first) or "side" in low or "back" in low:
        fam = "S"
    measure = ""
    for t in tokens[1:]:
        hit = _MEASURE_TOKEN.fullmatch(t)
        if hit:
            measure = _MEASURES[hit.group(2)]
    logged = any(t.startswith("log") for t in tokens[1:])  # a log-amplified twin ranks after the linear one
    return fam, measure, len(tokens) + 10 * logged


def _channels(sample: Any) -> tuple[list[_Channel], str | None]:
    kinds = sample.channel_kinds()
    pnn = set(sample.pnn)
    pns_count: dict[str, int] = {}
    for c in sample.channels:
        if c.pns.strip():
            pns_count[c.pns.strip()] = pns_count.get(c.pns.strip(), 0) + 1
    out = []
    for c in sample.channels:
        pns = c.pns.strip()
        marker = bool(pns) and pns.lower() != c.pnn.lower()
        # A marker names the channel only when it is unique and no other channel's $PnN.
        use_marker = marker and pns_count[pns] == 1 and pns not in pnn
        decades, log0 = c.pne
        top = 10.0 ** decades * (log0 or 1.0) if decades > 0 else (c.pnr or 0.0)
        out.append(_Channel(c.index, c.pnn, pns, kinds.of(c.pnn), pns if use_marker else c.pnn, marker,
                            float(top)))
    return out, kinds.time


def _best(chans: list[_Channel], fam: str, measures: tuple[str, ...]) -> _Channel | None:
    """The scatter channel of a family with the most preferred measure (``""``: none), then shortest name."""
    cands = []
    for i, c in enumerate(chans):
        f, m, n = _scatter_parts(c.pnn)
        if c.kind == "scatter" and f == fam and m in measures:
            cands.append((measures.index(m), n, i, c))
    return min(cands, key=lambda t: t[:3])[3] if cands else None


def _singlet_pair(chans: list[_Channel]) -> tuple[_Channel, _Channel] | None:
    """The best area/height pair: forward scatter first, then side scatter; same name but the measure."""
    for fam in ("F", "S"):
        area = _best(chans, fam, ("A",))
        if area is None:
            continue
        stem = re.sub(r"(?i)[-_ ]?(a|area)$", "", area.pnn)
        for c in chans:
            f, m, _ = _scatter_parts(c.pnn)
            same = re.sub(r"(?i)[-_ ]?(h|height)$", "", c.pnn) == stem
            if c.kind == "scatter" and f == fam and m == "H" and same:
                return area, c
    return None


@dataclass
class _Pop:
    name: str
    parent: str
    dims: list[str]
    method: str
    args: dict[str, Any]
    role: str | None = None
    comment: str = ""


def _yaml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return _num(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_yaml_value(x) for x in v) + "]"
    return _q(str(v))


def starter_template(
    sample: Any, *, name: str, source: str, tube: str | None = None
) -> tuple[str, list[str]]:
    """A starting template (YAML text) for the channels and markers of one FCS file.

    Parameters
    ----------
    sample : FCSSample
        The file: its channels, markers, kinds and spillover, and its forward scatter values (is
        there debris to cut away?). No free-text keyword is read.
    name : str
        The template's name.
    source : str
        How the header comment names the file (its file name).
    tube : str, optional
        The sample sheet's tube the template applies to; left out (every tube) when None.

    Returns
    -------
    text : str
        The template. Flow files: qc (when a time parameter exists), margin, cells, singlets (when
        an area/height scatter pair exists), live (when a viability dye is among the markers),
        lymphocytes and one ``mindensity`` gate per marker. Mass cytometry files (no scatter,
        channels like ``Nd142Di``): asinh with cofactor 5, qc, cells on DNA, singlets on
        Event_length (those present), then the marker gates.
    notes : list of str
        What was left out and why (also written as comments in the template).
    """
    import numpy as np

    chans, time = _channels(sample)
    by_pnn = {c.pnn: c for c in chans}
    mass = any(_MASS_CHANNEL.match(c.pnn) for c in chans) and not any(
        _scatter_parts(c.pnn)[0] for c in chans if c.kind == "scatter")
    fluor = [c for c in chans if c.kind == "fluorescence"]
    notes: list[str] = []
    pops: list[_Pop] = []
    parent = "root"
    fsc_a = ssc_a = None

    def add(pop: _Pop) -> None:
        nonlocal parent
        pops.append(pop)
        parent = pop.name

    viability = next((c for c in fluor if c.marker and _VIABILITY.search(c.pns)), None)
    dna = [c for c in fluor
           if mass and (_DNA_CHANNEL.match(c.pnn) or (c.marker and _DNA_MARKER.search(c.pns)))]
    used = {id(c) for c in dna} | ({id(viability)} if viability is not None else set())
    if mass:
        event_length = next((c for c in chans if c.pnn.lower() in ("event_length", "event length")), None)
        if time is not None:
            watch = [c.dim for c in dna[:1]] + ([event_length.dim] if event_length is not None else [])
            add(_Pop("qc", parent, [by_pnn[time].dim, *watch], "qc", {}, "qc",
                     "acquisition anomalies over time (clogs, flow-rate gaps, signal drift)"))
        if dna:
            add(_Pop("cells", parent, [dna[0].dim], "mindensity",
                     {"side": "positive", "single_peak": "lower"}, None,
                     "nucleated cells: DNA (iridium intercalator) positive"))
        else:
            notes.append("no DNA (iridium) channel: no cells gate")
        if event_length is not None:
            add(_Pop("singlets", parent, [event_length.dim], "mindensity",
                     {"side": "negative", "single_peak": "upper"}, "qc",
                     "doublets have a longer event length"))
    else:
        fsc_a, ssc_a = _best(chans, "F", ("A", "", "H")), _best(chans, "S", ("A", "", "H"))
        scatter = [c for c in (fsc_a, ssc_a) if c is not None]
        if time is not None:
            add(_Pop("qc", parent, [by_pnn[time].dim, *(c.dim for c in scatter)], "qc", {}, "qc",
                     "acquisition anomalies over time (clogs, flow-rate gaps)"))
        else:
            notes.append("no time parameter: no qc gate")
        if scatter:
            add(_Pop("margin", parent, [c.dim for c in scatter], "boundary", {}, "qc",
                     "events piled at the ends of the scatter range"))
        if fsc_a is not None:
            # The debris/cells valley lies low on FSC: search the lowest fifth of the range (as the study
            # template's [2000, 50000] of 262144), not the valley between lymphocytes and larger cells.
            # A file without events there (exported pre-gated) gets the whole range.
            cells_args: dict[str, Any] = {"side": "positive", "single_peak": "lower"}
            low = [0, round(0.2 * fsc_a.top)]
            x = sample.scaled_column(fsc_a.index)
            n_low = int(np.count_nonzero((x >= low[0]) & (x <= low[1])))
            if fsc_a.top > 0 and n_low >= max(50, 0.01 * x.size):
                cells_args["range"] = low
            else:
                notes.append(f"{fsc_a.pnn}: only {n_low} events in [{low[0]}, {low[1]}] (no debris there): "
                             "the cells valley is searched over the whole range")
            add(_Pop("cells", parent, [fsc_a.dim], "mindensity", cells_args, None,
                     "debris out: the valley between debris and cells, low on FSC"))
        else:
            notes.append("no forward scatter: no cells gate")
        pair = _singlet_pair(chans)
        if pair is not None:
            add(_Pop("singlets", parent, [pair[0].dim, pair[1].dim], "singlet", {}, "qc",
                     "doublets fall below the area/height line"))
        else:
            notes.append("no scatter area/height pair: no singlets gate")
    if viability is not None:
        # one peak only: the cells are live, and the cut goes at its upper tail
        add(_Pop("live", parent, [viability.dim], "mindensity", {"side": "negative", "single_peak": "upper"},
                 None, f"viability dye {viability.pns}: dead cells take it up"))
    if not mass:
        if fsc_a is not None and ssc_a is not None:
            add(_Pop("lymphocytes", parent, [fsc_a.dim, ssc_a.dim], "gmm",
                     {"k": 3, "target": "lowest_y", "level": 0.99, "max_events": 10000}, None,
                     "the mixture component lowest on side scatter; check it, or give target: [x, y]"))
        else:
            notes.append("no forward and side scatter pair: no lymphocytes gate")
    # One threshold per marker; without any marker, one per fluorescence detector (area, not -H/-W twins).
    if any(c.marker for c in fluor):
        gated = [c for c in fluor if c.marker and id(c) not in used]
    else:
        areas = {c.pnn[:-2] for c in fluor if re.search(r"(?i)-a$", c.pnn)}
        gated = [c for c in fluor if id(c) not in used
                 and not (re.search(r"(?i)-[hw]$", c.pnn) and c.pnn[:-2] in areas)]
    taken = {p.name for p in pops}
    marker_parent = parent
    for c in gated:
        label = (c.pns if c.marker else c.pnn).replace("/", "-").strip() or c.pnn.replace("/", "-")
        gname = f"{label}+"
        if gname in taken:
            gname = f"{label} ({c.pnn.replace('/', '-')})+"
        taken.add(gname)
        pops.append(_Pop(gname, marker_parent, [c.dim], "mindensity", {"side": "positive"}))
    if not pops:
        msg = "the file has no time, scatter or fluorescence parameter to start a template from"
        raise ValueError(msg)

    # Transforms: logicle for fluorescence (T = the top of the detectors' scale), asinh for mass.
    tops = [c.top for c in fluor if c.top > 0]
    top = max(tops) if tops else 262144.0
    if mass:
        m = math.asinh(top / MASS_COFACTOR) / _LN10  # sinh(M ln 10) / T = 1 / 5: asinh(x / 5), 0..1 at T
        fl = f"{{asinh: {{T: {_num(top)}, M: {_num(m)}, A: 0}}}}"
        fl_note = f"asinh with cofactor {MASS_COFACTOR:g}: asinh(x / 5) / (M ln 10), 1 at T"
    else:
        fl = f"{{logicle: {{T: {_num(top)}, W: 0.5, M: 4.5, A: 0}}}}"
        fl_note = "T: the top of the detectors' range ($PnR)"
    spill = sample.spillover
    if spill is not None and set(spill.detectors) <= set(sample.pnn):
        comp, comp_note = "FCS", f"the file's {spill.keyword} ({len(spill.detectors)} detectors)"
    else:
        comp = "uncompensated"
        comp_note = ("the file has no spillover matrix" if spill is None
                     else f"its {spill.keyword} names detectors the file does not have")

    version = getattr(sample, "version", "")
    shown = "".join(ch if ch.isprintable() else "?" for ch in source)  # a comment stays one line
    lines = [
        "# Starting template written by `flowtools template init` from the channels and markers of",
        f"# {shown} (FCS {version}, {len(chans)} parameters{', mass cytometry' if mass else ''}).",
        "# Every gate is data-driven with default arguments: check it on your files (`flowtools template",
        "# check`, then `flowtools gate` and its report), adjust the arguments, and replace the marker",
        "# thresholds with the panel's hierarchy. Methods and arguments: `flowtools template methods`.",
        f"name: {_q(name)}",
        f"tube: {_q(tube)}" if tube is not None else
        "# tube: NAME              # the sample sheet's tube this template applies to (absent: every tube)",
        f"compensation: {comp}       # {comp_note}",
        "transforms:",
        f"  fluorescence: {fl}   # {fl_note}",
        "  scatter: none",
        "  time: none",
    ]
    for n in notes:
        lines.append(f"# note: {n}")
    lines.append("populations:")
    for p in pops:
        head = f"  - name: {_q(p.name)}"
        lines.append(f"{head:<30}# {p.comment}" if p.comment else head)
        if p.role:
            lines.append(f"    role: {p.role}")
        if p.parent != "root":
            lines.append(f"    parent: {_q(p.parent)}")
        lines.append(f"    dims: [{', '.join(_q(d) for d in p.dims)}]")
        lines.append(f"    method: {p.method}")
        if p.args:
            lines.append("    args: {" + ", ".join(f"{k}: {_yaml_value(v)}" for k, v in p.args.items()) + "}")
    return "\n".join(lines) + "\n", notes


def _template_name(out: Path) -> str:
    stem = out.name.removesuffix(".yaml").removesuffix(".yml") or "template"
    return stem


@template_app.command("init")
def template_init(
    fcs: Annotated[
        Path, typer.Argument(help="FCS file whose channels and markers the template starts from.",
                             show_default=False)
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Template to write (YAML).", show_default=False)],
    force: Annotated[bool, typer.Option("--force", help="Replace OUT when it exists.")] = False,
    name: Annotated[
        str | None, typer.Option(help="Template name (default: OUT's file name without .yaml).")
    ] = None,
    tube: Annotated[
        str | None, typer.Option(help="The sample sheet's tube it applies to (default: every tube).")
    ] = None,
    no_check: Annotated[
        bool, typer.Option("--no-check", help="Do not gate the file with the new template.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Write a starting template from an FCS file's channels and markers, and gate the file with it.

    Flow files get qc (time), margin, cells, singlets, live (a viability dye), lymphocytes and one
    threshold per marker; mass cytometry files get asinh (cofactor 5), DNA and event-length gates and
    the marker thresholds. Exit status 2: written, but the file could not be gated with it.
    """
    from flowtools.errors import FlowtoolsError
    from flowtools.gating.templates import load_template, resolve
    from flowtools.io.fcs import read_fcs
    from flowtools.provenance import atomic_write_text

    if out.exists() and not force:
        raise _fail(FileExistsError(f"{out} exists; give --force to replace it"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # reader repairs are for `flowtools info`, not here
            sample = read_fcs(fcs)
        text, notes = starter_template(sample, name=name or _template_name(out), source=fcs.name, tube=tube)
        t = load_template(out, text=text)  # never write a template that does not load
    except (FlowtoolsError, OSError, ValueError) as exc:
        raise _fail(exc) from None
    atomic_write_text(out, text)
    summary: dict[str, Any] = {"template": str(out), "source": str(fcs), "name": t.name, "tube": t.tube,
                               "compensation": t.compensation, "populations": t.population_paths,
                               "notes": notes, "checked": not no_check, "error": None, "failed": {},
                               "flags": {}, "counts": {}}
    if not no_check:
        res = resolve(t, [sample], sample_ids=[fcs.name])[0]
        summary["error"] = res.error
        summary["failed"] = dict(getattr(res, "failed", {}) or {})
        summary["flags"] = {p: list(v) for p, v in (getattr(res, "flags", {}) or {}).items()}
        if res.result is not None:
            counts = res.result.counts()
            summary["counts"] = {p: counts[i] for p, i in res.ids.items() if i in counts}
    bad = summary["error"] is not None or bool(summary["failed"])
    if json_out:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        console.print(f"[green]wrote[/] {escape(str(out))}: template {escape(repr(t.name))}, "
                      f"{len(t.population_paths)} populations, compensation {escape(t.compensation)}",
                      highlight=False, soft_wrap=True)
        for n in notes:
            console.print(f"  note: {escape(n)}", highlight=False, soft_wrap=True)
        if not no_check and not bad:
            flagged = f"; {len(summary['flags'])} flagged for a look" if summary["flags"] else ""
            console.print(f"  gates {escape(fcs.name)} without error ({len(summary['counts'])} populations "
                          f"computed{flagged})", highlight=False, soft_wrap=True)
        if summary["error"] is not None:
            err_console.print(f"[yellow]warning:[/] it does not gate {escape(fcs.name)}: "
                              f"{escape(summary['error'])}", highlight=False, soft_wrap=True)
        for p, why in summary["failed"].items():
            err_console.print(f"[yellow]warning:[/] {escape(p)}: {escape(why)}", highlight=False,
                              soft_wrap=True)
    if bad:
        raise typer.Exit(EXIT_PARTIAL)
