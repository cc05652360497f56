"""Reading FCS files (FCS 2.0, 3.0, 3.1 and 3.2).

:func:`read_fcs` returns an :class:`FCSSample`: the event matrix, the channel
table, the keywords, the spillover matrix when the file has one, and which data
set of the file it is. With ``lazy=True`` only the HEADER and TEXT are read; the
events are read on first access (fast scans of a plate).

Reading rules (each repair emits an :class:`~flowtools.errors.FCSWarning` and is
listed in :attr:`FCSSample.warnings`; anything that cannot be repaired raises
:class:`~flowtools.errors.FCSError` naming the file):

* **DATA offsets.** Candidates are the HEADER offsets and the TEXT keywords
  ``$BEGINDATA``/``$ENDDATA``. Blank or zero HEADER offsets (files over
  99,999,999 bytes) defer to TEXT silently. When both are given and disagree,
  the one whose span holds exactly ``$TOT`` x (bytes per event) wins, then one
  that is a single byte too long, then TEXT (the FCS 3.x authority); a warning
  names both values. A span one byte longer than needed (a common writer bug)
  is read with a warning; a span shorter than needed, or data running past the
  end of the file, is an error.
* **Integer data** (``$DATATYPE I``) may have any byte-aligned ``$PnB`` from 8 to
  64, different per parameter; each value is masked to the next power of two at
  or above ``$PnR`` (as FCS 3.1 requires and FlowIO does).
* **TEXT** is split on its first byte; a doubled delimiter is a literal one.
  Keys are upper-cased. Values are decoded as UTF-8, else Latin-1. A keyword
  given twice keeps its first value (warning). Supplemental TEXT
  (``$BEGINSTEXT``) is merged, the primary TEXT winning; a supplemental
  segment that is not keyword text (a ZIP archive or other binary data) is
  skipped with a warning instead of being split into binary "keywords".
* **Multiple data sets** (``$NEXTDATA``, relative to the current data set) are
  walked with a strictly increasing offset, so a malicious loop cannot hang the
  reader. ``dataset=`` picks one; :attr:`FCSSample.n_datasets` tells how many.
* Nothing is allocated before the file is known to hold the bytes: a lying
  header cannot make the reader allocate more than the file's size.
"""

from __future__ import annotations

import io
import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from flowtools.errors import FCSError, FCSWarning
from flowtools.io.channels import ChannelKinds, classify_channels, kind_of_name
from flowtools.io.keywords import safe_keywords

__all__ = ["Channel", "FCSSample", "Spillover", "count_datasets", "read_fcs"]

_HEADER_LEN = 58
_VERSIONS = ("2.0", "3.0", "3.1", "3.2")
_SPILL_KEYS = ("$SPILLOVER", "SPILL", "$SPILL", "SPILLOVER", "$COMP")
_LITTLE = {"1,2,3,4", "1,2", "1"}
_BIG = {"4,3,2,1", "2,1"}
_MAX_DATASETS = 1000
_PAD = "\x00 \r\n\t"
_NUMBER_RE = re.compile(rb"[^\s,]+")

Source = str | os.PathLike[str] | bytes | bytearray | memoryview


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


