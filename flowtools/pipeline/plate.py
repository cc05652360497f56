"""Batch gating of a plate (or a study): one template per tube, every sample isolated, resumable.

Work unit: one sample (one FCS file) per task; a worker holds one file at a
time, so memory stays bounded whatever the plate size. Populations with
``group_by`` are computed on pooled events first: each member contributes a
seeded subsample of its parent events (:func:`~flowtools.gating.templates.pool_values`),
the pooled gate is computed once per group, then pinned for every member.

Every finished sample is cached under ``OUT/.cache`` by a key made of the FCS
file's SHA-256, the template's SHA-256, the pinned geometries, the seed and the
flowtools version: a re-run on unchanged inputs recomputes nothing, and a run
killed mid-way resumes where it stopped. Final tables are written only at the
end, atomically, so no partial table ever exists.

``normalize=MODEL.json`` (a model of :func:`flowtools.analysis.normalize.fit_sheet`): each worker
normalises its sample for the sample's batch (the sheet's ``batch``, by default its plate) with
:func:`~flowtools.analysis.normalize.normalize_sample`, the function ``flowtools normalize apply``
writes its files with, and gates the normalised sample. The model's hash is part of the cache
key and of the provenance; ``decisions.csv`` says, per sample, which model normalised it.

A sample's rows are the population table's (:mod:`flowtools.analysis.populations`:
identity, counts, MFIs); ``populations.csv`` and ``per_woman.csv`` (with their Parquet twins)
are written by :func:`flowtools.io.tables.write_table`, each documented column by column in
``populations.columns.md`` and ``per_woman.columns.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flowtools._version import __version__
from flowtools.errors import FlowtoolsError, GatingError
from flowtools.gating.templates import Template, compute_pooled, load_template
from flowtools.io.fcs import read_fcs
from flowtools.io.sample_sheet import STUDY_TUBES, SampleSheetRow, read_sample_sheet
from flowtools.pipeline.executor import Executor, import_table_writers
from flowtools.pipeline.outcome import PlateResult, SampleOutcome, outcome_base
from flowtools.pipeline.outdir import (
    OutputLock,
    decision_table,
    remove_stale_temp_files,
    write_gates,
    write_outputs,
)
from flowtools.pipeline.tasks import gate_task, geometry_to_json, pool_task
from flowtools.provenance import atomic_write_text, file_sha256, safe_name

__all__ = ["PlateResult", "SampleOutcome", "decision_table", "run_plate"]

ProgressCallback = Callable[[int, int, "SampleOutcome"], None]


def _row_dict(r: SampleSheetRow) -> dict[str, Any]:
    return {"sample_id": r.sample_id, "woman_id": r.woman_id, "tube": r.tube, "plate": r.plate,
            "well": r.well,
            "file": str(r.file), "batch": r.batch}


def _group_value(row: dict[str, Any], column: str, sheet: Any) -> str:
    """The value of a sample-sheet column (standard or extra) for a row; "all" when absent."""
    if column in row:
        return str(row[column])
    return str(sheet.by_sample_id(row["sample_id"]).extra.get(column, "all"))


def _pins_for(
    t: Template, pinned: dict[str, dict[str, Any]], row: dict[str, Any], sheet: Any
) -> dict[str, Any]:
    """Pooled geometries that apply to one sample: its own group's, keyed by population path."""
    pins = {}
    for spec in t.populations:
        if spec.group_by is None:
            continue
        key = f"{spec.path}@{_group_value(row, spec.group_by, sheet)}"
        if key in pinned:
            pins[spec.path] = pinned[key]
    return pins


def _with_row(o: SampleOutcome, row: dict[str, Any]) -> SampleOutcome:
    o.woman_id, o.tube, o.plate, o.well = row["woman_id"], row["tube"], row["plate"], row["well"]
    o.file = row["file"]
    return o


#: Version of the rows a gated sample's outcome holds (the population table's columns): a
#: cached outcome of another version is recomputed. 2: gate_id, parent, parent_count, role.
_ROWS_FORMAT = "4"


