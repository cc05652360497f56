"""Export a ``flowtools gate`` run's events: AnnData (``.h5ad``) and FCS 3.1 files of one population.

Both read the run folder (``provenance.json``, ``populations.csv``, ``gates/<sample>.gating-ml.xml``),
find the run's sample sheet and templates by the SHA-256 its provenance recorded
(:func:`flowtools.analysis.cohort.find_sample_sheet` / :func:`~flowtools.analysis.cohort.find_template`),
and re-gate every sample: its FCS file is read again and the gates the run resolved for it
(its Gating-ML) are applied. The re-gated counts must equal ``populations.csv`` exactly; a
file that changed since the run, or gates that no longer give the run's numbers, raise
:class:`~flowtools.errors.ExportError` rather than export other events than the run counted.

:func:`export_anndata`
    Events as ``X`` (compensated as the template says, float32), the gates' values
    (compensated and transformed) as layer ``"transformed"``, channels in ``var``, per-event
    sample/woman/plate/tube and one boolean column per population in ``obs``, the template,
    spillover and provenance in ``uns``. Needs the optional ``anndata`` package
    (``pip install flowtools[anndata]``).
:func:`export_fcs`
    One FCS 3.1 file per sample holding one population's events, as stored in the source file
    (uncompensated, untransformed), with its ``$Pn*`` keywords, ``$SPILLOVER`` and the other
    allow-listed keywords (:mod:`flowtools.io.keywords`; never ``$SRC``, ``$OP``, ``$FIL`` or
    vendor/patient fields), and ``FLOWTOOLS_*`` keywords naming the population, the template
    and the source file's hash.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import re
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flowtools._version import __version__
from flowtools.errors import ExportError
from flowtools.pipeline.gate_run import GateRun, RegatedSample, load_run, one_tube, regate, resolve_population
from flowtools.provenance import atomic_write_text, provenance_record, safe_name

if TYPE_CHECKING:
    from flowtools.gating.templates import Template
    from flowtools.io.fcs import FCSSample

__all__ = [
    "ExportedFCS",
    "GateRun",
    "RegatedSample",
    "export_anndata",
    "export_fcs",
    "load_run",
    "regate",
    "resolve_population",
]

#: Keyword prefix of what flowtools adds to an exported FCS file.
FLOWTOOLS_PREFIX = "FLOWTOOLS_"
# Keywords a source file's allow-list passes that the writer sets itself (layout, data offsets), or
# that would be wrong for a float32/float64 file holding a subset of the events.
_WRITER_OWNED = re.compile(
    r"^(\$BEGINANALYSIS|\$ENDANALYSIS|\$BEGINSTEXT|\$ENDSTEXT|\$BEGINDATA|\$ENDDATA|\$BYTEORD|\$DATATYPE|"
    r"\$MODE|\$NEXTDATA|\$PAR|\$TOT|\$SPILLOVER|\$SPILL|SPILL|\$ABRT|\$LOST|\$ORIGINALITY|\$LAST_MODIFIED|"
    r"\$P\d+(B|E|DATATYPE))$"
)


# ------------------------------------------------------------------------------------------------ AnnData


def _anndata() -> Any:
    try:
        import anndata
    except ImportError:
        msg = "AnnData export needs the anndata package: pip install flowtools[anndata]"
        raise ExportError(msg) from None
    return anndata


def _bare(template: Template) -> Template:
    """The template's compensation and transforms, no populations (values only, nothing to gate)."""
    return dataclasses.replace(template, populations=())


