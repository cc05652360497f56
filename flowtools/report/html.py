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

import json
import logging
import math
import os
import re
import statistics
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from flowtools.analysis.populations import QC_NAME_PARTS, QC_NAMES, qc_populations
from flowtools.gating.templates.resolve import FALLBACK_FLAG_PCT
from flowtools.pipeline.plate import PlateResult, SampleOutcome
from flowtools.provenance import atomic_write_bytes, atomic_write_text, safe_name

__all__ = ["draw_after_gating", "write_report"]

_log = logging.getLogger(__name__)

#: A QC gate keeping less than this % of its parent is flagged.
QC_MIN_PCT = 85.0
#: A well with fewer events than this share of its plate's median is flagged.
LOW_EVENTS_SHARE = 0.2
#: |x - median| / (1.4826 MAD) above this is an outlier.
OUTLIER_Z = 3.5
#: Outliers are looked for only in populations with at least this many gated samples.
OUTLIER_MIN_SAMPLES = 5
#: Plate grids drawn per tube: the first populations in template order that are not QC gates.
KEY_POPULATIONS = 6

_ROWS = "ABCDEFGH"
_COLS = range(1, 13)


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
    """
    out = Path(plate_result.out_dir)
    rep = out / "report"
    pages = rep / "samples"
    pages.mkdir(parents=True, exist_ok=True)
    prov = _read_json(plate_result.provenance_json)
    errors_doc = _read_json(plate_result.errors_json)
    outcomes = list(plate_result.outcomes)

    tasks = [_plot_task_for(o, out, pages, prov) for o in outcomes if o.ok]
    plots = {r["sample_id"]: r for r in _run(_plot_task, [t for t in tasks if t is not None], jobs)}
    _remove_stale(pages, outcomes, plots)

    flags = _qc_flags(outcomes)
    outliers, n_tested = _outliers(outcomes)
    order = [o.sample_id for o in outcomes]
    for i, o in enumerate(outcomes):
        prev_id = order[i - 1] if i > 0 else None
        next_id = order[i + 1] if i + 1 < len(order) else None
        page = _sample_page(
            o,
            plots.get(o.sample_id),
            flags.get(o.sample_id, []),
            [x for x in outliers if x["sample_id"] == o.sample_id],
            prev_id,
            next_id,
        )
        atomic_write_text(pages / f"{safe_name(o.sample_id)}.html", page)
    index = rep / "index.html"
    extra = _sections_html(rep, sections)
    page = _index_page(plate_result, outcomes, prov, errors_doc, flags, outliers, n_tested, extra)
    atomic_write_text(index, page)
    _log.info("report written: %s (%d sample pages)", index, len(outcomes))
    return index


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


def _fmt_cell(v: Any) -> str:
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            return v
        if v.strip().lstrip("-").isdigit():
            return v
        v = f
    if isinstance(v, float):
        return "" if v != v else f"{v:.3g}"
    return "" if v is None else str(v)


# ------------------------------------------------------------------------------------------ plots (workers)


def _plot_task_for(
    o: SampleOutcome, out: Path, pages: Path, prov: Mapping[str, Any]
) -> dict[str, Any] | None:
    gml = out / "gates" / f"{safe_name(o.sample_id)}.gating-ml.xml"
    return {
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
    from flowtools.io.fcs import read_fcs
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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sample = read_fcs(task["file"])
        strategy = read_gatingml(source)
        result = gate_sample(strategy, sample, sample_id=task["sample_id"])
        res["plots"] = _draw(task, sample, strategy, result, None)
        if not res["changed"] and task["sha256"] is not None:  # a later report reuses these
            _write_manifest(task, source, task["sha256"], res["plots"])
    except Exception as exc:  # noqa: BLE001 - one sample's plots must not stop the report; shown on its page
        res["error"] = f"{type(exc).__name__}: {exc}"
    return res


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


# ------------------------------------------------------------------------------------------ analysis


def _read_json(path: Path | None) -> dict[str, Any]:
    if path is None or not Path(path).is_file():
        return {}
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def _qc_flags(outcomes: Sequence[SampleOutcome]) -> dict[str, list[str]]:
    """Sample id -> QC flags (plain text)."""
    flags: dict[str, list[str]] = {}
    for o in outcomes:
        if not o.ok:
            continue
        qc = qc_populations(o.rows)  # the template's roles, else the population names
        for r in o.rows:
            if r["population"] in qc and _finite(r["pct_parent"]) and r["pct_parent"] < QC_MIN_PCT:
                flags.setdefault(o.sample_id, []).append(
                    f"{r['population']} kept {r['pct_parent']:.1f}% of its parent (below {QC_MIN_PCT:g}%)"
                )
    by_plate: dict[str, list[SampleOutcome]] = {}
    for o in outcomes:
        if o.ok:
            by_plate.setdefault(o.plate, []).append(o)
    for plate, members in by_plate.items():
        median = statistics.median(o.n_events for o in members)
        for o in members:
            if o.n_events < LOW_EVENTS_SHARE * median:
                flags.setdefault(o.sample_id, []).append(
                    f"low events: {o.n_events:,} (plate {plate} median {median:,.0f}; "
                    f"below {LOW_EVENTS_SHARE:.0%})"
                )
    return flags


def _outliers(outcomes: Sequence[SampleOutcome]) -> tuple[list[dict[str, Any]], int]:
    """Robust-z outliers on % of parent, per tube and population; and how many populations were tested."""
    values: dict[tuple[str, str], list[tuple[SampleOutcome, float]]] = {}
    for o in outcomes:
        if o.ok:
            for r in o.rows:
                if _finite(r["pct_parent"]):
                    values.setdefault((o.tube, r["population"]), []).append((o, float(r["pct_parent"])))
    found = []
    tested = 0
    for (tube, pop), vals in values.items():
        if len(vals) < OUTLIER_MIN_SAMPLES:
            continue
        tested += 1
        xs = [v for _, v in vals]
        med = statistics.median(xs)
        mad = statistics.median(abs(x - med) for x in xs)
        if mad == 0:
            continue
        for o, x in vals:
            z = (x - med) / (1.4826 * mad)
            if abs(z) > OUTLIER_Z:
                found.append(
                    {
                        "sample_id": o.sample_id,
                        "tube": tube,
                        "population": pop,
                        "plate": o.plate,
                        "well": o.well,
                        "value": x,
                        "median": med,
                        "z": z,
                    }
                )
    found.sort(key=lambda d: (-abs(d["z"]), d["population"], d["sample_id"]))
    return found, tested


def _well(well: str) -> tuple[int, int] | None:
    m = re.fullmatch(r"\s*([A-Ha-h])\s*0?(\d{1,2})\s*", well or "")
    if not m or not 1 <= int(m.group(2)) <= 12:
        return None
    return _ROWS.index(m.group(1).upper()), int(m.group(2))


def _key_populations(members: Sequence[SampleOutcome]) -> list[str]:
    order: dict[str, None] = {}
    qc: set[str] = set()
    for o in members:
        qc |= qc_populations(o.rows)
        for r in o.rows:
            order.setdefault(r["population"], None)
    chosen = [p for p in order if p not in qc][:KEY_POPULATIONS]
    return chosen or list(order)[:KEY_POPULATIONS]


# ------------------------------------------------------------------------------------------ HTML


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0 auto;
max-width:1180px;padding:16px 24px 48px;color:#1f2933;line-height:1.4;font-size:14px}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d9dee3;
padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
a{color:#0b5cad}nav{font-size:13px;margin-bottom:8px}nav a{margin-right:12px}
.muted{color:#616e7c}.small{font-size:12px}
table.data{border-collapse:collapse;margin:6px 0;font-size:13px}
table.data th,table.data td{border-bottom:1px solid #e4e7eb;padding:3px 10px;text-align:left;
vertical-align:top}
table.data th{background:#f5f7fa;font-weight:600}
table.data td.num{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0}
.card{border:1px solid #d9dee3;border-radius:6px;padding:8px 14px;min-width:96px;background:#fafbfc}
.card b{display:block;font-size:22px}.card.bad b{color:#b42318}.card.good b{color:#1a7f37}
.grids{display:flex;flex-wrap:wrap;gap:18px}
figure.grid{margin:0}figure.grid figcaption{font-weight:600;font-size:13px;margin-bottom:3px}
table.plate{border-collapse:collapse;font-size:10px;font-variant-numeric:tabular-nums}
table.plate th{font-weight:600;color:#616e7c;padding:1px 3px}
table.plate td{width:30px;height:20px;border:1px solid #d9dee3;text-align:center;padding:0}
table.plate td a{display:block;text-decoration:none;color:inherit;line-height:20px}
table.plate td.empty{background:#fff}table.plate td.other{background:#eef0f2;color:#9aa5b1}
table.plate td.fail{background:#fde2e1;color:#b42318;font-weight:700}
.legend{font-size:11px;color:#616e7c;margin-top:3px;display:flex;align-items:center;gap:6px}
.ramp{display:inline-block;width:80px;height:10px;border:1px solid #d9dee3;
background:linear-gradient(to right,#f7fbff,#08519c)}
.box{border-radius:6px;padding:8px 12px;margin:10px 0}
.box.error{background:#fde2e1;border:1px solid #f5b5b0}.box.warn{background:#fff4d6;border:1px solid #f0d58c}
.box.ok{background:#e6f4ea;border:1px solid #b7dfc2}
pre{white-space:pre-wrap;font-size:12px;margin:4px 0}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plots figure{margin:0;width:320px}
.plots img{display:block}.plots figcaption{font-size:12px;color:#616e7c}
nav.pager a{margin-right:0}
.status-ok{color:#1a7f37}.status-failed{color:#b42318;font-weight:600}
.path{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px}
.card.warn b{color:#8a5a00}
.badge{display:inline-block;border-radius:4px;padding:0 6px;font-size:11px;font-weight:700;
border:1px solid;white-space:nowrap}
.badge.flagged,.badge.fallback{background:#fff4d6;color:#8a5a00;border-color:#d9a400}
.badge.failed{background:#fde2e1;color:#b42318;border-color:#e5867d}
.plots .why{margin-top:3px;color:#1f2933}.plots .rule{margin-top:2px}
div.nogate{box-sizing:border-box;width:320px;height:320px;border:1px dashed #b42318;border-radius:6px;
background:#fdf3f2;padding:16px;display:flex;flex-direction:column;justify-content:center;gap:8px;
font-size:13px;overflow-wrap:anywhere}
table.plate td.popfail{background:#fff4d6;color:#8a5a00;font-weight:700}
"""


