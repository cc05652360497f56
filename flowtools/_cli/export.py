"""``flowtools export``: a gate run's events and metadata in the formats other tools read.

``export anndata`` (``.h5ad`` for scanpy/pytometry), ``export fcs`` (one FCS 3.1 file per sample
of one population, for FlowJo/FlowKit) and ``export miflowcyt`` (the MIFlowCyt 1.0 record).
Mounted by ``flowtools.cli`` with ``app.add_typer(export_app, name="export")``. Library modules are
imported inside the commands, so ``flowtools --help`` stays light. Exit status: 0 success, 1 failure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from flowtools._cli._common import EXIT_FAIL, console
from flowtools._cli._common import fail as _fail

export_app = typer.Typer(
    help="Export a gate run: AnnData (.h5ad), FCS files of one population, the MIFlowCyt record.",
    no_args_is_help=True,
)

_RUN_HELP = "Output folder of `flowtools gate`."


def _json(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")


def _failed(exc: BaseException, *, as_json: bool) -> typer.Exit:
    if as_json:
        _json({"ok": False, "error": str(exc)})
        return typer.Exit(EXIT_FAIL)
    return _fail(exc)


@export_app.command("anndata")
def export_anndata_cmd(
    run_dir: Annotated[Path, typer.Argument(help=_RUN_HELP, show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The .h5ad file to write.", show_default=False)],
    population: Annotated[str | None, typer.Option(
        "--population", "-p", help="Only this population's events (path or its last segments).")] = None,
    tube: Annotated[str | None, typer.Option(help="The tube (needed when the run has several).")] = None,
    events_per_sample: Annotated[int | None, typer.Option(
        min=1, help="At most this many events per sample (seeded random subset).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the subset.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Events of one tube as AnnData: X compensated, layer 'transformed', populations in obs."""
    from flowtools.errors import FlowtoolsError
    from flowtools.pipeline.export import export_anndata

    try:
        adata = export_anndata(run_dir, population=population, out=out, tube=tube,
                               events_per_sample=events_per_sample, seed=seed)
    except (FlowtoolsError, OSError) as exc:
        raise _failed(exc, as_json=as_json) from None
    doc = {"ok": True, "out": str(out), "events": int(adata.n_obs), "channels": int(adata.n_vars),
           "samples": sorted(map(str, adata.obs["sample_id"].unique())),
           "population": adata.uns.get("exported_population", "") or None,
           "tube": str(adata.obs["tube"].iloc[0]) if adata.n_obs else tube}
    if as_json:
        _json(doc)
        return
    console.print(f"{doc['events']} events x {doc['channels']} channels of {len(doc['samples'])} samples "
                  f"written to {out}", highlight=False, soft_wrap=True)


@export_app.command("fcs")
def export_fcs_cmd(
    run_dir: Annotated[Path, typer.Argument(help=_RUN_HELP, show_default=False)],
    population: Annotated[str, typer.Option(
        "--population", "-p", help="The population (path or its last segments).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.", show_default=False)],
    tube: Annotated[str | None, typer.Option(
        help="The tube, where the population's name is ambiguous.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """One FCS 3.1 file per sample holding one population's events (raw values, allow-listed keywords)."""
    from flowtools.errors import FlowtoolsError
    from flowtools.pipeline.export import export_fcs

    try:
        res = export_fcs(run_dir, population, out, tube=tube)
    except (FlowtoolsError, OSError) as exc:
        raise _failed(exc, as_json=as_json) from None
    if as_json:
        _json({"ok": True, **res.to_dict()})
        return
    console.print(f"{len(res.files)} FCS files of {res.population} ({sum(res.counts.values())} events) "
                  f"written to {res.out_dir}", highlight=False, soft_wrap=True)
    for sid, why in res.skipped.items():
        console.print(f"  skipped {sid}: {why}", highlight=False, soft_wrap=True)


@export_app.command("miflowcyt")
def export_miflowcyt_cmd(
    run_dir: Annotated[Path, typer.Argument(help=_RUN_HELP, show_default=False)],
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="The JSON file [default: RUN_DIR/miflowcyt.json].")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """The MIFlowCyt 1.0 record of a run: what the files, sheet, templates and run say; the rest 'missing'."""
    from flowtools.errors import FlowtoolsError
    from flowtools.pipeline.miflowcyt import write_miflowcyt

    try:
        dest = write_miflowcyt(run_dir, out)
    except (FlowtoolsError, OSError) as exc:
        raise _failed(exc, as_json=as_json) from None
    rec = json.loads(dest.read_text(encoding="utf-8"))
    if as_json:
        _json({"ok": True, "out": str(dest), "missing": len(rec["missing"]),
               "tubes": [i["tube"] for i in rec["instrument_details"]]})
        return
    console.print(f"MIFlowCyt record written to {dest} ({len(rec['missing'])} fields missing, listed with "
                  "their reasons)", highlight=False, soft_wrap=True)
