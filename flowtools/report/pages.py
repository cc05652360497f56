"""The plate report's HTML pages: index (plate grids, QC, gate checks, failures) and one page per sample.

Strings from the run (IDs, population names, reasons) are escaped here; pages are self-contained.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from flowtools.analysis.populations import QC_NAME_PARTS, QC_NAMES
from flowtools.gating.templates.resolve import FALLBACK_FLAG_PCT
from flowtools.pipeline.plate import PlateResult, SampleOutcome
from flowtools.provenance import safe_name
from flowtools.report.qc import (
    _COLS,
    _ROWS,
    LOW_EVENTS_SHARE,
    OUTLIER_MIN_SAMPLES,
    OUTLIER_Z,
    QC_MIN_PCT,
    _finite,
    _gate_checks,
    _key_populations,
    _well,
)


def _fmt_cell(v: Any) -> str:
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            return v
        if v.strip().lstrip("-").isdigit():
            return v
        v = f
    if isinstance(v, float):
        return "" if v != v else f"{v:.3g}"
    return "" if v is None else str(v)


# ------------------------------------------------------------------------------------------ HTML


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0 auto;
max-width:1180px;padding:16px 24px 48px;color:#1f2933;line-height:1.4;font-size:14px}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d9dee3;
padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
a{color:#0b5cad}nav{font-size:13px;margin-bottom:8px}nav a{margin-right:12px}
.muted{color:#616e7c}.small{font-size:12px}
table.data{border-collapse:collapse;margin:6px 0;font-size:13px}
table.data th,table.data td{border-bottom:1px solid #e4e7eb;padding:3px 10px;text-align:left;
vertical-align:top}
table.data th{background:#f5f7fa;font-weight:600}
table.data td.num{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0}
.card{border:1px solid #d9dee3;border-radius:6px;padding:8px 14px;min-width:96px;background:#fafbfc}
.card b{display:block;font-size:22px}.card.bad b{color:#b42318}.card.good b{color:#1a7f37}
.grids{display:flex;flex-wrap:wrap;gap:18px}
figure.grid{margin:0}figure.grid figcaption{font-weight:600;font-size:13px;margin-bottom:3px}
table.plate{border-collapse:collapse;font-size:10px;font-variant-numeric:tabular-nums}
table.plate th{font-weight:600;color:#616e7c;padding:1px 3px}
table.plate td{width:30px;height:20px;border:1px solid #d9dee3;text-align:center;padding:0}
table.plate td a{display:block;text-decoration:none;color:inherit;line-height:20px}
table.plate td.empty{background:#fff}table.plate td.other{background:#eef0f2;color:#9aa5b1}
table.plate td.fail{background:#fde2e1;color:#b42318;font-weight:700}
.legend{font-size:11px;color:#616e7c;margin-top:3px;display:flex;align-items:center;gap:6px}
.ramp{display:inline-block;width:80px;height:10px;border:1px solid #d9dee3;
background:linear-gradient(to right,#f7fbff,#08519c)}
.box{border-radius:6px;padding:8px 12px;margin:10px 0}
.box.error{background:#fde2e1;border:1px solid #f5b5b0}.box.warn{background:#fff4d6;border:1px solid #f0d58c}
.box.ok{background:#e6f4ea;border:1px solid #b7dfc2}
pre{white-space:pre-wrap;font-size:12px;margin:4px 0}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plots figure{margin:0;width:320px}
.plots img{display:block}.plots figcaption{font-size:12px;color:#616e7c}
nav.pager a{margin-right:0}
.status-ok{color:#1a7f37}.status-failed{color:#b42318;font-weight:600}
.path{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px}
.card.warn b{color:#8a5a00}
.badge{display:inline-block;border-radius:4px;padding:0 6px;font-size:11px;font-weight:700;
border:1px solid;white-space:nowrap}
.badge.flagged,.badge.fallback{background:#fff4d6;color:#8a5a00;border-color:#d9a400}
.badge.failed{background:#fde2e1;color:#b42318;border-color:#e5867d}
.plots .why{margin-top:3px;color:#1f2933}.plots .rule{margin-top:2px}
div.nogate{box-sizing:border-box;width:320px;height:320px;border:1px dashed #b42318;border-radius:6px;
background:#fdf3f2;padding:16px;display:flex;flex-direction:column;justify-content:center;gap:8px;
font-size:13px;overflow-wrap:anywhere}
table.plate td.popfail{background:#fff4d6;color:#8a5a00;font-weight:700}
"""


