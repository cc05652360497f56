"""The flowtools exception and warning tree.

Every error a user can provoke with bad input is a :class:`FlowtoolsError`. Each
one names the file (and, where it applies, the row, column, gate or channel) and
says what is wrong, so that a batch run can report it and carry on.

Exceptions
----------
FlowtoolsError
    Base of every flowtools error.
FCSError
    An FCS file cannot be read: not FCS, truncated, offsets past the end, an
    impossible ``$TOT`` x ``$PAR``, an unsupported data mode or type. Also a
    ``ValueError``.
CompensationError
    A spillover matrix is malformed, singular, or names channels the sample
    does not have. Also a ``ValueError``.
GatingError
    A gating strategy is inconsistent (unknown parent or reference, a cycle,
    a duplicate id) or cannot be applied to a sample. Also a ``ValueError``.
ChannelError
    A gate, template or matrix names a channel the sample does not have
    (a ``GatingError`` and a ``KeyError``-free ``ValueError``).
TemplateError
    A gating template (YAML) is invalid; names the file, line, population
    and field.
GatingMLError
    A Gating-ML document is malformed or uses an unsupported element; names
    the file and the element.
SampleSheetError
    A sample sheet is malformed: missing columns, missing files, duplicates,
    unknown tubes, bad wells. Carries every problem found, not only the first.
NormalizationError
    Batch normalisation cannot be fitted or applied: a batch without an anchor,
    an anchor with too few events, a marker absent in a batch, a model applied
    to a panel or batch it was not fitted on. Names batch, file and marker.
ClinicalDataError
    A clinical table or database is malformed: missing tables or columns, bad
    types or ranges, dates out of order, unknown women. Names table, row, column.
BeadAssayError
    A bead-array plate cannot be analysed: missing standards, a reporter
    channel absent, a bead-panel template that is invalid. Names plate, well,
    analyte.
ExportError
    A run cannot be exported: the run folder, population or optional extra is
    missing.

Warnings
--------
FlowtoolsWarning
    Base of every flowtools warning.
FCSWarning
    An FCS file was read, but something in it is off and was repaired by a
    documented rule (an off-by-one DATA offset, HEADER and TEXT disagreeing, a
    duplicate keyword, a malformed spillover keyword).
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike

__all__ = [
    "CompensationError",
    "BeadAssayError",
    "ChannelError",
    "ClinicalDataError",
    "ExportError",
    "FCSError",
    "GatingError",
    "GatingMLError",
    "FCSWarning",
    "FlowtoolsError",
    "FlowtoolsWarning",
    "GatingWarning",
    "NormalizationError",
    "SampleSheetError",
    "SheetIssue",
    "TemplateError",
]


class FlowtoolsError(Exception):
    """Base class of every error flowtools raises for bad input."""


class FCSError(FlowtoolsError, ValueError):
    """An FCS file cannot be read.

    Parameters
    ----------
    path : str or PathLike or None
        The file that failed (None for in-memory data).
    reason : str
        What is wrong, in words a lab scientist can act on.

    Attributes
    ----------
    path : str or None
    reason : str
    """

    def __init__(self, path: str | PathLike[str] | None, reason: str) -> None:
        self.path = None if path is None else str(path)
        self.reason = reason
        where = self.path if self.path is not None else "<in-memory FCS data>"
        super().__init__(f"{where}: {reason}")


class CompensationError(FlowtoolsError, ValueError):
    """A spillover matrix cannot be built or applied; the message names the source and channels."""


class GatingError(FlowtoolsError, ValueError):
    """A gating strategy is inconsistent or cannot be applied to a sample."""


class ChannelError(GatingError):
    """A gate names a channel (or fluorochrome) that the sample does not have.

    Attributes
    ----------
    channel : str
        The missing name.
    available : tuple of str
        The names the sample has.
    """

    def __init__(self, message: str, *, channel: str = "", available: tuple[str, ...] = ()) -> None:
        self.channel = channel
        self.available = tuple(available)
        super().__init__(message)


class TemplateError(GatingError):
    """A gating template is invalid; the message names the file, line, population and field."""


class GatingMLError(GatingError):
    """A Gating-ML document is malformed or unsupported; the message names the file and element."""


@dataclass(frozen=True)
class SheetIssue:
    """One problem in a sample sheet.

    Attributes
    ----------
    line : int or None
        Line number in the CSV file (the header is line 1); None for a problem
        with the whole sheet.
    column : str or None
        Column name the problem is in, if any.
    message : str
        What is wrong.
    """

    line: int | None
    column: str | None
    message: str

    def __str__(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        prefix = ", ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message


class SampleSheetError(FlowtoolsError, ValueError):
    """A sample sheet is malformed.

    Parameters
    ----------
    path : str or PathLike
        The sample sheet.
    issues : sequence of SheetIssue
        Every problem found (validation does not stop at the first).
    """

    def __init__(self, path: str | PathLike[str], issues: list[SheetIssue] | tuple[SheetIssue, ...]) -> None:
        self.path = str(path)
        self.issues = tuple(issues)
        lines = "\n".join(f"  - {issue}" for issue in self.issues)
        n = len(self.issues)
        super().__init__(f"{self.path}: {n} problem{'s' if n != 1 else ''} in sample sheet:\n{lines}")


class NormalizationError(FlowtoolsError, ValueError):
    """Batch normalisation cannot be fitted or applied; the message names batch, file and marker."""


class ClinicalDataError(FlowtoolsError, ValueError):
    """A clinical table or database is malformed; the message names table, row and column."""


class BeadAssayError(FlowtoolsError, ValueError):
    """A bead-array plate or bead-panel template is unusable; the message names plate, well and analyte."""


class ExportError(FlowtoolsError, ValueError):
    """A run cannot be exported: missing run folder, population or optional extra (named)."""


class FlowtoolsWarning(UserWarning):
    """Base class of every flowtools warning."""


class FCSWarning(FlowtoolsWarning):
    """An FCS file was read, but a documented repair rule was applied."""


class GatingWarning(FlowtoolsWarning):
    """A gating result that needs a look: a fallback that nearly emptied a gate, an already-processed file."""
