"""``flowtools cluster``: cohort-consistent clustering of one gated population of a ``flowtools gate`` run.

Mounted by ``flowtools.cli`` with ``app.add_typer(cluster_app)`` (no name: the command is
``flowtools cluster``). Library modules are imported inside the command, so ``flowtools --help``
stays light. Exit status: 0 success, 1 failure, 2 partial (some samples could not be clustered).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

cluster_app = typer.Typer()
console = Console()
err_console = Console(stderr=True)
EXIT_OK, EXIT_FAIL, EXIT_PARTIAL = 0, 1, 2


@cluster_app.command("cluster")
def cluster(
    run_dir: Annotated[Path, typer.Argument(help="Output folder of `flowtools gate`.", exists=True,
                                            file_okay=False)],
    population: Annotated[str, typer.Option("--population", "-p",
                                            help="Gated population path (or its last segments).")],
    markers: Annotated[str | None, typer.Option(
        "--markers", "-m",
        help="Comma-separated markers or channels [default: the fluorescence parameters].")] = None,
    method: Annotated[str, typer.Option(help="flowsom or hdbscan.")] = "flowsom",
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Output folder [default: RUN_DIR/clusters/<population>].")] = None,
    tube: Annotated[str | None, typer.Option(help="Tube, where the population path is ambiguous.")] = None,
    samples: Annotated[Path | None, typer.Option(
        help="The run's sample sheet [default: found near RUN_DIR by the hash its provenance "
        "recorded].")] = None,
    template: Annotated[Path | None, typer.Option(
        "--template", "-t", help="The template the run gated the tube with; its compensation and transforms "
        "make the values [default: found near RUN_DIR by the hash its provenance recorded].")] = None,
    n_clusters: Annotated[int, typer.Option("--clusters", "-k", help="Metaclusters (flowsom).")] = 10,
    events_per_sample: Annotated[int, typer.Option(help="Events each sample contributes to the fit.")] = 5000,
    embed: Annotated[str, typer.Option(help="umap, pca or none (embedding for the figures).")] = "umap",
    figures: Annotated[bool, typer.Option("--figures/--no-figures", help="Write the PNG figures.")] = True,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary instead of a table.")] = False,
) -> None:
    """Cluster one gated population of every sample with one model; tables per woman and per cluster.

    Any gate run: the values are the gates' (compensated and transformed as the run's template says).
    """
    from flowtools.analysis.cohort import cluster_cohort
    from flowtools.analysis.figures import cluster_figures
    from flowtools.errors import FlowtoolsError, FlowtoolsWarning

    marker_list = None if markers is None else [m.strip() for m in markers.split(",") if m.strip()]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FlowtoolsWarning)  # shown below, from res.warnings
            res = cluster_cohort(run_dir, population=population, markers=marker_list, tube=tube,
                                 method=method, out_dir=out, samples_csv=samples, template=template,
                                 n_clusters=n_clusters, events_per_sample=events_per_sample,
                                 embed=None if embed == "none" else embed, seed=seed)
    except (FlowtoolsError, FileNotFoundError, ValueError) as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_FAIL) from None
    figs = cluster_figures(res, res.out_dir / "figures") if figures else []
    code = EXIT_PARTIAL if res.errors else EXIT_OK
    if as_json:
        summary = {"out_dir": str(res.out_dir), "population": res.population, "tube": res.tube,
                   "markers": res.markers, "method": res.method, "samples": len(res.samples),
                   "template": res.scale.get("template"), "compensation": res.scale.get("compensation"),
                   "errors": res.errors, "warnings": res.warnings,
                   "files": {k: str(v) for k, v in res.files.items()},
                   "figures": [str(f) for f in figs],
                   "clusters": res.annotation[["cluster", "label", "count", "pct_of_population", "best_gate",
                                               "f1"]].to_dict(orient="records")}
        typer.echo(json.dumps(summary, indent=2, default=float))
        for w in res.warnings:
            err_console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)
        raise typer.Exit(code)
    table = Table(title=f"{res.population} ({res.tube}): {len(res.samples)} samples, {res.method}, "
                        f"{len(res.markers)} markers (scales of template {res.scale.get('template')})")
    for col in ("cluster", "label", "% of population", "best gated match", "F1"):
        table.add_column(col)
    for r in res.annotation.itertuples():
        table.add_row(r.cluster, r.label, f"{r.pct_of_population:.1f}", str(r.best_gate).rsplit("/", 2)[-1]
                      if r.best_gate else "", f"{r.f1:.2f}" if r.f1 == r.f1 else "")
    console.print(table)
    for w in res.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)
    for e in res.errors:
        err_console.print(f"[yellow]skipped:[/yellow] {e}")
    console.print(f"tables in {res.out_dir}")
    raise typer.Exit(code)
