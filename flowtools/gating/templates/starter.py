"""A starting template for a new panel, written from one FCS file's channels and markers.

``flowtools template init FILE.fcs`` writes it: QC (time), margin, cells, singlets, live (with a
viability dye), lymphocytes and one threshold per marker on flow files; asinh, DNA and event-length
gates and the marker thresholds on mass cytometry files.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["MASS_COFACTOR", "starter_template"]


# Marker names of viability (live/dead) dyes.
_VIABILITY = re.compile(
    r"viab|\blive\b|\bdead\b|live/dead|live-dead|7-?aad|\bdapi\b|^\s*pi\s*$|propidium|zombie|\baqua\b|"
    r"fixable|\bl/d\b|\bld\b|\bfvs\d*\b|\bfvd\b|sytox|ghost dye|draq-?7|to-?pro|cisplatin",
    re.IGNORECASE,
)
_DNA_MARKER = re.compile(r"^\s*dna\s*\d*\s*$|iridium|intercalator", re.IGNORECASE)
_DNA_CHANNEL = re.compile(r"^Ir19[13]Di$")
_MASS_CHANNEL = re.compile(r"^[A-Z][a-z]?\d{2,3}Di$")
_MEASURES = {"a": "A", "area": "A", "int": "A", "h": "H", "height": "H", "peak": "H", "w": "W", "width": "W"}
_MEASURE_TOKEN = re.compile(r"(lin|log)?(a|h|w|area|height|width|int|peak)")  # Sony: "FSC LinA"
_YAML_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.+\-/]*(?: [A-Za-z0-9_.+\-/]+)*")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "none"}
_LN10 = math.log(10.0)
#: asinh cofactor for mass cytometry: values become asinh(x / 5).
MASS_COFACTOR = 5.0


def _q(text: str) -> str:
    """A YAML scalar for ``text``: plain when that reads back as the same string, else double-quoted."""
    if _YAML_PLAIN.fullmatch(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text, ensure_ascii=False)


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v))


@dataclass(frozen=True)
class _Channel:
    index: int
    pnn: str
    pns: str
    kind: str
    dim: str  # how the template names it (marker, or channel when the marker is absent or ambiguous)
    marker: bool  # has a real marker ($PnS set and not just the channel name again)
    top: float  # top of its scale (for the transform's T)


def _scatter_parts(name: str) -> tuple[str | None, str, int]:
    """(family ``"F"``/``"S"``/None, measure ``"A"``/``"H"``/``"W"``/``""``, rank: tokens, log last)."""
    low = name.lower()
    tokens = [t for t in re.split(r"[^0-9a-z]+", low) if t]
    if not tokens:
        return None, "", 0
    first = tokens[0]
    fam = None
    if re.fullmatch(r"\d*(fsc|fs)", first) or "forward" in low:
        fam = "F"
    elif re.fullmatch(r"\d*(ssc|ss|bsc)", first) or "side" in low or "back" in low:
        fam = "S"
    measure = ""
    for t in tokens[1:]:
        hit = _MEASURE_TOKEN.fullmatch(t)
        if hit:
            measure = _MEASURES[hit.group(2)]
    logged = any(t.startswith("log") for t in tokens[1:])  # a log-amplified twin ranks after the linear one
    return fam, measure, len(tokens) + 10 * logged


def _channels(sample: Any) -> tuple[list[_Channel], str | None]:
    kinds = sample.channel_kinds()
    pnn = set(sample.pnn)
    pns_count: dict[str, int] = {}
    for c in sample.channels:
        if c.pns.strip():
            pns_count[c.pns.strip()] = pns_count.get(c.pns.strip(), 0) + 1
    out = []
    for c in sample.channels:
        pns = c.pns.strip()
        marker = bool(pns) and pns.lower() != c.pnn.lower()
        # A marker names the channel only when it is unique and no other channel's $PnN.
        use_marker = marker and pns_count[pns] == 1 and pns not in pnn
        decades, log0 = c.pne
        top = 10.0 ** decades * (log0 or 1.0) if decades > 0 else (c.pnr or 0.0)
        out.append(_Channel(c.index, c.pnn, pns, kinds.of(c.pnn), pns if use_marker else c.pnn, marker,
                            float(top)))
    return out, kinds.time


def _best(chans: list[_Channel], fam: str, measures: tuple[str, ...]) -> _Channel | None:
    """The scatter channel of a family with the most preferred measure (``""``: none), then shortest name."""
    cands = []
    for i, c in enumerate(chans):
        f, m, n = _scatter_parts(c.pnn)
        if c.kind == "scatter" and f == fam and m in measures:
            cands.append((measures.index(m), n, i, c))
    return min(cands, key=lambda t: t[:3])[3] if cands else None


def _singlet_pair(chans: list[_Channel]) -> tuple[_Channel, _Channel] | None:
    """The best area/height pair: forward scatter first, then side scatter; same name but the measure."""
    for fam in ("F", "S"):
        area = _best(chans, fam, ("A",))
        if area is None:
            continue
        stem = re.sub(r"(?i)[-_ ]?(a|area)$", "", area.pnn)
        for c in chans:
            f, m, _ = _scatter_parts(c.pnn)
            same = re.sub(r"(?i)[-_ ]?(h|height)$", "", c.pnn) == stem
            if c.kind == "scatter" and f == fam and m == "H" and same:
                return area, c
    return None


@dataclass
class _Pop:
    name: str
    parent: str
    dims: list[str]
    method: str
    args: dict[str, Any]
    role: str | None = None
    comment: str = ""


def _yaml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return _num(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_yaml_value(x) for x in v) + "]"
    return _q(str(v))


def starter_template(
    sample: Any, *, name: str, source: str, tube: str | None = None
) -> tuple[str, list[str]]:
    """A starting template (YAML text) for the channels and markers of one FCS file.

    Parameters
    ----------
    sample : FCSSample
        The file: its channels, markers, kinds and spillover, and its forward scatter values (is
        there debris to cut away?). No free-text keyword is read.
    name : str
        The template's name.
    source : str
        How the header comment names the file (its file name).
    tube : str, optional
        The sample sheet's tube the template applies to; left out (every tube) when None.

    Returns
    -------
    text : str
        The template. Flow files: qc (when a time parameter exists), margin, cells, singlets (when
        an area/height scatter pair exists), live (when a viability dye is among the markers),
        lymphocytes and one ``mindensity`` gate per marker. Mass cytometry files (no scatter,
        channels like ``Nd142Di``): asinh with cofactor 5, qc, cells on DNA, singlets on
        Event_length (those present), then the marker gates.
    notes : list of str
        What was left out and why (also written as comments in the template).
    """
    import numpy as np

    chans, time = _channels(sample)
    by_pnn = {c.pnn: c for c in chans}
    mass = any(_MASS_CHANNEL.match(c.pnn) for c in chans) and not any(
        _scatter_parts(c.pnn)[0] for c in chans if c.kind == "scatter")
    fluor = [c for c in chans if c.kind == "fluorescence"]
    notes: list[str] = []
    pops: list[_Pop] = []
    parent = "root"
    fsc_a = ssc_a = None

    def add(pop: _Pop) -> None:
        nonlocal parent
        pops.append(pop)
        parent = pop.name

    viability = next((c for c in fluor if c.marker and _VIABILITY.search(c.pns)), None)
    dna = [c for c in fluor
           if mass and (_DNA_CHANNEL.match(c.pnn) or (c.marker and _DNA_MARKER.search(c.pns)))]
    used = {id(c) for c in dna} | ({id(viability)} if viability is not None else set())
    if mass:
        event_length = next((c for c in chans if c.pnn.lower() in ("event_length", "event length")), None)
        if time is not None:
            watch = [c.dim for c in dna[:1]] + ([event_length.dim] if event_length is not None else [])
            add(_Pop("qc", parent, [by_pnn[time].dim, *watch], "qc", {}, "qc",
                     "acquisition anomalies over time (clogs, flow-rate gaps, signal drift)"))
        if dna:
            add(_Pop("cells", parent, [dna[0].dim], "mindensity",
                     {"side": "positive", "single_peak": "lower"}, None,
                     "nucleated cells: DNA (iridium intercalator) positive"))
        else:
            notes.append("no DNA (iridium) channel: no cells gate")
        if event_length is not None:
            add(_Pop("singlets", parent, [event_length.dim], "mindensity",
                     {"side": "negative", "single_peak": "upper"}, "qc",
                     "doublets have a longer event length"))
    else:
        fsc_a, ssc_a = _best(chans, "F", ("A", "", "H")), _best(chans, "S", ("A", "", "H"))
        scatter = [c for c in (fsc_a, ssc_a) if c is not None]
        if time is not None:
            add(_Pop("qc", parent, [by_pnn[time].dim, *(c.dim for c in scatter)], "qc", {}, "qc",
                     "acquisition anomalies over time (clogs, flow-rate gaps)"))
        else:
            notes.append("no time parameter: no qc gate")
        if scatter:
            add(_Pop("margin", parent, [c.dim for c in scatter], "boundary", {}, "qc",
                     "events piled at the ends of the scatter range"))
        if fsc_a is not None:
            # The debris/cells valley lies low on FSC: search the lowest fifth of the range (as the study
            # template's [2000, 50000] of 262144), not the valley between lymphocytes and larger cells.
            # A file without events there (exported pre-gated) gets the whole range.
            cells_args: dict[str, Any] = {"side": "positive", "single_peak": "lower"}
            low = [0, round(0.2 * fsc_a.top)]
            x = sample.scaled_column(fsc_a.index)
            n_low = int(np.count_nonzero((x >= low[0]) & (x <= low[1])))
            if fsc_a.top > 0 and n_low >= max(50, 0.01 * x.size):
                cells_args["range"] = low
            else:
                notes.append(f"{fsc_a.pnn}: only {n_low} events in [{low[0]}, {low[1]}] (no debris there): "
                             "the cells valley is searched over the whole range")
            add(_Pop("cells", parent, [fsc_a.dim], "mindensity", cells_args, None,
                     "debris out: the valley between debris and cells, low on FSC"))
        else:
            notes.append("no forward scatter: no cells gate")
        pair = _singlet_pair(chans)
        if pair is not None:
            add(_Pop("singlets", parent, [pair[0].dim, pair[1].dim], "singlet", {}, "qc",
                     "doublets fall below the area/height line"))
        else:
            notes.append("no scatter area/height pair: no singlets gate")
    if viability is not None:
        # one peak only: the cells are live, and the cut goes at its upper tail
        add(_Pop("live", parent, [viability.dim], "mindensity", {"side": "negative", "single_peak": "upper"},
                 None, f"viability dye {viability.pns}: dead cells take it up"))
    if not mass:
        if fsc_a is not None and ssc_a is not None:
            add(_Pop("lymphocytes", parent, [fsc_a.dim, ssc_a.dim], "gmm",
                     {"k": 3, "target": "lowest_y", "level": 0.99, "max_events": 10000}, None,
                     "the mixture component lowest on side scatter; check it, or give target: [x, y]"))
        else:
            notes.append("no forward and side scatter pair: no lymphocytes gate")
    # One threshold per marker; without any marker, one per fluorescence detector (area, not -H/-W twins).
    if any(c.marker for c in fluor):
        gated = [c for c in fluor if c.marker and id(c) not in used]
    else:
        areas = {c.pnn[:-2] for c in fluor if re.search(r"(?i)-a$", c.pnn)}
        gated = [c for c in fluor if id(c) not in used
                 and not (re.search(r"(?i)-[hw]$", c.pnn) and c.pnn[:-2] in areas)]
    taken = {p.name for p in pops}
    marker_parent = parent
    for c in gated:
        label = (c.pns if c.marker else c.pnn).replace("/", "-").strip() or c.pnn.replace("/", "-")
        gname = f"{label}+"
        if gname in taken:
            gname = f"{label} ({c.pnn.replace('/', '-')})+"
        taken.add(gname)
        pops.append(_Pop(gname, marker_parent, [c.dim], "mindensity", {"side": "positive"}))
    if not pops:
        msg = "the file has no time, scatter or fluorescence parameter to start a template from"
        raise ValueError(msg)

    # Transforms: logicle for fluorescence (T = the top of the detectors' scale), asinh for mass.
    tops = [c.top for c in fluor if c.top > 0]
    top = max(tops) if tops else 262144.0
    if mass:
        m = math.asinh(top / MASS_COFACTOR) / _LN10  # sinh(M ln 10) / T = 1 / 5: asinh(x / 5), 0..1 at T
        fl = f"{{asinh: {{T: {_num(top)}, M: {_num(m)}, A: 0}}}}"
        fl_note = f"asinh with cofactor {MASS_COFACTOR:g}: asinh(x / 5) / (M ln 10), 1 at T"
    else:
        fl = f"{{logicle: {{T: {_num(top)}, W: 0.5, M: 4.5, A: 0}}}}"
        fl_note = "T: the top of the detectors' range ($PnR)"
    spill = sample.spillover
    if spill is not None and set(spill.detectors) <= set(sample.pnn):
        comp, comp_note = "FCS", f"the file's {spill.keyword} ({len(spill.detectors)} detectors)"
    else:
        comp = "uncompensated"
        comp_note = ("the file has no spillover matrix" if spill is None
                     else f"its {spill.keyword} names detectors the file does not have")

    version = getattr(sample, "version", "")
    shown = "".join(ch if ch.isprintable() else "?" for ch in source)  # a comment stays one line
    lines = [
        "# Starting template written by `flowtools template init` from the channels and markers of",
        f"# {shown} (FCS {version}, {len(chans)} parameters{', mass cytometry' if mass else ''}).",
        "# Every gate is data-driven with default arguments: check it on your files (`flowtools template",
        "# check`, then `flowtools gate` and its report), adjust the arguments, and replace the marker",
        "# thresholds with the panel's hierarchy. Methods and arguments: `flowtools template methods`.",
        f"name: {_q(name)}",
        f"tube: {_q(tube)}" if tube is not None else
        "# tube: NAME              # the sample sheet's tube this template applies to (absent: every tube)",
        f"compensation: {comp}       # {comp_note}",
        "transforms:",
        f"  fluorescence: {fl}   # {fl_note}",
        "  scatter: none",
        "  time: none",
    ]
    for n in notes:
        lines.append(f"# note: {n}")
    lines.append("populations:")
    for p in pops:
        head = f"  - name: {_q(p.name)}"
        lines.append(f"{head:<30}# {p.comment}" if p.comment else head)
        if p.role:
            lines.append(f"    role: {p.role}")
        if p.parent != "root":
            lines.append(f"    parent: {_q(p.parent)}")
        lines.append(f"    dims: [{', '.join(_q(d) for d in p.dims)}]")
        lines.append(f"    method: {p.method}")
        if p.args:
            lines.append("    args: {" + ", ".join(f"{k}: {_yaml_value(v)}" for k, v in p.args.items()) + "}")
    return "\n".join(lines) + "\n", notes