def _e(x: Any) -> str:
    return escape(str(x), quote=True)


def _href(name: str) -> str:
    return _e(quote(name))


def _page(title: str, body: Iterable[str]) -> str:
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(title)}</title>",
            f"<style>{_CSS}</style>",
            "</head>",
            "<body>",
            *body,
            "</body>",
            "</html>",
            "",
        ]
    )


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], *, num: Sequence[int] = ()) -> str:
    """An HTML table; cells are already-escaped HTML."""
    out = [
        '<table class="data">',
        "<thead><tr>" + "".join(f'<th scope="col">{h}</th>' for h in head) + "</tr></thead>",
        "<tbody>",
    ]
    for r in rows:
        out.append(
            "<tr>"
            + "".join(f'<td class="num">{c}</td>' if i in num else f"<td>{c}</td>" for i, c in enumerate(r))
            + "</tr>"
        )
    out.append("</tbody></table>")
    return "\n".join(out)


def _pct(x: Any) -> str:
    return f"{x:.1f}" if _finite(x) else "\u2013"


def _sample_link(sid: str, *, prefix: str = "samples/") -> str:
    return f'<a href="{_href(prefix + safe_name(sid) + ".html")}">{_e(sid)}</a>'


def _reason(error: str | None, file: str) -> tuple[str, str]:
    """(first line without the file prefix, the rest)."""
    text = (error or "unknown error").strip()
    for prefix in (f"{file}: ", f"{file}:"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    first, _, rest = text.partition("\n")
    return first, rest


def _colour(t: float) -> tuple[str, str]:
    """Background and text colour for a 0..1 position on the white-blue scale."""
    lo, hi = (0xF7, 0xFB, 0xFF), (0x08, 0x51, 0x9C)
    rgb = tuple(round(a + (b - a) * t) for a, b in zip(lo, hi, strict=True))
    return "#{:02x}{:02x}{:02x}".format(*rgb), ("#ffffff" if t > 0.55 else "#1f2933")


def _pop_anchor(path: str) -> str:
    """A unique HTML id for a population path (letters and digits kept, anything else as _hex)."""
    return "pop-" + "".join(ch if ch.isascii() and ch.isalnum() else f"_{ord(ch):x}" for ch in path)


def _badge(status: str) -> str:
    """A worded status badge (icon + word, so it never relies on colour); '' for ok."""
    if status == "failed":
        return '<span class="badge failed"><span aria-hidden="true">\u2715</span> failed</span>'
    if status == "flagged":
        return '<span class="badge flagged"><span aria-hidden="true">\u26a0</span> flagged</span>'
    if status == "fallback":
        return '<span class="badge fallback"><span aria-hidden="true">\u26a0</span> fallback</span>'
    return ""


def _gate_checks(outcomes: Sequence[SampleOutcome]) -> list[dict[str, Any]]:
    """Every flagged or failed population of the gated samples, in sample then template order."""
    out = []
    for o in outcomes:
        if not o.ok:
            continue
        for r in o.rows:
            st = r.get("status") or "ok"
            if st in ("flagged", "failed"):
                out.append({"outcome": o, "population": r["population"], "status": st,
                            "reason": str(r.get("reason") or "")})
    return out


def _gate_checks_html(checks: Sequence[dict[str, Any]]) -> list[str]:
    n_flagged = sum(c["status"] == "flagged" for c in checks)
    n_failed = sum(c["status"] == "failed" for c in checks)
    s_flagged = len({c["outcome"].sample_id for c in checks if c["status"] == "flagged"})
    s_failed = len({c["outcome"].sample_id for c in checks if c["status"] == "failed"})
    out = ['<h2 id="gate-checks">Gate checks</h2>']
    out.append(
        '<p class="muted small"><b>Flagged</b>: numbers kept, but look at the gate (a fallback kept '
        f"less than {FALLBACK_FLAG_PCT:g}% or more than {100 - FALLBACK_FLAG_PCT:g}% of its parent, or the "
        "population is outside its template's <code>expect</code>). <b>Failed</b>: no numbers (empty in "
        "the tables; its gate could not be computed, broke <code>expect</code> with "
        "<code>on_violation: fail</code>, or an ancestor failed); the rest of the sample is kept.</p>"
    )
    if not checks:
        out.append('<p class="box ok">No flagged or failed population.</p>')
        return out
    out.append(
        f'<p class="box {"error" if n_failed else "warn"}" id="gate-check-counts">'
        f"{_badge('flagged')} <b>{n_flagged:,}</b> flagged population{'s' * (n_flagged != 1)} "
        f"in {s_flagged:,} sample{'s' * (s_flagged != 1)} \u00b7 "
        f"{_badge('failed')} <b>{n_failed:,}</b> failed population{'s' * (n_failed != 1)} "
        f"in {s_failed:,} sample{'s' * (s_failed != 1)}</p>"
    )
    rows = []
    for c in checks:
        o = c["outcome"]
        href = _href("samples/" + safe_name(o.sample_id) + ".html") + "#" + _pop_anchor(c["population"])
        rows.append(
            [
                _sample_link(o.sample_id),
                _e(o.plate),
                _e(o.well),
                f'<a class="path" href="{href}">{_e(c["population"])}</a>',
                _badge(c["status"]),
                _e(c["reason"]),
            ]
        )
    out.append(_table(["sample", "plate", "well", "population", "status", "reason"], rows))
    return out


def _checks_cell(o: SampleOutcome) -> str:
    if not o.ok:
        return ""
    n_failed = sum(r.get("status") == "failed" for r in o.rows)
    n_flagged = sum(r.get("status") == "flagged" for r in o.rows)
    parts = []
    if n_failed:
        parts.append(f"{n_failed} failed")
    if n_flagged:
        parts.append(f"{n_flagged} flagged")
    return _e(", ".join(parts))


def _index_page(
    res: PlateResult,
    outcomes: Sequence[SampleOutcome],
    prov: Mapping[str, Any],
    errors_doc: Mapping[str, Any],
    flags: Mapping[str, list[str]],
    outliers: Sequence[dict[str, Any]],
    n_tested: int,
    extra: Sequence[str] = (),
) -> str:
    n_ok = sum(o.ok for o in outcomes)
    n_fail = len(outcomes) - n_ok
    skipped = list(errors_doc.get("skipped_no_template") or getattr(res, "skipped", []) or [])
    plates = sorted({o.plate for o in outcomes})
    body = ["<h1>flowtools plate report</h1>"]
    version = prov.get("version", "unknown")
    created = prov.get("created")
    body.append(
        f'<p class="muted">flowtools {_e(version)}'
        + (f" \u00b7 gated {_e(created)}" if created else "")
        + (f" \u00b7 seed {_e(prov['seed'])}" if "seed" in prov else "")
        + "</p>"
    )
    body.append(
        '<nav><a href="#gate-checks">Gate checks</a><a href="#plates">Plate overview</a>'
        '<a href="#qc">QC flags</a><a href="#outliers">Outliers</a>'
        '<a href="#failures">Failures</a><a href="#samples">All samples</a></nav>'
    )
    checks = _gate_checks(outcomes)
    n_flagged = sum(c["status"] == "flagged" for c in checks)
    n_pop_failed = sum(c["status"] == "failed" for c in checks)
    cards = [
        ("samples", len(outcomes), ""),
        ("gated", n_ok, "good"),
        ("failed", n_fail, "bad" if n_fail else ""),
        ("flagged populations", n_flagged, "warn" if n_flagged else ""),
        ("failed populations", n_pop_failed, "bad" if n_pop_failed else ""),
        ("QC flags", len(flags), "bad" if flags else ""),
        ("plates", len(plates), ""),
    ]
    if skipped:
        cards.append(("skipped (no template)", len(skipped), ""))
    body.append(
        '<div class="cards">'
        + "".join(f'<div class="card {c}"><b>{v:,}</b>{_e(k)}</div>' for k, v, c in cards)
        + "</div>"
    )
    templates = prov.get("templates") or {}
    if templates:
        body.append(
            _table(
                ["template", "tube", "file", "SHA-256"],
                (
                    [
                        _e(name),
                        _e(t.get("tube") or "any"),
                        _e(t.get("file", "")),
                        f'<span class="small muted">{_e(str(t.get("sha256", ""))[:12])}</span>',
                    ]
                    for name, t in sorted(templates.items())
                ),
            )
        )

    body.extend(_gate_checks_html(checks))

    body.append('<h2 id="plates">Plate overview</h2>')
    body.append(
        '<p class="muted small">% of parent in each well. Click a well for its sample page. '
        "Colours run from the lowest (light) to the highest (dark) value on the plate. "
        "\u2715 failed sample; ! failed population (no numbers); grey: a sample of another tube.</p>"
    )
    for plate in plates:
        on_plate = [o for o in outcomes if o.plate == plate]
        for tube in sorted({o.tube for o in on_plate}):
            members = [o for o in on_plate if o.tube == tube]
            body.append(
                f"<h3>Plate {_e(plate)} \u00b7 tube {_e(tube)} "
                f'<span class="muted small">({len(members)} samples, '
                f"{sum(not o.ok for o in members)} failed)</span></h3>"
            )
            pops = _key_populations([o for o in members if o.ok])
            if not pops:
                body.append('<p class="muted">No gated sample.</p>')
                continue
            body.append(
                '<div class="grids">' + "".join(_plate_grid(on_plate, tube, p) for p in pops) + "</div>"
            )

    body.extend(extra)
    body.append('<h2 id="qc">QC flags</h2>')
    body.append(
        '<p class="muted small">A QC clean-up gate (<code>role: qc</code> in its template; in a template '
        f"without roles, a name containing {_e(', '.join(QC_NAME_PARTS))} or named "
        f"{_e(', '.join(QC_NAMES))}) that kept less than {QC_MIN_PCT:g}% of its parent, or a well with fewer "
        f"than {LOW_EVENTS_SHARE:.0%} of its plate's median events.</p>"
    )
    by_id = {o.sample_id: o for o in outcomes}
    if flags:
        body.append(
            _table(
                ["sample", "plate", "well", "flag"],
                (
                    [
                        _sample_link(sid),
                        _e(by_id[sid].plate),
                        _e(by_id[sid].well),
                        "<br>".join(_e(f) for f in fl),
                    ]
                    for sid, fl in flags.items()
                ),
            )
        )
    else:
        body.append('<p class="box ok">No QC flag.</p>')

    body.append('<h2 id="outliers">Outliers</h2>')
    body.append(
        f'<p class="muted small">Robust z = |x \u2212 median| / (1.4826 \u00d7 MAD) above {OUTLIER_Z:g} '
        f"on % of parent, per tube and population; only populations with at least "
        f"{OUTLIER_MIN_SAMPLES} gated samples are tested ({n_tested} tested).</p>"
    )
    if outliers:
        body.append(
            _table(
                ["population", "sample", "plate", "well", "% of parent", "median", "robust z"],
                (
                    [
                        f'<span class="path">{_e(x["population"])}</span>',
                        _sample_link(x["sample_id"]),
                        _e(x["plate"]),
                        _e(x["well"]),
                        _pct(x["value"]),
                        _pct(x["median"]),
                        f"{x['z']:+.1f}",
                    ]
                    for x in outliers
                ),
                num=(4, 5, 6),
            )
        )
    elif n_tested:
        body.append('<p class="box ok">No outlier.</p>')
    else:
        body.append('<p class="muted">Too few gated samples per population to look for outliers.</p>')

    body.append('<h2 id="failures">Failures</h2>')
    errors = errors_doc.get("errors")
    if errors is None:
        errors = [{"sample_id": o.sample_id, "file": o.file, "error": o.error} for o in outcomes if not o.ok]
    if errors:
        rows = []
        for err in errors:
            file = str(err.get("file", ""))
            first, rest = _reason(err.get("error"), file)
            cell = _e(first) + (
                f"<details><summary>details</summary><pre>{_e(rest)}</pre></details>" if rest else ""
            )
            rows.append([_sample_link(str(err.get("sample_id", ""))), _e(Path(file).name), cell])
        body.append(_table(["sample", "file", "reason"], rows))
    else:
        body.append('<p class="box ok">Every sample was gated.</p>')

    body.append('<h2 id="samples">All samples</h2>')
    body.append(
        _table(
            ["sample", "woman", "tube", "plate", "well", "events", "status", "flags", "gate checks"],
            (
                [
                    _sample_link(o.sample_id),
                    _e(o.woman_id),
                    _e(o.tube),
                    _e(o.plate),
                    _e(o.well),
                    f"{o.n_events:,}" if o.ok else "\u2013",
                    '<span class="status-ok">gated</span>'
                    if o.ok
                    else '<span class="status-failed">failed</span>',
                    str(len(flags.get(o.sample_id, []))) if flags.get(o.sample_id) else "",
                    _checks_cell(o),
                ]
                for o in outcomes
            ),
            num=(5,),
        )
    )
    if skipped:
        body.append(
            f'<p class="muted small">Not gated (no template for their tube): {_e(", ".join(skipped))}</p>'
        )
    return _page("flowtools plate report", body)


def _plate_grid(on_plate: Sequence[SampleOutcome], tube: str, population: str) -> str:
    cells: dict[tuple[int, int], tuple[str, str, str, str]] = {}  # (row, col) -> class, style, text, title
    values = {}
    for o in on_plate:
        pos = _well(o.well)
        if pos is None:
            continue
        if o.tube != tube:
            cells[pos] = ("other", "", "", f"{o.sample_id} ({o.tube})")
        elif not o.ok:
            cells[pos] = ("fail", "", "\u2715", f"{o.sample_id}: failed")
        else:
            row = next((r for r in o.rows if r["population"] == population), None)
            v = row["pct_parent"] if row is not None else None
            if row is not None and row.get("status") == "failed":
                why = row.get("reason") or ""
                cells[pos] = ("popfail", "", "!", f"{o.sample_id}: {population} failed: {why}")
            elif _finite(v):
                values[pos] = (o, float(v))
            else:
                cells[pos] = ("", "", "\u2013", f"{o.sample_id}: no events in parent")
    lo = min((v for _, v in values.values()), default=0.0)
    hi = max((v for _, v in values.values()), default=0.0)
    for pos, (o, v) in values.items():
        t = 0.5 if hi == lo else (v - lo) / (hi - lo)
        bg, fg = _colour(t)
        cells[pos] = (
            "",
            f"background:{bg};color:{fg}",
            f"{v:.1f}" if v < 99.95 else "100",
            f"{o.sample_id} ({o.well}): {v:.1f}% of parent",
        )
    by_pos = {(_well(o.well) or (-1, -1)): o for o in on_plate}
    rows = ["<tr><th></th>" + "".join(f'<th scope="col">{c}</th>' for c in _COLS) + "</tr>"]
    for ri, letter in enumerate(_ROWS):
        tds = []
        for c in _COLS:
            cls, style, text, title = cells.get((ri, c), ("empty", "", "", ""))
            attrs = (f' class="{cls}"' if cls else "") + (f' style="{_e(style)}"' if style else "")
            attrs += f' title="{_e(title)}"' if title else ""
            o = by_pos.get((ri, c))
            inner = _e(text)
            if o is not None and cls != "other":
                inner = (
                    f'<a href="{_href("samples/" + safe_name(o.sample_id) + ".html")}">'
                    f'{inner or "&nbsp;"}</a>'
                )
            tds.append(f"<td{attrs}>{inner}</td>")
        rows.append(f'<tr><th scope="row">{letter}</th>' + "".join(tds) + "</tr>")
    name = population.rsplit("/", 1)[-1]
    legend = (
        f'<div class="legend">{_pct(lo)}% <span class="ramp"></span> {_pct(hi)}%</div>'
        if values
        else '<div class="legend">no values</div>'
    )
    return (
        f'<figure class="grid"><figcaption>{_e(name)} <span class="muted small">% of parent \u00b7 '
        f'{_e(population)}</span></figcaption><table class="plate">{"".join(rows)}</table>{legend}</figure>'
    )


def _sample_page(
    o: SampleOutcome,
    plots: Mapping[str, Any] | None,
    flags: Sequence[str],
    outliers: Sequence[dict[str, Any]],
    prev_id: str | None,
    next_id: str | None,
) -> str:
    nav = ['<a href="../index.html">\u2190 plate report</a>']
    if prev_id is not None:
        nav.append(f"previous: {_sample_link(prev_id, prefix='')}")
    if next_id is not None:
        nav.append(f"next: {_sample_link(next_id, prefix='')}")
    body = ['<nav class="pager">' + " \u00b7 ".join(nav) + "</nav>", f"<h1>Sample {_e(o.sample_id)}</h1>"]
    status = '<span class="status-ok">gated</span>' if o.ok else '<span class="status-failed">failed</span>'
    ids = [
        ("sample", _e(o.sample_id)),
        ("woman", _e(o.woman_id)),
        ("tube", _e(o.tube)),
        ("plate", _e(o.plate)),
        ("well", _e(o.well)),
        ("FCS file", _e(Path(o.file).name)),
        ("status", status),
    ]
    if o.ok:
        ids.insert(6, ("events", f"{o.n_events:,}"))
    body.append(
        '<table class="data">'
        + "".join(f'<tr><th scope="row">{k}</th><td>{v}</td></tr>' for k, v in ids)
        + "</table>"
    )
    if not o.ok:
        first, rest = _reason(o.error, o.file)
        body.append(
            f'<div class="box error"><b>Gating failed:</b> {_e(first)}'
            + (f"<pre>{_e(rest)}</pre>" if rest else "")
            + "</div>"
        )
        return _page(f"{o.sample_id} \u2014 flowtools report", body)
    for f in flags:
        body.append(f'<div class="box warn"><b>QC:</b> {_e(f)}</div>')
    for x in outliers:
        body.append(
            f'<div class="box warn"><b>Outlier:</b> {_e(x["population"])} {_pct(x["value"])}% of parent '
            f"(median {_pct(x['median'])}%, robust z {x['z']:+.1f})</div>"
        )
    for r in o.rows:
        st = r.get("status") or "ok"
        if st in ("flagged", "failed"):
            body.append(
                f'<div class="box {"error" if st == "failed" else "warn"}">{_badge(st)} '
                f'<a class="path" href="#{_pop_anchor(r["population"])}">{_e(r["population"])}</a>: '
                f"{_e(r.get('reason') or '')}</div>"
            )

    body.append("<h2>Populations</h2>")
    body.append(
        _table(
            ["population", "count", "% of parent", "% of total", "status"],
            (
                [
                    f'<span class="path" id="{_pop_anchor(r["population"])}">{_e(r["population"])}</span>',
                    f"{int(r['count']):,}" if _finite(r["count"]) else "\u2013",
                    _pct(r["pct_parent"]),
                    _pct(r["pct_total"]),
                    _status_cell(r),
                ]
                for r in o.rows
            ),
            num=(1, 2, 3),
        )
    )
    decided = _decisions_html(o.decisions)
    if decided:
        body.append('<h2 id="decisions">Gate decisions</h2>')
        body.append(
            '<p class="muted small">How each data-driven gate was set (also in <code>decisions.csv</code>): '
            "the rule that fired, the cut, the density peaks found (position, height relative to the "
            "highest), and any fallback.</p>"
        )
        body.append(decided)

    body.append("<h2>Gates</h2>")
    if plots is None:
        body.append('<div class="box warn">Gate plots were not drawn.</div>')
    else:
        if plots.get("changed"):
            body.append(
                '<div class="box warn">The FCS file changed since it was gated: the plots show the file '
                "as it is now.</div>"
            )
        if plots.get("error"):
            body.append(f'<div class="box warn"><b>Gate plots unavailable:</b> {_e(plots["error"])}</div>')
        figs = []
        folder = safe_name(o.sample_id)
        rows = {r["population"]: r for r in o.rows}
        drawn: set[str] = set()
        for plot in plots.get("plots", []):
            drawn.update(plot["populations"])
            figs.append(_figure(folder, plot, rows, o.decisions))
        for r in o.rows:  # failed populations whose gate could not be computed: said, not drawn
            if r.get("status") == "failed" and not r.get("gate_id") and r["population"] not in drawn:
                figs.append(_no_gate(r))
        if figs:
            body.append(
                "<p class=\"muted small\">Parent population's events on the gate's axes (compensated and "
                "transformed as the gate sees them; colour = log density); the gate in red. For a "
                "data-driven gate: \u25bc / \u25b2 \u25b6 the density peaks found, dotted line the cut it "
                "chose, grey dash-dot lines the range searched.</p>"
            )
            body.append('<div class="plots">' + "".join(figs) + "</div>")
    return _page(f"{o.sample_id} \u2014 flowtools report", body)


def _status_cell(r: Mapping[str, Any]) -> str:
    st = r.get("status") or "ok"
    if st == "ok":
        return '<span class="muted">ok</span>'
    return f"{_badge(st)} {_e(r.get('reason') or '')}"


def _num(v: Any) -> str:
    """A gate coordinate: 4 significant digits, whole numbers on scatter-like scales (>= 1000)."""
    if not _finite(v):
        return "\u2013"
    return f"{float(v):.0f}" if abs(v) >= 1000 else f"{float(v):.4g}"


def _peak_text(p: Sequence[Any]) -> str:
    """``[position, height, prominence]`` (relative to the top) as ``0.7 (100%)``."""
    height = f" ({100.0 * float(p[1]):.0f}%)" if _finite(p[1]) else ""
    return f"{_num(p[0])}{height}"


def _decision_text(d: Mapping[str, Any]) -> tuple[str, str, str]:
    """(rule, cut, peaks) of a decision record, plain text; per axis for a quadrant gate."""
    det = d.get("details") if isinstance(d.get("details"), Mapping) else {}
    prefixes = ("x_", "y_") if any(str(k).startswith("x_") for k in det) else ("",)
    rules, cuts, peaks = [], [], []
    for pre in prefixes:
        axis = f"{pre[0]}: " if pre else ""
        if det.get(f"{pre}rule"):
            rules.append(f"{axis}{det[f'{pre}rule']}")
        if _finite(det.get(f"{pre}cut")):
            cuts.append(f"{axis}{_num(det[f'{pre}cut'])}")
        found = det.get(f"{pre}peaks")
        if isinstance(found, list):
            pk = [_peak_text(p) for p in found if isinstance(p, list | tuple) and len(p) >= 2]
            peaks.append(f"{axis}{', '.join(pk) if pk else 'none'}")
        elif _finite(det.get(f"{pre}peak")):
            peaks.append(f"{axis}main {_num(det[f'{pre}peak'])}")
    return "; ".join(rules), "; ".join(cuts), "; ".join(peaks)


def _decisions_html(decisions: Mapping[str, Any]) -> str:
    rows = []
    for path, d in decisions.items():
        if not isinstance(d, Mapping):
            continue
        rule, cut, peaks = _decision_text(d)
        fallback = d.get("fallback")
        rule_cell = _e(rule)
        if fallback:
            rule_cell = f"{_badge('fallback')} {_e(fallback)}"
            if rule and rule not in str(fallback):
                rule_cell += f"<br>{_e(rule)}"
        ein, ekept = d.get("events_in"), d.get("events_kept")
        events = f"{ekept:,} of {ein:,}" if _finite(ein) and _finite(ekept) else (
            f"\u2013 of {ein:,}" if _finite(ein) else "\u2013")
        st = str(d.get("status") or "ok")
        reasons = "; ".join(str(x) for x in d.get("reasons") or ())
        rows.append(
            [
                f'<a class="path" href="#{_pop_anchor(path)}">{_e(path)}</a>',
                _e(d.get("method", "")),
                rule_cell or "\u2013",
                _e(cut) or "\u2013",
                _e(peaks) or "\u2013",
                events,
                (f"{_badge(st)} {_e(reasons)}" if st != "ok" else '<span class="muted">ok</span>'),
            ]
        )
    if not rows:
        return ""
    return _table(["population", "method", "rule", "cut", "peaks (height)", "events kept", "status"], rows)


def _figure(
    folder: str, plot: Mapping[str, Any], rows: Mapping[str, Mapping[str, Any]], decisions: Mapping[str, Any]
) -> str:
    """One gate plot with its caption, the badges of the populations it draws and its decision's rule."""
    caption = str(plot["caption"])
    d = decisions.get(plot["decision"]) if plot.get("decision") else None
    d = d if isinstance(d, Mapping) else None
    fallback = str(d.get("fallback") or "") if d is not None else ""
    told = False  # the fallback is said once: with the reason quoting it, else on its own line
    badges = []
    for path in plot["populations"]:
        r = rows.get(path)
        st = (r.get("status") or "ok") if r is not None else "ok"
        if st in ("flagged", "failed"):
            reason = str(r.get("reason") or "")
            who = f"{_e(path.rsplit('/', 1)[-1])}: " if len(plot["populations"]) > 1 else ""
            also = fallback and fallback in reason
            told = told or bool(also)
            mark = f"{_badge(st)} {_badge('fallback') + ' ' if also else ''}"
            badges.append(f'<div class="why">{mark}{who}{_e(reason)}</div>')
    extra = ""
    if d is not None:
        rule, cut, _ = _decision_text(d)
        if fallback and not told:
            badges.append(f'<div class="why">{_badge("fallback")} {_e(fallback)}</div>')
        elif rule and not fallback:
            extra = f'<div class="rule">{_e(rule)}</div>'
        if cut:
            extra += f'<div class="rule">cut {_e(cut)}</div>'
    anchor = plot["populations"][0] if plot["populations"] else None
    fig_id = f' id="{_pop_anchor(anchor)}-plot"' if anchor is not None else ""
    alt = "gate plot: " + caption + "".join(
        f"; {p} {rows[p].get('status')}" for p in plot["populations"]
        if p in rows and rows[p].get("status") in ("flagged", "failed")) + ("; fallback" if fallback else "")
    return (
        f'<figure{fig_id}><img src="{_href(folder + "/" + plot["name"])}" width="320" height="320" '
        f'alt="{_e(alt)}"><figcaption>{_e(caption)}{"".join(badges)}{extra}</figcaption></figure>'
    )


def _no_gate(r: Mapping[str, Any]) -> str:
    """The panel standing in for the plot of a failed population that has no gate."""
    why = str(r.get("reason") or "unknown reason")
    return (
        f'<figure id="{_pop_anchor(r["population"])}-plot" class="nogate">'
        f'<div class="nogate" role="img" aria-label="{_e("no gate: " + why)}">'
        f"{_badge('failed')}<p><b>no gate:</b> {_e(why)}</p></div>"
        f"<figcaption>{_e(r['population'])}</figcaption></figure>"
    )
