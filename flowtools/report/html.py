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

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowtools.pipeline.plate import PlateResult
from flowtools.provenance import atomic_write_bytes, atomic_write_text, safe_name
from flowtools.report.pages import _e, _fmt_cell, _href, _index_page, _table
from flowtools.report.plot_tasks import (  # noqa: F401 - the gate plots, moved there; re-exported
    _MANIFEST,
    _SEVERITY,
    _draw,
    _gate_info,
    _labels,
    _model,
    _plot_sample,
    _plot_task,
    _plot_task_for,
    _quad_decision,
    _remove_stale,
    _reuse,
    _run,
    _sheet_batches,
    _worker_init,
    _write_manifest,
    draw_after_gating,
)
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
