"""The follow-up database's schema, vocabularies and records.

Part of :mod:`flowtools.io.clinical_db`, which documents the tables and re-exports the public
names; import them from there.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flowtools.errors import ClinicalDataError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["EPISODE_OUTCOMES", "SCHEMA", "DBIssue", "FollowupDB", "FollowupDataError"]

EPISODE_OUTCOMES = ("loss", "stillbirth", "live_birth", "ongoing")
_SMOKING = ("never", "former", "current")
_RM_TYPES = ("primary", "secondary", "none")
_GROUPS = ("rm", "control")
_TRUE = {"1", "true", "yes", "y"}
_FALSE = {"0", "false", "no", "n"}

#: table -> column -> type ("text", "real", "integer", "bool", "date"), required, range or vocabulary.
SCHEMA: dict[str, dict[str, dict[str, Any]]] = {
    "women": {
        "woman_id": {"type": "text", "required": True, "key": True},
        "age": {"type": "real", "required": True, "range": (15, 55)},
        "bmi": {"type": "real", "required": False, "range": (12, 70)},
        "prior_losses": {"type": "integer", "required": True, "range": (0, 50)},
        "prior_live_births": {"type": "integer", "required": True, "range": (0, 30)},
        "rm_type": {"type": "text", "required": True, "values": _RM_TYPES},
        "smoking": {"type": "text", "required": False, "values": _SMOKING},
        "pcos": {"type": "bool", "required": True},
        "group": {"type": "text", "required": True, "values": _GROUPS},
        "recruitment_date": {"type": "date", "required": True},
        "followup_end": {"type": "date", "required": True},
    },
    "episodes": {
        "woman_id": {"type": "text", "required": True, "key": True},
        "episode_date": {"type": "date", "required": True, "key": True},
        "outcome": {"type": "text", "required": True, "values": EPISODE_OUTCOMES},
        "gestational_weeks": {"type": "real", "required": True, "range": (0, 45)},
    },
}
# gestational weeks allowed per outcome (inclusive low, exclusive high)
_WEEKS = {
    "loss": (0.0, 24.0),
    "stillbirth": (24.0, 45.01),
    "live_birth": (22.0, 45.01),
    "ongoing": (0.0, 45.01),
}


@dataclass(frozen=True)
class DBIssue:
    """One problem in the follow-up database.

    Attributes
    ----------
    table : str
        ``women``, ``episodes`` or ``database``.
    row : str or None
        Where: ``line 5`` (CSV) or the primary key (``W003`` / ``W003 2024-05-01``); None for the table.
    column : str or None
    message : str
    """

    table: str
    row: str | None
    column: str | None
    message: str

    def __str__(self) -> str:
        where = [f"table '{self.table}'"]
        if self.row is not None:
            where.append(self.row)
        if self.column is not None:
            where.append(f"column '{self.column}'")
        return f"{', '.join(where)}: {self.message}"


class FollowupDataError(ClinicalDataError):
    """The follow-up database is malformed; carries every problem found.

    Parameters
    ----------
    source : str
        The folder, file or URL (password masked).
    issues : sequence of DBIssue
    """

    def __init__(self, source: str, issues: Iterable[DBIssue]) -> None:
        self.source = str(source)
        self.issues = tuple(issues)
        n = len(self.issues)
        lines = "\n".join(f"  - {i}" for i in self.issues)
        super().__init__(
            f"{self.source}: {n} problem{'s' if n != 1 else ''} in the follow-up database:\n{lines}"
        )


@dataclass
class FollowupDB:
    """The two tables of the follow-up database (validated, typed).

    Attributes
    ----------
    women : pandas.DataFrame
        Columns of ``SCHEMA["women"]``: text as str, age/bmi float64, counts
        int64, pcos bool, dates datetime64[ns]; sorted by woman_id.
    episodes : pandas.DataFrame
        Columns of ``SCHEMA["episodes"]``; sorted by woman_id, episode_date.
    source : str
    """

    women: pd.DataFrame
    episodes: pd.DataFrame
    source: str = "<in-memory follow-up database>"
    attrs: dict[str, Any] = field(default_factory=dict)
