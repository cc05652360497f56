"""The population table: one row per sample and gated population, identity included.

``flowtools gate`` writes it as ``populations.csv`` / ``.parquet`` (:func:`population_table`,
documented column by column in ``populations.columns.md``: :func:`columns_doc`); the later
stages (``flowtools cluster``, the statistics, the report) read a population's identity
from it (:func:`read_populations`) instead of deriving it from the path again.

Columns (:data:`TABLE_COLUMNS`, then the MFI columns, sorted)
-------------------------------------------------------------
sample_id, woman_id, tube, plate, well : str
    From the sample sheet.
population : str
    The population's template path (``cells/lymphocytes/CD3+``).
gate_id : str
    The id of its gate in the sample's resolved strategy and in the Gating-ML the run wrote
    (``gates/<sample>.gating-ml.xml``): look a population's events up by it. Ids are unique
    within a template; two paths that spell alike (``CD4+`` and ``CD4pos``) get different ids.
parent : str
    The parent population's path; empty for a population of all events.
role : str
    ``"qc"`` for a gate the template marks ``role: qc`` (acquisition clean-up), else empty.
count, parent_count : int
    Events in the population and in its parent (all events of the file at the top).
pct_parent, pct_total : float
    % of the parent, % of all events (empty when the parent has no events).
status, reason : str
    ``ok``; ``flagged`` (numbers kept, ``reason`` says what to look at: a fallback kept < 1%
    or > 99% of the parent, or the population is outside the template's ``expect``); or
    ``failed`` (no numbers: count, percentages and MFIs are empty, ``reason`` says why).
mfi_<marker>, mfi_<marker>_transformed : float
    Median of the compensated, untransformed values, and on the template's transformed scale.

QC gates
--------
One name rule, :func:`is_qc_name` (:data:`QC_NAMES`, :data:`QC_NAME_PARTS`), says which
populations are acquisition/QC clean-up gates where no template role says. The report's QC
flags use :func:`qc_populations`: the template's ``role: qc`` where the template marks any
population, else the name rule. The statistics drop as technical every population that is
``role: qc`` or that the name rule names (:func:`flowtools.stats.tables.tables_from_gate`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from flowtools.io.tables import Table

__all__ = [
    "POPULATION_COLUMNS",
    "QC_NAMES",
    "QC_NAME_PARTS",
    "ABSOLUTE_COLUMNS",
    "ROLE_BEADS",
    "ROLE_QC",
    "SAMPLE_COLUMNS",
    "TABLE_COLUMNS",
    "columns_doc",
    "descendants",
    "is_qc_name",
    "markers",
    "population_table",
    "qc_populations",
    "read_populations",
    "sample_rows",
    "warm_up",
]

#: The sample's columns (from the sample sheet), first in the table.
SAMPLE_COLUMNS = ("sample_id", "woman_id", "tube", "plate", "well")
#: A population's columns, from :meth:`flowtools.gating.templates.ResolvedSample.rows`.
POPULATION_COLUMNS = ("population", "gate_id", "parent", "role", "count", "parent_count", "pct_parent",
                      "pct_total", "status", "reason")
#: Columns of ``populations.csv`` before the MFI columns.
TABLE_COLUMNS = SAMPLE_COLUMNS + POPULATION_COLUMNS
#: The ``role`` of a QC (acquisition clean-up) gate.
ROLE_QC = "qc"
#: The ``role`` of the counting beads of an absolute count (not biology either).
ROLE_BEADS = "counting_beads"
#: Columns the absolute counts add (:mod:`flowtools.analysis.absolute`), after the MFIs.
ABSOLUTE_COLUMNS = ("cells_per_ul", "absolute_method", "absolute_reason")
#: A population whose last path segment (case-insensitive) is one of these is a QC gate.
QC_NAMES = ("cells", "live", "dead")
#: ... and so is one whose last segment contains one of these.
QC_NAME_PARTS = ("qc", "margin", "boundary", "clean", "debris", "singlet", "doublet")
_TEXT_COLUMNS = (*SAMPLE_COLUMNS, "population", "gate_id", "parent", "role", "status", "reason")
_NAN = float("nan")


# ---------------------------------------------------------------------------------------------- QC gates


def is_qc_name(path: str) -> bool:
    """Whether a population's name says it is a QC clean-up gate: the shared name rule.

    Its last path segment, lower-cased, is one of :data:`QC_NAMES` or contains one of
    :data:`QC_NAME_PARTS` (``singlets``, ``Debris``, ``qc``, ``live``, ``cells``: yes;
    ``T cells``, ``Live CD45+``: no).
    """
    name = str(path).rsplit("/", 1)[-1].strip().lower()
    return name in QC_NAMES or any(k in name for k in QC_NAME_PARTS)


def qc_populations(rows: Iterable[Mapping[str, Any]]) -> set[str]:
    """Paths of the QC gates among one template's population rows (``population``, optional ``role``).

    Where any row has ``role == "qc"``, the roles decide; otherwise :func:`is_qc_name`.
    """
    rows = list(rows)
    if any(r.get("role") == ROLE_QC for r in rows):
        return {r["population"] for r in rows if r.get("role") == ROLE_QC}
    return {r["population"] for r in rows if is_qc_name(r["population"])}


# ------------------------------------------------------------------------------------ building the rows


def markers(sample: Any, time: str | None = None) -> list[tuple[str, str]]:
    """(pnn, label) of the fluorescence (or mass) channels: the marker name when set.

    Time, scatter and instrument bookkeeping parameters are left out, whatever the
    instrument calls them (:func:`flowtools.io.channels.classify_channels`).
    """
    kinds = sample.channel_kinds(time)
    return [(c.pnn, c.pns or c.pnn) for c in sample.channels if kinds.of(c.pnn) == "fluorescence"]


def sample_rows(resolved: Any, sample: Any, template: Any) -> list[dict[str, Any]]:
    """One gated sample's population rows: identity, counts, percentages and per-marker medians (MFI).

    Parameters
    ----------
    resolved : flowtools.gating.templates.ResolvedSample
        The sample, resolved (no error).
    sample : flowtools.io.FCSSample
    template : flowtools.gating.templates.Template

    Returns
    -------
    list of dict
        Per population, in template order: the :data:`POPULATION_COLUMNS` (``role`` is ""
        when the template gives none), then ``mfi_<label>`` and, for a marker with a
        transform, ``mfi_<label>_transformed``.

    Medians are taken of the compensated, untransformed values the gates were computed from
    (no second read or compensation), and also given on the template's transformed scale
    (the mean of the two transformed middle values, so it is the median of the transformed
    values: the transforms are monotone).
    """
    from flowtools.analysis import _population_kernels
    from flowtools.gating.gates import gate_dimensions

    used = {d.name: d.transform for g in resolved.strategy.gates for d in gate_dimensions(g)}
    chans = []
    for pnn, label in markers(sample, getattr(template, "time", None)):
        tid = used.get(pnn)
        if tid is not None:
            transform = resolved.strategy.transforms[tid]
        else:
            spec = (template.transforms.get(label) or template.transforms.get(pnn)
                    or template.transforms["fluorescence"])
            transform = spec.build(resolved.channel(pnn))
        chans.append((label, resolved.channel(pnn), transform))

    bases = resolved.rows()
    measured = [p for p, b in enumerate(bases) if b.get("status") != "failed"]
    # Exact middle order statistics of every population on every marker, work shared across
    # the populations (bit-identical to a gather + np.partition per pair: tests/reference).
    lo, hi = _population_kernels.middle_values([col for _, col, _ in chans],
                                               [resolved.mask(bases[p]["population"]) for p in measured])
    mid = (lo + hi) / 2
    mid_t = [None if tr is None else (tr.apply(lo[c]) + tr.apply(hi[c])) / 2
             for c, (_, _, tr) in enumerate(chans)]
    column = {p: k for k, p in enumerate(measured)}
    rows = []
    for p, base in enumerate(bases):
        row = dict(base)
        row["role"] = base.get("role") or ""
        k = column.get(p)
        for c, (label, _, transform) in enumerate(chans):
            row[f"mfi_{label}"] = float(mid[c, k]) if k is not None else _NAN
            if transform is not None:
                row[f"mfi_{label}_transformed"] = float(mid_t[c][k]) if k is not None else _NAN
        rows.append(row)
    return rows


def warm_up() -> None:
    """Compile the MFI kernel (both of its paths) on a few values: a worker's first sample need not."""
    import numpy as np

    from flowtools.analysis import _population_kernels

    x = np.linspace(-1.0, 4.0, 600)
    _population_kernels.middle_values([x.copy(), x[::-1].copy()], [np.ones(x.size, dtype=np.bool_), x > 2.0])