class FCSSample:
    """One data set of an FCS file.

    Made by :func:`read_fcs`; not meant to be built by hand.

    Attributes
    ----------
    path : pathlib.Path or None
        The file (None for in-memory data).
    version : str
        FCS version from the HEADER (``"3.1"``).
    dataset : int
        0-based index of this data set in the file.
    n_datasets : int
        Number of data sets in the file.
    keywords : dict of str to str
        All TEXT keywords, upper-case keys. May hold personal data: use
        :meth:`safe_keywords` for anything shown or written.
    channels : tuple of Channel
    spillover : Spillover or None
    warnings : tuple of str
        Repairs applied while reading (also emitted as ``FCSWarning``).
    """

    def __init__(
        self,
        *,
        path: Path | None,
        version: str,
        dataset: int,
        n_datasets: int,
        keywords: dict[str, str],
        channels: tuple[Channel, ...],
        spillover: Spillover | None,
        warnings: tuple[str, ...],
        layout: _Layout,
        events: np.ndarray | None,
        file_stamp: tuple[int, int] | None,
    ) -> None:
        self.path = path
        self.version = version
        self.dataset = dataset
        self.n_datasets = n_datasets
        self.keywords = keywords
        self.channels = channels
        self.spillover = spillover
        self.warnings = warnings
        self._layout = layout
        self._events = events
        self._file_stamp = file_stamp

    def __repr__(self) -> str:
        name = self.path.name if self.path is not None else "<in-memory>"
        return (
            f"FCSSample({name!r}, FCS{self.version}, dataset {self.dataset + 1}/{self.n_datasets}, "
            f"{self.n_events} events x {self.n_channels} channels)"
        )

    @property
    def n_events(self) -> int:
        """Number of events (rows)."""
        if self._layout.n_events < 0:  # delimited ASCII without $TOT: counted when read
            return self.events.shape[0]
        return self._layout.n_events

    @property
    def n_channels(self) -> int:
        """Number of parameters (columns)."""
        return len(self.channels)

    @property
    def pnn(self) -> list[str]:
        """Detector names (``$PnN``) in column order."""
        return [c.pnn for c in self.channels]

    @property
    def pns(self) -> list[str]:
        """Marker names (``$PnS``, ``""`` when absent) in column order."""
        return [c.pns for c in self.channels]

    @property
    def data_type(self) -> str:
        """``$DATATYPE`` of the data set (``"I"``, ``"F"``, ``"D"`` or ``"A"``)."""
        return self.keywords.get("$DATATYPE", "").strip().upper()

    @property
    def is_loaded(self) -> bool:
        """True once the events have been read."""
        return self._events is not None

    @property
    def events(self) -> np.ndarray:
        """The event matrix as stored, shape (n_events, n_channels).

        float32 when every parameter is stored as ``F``; float64 otherwise
        (integers are masked per ``$PnR`` and converted exactly). No gain, log
        or time-step scaling is applied: see :meth:`as_array`. Read from disk on
        first access when the sample was read lazily.
        """
        if self._events is None:
            self._events = self._load()
        return self._events

    def as_array(self, *, preprocess: bool = False, dtype: np.dtype[Any] | type = np.float64) -> np.ndarray:
        """Return the events as a new array, optionally scaled as FlowIO does.

        Parameters
        ----------
        preprocess : bool, default False
            Apply the FCS scaling: the time channel (``$PnN`` "Time") times
            ``$TIMESTEP``; log parameters (``$PnE`` f1 > 0) to
            ``10**(f1 * x / $PnR) * f2`` (f2 = 0 read as 1); then division by
            ``$PnG`` (not for time). Bit-identical to FlowIO's
            ``as_array(preprocess=True)``.
        dtype : numpy dtype, default float64

        Returns
        -------
        ndarray, shape (n_events, n_channels)
        """
        out = np.array(self.events, dtype=np.float64, order="C", copy=True)
        if preprocess:
            self._preprocess(out)
        return out.astype(dtype, copy=False)

    def channel_kinds(self, time: str | None = None) -> ChannelKinds:
        """Each parameter's kind (time, scatter, fluorescence, other) and why (:mod:`flowtools.io.channels`).

        Parameters
        ----------
        time : str, optional
            The time parameter as a template names it (``$PnN`` or ``$PnS``); overrides the rules.
        """
        key = time or ""
        cache = self.__dict__.setdefault("_kinds", {})
        if key not in cache:
            events = self._events if "$TIMESTEP" in self.keywords else None
            if events is None and "$TIMESTEP" in self.keywords and not any(
                    kind_of_name(c.pnn) == "time" or kind_of_name(c.pns) == "time" for c in self.channels):
                events = self.events  # only then are the values needed to find the time parameter
            cache[key] = classify_channels(self.pnn, self.pns, self.keywords, time=time, events=events)
        return cache[key]

    def _time_step(self) -> tuple[int | None, float]:
        t = self.channel_kinds().time
        time_idx = next((c.index for c in self.channels if c.pnn == t), None)
        step = 1.0
        if time_idx is not None and "$TIMESTEP" in self.keywords:
            raw = self.keywords["$TIMESTEP"].strip()
            try:
                step = float(raw) if raw else 1.0
            except ValueError:
                step = 1.0
        return time_idx, step

    def scaled_channels(self) -> list[int]:
        """Columns that ``as_array(preprocess=True)`` changes (time step, log decoding, gain)."""
        time_idx, step = self._time_step()
        out = []
        for c in self.channels:
            decades, _ = c.pne
            if (
                (c.index == time_idx and step != 1.0)
                or (decades > 0 and c.pnr)
                or (c.index != time_idx and c.png not in (1.0, 0.0))
            ):
                out.append(c.index)
        return out

    def scaled_column(self, index: int) -> np.ndarray:
        """One column on the FCS scale, float64: bit-identical to ``as_array(preprocess=True)[:, index]``."""
        time_idx, step = self._time_step()
        col = np.array(self.events[:, index], dtype=np.float64)
        return self._scale_column(col, self.channels[index], time_idx, step)

    def _scale_column(self, col: np.ndarray, c: Channel, time_idx: int | None, step: float) -> np.ndarray:
        # Same formula and operation order as FlowIO 1.4, so results are bit-identical.
        if c.index == time_idx and "$TIMESTEP" in self.keywords:
            col = col * step
        decades, log0 = c.pne
        if decades > 0 and c.pnr:
            col = _log_decode(col, decades, c.pnr) * log0
        gain = 1.0 if c.index == time_idx else c.png
        if gain not in (1.0, 0.0):
            col = col / gain
        return col

    def scaled_events(self, keep_raw: Sequence[str] = ()) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The events on the FCS scale without copying the matrix where possible, read-only.

        Returns ``(events, columns)``. When the stored events are native floats
        and no channel named in ``keep_raw`` (e.g. a compensation matrix's
        detectors, which must be scaled before compensating) needs scaling,
        ``events`` is a read-only view of the stored values (float32 or float64:
        consumers widen to float64 exactly) and ``columns`` maps the ``$PnN`` of
        each channel that needs scaling (typically only Time, by ``$TIMESTEP``)
        to its scaled float64 values, which replace that column. Otherwise
        ``events`` is ``as_array(preprocess=True)`` and ``columns`` is empty.
        Gating a 200k x 14 float32 file this way needs no 22 MB float64 copy.
        """
        ev = self.events
        scaled = self.scaled_channels()
        names = set(keep_raw)
        if ev.dtype in (np.float32, np.float64) and ev.dtype.isnative and not any(
            self.channels[i].pnn in names for i in scaled
        ):
            out = ev.view()
            columns = {self.channels[i].pnn: self.scaled_column(i) for i in scaled}
        else:
            out, columns = self.as_array(preprocess=True), {}
        out.flags.writeable = False
        return out, columns

    def channel_index(self, name: str) -> int:
        """Return the column of a channel given its ``$PnN`` or ``$PnS``.

        ``$PnN`` matches win over ``$PnS`` matches; an ambiguous ``$PnS`` raises.

        Raises
        ------
        KeyError
            No channel, or several markers, of that name.
        """
        for c in self.channels:
            if c.pnn == name:
                return c.index
        hits = [c.index for c in self.channels if c.pns and c.pns == name]
        if len(hits) == 1:
            return hits[0]
        where = self.path.name if self.path is not None else "<in-memory>"
        if hits:
            msg = f"{where}: marker {name!r} names several channels: {[self.channels[i].pnn for i in hits]}"
            raise KeyError(msg)
        msg = f"{where}: no channel {name!r}; channels are {[c.label for c in self.channels]}"
        raise KeyError(msg)

    def safe_keywords(self) -> dict[str, str]:
        """Keywords that describe layout and measurement only (no free text, no personal data)."""
        return safe_keywords(self.keywords)

    # -- internals -------------------------------------------------------------------------------

    def _preprocess(self, out: np.ndarray) -> None:
        time_idx, step = self._time_step()
        for c in self.channels:
            out[:, c.index] = self._scale_column(out[:, c.index], c, time_idx, step)

    def _load(self) -> np.ndarray:
        if self.path is None:  # in-memory samples are always read eagerly
            msg = "in-memory sample has no events"
            raise FCSError(None, msg)
        try:
            st = self.path.stat()
        except OSError as exc:
            raise FCSError(self.path, f"cannot re-open file to read events: {exc.strerror}") from exc
        if self._file_stamp is not None and (st.st_size, st.st_mtime_ns) != self._file_stamp:
            raise FCSError(self.path, "file changed on disk since its HEADER was read; read it again")
        with open(self.path, "rb") as fh:
            return _read_events(_FileSource(fh, st.st_size, self.path), self._layout, self.path)


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
# Byte sources: a file on disk, or bytes in memory.


class _FileSource:
    def __init__(self, fh: BinaryIO, size: int, path: Path | None) -> None:
        self.fh = fh
        self.size = size
        self.path = path

    def read(self, offset: int, n: int) -> bytes:
        self.fh.seek(offset)
        return self.fh.read(n)

    def array(self, offset: int, dtype: np.dtype[Any], count: int) -> np.ndarray:
        self.fh.seek(offset)
        if isinstance(self.fh, io.BufferedReader | io.FileIO):
            arr = np.fromfile(self.fh, dtype=dtype, count=count)
        else:
            arr = np.frombuffer(self.fh.read(count * dtype.itemsize), dtype=dtype)
        if arr.shape[0] != count:
            raise FCSError(self.path, f"file ended while reading DATA ({arr.shape[0]} of {count} values)")
        return arr


class _BytesSource:
    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.buf = memoryview(data).cast("B")
        self.size = len(self.buf)
        self.path = None

    def read(self, offset: int, n: int) -> bytes:
        return bytes(self.buf[offset : offset + n])

    def array(self, offset: int, dtype: np.dtype[Any], count: int) -> np.ndarray:
        n = count * dtype.itemsize
        if offset + n > self.size:
            raise FCSError(None, "data ended while reading DATA")
        return np.frombuffer(self.buf, dtype=dtype, count=count, offset=offset).copy()


# ---------------------------------------------------------------------------------------------
# Public entry points


def read_fcs(
    source: Source,
    *,
    dataset: int = 0,
    lazy: bool = False,
) -> FCSSample:
    """Read one data set of an FCS file.

    Parameters
    ----------
    source : path or bytes
        The FCS file, or its bytes.
    dataset : int, default 0
        Which data set to read, for files with several (``$NEXTDATA``).
    lazy : bool, default False
        Read only HEADER and TEXT now; the events are read on first access to
        :attr:`FCSSample.events`. Ignored for in-memory bytes.

    Returns
    -------
    FCSSample

    Raises
    ------
    FCSError
        The file is not FCS, is truncated, or holds something this reader
        cannot decode; the message names the file and what is wrong.
    FileNotFoundError
        The path does not exist.

    Warns
    -----
    FCSWarning
        For each repair applied (see the module documentation).

    Examples
    --------
    >>> sample = read_fcs("plate1/A01.fcs")  # doctest: +SKIP
    >>> sample.events.shape  # doctest: +SKIP
    (200000, 14)
    """
    if isinstance(dataset, bool) or not isinstance(dataset, int) or dataset < 0:
        msg = f"dataset must be a non-negative int, not {dataset!r}"
        raise ValueError(msg)
    notes: list[str] = []
    if isinstance(source, bytes | bytearray | memoryview):
        src: _FileSource | _BytesSource = _BytesSource(source)
        sample = _read(src, None, dataset, notes, lazy=False, stamp=None)
    else:
        path = Path(os.fspath(source))
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            src = _FileSource(fh, st.st_size, path)
            sample = _read(src, path, dataset, notes, lazy=lazy, stamp=(st.st_size, st.st_mtime_ns))
    where = str(sample.path) if sample.path is not None else "<in-memory FCS data>"
    for note in notes:
        warnings.warn(f"{where}: {note}", FCSWarning, stacklevel=2)
    return sample


def count_datasets(source: Source) -> int:
    """Return how many data sets an FCS file holds (following ``$NEXTDATA``).

    Raises
    ------
    FCSError
        The first data set's HEADER or TEXT cannot be read.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        return len(_walk_datasets(_BytesSource(source))[0])
    path = Path(os.fspath(source))
    with open(path, "rb") as fh:
        return len(_walk_datasets(_FileSource(fh, os.fstat(fh.fileno()).st_size, path))[0])


