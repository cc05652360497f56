"""One sample's resolved gates, their evaluation and what was decided: the result of resolution."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flowtools.errors import GatingError
from flowtools.gating.engine import GatingResult
from flowtools.gating.methods import (
    Geometry,
)
from flowtools.gating.strategy import GatingStrategy

__all__ = ["ResolvedSample"]


@dataclass
class ResolvedSample:
    """One sample's resolved gates and their evaluation.

    Attributes
    ----------
    sample_id : str
    strategy : GatingStrategy
        Plain gates (Gating-ML 2.0 exportable), ids derived from the paths.
    ids : dict of str to str
        Population path -> population id in ``strategy``.
    result : GatingResult or None
        Masks and counts (None when resolution failed).
    error : str or None
        Why this sample could not be gated (file, population, reason).
    geometry : dict of str to Geometry
        Data-driven populations' computed geometry, by path.
    roles : dict of str to str
        Population path -> its template ``role`` (``"qc"``), for the populations that have one.
    failed : dict of str to str
        Population path -> why it has no numbers (its gate could not be computed, it broke
        its ``expect`` with ``on_violation: fail``, or an ancestor failed). The rest of the
        sample is kept.
    flags : dict of str to list of str
        Population path -> why its numbers need a look (a fallback kept < 1% or > 99% of the
        parent; outside its ``expect``).
    decisions : dict of str to dict
        Template entry path -> how its data-driven gate was decided
        (:class:`flowtools.gating.methods.Decision`, as plain data).
    order : list of str
        Every population path of the template, in template order.
    parents : dict of str to str
        Population path -> parent path ("" at the top), for every path of the template.
    decision_gates : dict of str to str
        Template entry path -> id of the gate its decision made (a quad entry: the quadrant gate),
        so the decision can travel with the gate (:meth:`gate_decisions`).
    notes : dict of str to str
        The sample-level automatic decisions: ``time`` (which parameter is time, and why),
        ``processing`` (the file looks compensated or transformed already: it was done again).
    """

    sample_id: str
    strategy: GatingStrategy | None
    ids: dict[str, str]
    result: GatingResult | None
    error: str | None = None
    geometry: dict[str, Geometry] = field(default_factory=dict)
    _channel: Any = field(default=None, repr=False, compare=False)
    roles: dict[str, str] = field(default_factory=dict)
    _scaled: Any = field(default=None, repr=False, compare=False)
    _kind: Any = field(default=None, repr=False, compare=False)
    failed: dict[str, str] = field(default_factory=dict)
    flags: dict[str, list[str]] = field(default_factory=dict)
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    parents: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    decision_gates: dict[str, str] = field(default_factory=dict)
    _column: Any = field(default=None, repr=False, compare=False)

    def gate_decisions(self) -> dict[str, str]:
        """Gate id -> its decision record as JSON, for the gates' provenance (Gating-ML custom_info)."""
        import json

        return {gid: json.dumps(self.decisions[p], sort_keys=True, allow_nan=False)
                for p, gid in self.decision_gates.items() if p in self.decisions}

    def status(self, path: str) -> str:
        """``"failed"``, ``"flagged"`` or ``"ok"`` for one population."""
        if path in self.failed:
            return "failed"
        return "flagged" if self.flags.get(path) else "ok"

    def channel(self, pnn: str) -> np.ndarray:
        """A parameter's values for all events, compensated as the template says and not transformed.

        The same array the gates were computed from (no second read or compensation).
        """
        if self._channel is None:
            raise GatingError(self.error or "sample not resolved")
        return self._channel(pnn)

    def values(self, name: str) -> np.ndarray:
        """A parameter's values for all events on the gates' scale (compensated and transformed).

        Compensated and transformed as the template says.

        ``name`` is a marker (``$PnS``) or channel (``$PnN``), in the template or not; a
        parameter the template does not read gets the transform of its kind (time, scatter,
        fluorescence). Clustering and embedding read these, so they see what the gates saw.
        """
        if self._scaled is None:
            raise GatingError(self.error or "sample not resolved")
        return self._scaled(name)

    def column(self, d: Any) -> np.ndarray:
        """A dimension of :attr:`strategy` for every event, as its gates see it (the resolver's own values).

        ``d`` is a :class:`~flowtools.gating.gates.Dimension` of the resolved strategy (compensation
        and transform ids as its gates name them). The returned array belongs to the resolver: do not
        modify it. Plots read these instead of reading and gating the file again.
        """
        if self._column is None:
            raise GatingError(self.error or "sample not resolved")
        return self._column(d)

    def kind(self, name: str) -> str:
        """A parameter's kind (``time``, ``scatter``, ``fluorescence``, ``other``) as the run decided it."""
        if self._kind is None:
            raise GatingError(self.error or "sample not resolved")
        return self._kind(name)

    def mask(self, path: str) -> np.ndarray:
        """Membership of a population given by its template path."""
        if self.result is None:
            raise GatingError(self.error or "sample not resolved")
        return self.result.mask(self.ids[path])

    def rows(self) -> list[dict[str, Any]]:
        """Per population path: gate id, parent path, role, count, parent count, % of parent, % of total.

        ``gate_id`` is the id of the population's mask in :attr:`strategy` (and in the
        Gating-ML a run writes), so later stages look a population up by it instead of
        deriving an id from the path again. ``parent`` is the parent's path ("" for a
        population of all events) and ``parent_count`` its event count (all events at the top).
        ``role`` is the template population's role: ``"qc"`` for an acquisition or clean-up
        gate, ``""`` otherwise.
        """
        if self.result is None:
            return []
        paths = {v: k for k, v in self.ids.items()}
        found: dict[str, dict[str, Any]] = {}
        for r in self.result.rows():
            if r["population"] in paths:
                p = paths[r["population"]]
                # a template child of a quadrant/window gate has the gate's parent; find its path
                parent_id = r["parent"] or None
                while parent_id is not None and parent_id not in paths:
                    parent_id = self.strategy.population(parent_id).parent  # helper gates the template hides
                parent_count = self.result.count(parent_id) if parent_id is not None else self.result.n_events
                found[p] = {"population": p, "gate_id": r["population"],
                            "parent": paths[parent_id] if parent_id is not None else "",
                            "role": self.roles.get(p, ""),
                            "count": r["count"], "parent_count": parent_count, "pct_parent": r["pct_parent"],
                            "pct_total": r["pct_total"]}
        out = []
        nan = float("nan")
        for p in self.order or list(found):
            row = found.get(p)
            if p in self.failed:
                row = {"population": p, "gate_id": row["gate_id"] if row else "",
                       "parent": self.parents.get(p, row["parent"] if row else ""),
                       "role": self.roles.get(p, ""), "count": nan, "parent_count": nan,
                       "pct_parent": nan, "pct_total": nan}
            elif row is None:
                continue
            row["status"] = self.status(p)
            row["reason"] = self.failed[p] if p in self.failed else "; ".join(self.flags.get(p, ()))
            out.append(row)
        return out
