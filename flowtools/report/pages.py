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


def _sample_page(
    o: SampleOutcome,
    plots: Mapping[str, Any] | None,
    flags: Sequence[str],
    outliers: Sequence[dict[str, Any]],
    prev_id: str | None,
    next_id: str | None,
) -> str:
    nav = ['<a href="../index.html">\u2190 plate report</a>']
    if prev_id is not None:
        nav.append(f"previous: {_sample_link(prev_id, prefix='')}")
    if next_id is not None:
        nav.append(f"next: {_sample_link(next_id, prefix='')}")
    body = ['<nav class="pager">' + " \u00b7 ".join(nav) + "</nav>", f"<h1>Sample {_e(o.sample_id)}</h1>"]
    status = '<span class="status-ok">gated</span>' if o.ok else '<span class="status-failed">failed</span>'
    ids = [
        ("sample", _e(o.sample_id)),
        ("woman", _e(o.woman_id)),
        ("tube", _e(o.tube)),
        ("plate", _e(o.plate)),
        ("well", _e(o.well)),
        ("FCS file", _e(Path(o.file).name)),
        ("status", status),
    ]
    if o.ok:
        ids.insert(6, ("events", f"{o.n_events:,}"))
    body.append(
        '<table class="data">'
        + "".join(f'<tr><th scope="row">{k}</th><td>{v}</td></tr>' for k, v in ids)
        + "</table>"
    )
    if not o.ok:
        first, rest = _reason(o.error, o.file)
        body.append(
            f'<div class="box error"><b>Gating failed:</b> {_e(first)}'
            + (f"<pre>{_e(rest)}</pre>" if rest else "")
            + "</div>"
        )
        return _page(f"{o.sample_id} \u2014 flowtools report", body)
    for f in flags:
        body.append(f'<div class="box warn"><b>QC:</b> {_e(f)}</div>')
    for x in outliers:
        body.append(
            f'<div class="box warn"><b>Outlier:</b> {_e(x["population"])} {_pct(x["value"])}% of parent '
            f"(median {_pct(x['median'])}%, robust z {x['z']:+.1f})</div>"
        )
    for r in o.rows:
        st = r.get("status") or "ok"
        if st in ("flagged", "failed"):
            body.append(
                f'<div class="box {"error" if st == "failed" else "warn"}">{_badge(st)} '
                f'<a class="path" href="#{_pop_anchor(r["population"])}">{_e(r["population"])}</a>: '
                f"{_e(r.get('reason') or '')}</div>"
            )

    body.append("<h2>Populations</h2>")
    body.append(
        _table(
            ["population", "count", "% of parent", "% of total", "status"],
            (
                [
                    f'<span class="path" id="{_pop_anchor(r["population"])}">{_e(r["population"])}</span>',
                    f"{int(r['count']):,}" if _finite(r["count"]) else "\u2013",
                    _pct(r["pct_parent"]),
                    _pct(r["pct_total"]),
                    _status_cell(r),
                ]
                for r in o.rows
            ),
            num=(1, 2, 3),
        )
    )
    decided = _decisions_html(o.decisions)
    if decided:
        body.append('<h2 id="decisions">Gate decisions</h2>')
        body.append(
            '<p class="muted small">How each data-driven gate was set (also in <code>decisions.csv</code>): '
            "the rule that fired, the cut, the density peaks found (position, height relative to the "
            "highest), and any fallback.</p>"
        )
        body.append(decided)

    body.append("<h2>Gates</h2>")
    if plots is None:
        body.append('<div class="box warn">Gate plots were not drawn.</div>')
    else:
        if plots.get("changed"):
            body.append(
                '<div class="box warn">The FCS file changed since it was gated: the plots show the file '
                "as it is now.</div>"
            )
        if plots.get("error"):
            body.append(f'<div class="box warn"><b>Gate plots unavailable:</b> {_e(plots["error"])}</div>')
        figs = []
        folder = safe_name(o.sample_id)
        rows = {r["population"]: r for r in o.rows}
        drawn: set[str] = set()
        for plot in plots.get("plots", []):
            drawn.update(plot["populations"])
            figs.append(_figure(folder, plot, rows, o.decisions))
        for r in o.rows:  # failed populations whose gate could not be computed: said, not drawn
            if r.get("status") == "failed" and not r.get("gate_id") and r["population"] not in drawn:
                figs.append(_no_gate(r))
        if figs:
            body.append(
                "<p class=\"muted small\">Parent population's events on the gate's axes (compensated and "
                "transformed as the gate sees them; colour = log density); the gate in red. For a "
                "data-driven gate: \u25bc / \u25b2 \u25b6 the density peaks found, dotted line the cut it "
                "chose, grey dash-dot lines the range searched.</p>"
            )
            body.append('<div class="plots">' + "".join(figs) + "</div>")
    return _page(f"{o.sample_id} \u2014 flowtools report", body)


def _status_cell(r: Mapping[str, Any]) -> str:
    st = r.get("status") or "ok"
    if st == "ok":
        return '<span class="muted">ok</span>'
    return f"{_badge(st)} {_e(r.get('reason') or '')}"


def _num(v: Any) -> str:
    """A gate coordinate: 4 significant digits, whole numbers on scatter-like scales (>= 1000)."""
    if not _finite(v):
        return "\u2013"
    return f"{float(v):.0f}" if abs(v) >= 1000 else f"{float(v):.4g}"


