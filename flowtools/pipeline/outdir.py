"""A plate run's output folder: its lock, and the tables, gates and records written at the end.

Everything is written atomically (temp file + rename); a run that finds nothing gated removes
the tables an earlier run left, so no stale table sits beside ``errors.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from flowtools.analysis import populations
from flowtools.errors import GatingError
from flowtools.gating.templates import Template
from flowtools.io.tables import Table, write_table
from flowtools.pipeline.outcome import PlateResult, SampleOutcome
from flowtools.provenance import atomic_write_text, provenance_record, safe_name

__all__ = ["OutputLock", "decision_table", "per_woman", "remove_stale_temp_files", "write_gates",
           "write_outputs"]


class OutputLock:
    """One batch run per output folder: ``OUT/.flowtools.lock`` holds the PID of the run writing there."""

    def __init__(self, out: Path) -> None:
        self.path = out / ".flowtools.lock"

    def __enter__(self) -> OutputLock:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or "0")
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and _alive(pid):
                    msg = f"{self.path.parent}: another flowtools run (pid {pid}) is writing to this folder"
                    raise GatingError(msg) from None
                self.path.unlink(missing_ok=True)  # left by a killed run
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(str(os.getpid()))
            return self
        msg = f"{self.path}: could not take the output folder's lock"
        raise GatingError(msg)

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(out: Path) -> None:
    """Delete temp files a killed run left behind (atomic writes name them ``.<name>.<random>.tmp``)."""
    for p in out.rglob(".*.tmp"):
        if p.is_file():
            p.unlink(missing_ok=True)


def write_outputs(
    out: Path,
    outcomes: list[SampleOutcome],
    *,
    sheet_path: Path,
    templates: Sequence[Template],
    hashes: dict[str, str],
    seed: int,
    jobs: int | None,
    scheduler: str | None,
    skipped: list[str],
    gates_written: Iterable[str] = (),
    extras: Mapping[str, Mapping[str, str]] | None = None,
    normalize: Mapping[str, Any] | None = None,
) -> PlateResult:
    """Write a finished run's tables, gates, decisions, errors.json and provenance.json (atomically)."""
    prov = provenance_record(
        inputs={"samples.csv": sheet_path},
        parameters={"jobs": jobs, "scheduler": scheduler is not None,
                    "templates": [t.name for t in templates]},
        seed=seed,
        command="flowtools gate",
    )
    prov["fcs_sha256"] = {sid: h for sid, h in sorted(hashes.items())}
    prov["templates"] = {t.name: {"tube": t.tube, "sha256": t.sha256, "file": Path(t.source).name,
                                  "path": str(Path(t.source).resolve())} for t in templates}
    prov["input_paths"] = {"samples.csv": str(Path(sheet_path).resolve())}
    if normalize is not None:
        prov["normalize"] = {"model": Path(normalize["path"]).name, "path": normalize["path"],
                             "sha256": normalize["sha256"], "mode": normalize["mode"],
                             "goal": normalize["goal"], "batches": normalize["batches"],
                             "markers": normalize["markers"], "template": normalize["template"],
                             "template_sha256": normalize["template_sha256"]}

    records = []
    for o in outcomes:
        if not o.ok:
            continue
        for r in o.rows:
            records.append({"sample_id": o.sample_id, "woman_id": o.woman_id, "tube": o.tube,
                            "plate": o.plate, "well": o.well, **r})
    empty = not records
    pop_csv = per_csv = None
    absolute = _absolute_counts(records, outcomes, templates, extras or {})
    if not empty:
        pops = populations.population_table(records)
        pop_csv = write_table(pops, out / "populations", prov)[0]
        atomic_write_text(out / "populations.columns.md", populations.columns_doc(pops.columns))
        wide = per_woman(records, absolute=absolute)
        per_csv = write_table(wide, out / "per_woman", prov)[0]
        atomic_write_text(out / "per_woman.columns.md", __per_woman_doc(list(wide.columns)))

    if empty:  # nothing gated this time: no table from an earlier run may stay beside errors.json
        for stem in ("populations", "per_woman"):
            for suffix in (".csv", ".parquet"):
                (out / stem).with_suffix(suffix).unlink(missing_ok=True)
            (out / f"{stem}.columns.md").unlink(missing_ok=True)
    gates_dir = out / "gates"
    done = set(gates_written)
    current = set()
    for o in outcomes:
        if o.ok and o.gatingml:
            name = f"{safe_name(o.sample_id)}.gating-ml.xml"
            current.add(name)
            if name not in done:  # samples from the cache (the others were written as they came)
                write_gates(out, o)
    if gates_dir.is_dir():
        for p in gates_dir.glob("*.gating-ml.xml"):
            if p.name not in current:  # a sample that failed or left the sheet since the last run
                p.unlink()
    errors = [{"sample_id": o.sample_id, "file": o.file, "error": o.error} for o in outcomes if not o.ok]
    failed_pops = [{"sample_id": o.sample_id, "file": o.file, **f} for o in outcomes if o.ok
                   for f in o.failed_populations]
    flagged = [{"sample_id": o.sample_id, "file": o.file, **f} for o in outcomes if o.ok
               for f in o.flagged_populations]
    decisions = decision_table(outcomes)
    if decisions.data["sample_id"]:
        write_table(decisions, out / "decisions", prov)
        atomic_write_text(out / "decisions.columns.md", _DECISIONS_DOC)
    else:
        for suffix in (".csv", ".parquet"):
            (out / "decisions").with_suffix(suffix).unlink(missing_ok=True)
    errors_json = out / "errors.json"
    atomic_write_text(errors_json, json.dumps(
        {"provenance": prov, "errors": errors, "failed_populations": failed_pops,
         "flagged_populations": flagged, "skipped_no_template": skipped}, indent=2, allow_nan=False) + "\n")
    prov_json = out / "provenance.json"
    atomic_write_text(prov_json, json.dumps(prov, indent=2) + "\n")
    return PlateResult(out, outcomes, pop_csv, per_csv, errors_json, prov_json, skipped=skipped)