def _values(
    template: Template, rs: RegatedSample, idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(compensated, transformed, kinds) of every channel of a sample's events ``idx``, float32.

    As the run's template makes them: the transformed values are the gates'
    (:meth:`ResolvedSample.values`), so an exported event sits where the gates saw it.
    """
    from flowtools.gating.templates import resolve

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a processed-file warning was recorded by the run
        (scaled,) = resolve(_bare(template), [rs.sample], sample_ids=[rs.info["sample_id"]])
    if scaled.error is not None:
        msg = f"{rs.info['file']}: {scaled.error}"
        raise ExportError(msg)
    pnn = rs.sample.pnn
    comp = np.empty((idx.size, len(pnn)), dtype=np.float32)
    trans = np.empty((idx.size, len(pnn)), dtype=np.float32)
    for j, p in enumerate(pnn):  # one column at a time: no full float64 copy of the file
        comp[:, j] = np.asarray(scaled.channel(p))[idx]
        trans[:, j] = np.asarray(scaled.values(p))[idx]
    return comp, trans, [scaled.kind(p) for p in pnn]


def _leaf_labels(masks: dict[str, np.ndarray], order: Sequence[str], n: int) -> np.ndarray:
    """Per event, the deepest population (template path) it belongs to; "" for none.

    Among populations of equal depth the first in template order wins.
    """
    label = np.full(n, "", dtype=object)
    depth = np.full(n, -1, dtype=np.int64)
    for path in order:
        d = path.count("/")
        m = masks[path] & (depth < d)
        label[m] = path
        depth[m] = d
    return label


def _obs_name(path: str, gate_id: str) -> str:
    # h5ad stores obs columns as HDF5 datasets: no "/" in a name. The gate id is the path spelled
    # safely (``qc__margin__cells``), the one the run's tables and Gating-ML already use.
    return gate_id or path.replace("/", "__")


def _jsonable(v: Any) -> Any:
    """A value as plain JSON data (h5ad-writable): dicts, lists, str, float, int, bool; None as ""."""
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if v is None:
        return ""
    return v


#: Per-event cluster output a cluster run folder may hold: sample_id, event (row in the FCS file),
#: cluster (int), optional label, and embedding coordinates ``umap_1, umap_2`` / ``pca_1, pca_2``
#: (NaN for events that were not embedded).
CLUSTER_EVENTS = ("cluster_events.parquet", "cluster_events.csv")
_EMBED = re.compile(r"^(umap|pca|tsne)_(\d+)$")


def _cluster_events(d: Path) -> Any:
    import pandas as pd

    for name in CLUSTER_EVENTS:
        p = d / name
        if p.is_file():
            t = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
            need = [c for c in ("sample_id", "event", "cluster") if c not in t.columns]
            if need:
                msg = f"{p}: no column {need} (sample_id, event, cluster are needed)"
                raise ExportError(msg)
            return t
    return None


def _add_clusters(
    obs: Any, obsm: dict[str, np.ndarray], run: GateRun, population: str | None
) -> dict[str, Any]:
    """Join per-event cluster labels and embeddings of the run's cluster folders; their record for ``uns``."""
    import pandas as pd

    found: dict[str, Any] = {}
    root = run.run_dir / "clusters"
    if not root.is_dir():
        return found
    key = pd.MultiIndex.from_arrays([obs["sample_id"].astype(str).to_numpy(), obs["event"].to_numpy()])
    for prov_json in sorted(root.glob("*/provenance.json")):
        d = prov_json.parent
        try:
            prov = json.loads(prov_json.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        pop = (prov.get("parameters") or {}).get("population")
        if population is not None and pop not in (None, population):
            continue
        rec: dict[str, Any] = {"folder": d.name, "population": pop or "",
                               "method": (prov.get("parameters") or {}).get("method") or ""}
        ann = d / "cluster_annotation.csv"
        if ann.is_file():
            table = pd.read_csv(ann)
            rec["annotation"] = {c: _jsonable(table[c].tolist()) for c in table.columns}
        ev = _cluster_events(d)
        if ev is None:
            rec["per_event"] = ("not available: the cluster folder has no cluster_events.parquet/.csv "
                                "(per-event labels and embedding coordinates)")
        else:
            ev = ev.set_index([ev["sample_id"].astype(str), ev["event"].astype(np.int64)])
            ev = ev[~ev.index.duplicated()].reindex(key)
            col = f"cluster_{safe_name(d.name)}"
            labels = ev["label"] if "label" in ev.columns else ev["cluster"]
            obs[col] = pd.Categorical(labels.where(ev["cluster"].notna(), "").astype(str).to_numpy())
            rec["obs_column"] = col
            kinds: dict[str, list[str]] = {}
            for c in ev.columns:
                m = _EMBED.match(str(c))
                if m:
                    kinds.setdefault(m.group(1), []).append(str(c))
            for kind, cols in kinds.items():
                name = f"X_{kind}" if f"X_{kind}" not in obsm else f"X_{kind}_{safe_name(d.name)}"
                obsm[name] = ev[sorted(cols, key=lambda s: int(s.rsplit("_", 1)[1]))].to_numpy(np.float32)
                rec.setdefault("obsm", []).append(name)
            rec["events_labelled"] = int(ev["cluster"].notna().sum())
        found[d.name] = rec
    return found


def export_anndata(
    run_dir: str | os.PathLike[str],
    *,
    population: str | None = None,
    out: str | os.PathLike[str] | None = None,
    tube: str | None = None,
    events_per_sample: int | None = None,
    seed: int = 0,
) -> Any:
    """Export a gate run's events of one tube as an AnnData object (and an ``.h5ad`` file).

    Parameters
    ----------
    run_dir : path
        Output folder of ``flowtools gate``.
    population : str, optional
        Only this population's events (template path, or its last segments).
    out : path, optional
        ``.h5ad`` file to write (atomically); None writes nothing.
    tube : str, optional
        The tube to export; needed when the run has several (different panels) and no
        ``population`` says which.
    events_per_sample : int, optional
        At most this many events per sample (a seeded random subset, file order kept).
    seed : int, default 0

    Returns
    -------
    anndata.AnnData
        ``X``: compensated values (float32, scale values as the template compensates them);
        layer ``"transformed"``: the gates' values (compensated and transformed, float32);
        ``var`` (index ``$PnN``): pnn, marker (``$PnS``), kind (fluorescence/scatter/time/other);
        ``obs``: sample_id, woman_id, plate, tube, well (categoricals), event (row in the
        source file), ``population`` (the deepest population of the event, categorical) and
        one boolean column per population named by its gate id (``uns["populations"]`` maps
        path -> column); ``uns``: template (name, tube, file, sha256, text), spillover per
        sample, provenance (the run's and this export's), failed populations, clusters.
        Where the run has cluster folders (``RUN/clusters/<name>/``, of the exported population
        or of any when none is given): their annotation in ``uns["clusters"]``, and where a folder
        holds per-event results (:data:`CLUSTER_EVENTS`: sample_id, event, cluster[, label],
        ``umap_1``...) a categorical ``obs["cluster_<name>"]`` ("" for events not clustered) and
        the coordinates in ``obsm["X_umap"]``/``obsm["X_pca"]`` (NaN for events not embedded).

    Raises
    ------
    ExportError
        No run, several tubes and none chosen, an unknown population, channels differing
        between samples, counts that do not re-gate, or anndata not installed.
    """
    ad = _anndata()
    import pandas as pd

    run = load_run(run_dir)
    path = None
    if population is not None:
        tube, path = resolve_population(run, population, tube)
    tube = one_tube(run, tube)
    template = run.template(tube)
    order = [p for p in template.population_paths]
    rng = np.random.default_rng(seed)
    xs, ts, obs_parts = [], [], []
    pnn: list[str] | None = None
    var: dict[str, list[Any]] = {}
    spill: dict[str, Any] = {}
    failed: dict[str, list[str]] = {}
    gate_ids: dict[str, str] = {}
    for info in run.samples_of(tube):
        rs = regate(run, info)
        if pnn is None:
            pnn = list(rs.sample.pnn)
        elif list(rs.sample.pnn) != pnn:
            msg = (f"{info['file']}: channels {rs.sample.pnn} differ from the first sample's {pnn}; "
                   "export the samples of one panel")
            raise ExportError(msg)
        masks = {p: rs.mask(p) for p in order if not rs.rows[rs.rows["population"] == p].empty}
        for p in masks:
            r = rs.rows[rs.rows["population"] == p].iloc[0]
            gate_ids.setdefault(p, _obs_name(p, str(r["gate_id"])))
            if rs.failed(p):
                failed.setdefault(info["sample_id"], []).append(p)
        keep = masks[path] if path is not None else np.ones(rs.sample.n_events, dtype=bool)
        idx = np.flatnonzero(keep)
        if events_per_sample is not None and idx.size > events_per_sample:
            idx = np.sort(rng.choice(idx, size=events_per_sample, replace=False))
        comp, trans, kinds = _values(template, rs, idx)
        if not var:
            var = {"pnn": pnn, "marker": list(rs.sample.pns), "kind": kinds}
        xs.append(comp)
        ts.append(trans)
        part: dict[str, Any] = {c: [info[c]] * idx.size
                                for c in ("sample_id", "woman_id", "plate", "tube", "well")}
        part["event"] = idx.astype(np.int64)
        part["population"] = _leaf_labels(masks, [p for p in order if p in masks], rs.sample.n_events)[idx]
        for p, m in masks.items():
            part[gate_ids[p]] = m[idx]
        obs_parts.append(pd.DataFrame(part))
        if rs.sample.spillover is not None:
            sp = rs.sample.spillover
            spill[info["sample_id"]] = {"detectors": list(sp.detectors),
                                        "matrix": np.asarray(sp.matrix, dtype=np.float64).tolist()}
    if pnn is None:
        msg = f"{run.run_dir}: no gated sample of tube {tube!r}"
        raise ExportError(msg)
    obs = pd.concat(obs_parts, ignore_index=True)
    for c in gate_ids.values():  # a population absent from one sample's table: not a member there
        obs[c] = obs[c].eq(other=True) if c in obs else np.zeros(len(obs), dtype=bool)
    for c in ("sample_id", "woman_id", "plate", "tube", "well", "population"):
        obs[c] = obs[c].astype(str).astype("category")
    obs.index = [f"{s}:{e}" for s, e in zip(obs["sample_id"], obs["event"], strict=True)]
    var_df = pd.DataFrame(var, index=pd.Index(pnn, name=None))
    for c in ("marker", "kind"):
        var_df[c] = var_df[c].astype(str)
    x = np.concatenate(xs) if xs else np.zeros((0, len(pnn)), np.float32)
    t = np.concatenate(ts) if ts else np.zeros((0, len(pnn)), np.float32)
    prov = provenance_record(inputs={"run_provenance.json": run.run_dir / "provenance.json"},
                             parameters={"population": path, "tube": tube,
                                         "events_per_sample": events_per_sample},
                             seed=seed, command="flowtools export anndata")
    uns = {
        "template": {"name": template.name, "tube": template.tube or "", "file": Path(template.source).name,
                     "sha256": template.sha256, "compensation": template.compensation,
                     "text": Path(template.source).read_text(encoding="utf-8")},
        "populations": {"path": list(gate_ids), "column": list(gate_ids.values())},
        "spillover": spill,
        "failed_populations": failed,
        "provenance": {"run": _jsonable(run.provenance), "export": _jsonable(prov)},
        "exported_population": path or "",
    }
    obsm: dict[str, np.ndarray] = {}
    clusters = _add_clusters(obs, obsm, run, path)
    if clusters:
        uns["clusters"] = clusters
    adata = ad.AnnData(X=x, obs=obs, var=var_df, layers={"transformed": t}, obsm=obsm or None,
                       uns=_jsonable(uns))
    if out is not None:
        _write_h5ad(adata, Path(out))
    return adata


def _write_h5ad(adata: Any, out: Path) -> None:
    """Write to a temporary file beside ``out``, then rename it onto ``out`` (never a partial file)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        adata.write_h5ad(tmp)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------------------------ FCS


@dataclass
class ExportedFCS:
    """What :func:`export_fcs` wrote.

    Attributes
    ----------
    out_dir : pathlib.Path
    population : str
    tube : str
    files : dict of str to pathlib.Path
        sample_id -> FCS file written.
    counts : dict of str to int
        sample_id -> events written.
    skipped : dict of str to str
        sample_id -> why no file was written (the population failed in that sample).
    manifest : pathlib.Path
        ``export_manifest.json`` (files, counts, provenance).
    """

    out_dir: Path
    population: str
    tube: str
    files: dict[str, Path]
    counts: dict[str, int]
    skipped: dict[str, str]
    manifest: Path

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return {"out_dir": str(self.out_dir), "population": self.population, "tube": self.tube,
                "files": {k: str(v) for k, v in self.files.items()}, "counts": self.counts,
                "skipped": self.skipped, "manifest": str(self.manifest)}


def _fcs_keywords(sample: FCSSample) -> dict[str, str]:
    """The source's allow-listed keywords an exported file keeps (see :mod:`flowtools.io.keywords`)."""
    from flowtools.io.keywords import has_binary_content, safe_keywords

    out = {}
    for k, v in safe_keywords(sample.keywords).items():
        if _WRITER_OWNED.match(k) or not v.strip() or has_binary_content(v):
            continue
        out[k] = v
    return out


def export_fcs(
    run_dir: str | os.PathLike[str],
    population: str,
    out_dir: str | os.PathLike[str],
    tube: str | None = None,
) -> ExportedFCS:
    """Write one FCS 3.1 file per sample holding one population's events, as the source file stores them.

    The values are the source file's (not compensated, not transformed; float32, or float64 when
    the source stores doubles), the channels' ``$PnN``/``$PnS``/``$PnR``/``$PnG``/``$PnV``... and
    ``$SPILLOVER`` are kept, and so are the other allow-listed keywords
    (:func:`flowtools.io.keywords.safe_keywords`): free text and personal fields (``$SRC``,
    ``$OP``, ``$FIL``, vendor/patient keywords) are not. Added: ``FLOWTOOLS_POPULATION``,
    ``FLOWTOOLS_GATE_ID``, ``FLOWTOOLS_SAMPLE_ID`` (the sheet's pseudonym), ``FLOWTOOLS_TEMPLATE``,
    ``FLOWTOOLS_TEMPLATE_SHA256``, ``FLOWTOOLS_SOURCE_SHA256``, ``FLOWTOOLS_SOURCE_EVENTS``,
    ``FLOWTOOLS_VERSION``, and ``$ORIGINALITY = DataModified``. Log-amplified integer channels
    (``$PnE`` decades > 0) are written decoded (FCS 3.1 stores floats linear) and named in
    ``FLOWTOOLS_DECODED``. Files are ``OUT/<sample_id>.<gate_id>.fcs``, written atomically, with
    ``export_manifest.json`` (files, counts, provenance).

    Parameters
    ----------
    run_dir : path
        Output folder of ``flowtools gate``.
    population : str
        Template path (or its last segments).
    out_dir : path
    tube : str, optional
        Where the population's name is ambiguous between tubes.

    Returns
    -------
    ExportedFCS

    Raises
    ------
    ExportError
        No run, an unknown population, a changed file or counts that do not re-gate.
    """
    from flowtools.io.fcs_write import write_fcs

    run = load_run(run_dir)
    tube, path = resolve_population(run, population, tube)
    template = run.template(tube)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    counts: dict[str, int] = {}
    skipped: dict[str, str] = {}
    for info in run.samples_of(tube):
        rs = regate(run, info)
        sid = info["sample_id"]
        row = rs.rows[rs.rows["population"] == path]
        if row.empty or rs.failed(path):
            reason = str(row.iloc[0]["reason"]) if not row.empty else "not in the run's table"
            skipped[sid] = f"population {path!r} failed in this sample: {reason}"
            continue
        gate_id = str(row.iloc[0]["gate_id"])
        mask = rs.mask(path)
        if not mask.any():
            # An FCS file with no events has an empty DATA segment that FlowIO/FlowKit refuse.
            skipped[sid] = f"population {path!r} has no events in this sample"
            continue
        s = rs.sample
        ev = s.events
        decoded = [c for c in s.channels if c.pne[0] > 0 and c.pnr]
        # float32 holds float32 data and integers of up to 24 bits exactly; anything else stays float64
        exact32 = not decoded and (ev.dtype == np.float32 or all(
            c.datatype == "I" and (c.pnb or 64) <= 24 for c in s.channels))
        data = np.array(ev[mask], dtype=np.float32 if exact32 else np.float64)
        if decoded:
            full = s.as_array(preprocess=True)[mask]
            for c in decoded:
                data[:, c.index] = full[:, c.index] * (c.png if c.png not in (0.0, 1.0) else 1.0)
        kw = _fcs_keywords(s)
        kw.update({
            "$ORIGINALITY": "DataModified",
            "$LAST_MODIFIED": _dt.datetime.now(_dt.UTC).strftime("%d-%b-%Y %H:%M:%S").upper(),
            f"{FLOWTOOLS_PREFIX}POPULATION": path,
            f"{FLOWTOOLS_PREFIX}GATE_ID": gate_id,
            f"{FLOWTOOLS_PREFIX}SAMPLE_ID": sid,
            f"{FLOWTOOLS_PREFIX}TUBE": tube,
            f"{FLOWTOOLS_PREFIX}TEMPLATE": template.name,
            f"{FLOWTOOLS_PREFIX}TEMPLATE_SHA256": template.sha256,
            f"{FLOWTOOLS_PREFIX}SOURCE_SHA256": rs.sha256,
            f"{FLOWTOOLS_PREFIX}SOURCE_EVENTS": str(s.n_events),
            f"{FLOWTOOLS_PREFIX}VERSION": __version__,
        })
        ranges = [c.pnr or 262144.0 for c in s.channels]
        if decoded:
            kw[f"{FLOWTOOLS_PREFIX}DECODED"] = ",".join(c.pnn for c in decoded)
            for c in decoded:  # a decoded channel's range is the decoded top, 10**decades * offset
                kw.pop(f"$P{c.index + 1}R", None)
                ranges[c.index] = 10.0 ** c.pne[0] * (c.pne[1] or 1.0)
        dest = out / f"{safe_name(sid)}.{safe_name(gate_id)}.fcs"
        try:
            write_fcs(dest, data, s.pnn, markers=s.pns, ranges=ranges, spillover=s.spillover, keywords=kw,
                      datatype="D" if data.dtype == np.float64 else "F")
        except ValueError as exc:  # a source keyword FCS 3.1 cannot hold (e.g. a value starting with "/")
            msg = f"{info['file']}: cannot write {dest.name}: {exc}"
            raise ExportError(msg) from None
        files[sid] = dest
        counts[sid] = int(data.shape[0])
    prov = provenance_record(inputs={"run_provenance.json": run.run_dir / "provenance.json"},
                             parameters={"population": path, "tube": tube, "run": str(run.run_dir)},
                             command="flowtools export fcs")
    prov["template"] = {"name": template.name, "sha256": template.sha256}
    manifest = out / "export_manifest.json"
    result = ExportedFCS(out, path, tube, files, counts, skipped, manifest)
    doc = {**{k: v for k, v in result.to_dict().items() if k != "manifest"},
           "files": {k: v.name for k, v in files.items()}, "provenance": prov}
    atomic_write_text(manifest, json.dumps(doc, indent=2) + "\n")
    return result
