"""``flowtools wsp``: FlowJo workspaces (show, apply, to-template, export).

Mounted by ``flowtools.cli`` with ``app.add_typer(wsp_app, name="wsp")``. Library modules are imported
inside the commands so that ``flowtools --help`` stays light. Exit status: 0 success, 1 failure,
2 partial (some samples failed or had no FCS file; the rest were processed).
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.tree import Tree

wsp_app = typer.Typer(
    help="FlowJo workspaces: show, apply with FlowJo's counts beside ours, convert, export.",
    no_args_is_help=True,
)
console = Console()
err_console = Console(stderr=True)
EXIT_OK, EXIT_FAIL, EXIT_PARTIAL = 0, 1, 2

ROW_COLUMNS = (
    "sample_id",
    "population",
    "count",
    "pct_parent",
    "pct_total",
    "flowjo_count",
    "count_difference",
)


def _read(path: Path) -> Any:
    from flowtools.errors import FlowtoolsError
    from flowtools.gating.formats.flowjo import read_workspace

    try:
        return read_workspace(path)
    except FlowtoolsError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_FAIL) from None


def _describe_gate(sample: Any, path: str) -> str:
    from flowtools.gating.formats.flowjo import INSIDE_SUFFIX
    from flowtools.gating.gates import BooleanGate, gate_dimensions

    g = sample.gate(path)
    if isinstance(g, BooleanGate):
        if g.op == "not" and g.refs[0][0] == path + INSIDE_SUFFIX:
            inner = sample.strategy.gate(path + INSIDE_SUFFIX)
            return f"outside of {type(inner).__name__} [{', '.join(d.name for d in gate_dimensions(inner))}]"
        return f"{g.op}({', '.join(r for r, _ in g.refs)})"
    dims = []
    for d in gate_dimensions(g):
        dims.append(d.name if d.compensation == "uncompensated" else f"{d.name} (comp {d.compensation})")
    return f"{type(g).__name__} [{', '.join(dims)}]"


def _record(ws: Any, *, keywords: bool) -> dict[str, Any]:
    samples = []
    for s in ws.samples.values():
        pops = []
        for path in s.paths:
            pops.append(
                {
                    "path": path,
                    "parent": s.parent(path),
                    "gate": _describe_gate(s, path),
                    "flowjo_count": s.flowjo_counts.get(path),
                }
            )
        rec: dict[str, Any] = {
            "sample_id": s.sample_id,
            "name": s.name,
            "fcs_file": s.fcs_name,
            "flowjo_total": s.total_count,
            "matrix": s.matrix_id,
            "matrix_detectors": list(s.matrix.detectors) if s.matrix is not None else [],
            "transforms": {k: repr(v) for k, v in s.transforms.items()},
            "populations": pops,
        }
        if keywords:
            rec["keywords"] = s.safe_keywords()
        samples.append(rec)
    return {
        "workspace": ws.path,
        "flowjo_version": ws.flowjo_version,
        "groups": [
            {
                "name": g.name,
                "samples": [ws.samples[i].name for i in g.sample_ids],
                "gates": list(g.gate_paths),
            }
            for g in ws.groups.values()
        ],
        "samples": samples,
    }


@wsp_app.command("show")
def show(
    workspace: Annotated[Path, typer.Argument(help="FlowJo .wsp file.", exists=True, dir_okay=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a tree.")] = False,  # noqa: FBT002
    keywords: Annotated[  # noqa: FBT002
        bool,
        typer.Option(
            "--keywords",
            help="Also list structural keywords (free-text ones such as $SRC, $OP are never shown).",
        ),
    ] = False,  # noqa: FBT002
) -> None:
    """Groups, samples and each sample's gate tree with FlowJo's counts."""
    ws = _read(workspace)
    rec = _record(ws, keywords=keywords)
    if as_json:
        typer.echo(json.dumps(rec, indent=2))
        return
    console.print(f"[bold]{workspace.name}[/bold]  FlowJo {ws.flowjo_version}")
    groups = Tree("[bold]groups[/bold]")
    for g in rec["groups"]:
        groups.add(
            f"{g['name']}: {len(g['samples'])} sample(s)"
            + (f", {len(g['gates'])} group gate(s)" if g["gates"] else "")
        )
    console.print(groups)
    for s in rec["samples"]:
        comp = f", matrix {s['matrix']!r} ({len(s['matrix_detectors'])} detectors)" if s["matrix"] else ""
        tree = Tree(f"[bold]{s['name']}[/bold] (id {s['sample_id']}, FlowJo total {s['flowjo_total']}{comp})")
        nodes: dict[str | None, Tree] = {None: tree}
        for p in s["populations"]:
            label = p["path"].rsplit("/", 1)[-1]
            cnt = p["flowjo_count"]
            nodes[p["path"]] = nodes[p["parent"]].add(
                f"{label}  [dim]{p['gate']}[/dim]  FlowJo {cnt if cnt is not None and cnt >= 0 else 'n/a'}"
            )
        if not s["populations"]:
            tree.add("[dim](no gates)[/dim]")
        console.print(tree)
        if keywords:
            for k, v in s["keywords"].items():
                console.print(f"    {k} = {v}")


def _find_fcs(fcs_dir: Path, sample: Any) -> Path | None:
    for name in (sample.fcs_name, sample.name):
        if name and (fcs_dir / name).is_file():
            return fcs_dir / name
    return None


@wsp_app.command("apply")
def apply(
    workspace: Annotated[Path, typer.Argument(help="FlowJo .wsp file.", exists=True, dir_okay=False)],
    fcs_dir: Annotated[
        Path,
        typer.Option(
            "--fcs-dir", help="Folder with the workspace's FCS files.", exists=True, file_okay=False
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Population table (CSV) to write.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,  # noqa: FBT002
) -> None:
    """Gate every sample with its own gates; write the population table, FlowJo count and difference."""
    from flowtools.errors import FlowtoolsError
    from flowtools.gating.formats.flowjo import gate_workspace_sample, workspace_rows
    from flowtools.io import read_fcs
    from flowtools.provenance import atomic_write_text

    ws = _read(workspace)
    rows: list[dict[str, Any]] = []
    problems: dict[str, str] = {}
    for s in ws.samples.values():
        path = _find_fcs(fcs_dir, s)
        if path is None:
            problems[s.name] = f"no FCS file {s.fcs_name or s.name!r} in {fcs_dir}"
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # repair notes of the reader; the counts are what matter here
                fcs = read_fcs(path)
            rows += workspace_rows(s, gate_workspace_sample(s, fcs))
        except FlowtoolsError as exc:
            problems[s.name] = str(exc)
    if rows:
        from flowtools.io.tables import csv_text

        atomic_write_text(out, csv_text(rows, ROW_COLUMNS))
    diffs = [abs(r["count_difference"]) for r in rows if r["count_difference"] is not None]
    summary = {
        "out": str(out) if rows else None,
        "samples_gated": len({r["sample_id"] for r in rows}),
        "populations": len(rows),
        "max_abs_count_difference": max(diffs) if diffs else None,
        "failed": problems,
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        console.print(
            f"{summary['samples_gated']} sample(s), {len(rows)} population(s) -> {out if rows else '-'}; "
            f"largest |count - FlowJo| = {summary['max_abs_count_difference']}"
        )
        for name, why in problems.items():
            err_console.print(f"[yellow]skipped[/yellow] {name}: {why}")
    if not rows:
        raise typer.Exit(EXIT_FAIL)
    if problems:
        raise typer.Exit(EXIT_PARTIAL)


@wsp_app.command("to-template")
def to_template(
    workspace: Annotated[Path, typer.Argument(help="FlowJo .wsp file.", exists=True, dir_okay=False)],
    group: Annotated[str, typer.Option("--group", help="Group whose gate tree is written.")],
    out: Annotated[Path, typer.Option("--out", help="YAML template to write.")],
    sample: Annotated[
        str | None,
        typer.Option(
            "--sample", help="Sample (id or name) whose tree is used; default: the group's first sample."
        ),
    ] = None,
) -> None:
    """Write a static-gate YAML template from a group's gates (compensated gates: a matrix CSV beside it).

    The matrix goes to ``<out stem>.matrix.csv`` in the template's folder and the template names it
    relative to itself, so the template loads from any working directory.
    """
    from flowtools.errors import FlowtoolsError
    from flowtools.gating.formats.flowjo_template import write_workspace_template

    ws = _read(workspace)
    try:
        written = write_workspace_template(ws, group, out, sample=sample)
    except (FlowtoolsError, OSError) as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_FAIL) from None
    console.print(
        f"template -> {written.template}" + (f" (matrix {written.matrix})" if written.matrix else "")
    )


@wsp_app.command("export")
def export(
    template: Annotated[Path, typer.Argument(help="YAML gating template.", exists=True, dir_okay=False)],
    samples_csv: Annotated[
        Path,
        typer.Argument(
            help="Sample sheet (columns: file, and optionally sample_id, tube); files relative to the sheet.",
            exists=True,
            dir_okay=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help=".wsp to write.")],
) -> None:
    """Resolve the template on every sample of its tube and write a FlowJo workspace (one group per tube)."""
    from flowtools.errors import FlowtoolsError
    from flowtools.gating.formats.flowjo_export import export_sample_from_resolved, write_workspace
    from flowtools.gating.templates import load_template, resolve
    from flowtools.io import read_fcs

    try:
        t = load_template(template)
    except FlowtoolsError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_FAIL) from None
    with open(samples_csv, newline="", encoding="utf-8") as fh:
        sheet = list(csv.DictReader(fh))
    if not sheet or "file" not in sheet[0]:
        err_console.print(f"[red]error:[/red] {samples_csv}: needs a 'file' column")
        raise typer.Exit(EXIT_FAIL)
    rows = [r for r in sheet if t.tube is None or not r.get("tube") or r["tube"] == t.tube]
    exported, problems = [], {}
    for r in rows:
        path = (samples_csv.parent / r["file"]).resolve()
        sid = r.get("sample_id") or path.name
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fcs = read_fcs(path)
            (res,) = resolve(t, [fcs], sample_ids=[sid])
            if res.error:
                problems[sid] = res.error
                continue
            exported.append(export_sample_from_resolved(res, fcs))
        except (FlowtoolsError, OSError) as exc:
            problems[sid] = str(exc)
    if not exported:
        err_console.print(f"[red]error:[/red] no sample could be resolved: {problems}")
        raise typer.Exit(EXIT_FAIL)
    try:
        write_workspace(out, {t.tube or t.name: exported})
    except FlowtoolsError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_FAIL) from None
    console.print(f"{len(exported)} sample(s) -> {out}")
    for sid, why in problems.items():
        err_console.print(f"[yellow]skipped[/yellow] {sid}: {why}")
    if problems:
        raise typer.Exit(EXIT_PARTIAL)