_NAN = float("nan")

_DECISION_COLUMNS = ("sample_id", "woman_id", "tube", "plate", "well", "population", "method", "status",
                     "fallback", "rule", "cut", "events_in", "events_kept", "pct_kept", "reasons", "details",
                     "params")
_DECISIONS_DOC = """# decisions table

One row per gated sample and data-driven population (a template entry with a `method`): how its
gate was decided. Every automatic decision of a run is here, so that it can be checked.

| column | meaning |
|---|---|
| sample_id, woman_id, tube, plate, well | from the sample sheet |
| population | the template entry's path (a quad entry: its parent + the entry name); empty on a sample row |
| method | the gating method; on a sample row `sample:time` (which parameter is time, and why), |
| | `sample:processing` (the file looks already compensated or transformed: done again) or |
| | `sample:normalize` (a `--normalize` run: the model, its hash and the batch it normalised for) |
| status | `ok`, `flagged` (numbers kept; see `reasons`) or `failed` (no numbers) |
| fallback | the fallback that produced the gate and why (empty: the method's main rule did) |
| rule | the rule that set the gate, in words (e.g. the valley between two peaks) |
| cut | the threshold, for 1-D cuts (empty otherwise) |
| events_in | events the method was given (the parent's, or a pooled group's) |
| events_kept | events of the sample in the resulting population(s) |
| pct_kept | events_kept as % of events_in (for a pooled gate, of the pool) |
| reasons | why flagged or failed, `; `-separated |
| details | all the method recorded (peaks: [position, height, prominence] relative to the top), JSON |
| params | the method's arguments, defaults filled, JSON |
"""


def decision_table(outcomes: Sequence[SampleOutcome]) -> Table:
    """The decisions of every gated sample's data-driven populations, one row each (``decisions.csv``)."""
    cols: dict[str, list[Any]] = {c: [] for c in _DECISION_COLUMNS}
    for o in outcomes:
        if not o.ok:
            continue
        for key, note in o.notes.items():  # the sample's own decisions (time parameter, processing)
            row = {c: "" for c in _DECISION_COLUMNS}
            row.update({"sample_id": o.sample_id, "woman_id": o.woman_id, "tube": o.tube, "plate": o.plate,
                        "well": o.well, "method": f"sample:{key}", "status": "flagged" if key == "processing"
                        else "ok", "rule": note, "cut": _NAN, "events_in": _NAN, "events_kept": _NAN,
                        "pct_kept": _NAN, "details": "{}", "params": "{}"})
            for c in _DECISION_COLUMNS:
                cols[c].append(row[c])
        for path, d in o.decisions.items():
            details = d.get("details") or {}
            ein, ekept = d.get("events_in"), d.get("events_kept")
            cut = details.get("cut")
            row = {"sample_id": o.sample_id, "woman_id": o.woman_id, "tube": o.tube, "plate": o.plate,
                   "well": o.well, "population": path, "method": d.get("method", ""),
                   "status": d.get("status", "ok"), "fallback": d.get("fallback") or "",
                   "rule": str(details.get("rule", "")),
                   "cut": float(cut) if isinstance(cut, int | float) else _NAN,
                   "events_in": ein if ein is not None else _NAN,
                   "events_kept": ekept if ekept is not None else _NAN,
                   "pct_kept": 100.0 * ekept / ein if ein and ekept is not None else _NAN,
                   "reasons": "; ".join(d.get("reasons") or ()),
                   "details": json.dumps(details, sort_keys=True),
                   "params": json.dumps(d.get("params") or {}, sort_keys=True)}
            for c in _DECISION_COLUMNS:
                cols[c].append(row[c])
    return Table(cols)