# ------------------------------------------------------------------------------------------- the table


def population_table(records: Sequence[Mapping[str, Any]]) -> Table:
    """The population table of sample rows (:data:`SAMPLE_COLUMNS` + :func:`sample_rows`' keys).

    Columns :data:`TABLE_COLUMNS`, then every ``mfi_*`` column of any record, sorted; a
    value a record lacks is NaN (an MFI of a marker its file does not have). Where any record
    has absolute counts, :data:`ABSOLUTE_COLUMNS` follow.
    """
    mfi = sorted({c for r in records for c in r if c.startswith("mfi_")})
    absolute = ABSOLUTE_COLUMNS if any("cells_per_ul" in r for r in records) else ()
    default = {"role": "", "status": "ok", "reason": "", "absolute_method": "", "absolute_reason": ""}
    return Table({c: [r.get(c, default.get(c, _NAN)) for r in records]
                  for c in (*TABLE_COLUMNS, *mfi, *absolute)})


def columns_doc(columns: Iterable[str]) -> str:
    """``populations.columns.md``: what every column of the population table holds."""
    fixed = {
        "sample_id": "sample ID from the sample sheet",
        "woman_id": "participant pseudonym from the sample sheet",
        "tube": "tube (panel) from the sample sheet; selects the template",
        "plate": "plate from the sample sheet",
        "well": "well from the sample sheet",
        "population": "population path in the template (`parent/child`)",
        "gate_id": "id of the population's gate in `gates/<sample>.gating-ml.xml` (unique within a template)",
        "parent": "parent population's path; empty for a population of all events",
        "role": "`qc` for a gate the template marks `role: qc` (acquisition clean-up), else empty",
        "count": "events in the population",
        "parent_count": "events in the parent population (all events of the file at the top)",
        "pct_parent": "% of the parent's events (0-100); empty when the parent has no events",
        "pct_total": "% of all events of the file (0-100)",
        "status": "`ok`; `flagged` (numbers kept; `reason` says what to check); `failed` (no numbers)",
        "reason": "why flagged or failed (a fallback kept <1% or >99% of the parent, outside `expect`, "
                  "a gate that could not be computed, or a failed ancestor)",
        "cells_per_ul": "absolute count, cells per µL of sample: bead method (cell events / bead events x "
                        "beads_per_test / sample_volume_ul, the BD Trucount formula) or volumetric "
                        "(count / ($VOL nL / 1000)); empty when it cannot be computed",
        "absolute_method": "`beads` or `volumetric`: how `cells_per_ul` was computed (empty: not computed)",
        "absolute_reason": "why `cells_per_ul` is empty (no counting-bead population, zero bead events, "
                           "beads_per_test or volume missing, no $VOL, a failed population)",
    }
    lines = [
        "# populations table",
        "",
        "One row per gated sample and population of its tube's template. A population's events",
        "are found again by `gate_id` in that sample's Gating-ML; `parent` and `parent_count` give",
        "its parent exactly. MFIs are medians of the compensated events of the population",
        "(empty: the population has no events, or the file lacks the marker).",
        "",
        "| column | meaning |",
        "|---|---|",
    ]
    for c in columns:
        if c in fixed:
            lines.append(f"| {c} | {fixed[c]} |")
        elif c.endswith("_transformed") and c.startswith("mfi_"):
            lines.append(f"| {c} | median of {c[4:-12]} on the template's transformed scale |")
        elif c.startswith("mfi_"):
            lines.append(f"| {c} | median of {c[4:]} (compensated, untransformed) |")
    return "\n".join(lines) + "\n"


