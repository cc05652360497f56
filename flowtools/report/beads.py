"""Bead-array report (one self-contained HTML page per run) and the demo's bead stage.

:func:`write_bead_report` shows, per plate: the plate heatmap (fewest beads in any region
per well, and one analyte's concentration), the standard-curve QC table, every analyte's
standard curve with the plate's samples on it (LLOQ/ULOQ marked), bead-identification
plots for a few wells (log-scatter coloured by bead group; classification histogram per
group with the regions found), and the wells with flags. Figures are PNG embedded as
base64; every string from the data is HTML-escaped.

:func:`beads_stage` is the demo stage: a synthetic bead plate (per 78 women) for a
cohort's women, the plate run, the report and the RM vs control comparison of analytes.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["beads_stage", "write_bead_report"]

_CSS = """body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1180px;padding:16px 24px;
color:#1f2933;font-size:14px}h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #d9dee3;
margin-top:28px}table{border-collapse:collapse;font-size:12px;margin:6px 0}td,th{border-bottom:1px solid
#e4e7eb;padding:2px 8px;text-align:left}th{background:#f5f7fa}td.num{text-align:right;
font-variant-numeric:tabular-nums}
.bad{color:#b42318;font-weight:600}.muted{color:#616e7c}img{max-width:100%}"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72)
    plt.close(fig)
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return ""
        return f"{v:.4g}"
    return str(v)


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cls = ' class="num"' if isinstance(v, int | float) and not isinstance(v, bool) else ""
            text = _e(_fmt(v))
            if c in ("flags", "flag") and v not in ("", "ok"):
                text = f'<span class="bad">{text}</span>'
            cells.append(f"<td{cls}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _heatmap(res: Any, plate: str, analyte: str) -> str:
    import matplotlib.pyplot as plt

    beads = np.full((8, 12), np.nan)
    conc = np.full((8, 12), np.nan)
    for r in res.well_rows:
        if r["plate"] != plate:
            continue
        i, j = "ABCDEFGH".index(r["well"][0]), int(r["well"][1:]) - 1
        beads[i, j] = np.nanmin([beads[i, j], r["beads"]]) if np.isfinite(beads[i, j]) else r["beads"]
        if r["analyte"] == analyte and r["role"] == "sample" and r["concentration"] > 0:
            conc[i, j] = math.log10(r["concentration"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
    for ax, m, title in (
        (axes[0], beads, "fewest beads in any region"),
        (axes[1], conc, f"log10 {analyte} ({res.panel.units}), samples in range"),
    ):
        im = ax.imshow(m, cmap="viridis", aspect="auto")
        ax.set_xticks(range(12), [str(k + 1) for k in range(12)])
        ax.set_yticks(range(8), list("ABCDEFGH"))
        ax.set_title(title, fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.04)
    return _png(fig)


def _curves_figure(res: Any, plate: str) -> str:
    """Every analyte's standards, curve, LLOQ/ULOQ and samples, on log10-log10 axes (linear axes: fast)."""
    import matplotlib.pyplot as plt

    analytes = res.panel.analytes
    ncol = 5
    nrow = math.ceil(len(analytes) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.0 * ncol, 2.5 * nrow), squeeze=False)
    l10 = np.log10
    for k, a in enumerate(analytes):
        ax = axes[k // ncol][k % ncol]
        cv = res.curves.get((plate, a))
        ax.set_title(a, fontsize=9)
        ax.tick_params(labelsize=7)
        if cv is None:
            continue
        x, y = cv.points
        pos = (x > 0) & (y > 0)
        if not pos.any() or cv.fit is None:
            ax.text(
                0.5,
                0.5,
                "no curve: " + ";".join(cv.flags),
                transform=ax.transAxes,
                ha="center",
                fontsize=7,
                color="#b42318",
            )
            if pos.any():
                ax.plot(l10(x[pos]), l10(y[pos]), "o", ms=3, color="#1f77b4")
            continue
        lo, hi = x[pos].min() / 4, x[pos].max() * 4
        ax.plot(l10(x[pos]), l10(y[pos]), "o", ms=3, color="#1f77b4")
        blanks = y[(x == 0) & (y > 0)]
        ax.plot(np.full(len(blanks), l10(lo)), l10(blanks), ">", ms=3, color="#999")
        xs = np.geomspace(lo, hi, 120)
        ys = cv.fit.predict(xs)
        ok = ys > 0
        ax.plot(l10(xs[ok]), l10(ys[ok]), "-", lw=1, color="#333")
        for lim in (cv.lloq, cv.uloq):
            if math.isfinite(lim):
                ax.axvline(l10(lim), color="#d62728", lw=0.7, ls="--")
        sx, sy, fx = [], [], []
        for r in res.well_rows:
            if r["plate"] == plate and r["analyte"] == a and r["role"] == "sample" and r["mfi"] > 0:
                if r["concentration"] > 0:
                    sx.append(r["concentration"] / r["dilution"])
                    sy.append(r["mfi"])
                elif "LLOQ" in r["flag"] or "ULOQ" in r["flag"]:
                    fx.append(r["mfi"])
        if sx:
            ax.plot(l10(sx), l10(sy), "x", ms=3, color="#2ca02c")
        if fx:  # out of range: marked on the right edge at their MFI
            ax.plot(np.full(len(fx), l10(hi)), l10(fx), "<", ms=3, color="#ff7f0e")
    for k in range(len(analytes), nrow * ncol):
        axes[k // ncol][k % ncol].axis("off")
    fig.text(0.5, 0.01, f"log10 concentration in the well ({res.panel.units})", ha="center", fontsize=9)
    fig.text(0.005, 0.5, "log10 MFI", va="center", rotation=90, fontsize=9)
    fig.subplots_adjust(hspace=0.45, wspace=0.3)
    return _png(fig)


def _ident_figure(res: Any, sample_id: str) -> str:
    import matplotlib.pyplot as plt

    ev, pnn = res.events[sample_id]
    wi = res.identification[sample_id]
    p = res.panel
    sx, sy, ci = pnn.index(p.scatter[0]), pnn.index(p.scatter[1]), pnn.index(p.classification)
    n_g = len(p.groups)
    fig, axes = plt.subplots(1, 1 + n_g, figsize=(3.3 * (1 + n_g), 2.6))
    ax = axes[0]
    lx, ly = np.log10(np.clip(ev[:, sx], 1, None)), np.log10(np.clip(ev[:, sy], 1, None))
    ax.plot(lx[wi.group_labels < 0], ly[wi.group_labels < 0], ",", color="#bbb", label="out")
    for g in range(n_g):
        m = wi.group_labels == g
        ax.plot(lx[m], ly[m], ",", label=p.groups[g].name)
    ax.set_xlabel(f"log10 {p.scatter[0]}", fontsize=8)
    ax.set_ylabel(f"log10 {p.scatter[1]}", fontsize=8)
    ax.legend(fontsize=6, markerscale=5)
    v = np.arcsinh(ev[:, ci] / p.classification_cofactor)
    analytes = p.analytes
    for g, grp in enumerate(p.groups):
        ax = axes[1 + g]
        m = wi.group_labels == g
        if not m.any():
            continue
        h, edges = np.histogram(v[m], bins=120)
        ax.stairs(h, edges, fill=True, color="#ccc")
        for r in grp.regions:
            sel = wi.region_labels == analytes.index(r.analyte)
            if sel.any():
                ax.stairs(np.histogram(v[sel], bins=edges)[0], edges, fill=True, alpha=0.7)
        dec = wi.groups[g]
        for pk in dec.peaks:
            ax.axvline(pk, color="#333", lw=0.5)
        miss = [a for a, d in dec.regions.items() if d["status"] != "ok"]
        ax.set_title(f"group {grp.name}" + (f" (flag: {', '.join(miss)})" if miss else ""), fontsize=8)
        ax.set_xlabel(f"asinh({p.classification}/{p.classification_cofactor:g})", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.subplots_adjust(wspace=0.3, bottom=0.2)
    return _png(fig)


def write_bead_report(res: Any, path: str | os.PathLike[str], *, analyte: str | None = None) -> Path:
    """Write the HTML report of a :class:`~flowtools.beads.plate.BeadPlateResult` (atomically).

    Parameters
    ----------
    res : BeadPlateResult
    path : path
        The HTML file.
    analyte : str, optional
        Analyte of the concentration heatmap (default: the panel's first).

    Returns
    -------
    pathlib.Path
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from flowtools.provenance import atomic_write_text

    panel = res.panel
    analyte = analyte or panel.analytes[0]
    s = res.summary()
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{_e('Bead plate report: ' + panel.name)}"
        f"</title><style>{_CSS}</style></head><body>",
        f"<h1>Bead array: {_e(panel.name)}</h1>",
        f"<p class='muted'>{_e(s['wells'])} wells, {_e(len(s['plates']))} plate(s), "
        f"{_e(len(panel.analytes))} analytes ({_e(panel.units)}); failed wells: {_e(s['failed_wells'])}; "
        f"curves with a quantifiable range: {_e(s['curves_ok'])}/{_e(s['curves'])}. Outside LLOQ-ULOQ a "
        "sample has no concentration, only its flag and the limit.</p>",
    ]
    if res.plate_errors or res.well_errors:
        parts.append("<h2>Errors</h2><ul>")
        parts += [
            f"<li class='bad'>{_e(m)}</li>" for m in [*res.plate_errors.values(), *res.well_errors.values()]
        ]
        parts.append("</ul>")
    if len(s["plates"]) > 1:  # the kit's drift: top-standard MFI and LLOQ per analyte across plates
        parts.append("<h2>Across plates: top-standard MFI (LLOQ-ULOQ)</h2>")
        rows_x = []
        for a in panel.analytes:
            row: dict[str, Any] = {"analyte": a}
            for plate in s["plates"]:
                cv = res.curves.get((plate, a))
                r = cv.row() if cv is not None else {}
                row[plate] = (
                    f"{_fmt(r.get('top_standard_mfi', ''))} ({_fmt(r.get('lloq', ''))}-"
                    f"{_fmt(r.get('uloq', ''))})"
                )
            rows_x.append(row)
        parts.append(_table(rows_x, ["analyte", *s["plates"]]))
    for plate in s["plates"]:
        parts.append(f"<h2>Plate {_e(plate)}</h2>")
        parts.append(_heatmap(res, plate, analyte))
        rows = [c.row() for (p, _a), c in res.curves.items() if p == plate]
        parts.append("<h3>Standard-curve QC</h3>")
        parts.append(
            _table(
                rows,
                [
                    "analyte",
                    "model",
                    "status",
                    "r2",
                    "residual_cv",
                    "lloq",
                    "uloq",
                    "top_standard_mfi",
                    "levels_passing",
                    "flags",
                ],
            )
        )
        std = [x for (p, _a), c in res.curves.items() if p == plate for x in c.standards]
        parts.append("<details><summary>Recovery and replicate CV per standard</summary>")
        parts.append(
            _table(
                std,
                [
                    "analyte",
                    "level",
                    "nominal",
                    "wells",
                    "mean_mfi",
                    "cv_pct",
                    "back_calculated",
                    "recovery_pct",
                    "passes",
                    "flags",
                ],
            )
        )
        parts.append(
            "</details><h3>Standard curves (blue: standards; green: samples in range; orange lines: "
            "samples out of range; red dashes: LLOQ/ULOQ)</h3>"
        )
        parts.append(_curves_figure(res, plate))
        parts.append("<h3>Bead identification (a few wells)</h3>")
        for w in res.wells:
            if w.plate == plate and w.sample_id in res.events:
                parts.append(f"<p>{_e(w.well)} {_e(w.sample_id)} ({_e(w.role)})</p>")
                parts.append(_ident_figure(res, w.sample_id))
        flagged = [
            r
            for r in res.well_rows
            if r["plate"] == plate and r["flag"] not in ("ok",) and r["role"] == "sample"
        ]
        parts.append(f"<h3>Flagged sample values ({len(flagged)})</h3>")
        parts.append(_table(flagged[:300], ["well", "sample_id", "analyte", "beads", "mfi", "flag", "limit"]))
    parts.append("</body></html>")
    out = Path(path)
    atomic_write_text(out, "\n".join(parts))
    return out


def beads_stage(
    cohort_dir: Path, out_dir: Path, *, seed: int = 0, events_per_well: int = 2500
) -> dict[str, Any]:
    """The demo's bead stage: synthetic bead plate(s) for a cohort's women, run, report, comparison.

    Parameters
    ----------
    cohort_dir : path
        A :func:`flowtools.synth.make_cohort` folder (``clinical.csv``, ``truth/effects.json``).
    out_dir : path
        Gets ``plates/<id>/`` (synthetic FCS files, sheets, truth), ``samples.csv`` (all plates),
        ``results/`` (tables), ``report.html`` and ``analytes_comparison.csv``.
    seed : int
    events_per_well : int

    Returns
    -------
    dict
        The run's summary plus ``per_woman`` (path of the per-woman table), ``report``,
        ``comparison``, ``seconds``.
    """
    from flowtools.pipeline.demo import bead_array_stage

    t0 = time.perf_counter()
    out = Path(out_dir)
    res, summary = bead_array_stage(Path(cohort_dir), out, seed=seed, events_per_well=events_per_well)
    report = write_bead_report(res, out / "report.html")
    return {
        **res.summary(),
        "per_woman": summary["per_woman"],
        "report": str(report),
        "comparison": summary["comparison"],
        "seconds": round(time.perf_counter() - t0, 2),
    }
