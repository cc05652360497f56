"""Batch normalisation at the file level: read anchors, fit, normalise files, write them back.

:func:`fit_sheet` reads the anchors of a sample sheet (``anchor`` and ``batch`` columns,
:func:`flowtools.io.sample_sheet.check_anchors`), compensates and transforms them as a template
says, and fits a :class:`~flowtools.analysis.normalize.CytoNorm`. Several anchors in one batch
are all used: ``anchors="pooled"`` (default) pools every anchor of a batch; ``anchors="matched"``
uses only the anchor donors (the ``anchor`` cell's donor ID, else the row's woman) present in
every batch, each donor with the same number of events in every batch, so that a plate with an
extra donor, or donors in other proportions, does not pass a donor difference off as a batch
effect. :func:`normalize_sample` normalises one file and maps its values back to the raw scale
(inverse transform, then the spillover re-applied);
:func:`flowtools.analysis.normalize_apply.apply_sheet` writes what it returns for every file of
a sheet, and ``run_plate(normalize=MODEL)`` gates it without writing, so the two never differ.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flowtools.analysis.normalize_estimator import CytoNorm
from flowtools.errors import NormalizationError

__all__ = ["FitResult", "NormalizedSample", "fit_sheet", "model_template", "normalize_sample",
           "read_transformed"]

_ANCHOR_MODES = ("pooled", "matched")


@dataclass
class _Read:
    """One file read, compensated and transformed as a template says."""

    sample: Any
    resolved: Any
    x: np.ndarray
    pnn: list[str]


def _check_template(template: Any) -> None:
    """Refuse a template whose transforms are estimated per file (no common scale across batches)."""
    bad = [k for k, ts in template.transforms.items() if ts.params == "estimate"]
    if bad:
        msg = (f"template {template.name!r} ({template.source}) estimates its transform per file for {bad}; "
               "normalisation needs one scale for every file: give fixed transform parameters")
        raise NormalizationError(msg)


def read_transformed(
    file: str | os.PathLike[str], template: Any, markers: Sequence[str] | None, *, batch: str = "",
) -> _Read:
    """Read an FCS file; return its markers' values compensated and transformed as ``template`` says.

    Parameters
    ----------
    file : path
    template : flowtools.gating.templates.Template
    markers : sequence of str or None
        Markers (``$PnS``) or channels; None: the file's fluorescence parameters.
    batch : str
        For error messages.

    Returns
    -------
    _Read
        ``sample`` (the FCSSample), ``resolved`` (its :class:`ResolvedSample`), ``x``
        (n_events, n_markers) and ``pnn`` (the channel of every marker).

    Raises
    ------
    NormalizationError
        The file cannot be read, compensated or transformed, or lacks a marker (named).
    """
    import dataclasses

    from flowtools.errors import FlowtoolsError
    from flowtools.gating.templates import resolve
    from flowtools.io.fcs import read_fcs

    where = f"batch {batch!r}, file {file}" if batch else f"file {file}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a repaired file is still normalised; gating reports it
            sample = read_fcs(file)
            (res,) = resolve(dataclasses.replace(template, populations=()), [sample],
                             sample_ids=[Path(file).name])
    except (FlowtoolsError, OSError) as exc:
        msg = f"{where}: cannot be read for normalisation: {exc}"
        raise NormalizationError(msg) from None
    if res.error is not None:
        msg = f"{where}: {res.error}"
        raise NormalizationError(msg)
    if markers is None:
        fl = [c for c in sample.channels if res.kind(c.pnn) == "fluorescence"]
        named = [c for c in fl if c.pns]
        markers = [c.pns for c in named] if named else [c.pnn for c in fl]
    pnn: list[str] = []
    missing = []
    for m in markers:
        try:
            pnn.append(sample.channels[sample.channel_index(m)].pnn)
        except KeyError:
            missing.append(m)
    if missing:
        msg = (f"{where}: marker{'s' if len(missing) > 1 else ''} {missing} absent (its markers are "
               f"{[c.pns for c in sample.channels if c.pns]}, its channels {sample.pnn})")
        raise NormalizationError(msg)
    x = np.column_stack([res.values(m) for m in markers]) if markers else np.empty((sample.n_events, 0))
    return _Read(sample, res, np.asarray(x, dtype=np.float64), pnn)


@dataclass
class FitResult:
    """What :func:`fit_sheet` did.

    Attributes
    ----------
    model : CytoNorm
    path : pathlib.Path
        The model file written.
    anchors : dict of str to list of str
        Batch -> its anchors' sample IDs.
    markers : list of str
    seconds : float
    notes : list of str
        Warnings about the anchors (e.g. the batches' anchor donors differ).
    """

    model: CytoNorm
    path: Path
    anchors: dict[str, list[str]]
    markers: list[str]
    seconds: float
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (for ``--json``)."""
        m = self.model
        return {"model": str(self.path), "mode": m.mode, "goal": m.goal, "batches": m.batches_,
                "markers": self.markers, "anchors": self.anchors, "n_clusters": m.n_clusters_,
                "small_cluster": m.small_cluster, "small_clusters": m.small_clusters_,
                "fallbacks": m.fallbacks_, "unstable_clusters": m.cluster_cv_["unstable"],
                "cluster_cv": m.cluster_cv_["cv"], "notes": self.notes, "seconds": round(self.seconds, 3)}


def _template(template: Any) -> Any:
    from flowtools.gating.templates import Template, load_template

    return template if isinstance(template, Template) else load_template(template)


def fit_sheet(
    sheet: str | os.PathLike[str],
    template: Any,
    out: str | os.PathLike[str],
    *,
    markers: Sequence[str] | None = None,
    min_events: int = 1000,
    holdout: Sequence[str] = (),
    anchors: str = "pooled",
    command: str | None = None,
    **params: Any,
) -> FitResult:
    """Fit a :class:`CytoNorm` model on the anchors of a sample sheet and write it.

    Parameters
    ----------
    sheet : path
        Sample sheet with ``anchor`` (and optionally ``batch``) columns.
    template : path or Template
        Names the compensation and transforms (and the tube: only its rows are used).
    out : path
        The model file (JSON) to write.
    markers : sequence of str, optional
        Markers to normalise; default every fluorescence marker of the first anchor.
    min_events : int, default 1000
        Fewest events an anchor may have.
    holdout : sequence of str
        Sample IDs of anchors left out of the fit (for validation).
    anchors : {"pooled", "matched"}, default "pooled"
        With several anchors in a batch: ``pooled`` uses every anchor of the batch (their events
        pooled); ``matched`` uses only the anchor donors present in every batch, each donor
        subsampled (seeded) to the same number of events in every batch.
    command : str, optional
        Recorded in the provenance.
    **params
        :class:`CytoNorm` parameters (``mode``, ``goal``, ``n_clusters``...).

    Returns
    -------
    FitResult

    Raises
    ------
    NormalizationError
        A batch without an anchor, an anchor with too few events or without a marker
        (batch, file and marker named), ``matched`` anchors with no donor common to every batch;
        nothing is written then.
    """
    from flowtools.io.sample_sheet import check_anchors, read_sample_sheet
    from flowtools.provenance import file_sha256, provenance_record

    t0 = time.perf_counter()
    if anchors not in _ANCHOR_MODES:
        msg = f"anchors must be one of {list(_ANCHOR_MODES)}, not {anchors!r}"
        raise ValueError(msg)
    t = _template(template)
    _check_template(t)
    sh = read_sample_sheet(sheet, tubes=None)
    tube = t.tube if t.tube and any(r.tube == t.tube for r in sh.rows) else None
    found = check_anchors(sh, tube=tube)
    held = set(holdout)
    picked: dict[str, list[Any]] = {}
    for b, rows in found.items():
        rows = [r for r in rows if r.sample_id not in held]
        if not rows:
            msg = f"{sh.path}: batch {b!r} has no anchor left once the held-out anchors are set aside"
            raise NormalizationError(msg)
        picked[b] = rows
    donors = {b: sorted({str(r.anchor_id) for r in rows}) for b, rows in picked.items()}
    if anchors == "matched":
        common = set.intersection(*(set(d) for d in donors.values())) if donors else set()
        if not common:
            msg = (f"{sh.path}: anchors='matched' needs an anchor donor present in every batch; the batches' "
                   f"anchor donors are {donors}")
            raise NormalizationError(msg)
        picked = {b: [r for r in rows if str(r.anchor_id) in common] for b, rows in picked.items()}
    reads: dict[str, list[tuple[Any, np.ndarray]]] = {}
    inputs: dict[str, str] = {}
    for b, rows in picked.items():
        for r in rows:
            rd = read_transformed(r.file, t, markers, batch=b)
            if markers is None:
                markers = _marker_names(rd)
            if rd.x.shape[0] < min_events:
                msg = (f"batch {b!r}, anchor {r.sample_id} ({r.file}): {rd.x.shape[0]} events, fewer than "
                       f"the {min_events} an anchor needs (min_events)")
                raise NormalizationError(msg)
            reads.setdefault(b, []).append((r, rd.x))
            inputs[r.sample_id] = str(r.file)
    if anchors == "matched":
        data = _balance_donors(reads, int(params.get("random_state", 0)))
    else:
        data = {b: [x for _, x in v] for b, v in reads.items()}
    used = {b: [r.sample_id for r, _ in v] for b, v in reads.items()}
    model = CytoNorm(**params).fit(data, list(markers or []))
    prov = provenance_record(
        inputs=inputs, parameters={**model.get_params(), "markers": list(model.markers_), "anchors": anchors,
                                   "min_events": int(min_events), "holdout": sorted(held)},
        template=t.source if t.source and Path(t.source).is_file() else None,
        seed=int(model.random_state), command=command)
    prov["sample_sheet"] = {"path": str(Path(sheet)), "sha256": file_sha256(sheet)}
    prov["anchors"] = {b: [{"sample_id": r.sample_id, "donor": str(r.anchor_id), "file": Path(r.file).name,
                            "sha256": prov["inputs"][r.sample_id], "events_used": int(x.shape[0])}
                           for (r, _), x in zip(v, data[b], strict=True)] for b, v in reads.items()}
    prov["anchor_mode"] = anchors
    prov["template_info"] = {"name": t.name, "tube": t.tube, "source": str(t.source), "sha256": t.sha256,
                             "compensation": t.compensation}
    path = model.save(out, provenance=prov)
    model.provenance_ = prov
    sets = {tuple(d) for d in donors.values()}
    notes = []
    if anchors == "pooled" and len(sets) > 1:
        notes.append(f"the batches' anchor donors differ ({donors}): a donor difference is learnt as a batch "
                     "effect; anchors='matched' uses only the donors every batch has")
    return FitResult(model, path, used, list(model.markers_), time.perf_counter() - t0, notes)


def _balance_donors(reads: dict[str, list[tuple[Any, np.ndarray]]], seed: int) -> dict[str, list[np.ndarray]]:
    """Every (batch, donor) subsampled to the smallest (batch, donor) event count: the same donor mix."""
    per: dict[tuple[str, str], int] = {}
    for b, v in reads.items():
        for r, x in v:
            key = (b, str(r.anchor_id))
            per[key] = per.get(key, 0) + x.shape[0]
    n = min(per.values())
    # a donor's n events split between its aliquots in proportion to their sizes, by largest
    # remainder, so that every (batch, donor) keeps exactly n
    take: dict[tuple[str, int], int] = {}
    for b, v in reads.items():
        for donor in {str(r.anchor_id) for r, _ in v}:
            idx = [i for i, (r, _) in enumerate(v) if str(r.anchor_id) == donor]
            exact = np.array([n * v[i][1].shape[0] / per[(b, donor)] for i in idx])
            k = np.floor(exact).astype(int)
            k[np.argsort(k - exact, kind="stable")[: n - int(k.sum())]] += 1
            take.update({(b, i): int(j) for i, j in zip(idx, k, strict=True)})
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {}
    for b, v in reads.items():
        for i, (_, x) in enumerate(v):
            # not subsample_index: it skips the draw when every event is kept, which would change the
            # draws of the files after this one (and so every model fitted with anchors="matched")
            keep = np.sort(rng.choice(x.shape[0], take[(b, i)], replace=False))
            out.setdefault(b, []).append(x[keep])
    return out


def _marker_names(rd: _Read) -> list[str]:
    s = rd.sample
    names = []
    for p in rd.pnn:
        ch = s.channels[s.channel_index(p)]
        names.append(ch.pns or ch.pnn)
    return names


_KEEP_KEYWORDS = ("$CYT", "$CYTSN", "$DATE", "$BTIM", "$ETIM", "$TIMESTEP")  # never free text ($SRC, $OP...)


def model_template(model: CytoNorm, template: Any = None) -> Any:
    """The template a model is applied with: ``template``, or the one its provenance names; checked.

    Parameters
    ----------
    model : CytoNorm
        A fitted model (its ``provenance_`` names the template it was fitted with).
    template : path or Template, optional
        Default: the template file recorded in the model.

    Returns
    -------
    flowtools.gating.templates.Template

    Raises
    ------
    NormalizationError
        No template given and the recorded one is not there; the template is not the one the
        model was fitted with (its SHA-256 differs); or it estimates its transforms per file.
    """
    info = (getattr(model, "provenance_", {}) or {}).get("template_info") or {}
    if template is None:
        src = info.get("source")
        if not src or not Path(src).is_file():
            msg = (f"the normalisation model does not name a template file that exists ({src!r}); "
                   "give the template (-t)")
            raise NormalizationError(msg)
        template = src
    t = _template(template)
    _check_template(t)
    if info.get("sha256") and info["sha256"] != t.sha256:
        msg = (f"template {t.source} is not the one the model was fitted with ({info.get('source')}, "
               f"sha256 {info['sha256'][:12]}...): the transformed scale would differ")
        raise NormalizationError(msg)
    return t


@dataclass
class NormalizedSample:
    """One file normalised for its batch (:func:`normalize_sample`).

    Attributes
    ----------
    read : _Read
        The file as read, compensated and transformed (``read.x``: the values before).
    after : ndarray, shape (n_events, n_markers)
        The normalised transformed values (columns: the model's markers).
    raw : ndarray, shape (n_events, n_channels)
        Every channel back on the file's raw (uncompensated, untransformed) scale.
    keywords : dict of str to str
        The TEXT keywords the normalised file carries (never free text).
    """

    read: _Read = field(repr=False)
    after: np.ndarray = field(repr=False)
    raw: np.ndarray = field(repr=False)
    keywords: dict[str, str]

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the normalised file (FCS 3.1, float32; atomically)."""
        from flowtools.io.fcs_write import write_fcs

        s = self.read.sample
        return write_fcs(path, self.raw, s.pnn, markers=[c.pns or None for c in s.channels],
                         ranges=[c.pnr or 262144.0 for c in s.channels], spillover=s.spillover,
                         keywords=self.keywords)

    def to_sample(self) -> Any:
        """The normalised file as :func:`~flowtools.io.fcs.read_fcs` reads it back, in memory.

        Written and read back (a temporary file), so that it is the sample of the file
        :func:`apply_sheet` writes to the last bit (float32 storage, keywords, scaling).
        """
        from flowtools.io.fcs import read_fcs

        with tempfile.TemporaryDirectory(prefix="flowtools-norm-") as d:
            data = self.write(Path(d) / "sample.fcs").read_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return read_fcs(data)


def normalize_sample(
    file: str | os.PathLike[str],
    model: CytoNorm,
    batch: str,
    *,
    template: Any = None,
    checked: bool = False,
) -> NormalizedSample:
    """Normalise one FCS file for its batch, as :func:`apply_sheet` does for each file of a sheet.

    The file is compensated and transformed as the model's template says, its markers go
    through the model's map for ``batch``, and every channel goes back to the raw scale
    (inverse transform, spillover re-applied). :func:`apply_sheet` writes
    :meth:`NormalizedSample.write`; a gate run (``run_plate(normalize=...)``) gates
    :meth:`NormalizedSample.to_sample`: the same function, so the two never differ.

    Parameters
    ----------
    file : path
    model : CytoNorm
        A fitted model.
    batch : str
        The file's batch (the sample sheet's ``batch``, by default its plate).
    template : path or Template, optional
        Default: the template recorded in the model (its hash must match).
    checked : bool, default False
        ``template`` is already :func:`model_template`'s (skip the check).

    Returns
    -------
    NormalizedSample

    Raises
    ------
    NormalizationError
        The batch is not in the model, the file lacks a marker of the model, the template is
        not the model's (batch, file and marker named).
    """
    t = template if checked else model_template(model, template)
    where = f"batch {batch!r}, file {file}"
    if batch not in model.batches_:
        msg = (f"{where}: batch {batch!r} is not in the normalisation model (fitted on batches "
               f"{model.batches_}); fit a model with an anchor of this batch")
        raise NormalizationError(msg)
    rd = read_transformed(file, t, model.markers_, batch=batch)
    y = model.transform(rd.x, batch, where=where)
    raw = _back_to_raw(rd, t, y)
    s = rd.sample
    kw = {k: s.keywords[k] for k in _KEEP_KEYWORDS if s.keywords.get(k)}
    kw["FLOWTOOLS NORMALIZED"] = f"CytoNorm {model.mode}, batch {batch}"
    return NormalizedSample(rd, y, raw, kw)


def _transform_of(t: Any, rd: _Read, marker: str, pnn: str) -> Any:
    kind = rd.resolved.kind(pnn)
    spec = t.transforms.get(marker) or t.transforms.get(pnn) or t.transforms.get(kind)
    return None if spec is None or spec.kind == "none" else spec.build(None)


def _back_to_raw(rd: _Read, t: Any, y: np.ndarray) -> np.ndarray:
    """Normalised transformed values -> the file's raw (uncompensated, untransformed) scale, every channel."""
    from flowtools.compensation import SpilloverMatrix
    from flowtools.gating.gates import FCS_COMPENSATION, UNCOMPENSATED

    s = rd.sample
    comp = np.column_stack([np.asarray(rd.resolved.channel(p), dtype=np.float64) for p in s.pnn])
    for j, (m, p) in enumerate(zip(_marker_names_or(rd), rd.pnn, strict=True)):
        tr = _transform_of(t, rd, m, p)
        comp[:, s.pnn.index(p)] = y[:, j] if tr is None else np.asarray(tr.inverse(y[:, j]), dtype=np.float64)
    if t.compensation == UNCOMPENSATED:
        return comp
    matrix = (SpilloverMatrix.from_fcs(s) if t.compensation == FCS_COMPENSATION
              else SpilloverMatrix.from_csv(t.compensation))
    return matrix.inverse_apply(comp, s.pnn)


def _marker_names_or(rd: _Read) -> list[str]:
    return _marker_names(rd)
