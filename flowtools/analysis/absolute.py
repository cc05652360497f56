"""Absolute counts: cells per microlitre from counting beads or from the acquired volume.

Two methods, each adding ``cells_per_ul`` (and why it is empty, where it is) to a population
table (``populations.csv``: one row per sample and population with its ``count``):

Single-platform bead method (:func:`absolute_counts`)
    A known number of counting beads (e.g. BD Trucount: the lot's beads per test, printed on
    the foil pouch) is in the tube with a known volume of sample. The package insert of BD
    Trucount tubes gives the count as

    ``cells/µL = (cell events / bead events) × (beads per test / test volume in µL)``

    where the cell events are the population's count, the bead events the count of the
    counting-bead population of the same sample (a template population, e.g. ``beads``), and
    the test volume the volume of sample (e.g. 50 µL of whole blood) pipetted into the tube.
Volumetric method (:func:`volumetric_counts`)
    An instrument that measures the volume it acquired writes it as ``$VOL``, in nanolitres
    (FCS 3.1). Then ``cells/µL = count / ($VOL / 1000)``, times the sample's dilution factor
    (volume of stained suspension / volume of sample; 1 for an undiluted sample).

A value that cannot be computed is NaN, never a guess, and ``absolute_reason`` says why: no
bead population in that sample, zero bead events, the beads-per-test or volume figure missing
or not positive, no ``$VOL``, or the population failed (its count is empty).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["COLUMNS", "absolute_counts", "add_absolute_counts", "per_woman_absolute", "vol_nl",
           "volumetric_counts"]

#: Columns the functions add.
COLUMNS = ("cells_per_ul", "absolute_method", "absolute_reason")


def _per_sample(value: Any, sample_id: str) -> float | None:
    """A per-sample figure: a scalar for every sample, or a mapping/Series by sample_id."""
    if value is None:
        return None
    if isinstance(value, Mapping) or hasattr(value, "get"):
        v = value.get(sample_id)
    else:
        v = value
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def _match(paths: list[str], name: str) -> str | None:
    """The population path that ``name`` is, or ends with (one only), among one sample's paths."""
    want = name.strip("/")
    if want in paths:
        return want
    hits = [p for p in paths if p.endswith("/" + want)]
    return hits[0] if len(hits) == 1 else None


def _check_table(populations: Any) -> None:
    missing = [c for c in ("sample_id", "population", "count") if c not in populations.columns]
    if missing:
        msg = f"population table: no column {missing} (a populations.csv of `flowtools gate` has them)"
        raise ValueError(msg)


def _bead_value(
    sid: str, pop: str, n: float, counts: Mapping[str, float], bead_population: str | None,
    beads: float | None, vol: float | None,
) -> tuple[float, str]:
    """(cells/µL, reason it is NaN or "") of one row by the bead method."""
    bead = _match(list(counts), bead_population) if bead_population else None
    why = ""
    if bead is None:
        why = f"no counting-bead population {bead_population!r} in sample {sid}"
    elif pop == bead:
        why = "the counting beads themselves"
    elif not counts[bead] == counts[bead]:  # NaN: the bead gate failed
        why = f"bead population {bead!r} failed in sample {sid}"
    elif counts[bead] <= 0:
        why = f"no bead events in {bead!r} of sample {sid}"
    elif beads is None or beads != beads:
        why = f"no beads-per-test figure for sample {sid}"
    elif beads <= 0:
        why = f"beads per test {beads:g} for sample {sid} is not positive"
    elif vol is None or vol != vol:
        why = f"no sample volume (µL) for sample {sid}"
    elif vol <= 0:
        why = f"sample volume {vol:g} µL for sample {sid} is not positive"
    elif n != n:
        why = "the population failed (no count)"
    if why:
        return math.nan, why
    return n / counts[bead] * beads / vol, ""  # type: ignore[operator]


