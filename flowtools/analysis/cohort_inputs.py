"""Inputs of cohort clustering: a gate run's sheet and template, and each sample's gated events.

The sheet and template are found by the SHA-256 the run recorded; the events are those of one
gated population, on the gates' own compensated and transformed scale.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flowtools.errors import GatingError
from flowtools.provenance import file_sha256, safe_name

if TYPE_CHECKING:
    from flowtools.gating.templates import Template

__all__ = ["find_sample_sheet", "find_template", "resolve_population", "run_record", "run_templates",
           "sample_events"]


_SHEET_SUFFIXES = (".csv", ".tsv", ".txt")
_TEMPLATE_SUFFIXES = (".yaml", ".yml")
_MAX_HASHED = 64 * 2**20  # larger files are not sample sheets or templates: not hashed


def run_record(run: Path) -> dict[str, Any]:
    """The run's provenance record (``RUN/provenance.json``)."""
    prov_json = run / "provenance.json"
    try:
        return json.loads(prov_json.read_text(encoding="utf-8"))
    except FileNotFoundError:
        msg = f"{prov_json}: not found; {run} is not the output folder of `flowtools gate`"
        raise FileNotFoundError(msg) from None


def _recorded_files(run: Path, *, limit: int = 20) -> list[Path]:
    """FCS files the run names: failed samples in errors.json, gated ones in its cache (a few suffice)."""
    out: list[Path] = []
    for p in [run / "errors.json", *sorted((run / ".cache").glob("*.json"))[:limit]]:
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict):
            continue
        for item in doc.get("errors", []) if "errors" in doc else [doc]:
            if isinstance(item, dict) and isinstance(item.get("file"), str) and item["file"]:
                out.append(Path(item["file"]))
    return out


def _search_dirs(run: Path, *extra: Path) -> list[Path]:
    """Folders to look in, nearest first.

    The run, its parent and the parent's sub-folders, then the folders of the run's FCS files
    (and their parents), then ``extra``.
    """
    dirs = [run, run.parent]
    if run.parent.is_dir():
        dirs += sorted(p for p in run.parent.iterdir() if p.is_dir() and p != run)
    for f in _recorded_files(run):
        dirs += [f.parent, f.parent.parent]
    dirs += list(extra)
    seen: set[Path] = set()
    out = []
    for d in dirs:
        key = d.resolve()
        if key not in seen and d.is_dir():
            seen.add(key)
            out.append(d)
    return out


def _hash_search(
    dirs: Sequence[Path], suffixes: Sequence[str], want: str, digest: Callable[[Path], str | None],
    first: Sequence[Path] = (),
) -> tuple[Path | None, int]:
    """The first file (``first``, then the files of ``dirs`` with these suffixes) whose digest is ``want``."""
    hashed = 0
    candidates = list(first)
    for d in dirs:
        try:
            candidates += sorted(p for p in d.iterdir() if p.suffix.lower() in suffixes)
        except OSError:
            continue
    done: set[Path] = set()
    for c in candidates:
        try:
            key = c.resolve()
            if key in done or not c.is_file() or c.stat().st_size > _MAX_HASHED:
                continue
            done.add(key)
            hashed += 1
            if digest(c) == want:
                return c, hashed
        except OSError:
            continue
    return None, hashed


def _text_sha256(path: Path) -> str | None:
    """SHA-256 of a text file as :func:`~flowtools.gating.templates.load_template` hashes it."""
    try:
        return hashlib.sha256(path.read_text(encoding="utf-8").encode("utf-8")).hexdigest()
    except (UnicodeDecodeError, OSError):
        return None


def _tried(
    what: str, first: Sequence[Path], dirs: Sequence[Path], suffixes: Sequence[str], hashed: int
) -> str:
    """Where a search looked, for the error message."""
    at = f"at {', '.join(map(str, first))}, then " if first else ""
    pattern = "*" + "|*".join(suffixes)
    return (f"looked for {what} {at}among the {pattern} files of {', '.join(map(str, dirs))} "
            f"({hashed} files hashed)")