# ---------------------------------------------------------------------------------------------
# HEADER and TEXT


@dataclass
class _Header:
    version: str
    text: tuple[int, int]
    data: tuple[int | None, int | None]


def _parse_header(src: _FileSource | _BytesSource, base: int) -> _Header:
    raw = src.read(base, _HEADER_LEN)
    if len(raw) < _HEADER_LEN:
        what = "file" if base == 0 else f"data set at byte {base}"
        raise FCSError(
            src.path, f"not an FCS file: {what} has {len(raw)} bytes, a HEADER needs {_HEADER_LEN}"
        )
    if raw[:3] != b"FCS":
        raise FCSError(src.path, "not an FCS file: it does not start with 'FCS'")
    version = raw[3:6].decode("ascii", "replace")
    if version not in _VERSIONS:
        raise FCSError(src.path, f"unsupported FCS version {version!r} (supported: {', '.join(_VERSIONS)})")

    def offset(lo: int, name: str) -> int | None:
        field_ = raw[lo : lo + 8].strip()
        if not field_:
            return None
        if not field_.isdigit():
            raise FCSError(src.path, f"HEADER {name} offset is not a number: {field_[:8]!r}")
        return int(field_)

    t0, t1 = offset(10, "TEXT start"), offset(18, "TEXT end")
    if t0 is None or t1 is None:
        raise FCSError(src.path, "HEADER has no TEXT segment offsets")
    return _Header(version, (t0, t1), (offset(26, "DATA start"), offset(34, "DATA end")))