def _e(x: Any) -> str:
    return escape(str(x), quote=True)


def _href(name: str) -> str:
    return _e(quote(name))


def _page(title: str, body: Iterable[str]) -> str:
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(title)}</title>",
            f"<style>{_CSS}</style>",
            "</head>",
            "<body>",
            *body,
            "</body>",
            "</html>",
            "",
        ]
    )


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], *, num: Sequence[int] = ()) -> str:
    """An HTML table; cells are already-escaped HTML."""
    out = [
        '<table class="data">',
        "<thead><tr>" + "".join(f'<th scope="col">{h}</th>' for h in head) + "</tr></thead>",
        "<tbody>",
    ]
    for r in rows:
        out.append(
            "<tr>"
            + "".join(f'<td class="num">{c}</td>' if i in num else f"<td>{c}</td>" for i, c in enumerate(r))
            + "</tr>"
        )
    out.append("</tbody></table>")
    return "\n".join(out)


def _pct(x: Any) -> str:
    return f"{x:.1f}" if _finite(x) else "\u2013"


def _sample_link(sid: str, *, prefix: str = "samples/") -> str:
    return f'<a href="{_href(prefix + safe_name(sid) + ".html")}">{_e(sid)}</a>'


def _reason(error: str | None, file: str) -> tuple[str, str]:
    """(first line without the file prefix, the rest)."""
    text = (error or "unknown error").strip()
    for prefix in (f"{file}: ", f"{file}:"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    first, _, rest = text.partition("\n")
    return first, rest


def _colour(t: float) -> tuple[str, str]:
    """Background and text colour for a 0..1 position on the white-blue scale."""
    lo, hi = (0xF7, 0xFB, 0xFF), (0x08, 0x51, 0x9C)
    rgb = tuple(round(a + (b - a) * t) for a, b in zip(lo, hi, strict=True))
    return "#{:02x}{:02x}{:02x}".format(*rgb), ("#ffffff" if t > 0.55 else "#1f2933")


def _pop_anchor(path: str) -> str:
    """A unique HTML id for a population path (letters and digits kept, anything else as _hex)."""
    return "pop-" + "".join(ch if ch.isascii() and ch.isalnum() else f"_{ord(ch):x}" for ch in path)


def _badge(status: str) -> str:
    """A worded status badge (icon + word, so it never relies on colour); '' for ok."""
    if status == "failed":
        return '<span class="badge failed"><span aria-hidden="true">\u2715</span> failed</span>'
    if status == "flagged":
        return '<span class="badge flagged"><span aria-hidden="true">\u26a0</span> flagged</span>'
    if status == "fallback":
        return '<span class="badge fallback"><span aria-hidden="true">\u26a0</span> fallback</span>'
    return ""



def _gate_checks_html(checks: Sequence[dict[str, Any]]) -> list[str]:
    n_flagged = sum(c["status"] == "flagged" for c in checks)
    n_failed = sum(c["status"] == "failed" for c in checks)
    s_flagged = len({c["outcome"].sample_id for c in checks if c["status"] == "flagged"})
    s_failed = len({c["outcome"].sample_id for c in checks if c["status"] == "failed"})
    out = ['<h2 id="gate-checks">Gate checks</h2>']
    out.append(
        '<p class="muted small"><b>Flagged</b>: numbers kept, but look at the gate (a fallback kept '
        f"less than {FALLBACK_FLAG_PCT:g}% or more than {100 - FALLBACK_FLAG_PCT:g}% of its parent, or the "
        "population is outside its template's <code>expect</code>). <b>Failed</b>: no numbers (empty in "
        "the tables; its gate could not be computed, broke <code>expect</code> with "
        "<code>on_violation: fail</code>, or an ancestor failed); the rest of the sample is kept.</p>"
    )
    if not checks:
        out.append('<p class="box ok">No flagged or failed population.</p>')
        return out
    out.append(
        f'<p class="box {"error" if n_failed else "warn"}" id="gate-check-counts">'
        f"{_badge('flagged')} <b>{n_flagged:,}</b> flagged population{'s' * (n_flagged != 1)} "
        f"in {s_flagged:,} sample{'s' * (s_flagged != 1)} \u00b7 "
        f"{_badge('failed')} <b>{n_failed:,}</b> failed population{'s' * (n_failed != 1)} "
        f"in {s_failed:,} sample{'s' * (s_failed != 1)}</p>"
    )
    rows = []
    for c in checks:
        o = c["outcome"]
        href = _href("samples/" + safe_name(o.sample_id) + ".html") + "#" + _pop_anchor(c["population"])
        rows.append(
            [
                _sample_link(o.sample_id),
                _e(o.plate),
                _e(o.well),
                f'<a class="path" href="{href}">{_e(c["population"])}</a>',
                _badge(c["status"]),
                _e(c["reason"]),
            ]
        )
    out.append(_table(["sample", "plate", "well", "population", "status", "reason"], rows))
    return out


def _checks_cell(o: SampleOutcome) -> str:
    if not o.ok:
        return ""
    n_failed = sum(r.get("status") == "failed" for r in o.rows)
    n_flagged = sum(r.get("status") == "flagged" for r in o.rows)
    parts = []
    if n_failed:
        parts.append(f"{n_failed} failed")
    if n_flagged:
        parts.append(f"{n_flagged} flagged")
    return _e(", ".join(parts))


def _index_page(
    res: PlateResult,
    outcomes: Sequence[SampleOutcome],
    prov: Mapping[str, Any],
    errors_doc: Mapping[str, Any],
    flags: Mapping[str, list[str]],
    outliers: Sequence[dict[str, Any]],
    n_tested: int,
    extra: Sequence[str] = (),
) -> str:
    n_ok = sum(o.ok for o in outcomes)
    n_fail = len(outcomes) - n_ok
    skipped = list(errors_doc.get("skipped_no_template") or getattr(res, "skipped", []) or [])
    plates = sorted({o.plate for o in outcomes})
    body = ["<h1>flowtools plate report</h1>"]
    version = prov.get("version", "unknown")
    created = prov.get("created")
    body.append(
        f'<p class="muted">flowtools {_e(version)}'
        + (f" \u00b7 gated {_e(created)}" if created else "")
        + (f" \u00b7 seed {_e(prov['seed'])}" if "seed" in prov else "")
        + "</p>"
    )
    body.append(
        '<nav><a href="#gate-checks">Gate checks</a><a href="#plates">Plate overview</a>'
        '<a href="#qc">QC flags</a><a href="#outliers">Outliers</a>'
        '<a href="#failures">Failures</a><a href="#samples">All samples</a></nav>'
    )
    checks = _gate_checks(outcomes)
    n_flagged = sum(c["status"] == "flagged" for c in checks)
    n_pop_failed = sum(c["status"] == "failed" for c in checks)
    cards = [
        ("samples", len(outcomes), ""),
        ("gated", n_ok, "good"),
        ("failed", n_fail, "bad" if n_fail else ""),
        ("flagged populations", n_flagged, "warn" if n_flagged else ""),
        ("failed populations", n_pop_failed, "bad" if n_pop_failed else ""),
        ("QC flags", len(flags), "bad" if flags else ""),
        ("plates", len(plates), ""),
    ]
    if skipped:
        cards.append(("skipped (no template)", len(skipped), ""))
    body.append(
        '<div class="cards">'
        + "".join(f'<div class="card {c}"><b>{v:,}</b>{_e(k)}</div>' for k, v, c in cards)
        + "</div>"
    )
    templates = prov.get("templates") or {}
    if templates:
        body.append(
            _table(
                ["template", "tube", "file", "SHA-256"],
                (
                    [
                        _e(name),
                        _e(t.get("tube") or "any"),
                        _e(t.get("file", "")),
                        f'<span class="small muted">{_e(str(t.get("sha256", ""))[:12])}</span>',
                    ]
                    for name, t in sorted(templates.items())
                ),
            )
        )

    body.extend(_gate_checks_html(checks))

    body.append('<h2 id="plates">Plate overview</h2>')
    body.append(
        '<p class="muted small">% of parent in each well. Click a well for its sample page. '
        "Colours run from the lowest (light) to the highest (dark) value on the plate. "
        "\u2715 failed sample; ! failed population (no numbers); grey: a sample of another tube.</p>"
    )
    for plate in plates:
        on_plate = [o for o in outcomes if o.plate == plate]
        for tube in sorted({o.tube for o in on_plate}):
            members = [o for o in on_plate if o.tube == tube]
            body.append(
                f"<h3>Plate {_e(plate)} \u00b7 tube {_e(tube)} "
                f'<span class="muted small">({len(members)} samples, '
                f"{sum(not o.ok for o in members)} failed)</span></h3>"
            )
            pops = _key_populations([o for o in members if o.ok])
            if not pops:
                body.append('<p class="muted">No gated sample.</p>')
                continue
            body.append(
                '<div class="grids">' + "".join(_plate_grid(on_plate, tube, p) for p in pops) + "</div>"
            )

    body.extend(extra)
    body.append('<h2 id="qc">QC flags</h2>')
    body.append(
        '<p class="muted small">A QC clean-up gate (<code>role: qc</code> in its template; in a template '
        f"without roles, a name containing {_e(', '.join(QC_NAME_PARTS))} or named "
        f"{_e(', '.join(QC_NAMES))}) that kept less than {QC_MIN_PCT:g}% of its parent, or a well with fewer "
        f"than {LOW_EVENTS_SHARE:.0%} of its plate's median events.</p>"
    )
    by_id = {o.sample_id: o for o in outcomes}
    if flags:
        body.append(
            _table(
                ["sample", "plate", "well", "flag"],
                (
                    [
                        _sample_link(sid),
                        _e(by_id[sid].plate),
                        _e(by_id[sid].well),
                        "<br>".join(_e(f) for f in fl),
                    ]
                    for sid, fl in flags.items()
                ),
            )
        )
    else:
        body.append('<p class="box ok">No QC flag.</p>')

    body.append('<h2 id="outliers">Outliers</h2>')
    body.append(
        f'<p class="muted small">Robust z = |x \u2212 median| / (1.4826 \u00d7 MAD) above {OUTLIER_Z:g} '
        f"on % of parent, per tube and population; only populations with at least "
        f"{OUTLIER_MIN_SAMPLES} gated samples are tested ({n_tested} tested).</p>"
    )
    if outliers:
        body.append(
            _table(
                ["population", "sample", "plate", "well", "% of parent", "median", "robust z"],
                (
                    [
                        f'<span class="path">{_e(x["population"])}</span>',
                        _sample_link(x["sample_id"]),
                        _e(x["plate"]),
                        _e(x["well"]),
                        _pct(x["value"]),
                        _pct(x["median"]),
                        f"{x['z']:+.1f}",
                    ]
                    for x in outliers
                ),
                num=(4, 5, 6),
            )
        )
    elif n_tested:
        body.append('<p class="box ok">No outlier.</p>')
    else:
        body.append('<p class="muted">Too few gated samples per population to look for outliers.</p>')

    body.append('<h2 id="failures">Failures</h2>')
    errors = errors_doc.get("errors")
    if errors is None:
        errors = [{"sample_id": o.sample_id, "file": o.file, "error": o.error} for o in outcomes if not o.ok]
    if errors:
        rows = []
        for err in errors:
            file = str(err.get("file", ""))
            first, rest = _reason(err.get("error"), file)
            cell = _e(first) + (
                f"<details><summary>details</summary><pre>{_e(rest)}</pre></details>" if rest else ""
            )
            rows.append([_sample_link(str(err.get("sample_id", ""))), _e(Path(file).name), cell])
        body.append(_table(["sample", "file", "reason"], rows))
    else:
        body.append('<p class="box ok">Every sample was gated.</p>')

    body.append('<h2 id="samples">All samples</h2>')
    body.append(
        _table(
            ["sample", "woman", "tube", "plate", "well", "events", "status", "flags", "gate checks"],
            (
                [
                    _sample_link(o.sample_id),
                    _e(o.woman_id),
                    _e(o.tube),
                    _e(o.plate),
                    _e(o.well),
                    f"{o.n_events:,}" if o.ok else "\u2013",
                    '<span class="status-ok">gated</span>'
                    if o.ok
                    else '<span class="status-failed">failed</span>',
                    str(len(flags.get(o.sample_id, []))) if flags.get(o.sample_id) else "",
                    _checks_cell(o),
                ]
                for o in outcomes
            ),
            num=(5,),
        )
    )
    if skipped:
        body.append(
            f'<p class="muted small">Not gated (no template for their tube): {_e(", ".join(skipped))}</p>'
        )
    return _page("flowtools plate report", body)


def _plate_grid(on_plate: Sequence[SampleOutcome], tube: str, population: str) -> str:
    cells: dict[tuple[int, int], tuple[str, str, str, str]] = {}  # (row, col) -> class, style, text, title
    values = {}
    for o in on_plate:
        pos = _well(o.well)
        if pos is None:
            continue
        if o.tube != tube:
            cells[pos] = ("other", "", "", f"{o.sample_id} ({o.tube})")
        elif not o.ok:
            cells[pos] = ("fail", "", "\u2715", f"{o.sample_id}: failed")
        else:
            row = next((r for r in o.rows if r["population"] == population), None)
            v = row["pct_parent"] if row is not None else None
            if row is not None and row.get("status") == "failed":
                why = row.get("reason") or ""
                cells[pos] = ("popfail", "", "!", f"{o.sample_id}: {population} failed: {why}")
            elif _finite(v):
                values[pos] = (o, float(v))
            else:
                cells[pos] = ("", "", "\u2013", f"{o.sample_id}: no events in parent")
    lo = min((v for _, v in values.values()), default=0.0)
    hi = max((v for _, v in values.values()), default=0.0)
    for pos, (o, v) in values.items():
        t = 0.5 if hi == lo else (v - lo) / (hi - lo)
        bg, fg = _colour(t)
        cells[pos] = (
            "",
            f"background:{bg};color:{fg}",
            f"{v:.1f}" if v < 99.95 else "100",
            f"{o.sample_id} ({o.well}): {v:.1f}% of parent",
        )
    by_pos = {(_well(o.well) or (-1, -1)): o for o in on_plate}
    rows = ["<tr><th></th>" + "".join(f'<th scope="col">{c}</th>' for c in _COLS) + "</tr>"]
    for ri, letter in enumerate(_ROWS):
        tds = []
        for c in _COLS:
            cls, style, text, title = cells.get((ri, c), ("empty", "", "", ""))
            attrs = (f' class="{cls}"' if cls else "") + (f' style="{_e(style)}"' if style else "")
            attrs += f' title="{_e(title)}"' if title else ""
            o = by_pos.get((ri, c))
            inner = _e(text)
            if o is not None and cls != "other":
                inner = (
                    f'<a href="{_href("samples/" + safe_name(o.sample_id) + ".html")}">'
                    f'{inner or "&nbsp;"}</a>'
                )
            tds.append(f"<td{attrs}>{inner}</td>")
        rows.append(f'<tr><th scope="row">{letter}</th>' + "".join(tds) + "</tr>")
    name = population.rsplit("/", 1)[-1]
    legend = (
        f'<div class="legend">{_pct(lo)}% <span class="ramp"></span> {_pct(hi)}%</div>'
        if values
        else '<div class="legend">no values</div>'
    )
    return (
        f'<figure class="grid"><figcaption>{_e(name)} <span class="muted small">% of parent \u00b7 '
        f'{_e(population)}</span></figcaption><table class="plate">{"".join(rows)}</table>{legend}</figure>'
    )
