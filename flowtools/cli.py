"""The ``flowtools`` command line.

A thin layer: it parses arguments, calls the library and shows results with
rich. Heavy modules are imported inside the commands that need them, so
``flowtools --help`` stays fast. Exit status: 0 success, 1 failure, 2 partial
(some inputs failed, the rest were processed).
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from flowtools._cli._common import EXIT_FAIL, EXIT_PARTIAL, console, err_console
from flowtools._cli._common import fail as _fail
from flowtools._cli._common import progress as _progress
from flowtools._version import __version__

app = typer.Typer(
    name="flowtools",
    help=(
        "Flow-cytometry FCS files to trustworthy immune-cell population tables, "
        "and those tables to answers."
    ),
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"flowtools {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_version_callback, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Flow-cytometry FCS files to trustworthy immune-cell population tables."""


# --------------------------------------------------------------------------------------------- synth / demo


@app.command()
def synth(
    out: Annotated[
        Path, typer.Argument(help="Output folder (must be empty unless --overwrite).", show_default=False)
    ],
    women: Annotated[int, typer.Option("--women", min=2, help="Number of women (two FCS files each).")] = 24,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives identical bytes.")] = 0,
    events: Annotated[int, typer.Option(min=1, help="Events per FCS file.")] = 100_000,
    null: Annotated[bool, typer.Option("--null", help="Plant no effect (calibration cohorts).")] = False,
    immune_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of RM women in the immune subgroup.")
    ] = 0.4,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing cohort in OUT.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Write a synthetic study cohort: FCS files, sample sheet, clinical record and the truth behind them."""
    from flowtools.synth import make_cohort

    try:
        with _progress() as bar:
            task = bar.add_task("writing FCS files", total=2 * women)
            def on_progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            res = make_cohort(
                out, n_women=women, seed=seed, events=events, null=null, immune_fraction=immune_fraction,
                overwrite=overwrite, progress=on_progress,
            )
    except (FileExistsError, ValueError) as exc:
        err_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_FAIL) from None
    summary = {
        "out": str(res.out_dir), "fcs_dir": str(res.fcs_dir), "samples_csv": str(res.samples_csv),
        "clinical_csv": str(res.clinical_csv), "truth_dir": str(res.truth_dir), "women": res.n_women,
        "rm": res.n_rm, "controls": res.n_controls, "immune_subgroup": res.n_immune_subgroup,
        "files": res.n_files, "events": res.n_events, "null": null, "seed": seed,
    }
    if json_out:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return
    null_note = ", null: no effects" if null else ""
    console.print(
        f"[green]cohort written[/] {res.out_dir}: {res.n_women} women ({res.n_rm} RM, "
        f"{res.n_controls} controls, {res.n_immune_subgroup} in the immune subgroup{null_note}), "
        f"{res.n_files} FCS files, {res.n_events:,} events",
        highlight=False, soft_wrap=True,
    )
    for label, key in (("FCS files", "fcs_dir"), ("sample sheet", "samples_csv"),
                       ("clinical record", "clinical_csv"), ("truth", "truth_dir")):
        console.print(f"  {label:<16}{summary[key]}", highlight=False, soft_wrap=True)


_FIRST_SAMPLE_NOTE = " (until the first sample: a new install compiles the kernels once, ~10-30 s)"
"""On the gating bar until the first sample is gated. Whether this run compiles is not checked: the
check (numba's cache stamp) would import numba in this process, ~0.35 s on every run."""


@app.command()
def demo(
    out: Annotated[
        Path, typer.Option("--out", help="Output folder (the demo owns it; a re-run replaces it).")
    ] = Path("flowtools-demo"),
    women: Annotated[int, typer.Option("--women", min=2, help="Number of women in the demo cohort.")] = 24,
    events: Annotated[int, typer.Option(min=100, help="Events per FCS file.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    jobs: Annotated[int | None, typer.Option(min=1, help="Worker processes (default: all cores).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Make a synthetic demo cohort and run every stage that exists on it, end to end."""
    from flowtools.errors import FlowtoolsError
    from flowtools.pipeline.demo import run_demo

    labels = {"synth": "synthetic cohort", "read": "reading and compensating FCS files",
              "gate": "gating with the study templates", "cluster": "clustering the lymphocytes",
              "export": "exports (MIFlowCyt, FCS, AnnData)", "stats": "RM vs control, prediction",
              "survival": "time to live birth", "beads": "cytokine bead array",
              "normalize": "plates on one scale (anchor normalisation)"}
    try:
        with _progress() as bar:
            tasks: dict[str, Any] = {}

            def on_progress(stage: str, done: int, total: int) -> None:
                if stage == "read" and done == total:  # gating is next: say what a first sample waits for
                    tasks["gate"] = bar.add_task(labels["gate"] + _FIRST_SAMPLE_NOTE, total=None)
                if stage not in tasks:
                    tasks[stage] = bar.add_task(labels.get(stage, stage), total=total)
                bar.update(tasks[stage], completed=done, total=total, description=labels.get(stage, stage))

            from flowtools.report.html import draw_after_gating

            res = run_demo(out, n_women=women, events=events, seed=seed, jobs=jobs, progress=on_progress,
                           after_gate=draw_after_gating)
            bar.add_task("gate plots and HTML report", total=None)
            from flowtools.report.html import write_report
            from flowtools.report.sections import demo_sections

            report_html = None
            if res.plate is not None:
                report_html = write_report(res.plate, jobs=jobs, sections=demo_sections(res))
    except FlowtoolsError as exc:
        err_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_FAIL) from None
    s = res.summary
    if json_out:
        paths = {"report": report_html, "out": res.out_dir, "cohort": res.cohort.out_dir,
                 "samples_csv": res.cohort.samples_csv,
                 "populations_csv": res.plate.populations_csv if res.plate else None,
                 "per_woman_csv": res.plate.per_woman_csv if res.plate else None,
                 "clinical_csv": res.cohort.clinical_csv, "truth": res.cohort.truth_dir,
                 "fcs_scan_csv": res.scan_csv, "compensated_medians_csv": res.medians_csv,
                 "provenance": res.provenance_json}
        paths = {k: v for k, v in paths.items() if v is not None}
        outputs = {k: str(v) for k, v in paths.items()}
        sys.stdout.write(json.dumps({"summary": s, "outputs": outputs}, indent=2) + "\n")
        return
    console.rule("[bold]flowtools demo")
    if report_html is not None:
        console.print(f"[bold]report:[/] {report_html}", highlight=False, soft_wrap=True)
    stages = [
        ("synthetic cohort", f"{s['women']} women ({s['rm']} RM, {s['controls']} controls, "
         f"{s['immune_subgroup']} in the immune subgroup), {s['files']} FCS files on plate(s) "
         f"{', '.join(s['plates'])}, {s['events']:,} events"),
        ("FCS scan", f"{s['files']} files read, tubes {', '.join(s['tubes'])}; "
         f"{s['files_with_warnings']} file(s) with reader warnings"),
        ("compensation", f"{s['compensated_files']} files compensated with their own $SPILLOVER"),
        ("gating", f"{s['gated']} samples gated with the study templates"
         + (f", {s['gating_failed']} failed (see errors.json)" if s["gating_failed"] else "")),
        ("clustering", f"{s['clusters']} FlowSOM clusters of TBNK-NK lymphocytes, per woman "
         "(annotated, matched to gates)"),
    ]
    ex = s.get("export") or {}
    if ex:
        h5ad = ex.get("anndata")
        h5ad_text = (f"lymphocytes as AnnData ({h5ad['events']:,} events)" if isinstance(h5ad, dict)
                     else f"AnnData {h5ad}")
        stages.append(("exports", f"MIFlowCyt record; NK cells as {ex.get('nk_fcs_files', 0)} FCS files; "
                       f"{h5ad_text}"))
    if "populations_compared" in s:
        auc = s.get("auc") or {}
        pred = (", ".join(f"{k} AUC {v:.2f}" for k, v in auc.items()) if auc
                else f"prediction skipped: {s.get('prediction_skipped', '')}")
        stages.append(("statistics", f"RM vs control on {s['populations_compared']} populations "
                       f"({s['significant_q05']} at q < 0.05); next-loss prediction: {pred}"))
    sv = s.get("survival") or {}
    if sv.get("harrell_c"):
        c = ", ".join(f"{k} C {v:.2f}" for k, v in sv["harrell_c"].items())
        g = sv.get("gain_harrell_c") or {}
        gain = (f"; gain {g['estimate']:+.3f} ({g['ci_low']:+.3f}..{g['ci_high']:+.3f})"
                if "estimate" in g else "")
        stages.append(("time to live birth",
                       f"{sv['n_women']} women, {sv['n_events']} live births: {c}{gain}"))
    elif sv:
        stages.append(("time to live birth", f"skipped: {sv.get('survival_skipped', '')}"))
    nz = s.get("normalize") or {}
    if nz:
        stages.append(("normalisation", f"{nz['plates']} plates, {nz['markers']} markers normalised on "
                       f"anchors: mean EMD between plates {nz['mean_emd_before']:.3f} -> "
                       f"{nz['mean_emd_after']:.3f}; flagged {nz['flagged'] or 'none'}"))
    if "bead_wells" in s:
        stages.append(("bead array", f"{s['bead_wells']} wells ({s['bead_failed_wells']} failed), "
                       f"{s['bead_curves_ok']} standard curves with a quantifiable range; RM vs control on "
                       f"{s['analytes_compared']} analytes ({s['analytes_significant_q05']} at q < 0.05)"))
    for k, (label, text) in enumerate(stages, start=1):
        console.print(f"[bold]{k}. {label:<18}[/] {text}", highlight=False, soft_wrap=True)
    table = Table("output", "path", box=None, header_style="bold")
    for label, path in (
        ("FCS files", res.cohort.fcs_dir), ("sample sheet", res.cohort.samples_csv),
        ("clinical record", res.cohort.clinical_csv), ("truth", res.cohort.truth_dir),
        ("FCS scan table", res.scan_csv), ("compensated medians", res.medians_csv),
        ("populations", res.plate.populations_csv if res.plate else "-"),
        ("per woman", res.plate.per_woman_csv if res.plate else "-"),
        ("resolved gates", res.out_dir / "gated" / "gates"),
        ("clusters", res.clusters_dir or "-"), ("statistics", res.stats_dir or "-"),
        ("exports", res.out_dir / "export"), ("time to live birth", res.out_dir / "survival"),
        ("bead array", res.out_dir / "beads"), ("normalisation", res.out_dir / "normalize"),
        ("provenance", res.provenance_json),
    ):
        table.add_row(label, str(path))
    console.print(table)


# --------------------------------------------------------------------------------------------- gml

gml_app = typer.Typer(help="Gating-ML 2.0: apply a gating strategy to FCS files.", no_args_is_help=True)
app.add_typer(gml_app, name="gml")


def _load_gml(path: Path):  # noqa: ANN202
    from flowtools.gating.formats.gatingml import read_gatingml

    return read_gatingml(path)


def _gate_file(strategy: Any, fcs: Path) -> Any:
    from flowtools.gating import gate_sample
    from flowtools.io.fcs import read_fcs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sample = read_fcs(fcs)
    return gate_sample(strategy, sample, sample_id=fcs.name)


@gml_app.command("apply")
def gml_apply(
    gating_ml: Annotated[Path, typer.Argument(help="Gating-ML 2.0 file.", show_default=False)],
    fcs: Annotated[Path, typer.Argument(help="FCS file.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV to write: one 0/1 column per population.")],
) -> None:
    """Write per-event membership (0/1), one column per gate or quadrant id, one row per event."""
    from flowtools.errors import FlowtoolsError
    from flowtools.provenance import atomic_write

    try:
        result = _gate_file(_load_gml(gating_ml), fcs)
    except (FlowtoolsError, OSError) as exc:
        err_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_FAIL) from None
    import numpy as np

    ids = list(result.masks)
    table = np.column_stack([result.masks[i] for i in ids]).astype(np.uint8) if ids else np.zeros((0, 0))
    with atomic_write(out, "w", encoding="utf-8", newline="") as fh:
        fh.write(",".join(ids) + "\n")
        np.savetxt(fh, table, fmt="%d", delimiter=",")
    console.print(f"[green]wrote[/] {out}: {result.n_events:,} events x {len(ids)} populations",
                  highlight=False, soft_wrap=True)


@gml_app.command("counts")
def gml_counts(
    gating_ml: Annotated[Path, typer.Argument(help="Gating-ML 2.0 file.", show_default=False)],
    files: Annotated[list[Path], typer.Argument(help="FCS files.", show_default=False)],
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Print event counts per population (and % of parent) for each FCS file."""
    from flowtools.errors import FlowtoolsError

    try:
        strategy = _load_gml(gating_ml)
    except (FlowtoolsError, OSError) as exc:
        err_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_FAIL) from None
    records: list[dict[str, Any]] = []
    failed = 0
    for fcs in files:
        try:
            result = _gate_file(strategy, fcs)
        except (FlowtoolsError, OSError) as exc:
            failed += 1
            records.append({"file": str(fcs), "error": str(exc)})
            if not json_out:
                err_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
            continue
        rows = result.rows()
        records.append({"file": str(fcs), "n_events": result.n_events, "populations": rows})
        if not json_out:
            from rich.markup import escape

            table = Table(title=escape(str(fcs)), box=None, header_style="bold", title_justify="left")
            # Names are folded onto further lines, never cut short with an ellipsis.
            table.add_column("population", overflow="fold")
            table.add_column("parent", overflow="fold")
            for col in ("count", "% parent", "% total"):
                table.add_column(col, no_wrap=True)
            for r in rows:
                table.add_row(escape(r["path"]), escape(r["parent"] or "-"), f"{r['count']:,}",
                              f"{r['pct_parent']:.2f}", f"{r['pct_total']:.2f}")
            console.print(table)
    if json_out:
        sys.stdout.write(json.dumps(records, indent=2) + "\n")
    if failed:
        raise typer.Exit(EXIT_FAIL if failed == len(files) else EXIT_PARTIAL)


# --------------------------------------------------------------------------------------------- gate


@app.command()
def gate(
    samples: Annotated[Path, typer.Argument(help="Sample sheet (CSV).", show_default=False)],
    template: Annotated[
        list[Path],
        typer.Option("--template", "-t", help="Template (YAML); repeat, one per tube.", show_default=False),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.", show_default=False)],
    jobs: Annotated[
        int | None, typer.Option(min=1, help="Local worker processes (default: all cores).")
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(help="dask.distributed scheduler address (tcp://HOST:PORT) to run on instead."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for data-driven gates.")] = 0,
    no_report: Annotated[
        bool, typer.Option("--no-report", help="Skip gate plots and the HTML report.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    normalize: Annotated[
        Path | None,
        typer.Option("--normalize", help="Normalisation model (from `flowtools normalize fit`): every sample "
                     "is normalised for its batch before it is gated.", show_default=False),
    ] = None,
) -> None:
    """Gate every sample of a plate or study with the template of its tube; write tables, gates and a report.

    With --normalize MODEL.json each sample is first normalised for its batch (the sheet's
    batch column, default its plate) exactly as `flowtools normalize apply` would write it; a
    sample whose batch is not in the model fails, the others are gated.

    Exit status: 0 all samples gated, 2 some failed (see errors.json), 1 none gated.
    """
    import time

    from flowtools.errors import FlowtoolsError
    from flowtools.pipeline.plate import run_plate

    t0 = time.perf_counter()
    events = 0
    failures = 0
    try:
        with _progress() as bar:
            task = bar.add_task("gating" + _FIRST_SAMPLE_NOTE, total=None)

            def on_progress(done: int, total: int, outcome: Any) -> None:
                nonlocal events, failures
                events += outcome.n_events
                failures += not outcome.ok
                rate = events / max(time.perf_counter() - t0, 1e-9)
                bar.update(task, completed=done, total=total,
                           description=f"gating  {rate / 1e6:.1f} M events/s  {failures} failed")

            draw = None
            if not no_report:  # each worker draws its sample's gate plots from the values in memory
                from flowtools.report.html import draw_after_gating as draw
            res = run_plate(samples, template, out, jobs=jobs, scheduler=scheduler, seed=seed,
                            progress=on_progress, after_gate=draw, normalize=normalize)
            miflowcyt = None
            if res.n_ok:  # keywords only: cheap
                from flowtools.pipeline.miflowcyt import write_miflowcyt

                miflowcyt = write_miflowcyt(res.out_dir)
            if not no_report:
                bar.update(task, description="drawing gate plots and writing the report")
                from flowtools.report.html import write_report
                from flowtools.report.sections import miflowcyt_section

                sections = [] if miflowcyt is None else [miflowcyt_section(miflowcyt)]
                res.report_html = write_report(res, jobs=jobs, sections=sections)
    except (FlowtoolsError, OSError) as exc:
        raise _fail(exc) from None
    summary = {
        "out": str(res.out_dir), "samples": len(res.outcomes), "gated": res.n_ok, "failed": res.n_failed,
        "cached": sum(o.cached for o in res.outcomes), "skipped_no_template": res.skipped,
        "populations_csv": str(res.populations_csv) if res.populations_csv else None,
        "per_woman_csv": str(res.per_woman_csv) if res.per_woman_csv else None,
        "errors_json": str(res.errors_json), "report": str(res.report_html) if res.report_html else None,
        "seconds": round(time.perf_counter() - t0, 2),
        "normalize": str(normalize) if normalize is not None else None,
        "errors": [{"sample_id": o.sample_id, "error": o.error} for o in res.outcomes if not o.ok],
    }
    if json_out:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        if res.report_html:
            console.print(f"[bold]report:[/] {res.report_html}", highlight=False, soft_wrap=True)
        console.print(
            f"{res.n_ok} of {len(res.outcomes)} samples gated ({summary['cached']} from cache) in "
            f"{summary['seconds']} s; tables in {res.out_dir}", highlight=False, soft_wrap=True)
        for o in res.outcomes:
            if not o.ok:
                err_console.print(f"[red]failed:[/] {o.sample_id}: {o.error}", highlight=False,
                                  soft_wrap=True)
    raise typer.Exit(res.exit_code)


# The `template` commands live in flowtools/_cli/template.py (registered at the end of this module).


# --------------------------------------------------------------------------------------------- sheet

sheet_app = typer.Typer(
    help="Sample sheets: the CSV mapping each FCS file to sample, woman, tube, plate, well.",
    no_args_is_help=True,
)
app.add_typer(sheet_app, name="sheet")


@sheet_app.command("check")
def sheet_check(
    sheet: Annotated[Path, typer.Argument(help="Sample sheet (CSV).", show_default=False)],
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    template: Annotated[
        list[Path] | None,
        typer.Option("--template", "-t", help="Template (YAML) whose tube the sheet may use (repeat, as "
                     "for `gate`). A template without a tube accepts every tube."),
    ] = None,
    tube: Annotated[
        list[str] | None,
        typer.Option("--tube", help="An allowed tube name (repeat for several)."),
    ] = None,
    study_tubes: Annotated[
        bool, typer.Option("--study-tubes", help="Allow only the study's tubes (TBNK-NK, Treg-Th).")
    ] = False,
    any_tube: Annotated[
        bool, typer.Option("--any-tube", help="Accept any tube name (the default without --template, "
                           "--tube or --study-tubes).")
    ] = False,
    no_files: Annotated[
        bool, typer.Option("--no-files", help="Do not check that the FCS files exist.")
    ] = False,
) -> None:
    """Validate a sample sheet; list every problem with its line and column.

    Tube names are free unless given: by the templates (--template, the tubes `gate` would gate), as a
    list (--tube), or the study's (--study-tubes); these combine.
    """
    from flowtools.errors import FlowtoolsError, SampleSheetError
    from flowtools.io.sample_sheet import STUDY_TUBES, read_sample_sheet

    allowed = set(tube or ()) | (set(STUDY_TUBES) if study_tubes else set())
    restricted = bool(template or tube or study_tubes) and not any_tube
    for path in template or []:
        from flowtools.gating.templates import load_template

        try:
            t = load_template(path)
        except (FlowtoolsError, OSError) as exc:
            raise _fail(exc) from None
        if t.tube is None:
            restricted = False  # `gate` applies a template without a tube to every tube
        allowed.add(t.tube or "")
    tubes = tuple(sorted(allowed - {""})) if restricted else None
    try:
        parsed = read_sample_sheet(sheet, tubes=tubes, check_files=not no_files)
    except SampleSheetError as exc:
        if json_out:
            issues = [{"line": i.line, "column": i.column, "message": i.message} for i in exc.issues]
            sys.stdout.write(
                json.dumps({"sheet": str(sheet), "valid": False, "issues": issues}, indent=2) + "\n"
            )
        else:
            err_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_FAIL) from None
    except OSError as exc:
        err_console.print(f"[red]error:[/] {sheet}: {exc.strerror or exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_FAIL) from None
    summary = {
        "sheet": str(sheet),
        "valid": True,
        "samples": len(parsed),
        "women": len(parsed.women()),
        "plates": sorted({r.plate for r in parsed}),
        "tubes": sorted({r.tube for r in parsed}),
        "allowed_tubes": None if tubes is None else list(tubes),
        "extra_columns": list(parsed.extra_columns),
    }
    if json_out:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        console.print(
            f"[green]ok[/] {sheet}: {summary['samples']} samples, {summary['women']} women, "
            f"plates {', '.join(summary['plates'])}, tubes {', '.join(summary['tubes'])}",
            highlight=False,
            soft_wrap=True,
        )


# --------------------------------------------------------------------------------------------- groups in _cli

from flowtools._cli.beads import beads_app  # noqa: E402 - command groups defined in their own modules
from flowtools._cli.cluster import cluster_app  # noqa: E402
from flowtools._cli.export import export_app  # noqa: E402
from flowtools._cli.info import info  # noqa: E402
from flowtools._cli.normalize import normalize_app  # noqa: E402
from flowtools._cli.stats import compare_command, predict_app  # noqa: E402
from flowtools._cli.survival import survival_app  # noqa: E402
from flowtools._cli.template import template_app  # noqa: E402
from flowtools._cli.wsp import wsp_app  # noqa: E402

app.command()(info)
app.add_typer(template_app, name="template")

app.add_typer(wsp_app, name="wsp")
app.add_typer(cluster_app)
app.command("compare")(compare_command)
app.add_typer(predict_app, name="predict")
app.add_typer(export_app, name="export")
app.add_typer(beads_app, name="beads")
app.add_typer(survival_app, name="survival")
app.add_typer(normalize_app, name="normalize")


if __name__ == "__main__":  # pragma: no cover
    app()