def find_sample_sheet(run_dir: str | os.PathLike[str]) -> Path:
    """The sample sheet a gate run used, found by the SHA-256 its provenance recorded, whatever its name.

    Looks first at a path the run recorded (``input_paths`` in ``provenance.json``, where the run
    writes one), then at every ``*.csv``, ``*.tsv`` and ``*.txt`` in the run folder, its parent and
    the parent's sub-folders, and the folders of the run's FCS files (as its ``errors.json`` and
    cache name them) and their parents.

    Parameters
    ----------
    run_dir : path
        Output folder of ``flowtools gate``.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    FileNotFoundError
        The run has no provenance, records no sheet, or no file there has the recorded hash; the
        message names the hash and every place looked at (pass the sheet explicitly).
    """
    run = Path(run_dir)
    prov = run_record(run)
    want = prov.get("inputs", {}).get("samples.csv")
    if not want:
        msg = (f"{run / 'provenance.json'}: records no sample sheet (inputs.samples.csv); "
               "pass it explicitly (--samples)")
        raise FileNotFoundError(msg)
    recorded = prov.get("input_paths", {}).get("samples.csv")
    first = [Path(recorded)] if isinstance(recorded, str) else []
    dirs = _search_dirs(run)
    found, hashed = _hash_search(dirs, _SHEET_SUFFIXES, want, file_sha256, first)
    if found is not None:
        return found
    what = f"the file with sha256 {want} (as provenance.json records it)"
    msg = (f"{run}: the sample sheet of this run was not found: "
           f"{_tried(what, first, dirs, _SHEET_SUFFIXES, hashed)}; pass it explicitly (--samples)")
    raise FileNotFoundError(msg)


def run_templates(prov: dict[str, Any]) -> list[dict[str, Any]]:
    """The templates a run records: name, tube, sha256, file (and path, where recorded)."""
    recs = prov.get("templates")
    if not isinstance(recs, dict):
        return []
    return [{"name": k, **v} for k, v in recs.items() if isinstance(v, dict)]


def find_template(
    run_dir: str | os.PathLike[str],
    tube: str,
    *,
    search: Sequence[str | os.PathLike[str]] = (),
) -> Template:
    """The gating template a gate run applied to a tube, found by the SHA-256 its provenance recorded.

    Looks at a path the run recorded (``templates.<name>.path``, where the run writes one), then
    at the ``*.yaml``/``*.yml`` files of ``search`` and of the folders :func:`find_sample_sheet`
    searches, then at the study templates (``gating_templates/``). A file named as the run
    recorded it is tried first in each place.

    Parameters
    ----------
    run_dir : path
        Output folder of ``flowtools gate``.
    tube : str
        The sample sheet's tube (a template without a tube applies to every tube).
    search : sequence of path, optional
        Further folders to look in (e.g. the sample sheet's).

    Returns
    -------
    Template

    Raises
    ------
    FileNotFoundError
        The run records no template for the tube, or no file has its hash; the message names
        the hash and every place looked at (pass the template explicitly).
    """
    from flowtools._resources import templates_dir
    from flowtools.gating.templates import load_template

    run = Path(run_dir)
    prov = run_record(run)
    recs = run_templates(prov)
    rec = next((r for r in recs if r.get("tube") == tube), None) or next(
        (r for r in recs if r.get("tube") is None), None)
    if rec is None or not rec.get("sha256"):
        msg = (f"{run / 'provenance.json'}: records no template for tube {tube!r} "
               f"(it records {[(r['name'], r.get('tube')) for r in recs]}); pass it explicitly (--template)")
        raise FileNotFoundError(msg)
    extra = [Path(s) for s in search]
    try:
        extra.append(templates_dir())
    except FileNotFoundError:
        pass
    dirs = _search_dirs(run, *extra)
    first = [Path(rec["path"])] if isinstance(rec.get("path"), str) else []
    name = rec.get("file") if isinstance(rec.get("file"), str) and rec.get("file") else None
    named = [d / name for d in dirs] if name else []
    found, hashed = _hash_search(dirs, _TEMPLATE_SUFFIXES, rec["sha256"], _text_sha256, [*first, *named])
    if found is None:
        what = (f"template {rec['name']!r} of tube {tube!r} (a file {name or ''} with sha256 "
                f"{rec['sha256']}, as provenance.json records it)")
        tried = _tried(what, first, dirs, _TEMPLATE_SUFFIXES, hashed)
        msg = f"{run}: {tried}; pass it explicitly (--template)"
        raise FileNotFoundError(msg)
    return load_template(found)


def resolve_population(pops: Any, population: str, tube: str | None) -> tuple[str, str]:
    """(tube, full template path) of a population given by its path or its last segments."""
    paths = pops[["tube", "population"]].drop_duplicates()
    if tube is not None:
        if tube not in set(paths["tube"]):
            msg = f"no tube {tube!r} in this run; tubes are {sorted(paths['tube'].unique())}"
            raise GatingError(msg)
        paths = paths[paths["tube"] == tube]
    exact = paths[paths["population"] == population]
    hit = exact if len(exact) else paths[paths["population"].map(
        lambda p: p == population or p.endswith("/" + population.strip("/")))]
    if hit.empty:
        msg = f"no gated population {population!r}; populations are {sorted(paths['population'].unique())}"
        raise GatingError(msg)
    uniq = hit.drop_duplicates()
    if len(uniq) > 1:
        msg = (f"population {population!r} is ambiguous: {sorted(map(tuple, uniq.values.tolist()))}; "
               "give more of its path, or the tube (--tube)")
        raise GatingError(msg)
    return str(uniq.iloc[0]["tube"]), str(uniq.iloc[0]["population"])


