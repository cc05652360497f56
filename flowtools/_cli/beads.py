"""``flowtools beads``: cytokine bead arrays (LEGENDplex, BD CBA) from FCS files to concentrations.

Mounted by ``flowtools.cli`` with ``app.add_typer(beads_app, name="beads")``. Library modules are
imported inside the commands so that ``flowtools --help`` stays light. Exit status: 0 success,
1 failure (bad sheet, bad panel, no standards at all), 2 partial (some wells or plates failed; the
rest were analysed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from flowtools._cli._common import EXIT_PARTIAL, console, fail

beads_app = typer.Typer(
    help="Cytokine bead arrays: identify beads, fit standard curves, back-calculate concentrations.",
    no_args_is_help=True,
)


@beads_app.callback()
def _group() -> None:
    """Cytokine bead arrays (LEGENDplex, BD CBA): FCS files to concentrations."""


@beads_app.command("run")
def run(
    sheet: Annotated[Path, typer.Argument(help="Sample sheet with the plate layout (role, standard_level).")],
    template: Annotated[Path, typer.Option("-t", "--template", help="Bead-panel template (YAML).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    model: Annotated[str, typer.Option(help="Standard-curve model: 5pl or 4pl.")] = "5pl",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    report: Annotated[bool, typer.Option("--report", help="Also write report.html.")] = False,
) -> None:
    """Analyse a bead plate: per-well MFI, standard curves, concentrations, QC (and the HTML report)."""
    from flowtools.beads.plate import run_bead_plate
    from flowtools.errors import FlowtoolsError

    if model not in ("5pl", "4pl"):
        msg = f"--model must be 5pl or 4pl, not {model!r}"
        raise fail(ValueError(msg))
    try:
        res = run_bead_plate(sheet, template, out, model=model, command=f"flowtools beads run {sheet}")
        if report:
            from flowtools.report.beads import write_bead_report

            res.outputs["report"] = write_bead_report(res, out / "report.html")
    except (FlowtoolsError, OSError) as exc:
        raise fail(exc) from None
    summary = res.summary()
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
    else:
        console.print(
            f"[bold]{len(summary['plates'])}[/] plate(s), {summary['wells']} wells, "
            f"{summary['women']} women, curves with a range: {summary['curves_ok']}/{summary['curves']}"
        )
        for k, v in summary["sample_flags"].items():
            console.print(f"  {k}: {v}", highlight=False)
        for m in [*res.plate_errors.values(), *res.well_errors.values()]:
            console.print(f"[red]failed:[/] {m}", highlight=False, soft_wrap=True)
        console.print(f"tables in {out}", highlight=False)
    if res.well_errors or res.plate_errors:
        raise typer.Exit(EXIT_PARTIAL)


@beads_app.command("synth")
def synth(
    out: Annotated[Path, typer.Argument(help="Output folder for the synthetic plate.")],
    women: Annotated[int, typer.Option(help="Women on the plate (at most 78).")] = 24,
    analytes: Annotated[int, typer.Option(help="Analytes (first N of the 13-plex).")] = 13,
    events: Annotated[int, typer.Option(help="Events per well.")] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    plate_id: Annotated[str, typer.Option(help="Plate name.")] = "BP1",
    cohort: Annotated[
        Path | None, typer.Option(help="Take the women from a synthetic cohort folder.")
    ] = None,
) -> None:
    """Write a synthetic bead plate (FCS files, samples.csv, panel.yaml, truth/) to try `beads run` on."""
    from flowtools.synth.beads import make_bead_plate

    try:
        bp = make_bead_plate(
            out,
            n_women=women,
            n_analytes=analytes,
            events_per_well=events,
            seed=seed,
            plate_id=plate_id,
            cohort_dir=cohort,
        )
    except (ValueError, OSError) as exc:
        raise fail(exc) from None
    console.print(
        f"{len(bp.files)} wells, {len(bp.women)} women: {bp.sheet} (panel {bp.panel})", highlight=False
    )
