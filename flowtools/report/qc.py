"""The plate report's checks of a run's outcomes: QC flags, outliers, key populations, gate checks."""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flowtools.analysis.populations import qc_populations
from flowtools.pipeline.plate import SampleOutcome

#: A QC gate keeping less than this % of its parent is flagged.
QC_MIN_PCT = 85.0
#: A well with fewer events than this share of its plate's median is flagged.
LOW_EVENTS_SHARE = 0.2
#: |x - median| / (1.4826 MAD) above this is an outlier.
OUTLIER_Z = 3.5
#: Outliers are looked for only in populations with at least this many gated samples.
OUTLIER_MIN_SAMPLES = 5
#: Plate grids drawn per tube: the first populations in template order that are not QC gates.
KEY_POPULATIONS = 6

_ROWS = "ABCDEFGH"
_COLS = range(1, 13)


# ------------------------------------------------------------------------------------------ analysis


def _read_json(path: Path | None) -> dict[str, Any]:
    if path is None or not Path(path).is_file():
        return {}
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def _qc_flags(outcomes: Sequence[SampleOutcome]) -> dict[str, list[str]]:
    """Sample id -> QC flags (plain text)."""
    flags: dict[str, list[str]] = {}
    for o in outcomes:
        if not o.ok:
            continue
        qc = qc_populations(o.rows)  # the template's roles, else the population names
        for r in o.rows:
            if r["population"] in qc and _finite(r["pct_parent"]) and r["pct_parent"] < QC_MIN_PCT:
                flags.setdefault(o.sample_id, []).append(
                    f"{r['population']} kept {r['pct_parent']:.1f}% of its parent (below {QC_MIN_PCT:g}%)"
                )
    by_plate: dict[str, list[SampleOutcome]] = {}
    for o in outcomes:
        if o.ok:
            by_plate.setdefault(o.plate, []).append(o)
    for plate, members in by_plate.items():
        median = statistics.median(o.n_events for o in members)
        for o in members:
            if o.n_events < LOW_EVENTS_SHARE * median:
                flags.setdefault(o.sample_id, []).append(
                    f"low events: {o.n_events:,} (plate {plate} median {median:,.0f}; "
                    f"below {LOW_EVENTS_SHARE:.0%})"
                )
    return flags


def _outliers(outcomes: Sequence[SampleOutcome]) -> tuple[list[dict[str, Any]], int]:
    """Robust-z outliers on % of parent, per tube and population; and how many populations were tested."""
    values: dict[tuple[str, str], list[tuple[SampleOutcome, float]]] = {}
    for o in outcomes:
        if o.ok:
            for r in o.rows:
                if _finite(r["pct_parent"]):
                    values.setdefault((o.tube, r["population"]), []).append((o, float(r["pct_parent"])))
    found = []
    tested = 0
    for (tube, pop), vals in values.items():
        if len(vals) < OUTLIER_MIN_SAMPLES:
            continue
        tested += 1
        xs = [v for _, v in vals]
        med = statistics.median(xs)
        mad = statistics.median(abs(x - med) for x in xs)
        if mad == 0:
            continue
        for o, x in vals:
            z = (x - med) / (1.4826 * mad)
            if abs(z) > OUTLIER_Z:
                found.append(
                    {
                        "sample_id": o.sample_id,
                        "tube": tube,
                        "population": pop,
                        "plate": o.plate,
                        "well": o.well,
                        "value": x,
                        "median": med,
                        "z": z,
                    }
                )
    found.sort(key=lambda d: (-abs(d["z"]), d["population"], d["sample_id"]))
    return found, tested


def _well(well: str) -> tuple[int, int] | None:
    m = re.fullmatch(r"\s*([A-Ha-h])\s*0?(\d{1,2})\s*", well or "")
    if not m or not 1 <= int(m.group(2)) <= 12:
        return None
    return _ROWS.index(m.group(1).upper()), int(m.group(2))


def _key_populations(members: Sequence[SampleOutcome]) -> list[str]:
    order: dict[str, None] = {}
    qc: set[str] = set()
    for o in members:
        qc |= qc_populations(o.rows)
        for r in o.rows:
            order.setdefault(r["population"], None)
    chosen = [p for p in order if p not in qc][:KEY_POPULATIONS]
    return chosen or list(order)[:KEY_POPULATIONS]



def _gate_checks(outcomes: Sequence[SampleOutcome]) -> list[dict[str, Any]]:
    """Every flagged or failed population of the gated samples, in sample then template order."""
    out = []
    for o in outcomes:
        if not o.ok:
            continue
        for r in o.rows:
            st = r.get("status") or "ok"
            if st in ("flagged", "failed"):
                out.append({"outcome": o, "population": r["population"], "status": st,
                            "reason": str(r.get("reason") or "")})
    return out


