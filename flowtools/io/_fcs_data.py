"""The FCS channel table, spillover keyword, DATA layout and event decoding.

Private to :mod:`flowtools.io.fcs` (the reading rules are documented there); ``Channel``
and ``Spillover`` are public there.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from flowtools.errors import FCSError
from flowtools.io._fcs_segments import _HEADER_LEN, _BytesSource, _FileSource, _Header, _int_kw

_SPILL_KEYS = ("$SPILLOVER", "SPILL", "$SPILL", "SPILLOVER", "$COMP")
_LITTLE = {"1,2,3,4", "1,2", "1"}
_BIG = {"4,3,2,1", "2,1"}
_NUMBER_RE = re.compile(rb"[^\s,]+")



class Channel(NamedTuple):
    """One parameter (channel) of an FCS data set (immutable).

    A NamedTuple rather than a frozen dataclass: it is built for every
    parameter of every file read, and construction cost shows in plate scans.

    Attributes
    ----------
    index : int
        0-based column in the event matrix.
    pnn : str
        ``$PnN``, the detector name (e.g. ``"FL1-A"``).
    pns : str
        ``$PnS``, the marker/stain (e.g. ``"CD3 FITC"``); ``""`` when absent.
    pnr : float or None
        ``$PnR``, the range; None when absent.
    pnb : int or None
        ``$PnB``, bits per value; None for delimited ASCII (``*``).
    pne : tuple of (float, float)
        ``$PnE`` (decades, offset); (0, 0) is linear.
    png : float
        ``$PnG``, amplifier gain (1.0 when absent).
    datatype : str
        Storage type of this parameter: ``"I"``, ``"F"``, ``"D"`` or ``"A"``.
    """

    index: int
    pnn: str
    pns: str
    pnr: float | None
    pnb: int | None
    pne: tuple[float, float]
    png: float
    datatype: str

    @property
    def label(self) -> str:
        """``"PnN (PnS)"`` when a marker is set, else ``PnN``."""
        return f"{self.pnn} ({self.pns})" if self.pns else self.pnn


@dataclass(frozen=True)
class Spillover:
    """A spillover matrix stored in an FCS keyword.

    Attributes
    ----------
    detectors : tuple of str
        Detector names (``$PnN``) of the rows and columns.
    matrix : ndarray of float64, shape (n, n)
        FCS convention: ``observed = true @ matrix`` (row i is detector i's spill).
    keyword : str
        The keyword it came from (``$SPILLOVER``, ``SPILL``, ...).
    """

    detectors: tuple[str, ...]
    matrix: np.ndarray = field(repr=False)
    keyword: str = "$SPILLOVER"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Spillover):
            return NotImplemented
        return self.detectors == other.detectors and np.array_equal(self.matrix, other.matrix)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class _Layout:
    """Where and how the DATA segment of one data set is stored."""

    start: int  # absolute byte offset in the file
    nbytes: int  # bytes to read
    n_events: int
    kinds: tuple[str, ...]  # per channel "I"/"F"/"D"/"A"
    widths: tuple[int | None, ...]  # per channel bytes (None: delimited ASCII)
    masks: tuple[int | None, ...]  # per channel bit mask for I data
    big_endian: bool



def _log_decode(col: np.ndarray, decades: float, pnr: float) -> np.ndarray:
    """``10 ** (decades * col / pnr)``, computed with the C library's scalar pow.

    numpy's vectorised pow differs from libm by one ulp on some inputs and
    between numpy versions; log-scaled data are integer channel numbers with few
    distinct values, so decoding the distinct values with Python floats makes
    the result exact and the same everywhere (it matches FlowIO's stored truth).
    """
    values, inverse = np.unique(col, return_inverse=True)
    if values.size > 1 << 16:  # not channel numbers: vectorised is fine
        with np.errstate(over="ignore"):
            return 10 ** (decades * col / pnr)
    table = np.array([_pow10(decades * float(v) / pnr) for v in values], dtype=np.float64)
    return table[inverse.reshape(col.shape)]


def _pow10(x: float) -> float:
    try:
        return 10**x
    except OverflowError:  # a broken $PnE or out-of-range value: IEEE says inf, not an exception
        return math.inf


# ---------------------------------------------------------------------------------------------
# Channels, spillover, layout


def _float_kw(raw: str | None, default: float | None) -> float | None:
    if raw is None:
        return default
    try:
        value = float(raw)  # float() ignores surrounding whitespace
    except ValueError:
        return default
    return value if math.isfinite(value) else default


def _pne(raw: str | None, i: int, notes: list[str]) -> tuple[float, float]:
    if raw is None:
        return (0.0, 0.0)
    raw = raw.strip()
    if raw == "0,0":  # linear: nearly every parameter of a modern file
        return (0.0, 0.0)
    try:
        parts = [float(x) for x in raw.replace(" ", "").split(",")]
        decades, log0 = (parts + [0.0, 0.0])[:2]
        if not (math.isfinite(decades) and math.isfinite(log0)) or decades < 0 or log0 < 0:
            raise ValueError
    except ValueError:
        notes.append(f"$P{i}E {raw!r} is not 'f1,f2'; parameter {i} read as linear")
        return (0.0, 0.0)
    if decades > 0 and log0 == 0:
        log0 = 1.0  # FCS: f2 = 0 with f1 > 0 is invalid and read as 1
    return (decades, log0)


def _channels(kw: dict[str, str], n_par: int, path: Path | None, notes: list[str]) -> tuple[Channel, ...]:
    # Runs once per file for every parameter: kept lean (one dict lookup per keyword).
    get = kw.get
    dtype_all = get("$DATATYPE", "").strip().upper()
    out = []
    missing_n = []
    for i in range(1, n_par + 1):
        p = f"$P{i}"
        pnn = get(p + "N", "").strip()
        if not pnn:
            missing_n.append(i)
            pnn = f"P{i}"
        raw_b = get(p + "B", "")
        try:
            pnb: int | None = int(raw_b)
        except ValueError:
            if raw_b.strip() != "*":
                raise FCSError(path, f"$P{i}B (bits of parameter {i}) is missing or not a number") from None
            pnb = None
        kind = get(p + "DATATYPE")
        kind = dtype_all if kind is None else (kind.strip().upper() or dtype_all)
        png = _float_kw(get(p + "G"), 1.0) or 1.0
        out.append(
            Channel(
                i - 1,
                pnn,
                get(p + "S", "").strip(),
                _float_kw(get(p + "R"), None),
                pnb,
                _pne(get(p + "E"), i, notes),
                png,
                kind,
            )
        )
    if missing_n:
        notes.append(f"$PnN missing for parameter(s) {missing_n}; named P<n>")
    if len({c.pnn for c in out}) != len(out):
        names = [c.pnn for c in out]
        dupes = sorted({n for n in names if names.count(n) > 1})
        notes.append(f"$PnN names used by more than one parameter: {dupes}")
    return tuple(out)


def _spillover(kw: dict[str, str], channels: tuple[Channel, ...], notes: list[str]) -> Spillover | None:
    key = next((k for k in _SPILL_KEYS if k in kw and kw[k].strip()), None)
    if key is None:
        return None
    parts = [p.strip() for p in kw[key].split(",")]
    try:
        n = int(parts[0])
    except ValueError:
        notes.append(f"{key} is malformed (count {parts[0][:20]!r} is not a number); ignored")
        return None
    if n <= 0 or len(parts) != 1 + n + n * n:
        notes.append(
            f"{key} is malformed (n={n} needs {n} names and {n * n} values, found {len(parts) - 1} fields); "
            "ignored"
        )
        return None
    names = parts[1 : 1 + n]
    try:
        values = np.array([float(v) for v in parts[1 + n :]], dtype=np.float64).reshape(n, n)
    except ValueError:
        notes.append(f"{key} has a value that is not a number; ignored")
        return None
    if not np.all(np.isfinite(values)):
        notes.append(f"{key} has non-finite values; ignored")
        return None
    pnn = [c.pnn for c in channels]
    if all(x.isdigit() for x in names) and all(1 <= int(x) <= len(pnn) for x in names):
        names = [pnn[int(x) - 1] for x in names]  # FCS 3.0 allowed parameter numbers
    unknown = [x for x in names if x not in pnn]
    if unknown:
        notes.append(f"{key} names detector(s) not in $PnN: {unknown}")
    return Spillover(tuple(names), values, key)


def _byte_order(kw: dict[str, str], path: Path | None, widths: tuple[int | None, ...]) -> bool:
    order = kw.get("$BYTEORD", "").replace(" ", "")
    if order in _LITTLE:
        return False
    if order in _BIG:
        return True
    if all(w in (None, 1) for w in widths):
        return False
    raise FCSError(path, f"unsupported $BYTEORD {order!r} (supported: 1,2,3,4 and 4,3,2,1)")


def _next_pow2(x: int) -> int:
    return 1 if x <= 0 else 1 << (x - 1).bit_length()


def _layout(
    kw: dict[str, str],
    channels: tuple[Channel, ...],
    header: _Header,
    base: int,
    src: _FileSource | _BytesSource,
    notes: list[str],
) -> _Layout:
    path = src.path
    mode = kw.get("$MODE", "L").strip().upper() or "L"
    if mode != "L":
        raise FCSError(path, f"unsupported $MODE {mode!r}: only list mode (L) data can be read")
    kinds, widths, masks = [], [], []
    for c in channels:
        if c.datatype not in ("I", "F", "D", "A"):
            raise FCSError(path, f"unsupported data type {c.datatype!r} for {c.pnn} (supported: I, F, D, A)")
        if c.datatype == "A":
            if c.pnb is not None and not 1 <= c.pnb <= 64:
                raise FCSError(path, f"{c.pnn}: ASCII field width $PnB {c.pnb} is impossible")
            widths.append(c.pnb)  # ASCII: PnB counts characters; None is '*' (delimited)
        elif c.pnb is None:
            raise FCSError(path, f"$PnB '*' is only valid for ASCII data ({c.pnn})")
        elif c.datatype == "F" and c.pnb != 32:
            raise FCSError(path, f"{c.pnn}: float (F) data needs $PnB 32, not {c.pnb}")
        elif c.datatype == "D" and c.pnb != 64:
            raise FCSError(path, f"{c.pnn}: double (D) data needs $PnB 64, not {c.pnb}")
        elif c.datatype == "I" and (c.pnb % 8 != 0 or not 8 <= c.pnb <= 64):
            raise FCSError(path, f"{c.pnn}: unsupported integer width $PnB {c.pnb} (need 8..64, whole bytes)")
        else:
            widths.append(c.pnb // 8)
        kinds.append(c.datatype)
        mask = None
        if c.datatype == "I" and c.pnr is not None and c.pnr > 0:
            m = _next_pow2(math.ceil(c.pnr))
            if m < (1 << c.pnb):  # type: ignore[operator]
                mask = m - 1
        masks.append(mask)
    big = _byte_order(kw, path, tuple(widths))

    delimited = any(w is None for w in widths)
    per_event = None if delimited else sum(w for w in widths if w is not None)

    # DATA offsets: candidates from HEADER and TEXT (see module docs for the rule).
    h0, h1 = header.data
    t0, t1 = _int_kw(kw, "$BEGINDATA"), _int_kw(kw, "$ENDDATA")
    header_ok = h0 is not None and h1 is not None and not (h0 == 0 and h1 == 0)
    text_ok = t0 is not None and t1 is not None and not (t0 == 0 and t1 == 0)
    n_tot = _int_kw(kw, "$TOT")
    if n_tot is not None and n_tot < 0:
        raise FCSError(path, f"$TOT is negative ({n_tot})")

    candidates: list[tuple[str, int, int]] = []
    if text_ok:
        candidates.append(("TEXT", t0, t1))  # type: ignore[arg-type]
    if header_ok:
        candidates.append(("HEADER", h0, h1))  # type: ignore[arg-type]
    if not candidates:
        if n_tot == 0:
            return _Layout(base, 0, 0, tuple(kinds), tuple(widths), tuple(masks), big)
        raise FCSError(path, "no DATA segment offsets in HEADER or TEXT ($BEGINDATA/$ENDDATA)")

    need = None if (per_event is None or n_tot is None) else n_tot * per_event

    def fits(c: tuple[str, int, int], slack: int) -> bool:
        _, s, e = c
        return need is not None and e - s + 1 == need + slack and base + s + need <= src.size

    if len(candidates) == 2 and candidates[0][1:] != candidates[1][1:]:
        chosen = (
            next((c for c in candidates if fits(c, 0)), None)
            or next((c for c in candidates if fits(c, 1)), None)
            or candidates[0]
        )
        other = candidates[1] if chosen is candidates[0] else candidates[0]
        notes.append(
            f"DATA offsets disagree: HEADER {h0}..{h1} vs TEXT $BEGINDATA/$ENDDATA {t0}..{t1}; "
            f"{chosen[0]} used ({other[0]} does not match $TOT x $PAR)"
            if need is not None
            else f"DATA offsets disagree: HEADER {h0}..{h1} vs TEXT {t0}..{t1}; {chosen[0]} used"
        )
    else:
        chosen = candidates[0]
    _, d0, d1 = chosen
    if d0 < _HEADER_LEN or d1 < d0 - 1:
        raise FCSError(path, f"impossible DATA offsets {d0}..{d1}")
    if base + d0 > src.size:
        raise FCSError(path, f"DATA starts at byte {base + d0}, past the end of the file ({src.size} bytes)")
    span = d1 - d0 + 1

    if delimited:
        if base + d1 >= src.size:
            raise FCSError(
                path, f"DATA ends at byte {base + d1}, past the end of the file ({src.size} bytes)"
            )
        return _Layout(
            base + d0, span, -1 if n_tot is None else n_tot, tuple(kinds), tuple(widths), tuple(masks), big
        )

    assert per_event is not None  # noqa: S101 - narrowed above, not input validation
    if per_event == 0:
        raise FCSError(path, "parameters have zero width")
    if n_tot is None:
        n_tot = span // per_event
        if span % per_event:
            notes.append(f"$TOT missing; DATA holds {span / per_event:.2f} events, {n_tot} read")
        need = n_tot * per_event
    assert need is not None  # noqa: S101
    available = src.size - (base + d0)
    if need > available:
        raise FCSError(
            path,
            f"truncated: $TOT={n_tot} x {len(channels)} parameters needs {need} bytes of DATA "
            f"but only {max(available, 0)} remain after byte {base + d0}",
        )
    if span < need:
        raise FCSError(
            path,
            f"DATA segment ({d0}..{d1}, {span} bytes) is shorter than "
            f"$TOT={n_tot} x {per_event} bytes = {need}",
        )
    if span == need + 1:
        notes.append("DATA end offset is one byte past the data (a common writer bug); read $TOT events")
    elif span > need:
        notes.append(
            f"DATA segment is {span - need} bytes longer than $TOT x $PAR needs; extra bytes ignored"
        )
    return _Layout(base + d0, need, n_tot, tuple(kinds), tuple(widths), tuple(masks), big)


# ---------------------------------------------------------------------------------------------
# DATA


def _np_type(kind: str, width: int, *, big: bool) -> np.dtype[Any] | None:
    endian = ">" if big else "<"
    if kind == "F":
        return np.dtype(endian + "f4")
    if kind == "D":
        return np.dtype(endian + "f8")
    if kind == "I" and width in (1, 2, 4, 8):
        return np.dtype(endian + f"u{width}")
    return None


def _read_events(src: _FileSource | _BytesSource, lay: _Layout, path: Path | None) -> np.ndarray:
    n_par = len(lay.kinds)
    if lay.n_events == 0 or n_par == 0:
        return np.zeros((0, n_par), dtype=np.float32 if set(lay.kinds) == {"F"} else np.float64)
    if "A" in lay.kinds:
        return _read_ascii(src, lay, path)
    out_dtype = np.float32 if set(lay.kinds) == {"F"} else np.float64
    types = [_np_type(k, w, big=lay.big_endian) for k, w in zip(lay.kinds, lay.widths, strict=True)]  # type: ignore[arg-type]
    if len(set(types)) == 1 and types[0] is not None:
        # Uniform layout: one read, straight into the event matrix.
        flat = src.array(lay.start, types[0], lay.n_events * n_par)
        raw = flat.reshape(lay.n_events, n_par)
        if types[0].kind == "f":
            return raw.astype(out_dtype, copy=False) if raw.dtype.isnative else raw.astype(out_dtype)
        if any(m is not None for m in lay.masks):
            full = np.iinfo(types[0]).max
            mask_row = np.array(
                [full if m is None else m for m in lay.masks], dtype=types[0].newbyteorder("=")
            )
            raw = np.bitwise_and(raw, mask_row)
        return raw.astype(np.float64)
    # Mixed widths or types: one structured read, then column by column.
    fields = []
    for i, (t, w) in enumerate(zip(types, lay.widths, strict=True)):
        fields.append((f"p{i}", t if t is not None else np.dtype(f"V{w}")))
    rec_type = np.dtype(fields)
    rec = src.array(lay.start, rec_type, lay.n_events)
    out = np.empty((lay.n_events, n_par), dtype=out_dtype)
    for i, (t, w, m) in enumerate(zip(types, lay.widths, lay.masks, strict=True)):
        col = rec[f"p{i}"]
        if t is None:  # odd integer widths (3, 5, 6, 7 bytes): assemble from bytes
            b = np.frombuffer(col.tobytes(), dtype=np.uint8).reshape(lay.n_events, w).astype(np.uint64)  # type: ignore[arg-type]
            order = range(w) if lay.big_endian else range(w - 1, -1, -1)  # type: ignore[arg-type]
            vals = np.zeros(lay.n_events, dtype=np.uint64)
            for j in order:
                vals = (vals << np.uint64(8)) | b[:, j]
            col = vals
        if m is not None:
            col = np.bitwise_and(col, np.asarray(m, dtype=col.dtype))
        out[:, i] = col
    return out


def _read_ascii(src: _FileSource | _BytesSource, lay: _Layout, path: Path | None) -> np.ndarray:
    n_par = len(lay.kinds)
    if set(lay.kinds) != {"A"}:
        raise FCSError(path, "ASCII data mixed with binary parameters is not supported")
    blob = src.read(lay.start, lay.nbytes)
    if any(w is None for w in lay.widths):
        tokens = _NUMBER_RE.findall(blob)
    else:
        per_event = sum(lay.widths)  # type: ignore[arg-type]
        n = lay.n_events if lay.n_events >= 0 else len(blob) // per_event
        if n * per_event > len(blob):
            raise FCSError(path, f"ASCII DATA holds {len(blob)} bytes, {n} events need {n * per_event}")
        tokens = []
        pos = 0
        for _ in range(n):
            for w in lay.widths:
                tokens.append(blob[pos : pos + w])  # type: ignore[operator]
                pos += w  # type: ignore[operator]
    try:
        values = np.array([float(t) for t in tokens], dtype=np.float64)
    except ValueError:
        raise FCSError(path, "ASCII DATA holds a value that is not a number") from None
    n_events = lay.n_events if lay.n_events >= 0 else values.size // n_par
    if values.size < n_events * n_par:
        raise FCSError(path, f"ASCII DATA holds {values.size} values, $TOT x $PAR needs {n_events * n_par}")
    return values[: n_events * n_par].reshape(n_events, n_par)


