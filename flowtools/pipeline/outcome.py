"""What gating one sample, and one plate, produced: plain data shared by the runner's parts."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PlateResult", "SampleOutcome", "outcome_base"]


@dataclass
class SampleOutcome:
    """What gating one sample produced (plain data: it crosses process boundaries and is cached)."""

    sample_id: str
    woman_id: str
    tube: str
    plate: str
    well: str
    file: str
    ok: bool
    error: str | None = None
    n_events: int = 0
    seconds: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)
    gatingml: str | None = None
    cached: bool = False
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    vol_nl: float | None = None  # $VOL (nL), where the instrument measured the volume acquired

    @property
    def failed_populations(self) -> list[dict[str, str]]:
        """The populations of a gated sample that have no numbers, and why."""
        return [{"population": r["population"], "reason": r.get("reason", "")}
                for r in self.rows if r.get("status") == "failed"]

    @property
    def flagged_populations(self) -> list[dict[str, str]]:
        """The populations whose numbers are kept but need a look, and why."""
        return [{"population": r["population"], "reason": r.get("reason", "")}
                for r in self.rows if r.get("status") == "flagged"]

    def to_json(self) -> str:
        """Serialise (cache format)."""
        return json.dumps(self.__dict__, allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> SampleOutcome:
        """Deserialise (cache format)."""
        return cls(**json.loads(text))


@dataclass
class PlateResult:
    """Outputs of :func:`run_plate`."""

    out_dir: Path
    outcomes: list[SampleOutcome]
    populations_csv: Path | None
    per_woman_csv: Path | None
    errors_json: Path
    provenance_json: Path
    report_html: Path | None = None
    skipped: list[str] = field(default_factory=list)

    @property
    def n_ok(self) -> int:
        """Samples gated."""
        return sum(o.ok for o in self.outcomes)

    @property
    def n_failed(self) -> int:
        """Samples that failed (reported in errors.json)."""
        return sum(not o.ok for o in self.outcomes)

    @property
    def n_partial(self) -> int:
        """Samples gated with some populations failed (listed in errors.json)."""
        return sum(bool(o.ok and o.failed_populations) for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        """0 all gated, 2 partial (a sample or a population failed), 1 nothing gated."""
        if self.n_failed == 0 and self.n_partial == 0:
            return 0
        return 2 if self.n_ok else 1


def outcome_base(row: dict[str, Any]) -> SampleOutcome:
    """A not-yet-gated outcome carrying a sheet row's identity (``ok=False``)."""
    return SampleOutcome(row["sample_id"], row["woman_id"], row["tube"], row["plate"], row["well"],
                         row["file"], ok=False)
