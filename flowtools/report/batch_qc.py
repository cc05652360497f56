"""Batch QC report: is every plate on one scale, and did normalisation make a marker worse.

:func:`write_batch_qc` writes one standalone HTML page (figures embedded as PNG) from what
:func:`flowtools.analysis.normalize.apply_sheet` returns:

* **Levey-Jennings charts** of the anchor's median of every marker across batches, before
  and after normalisation, with the mean and the mean ± 2 SD and ± 3 SD lines of the
  series; a batch outside ± 2 SD is a warning, outside ± 3 SD a failure (with few batches
  the SD is itself uncertain: read the flags as "look here"). Given a populations table of a
  gate run (``sample_id, population, pct_parent``), the anchor's key populations too.
* **Drift table**: per marker, the Earth Mover's Distance between batches before and after,
  its reduction, the largest MAD change within a batch and the CytoNorm 2.0 flag (> 0.25).
* **Density overlays** per marker: every batch's distribution before and after.
* **Whole-file outliers**: a file whose marker median is far from the other files of its
  plate (robust z = (median - plate median) / (1.4826 x plate MAD), floored; |z| > 3.5).

:func:`run_normalize_demo` runs the whole thing on a small synthetic multi-plate cohort.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["file_outliers", "levey_jennings", "run_normalize_demo", "write_batch_qc",
           "write_normalization_page"]

_Z_OUTLIER = 3.5
_MAD_FLOOR = 0.05  # transformed units: a plate of near-identical files is not a plate of outliers


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def levey_jennings(values: Mapping[str, float]) -> dict[str, Any]:
    """Mean, SD and the flag of every batch of one series (batch -> value, in batch order).

    Returns
    -------
    dict
        ``mean``, ``sd`` and ``flags``: batch -> ``"ok"``, ``"warn"`` (outside ± 2 SD) or
        ``"fail"`` (outside ± 3 SD).
    """
    v = np.array(list(values.values()), dtype=np.float64)
    mean = float(v.mean()) if v.size else float("nan")
    sd = float(v.std(ddof=1)) if v.size > 1 else 0.0
    flags = {}
    for b, x in values.items():
        z = abs(x - mean) / sd if sd > 0 else 0.0
        flags[b] = "fail" if z > 3 else "warn" if z > 2 else "ok"
    return {"mean": mean, "sd": sd, "flags": flags}


def file_outliers(medians: Sequence[Mapping[str, Any]], *, key: str = "median_after") -> list[dict[str, Any]]:
    """Files whose marker median is far from the other files of their plate (robust z > 3.5).

    Parameters
    ----------
    medians : sequence of dict
        ``sample_id, plate, marker`` and ``key`` per file and marker (as ``ApplyResult.medians``).
    key : str, default "median_after"

    Returns
    -------
    list of dict
        ``sample_id, plate, marker, median, plate_median, z``, largest |z| first.
    """
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in medians:
        groups.setdefault((str(r["plate"]), str(r["marker"])), []).append(r)
    out = []
    for (plate, marker), rows in groups.items():
        if len(rows) < 3:
            continue
        v = np.array([float(r[key]) for r in rows])
        med = float(np.median(v))
        mad = max(1.4826 * float(np.median(np.abs(v - med))), _MAD_FLOOR)
        for r, x in zip(rows, v, strict=True):
            z = (x - med) / mad
            if abs(z) > _Z_OUTLIER:
                out.append({"sample_id": r["sample_id"], "plate": plate, "marker": marker,
                            "median": round(float(x), 4), "plate_median": round(med, 4),
                            "z": round(float(z), 2)})
    return sorted(out, key=lambda r: -abs(r["z"]))


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


def _lj_figure(series: Mapping[str, Mapping[str, Mapping[str, float]]], title: str) -> str:
    """series: name -> {"before"/"after": batch -> value}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(series)
    ncol = min(4, len(names)) or 1
    nrow = (len(names) + ncol - 1) // ncol or 1
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.4 * ncol, 2.4 * nrow), squeeze=False)
    for ax, name in zip(axes.ravel(), names, strict=False):
        for which, colour in (("before", "0.6"), ("after", "tab:blue")):
            vals = series[name].get(which)
            if not vals:
                continue
            lj = levey_jennings(vals)
            xs = np.arange(len(vals))
            ax.plot(xs, list(vals.values()), "o-", color=colour, label=which, ms=3)
            if which == "after" or "after" not in series[name]:
                for k, style in ((0, "-"), (2, "--"), (3, ":")):
                    for sgn in ((1,) if k == 0 else (1, -1)):
                        ax.axhline(lj["mean"] + sgn * k * lj["sd"], color="tab:red" if k else "k", ls=style,
                                   lw=0.8)
            ax.set_xticks(xs, list(vals), rotation=90, fontsize=6)
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in axes.ravel()[len(names):]:
        ax.set_visible(False)
    axes.ravel()[0].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    return _png(fig)


