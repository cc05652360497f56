"""A MIFlowCyt 1.0 record of a ``flowtools gate`` run: what its files, sheet, templates and run say.

MIFlowCyt (Minimum Information about a Flow Cytometry Experiment, Lee et al., Cytometry A
2008;73A:926-930) asks for four sections: experiment overview, flow sample/specimen details,
instrument details and data analysis details. :func:`miflowcyt_record` fills what a run can
know, and only that:

- instrument: ``$CYT`` (model), per channel ``$PnN``/``$PnS``, ``$PnV`` (detector voltage),
  ``$PnL`` (excitation wavelength), ``$PnF`` (optical filter), ``$PnT`` (detector type),
  ``$PnO`` (excitation power), ``$PnP`` (% emitted light collected), ``$PnD`` (suggested
  display scale), where the files write them;
- samples: the sample sheet's IDs (sample, woman pseudonym, tube, plate, well);
- data analysis: each file's SHA-256, FCS version, events, compensation (the template's choice
  and each file's ``$SPILLOVER`` detectors), transforms, the gating hierarchy (populations,
  parents, dimensions, gate types), gate boundaries (the run's Gating-ML files) and statistics
  (``populations.csv``), software versions (the run's provenance).

Everything else is listed under ``missing`` with the reason; nothing is invented. Only keywords
on flowtools' allow-list (:mod:`flowtools.io.keywords`) are read: ``$SRC``, ``$OP``, ``$FIL``,
``$DATE``, ``$CYTSN`` and vendor or patient fields are never copied (a date or a serial number
that is not on the allow-list is reported missing, "withheld").
"""

from __future__ import annotations

import html
import json
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flowtools._version import __version__
from flowtools.errors import ExportError
from flowtools.provenance import atomic_write_text, safe_name

__all__ = ["MIFLOWCYT_VERSION", "miflowcyt_html", "miflowcyt_record", "write_miflowcyt"]

MIFLOWCYT_VERSION = "1.0"
_REFERENCE = "Lee JA et al. MIFlowCyt: the minimum information about a flow cytometry experiment. " \
             "Cytometry A 2008;73A:926-930"
# Per-channel keywords and the MIFlowCyt field each fills.
_CHANNEL_FIELDS = {
    "V": "detector_voltage",
    "L": "excitation_wavelength_nm",
    "F": "optical_filter",
    "T": "detector_type",
    "D": "suggested_display_scale",
    "O": "excitation_power_mw",
    "P": "percent_light_collected",
}
_WITHHELD = ("withheld: {k} is not on flowtools' keyword allow-list (flowtools.io.keywords); "
             "it may be personal")


def _missing(out: list[dict[str, str]], section: str, fld: str, reason: str) -> None:
    out.append({"section": section, "field": fld, "reason": reason})


def _read_keywords(path: str) -> tuple[dict[str, str], dict[str, Any]]:
    """(allow-listed keywords, facts) of one FCS file; the events are not read."""
    from flowtools.io.fcs import read_fcs
    from flowtools.io.keywords import has_binary_content, safe_keywords

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = read_fcs(path, lazy=True)
    kw = {k: v for k, v in safe_keywords(s.keywords).items() if not has_binary_content(v)}
    facts = {"fcs_version": s.version, "events": s.n_events, "parameters": s.n_channels,
             "has_date": "$DATE" in s.keywords, "has_cytsn": "$CYTSN" in s.keywords,
             "spillover": list(s.spillover.detectors) if s.spillover is not None else None,
             "spillover_keyword": s.spillover.keyword if s.spillover is not None else None,
             "channels": [{"index": c.index + 1, "pnn": c.pnn, "pns": c.pns} for c in s.channels]}
    return kw, facts