def _peak_text(p: Sequence[Any]) -> str:
    """``[position, height, prominence]`` (relative to the top) as ``0.7 (100%)``."""
    height = f" ({100.0 * float(p[1]):.0f}%)" if _finite(p[1]) else ""
    return f"{_num(p[0])}{height}"


def _decision_text(d: Mapping[str, Any]) -> tuple[str, str, str]:
    """(rule, cut, peaks) of a decision record, plain text; per axis for a quadrant gate."""
    det = d.get("details") if isinstance(d.get("details"), Mapping) else {}
    prefixes = ("x_", "y_") if any(str(k).startswith("x_") for k in det) else ("",)
    rules, cuts, peaks = [], [], []
    for pre in prefixes:
        axis = f"{pre[0]}: " if pre else ""
        if det.get(f"{pre}rule"):
            rules.append(f"{axis}{det[f'{pre}rule']}")
        if _finite(det.get(f"{pre}cut")):
            cuts.append(f"{axis}{_num(det[f'{pre}cut'])}")
        found = det.get(f"{pre}peaks")
        if isinstance(found, list):
            pk = [_peak_text(p) for p in found if isinstance(p, list | tuple) and len(p) >= 2]
            peaks.append(f"{axis}{', '.join(pk) if pk else 'none'}")
        elif _finite(det.get(f"{pre}peak")):
            peaks.append(f"{axis}main {_num(det[f'{pre}peak'])}")
    return "; ".join(rules), "; ".join(cuts), "; ".join(peaks)


def _decisions_html(decisions: Mapping[str, Any]) -> str:
    rows = []
    for path, d in decisions.items():
        if not isinstance(d, Mapping):
            continue
        rule, cut, peaks = _decision_text(d)
        fallback = d.get("fallback")
        rule_cell = _e(rule)
        if fallback:
            rule_cell = f"{_badge('fallback')} {_e(fallback)}"
            if rule and rule not in str(fallback):
                rule_cell += f"<br>{_e(rule)}"
        ein, ekept = d.get("events_in"), d.get("events_kept")
        events = f"{ekept:,} of {ein:,}" if _finite(ein) and _finite(ekept) else (
            f"\u2013 of {ein:,}" if _finite(ein) else "\u2013")
        st = str(d.get("status") or "ok")
        reasons = "; ".join(str(x) for x in d.get("reasons") or ())
        rows.append(
            [
                f'<a class="path" href="#{_pop_anchor(path)}">{_e(path)}</a>',
                _e(d.get("method", "")),
                rule_cell or "\u2013",
                _e(cut) or "\u2013",
                _e(peaks) or "\u2013",
                events,
                (f"{_badge(st)} {_e(reasons)}" if st != "ok" else '<span class="muted">ok</span>'),
            ]
        )
    if not rows:
        return ""
    return _table(["population", "method", "rule", "cut", "peaks (height)", "events kept", "status"], rows)


def _figure(
    folder: str, plot: Mapping[str, Any], rows: Mapping[str, Mapping[str, Any]], decisions: Mapping[str, Any]
) -> str:
    """One gate plot with its caption, the badges of the populations it draws and its decision's rule."""
    caption = str(plot["caption"])
    d = decisions.get(plot["decision"]) if plot.get("decision") else None
    d = d if isinstance(d, Mapping) else None
    fallback = str(d.get("fallback") or "") if d is not None else ""
    told = False  # the fallback is said once: with the reason quoting it, else on its own line
    badges = []
    for path in plot["populations"]:
        r = rows.get(path)
        st = (r.get("status") or "ok") if r is not None else "ok"
        if st in ("flagged", "failed"):
            reason = str(r.get("reason") or "")
            who = f"{_e(path.rsplit('/', 1)[-1])}: " if len(plot["populations"]) > 1 else ""
            also = fallback and fallback in reason
            told = told or bool(also)
            mark = f"{_badge(st)} {_badge('fallback') + ' ' if also else ''}"
            badges.append(f'<div class="why">{mark}{who}{_e(reason)}</div>')
    extra = ""
    if d is not None:
        rule, cut, _ = _decision_text(d)
        if fallback and not told:
            badges.append(f'<div class="why">{_badge("fallback")} {_e(fallback)}</div>')
        elif rule and not fallback:
            extra = f'<div class="rule">{_e(rule)}</div>'
        if cut:
            extra += f'<div class="rule">cut {_e(cut)}</div>'
    anchor = plot["populations"][0] if plot["populations"] else None
    fig_id = f' id="{_pop_anchor(anchor)}-plot"' if anchor is not None else ""
    alt = "gate plot: " + caption + "".join(
        f"; {p} {rows[p].get('status')}" for p in plot["populations"]
        if p in rows and rows[p].get("status") in ("flagged", "failed")) + ("; fallback" if fallback else "")
    return (
        f'<figure{fig_id}><img src="{_href(folder + "/" + plot["name"])}" width="320" height="320" '
        f'alt="{_e(alt)}"><figcaption>{_e(caption)}{"".join(badges)}{extra}</figcaption></figure>'
    )


def _no_gate(r: Mapping[str, Any]) -> str:
    """The panel standing in for the plot of a failed population that has no gate."""
    why = str(r.get("reason") or "unknown reason")
    return (
        f'<figure id="{_pop_anchor(r["population"])}-plot" class="nogate">'
        f'<div class="nogate" role="img" aria-label="{_e("no gate: " + why)}">'
        f"{_badge('failed')}<p><b>no gate:</b> {_e(why)}</p></div>"
        f"<figcaption>{_e(r['population'])}</figcaption></figure>"
    )

