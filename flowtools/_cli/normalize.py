"""``flowtools normalize``: batch normalisation on anchor samples (``fit``, ``apply``).

Mounted by ``flowtools.cli`` with ``app.add_typer(normalize_app, name="normalize")``. Library
modules are imported inside the commands, so ``flowtools --help`` stays light. Exit status:
0 success, 1 failure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from flowtools._cli._common import console, fail

normalize_app = typer.Typer(help="Batch normalisation on anchor samples (CytoNorm-class), with QC.")


def _markers(text: str | None) -> list[str] | None:
    return None if text is None else [m.strip() for m in text.split(",") if m.strip()]


@normalize_app.command("fit")
def fit(
    sheet: Annotated[Path, typer.Argument(help="Sample sheet with `anchor` (and `batch`) columns.",
                                          exists=True, dir_okay=False)],
    template: Annotated[Path, typer.Option("--template", "-t", help="Gating template: its compensation "
                                           "and transforms make the values (and its tube picks the rows).",
                                           exists=True, dir_okay=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model file to write (JSON).")],
    markers: Annotated[str | None, typer.Option(
        "--markers", "-m", help="Comma-separated markers [default: every fluorescence marker].")] = None,
    mode: Annotated[str, typer.Option(help="cluster, global or identity.")] = "cluster",
    goal: Annotated[str, typer.Option(help="mean (of the batches) or a batch's name.")] = "mean",
    n_clusters: Annotated[int, typer.Option("--clusters", "-k", help="FlowSOM metaclusters.")] = 5,
    min_events: Annotated[int, typer.Option(help="Fewest events an anchor may have.")] = 1000,
    limit: Annotated[float, typer.Option(
        help="Outputs clipped to the goal range widened by this share.")] = 0.5,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    anchors: Annotated[str, typer.Option(
        help="Several anchors in a batch: pooled (all of them) or matched (only the anchor donors every "
             "batch has, balanced).")] = "pooled",
    soft: Annotated[float, typer.Option(
        help="Share of anchor events blended between cluster splines (0: hard assignment).")] = 0.3,
    small_cluster: Annotated[str, typer.Option(
        help="A cluster with too few anchor events in a batch: coarse (its own spline through fewer "
             "quantiles), global (the batch's global spline) or identity (left unchanged, as "
             "cytonormpy).")] = "coarse",
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Fit a normalisation model on the anchors of every batch and write it with provenance."""
    from flowtools.analysis.normalize import fit_sheet
    from flowtools.errors import FlowtoolsError

    try:
        res = fit_sheet(sheet, template, out, markers=_markers(markers), min_events=min_events,
                        anchors=anchors, command="normalize fit", mode=mode, goal=goal, n_clusters=n_clusters,
                        limit=limit, soft=soft, small_cluster=small_cluster, random_state=seed)
    except (FlowtoolsError, ValueError, OSError) as exc:
        raise fail(exc) from None
    s = res.summary()
    if as_json:
        print(json.dumps(s, indent=1))
        return
    console.print(f"model: {res.path} ({s['mode']}, goal {s['goal']}, {len(s['batches'])} batches, "
                  f"{len(s['markers'])} markers)", highlight=False)
    if s["small_clusters"]:
        few = res.model.min_cluster_events
        console.print(f"{len(s['small_clusters'])} small cluster(s) (fewer than {few} anchor events in a "
                      f"batch) mapped {s['small_cluster']}", highlight=False)
    if s["fallbacks"]:
        console.print(f"{len(s['fallbacks'])} cluster x batch with too few anchor events use the "
                      "global spline", highlight=False)
    for note in s["notes"]:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    if s["unstable_clusters"]:
        console.print(f"[yellow]unstable clusters (CV of their share across batches > "
                      f"{res.model.cv_limit}):[/] {s['unstable_clusters']}", highlight=False)


@normalize_app.command("apply")
def apply(
    sheet: Annotated[Path, typer.Argument(help="Sample sheet of the files to normalise.", exists=True,
                                          dir_okay=False)],
    model: Annotated[Path, typer.Option("--model", help="Model written by `normalize fit`.", exists=True,
                                        dir_okay=False)],
    out: Annotated[Path, typer.Option("--out", "-o",
                                      help="Output folder: fcs/, samples.csv, normalize.json.")],
    template: Annotated[Path | None, typer.Option(
        "--template", "-t", help="The template [default: the one the model records].")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Normalise every file of a sheet; write the files and a sample sheet pointing at them."""
    from flowtools.analysis.normalize import apply_sheet
    from flowtools.errors import FlowtoolsError

    try:
        res = apply_sheet(sheet, model, out, template=template, command="normalize apply")
    except (FlowtoolsError, ValueError, OSError) as exc:
        raise fail(exc) from None
    s = res.summary()
    if as_json:
        print(json.dumps(s, indent=1))
        return
    from rich.table import Table

    table = Table(title=f"{len(res.files)} files normalised -> {res.samples_csv}")
    for col in ("marker", "EMD before", "EMD after", "reduction", "MAD change", "flag"):
        table.add_column(col)
    for r in res.drift:
        table.add_row(r["marker"], f"{r['emd_before']:.4f}", f"{r['emd_after']:.4f}",
                      f"{100 * r['emd_reduction']:.0f}%", f"{r['mad_change']:+.2f} ({r['mad_batch']})",
                      "FLAG" if r["flagged"] else "")
    console.print(table)