def _read_text_segment(src: _FileSource | _BytesSource, base: int, start: int, end: int, what: str) -> bytes:
    if start < _HEADER_LEN and what == "TEXT":
        raise FCSError(src.path, f"{what} segment starts at byte {start}, inside the HEADER")
    if end < start + 1:
        raise FCSError(src.path, f"{what} segment offsets are impossible ({start}..{end})")
    if base + end >= src.size:
        raise FCSError(
            src.path, f"{what} segment ends at byte {base + end}, past the end of the file ({src.size} bytes)"
        )
    return src.read(base + start, end - start + 1)


def _split_text(text: str, notes: list[str], what: str) -> list[str]:
    """Split a TEXT segment into fields; a doubled delimiter is a literal delimiter."""
    delim = text[:1]
    body = text[1:]
    if delim + delim not in body:
        fields = body.split(delim)
        tail = fields.pop()  # what follows the final delimiter
    else:
        fields = []
        cur: list[str] = []
        i, n = 0, len(body)
        while True:
            j = body.find(delim, i)
            if j == -1:
                tail = "".join(cur) + body[i:]
                break
            if j + 1 < n and body[j + 1] == delim:
                if not body[j + 2 :].strip(_PAD):
                    # A doubled delimiter closing the segment: an (illegal but common in
                    # FCS 2.0) empty last value, not an escaped delimiter.
                    cur.append(body[i:j])
                    fields.extend(("".join(cur), ""))
                    tail = ""
                    break
                cur.append(body[i : j + 1])
                i = j + 2
                continue
            cur.append(body[i:j])
            fields.append("".join(cur))
            cur.clear()
            i = j + 1
    if tail.strip(_PAD):
        if len(fields) % 2 == 1:
            fields.append(tail)
            notes.append(f"{what} segment does not end with its delimiter; last value read up to segment end")
        else:
            notes.append(
                f"{what} segment has {len(tail)} stray characters after its last delimiter (ignored)"
            )
    return fields