def _volume_value(sid: str, n: float, vol: float | None, dil: float | None) -> tuple[float, str]:
    """(cells/µL, reason it is NaN or "") of one row by the volumetric method."""
    why = ""
    if vol is None or vol != vol:
        why = f"no $VOL (acquired volume) for sample {sid}"
    elif vol <= 0:
        why = f"$VOL {vol:g} nL for sample {sid} is not positive"
    elif dil is None or dil != dil or dil <= 0:
        why = f"dilution factor for sample {sid} missing or not positive"
    elif n != n:
        why = "the population failed (no count)"
    if why:
        return math.nan, why
    return n / (vol / 1000.0) * dil, ""  # type: ignore[operator]


def _counts_by_sample(records: Any) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for r in records:
        out.setdefault(str(r["sample_id"]), {})[str(r["population"])] = float(r["count"])
    return out


def add_absolute_counts(
    records: list[dict[str, Any]],
    *,
    bead_population: Any = None,
    beads_per_test: Any = None,
    volume_ul: Any = None,
    vol_nl: Any = None,
    dilution: Any = 1.0,
) -> None:
    """Add ``cells_per_ul``, ``absolute_method`` and ``absolute_reason`` to population rows, in place.

    For a batch run's plain rows (dicts with ``sample_id``, ``population``, ``count``; no pandas).
    Per sample: the bead method where the sample has a bead population and a beads-per-test
    figure; else the volumetric method where it has a ``$VOL``; else NaN with both reasons.

    Parameters
    ----------
    records : list of dict
    bead_population : str or mapping, optional
        The counting-bead population's path (or last segments): one for all, or per ``sample_id``
        (e.g. from each sample's template).
    beads_per_test, volume_ul : float or mapping, optional
        As in :func:`absolute_counts` (the sheet's ``beads_per_test`` and ``sample_volume_ul``).
    vol_nl : float or mapping, optional
        Each file's ``$VOL`` (nL), as :func:`vol_nl` reads it.
    dilution : float or mapping, default 1.0
        As in :func:`volumetric_counts`.
    """
    counts = _counts_by_sample(records)
    for r in records:
        sid, pop, n = str(r["sample_id"]), str(r["population"]), float(r["count"])
        bead_pop = bead_population.get(sid) if isinstance(bead_population, Mapping) else bead_population
        beads = _per_sample(beads_per_test, sid)
        if bead_pop and beads is not None:
            v, why = _bead_value(sid, pop, n, counts[sid], str(bead_pop), beads,
                                 _per_sample(volume_ul, sid))
            method = "beads"
        elif _per_sample(vol_nl, sid) is not None:
            v, why = _volume_value(sid, n, _per_sample(vol_nl, sid), _per_sample(dilution, sid))
            method = "volumetric"
        else:
            v, method = math.nan, ""
            why = (f"sample {sid}: no counting beads (bead population and beads-per-test figure) "
                   "and no $VOL")
        r["cells_per_ul"], r["absolute_method"], r["absolute_reason"] = v, method, why


def absolute_counts(
    populations: Any,
    *,
    bead_population: str,
    beads_per_test: Any,
    volume_ul: Any,
) -> Any:
    """Cells per µL of every population by the single-platform bead method.

    ``cells/µL = count / bead events × beads per test / sample volume (µL)``, with the bead
    events the count of ``bead_population`` in the same sample (BD Trucount package insert).

    Parameters
    ----------
    populations : pandas.DataFrame
        One row per sample and population: ``sample_id``, ``population`` (path), ``count``
        (``populations.csv``); other columns are kept.
    bead_population : str
        The counting-bead population: its path, or its last segments (e.g. ``"beads"``).
    beads_per_test : float, mapping or Series
        Beads in the tube (the lot's figure), one for all samples or per ``sample_id``
        (the sample sheet's ``beads_per_test`` column).
    volume_ul : float, mapping or Series
        Volume of sample in the tube, µL, one for all or per ``sample_id`` (the sheet's
        ``sample_volume_ul`` column).

    Returns
    -------
    pandas.DataFrame
        A copy with ``cells_per_ul`` (float, NaN where it cannot be computed),
        ``absolute_method`` (``"beads"``) and ``absolute_reason`` ("" where computed). The
        bead population's own row is NaN ("the counting beads themselves").

    Raises
    ------
    ValueError
        The table lacks ``sample_id``, ``population`` or ``count``.
    """
    _check_table(populations)
    out = populations.copy()
    records = out[["sample_id", "population", "count"]].to_dict("records")
    counts = _counts_by_sample(records)
    values, reasons = [], []
    for r in records:
        sid = str(r["sample_id"])
        v, why = _bead_value(sid, str(r["population"]), float(r["count"]), counts[sid], bead_population,
                             _per_sample(beads_per_test, sid), _per_sample(volume_ul, sid))
        values.append(v)
        reasons.append(why)
    out["cells_per_ul"] = values
    out["absolute_method"] = "beads"
    out["absolute_reason"] = reasons
    return out