def _instrument(tube: str, files: list[tuple[dict[str, str], dict[str, Any]]],
                missing: list[dict[str, str]]) -> dict[str, Any]:
    kw, facts = files[0]
    sec = f"instrument_details[{tube}]"
    cyt = {k.get("$CYT") for k, _ in files}
    out: dict[str, Any] = {"tube": tube}
    if kw.get("$CYT"):
        out["model"] = kw["$CYT"]
        if len(cyt) > 1:
            out["models_in_tube"] = sorted(c for c in cyt if c)
    else:
        _missing(missing, sec, "model", "no $CYT keyword in the files")
    _missing(missing, sec, "manufacturer", "FCS files do not name the manufacturer (only $CYT, the model)")
    if facts["has_cytsn"]:
        _missing(missing, sec, "serial_number", _WITHHELD.format(k="$CYTSN"))
    else:
        _missing(missing, sec, "serial_number", "no $CYTSN keyword in the files")
    if kw.get("$FLOWRATE"):
        out["flow_rate"] = kw["$FLOWRATE"]
    else:
        _missing(missing, sec, "flow_cell_and_fluidics",
                 "no $FLOWRATE keyword; fluidics settings not in the files")
    channels = []
    absent: dict[str, list[str]] = {f: [] for f in _CHANNEL_FIELDS.values()}
    for ch in facts["channels"]:
        i = ch["index"]
        c: dict[str, Any] = {"channel": ch["pnn"], "marker": ch["pns"] or ""}
        for letter, name in _CHANNEL_FIELDS.items():
            v = kw.get(f"$P{i}{letter}")
            if v is not None and v.strip():
                c[name] = v.strip()
                values = {k.get(f"$P{i}{letter}") for k, _ in files}
                if len(values) > 1:
                    c[f"{name}_varies"] = sorted(x for x in values if x)
            else:
                absent[name].append(ch["pnn"])
        channels.append(c)
    for name, chans in absent.items():
        if chans:
            letter = next(k for k, v in _CHANNEL_FIELDS.items() if v == name)
            _missing(missing, sec, f"channels.{name}",
                     f"no $Pn{letter} in the files for {', '.join(chans)}")
    out["channels"] = channels
    _missing(missing, sec, "light_sources", "laser types and powers are not in the files beyond $PnL/$PnO")
    return out


def _gating(template: Any) -> dict[str, Any]:
    pops = []
    for spec in template.populations:
        if spec.method:
            gate_type = f"data-driven: {spec.method}"
        elif spec.gate:
            gate_type = f"static: {next(iter(spec.gate))}"
        else:
            gate_type = ""
        for path in spec.outputs:
            pops.append({"population": path, "parent": spec.parent, "dimensions": list(spec.dims),
                         "gate_type": gate_type, "role": spec.role or "",
                         "arguments": json.loads(json.dumps(dict(spec.args), default=str))})
    transforms = {k: {"kind": v.kind, "params": v.params if isinstance(v.params, str) else dict(v.params)}
                  for k, v in template.transforms.items()}
    return {"template": template.name, "tube": template.tube or "", "sha256": template.sha256,
            "description": template.description, "compensation": template.compensation,
            "transforms": transforms, "populations": pops}


