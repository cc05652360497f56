"""Writing FCS 3.1 files (float32 or float64 list mode, little-endian).

Kept apart from the reader, as FlowIO does: a writer has its own rules. The
file is written atomically (temporary file + rename), so a crash never leaves a
half-written FCS file under the final name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from flowtools.io.fcs import Spillover
from flowtools.provenance import atomic_write

__all__ = ["write_fcs"]

_DELIM = "/"
_HEADER_MAX_OFFSET = 99_999_999
_TEXT_START = 58
# Keywords the writer owns: a caller may not set them through ``keywords``.
_RESERVED = {
    "$BEGINANALYSIS",
    "$ENDANALYSIS",
    "$BEGINSTEXT",
    "$ENDSTEXT",
    "$BEGINDATA",
    "$ENDDATA",
    "$BYTEORD",
    "$DATATYPE",
    "$MODE",
    "$NEXTDATA",
    "$PAR",
    "$TOT",
    "$SPILLOVER",
}


def _escape(s: str) -> str:
    return s.replace(_DELIM, _DELIM * 2)


def _fmt_float(x: float) -> str:
    return repr(float(x)) if not float(x).is_integer() else str(int(x))


def _text_segment(pairs: list[tuple[str, str]]) -> bytes:
    body = "".join(f"{_escape(k)}{_DELIM}{_escape(v)}{_DELIM}" for k, v in pairs)
    return (_DELIM + body).encode("utf-8")


def write_fcs(
    path: str | os.PathLike[str],
    events: np.ndarray,
    channels: Sequence[str],
    *,
    markers: Sequence[str | None] | None = None,
    ranges: Sequence[float] | None = None,
    spillover: Spillover | None = None,
    keywords: Mapping[str, str] | None = None,
    datatype: str = "F",
) -> Path:
    """Write an FCS 3.1 file: float32 (or float64) list-mode data, little-endian.

    Parameters
    ----------
    path : str or PathLike
        Destination; written atomically.
    events : array_like, shape (n_events, n_channels)
        Event values. Stored as float32: float32 input round-trips exactly,
        float64 input is rounded to float32.
    channels : sequence of str
        ``$PnN`` detector names, one per column; unique and non-empty.
    markers : sequence of str or None, optional
        ``$PnS`` marker names; None or ``""`` writes no ``$PnS`` for that column.
    ranges : sequence of float, optional
        ``$PnR`` per column. Default: 262144, or the column's maximum rounded up
        when larger.
    spillover : Spillover, optional
        Written as ``$SPILLOVER``; its detectors must be among ``channels``.
    keywords : mapping of str to str, optional
        Further TEXT keywords (e.g. ``$CYT``). Structural keywords the writer
        owns (``$TOT``, ``$PAR``, ``$DATATYPE``, offsets, ``$SPILLOVER``) may
        not be given; ``$PnX`` keywords here override the defaults above.
    datatype : {"F", "D"}, default "F"
        ``$DATATYPE``: float32 (``F``) or float64 (``D``, ``$PnB`` 64; float64 input
        round-trips exactly).

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ValueError
        Mismatched shapes, duplicate or empty channel names, an empty keyword
        value, a reserved keyword, a spillover naming an unknown detector, or a
        ``datatype`` other than ``F``/``D``.
    """
    if datatype not in ("F", "D"):
        msg = f"datatype must be 'F' (float32) or 'D' (float64), not {datatype!r}"
        raise ValueError(msg)
    bits = "32" if datatype == "F" else "64"
    data = np.asarray(events)
    if data.ndim != 2:
        msg = f"events must be 2-D (n_events, n_channels), got shape {data.shape}"
        raise ValueError(msg)
    n_events, n_par = data.shape
    names = [str(c) for c in channels]
    if len(names) != n_par:
        msg = f"{len(names)} channel names for {n_par} columns"
        raise ValueError(msg)
    if any(not n.strip() for n in names) or len(set(names)) != n_par:
        msg = f"channel names must be non-empty and unique: {names}"
        raise ValueError(msg)
    if markers is not None and len(markers) != n_par:
        msg = f"{len(markers)} markers for {n_par} columns"
        raise ValueError(msg)
    if ranges is not None and len(ranges) != n_par:
        msg = f"{len(ranges)} ranges for {n_par} columns"
        raise ValueError(msg)
    f32 = np.ascontiguousarray(data, dtype="<f4" if datatype == "F" else "<f8")

    pairs: list[tuple[str, str]] = [
        ("$BEGINANALYSIS", "0"),
        ("$ENDANALYSIS", "0"),
        ("$BEGINSTEXT", "0"),
        ("$ENDSTEXT", "0"),
        ("$BYTEORD", "1,2,3,4"),
        ("$DATATYPE", datatype),
        ("$MODE", "L"),
        ("$NEXTDATA", "0"),
        ("$PAR", str(n_par)),
        ("$TOT", str(n_events)),
    ]
    per_param: dict[str, str] = {}
    col_max = np.nanmax(f32, axis=0) if n_events else np.zeros(n_par, dtype=np.float32)
    for i, name in enumerate(names, start=1):
        per_param[f"$P{i}N"] = name
        marker = None if markers is None else markers[i - 1]
        if marker:
            per_param[f"$P{i}S"] = str(marker)
        if ranges is not None:
            rng = float(ranges[i - 1])
        else:
            top = float(col_max[i - 1]) if np.isfinite(col_max[i - 1]) else 0.0
            rng = max(262144.0, float(np.ceil(top)))
        per_param[f"$P{i}R"] = _fmt_float(rng)
        per_param[f"$P{i}B"] = bits
        per_param[f"$P{i}E"] = "0,0"
    for key, value in (keywords or {}).items():
        k = str(key).strip().upper()
        if k in _RESERVED:
            msg = f"keyword {k} is written by write_fcs itself and cannot be set"
            raise ValueError(msg)
        v = str(value)
        if not k or not v:
            msg = f"keyword {key!r} has an empty name or value; FCS forbids empty values"
            raise ValueError(msg)
        per_param[k] = v
    if spillover is not None:
        unknown = [d for d in spillover.detectors if d not in names]
        if unknown:
            msg = f"spillover names detectors not among the channels: {unknown}"
            raise ValueError(msg)
        m = np.asarray(spillover.matrix, dtype=np.float64)
        n = len(spillover.detectors)
        if m.shape != (n, n):
            msg = f"spillover matrix shape {m.shape} does not match {n} detectors"
            raise ValueError(msg)
        pairs.append(
            ("$SPILLOVER", ",".join([str(n), *spillover.detectors, *(repr(float(x)) for x in m.ravel())]))
        )
    for k, v in per_param.items():
        if any(ord(ch) < 32 for ch in k + v):
            msg = f"keyword {k} holds a control character"
            raise ValueError(msg)
        pairs.append((k, v))
    for k, v in pairs:
        # A doubled delimiter right after a separator cannot be told from an escaped one: FCS 3.1
        # forbids keywords and values that start (or end) with the delimiter.
        if k.startswith(_DELIM) or v.startswith(_DELIM) or k.endswith(_DELIM) or v.endswith(_DELIM):
            msg = f"keyword {k!r}: a keyword or value may not start or end with {_DELIM!r} (FCS delimiter)"
            raise ValueError(msg)

    data_bytes = f32.tobytes()
    # $BEGINDATA/$ENDDATA change the TEXT length, which moves the DATA: iterate to a fixed point.
    begin = end = 0
    for _ in range(10 if data_bytes else 0):
        text = _text_segment([*pairs, ("$BEGINDATA", str(begin)), ("$ENDDATA", str(end))])
        new_begin = _TEXT_START + len(text)
        new_end = new_begin + len(data_bytes) - 1 if data_bytes else new_begin
        if (new_begin, new_end) == (begin, end):
            break
        begin, end = new_begin, new_end
    if not data_bytes:
        text = _text_segment([*pairs, ("$BEGINDATA", "0"), ("$ENDDATA", "0")])
    text_end = _TEXT_START + len(text) - 1
    if end > _HEADER_MAX_OFFSET:  # FCS 3.1: offsets that do not fit in 8 digits are written as 0
        h_begin, h_end = 0, 0
    else:
        h_begin, h_end = begin, end
    header = f"FCS3.1    {_TEXT_START:>8}{text_end:>8}{h_begin:>8}{h_end:>8}{0:>8}{0:>8}".encode("ascii")
    out = Path(path)
    with atomic_write(out, "wb") as fh:
        fh.write(header)
        fh.write(text)
        fh.write(data_bytes)
    return out