def _latin1_fallback(field_: str) -> str:
    """Undo a surrogate-escaped UTF-8 decode of a field that is not UTF-8: read it as Latin-1."""
    try:
        field_.encode("utf-8")
    except UnicodeEncodeError:
        return field_.encode("utf-8", "surrogateescape").decode("latin-1")
    return field_


def _parse_pairs(text: bytes, notes: list[str], what: str) -> dict[str, str]:
    if len(text) < 2:
        raise FCSError(None, f"{what} segment is empty")
    # Decode once (the common case); fields that are not UTF-8 are re-read as Latin-1.
    try:
        decoded = text.decode("utf-8")
        mixed = False
    except UnicodeDecodeError:
        decoded = text.decode("utf-8", "surrogateescape")
        mixed = True
    fields = _split_text(decoded, notes, what)
    if mixed:
        fields = [_latin1_fallback(f) for f in fields]
    if len(fields) % 2 == 1:
        # The dropped field is not echoed: after a misalignment it may be a (personal) value.
        notes.append(f"{what} segment has an odd number of fields; the last one was dropped")
        fields.pop()
    keys = [k.strip().upper() for k in fields[0::2]]
    out = dict(zip(keys, fields[1::2], strict=True))
    if len(out) == len(keys) and "" not in out:
        return out
    # Duplicates or empty keys: the first value wins.
    out = {}
    dupes = set()
    for key, value in zip(keys, fields[1::2], strict=True):
        if not key:
            continue
        if key in out:
            dupes.add(key)
            continue
        out[key] = value
    if dupes:
        notes.append(f"keyword(s) given more than once, first value kept: {', '.join(sorted(dupes))}")
    return out


