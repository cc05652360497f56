"""A finished ``flowtools gate`` run, read back: its records, and each sample re-gated to the run's counts.

:func:`load_run` reads the run folder (``provenance.json``, ``populations.csv``) and finds the run's
sample sheet and templates by the SHA-256 its provenance recorded; :func:`regate` reads a sample's
FCS file again and applies the gates the run resolved for it (its Gating-ML). The re-gated counts
must equal ``populations.csv`` exactly, and the file's hash the run's: otherwise
:class:`~flowtools.errors.ExportError`, rather than other events than the run counted.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flowtools.errors import ExportError
from flowtools.provenance import file_sha256, safe_name

if TYPE_CHECKING:
    from flowtools.gating.engine import GatingResult
    from flowtools.gating.templates import Template
    from flowtools.io.fcs import FCSSample


__all__ = ["GateRun", "RegatedSample", "load_run", "one_tube", "regate", "resolve_population"]


# ------------------------------------------------------------------------------------------------ the run


@dataclass
class GateRun:
    """What a ``flowtools gate`` output folder holds, read once.

    Attributes
    ----------
    run_dir : pathlib.Path
    provenance : dict
        ``provenance.json``.
    populations : pandas.DataFrame
        ``populations.csv`` (or ``.parquet``).
    sheet_path : pathlib.Path
        The run's sample sheet (found by its recorded SHA-256).
    samples : list of dict
        sample_id, woman_id, tube, plate, well, file (absolute) of every gated sample, sheet order.
    """

    run_dir: Path
    provenance: dict[str, Any]
    populations: Any
    sheet_path: Path
    samples: list[dict[str, Any]]
    _templates: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def tubes(self) -> list[str]:
        """The tubes with gated samples, sorted."""
        return sorted({s["tube"] for s in self.samples})

    def template(self, tube: str) -> Template:
        """The template the run gated a tube with (found by the SHA-256 the run recorded)."""
        if tube not in self._templates:
            from flowtools.analysis.cohort import find_template

            try:
                self._templates[tube] = find_template(self.run_dir, tube)
            except FileNotFoundError as exc:
                raise ExportError(str(exc)) from None
        return self._templates[tube]

    def samples_of(self, tube: str) -> list[dict[str, Any]]:
        """Gated samples of one tube, in sheet order."""
        return [s for s in self.samples if s["tube"] == tube]

    def rows_of(self, sample_id: str) -> Any:
        """The population rows of one sample (a DataFrame)."""
        p = self.populations
        return p[p["sample_id"] == sample_id]


def load_run(run_dir: str | os.PathLike[str]) -> GateRun:
    """Read a ``flowtools gate`` output folder (provenance, populations table, sample sheet).

    Raises
    ------
    ExportError
        The folder does not exist, is not a gate run, has no populations table, or its sample
        sheet cannot be found.
    """
    from flowtools.analysis.cohort import find_sample_sheet
    from flowtools.analysis.populations import read_populations
    from flowtools.io.sample_sheet import read_sample_sheet

    run = Path(run_dir)
    if not run.is_dir():
        msg = f"{run}: no such run folder (the output folder of `flowtools gate`)"
        raise ExportError(msg)
    prov_json = run / "provenance.json"
    if not prov_json.is_file():
        msg = f"{prov_json}: not found; {run} is not the output folder of `flowtools gate`"
        raise ExportError(msg)
    prov = json.loads(prov_json.read_text(encoding="utf-8"))
    table = next((run / n for n in ("populations.parquet", "populations.csv") if (run / n).is_file()), None)
    if table is None:
        msg = f"{run}: no populations.csv (no sample was gated in this run; see errors.json)"
        raise ExportError(msg)
    try:
        pops = read_populations(table)
    except ImportError:  # no pyarrow: the CSV twin
        pops = read_populations(run / "populations.csv")
    try:
        sheet_path = find_sample_sheet(run)
    except FileNotFoundError as exc:
        raise ExportError(str(exc)) from None
    sheet = read_sample_sheet(sheet_path, tubes=None)
    gated = set(pops["sample_id"])
    samples = [{"sample_id": r.sample_id, "woman_id": r.woman_id, "tube": r.tube, "plate": r.plate,
                "well": r.well, "file": str(r.file), "extra": dict(r.extra)}
               for r in sheet if r.sample_id in gated]
    return GateRun(run, prov, pops, Path(sheet_path), samples)


def resolve_population(run: GateRun, population: str, tube: str | None = None) -> tuple[str, str]:
    """(tube, full path) of a population given by its path or its last segments.

    Raises
    ------
    ExportError
        No such tube, no such population (the message lists the known ones), or an ambiguous name.
    """
    pops = run.populations
    paths = pops[["tube", "population"]].drop_duplicates()
    if tube is not None:
        if tube not in set(paths["tube"]):
            msg = f"{run.run_dir}: no tube {tube!r} in this run; tubes are {run.tubes}"
            raise ExportError(msg)
        paths = paths[paths["tube"] == tube]
    want = population.strip("/")
    hit = paths[paths["population"] == want]
    if hit.empty:
        hit = paths[paths["population"].map(lambda p: p.endswith("/" + want))]
    if hit.empty:
        known = sorted(paths["population"].unique())
        near = [p for p in known if want.lower() in p.rsplit("/", 1)[-1].lower()]
        hint = f"did you mean {near}? " if near else ""
        msg = f"{run.run_dir}: no gated population {population!r}; {hint}populations are {known}"
        raise ExportError(msg)
    if len(hit) > 1:
        msg = (f"{run.run_dir}: population {population!r} is ambiguous: "
               f"{sorted(map(tuple, hit.values.tolist()))}; give more of its path, or the tube")
        raise ExportError(msg)
    return str(hit.iloc[0]["tube"]), str(hit.iloc[0]["population"])


def one_tube(run: GateRun, tube: str | None) -> str:
    """The tube to export: the one given (checked against the run's), else the run's only tube."""
    if tube is not None:
        if tube not in run.tubes:
            msg = f"{run.run_dir}: no gated sample of tube {tube!r}; tubes are {run.tubes}"
            raise ExportError(msg)
        return tube
    if len(run.tubes) > 1:
        msg = (f"{run.run_dir}: the run has samples of several tubes {run.tubes} (different panels); "
               "choose one (--tube, or a --population of one tube)")
        raise ExportError(msg)
    return run.tubes[0]


# ------------------------------------------------------------------------------------------------ re-gating


@dataclass
class RegatedSample:
    """One sample of a run, read again and gated with the gates the run resolved for it.

    Attributes
    ----------
    info : dict
        sample_id, woman_id, tube, plate, well, file.
    sample : FCSSample
    result : GatingResult
        Masks by gate id (``populations.csv``'s ``gate_id``).
    rows : pandas.DataFrame
        The sample's rows of ``populations.csv``.
    sha256 : str
        SHA-256 of the FCS file (equal to the run's record).
    """

    info: dict[str, Any]
    sample: FCSSample
    result: GatingResult
    rows: Any
    sha256: str

    def mask(self, path: str) -> np.ndarray:
        """Membership of a population (template path); all False where the population failed."""
        row = self.rows[self.rows["population"] == path]
        if row.empty:
            msg = (f"{self.info['file']}: no population {path!r} in the run's table for "
                   f"{self.info['sample_id']}")
            raise ExportError(msg)
        r = row.iloc[0]
        if r["status"] == "failed" or not r["gate_id"]:
            return np.zeros(self.sample.n_events, dtype=bool)
        return self.result.mask(r["gate_id"])

    def failed(self, path: str) -> bool:
        """Whether a population has no numbers in this sample (its gate failed in the run)."""
        row = self.rows[self.rows["population"] == path]
        return row.empty or row.iloc[0]["status"] == "failed"


def regate(run: GateRun, info: dict[str, Any]) -> RegatedSample:
    """Read one sample's FCS file again and apply its resolved gates; check the counts against the run.

    Raises
    ------
    ExportError
        The file changed since the run (SHA-256), its Gating-ML is missing, or a re-gated count
        differs from ``populations.csv``.
    """
    from flowtools.gating.engine import gate_sample
    from flowtools.gating.formats.gatingml import read_gatingml
    from flowtools.io.fcs import read_fcs

    sid, path = info["sample_id"], info["file"]
    want = (run.provenance.get("fcs_sha256") or {}).get(sid)
    try:
        got = file_sha256(path)
    except OSError as exc:
        msg = f"{path}: cannot read the FCS file of sample {sid}: {exc.strerror or exc}"
        raise ExportError(msg) from None
    if want and got != want:
        msg = (f"{path}: the file changed since the run (sha256 {got}, the run recorded {want}); "
               "run `flowtools gate` again")
        raise ExportError(msg)
    gml = run.run_dir / "gates" / f"{safe_name(sid)}.gating-ml.xml"
    if not gml.is_file():
        msg = f"{gml}: not found; the run's gates of sample {sid} are missing (run `flowtools gate` again)"
        raise ExportError(msg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # repairs were recorded when the run read the file
        sample = read_fcs(path)
    strategy = read_gatingml(gml)
    result = gate_sample(strategy, sample, sample_id=sid)
    rows = run.rows_of(sid)
    bad = []
    for r in rows.itertuples(index=False):
        if r.status == "failed" or not r.gate_id:
            continue
        if r.gate_id not in result.masks:
            bad.append(f"{r.population}: gate {r.gate_id!r} absent from {gml.name}")
            continue
        n = result.count(r.gate_id)
        if n != int(r.count):
            bad.append(f"{r.population}: {n} events re-gated, populations.csv says {int(r.count)}")
    if bad:
        msg = (f"{path}: re-gating sample {sid} with {gml.name} does not give the run's counts: "
               + "; ".join(bad[:5]) + ("; ..." if len(bad) > 5 else ""))
        raise ExportError(msg)
    return RegatedSample(info, sample, result, rows, got)