def _density_figure(before: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray],
                    markers: Sequence[str]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(markers)
    fig, axes = plt.subplots(n, 2, figsize=(7, 1.6 * n), squeeze=False)
    for j, m in enumerate(markers):
        allv = np.concatenate([before[b][:, j] for b in before] + [after[b][:, j] for b in after])
        lo, hi = np.quantile(allv, [0.001, 0.999]) if allv.size else (0.0, 1.0)
        bins = np.linspace(lo, hi, 80)
        for col, data in enumerate((before, after)):
            ax = axes[j, col]
            for b, x in data.items():
                h, edges = np.histogram(x[:, j], bins=bins, density=True)
                ax.plot(0.5 * (edges[1:] + edges[:-1]), h, lw=0.8, label=b)
            ax.set_yticks([])
            ax.tick_params(labelsize=6)
            ax.set_title(f"{m} {'before' if col == 0 else 'after'}", fontsize=7)
    if len(before) <= 12:
        axes[0, 1].legend(fontsize=5, ncol=2)
    fig.tight_layout()
    return _png(fig)


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], flag_col: int | None = None) -> str:
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for r in rows:
        cls = ' class="flag"' if flag_col is not None and r[flag_col] not in ("", "ok", False) else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{_e(v)}</td>" for v in r) + "</tr>")
    out.append("</table>")
    return "".join(out)


def write_batch_qc(
    path: str | os.PathLike[str],
    *,
    medians: Sequence[Mapping[str, Any]],
    drift: Sequence[Mapping[str, Any]],
    before: Mapping[str, np.ndarray],
    after: Mapping[str, np.ndarray],
    markers: Sequence[str],
    drift_anchors: Sequence[Mapping[str, Any]] = (),
    populations: Sequence[Mapping[str, Any]] = (),
    title: str = "Batch QC",
    notes: Sequence[str] = (),
) -> Path:
    """Write the batch QC page (standalone HTML, figures embedded), atomically.

    Parameters
    ----------
    path : path
        The HTML file.
    medians : sequence of dict
        Per file and marker: ``sample_id, batch, plate, anchor, marker, median_before, median_after``.
    drift, drift_anchors : sequence of dict
        :func:`flowtools.analysis.normalize.drift_table` rows (all files; anchors only).
    before, after : mapping of str to ndarray
        Batch -> values (subsample) before and after normalisation, columns in ``markers`` order.
    markers : sequence of str
    populations : sequence of dict, optional
        ``sample_id, population, pct_parent`` (e.g. a gate run's populations table) for
        Levey-Jennings charts of the anchor's populations; rows of other samples are ignored.
    title : str
    notes : sequence of str
        Paragraphs shown under the title (plain text).

    Returns
    -------
    pathlib.Path
    """
    from flowtools.provenance import atomic_write_text

    anchor_rows = [r for r in medians if r.get("anchor")]
    series: dict[str, dict[str, dict[str, float]]] = {}
    lj_rows = []
    for m in markers:
        rows = [r for r in anchor_rows if r["marker"] == m]
        s = {"before": _by_batch(rows, "median_before"), "after": _by_batch(rows, "median_after")}
        series[str(m)] = s
        for which in ("before", "after"):
            lj = levey_jennings(s[which])
            for b, fl in lj["flags"].items():
                if fl != "ok":
                    lj_rows.append([m, which, b, round(s[which][b], 4), round(lj["mean"], 4),
                                    round(lj["sd"], 4), fl])
    body = [f"<h1>{_e(title)}</h1>"] + [f"<p>{_e(n)}</p>" for n in notes]
    body.append("<h2>Levey-Jennings: the anchor's marker medians across batches</h2>")
    body.append("<p>Grey: before normalisation; blue: after, with its mean (black) and mean &plusmn; 2 SD "
                "(dashed) and &plusmn; 3 SD (dotted) lines.</p>")
    if series and anchor_rows:
        body.append(_lj_figure(series, "anchor marker medians"))
    else:
        body.append("<p>No anchor samples: no Levey-Jennings charts.</p>")
    body.append(_table(["marker", "series", "batch", "value", "mean", "SD", "flag"], lj_rows, 6)
                if lj_rows else "<p>No batch outside mean &plusmn; 2 SD.</p>")
    pop_series = _population_series(populations, anchor_rows)
    if pop_series:
        body.append("<h2>Levey-Jennings: the anchor's populations (% of parent)</h2>")
        body.append(_lj_figure(pop_series, "anchor % of parent"))
        prow = []
        for name, s in pop_series.items():
            lj = levey_jennings(s["after"])
            prow += [[name, b, round(s["after"][b], 3), round(lj["mean"], 3), round(lj["sd"], 3), fl]
                     for b, fl in lj["flags"].items()]
        body.append(_table(["population", "batch", "% of parent", "mean", "SD", "flag"], prow, 5))
    sections = (("Drift per marker (all files)", drift), ("Drift per marker (anchors)", drift_anchors))
    for head, rows in sections:
        if not rows:
            continue
        body.append(f"<h2>{_e(head)}</h2>")
        body.append("<p>EMD: the largest Earth Mover's Distance between two batches. MAD change: the largest "
                    "relative change of a marker's MAD within a batch; flagged above 0.25 (CytoNorm 2.0), or "
                    "when the EMD grew by more than 5%.</p>")
        body.append(_table(["marker", "EMD before", "EMD after", "reduction", "MAD change", "batch", "flag"],
                           [[r["marker"], r["emd_before"], r["emd_after"], f"{100 * r['emd_reduction']:.0f}%",
                             r["mad_change"], r["mad_batch"], "FLAG" if r["flagged"] else ""]
                            for r in rows], 6))
    body.append("<h2>Whole-file outliers</h2>")
    outl = file_outliers(medians)
    body.append(_table(["sample", "plate", "marker", "median", "plate median", "robust z"],
                       [[r["sample_id"], r["plate"], r["marker"], r["median"], r["plate_median"], r["z"]]
                        for r in outl], None) if outl else
                "<p>No file is far from its plate's others (|robust z| &le; 3.5).</p>")
    if before and after:
        body.append("<h2>Distributions per batch, before and after</h2>")
        body.append(_density_figure(before, after, markers))
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>" + _e(title) + "</title><style>"
            "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;font-size:12px}"
            "td,th{border:1px solid #ccc;padding:2px 6px}tr.flag{background:#fdd}img{max-width:100%}"
            "</style></head><body>" + "\n".join(body) + "</body></html>\n")
    atomic_write_text(path, page)
    return Path(path)


