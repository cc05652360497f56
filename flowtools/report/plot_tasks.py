"""The gate plots of a plate report: drawn in the gating worker or redrawn in worker processes.

Part of :func:`flowtools.report.html.write_report` (whose module re-exports these names): one
task per gated sample, reused when a ``plots.json`` manifest from :func:`draw_after_gating`
matches the exported gates and the FCS file, else redrawn from the FCS file (normalised for its
batch when the run was); pages and PNGs a run no longer has are removed.
"""

from __future__ import annotations

import functools
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flowtools.pipeline.plate import SampleOutcome
from flowtools.provenance import atomic_write_text, safe_name
from flowtools.report.qc import _finite

__all__ = ["draw_after_gating"]


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
    file (hash), the labels and statuses they were drawn with;
    :func:`~flowtools.report.html.write_report` redraws a sample whose manifest does not match.
    Drawing problems are left to the report, which redraws and shows the reason on the sample's
    page.
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