def _bare(template: Template) -> Template:
    """The template without its populations: its compensation and transforms only (nothing to gate)."""
    return dataclasses.replace(template, populations=())


def _default_markers(sample: Any, scaled: Any) -> list[str]:
    """Fluorescence parameters of a sample, by marker (``$PnS``) where they have one, in file order.

    Those without a marker (unstained detectors) are left out when any has one.
    """
    fl = [c for c in sample.channels if scaled.kind(c.pnn) == "fluorescence"]
    named = [c for c in fl if c.pns]
    pns_count: dict[str, int] = {}
    for c in named:
        pns_count[c.pns] = pns_count.get(c.pns, 0) + 1
    return [c.pns if pns_count[c.pns] == 1 else c.pnn for c in named] if named else [c.pnn for c in fl]


def _scale_record(template: Template, sample: Any, scaled: Any, markers: Sequence[str]) -> dict[str, Any]:
    """How each clustered marker was put on the gates' scale: template, compensation, transform."""
    from flowtools.gating.gates import FCS_COMPENSATION, UNCOMPENSATED

    comp = template.compensation
    if comp == FCS_COMPENSATION:
        compensation: dict[str, Any] = {"kind": "FCS", "matrix": "each file's $SPILLOVER"}
    elif comp == UNCOMPENSATED:
        compensation = {"kind": "uncompensated"}
    else:
        compensation = {"kind": "matrix", "file": comp, "sha256": file_sha256(comp)}
    per = {}
    for m in markers:
        pnn = sample.channels[sample.channel_index(m)].pnn
        kind = scaled.kind(m)
        spec = (template.transforms.get(m) or template.transforms.get(pnn) or template.transforms.get(kind))
        if spec is None or spec.kind == "none":
            tr: Any = "none"
        else:
            tr = {spec.kind: spec.params if isinstance(spec.params, str) else dict(spec.params)}
        per[m] = {"channel": pnn, "kind": kind, "transform": tr}
    return {"template": template.name, "tube": template.tube, "file": template.source,
            "sha256": template.sha256, "compensation": compensation, "markers": per}


def sample_events(
    row: dict[str, Any],
    run: Path,
    template: Template,
    gate_id: str,
    markers: Sequence[str] | None,
    below: Sequence[tuple[str, str]],
) -> dict[str, Any]:
    """Read one file, gate it with its resolved Gating-ML, return the population's marker values.

    ``gate_id`` is the population's id in that Gating-ML, and ``below`` the (path, gate id) of
    the populations under it, as the run's populations.csv gives them for this sample. The
    values are the gates' (:meth:`ResolvedSample.values`: compensated and transformed as the
    template says); ``raw`` is compensated only. ``markers`` None: the file's fluorescence
    parameters (:func:`_default_markers`).
    """
    from flowtools.gating.engine import gate_sample
    from flowtools.gating.formats.gatingml import read_gatingml
    from flowtools.gating.templates import resolve
    from flowtools.io.fcs import read_fcs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sample = read_fcs(row["file"])
    strategy = read_gatingml(run / "gates" / f"{safe_name(row['sample_id'])}.gating-ml.xml")
    result = gate_sample(strategy, sample, sample_id=row["sample_id"])
    if gate_id not in result.masks:
        msg = (f"{row['file']}: its gates (Gating-ML) have no population {gate_id!r}; "
               "run `flowtools gate` again")
        raise GatingError(msg)
    mask = result.mask(gate_id)
    (scaled,) = resolve(_bare(template), [sample], sample_ids=[row["sample_id"]])
    if scaled.error is not None:
        msg = f"{row['file']}: {scaled.error}"
        raise GatingError(msg)
    names = list(markers) if markers is not None else _default_markers(sample, scaled)
    pnn = {}
    for m in names:
        try:
            pnn[m] = sample.channels[sample.channel_index(m)].pnn
        except KeyError:
            pnn[m] = None
    missing = [m for m in names if pnn[m] is None]
    if missing:
        msg = (f"{row['file']}: no channel or marker {missing}; its markers are "
               f"{[c.pns for c in sample.channels if c.pns]} and its channels {sample.pnn}")
        raise GatingError(msg)
    n = int(np.count_nonzero(mask))
    x = np.empty((n, len(names)), dtype=np.float64)
    raw = np.empty((n, len(names)), dtype=np.float64)
    for j, m in enumerate(names):
        x[:, j] = scaled.values(m)[mask]
        raw[:, j] = scaled.channel(pnn[m])[mask]
    gates = {}
    for path, gid in below:
        if gid in result.masks:
            gates[path] = result.mask(gid)[mask]
    return {"x": x, "raw": raw, "n_total": int(sample.n_events), "gates": gates, "markers": names,
            "scale": _scale_record(template, sample, scaled, names), "events": np.flatnonzero(mask)}