def _by_batch(rows: Sequence[Mapping[str, Any]], key: str) -> dict[str, float]:
    acc: dict[str, list[float]] = {}
    for r in rows:
        acc.setdefault(str(r["batch"]), []).append(float(r[key]))
    return {b: float(np.mean(v)) for b, v in sorted(acc.items())}


def _population_series(
    populations: Sequence[Mapping[str, Any]], anchor_rows: Sequence[Mapping[str, Any]]
) -> dict[str, dict[str, dict[str, float]]]:
    batch_of = {str(r["sample_id"]): str(r["batch"]) for r in anchor_rows}
    acc: dict[str, dict[str, list[float]]] = {}
    for r in populations:
        sid = str(r.get("sample_id", ""))
        v = r.get("pct_parent")
        if sid in batch_of and v not in (None, ""):
            acc.setdefault(str(r["population"]), {}).setdefault(batch_of[sid], []).append(float(v))
    return {p: {"after": {b: float(np.mean(v)) for b, v in sorted(d.items())}} for p, d in acc.items()}


def write_normalization_page(fit: Any, res: Any, path: str | os.PathLike[str], *,
                             notes: Sequence[str] = ()) -> Path:
    """The batch QC page of a fit (``fit_sheet``) and its application (``apply_sheet``)."""
    return write_batch_qc(path, medians=res.medians, drift=res.drift, drift_anchors=res.drift_anchors,
                          before=res.before, after=res.after, markers=fit.markers,
                          title="Batch QC (synthetic multi-plate cohort)",
                          notes=[*notes, f"Model {fit.model.mode}, goal {fit.model.goal}."])


def run_normalize_demo(
    out_dir: Path, *, seed: int = 0, n_plates: int = 4, n_women: int = 8, events: int = 5000,
) -> dict[str, Any]:
    """A small multi-plate cohort with a batch effect: fit, apply and the batch QC page.

    Parameters
    ----------
    out_dir : pathlib.Path
        Gets ``cohort/``, ``model.json``, ``normalized/`` and ``batch_qc.html``.
    seed, n_plates, n_women, events
        The synthetic cohort (:func:`flowtools.synth.batch.make_batch_cohort`).

    Returns
    -------
    dict
        ``emd_before`` / ``emd_after`` (marker -> EMD between batches, all files), flagged
        markers, and the paths written.
    """
    from flowtools.pipeline.demo import normalize_stage

    out = Path(out_dir)
    (fit, res), summary = normalize_stage(out, seed=seed, n_plates=n_plates, n_women=n_women, events=events)
    qc = write_normalization_page(fit, res, out / "batch_qc.html",
                                  notes=[f"{n_plates} plates, {n_women} women, one anchor donor per plate."])
    return {k: summary[k] for k in ("emd_before", "emd_after", "flagged", "unstable_clusters", "samples_csv",
                                    "model", "cohort_samples_csv")} | {"batch_qc": str(qc)}
