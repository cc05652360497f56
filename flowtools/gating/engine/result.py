"""The result of evaluating a gating strategy on one sample: masks and counts per population."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flowtools.gating.strategy import GatingStrategy

__all__ = ["GatingResult"]


@dataclass
class GatingResult:
    """Membership and counts of every population of a strategy in one sample.

    Attributes
    ----------
    strategy : GatingStrategy
    n_events : int
    masks : dict of str to ndarray of bool, shape (n_events,)
        Population id -> event membership (parents applied).
    sample_id : str or None
    """

    strategy: GatingStrategy
    n_events: int
    masks: dict[str, np.ndarray] = field(repr=False)
    sample_id: str | None = None

    def mask(self, population: str) -> np.ndarray:
        """Boolean membership of a population (parents applied)."""
        try:
            return self.masks[population]
        except KeyError:
            msg = f"no population {population!r}; populations are {list(self.masks)}"
            raise KeyError(msg) from None

    def count(self, population: str) -> int:
        """Number of events in a population."""
        return int(np.count_nonzero(self.mask(population)))

    def counts(self) -> dict[str, int]:
        """Population id -> count, in evaluation order."""
        return {pid: int(np.count_nonzero(m)) for pid, m in self.masks.items()}

    def rows(self) -> list[dict[str, Any]]:
        """One dict per population: population, path, parent, count, % of parent, % of total."""
        counts = self.counts()
        out = []
        s = self.strategy
        for pid in s.order:
            pop = s.population(pid)
            parent_n = counts[pop.parent] if pop.parent is not None else self.n_events
            n = counts[pid]
            out.append(
                {
                    "population": pid,
                    "path": s.path(pid),
                    "parent": pop.parent or "",
                    "count": n,
                    "pct_parent": 100.0 * n / parent_n if parent_n else float("nan"),
                    "pct_total": 100.0 * n / self.n_events if self.n_events else float("nan"),
                }
            )
        return out
