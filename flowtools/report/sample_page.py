"""The plate report's page for one sample: its gate plots, population table and decisions.

Strings from the run (IDs, population names, reasons) are escaped here; pages are self-contained.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flowtools.pipeline.plate import SampleOutcome
from flowtools.provenance import safe_name
from flowtools.report.pages import _badge, _e, _href, _page, _pct, _pop_anchor, _reason, _sample_link, _table
from flowtools.report.qc import _finite

__all__ = ["sample_page"]


def sample_page(
    o: SampleOutcome,
    plots: Mapping[str, Any] | None,
    flags: Sequence[str],
    outliers: Sequence[dict[str, Any]],
    prev_id: str | None,
    next_id: str | None,
) -> str:
    """One sample's page (HTML): status, QC flags and outlier notes, gate plots, populations, decisions."""
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
