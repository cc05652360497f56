"""Cohort-consistent clustering of one gated population over a ``flowtools gate`` run.

The clusterer is fitted once, on a balanced subsample (the same number of events
from every sample, at most ``events_per_sample``) of one gated population on
chosen markers, and then assigns every event of every sample, so a cluster
means the same thing in every woman. Outputs (``OUT``, default
``RUN_DIR/clusters/<population>``), written atomically with provenance:

``clusters.csv`` / ``clusters.parquet``
    Long table in the gated tables' format: sample_id, woman_id, tube, plate,
    well, population (``<gated path>/cluster_NN``), cluster, label, count,
    pct_parent (% of the gated population), pct_total (% of all events), and per
    marker ``mfi_<marker>`` (median, compensated) and ``mfi_<marker>_transformed``.
``per_woman_clusters.csv`` / ``.parquet``
    Wide table: one row per woman, one ``<tube>|<population>/cluster_NN`` column of % of parent.
``cluster_annotation.csv``
    Per cluster: marker-profile label (e.g. ``CD3- CD56hi CD16-``), pooled share,
    median transformed value of each marker, and the gated population it overlaps
    best (F1, precision = share of the cluster inside the gate, recall).
``cluster_gate_overlap.csv``
    Events of every cluster inside every gated population below the clustered one.
``provenance.json``
    Also ``scale``: the template (name, tube, file, SHA-256), its compensation, and per
    clustered marker its channel, kind and transform.

Any gate run clusters: its sample sheet (whatever its name) and the template of the
population's tube are found by the SHA-256 the run's ``provenance.json`` recorded
(:func:`find_sample_sheet`, :func:`find_template`), or given. Marker values are the
gates' values: compensated and transformed exactly as that template says
(:meth:`~flowtools.gating.templates.ResolvedSample.values`), so a cluster and a gate
see the same events on the same scale. By default the fluorescence parameters (channel
kind ``fluorescence``) are clustered.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flowtools.analysis.cohort_inputs import (
    find_sample_sheet,
    find_template,
    resolve_population,
    run_record,
    run_templates,
    sample_events,
)
from flowtools.analysis.populations import descendants, read_populations
from flowtools.errors import FlowtoolsWarning, GatingError
from flowtools.io.tables import write_table
from flowtools.provenance import atomic_write_text, provenance_record, safe_name

if TYPE_CHECKING:
    from flowtools.gating.templates import Template

__all__ = ["CohortClusters", "annotate_clusters", "cluster_cohort", "find_sample_sheet", "find_template"]

_log = logging.getLogger(__name__)
ProgressCallback = Callable[[str, int, int], None]
#: Markers whose spreads differ by more than this factor are warned about (one would dominate distances).
_SPREAD_RATIO = 100.0


@dataclass
class CohortClusters:
    """What :func:`cluster_cohort` produced.

    Attributes
    ----------
    out_dir : pathlib.Path
    population : str
        Gated population path that was clustered.
    tube : str
    markers : list of str
    method : str
    model : estimator
        The fitted clusterer (:class:`~flowtools.analysis.FlowSOM` or :class:`~flowtools.analysis.HDBSCAN`).
    fit_x : ndarray of float64, shape (n_fit, n_markers)
        The balanced subsample the model was fitted on (transformed scale).
    fit_labels : ndarray of int64, shape (n_fit,)
    fit_sample : ndarray of int64, shape (n_fit,)
        Index into ``samples`` of each fitted event.
    samples : list of dict
        sample_id, woman_id, tube, plate, well, file of every clustered sample.
    table : pandas.DataFrame
        The long table (clusters.csv).
    wide : pandas.DataFrame
        The per-woman table.
    annotation : pandas.DataFrame
        One row per cluster.
    overlap : pandas.DataFrame
        Cluster x gated population event counts (long).
    embedding : ndarray of float32, shape (n_embedded, 2) or None
    embedding_index : ndarray of int64 or None
        Rows of ``fit_x`` that were embedded.
    files : dict of str to pathlib.Path
    errors : list of str
        Samples that could not be clustered (file and reason).
    scale : dict
        How the values were made (also ``provenance.json``'s ``scale``): template (name, tube,
        file, sha256), compensation, and per marker its channel, kind and transform.
    warnings : list of str
        The :class:`~flowtools.errors.FlowtoolsWarning` messages of the run (also in the provenance).
    """

    out_dir: Path
    population: str
    tube: str
    markers: list[str]
    method: str
    model: Any
    fit_x: np.ndarray
    fit_labels: np.ndarray
    fit_sample: np.ndarray
    samples: list[dict[str, Any]]
    table: Any
    wide: Any
    annotation: Any
    overlap: Any
    embedding: np.ndarray | None = None
    embedding_index: np.ndarray | None = None
    files: dict[str, Path] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    scale: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------- annotation


def _otsu(v: np.ndarray, bins: int = 128) -> float:
    hist, edges = np.histogram(v, bins=bins)
    mids = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * mids)
    mu0 = np.where(w0 > 0, m0 / np.maximum(w0, 1), 0)
    mu1 = np.where(w1 > 0, (m0[-1] - m0) / np.maximum(w1, 1), 0)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(mids[int(np.argmax(between))])


def annotate_clusters(x: np.ndarray, labels: np.ndarray, markers: Sequence[str]) -> dict[int, str]:
    """Marker-profile label of every cluster, e.g. ``'CD3- CD56hi CD16-'``.

    Per marker, an Otsu threshold on the pooled events splits negative from
    positive; a cluster whose median lies below it is ``-``. Above it, the
    cluster is ``lo`` below the 25th percentile of the positive events, ``hi``
    above their 75th percentile, else ``+``. Markers on which every cluster is
    ``-`` are left out of the labels.

    Parameters
    ----------
    x : ndarray of float64, shape (n, n_markers)
        Transformed marker values.
    labels : ndarray of int, shape (n,)
        Cluster per event (negative: noise, not labelled).
    markers : sequence of str

    Returns
    -------
    dict of int to str
    """
    clusters = [int(c) for c in np.unique(labels) if c >= 0]
    levels: dict[int, list[str]] = {c: [] for c in clusters}
    shown = []
    for j, m in enumerate(markers):
        v = x[:, j]
        t = _otsu(v)
        pos = v[v >= t]
        q25, q75 = np.percentile(pos, [25, 75]) if pos.size else (t, t)
        col = {}
        for c in clusters:
            med = float(np.median(v[labels == c]))
            col[c] = "-" if med < t else ("lo" if med < q25 else ("hi" if med > q75 else "+"))
        if any(s != "-" for s in col.values()):
            shown.append(m)
            for c in clusters:
                levels[c].append(f"{m}{col[c]}")
    return {c: " ".join(levels[c]) if levels[c] else "all markers -" for c in clusters}


# ---------------------------------------------------------------------------------------------- driver


def _make_model(method: str, n_clusters: int, seed: int, params: dict[str, Any]) -> Any:
    if method == "flowsom":
        from flowtools.analysis.som import FlowSOM

        return FlowSOM(n_clusters=n_clusters, random_state=seed, **params)
    if method == "hdbscan":
        from flowtools.analysis.density import HDBSCAN

        return HDBSCAN(random_state=seed, **params)
    msg = f"method must be 'flowsom' or 'hdbscan', not {method!r}"
    raise ValueError(msg)


def _warn(msg: str, said: list[str]) -> None:
    said.append(msg)
    warnings.warn(msg, FlowtoolsWarning, stacklevel=4)


def _template_for(
    run: Path,
    tube: str,
    template: str | os.PathLike[str] | Template | None,
    sheet_path: Path,
    said: list[str],
) -> Template:
    """The template whose compensation and transforms the gates of ``tube`` used (given or found)."""
    from flowtools.gating.templates import Template, load_template

    if template is None:
        return find_template(run, tube, search=[sheet_path.parent, sheet_path.parent.parent])
    t = template if isinstance(template, Template) else load_template(template)
    if t.tube is not None and t.tube != tube:
        msg = f"template {t.name!r} ({t.source}) is for tube {t.tube!r}, the population is of tube {tube!r}"
        raise GatingError(msg)
    recs = run_templates(run_record(run))
    rec = next((r for r in recs if r.get("tube") == tube), None) or next(
        (r for r in recs if r.get("tube") is None), None)
    if rec is not None and rec.get("sha256") and rec["sha256"] != t.sha256:
        msg = (f"template {t.source} (sha256 {t.sha256}) is not the one the run gated tube {tube!r} with "
               f"({rec['name']!r}, sha256 {rec['sha256']}); the clustered values may not be the gates' "
               "values")
        _warn(msg, said)
    return t


def _check_spreads(fit_x: np.ndarray, markers: Sequence[str], said: list[str]) -> None:
    """Warn when one marker's spread dwarfs another's (a linear scatter channel beside logicle markers)."""
    if fit_x.shape[0] < 2 or len(markers) < 2:
        return
    lo, hi = np.nanpercentile(fit_x, [1, 99], axis=0)
    spread = hi - lo
    ok = spread > 0
    if ok.sum() < 2:
        return
    big, small = int(np.argmax(np.where(ok, spread, -np.inf))), int(np.argmin(np.where(ok, spread, np.inf)))
    if spread[big] > _SPREAD_RATIO * spread[small]:
        msg = (f"on the template's scales {markers[big]!r} spreads over {spread[big]:.3g} and "
               f"{markers[small]!r} over {spread[small]:.3g} (1st-99th percentile): distances are "
               "dominated by the widest; "
               "give the wide parameter a transform in the template, or leave it out (--markers)")
        _warn(msg, said)


def cluster_cohort(
    run_dir: str | os.PathLike[str],
    *,
    population: str,
    markers: Sequence[str] | None = None,
    tube: str | None = None,
    method: str = "flowsom",
    out_dir: str | os.PathLike[str] | None = None,
    samples_csv: str | os.PathLike[str] | None = None,
    template: str | os.PathLike[str] | Template | None = None,
    n_clusters: int = 10,
    events_per_sample: int = 5000,
    embed: str | None = "umap",
    embed_events: int = 10_000,
    seed: int = 0,
    method_params: dict[str, Any] | None = None,
    progress: ProgressCallback | None = None,
) -> CohortClusters:
    """Cluster one gated population of every sample of a gate run with one model, and tabulate it.

    Works on any gate run (any tubes and templates). Every marker is clustered on the values
    the gates saw: compensated and transformed as the run's template for the tube says
    (:meth:`~flowtools.gating.templates.ResolvedSample.values`), and the population's events
    are those of each sample's resolved gates (``gates/<sample>.gating-ml.xml``).

    Parameters
    ----------
    run_dir : path
        Output folder of ``flowtools gate`` (populations.csv, gates/, provenance.json).
    population : str
        Gated population path, or its last segments (e.g. ``"lymphocytes"``).
    markers : sequence of str, optional
        Markers ($PnS) or channels ($PnN) to cluster on. Default: the fluorescence parameters
        (channel kind ``fluorescence``) of the first sample that has a marker name, by marker.
    tube : str, optional
        Tube of the population, where its path alone is ambiguous.
    method : {"flowsom", "hdbscan"}, default "flowsom"
    out_dir : path, optional
        Default ``RUN_DIR/clusters/<last population segment>``.
    samples_csv : path, optional
        The run's sample sheet (default: :func:`find_sample_sheet`, by the hash the run recorded).
    template : path or Template, optional
        The template the run gated the tube with (default: :func:`find_template`, by the hash
        the run recorded). A different file than the run's is used, with a
        :class:`~flowtools.errors.FlowtoolsWarning`.
    n_clusters : int, default 10
        Metaclusters (FlowSOM only).
    events_per_sample : int, default 5000
        Events each sample contributes to the fit (all of them when it has fewer).
    embed : {"umap", "pca"} or None, default "umap"
        2-D embedding of (part of) the fitted events, for the figures.
    embed_events : int, default 10_000
    seed : int, default 0
    method_params : dict, optional
        Further parameters of the estimator (e.g. ``{"xdim": 12}``).
    progress : callable(stage, done, total), optional

    Returns
    -------
    CohortClusters

    Raises
    ------
    GatingError
        The population is unknown or ambiguous, the template is for another tube, or no
        sample could be clustered (each sample's reason is in the message).
    FileNotFoundError
        The run folder, its sample sheet or its template is missing (the message names what
        was looked for, and where).

    Warns
    -----
    FlowtoolsWarning
        The template given is not the run's, or one marker's spread is over 100 times another's.
    """
    import pandas as pd

    from flowtools.io.sample_sheet import read_sample_sheet

    run = Path(run_dir)
    if markers is not None:
        markers = list(markers)
        if not markers:
            msg = "give at least one marker (or none at all: the fluorescence parameters)"
            raise ValueError(msg)
    pops = read_populations(run / "populations.csv")
    absent = [c for c in ("gate_id", "parent") if c not in pops.columns]
    if absent:
        msg = (f"{run / 'populations.csv'}: no {' or '.join(absent)} column (written by an older flowtools); "
               "run `flowtools gate` again")
        raise GatingError(msg)
    tube, path = resolve_population(pops, population, tube)
    sheet_path = Path(samples_csv) if samples_csv is not None else find_sample_sheet(run)
    said: list[str] = []
    tmpl = _template_for(run, tube, template, sheet_path, said)
    # Any tube (the run's templates decided which were gated); a missing file fails its sample only.
    sheet = read_sample_sheet(sheet_path, tubes=None, check_files=False)
    files = {r.sample_id: str(r.file) for r in sheet}
    in_tube = pops[pops["tube"] == tube]
    done = in_tube[in_tube["population"] == path]
    # A population that failed in a sample (the run's status column) has no gate there: say why.
    failed = done["gate_id"].isna() | (done["status"] == "failed" if "status" in done.columns else False)
    reasons = done["reason"] if "reason" in done.columns else pd.Series("", index=done.index)
    errors: list[str] = [f"{sid}: population {path!r} failed in the gate run ({reason})"
                         for sid, reason in zip(done.loc[failed, "sample_id"], reasons[failed], strict=True)]
    done = done[~failed]
    errors += [f"{sid}: not in the sample sheet {sheet_path}"
               for sid in done["sample_id"] if sid not in files]
    rows = [{"sample_id": r.sample_id, "woman_id": r.woman_id, "tube": r.tube, "plate": r.plate,
             "well": r.well, "file": files[r.sample_id]} for r in done.itertuples() if r.sample_id in files]
    # Each sample's own identities: the population's gate id, and the populations below it by their parents.
    gate_ids = dict(zip(done["sample_id"], done["gate_id"], strict=True))
    per_sample = {sid: g[["population", "gate_id", "parent"]].to_dict("records")
                  for sid, g in in_tube.groupby("sample_id", sort=False)}
    out = Path(out_dir) if out_dir is not None else run / "clusters" / safe_name(path.rsplit("/", 1)[-1])
    rng = np.random.default_rng(seed)

    per: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    for i, r in enumerate(rows):
        below = sorted((b["population"], b["gate_id"]) for b in descendants(per_sample[r["sample_id"]], path))
        try:
            p = sample_events(r, run, tmpl, gate_ids[r["sample_id"]], markers, below)
        except (GatingError, OSError, ValueError) as exc:
            text = str(exc)
            errors.append(text if text.startswith(r["file"]) else f"{r['file']}: {text}")
        else:
            per.append(p)
            kept.append(r)
            markers = p["markers"]  # the first sample's defaults hold for every sample
        if progress is not None:
            progress("read", i + 1, len(rows))
    if not per or markers is None:
        msg = f"no sample of tube {tube} could be clustered: {errors}"
        raise GatingError(msg)
    scale = per[0]["scale"]
    scale_differs = {r["sample_id"]: p["scale"] for r, p in zip(kept, per, strict=True)
                     if p["scale"] != scale}

    # Balanced subsample: the same number of events from every sample (all of a smaller one's).
    take = [np.sort(rng.choice(p["x"].shape[0], size=min(events_per_sample, p["x"].shape[0]), replace=False))
            for p in per]
    fit_x = np.ascontiguousarray(np.concatenate([p["x"][t] for p, t in zip(per, take, strict=True)]))
    fit_sample = np.concatenate([np.full(t.size, i, dtype=np.int64) for i, t in enumerate(take)])
    _check_spreads(fit_x, markers, said)
    params = dict(method_params or {})
    model = _make_model(method, n_clusters, seed, params).fit(fit_x)
    fit_labels = np.asarray(model.labels_, dtype=np.int64)
    if progress is not None:
        progress("fit", 1, 1)
    labels_per = [model.predict(p["x"]) if p["x"].shape[0] else np.zeros(0, np.int64) for p in per]
    clusters = sorted({int(c) for c in np.unique(fit_labels)}
                      | {int(c) for lab in labels_per for c in np.unique(lab)})
    names = {c: ("noise" if c < 0 else f"cluster_{c:02d}") for c in clusters}
    annot = annotate_clusters(fit_x, fit_labels, markers)

    records = []
    overlap_rows = []
    for r, p, lab in zip(kept, per, labels_per, strict=True):
        n_parent = lab.size
        for c in clusters:
            m = lab == c
            n = int(m.sum())
            rec = {**{k: r[k] for k in ("sample_id", "woman_id", "tube", "plate", "well")},
                   "population": f"{path}/{names[c]}", "cluster": names[c], "label": annot.get(c, "noise"),
                   "count": n, "pct_parent": 100.0 * n / n_parent if n_parent else float("nan"),
                   "pct_total": 100.0 * n / p["n_total"] if p["n_total"] else float("nan")}
            for j, mk in enumerate(markers):
                rec[f"mfi_{mk}"] = float(np.median(p["raw"][m, j])) if n else float("nan")
                rec[f"mfi_{mk}_transformed"] = float(np.median(p["x"][m, j])) if n else float("nan")
            records.append(rec)
            for g, gm in p["gates"].items():
                overlap_rows.append({"sample_id": r["sample_id"], "cluster": names[c], "gate": g,
                                     "both": int(np.count_nonzero(gm & m)), "cluster_n": n,
                                     "gate_n": int(np.count_nonzero(gm))})
    table = pd.DataFrame.from_records(records)
    wide = table.assign(column=table["tube"] + "|" + table["population"]).pivot_table(
        index="woman_id", columns="column", values="pct_parent", aggfunc="first")
    wide = wide.reindex(sorted(wide.columns), axis=1).reset_index()
    wide.columns.name = None
    overlap = pd.DataFrame.from_records(
        overlap_rows, columns=["sample_id", "cluster", "gate", "both", "cluster_n", "gate_n"])
    annotation = _annotation_table(fit_x, fit_labels, clusters, names, annot, markers, table, overlap)

    embedding = emb_idx = None
    if embed is not None and fit_x.shape[0] >= 3:
        emb_idx = np.sort(rng.choice(fit_x.shape[0], size=min(embed_events, fit_x.shape[0]), replace=False))
        embedding = _embed(fit_x[emb_idx], embed, seed)

    prov = provenance_record(
        inputs={"samples.csv": sheet_path, "run_provenance.json": run / "provenance.json"},
        parameters={"population": path, "tube": tube, "markers": markers, "method": method,
                    "n_clusters": n_clusters, "events_per_sample": events_per_sample,
                    "method_params": params, "embed": embed},
        template=tmpl.source if Path(tmpl.source).is_file() else None, seed=seed, command="flowtools cluster")
    # How the values were made: the gates' compensation and transforms, from the run's template.
    prov["scale"] = scale
    if scale_differs:
        prov["scale_by_sample"] = scale_differs
    prov["warnings"] = said
    prov["samples"] = [r["sample_id"] for r in kept]
    prov["errors"] = errors
    events = _event_table(kept, per, labels_per, names, annot, take, emb_idx, embedding, embed)
    written = _write(out, table, wide, annotation, overlap, prov, events)
    return CohortClusters(out, path, tube, markers, method, model, fit_x, fit_labels, fit_sample, kept, table,
                          wide, annotation, overlap, embedding, emb_idx, written, errors, scale, said)


def _annotation_table(fit_x, fit_labels, clusters, names, annot, markers, table, overlap):  # noqa: ANN001, ANN202
    import pandas as pd

    pooled = overlap.groupby(["cluster", "gate"], as_index=False)[["both", "cluster_n", "gate_n"]].sum()
    rows = []
    total = table["count"].sum()
    for c in clusters:
        name = names[c]
        sel = fit_labels == c
        n_all = int(table.loc[table["cluster"] == name, "count"].sum())
        rec: dict[str, Any] = {"cluster": name, "label": annot.get(c, "noise"), "count": n_all,
                               "pct_of_population": 100.0 * n_all / total if total else float("nan")}
        for j, mk in enumerate(markers):
            rec[f"median_{mk}"] = float(np.median(fit_x[sel, j])) if sel.any() else float("nan")
        sub = pooled[pooled["cluster"] == name]
        best = None
        if len(sub):
            f1 = 2 * sub["both"] / (sub["cluster_n"] + sub["gate_n"]).clip(lower=1)
            k = int(np.argmax(f1.to_numpy()))
            best = sub.iloc[k]
            rec.update({"best_gate": best["gate"], "f1": float(f1.iloc[k]),
                        "precision": float(best["both"] / max(best["cluster_n"], 1)),
                        "recall": float(best["both"] / max(best["gate_n"], 1))})
        else:
            rec.update({"best_gate": "", "f1": float("nan"), "precision": float("nan"),
                        "recall": float("nan")})
        rows.append(rec)
    return pd.DataFrame.from_records(rows)


def _embed(x: np.ndarray, how: str, seed: int) -> np.ndarray:
    if how == "pca":
        xc = x - x.mean(axis=0)
        _, _, vt = np.linalg.svd(xc, full_matrices=False)
        return np.ascontiguousarray((xc @ vt[:2].T).astype(np.float32))
    if how == "umap":
        from flowtools.analysis.embed import UMAP

        return UMAP(random_state=seed, max_fit_events=None).fit(x).embedding_
    msg = f"embed must be 'umap', 'pca' or None, not {how!r}"
    raise ValueError(msg)


def _event_table(kept, per, labels_per, names, annot, take, emb_idx, embedding, embed):  # noqa: ANN001, ANN202
    """One row per clustered event: sample_id, event (its row in the FCS file), cluster, label, embedding.

    The embedding (``umap_1, umap_2`` or ``pca_1, pca_2``) is NaN for events outside the
    embedded subsample. ``flowtools export anndata`` joins this by (sample_id, event).
    """
    import pandas as pd

    parts = []
    if embedding is not None:  # fit row r = sample si[r], position pos[r] among that sample's events
        offsets = np.cumsum([0, *[t.size for t in take]])
        si = np.searchsorted(offsets, emb_idx, side="right") - 1
        pos = np.concatenate(take)[emb_idx]
    for i, (r, p, lab) in enumerate(zip(kept, per, labels_per, strict=True)):
        part = pd.DataFrame({"sample_id": r["sample_id"], "event": p["events"].astype(np.int64),
                             "cluster": lab.astype(np.int64),
                             "cluster_name": [names[int(c)] for c in lab],
                             "label": [annot.get(int(c), "noise") for c in lab]})
        if embedding is not None:
            coords = np.full((lab.size, embedding.shape[1]), np.nan, dtype=np.float32)
            sel = si == i
            coords[pos[sel]] = embedding[sel]
            for d in range(embedding.shape[1]):
                part[f"{embed}_{d + 1}"] = coords[:, d]
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def _write(
    out: Path, table: Any, wide: Any, annotation: Any, overlap: Any, prov: dict[str, Any], events: Any = None
) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "clusters": write_table(table, out / "clusters", prov)[0],
        "per_woman": write_table(wide, out / "per_woman_clusters", prov)[0],
        "annotation": out / "cluster_annotation.csv",
        "overlap": out / "cluster_gate_overlap.csv",
        "provenance": out / "provenance.json",
    }
    atomic_write_text(files["annotation"], annotation.to_csv(index=False, lineterminator="\n"))
    atomic_write_text(files["overlap"], overlap.to_csv(index=False, lineterminator="\n"))
    atomic_write_text(files["provenance"], json.dumps(prov, indent=2) + "\n")
    if events is not None:  # per event: Parquet only (millions of rows)
        from flowtools.provenance import atomic_write

        files["events"] = out / "cluster_events.parquet"
        with atomic_write(files["events"], "wb") as fh:
            events.to_parquet(fh, index=False)
    _log.info("cluster tables written to %s", out)
    return files
