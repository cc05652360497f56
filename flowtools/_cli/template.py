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

import json
import sys
import warnings
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
    from flowtools.gating.templates.methods_doc import (
        allowed_text,
        default_text,
        md_text,
        method_records,
        methods_markdown,
    )

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
            table.add_row(escape(r["name"]), escape(r["dims_text"]), escape(md_text(r["summary"])))
        console.print(table)
        console.print("[dim]flowtools template methods NAME: its arguments; --markdown: a reference.[/]",
                      highlight=False)
        return
    (r,) = records
    kind = "resolved from other populations" if r["kind"] == "resolver" else "data-driven"
    console.print(f"[bold]{escape(r['name'])}[/]  dims {escape(r['dims_text'])}  ({kind})", highlight=False)
    console.print(escape(md_text(r["summary"])), highlight=False)
    if r["description"]:
        console.print()
        console.print(escape(md_text(r["description"])), highlight=False)
    console.print()
    if not r["args"]:
        console.print("no arguments", highlight=False)
        return
    table = Table("argument", "type", "default", "allowed", "meaning", box=None, header_style="bold")
    for a in r["args"]:
        table.add_row(escape(a["name"]), escape(a["type"]), escape(default_text(a)),
                      escape(allowed_text(a)), escape(md_text(a["doc"])))
    console.print(table, highlight=False)


# --------------------------------------------------------------------------------------------- init


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
    from flowtools.gating.templates.starter import starter_template
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