def vol_nl(keywords: Mapping[str, str]) -> float | None:
    """The acquired volume in nanolitres from an FCS file's ``$VOL`` (None when absent or not a number).

    Parameters
    ----------
    keywords : mapping of str to str
        The file's keywords (:attr:`flowtools.io.fcs.FCSSample.keywords`).
    """
    raw = keywords.get("$VOL")
    if raw is None or not str(raw).strip():
        return None
    try:
        v = float(str(raw).strip())
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def volumetric_counts(populations: Any, *, vol_nl: Any, dilution: Any = 1.0) -> Any:
    """Cells per µL of every population from the acquired volume (``$VOL``, nL).

    ``cells/µL = count / (VOL / 1000) × dilution``.

    Parameters
    ----------
    populations : pandas.DataFrame
        ``sample_id``, ``population``, ``count`` per row (``populations.csv``).
    vol_nl : float, mapping or Series
        ``$VOL`` in nanolitres, one for all or per ``sample_id`` (:func:`vol_nl` of each file);
        None/absent for a sample whose instrument does not write it.
    dilution : float, mapping or Series, default 1.0
        Volume of the acquired suspension / volume of sample (1: undiluted).

    Returns
    -------
    pandas.DataFrame
        A copy with ``cells_per_ul``, ``absolute_method`` (``"volumetric"``) and ``absolute_reason``.
    """
    _check_table(populations)
    out = populations.copy()
    values, reasons = [], []
    for sid, n in zip(out["sample_id"], out["count"], strict=True):
        sid = str(sid)
        v, why = _volume_value(sid, float(n), _per_sample(vol_nl, sid), _per_sample(dilution, sid))
        values.append(v)
        reasons.append(why)
    out["cells_per_ul"] = values
    out["absolute_method"] = "volumetric"
    out["absolute_reason"] = reasons
    return out


def per_woman_absolute(table: Any) -> Any:
    """One row per woman, one ``<tube>|<population>|cells_per_ul`` column (as ``per_woman.csv`` is laid out).

    The first non-NaN value per woman and column in row order, rows and columns sorted; women
    and columns with no value left out.

    Parameters
    ----------
    table : pandas.DataFrame or list of dict
        Output of :func:`absolute_counts`/:func:`volumetric_counts`, or rows filled by
        :func:`add_absolute_counts`, with ``woman_id``, ``tube``, ``population``, ``cells_per_ul``.

    Returns
    -------
    pandas.DataFrame or dict of str to list
        A DataFrame for a DataFrame; plain columns (``woman_id`` first; no pandas) for rows, as
        :class:`flowtools.io.tables.Table` takes them.
    """
    frame = not isinstance(table, list)
    if frame:
        need = [c for c in ("woman_id", "tube", "population", "cells_per_ul") if c not in table.columns]
        if need:
            msg = f"table: no column {need}"
            raise ValueError(msg)
        records = table[["woman_id", "tube", "population", "cells_per_ul"]].to_dict("records")
    else:
        records = table
    cells: dict[str, dict[str, float]] = {}
    for r in records:
        v = float(r["cells_per_ul"])
        if v == v:
            col = f"{r['tube']}|{r['population']}|cells_per_ul"
            cells.setdefault(str(r["woman_id"]), {}).setdefault(col, v)
    women = sorted(cells)
    columns = sorted({c for row in cells.values() for c in row})
    data: dict[str, list[Any]] = {"woman_id": women}
    for c in columns:
        data[c] = [cells[w].get(c, math.nan) for w in women]
    if not frame:
        return data
    import pandas as pd

    return pd.DataFrame(data)