# Signatures of binary formats a writer may put where supplemental TEXT should be.
_BINARY_MAGIC = (
    (b"PK\x03\x04", "a ZIP archive"),
    (b"PK\x05\x06", "an empty ZIP archive"),
    (b"\x1f\x8b", "gzip data"),
    (b"BZh", "bzip2 data"),
    (b"\xfd7zXZ\x00", "xz data"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
)
#: Above this share of control characters a segment is binary (keyword text has next to none).
_MAX_CONTROL_SHARE = 0.10


def _control_chars(text: str, allowed: str = "\t\n\r") -> int:
    """Count the characters of ``text`` that are not printable text (C0/C1 controls, DEL, stray bytes).

    ``text`` is decoded UTF-8 with ``surrogateescape``: a byte that is not UTF-8 counts only when it
    is a control character in Latin-1 too (0x80-0x9F), so Latin-1 text counts as text.
    """
    n = 0
    for ch in text:
        o = ord(ch)
        if o < 0x20 or 0x7F <= o <= 0x9F:
            n += ch not in allowed
        elif 0xDC80 <= o <= 0xDC9F:  # surrogate-escaped byte 0x80..0x9F
            n += 1
    return n


def _not_keyword_text(segment: bytes) -> str | None:
    """Why a supplemental TEXT segment is not FCS keyword text, or None when it may be.

    Some writers put an archive or other binary data there; split on its first byte it would
    give dozens of binary "keywords". A segment is binary when it starts with a known binary
    signature, when its first byte cannot be a delimiter (FCS: ASCII 1-126), when it holds no
    keyword/value pair, or when more than 10% of its characters are control characters (the
    delimiter itself, tab, CR and LF excepted).
    """
    for magic, what in _BINARY_MAGIC:
        if segment.startswith(magic):
            return what
    first = segment[0]
    if not 1 <= first <= 126:
        return f"its first byte 0x{first:02x} cannot be a delimiter"
    body = segment[1:].rstrip(_PAD.encode().replace(segment[:1], b""))
    if body.count(segment[:1]) < 2:
        return "no delimited keyword/value pairs"
    text = body.decode("utf-8", "surrogateescape")
    bad = _control_chars(text, "\t\n\r" + chr(first))
    if bad > _MAX_CONTROL_SHARE * len(text):
        return f"binary data: {bad:,} of {len(text):,} characters are control characters"
    return None


def _int_kw(kw: dict[str, str], key: str) -> int | None:
    raw = kw.get(key)
    if raw is None:
        return None
    raw = raw.strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        try:
            f = float(raw)
        except ValueError:
            return None
        return int(f) if f.is_integer() else None


def _read_keywords(
    src: _FileSource | _BytesSource, base: int, header: _Header, notes: list[str]
) -> dict[str, str]:
    text = _read_text_segment(src, base, header.text[0], header.text[1], "TEXT")
    try:
        kw = _parse_pairs(text, notes, "TEXT")
    except FCSError as exc:
        raise FCSError(src.path, exc.reason) from None
    s0, s1 = _int_kw(kw, "$BEGINSTEXT"), _int_kw(kw, "$ENDSTEXT")
    if s0 and s1 and s1 > s0:
        extra: dict[str, str] = {}
        try:
            stext = _read_text_segment(src, base, s0, s1, "supplemental TEXT")
            why = _not_keyword_text(stext)
            if why is None:
                extra = _parse_pairs(stext, notes, "supplemental TEXT")
            else:
                notes.append(
                    f"supplemental TEXT segment (bytes {s0}..{s1}, {len(stext):,} bytes) is not keyword "
                    f"text ({why}); skipped, none of it read as keywords"
                )
        except FCSError as exc:
            notes.append(f"supplemental TEXT ignored: {exc.reason}")
        for k, v in extra.items():
            kw.setdefault(k, v)
    return kw


def _walk_datasets(
    src: _FileSource | _BytesSource, stop_at: int | None = None
) -> tuple[list[tuple[int, _Header, dict[str, str], list[str]]], list[str]]:
    """Parse each data set's HEADER and TEXT, following $NEXTDATA with strictly increasing offsets.

    Returns the data sets as (base offset, header, keywords, notes) and the notes
    about the chain itself. Stops after data set ``stop_at`` when given.
    """
    found: list[tuple[int, _Header, dict[str, str], list[str]]] = []
    chain_notes: list[str] = []
    base = 0
    while len(found) < _MAX_DATASETS:
        notes: list[str] = []
        try:
            header = _parse_header(src, base)
            kw = _read_keywords(src, base, header, notes)
        except FCSError as exc:
            if not found:
                raise
            chain_notes.append(f"data set {len(found) + 1} cannot be read ({exc.reason}); ignored")
            break
        found.append((base, header, kw, notes))
        nxt = _int_kw(kw, "$NEXTDATA")
        if not nxt or (stop_at is not None and len(found) > stop_at):
            break
        new_base = base + nxt
        if nxt < 0 or new_base + _HEADER_LEN > src.size:
            chain_notes.append(
                f"$NEXTDATA of data set {len(found)} points outside the file; later data sets ignored"
            )
            break
        try:
            _parse_header(src, new_base)
        except FCSError as exc:
            chain_notes.append(
                f"$NEXTDATA of data set {len(found)} is not a readable data set ({exc.reason}); ignored"
            )
            break
        base = new_base
    return found, chain_notes


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


# ---------------------------------------------------------------------------------------------


def _read(
    src: _FileSource | _BytesSource,
    path: Path | None,
    dataset: int,
    notes: list[str],
    *,
    lazy: bool,
    stamp: tuple[int, int] | None,
) -> FCSSample:
    # Walk the whole chain so that n_datasets is known; it is one HEADER for most files.
    found, chain_notes = _walk_datasets(src)
    if dataset >= len(found):
        raise FCSError(path, f"data set {dataset} requested, but the file holds {len(found)}")
    base, header, kw, text_notes = found[dataset]
    notes.extend(text_notes)
    notes.extend(chain_notes)
    n_par = _int_kw(kw, "$PAR")
    if n_par is None or n_par <= 0:
        raise FCSError(path, f"$PAR is missing or not a positive number ({kw.get('$PAR', '')[:20]!r})")
    if n_par > len(kw):  # each parameter needs at least its $PnB keyword
        raise FCSError(path, f"$PAR={n_par} but TEXT holds only {len(kw)} keywords")
    if "$DATATYPE" not in kw:
        raise FCSError(path, "$DATATYPE keyword is missing")
    channels = _channels(kw, n_par, path, notes)
    layout = _layout(kw, channels, header, base, src, notes)
    spill = _spillover(kw, channels, notes)
    events = None if lazy else _read_events(src, layout, path)
    if events is not None and layout.n_events < 0:
        layout = _Layout(
            layout.start,
            layout.nbytes,
            events.shape[0],
            layout.kinds,
            layout.widths,
            layout.masks,
            layout.big_endian,
        )
    return FCSSample(
        path=path,
        version=header.version,
        dataset=dataset,
        n_datasets=len(found),
        keywords=kw,
        channels=channels,
        spillover=spill,
        warnings=tuple(notes),
        layout=layout,
        events=events,
        file_stamp=stamp,
    )