def read_populations(path: str | os.PathLike[str]) -> Any:
    """Read a population table (``populations.csv`` or ``.parquet``) as a ``pandas.DataFrame``.

    Text columns (IDs, paths, ``gate_id``, ``parent``, ``role``) are read as str, an empty
    field as "" (a top-level population's ``parent``), never NaN; in the number columns an
    empty field is NaN. Files written before the identity columns existed read as they are
    (no ``gate_id``/``parent``/``parent_count``/``role`` columns).
    """
    import pandas as pd

    p = Path(path)
    if p.suffix == ".parquet":
        return pd.read_parquet(p)
    head = list(pd.read_csv(p, nrows=0).columns)
    text = [c for c in head if c in _TEXT_COLUMNS]
    return pd.read_csv(p, dtype=dict.fromkeys(text, str), keep_default_na=False,
                       na_values={c: [""] for c in head if c not in _TEXT_COLUMNS})


def descendants(rows: Iterable[Mapping[str, Any]], path: str) -> list[Mapping[str, Any]]:
    """The rows of one sample's populations below ``path``, found by their ``parent`` links (in row order)."""
    rows = list(rows)
    children: dict[str, list[str]] = {}
    for r in rows:
        children.setdefault(r["parent"], []).append(r["population"])
    inside: set[str] = set()
    todo = [path]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in inside and child != path:
                inside.add(child)
                todo.append(child)
    return [r for r in rows if r["population"] in inside]