def miflowcyt_record(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The MIFlowCyt 1.0 record of a gate run (plain JSON data).

    Parameters
    ----------
    run_dir : path
        Output folder of ``flowtools gate``.

    Returns
    -------
    dict
        ``standard``, ``generated_by``, ``experiment_overview``, ``flow_sample_details``,
        ``instrument_details`` (one per tube), ``data_analysis_details`` and ``missing``
        (section, field, reason of everything the run cannot know).

    Raises
    ------
    ExportError
        Not a gate run, or its sample sheet or templates cannot be found.
    """
    from flowtools.pipeline.export import load_run

    run = load_run(run_dir)
    missing: list[dict[str, str]] = []
    prov = run.provenance
    ov = "experiment_overview"
    for fld, why in (("purpose", "not recorded by flowtools (give it in the publication)"),
                     ("keywords", "not recorded by flowtools"),
                     ("experiment_variables",
                      "not recorded by flowtools (the clinical table holds the groups)"),
                     ("organization", "not recorded by flowtools"),
                     ("primary_contact", "not recorded by flowtools"),
                     ("conclusions", "not recorded by flowtools")):
        _missing(missing, ov, fld, why)
    overview: dict[str, Any] = {"analysis_date": prov.get("created", "")}
    per_file: dict[str, tuple[dict[str, str], dict[str, Any]]] = {}
    for s in run.samples:
        try:
            per_file[s["sample_id"]] = _read_keywords(s["file"])
        except (OSError, ValueError) as exc:
            msg = f"{s['file']}: cannot read the keywords of sample {s['sample_id']}: {exc}"
            raise ExportError(msg) from None
    if any(f["has_date"] for _, f in per_file.values()):
        _missing(missing, ov, "acquisition_date", _WITHHELD.format(k="$DATE"))
    else:
        _missing(missing, ov, "acquisition_date", "no $DATE keyword in the files")
    templates = {t: run.template(t) for t in run.tubes}
    qc = sorted({p for t in templates.values() for p, r in t.roles.items() if r == "qc"})
    overview["quality_control_measures"] = (
        f"acquisition/clean-up gates (template role qc): {', '.join(qc)}" if qc else "")
    if not qc:
        _missing(missing, ov, "quality_control_measures", "the templates mark no qc populations")

    fs = "flow_sample_details"
    samples = [{k: s[k] for k in ("sample_id", "woman_id", "tube", "plate", "well")} for s in run.samples]
    reagents = {}
    for tube in run.tubes:
        first = next(s for s in run.samples if s["tube"] == tube)
        _, facts = per_file[first["sample_id"]]
        reagents[tube] = [{"channel": c["pnn"], "characteristic_measured": c["pns"]}
                          for c in facts["channels"] if c["pns"]]
    for fld, why in (("material", "specimen material is not in the sheet or the files"),
                     ("source_organism", "not in the sheet or the files"),
                     ("sample_treatment", "staining, lysis and fixation are not recorded in the files"),
                     ("reagents.reporter",
                      "fluorochrome per marker is not a keyword ($PnN names the detector)"),
                     ("reagents.clone_manufacturer_catalog", "not in the files")):
        _missing(missing, fs, fld, why)
    extras = sorted({k for s in run.samples for k in s.get("extra", {})})
    flow_sample = {"samples": samples, "fluorescence_reagents": reagents,
                   "sample_sheet_extra_columns": extras,
                   "note": ("IDs are the sample sheet's; the files' free-text and personal keywords "
                            "are not read")}

    instruments = []
    for tube in run.tubes:
        files = [per_file[s["sample_id"]] for s in run.samples if s["tube"] == tube]
        instruments.append(_instrument(tube, files, missing))

    da = "data_analysis_details"
    hashes = prov.get("fcs_sha256") or {}
    lmd = []
    for s in run.samples:
        _, f = per_file[s["sample_id"]]
        lmd.append({"sample_id": s["sample_id"], "sha256": hashes.get(s["sample_id"], ""),
                    "fcs_version": f["fcs_version"], "events": f["events"], "parameters": f["parameters"]})
    comp = {}
    for s in run.samples:
        _, f = per_file[s["sample_id"]]
        t = templates[s["tube"]]
        comp[s["sample_id"]] = {"method": t.compensation,
                                "matrix": (f"the file's {f['spillover_keyword']} "
                                           f"({len(f['spillover'])} detectors)") if t.compensation == "FCS"
                                and f["spillover"] else ("none" if t.compensation == "uncompensated"
                                                         else str(Path(t.compensation).name)),
                                "detectors": f["spillover"] or []}
    software = {"name": prov.get("tool", "flowtools"), "version": prov.get("version", ""),
                "python": prov.get("python", "")}
    if prov.get("libraries"):
        software["libraries"] = prov["libraries"]
    else:
        _missing(missing, da, "software.libraries", "the run's provenance records no library versions")
    analysis = {
        "list_mode_data_files": lmd,
        "compensation": comp,
        "gating": [_gating(t) for t in templates.values()],
        "gate_boundaries": {s["sample_id"]: f"gates/{safe_name(s['sample_id'])}.gating-ml.xml"
                            for s in run.samples},
        "gate_statistics": ("populations.csv (counts, % of parent, % of total, MFIs per sample and "
                            "population)"),
        "software": software,
        "seed": prov.get("seed"),
    }
    return {
        "standard": f"MIFlowCyt {MIFLOWCYT_VERSION}",
        "reference": _REFERENCE,
        "generated_by": {"tool": "flowtools", "version": __version__},
        "run": str(run.run_dir),
        "experiment_overview": overview,
        "flow_sample_details": flow_sample,
        "instrument_details": instruments,
        "data_analysis_details": analysis,
        "missing": missing,
    }


def write_miflowcyt(run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Write :func:`miflowcyt_record` as JSON (atomically); default ``RUN_DIR/miflowcyt.json``.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    record = miflowcyt_record(run_dir)
    dest = Path(out) if out is not None else Path(run_dir) / "miflowcyt.json"
    atomic_write_text(dest, json.dumps(record, indent=2, allow_nan=False) + "\n")
    return dest


def _cell(v: Any) -> str:
    if isinstance(v, Mapping | list):
        v = json.dumps(v, sort_keys=True)
    return html.escape("" if v is None else str(v))


def _gate_line(p: Mapping[str, Any]) -> str:
    return (f"{_cell(p['population'])} &larr; {_cell(p['parent'] or 'all events')} "
            f"[{_cell(', '.join(p['dimensions']))}] {_cell(p['gate_type'])}")


_SECTION_TITLES = (("experiment_overview", "Experiment overview"),
                   ("flow_sample_details", "Flow sample/specimen details"),
                   ("instrument_details", "Instrument details"),
                   ("data_analysis_details", "Data analysis details"))
_ID = re.compile(r"[^a-z0-9_-]")


def miflowcyt_html(record: Mapping[str, Any]) -> str:
    """An HTML ``<section>`` of a MIFlowCyt record for a report (every value escaped).

    Parameters
    ----------
    record : mapping
        Output of :func:`miflowcyt_record`.
    """
    parts = ['<section class="miflowcyt" id="miflowcyt">',
             f"<h2>{_cell(record.get('standard', 'MIFlowCyt'))} record</h2>",
             f"<p>{_cell(record.get('reference', ''))}</p>"]
    for key, title in _SECTION_TITLES:
        sec = record.get(key)
        parts.append(f'<h3 id="miflowcyt-{_ID.sub("-", key)}">{html.escape(title)}</h3>')
        if key == "instrument_details":
            for inst in sec or []:
                model = _cell(inst.get("model", "model unknown"))
                parts.append(f"<h4>Tube {_cell(inst.get('tube'))}: {model}</h4>")
                cols = ["channel", "marker", *dict.fromkeys(
                    k for c in inst.get("channels", []) for k in c if k not in ("channel", "marker"))]
                parts.append("<table><tr>" + "".join(f"<th>{_cell(c)}</th>" for c in cols) + "</tr>")
                for c in inst.get("channels", []):
                    parts.append("<tr>" + "".join(f"<td>{_cell(c.get(k, ''))}</td>" for k in cols) + "</tr>")
                parts.append("</table>")
            continue
        parts.append("<table>")
        for k, v in (sec or {}).items():
            if key == "data_analysis_details" and k == "gating":
                for g in v:
                    parts.append(f"<tr><th>gating ({_cell(g['template'])}, tube {_cell(g['tube'])})</th><td>"
                                 + "<br>".join(_gate_line(p) for p in g["populations"]) + "</td></tr>")
                continue
            parts.append(f"<tr><th>{_cell(k)}</th><td>{_cell(v)}</td></tr>")
        parts.append("</table>")
    missing = record.get("missing", [])
    parts.append(f"<h3>Missing ({len(missing)})</h3>")
    parts.append("<table><tr><th>section</th><th>field</th><th>reason</th></tr>")
    for m in missing:
        parts.append(f"<tr><td>{_cell(m['section'])}</td><td>{_cell(m['field'])}</td><td>{_cell(m['reason'])}"
                     "</td></tr>")
    parts.append("</table></section>")
    return "\n".join(parts) + "\n"
