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

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flowtools.errors import FCSError, FCSWarning
from flowtools.io._fcs_data import (
    Channel,
    Spillover,
    _channels,
    _Layout,
    _layout,
    _log_decode,
    _read_events,
    _spillover,
)
from flowtools.io._fcs_segments import _BytesSource, _FileSource, _int_kw, _walk_datasets
from flowtools.io.channels import ChannelKinds, classify_channels, kind_of_name
from flowtools.io.keywords import safe_keywords

Source = str | os.PathLike[str] | bytes | bytearray | memoryview


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
