"""``flowtools info``: what an FCS file holds (header, channels, markers, keywords), for one or many files.

Registered by ``flowtools.cli`` as a top-level command. Library modules are imported inside the
functions so that ``flowtools --help`` stays light.
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


def _info_record(path: Path, *, dataset: int, all_keywords: bool) -> dict[str, Any]:
    from flowtools.io.fcs import read_fcs
    from flowtools.io.keywords import shown_value

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the same notes are on sample.warnings, shown below
        sample = read_fcs(path, dataset=dataset, lazy=True)
    spill = sample.spillover
    rec: dict[str, Any] = {
        "file": str(path),
        "fcs_version": sample.version,
        "dataset": sample.dataset + 1,
        "n_datasets": sample.n_datasets,
        "n_events": sample.n_events,
        "n_parameters": sample.n_channels,
        "data_type": sample.data_type,
        "cytometer": sample.keywords.get("$CYT", "").strip() or None,
        "spillover": None
        if spill is None
        else {"keyword": spill.keyword, "detectors": list(spill.detectors), "matrix": spill.matrix.tolist()},
        "channels": [
            {
                "index": c.index + 1,
                "pnn": c.pnn,
                "pns": c.pns,
                "range": c.pnr,
                "bits": c.pnb,
                "scale": "linear" if c.pne[0] == 0 else f"log {c.pne[0]:g} decades",
                "gain": c.png,
            }
            for c in sample.channels
        ],
        "warnings": list(sample.warnings),
        # a binary value (a vendor blob, stray bytes) is shown as "<n bytes>", never printed
        "keywords": {k: shown_value(v) for k, v in
                     (sample.keywords if all_keywords else sample.safe_keywords()).items()},
        "keywords_shown": "all" if all_keywords else "structural only (use --all-keywords for all)",
    }
    return rec


def _print_info(rec: dict[str, Any]) -> None:
    from rich.markup import escape

    spill = rec["spillover"]
    spill_txt = "none" if spill is None else f"{spill['keyword']} ({len(spill['detectors'])} detectors)"
    console.rule(f"[bold]{escape(rec['file'])}")
    console.print(
        f"FCS {rec['fcs_version']}  data set {rec['dataset']} of {rec['n_datasets']}  "
        f"[bold]{rec['n_events']:,}[/] events x [bold]{rec['n_parameters']}[/] parameters  "
        f"type {rec['data_type']}  cytometer {escape(rec['cytometer'] or '-')}  "
        f"spillover {escape(spill_txt)}",
        highlight=False,
    )
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for col in ("#", "channel ($PnN)", "marker ($PnS)", "range", "bits", "scale", "gain"):
        table.add_column(col)
    for c in rec["channels"]:
        table.add_row(
            str(c["index"]),
            escape(c["pnn"]),
            escape(c["pns"] or "-"),
            "-" if c["range"] is None else f"{c['range']:g}",
            "*" if c["bits"] is None else str(c["bits"]),
            c["scale"],
            f"{c['gain']:g}",
        )
    console.print(table)
    for w in rec["warnings"]:
        console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)
    if rec["keywords_shown"] == "all":
        kt = Table("keyword", "value", box=None, header_style="bold")
        for k, v in rec["keywords"].items():
            kt.add_row(escape(k), escape(v))
        console.print(kt)


def info(
    files: Annotated[list[Path], typer.Argument(help="FCS files to describe.", show_default=False)],
    json_out: Annotated[
        bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")
    ] = False,
    all_keywords: Annotated[
        bool,
        typer.Option(
            "--all-keywords",
            help="Also show free-text and possibly personal keywords ($SRC, $OP, $FIL, patient fields...).",
        ),
    ] = False,
    dataset: Annotated[int, typer.Option(min=1, help="Which data set, for files holding several.")] = 1,
) -> None:
    """Describe FCS files: version, events, channels and markers, spillover, data sets, warnings.

    Reads only HEADER and TEXT, so it is fast on big files. Free-text keywords
    that may hold personal data are never shown unless --all-keywords is given.
    """
    from flowtools.errors import FlowtoolsError

    records: list[dict[str, Any]] = []
    failed = 0
    for path in files:
        try:
            rec = _info_record(path, dataset=dataset - 1, all_keywords=all_keywords)
        except (FlowtoolsError, OSError) as exc:
            failed += 1
            msg = str(exc) if isinstance(exc, FlowtoolsError) else f"{path}: {exc.strerror or exc}"
            records.append({"file": str(path), "error": msg})
            if not json_out:
                err_console.print(f"[red]error:[/] {msg}", highlight=False, soft_wrap=True)
            continue
        records.append(rec)
        if not json_out:
            _print_info(rec)
    if json_out:
        sys.stdout.write(json.dumps(records, indent=2) + "\n")
    if failed:
        raise typer.Exit(EXIT_FAIL if failed == len(files) else EXIT_PARTIAL)
