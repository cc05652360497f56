"""A static HTML report of a plate run: overview, QC flags, outliers, failures and one page per sample.

Built from what :func:`~flowtools.pipeline.plate.run_plate` wrote (its
outcomes, ``provenance.json``, ``errors.json`` and each sample's resolved
``gates/<sample>.gating-ml.xml``). ``flowtools gate`` draws each sample's gate
plots in its gating worker, from the values and masks its gates were computed on
(:func:`draw_after_gating`, with a ``plots.json`` manifest), so the report reads
and gates no FCS file again; plots without a matching manifest (a run gated
without the report, cached samples of an older version) are redrawn from the FCS
files with the exported gates, in worker processes. Pages are self-contained
(inline CSS, no JavaScript), link to each other relatively, show IDs from the
sample sheet only (never FCS free-text keywords), and are written atomically;
the same run gives the same bytes.

Layout::

    OUT/report/index.html
    OUT/report/samples/<sample>.html
    OUT/report/samples/<sample>/NN_<gate>.png
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowtools.pipeline.plate import PlateResult, SampleOutcome
from flowtools.provenance import atomic_write_bytes, atomic_write_text, safe_name
from flowtools.report.pages import _e, _fmt_cell, _href, _index_page, _table
from flowtools.report.qc import (  # noqa: F401 - the thresholds, documented in write_report, re-exported
    KEY_POPULATIONS,
    LOW_EVENTS_SHARE,
    OUTLIER_MIN_SAMPLES,
    OUTLIER_Z,
    QC_MIN_PCT,
    _finite,
    _outliers,
    _qc_flags,
    _read_json,
)
from flowtools.report.sample_page import sample_page

__all__ = ["draw_after_gating", "write_report"]

_log = logging.getLogger(__name__)



@dataclass(frozen=True)
class ReportSection:
    """An extra section of the report index (clusters, statistics...).

    Attributes
    ----------
    title : str
    text : str
        A paragraph (plain text; escaped).
    images : tuple of Path
        PNGs, copied into ``report/sections/<slug>/``.
    rows : tuple of dict
        A table (column -> value), shown under the text.
    links : tuple of (str, Path)
        Other pages (e.g. a stage's own HTML report): label and file, linked
        relative to the index.
    """

    title: str
    text: str = ""
    images: tuple[Path, ...] = ()
    rows: tuple[dict[str, Any], ...] = ()
    links: tuple[tuple[str, Path], ...] = ()


def write_report(
    plate_result: PlateResult, *, jobs: int | None = None, sections: Sequence[ReportSection] = ()
) -> Path:
    """Write the HTML report of a plate run under ``OUT/report/``.

    Parameters
    ----------
    plate_result : PlateResult
        What :func:`~flowtools.pipeline.plate.run_plate` returned; its output
        folder must still hold ``provenance.json``, ``errors.json`` and
        ``gates/``; plots not drawn at gating time need the FCS files where the
        sample sheet said.
    jobs : int, optional
        Worker processes drawing the gate plots (default: all cores; 1 draws
        in this process).
    sections : sequence of ReportSection, optional
        Further sections for the index (clustering, statistics), after the plates.

    Returns
    -------
    pathlib.Path
        ``OUT/report/index.html``.

    Notes
    -----
    The index holds a run summary, one 8 x 12 plate grid per plate, tube and
    key population (% of parent per well), QC flags (a QC/margin/boundary/
    singlet gate keeping < 85% of its parent; a well with < 20% of its plate's
    median events), outliers (robust z > 3.5 on % of parent, populations with
    at least 5 gated samples), the failures of ``errors.json`` and a link to
    every sample page. Near the top, "Gate checks" counts and lists the
    populations the resolver flagged (numbers kept but to be looked at: a
    fallback kept < 1% or > 99% of the parent, outside ``expect``) or failed
    (no numbers), each linked to its sample page. A sample page marks each
    such population with a worded badge and its reason, in its table and on
    its gate plot (a failed population without a gate gets a "no gate: <reason>"
    panel instead), shows how every data-driven gate was decided (rule, cut,
    peaks, fallback; the peaks and cut drawn on its plot), and still draws
    all its other gates. A sample whose plots cannot be drawn (its FCS file
    is gone or changed) still gets its page, saying why.

    When the run's sample sheet has anchor rows (its ``anchor`` column), a "Batch QC"
    section links ``report/batch_qc.html``
    (:func:`~flowtools.report.batch_qc.write_batch_qc`): Levey-Jennings charts and tables of
    every anchor population's % of parent across batches (mean, ± 2 SD and ± 3 SD; a batch
    outside ± 2 SD is ``warn``, outside ± 3 SD ``fail``) and of the anchors' marker medians
    (the transformed MFI of the anchor's largest population), and the section lists the
    flagged batches.
    """
    out = Path(plate_result.out_dir)
    rep = out / "report"
    pages = rep / "samples"
    pages.mkdir(parents=True, exist_ok=True)
    prov = _read_json(plate_result.provenance_json)
    errors_doc = _read_json(plate_result.errors_json)
    outcomes = list(plate_result.outcomes)

    batches = _sheet_batches(prov) if prov.get("normalize") else {}
    tasks = [_plot_task_for(o, out, pages, prov, batches) for o in outcomes if o.ok]
    plots = {r["sample_id"]: r for r in _run(_plot_task, [t for t in tasks if t is not None], jobs)}
    _remove_stale(pages, outcomes, plots)

    flags = _qc_flags(outcomes)
    outliers, n_tested = _outliers(outcomes)
    order = [o.sample_id for o in outcomes]
    for i, o in enumerate(outcomes):
        prev_id = order[i - 1] if i > 0 else None
        next_id = order[i + 1] if i + 1 < len(order) else None
        page = sample_page(
            o,
            plots.get(o.sample_id),
            flags.get(o.sample_id, []),
            [x for x in outliers if x["sample_id"] == o.sample_id],
            prev_id,
            next_id,
        )
        atomic_write_text(pages / f"{safe_name(o.sample_id)}.html", page)
    index = rep / "index.html"
    qc = _batch_qc_section(plate_result, prov, rep)
    extra = _sections_html(rep, [*sections, *([qc] if qc is not None else [])])
    page = _index_page(plate_result, outcomes, prov, errors_doc, flags, outliers, n_tested, extra)
    atomic_write_text(index, page)
    _log.info("report written: %s (%d sample pages)", index, len(outcomes))
    return index


_LJ_FLAGS = ("warn", "fail")


def _batch_qc_section(plate_result: PlateResult, prov: Mapping[str, Any], rep: Path) -> ReportSection | None:
    """Write ``report/batch_qc.html`` for a run whose sheet has anchors; its section (None: no anchors)."""
    from flowtools.errors import FlowtoolsError
    from flowtools.io.sample_sheet import read_sample_sheet
    from flowtools.report.batch_qc import levey_jennings, write_batch_qc

    sheet_path = (prov.get("input_paths") or {}).get("samples.csv")
    if not sheet_path:
        return None
    try:
        sheet = read_sample_sheet(sheet_path, tubes=None)
    except (FlowtoolsError, OSError):
        return None  # the sheet moved since the run: the rest of the report stands
    anchor_of = {r.sample_id: r for r in sheet.rows if r.is_anchor}
    if not anchor_of:
        return None
    from flowtools.analysis.populations import qc_populations

    gated = [o for o in plate_result.outcomes if o.sample_id in anchor_of and o.ok and o.rows]
    tubes = sorted({o.tube for o in gated})
    # the populations past the QC gates (the QC chain is on the sample pages), named short
    keep: set[tuple[str, str]] = set()
    for o in gated:
        qc = qc_populations(o.rows)
        past_qc = [r for r in o.rows if r["population"] not in qc] or o.rows
        keep |= {(o.tube, r["population"]) for r in past_qc}
    label = _short_labels(keep, with_tube=len(tubes) > 1)
    pops: list[dict[str, Any]] = []
    medians: list[dict[str, Any]] = []
    markers: set[str] = set()
    for o in gated:
        r = anchor_of[o.sample_id]
        for row in o.rows:
            if (o.tube, row["population"]) in keep:
                pops.append({"sample_id": o.sample_id, "population": label[(o.tube, row["population"])],
                             "pct_parent": row.get("pct_parent")})
        # marker medians: the transformed MFI of the anchor's largest population (~ the whole file)
        top = max(o.rows, key=lambda x: x.get("count") or 0)
        for k, v in top.items():
            if k.startswith("mfi_") and k.endswith("_transformed") and isinstance(v, int | float) and v == v:
                m = f"{o.tube}|{k[4:-12]}" if len(tubes) > 1 else k[4:-12]
                markers.add(m)
                medians.append({"sample_id": o.sample_id, "batch": r.batch, "plate": r.plate, "anchor": True,
                                "marker": m, "median_before": math.nan, "median_after": float(v)})
    if not medians:
        return ReportSection("Batch QC", text=f"The sample sheet names {len(anchor_of)} anchor sample(s), "
                             "but none was gated: no Levey-Jennings charts.")
    norm = prov.get("normalize")
    said = (f"normalised with model {norm.get('model')} (sha256 {str(norm.get('sha256'))[:12]})" if norm
            else "not normalised")
    notes = [f"Anchor samples of this gate run ({said}), per batch (the sample sheet's batch column, default "
             "the plate). Only the blue series (as gated) is drawn."]
    page = write_batch_qc(rep / "batch_qc.html", medians=medians, drift=(), before={}, after={},
                          markers=sorted(markers), populations=pops, title="Batch QC: anchor samples",
                          notes=notes)
    batch_of = {sid: r.batch for sid, r in anchor_of.items()}
    series: dict[str, dict[str, list[float]]] = {}
    for p in pops:
        v = p["pct_parent"]
        if isinstance(v, int | float) and v == v:
            series.setdefault(p["population"], {}).setdefault(batch_of[p["sample_id"]], []).append(float(v))
    flagged = []
    for name, by_b in series.items():
        vals = {b: sum(v) / len(v) for b, v in sorted(by_b.items())}
        lj = levey_jennings(vals)
        flagged += [{"population": name, "batch": b, "pct_parent": round(vals[b], 3),
                     "mean": round(lj["mean"], 3), "sd": round(lj["sd"], 3), "flag": fl}
                    for b, fl in lj["flags"].items() if fl in _LJ_FLAGS]
    batches = sorted({r.batch for r in anchor_of.values()})
    n_anchors = len({m["sample_id"] for m in medians})
    text = (f"{n_anchors} anchor sample(s) over {len(batches)} batch(es), {said}: "
            f"% of parent of {len(series)} population(s) on Levey-Jennings charts (mean, ± 2 SD, ± 3 SD). "
            + (f"{len(flagged)} population-batch value(s) outside ± 2 SD, listed below."
               if flagged else "No batch outside ± 2 SD."))
    return ReportSection("Batch QC", text=text, rows=tuple(flagged), links=(("batch QC page", page),))


def _short_labels(pairs: set[tuple[str, str]], *, with_tube: bool) -> dict[tuple[str, str], str]:
    """(tube, population path) -> the shortest tail of the path that no other pair shares (chart titles)."""
    out: dict[tuple[str, str], str] = {}
    for tube, path in pairs:
        parts = path.split("/")
        for k in range(1, len(parts) + 1):
            tail = "/".join(parts[-k:])
            if k == len(parts) or sum(1 for t, p in pairs if (t == tube or not with_tube)
                                      and (p == tail or p.endswith("/" + tail))) == 1:
                break
        out[(tube, path)] = f"{tube}|{tail}" if with_tube else tail
    return out


def _sections_html(rep: Path, sections: Sequence[ReportSection]) -> list[str]:
    out: list[str] = []
    for sec in sections:
        slug = "".join(ch if ch.isalnum() else "-" for ch in sec.title.lower()).strip("-") or "section"
        folder = rep / "sections" / slug
        out.append(f'<h2 id="{_e(slug)}">{_e(sec.title)}</h2>')
        if sec.text:
            out.append(f"<p>{_e(sec.text)}</p>")
        if sec.links:
            rel = [(label, Path(os.path.relpath(Path(t).resolve(), rep.resolve())).as_posix())
                   for label, t in sec.links]
            items = "".join(f'<li><a href="{_href(r)}">{_e(label)}</a></li>' for label, r in rel)
            out.append(f"<ul>{items}</ul>")
        if sec.rows:
            cols = list(sec.rows[0])
            out.append(_table(cols, ([_e(_fmt_cell(r.get(c))) for c in cols] for r in sec.rows)))
        for img in sec.images:
            data = Path(img).read_bytes()
            atomic_write_bytes(folder / Path(img).name, data)
            out.append(f'<figure><img src="sections/{_e(slug)}/{_e(Path(img).name)}" '
                       f'alt="{_e(Path(img).stem)}">'
                       f"<figcaption>{_e(Path(img).stem.replace('_', ' '))}</figcaption></figure>")
    return out



# ------------------------------------------------------------------------------------------ plots (workers)


def _sheet_batches(prov: Mapping[str, Any]) -> dict[str, str]:
    """sample_id -> batch, from the run's sample sheet (a normalised run redraws its plots normalised)."""
    from flowtools.errors import FlowtoolsError
    from flowtools.io.sample_sheet import read_sample_sheet

    path = (prov.get("input_paths") or {}).get("samples.csv")
    try:
        return {r.sample_id: r.batch for r in read_sample_sheet(path, tubes=None)} if path else {}
    except (FlowtoolsError, OSError):
        return {}  # the sheet moved or changed: those samples' pages say their plots cannot be drawn


def _plot_task_for(
    o: SampleOutcome, out: Path, pages: Path, prov: Mapping[str, Any],
    batches: Mapping[str, str] | None = None,
) -> dict[str, Any] | None:
    gml = out / "gates" / f"{safe_name(o.sample_id)}.gating-ml.xml"
    norm = prov.get("normalize")
    return {
        "normalize": None if not norm else {"path": norm["path"], "sha256": norm["sha256"],
                                            "batch": (batches or {}).get(o.sample_id)},
        "sample_id": o.sample_id,
        "file": o.file,
        "gatingml": str(gml) if gml.is_file() else None,
        "gatingml_text": None if gml.is_file() else o.gatingml,
        "out_dir": str(pages / safe_name(o.sample_id)),
        "labels": _labels(o.rows),
        "sha256": (prov.get("fcs_sha256") or {}).get(o.sample_id),
        "status": {r["population"]: r.get("status") or "ok" for r in o.rows},
        "decisions": dict(o.decisions),
    }


def _labels(rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Gate id -> population path, as the template named its gates (the ids the run recorded).

    A failed population whose gate could not be computed has no gate id (nothing to label).
    """
    return {r["gate_id"]: r["population"] for r in rows if r.get("gate_id")}


_SEVERITY = {"ok": 0, "flagged": 1, "failed": 2}


def _gate_info(
    strategy: Any, labels: Mapping[str, str], status: Mapping[str, str], decisions: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Gate id -> the populations it draws, their worst status and the decision (entry path) behind it.

    A 1-D or 2-D gate draws one population, whose path is its decision's key; a quadrant gate
    draws its quadrants, and its decision is keyed by the template entry (the quadrants' parent
    path + the entry's name): found by :func:`_quad_decision`.
    """
    from flowtools.gating.gates import BooleanGate, QuadrantGate

    by_path = {path: gid for gid, path in labels.items()}
    info: dict[str, dict[str, Any]] = {}
    for pid, pop in strategy.populations.items():
        g = pop.gate
        if isinstance(g, BooleanGate):
            continue
        entry = info.setdefault(g.id, {"populations": [], "decision": None, "status": "ok"})
        path = labels.get(pid)
        if path is not None:
            entry["populations"].append(path)
            st = status.get(path, "ok")
            if _SEVERITY.get(st, 0) > _SEVERITY.get(entry["status"], 0):
                entry["status"] = st
        if not isinstance(g, QuadrantGate):
            if path in decisions:
                entry["decision"] = path
            continue
        if entry["decision"] is not None:
            continue
        parent = labels.get(pop.parent, "") if pop.parent is not None else ""
        cuts = [div.values[0] if div.values else math.nan for div in g.dividers[:2]]
        entry["decision"] = _quad_decision(decisions, set(by_path), parent, cuts)
    return info


def _quad_decision(
    decisions: Mapping[str, Any], populations: set[str], parent: str, cuts: Sequence[float]
) -> str | None:
    """The decision (template entry path) behind a quadrant gate of ``parent`` with these cuts.

    An entry of that parent which is not itself a population, whose recorded cuts (computed:
    ``details`` ``x_cut``/``y_cut``; given: ``params``) are the gate's; a pooled entry records
    none, and is taken when it is the parent's only quad entry.
    """
    unverified = []
    for path, d in decisions.items():
        if path in populations or path.rpartition("/")[0] != parent or not isinstance(d, Mapping):
            continue
        det = d.get("details") if isinstance(d.get("details"), Mapping) else {}
        par = d.get("params") if isinstance(d.get("params"), Mapping) else {}
        known = [(det.get(f"{a}_cut", par.get(f"{a}_cut")), c) for a, c in zip("xy", cuts, strict=False)]
        known = [(float(v), c) for v, c in known if _finite(v)]
        if not known:
            if d.get("method") == "quad":
                unverified.append(path)
            continue
        if all(math.isfinite(c) and abs(v - c) <= 1e-9 * (1.0 + abs(c)) for v, c in known):
            return path
    return unverified[0] if len(unverified) == 1 else None


_MANIFEST = "plots.json"


def _plot_task(task: dict[str, Any]) -> dict[str, Any]:
    """Redraw one sample's gate plots (runs in a worker). Never raises: a failure is returned.

    Plots drawn right after gating (:func:`draw_after_gating`) are reused when their manifest
    names the same exported gates and FCS file: nothing is read or gated again.
    """
    from flowtools.gating.engine import gate_sample
    from flowtools.gating.formats.gatingml import read_gatingml
    from flowtools.provenance import file_sha256

    res: dict[str, Any] = {"sample_id": task["sample_id"], "plots": [], "error": None, "changed": False}
    try:
        if task["gatingml"] is None and not task["gatingml_text"]:
            res["error"] = "no exported gates (Gating-ML) for this sample"
            return res
        source = (
            Path(task["gatingml"]).read_bytes()
            if task["gatingml"] is not None
            else task["gatingml_text"].encode("utf-8")
        )
        reused = _reuse(task, source)
        if reused is not None:
            res["plots"] = reused
            return res
        if task["sha256"] is not None:
            res["changed"] = file_sha256(task["file"]) != task["sha256"]
        sample = _plot_sample(task)
        strategy = read_gatingml(source)
        result = gate_sample(strategy, sample, sample_id=task["sample_id"])
        res["plots"] = _draw(task, sample, strategy, result, None)
        if not res["changed"] and task["sha256"] is not None:  # a later report reuses these
            _write_manifest(task, source, task["sha256"], res["plots"])
    except Exception as exc:  # noqa: BLE001 - one sample's plots must not stop the report; shown on its page
        res["error"] = f"{type(exc).__name__}: {exc}"
    return res


def _plot_sample(task: Mapping[str, Any]) -> Any:
    """The sample as it was gated: the FCS file, normalised for its batch when the run was."""
    from flowtools.io.fcs import read_fcs

    norm = task.get("normalize")
    if not norm:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return read_fcs(task["file"])
    from flowtools.analysis.normalize import normalize_sample

    if norm.get("batch") is None:
        msg = "the run was normalised, but the sample's batch is not in its sample sheet any more"
        raise ValueError(msg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return normalize_sample(task["file"], _model(norm["path"], norm["sha256"]), norm["batch"]).to_sample()


@functools.lru_cache(maxsize=2)
def _model(path: str, sha256: str) -> Any:
    """The run's normalisation model, read and checked once per worker (not once per sample)."""
    from flowtools.analysis.normalize import CytoNorm
    from flowtools.provenance import file_sha256

    if file_sha256(path) != sha256:
        msg = f"{path}: the normalisation model changed since the run"
        raise ValueError(msg)
    return CytoNorm.load(path)


def _reuse(task: Mapping[str, Any], source: bytes) -> list[dict[str, Any]] | None:
    """The plots a gating worker drew for exactly these gates and this file, if all are still there."""
    import hashlib

    manifest = Path(task["out_dir"]) / _MANIFEST
    try:
        doc = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (doc.get("gatingml_sha256") != hashlib.sha256(source).hexdigest()
            or task["sha256"] is None or doc.get("fcs_sha256") != task["sha256"]
            or doc.get("labels") != task["labels"] or doc.get("status") != task["status"]):
        return None
    plots = doc.get("plots")
    if not isinstance(plots, list) or not all((Path(task["out_dir"]) / p["name"]).is_file() for p in plots):
        return None
    return plots


def _draw(
    task: Mapping[str, Any], sample: Any, strategy: Any, result: Any, column: Any
) -> list[dict[str, Any]]:
    """Draw a gated sample's plots into ``task["out_dir"]``; the page's plot entries."""
    from flowtools.gating.gates import BooleanGate, QuadrantGate
    from flowtools.report.plots import _display_names, _last, _safe_name, gate_plots

    names = _display_names(strategy, task["labels"])
    decisions = task.get("decisions") or {}
    info = _gate_info(strategy, task["labels"], task.get("status") or {}, decisions)
    captions: dict[str, str] = {}
    for pid, pop in strategy.populations.items():
        g = pop.gate
        if isinstance(g, BooleanGate):
            continue
        if isinstance(g, QuadrantGate):
            parent = names[pop.parent] if pop.parent is not None else "all events"
            quads = ", ".join(_last(names[q.id]) for q in g.quadrants if q.id in names)
            captions[_safe_name(g.id)] = f"quadrants of {parent}: {quads}"
        else:
            captions[_safe_name(g.id)] = names[pid]
    by_safe = {_safe_name(gid): i for gid, i in info.items()}
    drawn = gate_plots(
        sample,
        strategy,
        result,
        task["out_dir"],
        labels=task["labels"],
        decisions={gid: decisions[i["decision"]] for gid, i in info.items() if i["decision"]},
        status={gid: i["status"] for gid, i in info.items()},
        column=column,
    )
    plots = []
    for p in drawn:
        key = p.stem.split("_", 1)[-1]
        i = by_safe.get(key, {})
        plots.append(
            {
                "name": p.name,
                "caption": captions.get(key, p.stem),
                "populations": list(i.get("populations", [])),
                "decision": i.get("decision"),
            }
        )
    return plots


def draw_after_gating(resolved: Any, sample: Any, outcome: SampleOutcome, out_dir: str | os.PathLike[str],
                      fcs_sha256: str) -> None:
    """Draw a sample's gate plots in the gating worker, from the values its gates were computed on.

    The plate runner calls this (``run_plate(..., after_gate=...)``) when a report will be
    written: the report then reuses these PNGs instead of reading and gating every FCS file
    again. A manifest (``plots.json``) beside them names the exported gates (hash), the FCS
    file (hash), the labels and statuses they were drawn with; :func:`write_report` redraws
    a sample whose manifest does not match. Drawing problems are left to the report, which
    redraws and shows the reason on the sample's page.
    """
    pages = Path(out_dir) / "report" / "samples"
    task = _plot_task_for(outcome, Path(out_dir), pages, {"fcs_sha256": {outcome.sample_id: fcs_sha256}})
    if task is None or not outcome.gatingml:
        return
    try:
        plots = _draw(task, sample, resolved.strategy, resolved.result, resolved.column)
    except Exception:  # noqa: BLE001 - the report redraws this sample and shows why it failed
        return
    _write_manifest(task, outcome.gatingml.encode("utf-8"), fcs_sha256, plots)


def _write_manifest(
    task: Mapping[str, Any], source: bytes, fcs_sha256: str, plots: list[dict[str, Any]]
) -> None:
    import hashlib

    doc = {"gatingml_sha256": hashlib.sha256(source).hexdigest(), "fcs_sha256": fcs_sha256,
           "labels": task["labels"], "status": task["status"], "plots": plots}
    atomic_write_text(Path(task["out_dir"]) / _MANIFEST, json.dumps(doc, indent=1, sort_keys=True) + "\n")


def _worker_init() -> None:
    os.environ["NUMBA_NUM_THREADS"] = "1"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from flowtools._workers import exit_with_parent

    exit_with_parent()  # a killed report run leaves no worker behind


def _run(fn: Any, tasks: Sequence[dict[str, Any]], jobs: int | None) -> list[dict[str, Any]]:
    n = jobs if jobs is not None else (os.cpu_count() or 1)
    n = max(1, min(n, len(tasks)))
    if n == 1:
        return [fn(t) for t in tasks]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(n, mp_context=mp.get_context("spawn"), initializer=_worker_init) as pool:
        return list(pool.map(fn, tasks))


def _remove_stale(
    pages: Path, outcomes: Sequence[SampleOutcome], plots: Mapping[str, dict[str, Any]]
) -> None:
    """Remove pages and PNGs an earlier report wrote for samples or gates this run no longer has."""
    keep_pages = {f"{safe_name(o.sample_id)}.html" for o in outcomes}
    keep_dirs = {safe_name(sid): {p["name"] for p in r["plots"]} for sid, r in plots.items()}
    for p in sorted(pages.glob("*.html")):
        if p.name not in keep_pages:
            p.unlink()
    for d in sorted(x for x in pages.iterdir() if x.is_dir()):
        keep = keep_dirs.get(d.name, set())
        for png in sorted(d.glob("*.png")):
            if png.name not in keep:
                png.unlink()
        if d.name not in keep_dirs:
            (d / _MANIFEST).unlink(missing_ok=True)
        if not any(d.iterdir()):
            d.rmdir()