def _absolute_counts(records: list[dict[str, Any]], outcomes: Sequence[SampleOutcome],
                     templates: Sequence[Template], extras: Mapping[str, Mapping[str, str]]) -> bool:
    """Add cells/µL to the records where a template counts beads or a file has ``$VOL``; whether any did.

    Bead method where the sample's template has a ``role: counting_beads`` population (with the
    sheet's ``beads_per_test`` and ``sample_volume_ul``), else volumetric from ``$VOL``.
    """
    from flowtools.analysis.absolute import add_absolute_counts

    bead_of = {t.tube: next((p for p, role in t.roles.items() if role == populations.ROLE_BEADS), None)
               for t in templates}
    ok = [o for o in outcomes if o.ok]
    beads = {o.sample_id: bead_of.get(o.tube, bead_of.get(None)) for o in ok}
    vols = {o.sample_id: o.vol_nl for o in ok if o.vol_nl is not None}
    if not records or not (any(beads.values()) or vols):
        return False

    def column(name: str) -> dict[str, str]:
        return {s: e[name] for s, e in extras.items() if str(e.get(name, "")).strip()}

    add_absolute_counts(records, bead_population=beads, beads_per_test=column("beads_per_test"),
                        volume_ul=column("sample_volume_ul"), vol_nl=vols)
    return True


def per_woman(records: list[dict[str, Any]], *, absolute: bool = False) -> Table:
    """One row per woman, one ``tube|population`` column of % of parent each.

    As ``pivot_table(index="woman_id", columns=..., values="pct_parent", aggfunc="first")``
    gives it: the first non-NaN value in row order, rows and columns sorted, women and
    columns with no value at all left out. With absolute counts, ``tube|population|cells_per_ul``
    columns too.
    """
    cells: dict[str, dict[str, float]] = {}
    for r in records:
        v = r["pct_parent"]
        if v == v:  # noqa: PLR0124 - NaN is no value
            cells.setdefault(r["woman_id"], {}).setdefault(f"{r['tube']}|{r['population']}", v)
        a = r.get("cells_per_ul", _NAN) if absolute else _NAN
        if a == a:  # noqa: PLR0124
            cells.setdefault(r["woman_id"], {}).setdefault(f"{r['tube']}|{r['population']}|cells_per_ul", a)
    women = sorted(cells)
    columns = sorted({c for row in cells.values() for c in row})
    data: dict[str, list[Any]] = {"woman_id": women}
    for c in columns:
        data[c] = [float(cells[w].get(c, _NAN)) for w in women]
    return Table(data)


def write_gates(out: Path, o: SampleOutcome) -> str:
    """Write a sample's resolved gates to ``gates/<sample>.gating-ml.xml`` (atomically); the file name."""
    name = f"{safe_name(o.sample_id)}.gating-ml.xml"
    atomic_write_text(out / "gates" / name, o.gatingml or "")
    return name


def __per_woman_doc(columns: Iterable[str]) -> str:
    lines = [
        "# per_woman table",
        "",
        "One row per woman (`woman_id`, from the sample sheet). Every other column is named",
        "`<tube>|<population path>` and holds that population's **% of its parent** (0-100) in that",
        "woman's sample of that tube, as gated by the tube's template. Empty: the sample failed or",
        "the population's parent had no events. Counts, % of total and MFIs are in populations.csv.",
        "A column `<tube>|<population path>|cells_per_ul` (runs with absolute counts) holds cells per",
        "µL of sample instead (see `cells_per_ul` in populations.columns.md).",
        "",
        "| column | meaning |",
        "|---|---|",
        "| woman_id | participant pseudonym from the sample sheet |",
    ]
    for c in columns:
        if c == "woman_id":
            continue
        tube, _, pop = c.partition("|")
        if pop.endswith("|cells_per_ul"):
            pop = pop[: -len("|cells_per_ul")]
            lines.append(f"| {c} | {pop.split('/')[-1]} cells per µL of sample (tube {tube}) |")
            continue
        parent = pop.rpartition("/")[0] or "all events"
        lines.append(f"| {c} | % of {parent} that is {pop.split('/')[-1]} (tube {tube}) |")
    return "\n".join(lines) + "\n"
