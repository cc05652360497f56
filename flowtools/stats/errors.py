"""Errors and warnings of :mod:`flowtools.stats` (subclasses of the flowtools tree).

Exceptions
----------
StatsError
    Base of every statistics error.
ClinicalDataError
    The clinical record is invalid: missing columns, wrong types, values out of
    range, duplicate women, missing values (without a ``missing`` policy), or
    women that appear on only one side of the clinical/immune join. Carries every
    problem found, not only the first. Also a ``ValueError``.
ImmuneTableError
    A per-woman immune table (gated ``populations.csv``/``per_woman.csv`` or the
    synthetic truth) cannot be read or is inconsistent. Also a ``ValueError``.
OutOfRangeError
    :func:`flowtools.stats.predict.apply_model` refused women whose features lie
    outside the training range by more than the margin, or are missing. Names
    every woman, feature, value and allowed range. Also a ``ValueError``.
ModelFileError
    A saved model file is malformed, of an unknown version, or fails its hash.

Warnings
--------
LeakageWarning
    An honestly cross-validated AUC above 0.80: on this kind of data (real
    studies report 0.57-0.72) that points at leakage or a batch effect.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike

from flowtools.errors import FlowtoolsError, FlowtoolsWarning, SheetIssue

__all__ = [
    "ClinicalDataError",
    "ImmuneTableError",
    "LeakageWarning",
    "ModelFileError",
    "OutOfRangeError",
    "SheetIssue",
    "StatsError",
]


class StatsError(FlowtoolsError):
    """Base class of the errors raised by :mod:`flowtools.stats`."""


class ClinicalDataError(StatsError, ValueError):
    """The clinical record is invalid.

    Parameters
    ----------
    source : str or PathLike
        The clinical file (or ``"<clinical table>"`` for an in-memory frame).
    issues : sequence of SheetIssue
        Every problem found; ``line`` is the CSV line (header = line 1).

    Attributes
    ----------
    source : str
    issues : tuple of SheetIssue
    """

    def __init__(self, source: str | PathLike[str], issues: Sequence[SheetIssue]) -> None:
        self.source = str(source)
        self.issues = tuple(issues)
        n = len(self.issues)
        shown = "\n".join(f"  - {i}" for i in self.issues[:40])
        more = f"\n  ... and {n - 40} more" if n > 40 else ""
        super().__init__(
            f"{self.source}: {n} problem{'s' if n != 1 else ''} in the clinical record:\n{shown}{more}"
        )


class ImmuneTableError(StatsError, ValueError):
    """A per-woman immune table cannot be read or is inconsistent; the message names the file."""


class OutOfRangeError(StatsError, ValueError):
    """Women refused by a fitted model: a feature is missing or outside the training range.

    Attributes
    ----------
    refused : dict of str to list of str
        woman_id -> reasons (feature, value, allowed range).
    """

    def __init__(self, refused: dict[str, list[str]]) -> None:
        self.refused = {k: list(v) for k, v in refused.items()}
        lines = "\n".join(f"  - {w}: {'; '.join(r)}" for w, r in sorted(self.refused.items()))
        n = len(self.refused)
        super().__init__(
            f"refused {n} wom{'a' if n == 1 else 'e'}n whose features are missing or outside the training "
            f"range (beyond the margin); the model cannot vouch for predictions there:\n{lines}"
        )


class ModelFileError(StatsError, ValueError):
    """A saved model file is malformed, of an unknown format version, or fails its hash check."""


class LeakageWarning(FlowtoolsWarning):
    """An honest cross-validated AUC above 0.80: look for leakage or batch effects."""