def _cache_key(file_hash: str, template: Template, pinned: dict[str, Any], seed: int,
               model_sha: str = "") -> str:
    h = hashlib.sha256()
    # The normalisation model's hash only where there is one: the keys of plain runs stay as they were.
    extra = (f"normalize:{model_sha}",) if model_sha else ()
    for part in (file_hash, template.sha256, json.dumps(pinned, sort_keys=True), str(seed), __version__,
                 _ROWS_FORMAT, *extra):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def run_plate(
    samples_csv: str | os.PathLike[str],
    templates: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    jobs: int | None = None,
    scheduler: str | None = None,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    after_gate: Callable[..., None] | None = None,
    normalize: str | os.PathLike[str] | None = None,
) -> PlateResult:
    """Gate every sample of a sample sheet with the template of its tube and write the tables.

    Parameters
    ----------
    samples_csv : path
        The sample sheet.
    templates : sequence of path
        Templates; each names the tube it applies to.
    out_dir : path
    jobs : int, optional
        Local worker processes (default: all cores; 1 runs in this process).
    scheduler : str, optional
        Address of a dask.distributed scheduler (``tcp://host:port``); the same
        work runs there instead of on local processes.
    seed : int, default 0
    progress : callable(done, total, outcome), optional
    after_gate : callable(resolved, sample, outcome, out_dir, fcs_sha256), optional
        Called in the worker right after a sample is gated, with the resolved sample (its
        masks and values still in memory) and the FCS sample: a module-level function
        (it travels to local worker processes by name). The command line passes the
        report's :func:`~flowtools.report.html.draw_after_gating`, so the report draws
        nothing again. Not called for cached samples, nor on a dask scheduler (workers
        there may not share this output folder).
    normalize : path, optional
        A normalisation model (``flowtools normalize fit``): every sample is normalised for
        its batch (the sheet's ``batch``, default its plate) before it is gated, exactly as
        ``flowtools normalize apply`` would write it. A sample whose batch is not in the
        model, whose tube's template is not the model's, or whose file lacks a marker of the
        model fails (batch, file and marker named); the others are gated.

    Returns
    -------
    PlateResult

    Raises
    ------
    SampleSheetError, TemplateError
        Before any file is processed, when the sheet or a template is invalid.
    NormalizationError
        Before any file is processed, when the model cannot be read, or no sample of the
        sheet can be normalised with it (no template or no batch of the model's).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with OutputLock(out):
        remove_stale_temp_files(out)  # safe: the lock keeps other runs out of this folder
        return _run_plate_locked(samples_csv, templates, out, jobs=jobs, scheduler=scheduler, seed=seed,
                                 progress=progress, after_gate=after_gate, normalize=normalize)


def _run_plate_locked(
    samples_csv: str | os.PathLike[str],
    templates: Sequence[str | os.PathLike[str]],
    out: Path,
    *,
    jobs: int | None,
    scheduler: str | None,
    seed: int,
    progress: ProgressCallback | None,
    after_gate: Callable[..., None] | None,
    normalize: str | os.PathLike[str] | None = None,
) -> PlateResult:
    tmpl = [load_template(t) for t in templates]
    by_tube: dict[str | None, Template] = {}
    for t, p in zip(tmpl, templates, strict=True):
        if t.tube in by_tube:
            msg = f"templates {by_tube[t.tube].source} and {p} both apply to tube {t.tube!r}"
            raise GatingError(msg)
        by_tube[t.tube] = t
    # Tubes are checked against the study's tubes plus the templates' (typos are caught); samples of a
    # tube that no template covers are skipped and listed, not failed.
    tubes = sorted({*STUDY_TUBES, *(t for t in by_tube if t is not None)})
    sheet = read_sample_sheet(samples_csv, tubes=tubes)
    cache_dir = out / ".cache"
    cache_dir.mkdir(exist_ok=True)

    all_rows = [_row_dict(r) for r in sheet]
    rows = [r for r in all_rows if None in by_tube or r["tube"] in by_tube]
    skipped = [r["sample_id"] for r in all_rows if r not in rows]
    outcomes: dict[str, SampleOutcome] = {}
    norm = _normalize_info(normalize, rows, by_tube, sheet.path) if normalize is not None else None
    todo: list[dict[str, Any]] = []
    total = len(rows)
    done = 0

    def report(o: SampleOutcome) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, o)

    with Executor(jobs, scheduler) as ex:
        if norm is not None:  # samples that cannot be normalised fail now, before any work
            for r in rows:
                err = _normalize_refusal(norm, r, by_tube)
                if err is not None:
                    o = outcome_base(r)
                    o.error = err
                    outcomes[r["sample_id"]] = o
                    report(o)
        if len(rows) > sum(1 for _ in cache_dir.glob("*.json")):
            ex.warm_up()  # some samples are not cached yet: workers load while the inputs are hashed
        # Hash inputs once (also the provenance record).
        hashes: dict[str, str] = {}
        for r in rows:
            try:
                hashes[r["sample_id"]] = file_sha256(r["file"])
            except OSError as exc:
                o = outcome_base(r)
                o.error = f"{r['file']}: {exc.strerror or exc}"
                outcomes[r["sample_id"]] = o
                report(o)

        pinned_by_tube: dict[str | None, dict[str, dict[str, Any]]] = {}
        for tube, t in by_tube.items():
            members = [r for r in rows if (tube is None or r["tube"] == tube) and r["sample_id"] in hashes]
            pinned: dict[str, dict[str, Any]] = {}  # "<path>@<group value>" -> geometry
            for spec in t.populations:
                if spec.group_by is None:
                    continue
                groups: dict[str, list[dict[str, Any]]] = {}
                for r in members:
                    groups.setdefault(_group_value(r, spec.group_by, sheet), []).append(r)
                for gval, grp in groups.items():
                    live = [r for r in grp if r["sample_id"] not in outcomes]
                    tasks = [{"row": r, "template": t.source, "template_sha": t.sha256,
                              "pinned": _pins_for(t, pinned, r, sheet), "population": spec.path,
                              "seed": seed, "position": k, "normalize": norm} for k, r in enumerate(live)]
                    got = {sid: (values, err) for sid, values, err in ex.map(pool_task, tasks)}
                    # Concatenate in sheet order, not completion order: the pooled gate is the same on
                    # every executor.
                    ok_rows = [r for r in live if got.get(r["sample_id"], (None, None))[0] is not None]
                    if not ok_rows:
                        continue  # every member fails on its own; its gating task reports why
                    try:
                        ref = read_fcs(ok_rows[0]["file"], lazy=True)
                        pooled = np.concatenate([got[r["sample_id"]][0] for r in ok_rows])
                        g = compute_pooled(t, spec.path, pooled, ref, seed=seed)
                        pinned[f"{spec.path}@{gval}"] = geometry_to_json(g)
                    except (FlowtoolsError, OSError) as exc:
                        for r in live:
                            o = outcome_base(r)
                            o.error = (f"{r['file']}: pooled gate {spec.path!r} for {spec.group_by} "
                                       f"{gval}: {exc}")
                            outcomes.setdefault(r["sample_id"], o)
                            report(o)
            pinned_by_tube[tube] = pinned

        for r in rows:
            if r["sample_id"] in outcomes:
                continue
            t = by_tube.get(r["tube"]) or by_tube.get(None)
            assert t is not None  # noqa: S101 - the sheet was validated against the templates' tubes
            pins = _pins_for(t, pinned_by_tube.get(t.tube, {}), r, sheet)
            key = _cache_key(hashes[r["sample_id"]], t, pins, seed, norm["sha256"] if norm else "")
            cached = cache_dir / f"{safe_name(r['sample_id'])}.{key}.json"
            if cached.is_file():
                # The cache holds what was computed; the IDs come from today's sample sheet.
                o = _with_row(SampleOutcome.from_json(cached.read_text(encoding="utf-8")), r)
                o.cached = True
                outcomes[r["sample_id"]] = o
                report(o)
                continue
            todo.append({"row": r, "template": t.source, "template_sha": t.sha256, "pinned": pins,
                         "seed": seed, "normalize": norm,
                         "cache": str(cached),
                         "after_gate": None if ex._client is not None else after_gate, "out_dir": str(out),
                         "sha256": hashes[r["sample_id"]]})

        if todo and ex.remote:
            # This process only waits while the workers gate: load the table writers meanwhile
            # (pyarrow.parquet takes ~0.05 s to import) instead of after the last sample.
            threading.Thread(target=import_table_writers, name="flowtools-preload", daemon=True).start()
        gates_written: set[str] = set()
        for o in ex.map(gate_task, todo):
            outcomes[o.sample_id] = o
            if o.ok:
                task = next(tk for tk in todo if tk["row"]["sample_id"] == o.sample_id)
                atomic_write_text(task["cache"], o.to_json())
                # Each sample's own file, now, while the workers gate (not after the last sample).
                gates_written.add(write_gates(out, o))
            report(o)

    ordered = [outcomes[r["sample_id"]] for r in rows]
    result = write_outputs(out, ordered, sheet_path=Path(samples_csv), templates=tmpl, hashes=hashes,
                            seed=seed, jobs=jobs, scheduler=scheduler, skipped=skipped,
                            gates_written=gates_written, extras={r.sample_id: dict(r.extra) for r in sheet},
                            normalize=norm)
    return result


def _normalize_info(normalize: str | os.PathLike[str], rows: list[dict[str, Any]],
                    by_tube: Mapping[str | None, Template], sheet_path: Any) -> dict[str, Any]:
    """The model a run normalises with (plain data for the workers); refuses a model no sample can use."""
    from flowtools.analysis.normalize import CytoNorm, model_template
    from flowtools.errors import NormalizationError

    path = str(Path(normalize).resolve())
    model = CytoNorm.load(path)  # NormalizationError naming the file when missing or not a model
    info = (getattr(model, "provenance_", {}) or {}).get("template_info") or {}
    norm = {"path": path, "sha256": file_sha256(path), "mode": model.mode, "goal": model.goal,
            "batches": list(model.batches_), "markers": list(model.markers_),
            "template_sha256": info.get("sha256") or "", "template": info.get("name") or "",
            "template_tube": info.get("tube")}
    ok_templates = [t for t in by_tube.values() if not norm["template_sha256"]
                    or t.sha256 == norm["template_sha256"]]
    if not ok_templates:
        msg = (f"normalisation model {path} was fitted with template {norm['template']!r} "
               f"(sha256 {norm['template_sha256'][:12]}...), which is none of this run's templates "
               f"{[str(t.source) for t in by_tube.values()]}: the transformed scale would differ")
        raise NormalizationError(msg)
    if rows and all(_normalize_refusal(norm, r, by_tube) is not None for r in rows):
        batches = sorted({r["batch"] for r in rows})
        msg = (f"{sheet_path}: no sample can be normalised with model {path}: its batches are {batches}, "
               f"the model's {norm['batches']}")
        raise NormalizationError(msg)
    for t in ok_templates:
        model_template(model, t)  # refuses a template that estimates its transforms per file
    return norm


def _normalize_refusal(norm: dict[str, Any], row: dict[str, Any],
                       by_tube: Mapping[str | None, Template]) -> str | None:
    """Why a sample cannot be normalised with the run's model (None: it can)."""
    t = by_tube.get(row["tube"]) or by_tube.get(None)
    where = f"batch {row['batch']!r}, file {row['file']}"
    if t is not None and norm["template_sha256"] and t.sha256 != norm["template_sha256"]:
        return (f"{where}: tube {row['tube']!r} is gated with template {t.name!r}, not {norm['template']!r} "
                f"that the normalisation model {Path(norm['path']).name} was fitted with")
    if row["batch"] not in norm["batches"]:
        return (f"{where}: batch {row['batch']!r} is not in the normalisation model "
                f"{Path(norm['path']).name} (fitted on batches {norm['batches']}); fit a model with an "
                "anchor of this batch")
    return None
