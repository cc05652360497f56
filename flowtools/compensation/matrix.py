"""Spillover matrices: where they come from, and applying them to events.

Convention (FCS, FlowJo, FlowKit, Gating-ML ``spectrumMatrix``): a spillover
matrix ``S`` has one row per fluorochrome and one column per detector, and
``observed = true @ S``. Compensation is therefore ``true = observed @ inv(S)``
for a square matrix, and the least-squares solution
``true = observed @ pinv(S)`` for a spectral matrix with more detectors than
fluorochromes (unmixing).

Sources: the FCS keyword (``$SPILLOVER``, ``$SPILL``, ``SPILL``, FCS 3.0
``$COMP``), CSV/TSV files (FlowKit layout: a header row of detector names then
the rows; FlowJo layout: the same with a label cell starting each row; ``#``
before the header allowed; no header at all when detector names are given), and
arrays with channel names. Channels are matched to the sample by ``$PnN``;
a mismatch is a :class:`~flowtools.errors.CompensationError` naming the channels.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from flowtools.errors import CompensationError
from flowtools.io.fcs import FCSSample, Spillover

__all__ = ["SpilloverMatrix", "compensate"]


@dataclass(frozen=True, eq=False)
class SpilloverMatrix:
    """A spillover matrix with its channel names (immutable).

    Parameters
    ----------
    matrix : ndarray, shape (n_fluorochromes, n_detectors)
        Spillover coefficients, ``observed = true @ matrix``.
    detectors : tuple of str
        ``$PnN`` of the detector columns.
    fluorochromes : tuple of str, optional
        Row names. Default: the detectors (a square compensation matrix).
    source : str
        Where it came from (shown in errors and provenance).
    """

    matrix: np.ndarray = field(repr=False)
    detectors: tuple[str, ...]
    fluorochromes: tuple[str, ...] = ()
    source: str = "array"

    def __post_init__(self) -> None:
        m = np.array(self.matrix, dtype=np.float64, copy=True)
        dets = tuple(str(d) for d in self.detectors)
        fluo = tuple(str(f) for f in self.fluorochromes) or dets
        where = f"spillover matrix from {self.source}"
        if m.ndim != 2 or m.shape != (len(fluo), len(dets)):
            msg = f"{where}: shape {m.shape} does not match {len(fluo)} fluorochromes x {len(dets)} detectors"
            raise CompensationError(msg)
        if len(set(dets)) != len(dets):
            msg = f"{where}: detector names repeat: {sorted({d for d in dets if dets.count(d) > 1})}"
            raise CompensationError(msg)
        if not np.all(np.isfinite(m)):
            msg = f"{where}: holds NaN or infinite values"
            raise CompensationError(msg)
        if m.shape[0] > m.shape[1]:
            msg = (
                f"{where}: more fluorochromes ({m.shape[0]}) than detectors ({m.shape[1]}) cannot be unmixed"
            )
            raise CompensationError(msg)
        if np.linalg.matrix_rank(m) < m.shape[0]:
            msg = (
                f"{where}: is singular (rank {np.linalg.matrix_rank(m)} < {m.shape[0]}); "
                "it cannot be inverted"
            )
            raise CompensationError(msg)
        m.setflags(write=False)
        object.__setattr__(self, "matrix", m)
        object.__setattr__(self, "detectors", dets)
        object.__setattr__(self, "fluorochromes", fluo)

    # -- construction ----------------------------------------------------------------------------

    @classmethod
    def from_array(
        cls,
        matrix: np.ndarray | Sequence[Sequence[float]],
        detectors: Sequence[str],
        fluorochromes: Sequence[str] | None = None,
        *,
        source: str = "array",
    ) -> SpilloverMatrix:
        """Build from an array and its detector (and, for spectral, fluorochrome) names."""
        return cls(np.asarray(matrix, dtype=np.float64), tuple(detectors), tuple(fluorochromes or ()), source)

    @classmethod
    def from_spillover(cls, spill: Spillover, *, source: str | None = None) -> SpilloverMatrix:
        """Build from the :class:`~flowtools.io.Spillover` that :func:`~flowtools.io.read_fcs` parsed."""
        return cls(spill.matrix, spill.detectors, (), source or f"FCS keyword {spill.keyword}")

    @classmethod
    def from_fcs(cls, sample: FCSSample) -> SpilloverMatrix:
        """The matrix stored in an FCS file's keywords.

        Raises
        ------
        CompensationError
            The file holds no (well-formed) spillover keyword.
        """
        where = sample.path.name if sample.path is not None else "<in-memory FCS data>"
        if sample.spillover is None:
            msg = f"{where}: no spillover keyword ($SPILLOVER, $SPILL, SPILL) in the FCS file"
            raise CompensationError(msg)
        return cls.from_spillover(sample.spillover, source=f"{where} {sample.spillover.keyword}")

    @classmethod
    def from_keyword(cls, value: str, *, source: str = "$SPILLOVER keyword") -> SpilloverMatrix:
        """Parse a ``$SPILLOVER``-format string: ``n,name1..namen,v11,v12,...``."""
        parts = [p.strip() for p in value.split(",")]
        try:
            n = int(parts[0])
        except ValueError:
            msg = f"{source}: the first field must be the number of detectors, not {parts[0][:20]!r}"
            raise CompensationError(msg) from None
        if n <= 0 or len(parts) != 1 + n + n * n:
            msg = f"{source}: n={n} needs {n} names and {n * n} values, found {len(parts) - 1} fields"
            raise CompensationError(msg)
        try:
            values = np.array([float(v) for v in parts[1 + n :]]).reshape(n, n)
        except ValueError:
            msg = f"{source}: a matrix value is not a number"
            raise CompensationError(msg) from None
        return cls(values, tuple(parts[1 : 1 + n]), (), source)

    @classmethod
    def from_csv(
        cls, path: str | os.PathLike[str], *, detectors: Sequence[str] | None = None
    ) -> SpilloverMatrix:
        """Read a matrix from a CSV or TSV file.

        Accepted layouts: a header row of detector names (optionally after
        ``#``) followed by one row per fluorochrome; the same with a label
        cell opening each row (FlowJo); or numbers only, with ``detectors``
        given. Blank lines and comment lines before the header are skipped.

        Raises
        ------
        CompensationError
            The layout cannot be understood; the message names the file and line.
        """
        p = Path(path)
        text = p.read_text(encoding="utf-8-sig")
        return cls._from_text(text, detectors=detectors, source=str(p))

    @classmethod
    def _from_text(cls, text: str, *, detectors: Sequence[str] | None, source: str) -> SpilloverMatrix:
        lines = [(i, ln) for i, ln in enumerate(text.splitlines(), start=1) if ln.strip()]
        if not lines:
            msg = f"{source}: the file is empty"
            raise CompensationError(msg)
        sample_line = lines[0][1]
        delim = (
            "\t" if "\t" in sample_line else (";" if sample_line.count(";") > sample_line.count(",") else ",")
        )
        rows = [
            (i, [c.strip() for c in next(csv.reader(io.StringIO(ln), delimiter=delim))]) for i, ln in lines
        ]

        def numeric(cells: list[str]) -> bool:
            try:
                [float(c) for c in cells]
            except ValueError:
                return False
            return bool(cells)

        header: list[str] | None = None
        body = rows
        first_line, first = rows[0]
        if first and first[0].startswith("#"):
            first = [first[0].lstrip("#").strip(), *first[1:]]
        if not numeric(first):
            header = first
            body = rows[1:]
        if header is None:
            if detectors is None:
                msg = f"{source}: no header row of detector names; pass detectors= to name the columns"
                raise CompensationError(msg)
            header = list(detectors)
        labels: list[str] = []
        values: list[list[float]] = []
        for line_no, cells in body:
            if not numeric(cells):
                if numeric(cells[1:]):
                    labels.append(cells[0])  # FlowJo layout: row label first
                    cells = cells[1:]
                else:
                    msg = f"{source}, line {line_no}: expected numbers, found {cells[:4]}"
                    raise CompensationError(msg)
            values.append([float(c) for c in cells])
        if header and header[0] == "" and labels:
            header = header[1:]  # FlowJo: an empty corner cell above the row labels
        widths = {len(v) for v in values}
        if not values or widths != {len(header)}:
            msg = (
                f"{source}: {len(header)} detector names in the header but rows of "
                f"{sorted(widths) or 0} values"
            )
            raise CompensationError(msg)
        if detectors is not None and list(detectors) != header:
            msg = f"{source}: header names {header} differ from the detectors given {list(detectors)}"
            raise CompensationError(msg)
        fluo = tuple(labels) if labels and len(labels) == len(values) else ()
        if not fluo and len(values) != len(header):
            msg = (
                f"{source}: {len(values)} rows for {len(header)} detectors; a spectral matrix needs a "
                "row label (fluorochrome name) opening each row"
            )
            raise CompensationError(msg)
        return cls(np.array(values), tuple(header), fluo, source)

    # -- properties ------------------------------------------------------------------------------

    @property
    def is_spectral(self) -> bool:
        """True when there are more detectors than fluorochromes (unmixing, not compensation)."""
        return self.matrix.shape[0] < self.matrix.shape[1]

    @cached_property
    def unmixing(self) -> np.ndarray:
        """The matrix that maps observed detector values to true values.

        ``inv(S)`` for a square matrix; the Moore-Penrose pseudo-inverse
        ``S.T @ inv(S @ S.T)`` (least squares) for a spectral one. Shape
        (n_detectors, n_fluorochromes).
        """
        m = np.linalg.inv(self.matrix) if not self.is_spectral else np.linalg.pinv(self.matrix)
        m.setflags(write=False)
        return m

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SpilloverMatrix):
            return NotImplemented
        return (
            self.detectors == other.detectors
            and self.fluorochromes == other.fluorochromes
            and np.array_equal(self.matrix, other.matrix)
        )

    __hash__ = None  # type: ignore[assignment]

    # -- application -----------------------------------------------------------------------------

    def channel_indices(self, channels: Sequence[str]) -> np.ndarray:
        """Columns of ``channels`` (``$PnN`` of the sample) that hold the matrix's detectors, in matrix order.

        Raises
        ------
        CompensationError
            A detector of the matrix is not among the channels (names the missing ones).
        """
        pos = {c: i for i, c in enumerate(channels)}
        missing = [d for d in self.detectors if d not in pos]
        if missing:
            msg = (
                f"spillover matrix from {self.source}: detector(s) {missing} not among the sample's channels "
                f"{list(channels)}"
            )
            raise CompensationError(msg)
        return np.array([pos[d] for d in self.detectors], dtype=np.intp)

    def apply(self, events: np.ndarray, channels: Sequence[str], *, order: str = "C") -> np.ndarray:
        """Compensate events: the matrix's detector columns become ``observed @ inv(S)``.

        Parameters
        ----------
        events : ndarray, shape (n_events, n_channels)
            Uncompensated events (any float dtype).
        channels : sequence of str
            ``$PnN`` of the columns.

        order : {"C", "F"}, default "C"
            Memory layout of the result ("F": each channel contiguous).

        Returns
        -------
        ndarray of float64, shape (n_events, n_channels)
            A new array; columns outside the matrix are copied unchanged.

        Raises
        ------
        CompensationError
            The matrix is spectral (use :meth:`unmix`), or channels do not match.
        """
        if self.is_spectral:
            msg = f"spillover matrix from {self.source} is spectral ({self.matrix.shape}); use unmix()"
            raise CompensationError(msg)
        x = _as_events(events, channels)
        idx = self.channel_indices(channels)
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float64)
        from flowtools.compensation._kernels import compensate_rows  # numba: loaded on first use only

        return compensate_rows(np.ascontiguousarray(x), idx, self.unmixing, order=order)

    def unmix(self, events: np.ndarray, channels: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """Unmix (or compensate) events by least squares.

        Returns
        -------
        events : ndarray of float64, shape (n_events, n_other + n_fluorochromes)
            The channels not used by the matrix, in their order, followed by
            one column per fluorochrome.
        names : list of str
            Column names: the kept ``$PnN`` then the fluorochromes.
        """
        x = _as_events(events, channels)
        idx = self.channel_indices(channels)
        keep = np.setdiff1d(np.arange(x.shape[1]), idx)
        true = x[:, idx] @ self.unmixing
        out = np.concatenate([np.asarray(x[:, keep], dtype=np.float64), true], axis=1)
        return out, [channels[i] for i in keep] + list(self.fluorochromes)

    def inverse_apply(self, events: np.ndarray, channels: Sequence[str]) -> np.ndarray:
        """Undo compensation: the detector columns become ``true @ S`` (square matrices only)."""
        if self.is_spectral:
            msg = f"spillover matrix from {self.source} is spectral; it cannot be re-applied column-wise"
            raise CompensationError(msg)
        x = _as_events(events, channels)
        idx = self.channel_indices(channels)
        out = np.array(x, dtype=np.float64, order="C", copy=True)
        out[:, idx] = x[:, idx] @ self.matrix
        return out

    def to_csv_text(self) -> str:
        """The matrix as CSV in FlowKit's layout (header row of detectors; row labels if spectral)."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        spectral = self.is_spectral
        w.writerow(([""] if spectral else []) + list(self.detectors))
        for name, row in zip(self.fluorochromes, self.matrix, strict=True):
            w.writerow(([name] if spectral else []) + [repr(float(v)) for v in row])
        return buf.getvalue()


def _as_events(events: np.ndarray, channels: Sequence[str]) -> np.ndarray:
    x = np.asarray(events)
    if x.ndim != 2 or x.shape[1] != len(channels):
        msg = f"events of shape {x.shape} do not match {len(channels)} channel names"
        raise CompensationError(msg)
    return x


def compensate(sample: FCSSample, matrix: SpilloverMatrix | None = None) -> np.ndarray:
    """Compensate a sample's events (function twin of :meth:`SpilloverMatrix.apply`).

    Parameters
    ----------
    sample : FCSSample
    matrix : SpilloverMatrix, optional
        Default: the matrix in the file's own keywords.

    Returns
    -------
    ndarray of float64, shape (n_events, n_channels)
    """
    m = SpilloverMatrix.from_fcs(sample) if matrix is None else matrix
    return m.apply(sample.events, sample.pnn)
