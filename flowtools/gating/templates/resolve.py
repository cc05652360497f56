"""Resolution: a template's gates computed and evaluated on each sample, kept as plain gates.

:func:`resolve` turns a :class:`~flowtools.gating.templates.model.Template` into plain gates
for each sample (data-driven gates computed on the parent's events, optionally pooled over a
group of samples), evaluates them and keeps them, so each sample's gates export to Gating-ML
2.0 and re-apply to the same counts anywhere. :func:`pool_values` and :func:`compute_pooled`
are the two halves of a pooled (``group_by``) gate for a runner that holds one file at a time.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from flowtools.errors import CompensationError, FlowtoolsError, GatingError
from flowtools.gating.engine import GatingResult
from flowtools.gating.gates import (
    BooleanGate,
)
from flowtools.gating.methods import (
    Decision,
    Geometry,
    MethodContext,
    get_method,
)
from flowtools.gating.templates._state import (
    _POOL_PER_SAMPLE,
    FALLBACK_FLAG_PCT,
    State,
    _gates_from_geometry,
    _ref_geometry,
    _static_geometry,
    gate_id,
)
from flowtools.gating.templates.model import (
    _RESOLVER_METHODS,
    PopulationSpec,
    Template,
)
from flowtools.gating.templates.resolved import ResolvedSample
from flowtools.io.fcs import FCSSample

__all__ = ["FALLBACK_FLAG_PCT", "ResolvedSample", "compute_pooled", "pool_values", "resolve"]

_log = logging.getLogger(__name__)


def resolve(
    template: Template,
    samples: Sequence[FCSSample],
    *,
    sample_ids: Sequence[str] | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
    pinned: Mapping[str, Geometry] | None = None,
    seed: int = 0,
) -> list[ResolvedSample]:
    """Resolve a template on samples: compute data-driven gates, evaluate, keep the gates.

    Parameters
    ----------
    template : Template
    samples : sequence of FCSSample
    sample_ids : sequence of str, optional
        Names for messages and results (default: file names).
    groups : mapping of str to sequence of str, optional
        For ``group_by``: column name -> one group value per sample (e.g.
        ``{"plate": [...]}``). A population with ``group_by: plate`` computes
        its gate once on the pooled parent events of each plate.
    pinned : mapping of str to Geometry, optional
        Population path -> geometry computed elsewhere (e.g. on a pooled group
        by a batch runner that holds one file at a time); used instead of
        running the population's method.
    seed : int, default 0
        Seed passed to every method (results are reproducible).

    Returns
    -------
    list of ResolvedSample
        One per sample, in order; a sample that cannot be gated carries an
        ``error`` (file, population, reason) and no result, and the others go on.
    """
    ids = _sample_ids(samples, sample_ids)
    states, errors = _start(template, samples, ids)
    _run(template, states, errors, ids, groups=groups, pinned=pinned or {}, seed=seed, stop_before=None)
    roles = template.roles
    out = []
    for i, sid in enumerate(ids):
        st = states[i]
        if st is None:
            out.append(ResolvedSample(sid, None, {}, None, errors.get(i, "not resolved"), roles=dict(roles)))
            continue
        result = GatingResult(st.strategy, st.ev.n, dict(st.ev.masks), sid)
        out.append(ResolvedSample(sid, st.strategy, dict(st.ids), result, None, dict(st.geometry),
                                  st.base_channel, dict(roles), st.scaled, st.kind, dict(st.failed),
                                  {k: list(v) for k, v in st.flags.items()},
                                  {k: d.to_dict() for k, d in st.decisions.items()},
                                  list(template.population_paths), dict(st._parents), dict(st.notes),
                                  dict(st.decision_gates), st.ev.column))
    return out


def pool_values(
    template: Template,
    sample: FCSSample,
    population: str,
    *,
    pinned: Mapping[str, Geometry] | None = None,
    max_events: int = _POOL_PER_SAMPLE,
    sample_id: str | None = None,
    seed: int = 0,
    position: int = 0,
) -> np.ndarray:
    """A sample's contribution to a pooled (``group_by``) gate: its parent events on the gate's dimensions.

    Resolves the template up to ``population`` (with ``pinned`` geometries for
    earlier pooled gates) and returns at most ``max_events`` rows (a subsample
    seeded by ``seed`` and the sample's ``position`` in its group, the same rule
    as :func:`resolve` uses) of the parent's values, shape (n, n_dims).

    Raises
    ------
    GatingError
        The sample cannot be resolved up to that population.
    """
    spec = next((p for p in template.populations if population in p.outputs), None)
    if spec is None:
        msg = f"template {template.name!r} has no population {population!r}"
        raise GatingError(msg)
    ids = _sample_ids([sample], [sample_id] if sample_id else None)
    states, errors = _start(template, [sample], ids)
    _run(template, states, errors, ids, groups=None, pinned=pinned or {}, seed=seed, stop_before=spec.path)
    st = states[0]
    if st is None:
        raise GatingError(errors.get(0, "not resolved"))
    blocked = next((p for p in _depends_on(spec) if p in st.failed), None)
    if blocked is not None:
        msg = f"{st.sample_id}: population {blocked!r} failed: {st.failed[blocked]}"
        raise GatingError(msg)
    v = st.values(spec.dims, spec.parent)
    if v.shape[0] > max_events:
        pick = np.random.default_rng([seed, position]).choice(v.shape[0], max_events, replace=False)
        v = v[np.sort(pick)]
    return v


def compute_pooled(
    template: Template, population: str, values: np.ndarray, reference: FCSSample, *, seed: int = 0
) -> Geometry:
    """Run a population's method on pooled values (from :func:`pool_values` of a group's samples).

    ``reference`` supplies channel ranges (any member of the group).
    """
    spec = next((p for p in template.populations if p.path == population), None)
    if spec is None or spec.method in (None, *_RESOLVER_METHODS):
        msg = f"{population!r} is not a data-driven population of template {template.name!r}"
        raise GatingError(msg)
    st = State(template, reference, "pool")
    ctx = MethodContext(spec.path, spec.dims, st.ranges(spec.dims), seed,
                        kinds=tuple(st.kind(d) for d in spec.dims))
    return get_method(spec.method).fn(np.ascontiguousarray(values, dtype=np.float64), ctx, **spec.args)


def _sample_ids(samples: Sequence[FCSSample], sample_ids: Sequence[str] | None) -> list[str]:
    if sample_ids is not None:
        return list(sample_ids)
    return [(s.path.name if s.path is not None else f"sample{i + 1}") for i, s in enumerate(samples)]


def _start(
    template: Template, samples: Sequence[FCSSample], ids: Sequence[str]
) -> tuple[list[State | None], dict[int, str]]:
    states: list[State | None] = []
    errors: dict[int, str] = {}
    for i, (s, sid) in enumerate(zip(samples, ids, strict=True)):
        try:
            states.append(State(template, s, sid))
        except (GatingError, CompensationError) as exc:
            states.append(None)
            errors[i] = str(exc)
    return states, errors


def _depends_on(spec: PopulationSpec) -> list[str]:
    """The populations an entry needs: its parent, and a ref's or bool's operands."""
    need = [spec.parent] if spec.parent else []
    if spec.method == "ref":
        need.append(spec.args["population"])
    elif spec.method == "bool":
        need.extend(r.lstrip("!") for r in spec.args["of"])
    return need


_POPULATION_ERRORS = (FlowtoolsError, ValueError, ArithmeticError)


def _run(
    template: Template,
    states: list[State | None],
    errors: dict[int, str],
    ids: Sequence[str],
    *,
    groups: Mapping[str, Sequence[str]] | None,
    pinned: Mapping[str, Geometry],
    seed: int,
    stop_before: str | None,
) -> None:
    """Resolve every population in template order; a population that fails fails its subtree only."""
    for spec in template.populations:
        if spec.path == stop_before:
            return
        live = []
        for i, st in enumerate(states):
            if st is None:
                continue
            blocked = next((p for p in _depends_on(spec) if p in st.failed), None)
            if blocked is not None:
                for p in spec.outputs:  # quietly: the failure was reported where it happened
                    st.failed.setdefault(p, f"{blocked!r} failed")
                continue
            live.append((i, st))
        if not live:
            continue
        geoms: dict[int, Geometry] = {}
        decisions: dict[int, Decision] = {}
        if spec.path in pinned:
            geoms = {i: pinned[spec.path] for i, _ in live}
            if spec.method is not None:
                for i, _ in live:
                    decisions[i] = Decision(spec.method, dict(spec.args),
                                            {"rule": f"computed on the pooled {spec.group_by or 'group'}"})
        elif spec.method is None:
            g = _static_geometry(spec)
            geoms = {i: g for i, _ in live}
        elif spec.method == "ref":
            for i, st in live:
                try:
                    geoms[i] = _ref_geometry(st, spec)
                except _POPULATION_ERRORS as exc:
                    st.fail_population(spec, str(exc))
        elif spec.method == "bool":
            for _, st in live:
                refs = tuple((st.ids[r.lstrip("!")], r.startswith("!")) for r in spec.args["of"])
                parent_id = st.ids[spec.parent] if spec.parent else None
                gid = gate_id(spec.path, st.taken)
                try:
                    st.add([BooleanGate(gid, spec.args["op"], refs, parent_id)], {spec.path: gid})
                except _POPULATION_ERRORS as exc:
                    st.fail_population(spec, str(exc))
                    continue
                _check(st, spec, None)
            continue
        else:
            method = get_method(spec.method)
            key = spec.group_by
            buckets: dict[Any, list[int]] = {}
            for i, _ in live:
                if key is None:
                    gval: Any = i
                elif groups is not None and key in groups:
                    gval = groups[key][i]
                else:
                    gval = "all"
                buckets.setdefault(gval, []).append(i)
            for members in buckets.values():
                decision = Decision(spec.method, dict(spec.args))
                try:
                    parts = []
                    for position, i in enumerate(members):
                        st = states[i]
                        assert st is not None  # noqa: S101 - live members only
                        v = st.values(spec.dims, spec.parent)
                        if key is not None and v.shape[0] > _POOL_PER_SAMPLE:  # same rule as pool_values
                            pick = np.random.default_rng([seed, position]).choice(
                                v.shape[0], _POOL_PER_SAMPLE, replace=False)
                            v = v[np.sort(pick)]
                        parts.append(v)
                    values = np.ascontiguousarray(np.concatenate(parts)) if len(parts) > 1 else parts[0]
                    first = states[members[0]]
                    assert first is not None  # noqa: S101
                    decision.events_in = int(values.shape[0])
                    kinds = tuple(first.kind(d) for d in spec.dims)
                    ctx = MethodContext(spec.path, spec.dims, first.ranges(spec.dims), seed, decision, kinds)
                    g = method.fn(values, ctx, **spec.args)
                except _POPULATION_ERRORS as exc:
                    for i in members:
                        st = states[i]
                        if st is not None:
                            st.decisions[spec.path] = copy.deepcopy(decision)
                            st.fail_population(spec, str(exc))
                    continue
                for i in members:
                    geoms[i] = g
                    decisions[i] = copy.deepcopy(decision) if len(members) > 1 else decision
        for i, g in geoms.items():
            st = states[i]
            if st is None:
                continue
            if i in decisions:
                st.decisions[spec.path] = decisions[i]
            try:
                gates, outputs = _gates_from_geometry(st, spec, g)
                st.add(gates, outputs)
                st.decision_gates[spec.path] = outputs.get(spec.path, gates[0].id)
                for p in outputs:
                    st.geometry[p] = g
            except _POPULATION_ERRORS as exc:
                st.fail_population(spec, str(exc))
                continue
            _check(st, spec, decisions.get(i))


def _check(st: State, spec: PopulationSpec, decision: Decision | None) -> None:
    """Counts into the decision record; flag a fallback's near-empty or near-full gate; check ``expect``."""
    kept = 0
    ambiguous = [] if decision is None else [
        str(decision.details.get(k.replace("ambiguous", "rule"), "")) for k, v in decision.details.items()
        if k.endswith("ambiguous") and v]
    counts = {p: st.count(p) for p in spec.outputs}
    if decision is not None and decision.fallback and spec.quadrants:
        # a quadrant gate's fallback is per axis: the share on that axis's positive side
        for j, ax in enumerate("xy"):
            if not decision.details.get(f"{ax}_fallback") or len(spec.quadrants) != 4:
                continue
            parent_n = next(iter(counts.values()))[1]
            pos = sum(counts[p][0] for p, sign in zip(spec.outputs, spec.quadrants.values(), strict=True)
                      if sign[j] == "+")
            pct = 100.0 * pos / parent_n if parent_n else float("nan")
            if parent_n and (pct < FALLBACK_FLAG_PCT or pct > 100.0 - FALLBACK_FLAG_PCT):
                for p in spec.outputs:
                    st.flag(p, f"fallback ({decision.fallback}) put {pct:.2f}% of the parent on the "
                            f"positive side of {spec.dims[j]}", decision)
    for p in spec.outputs:
        for rule in ambiguous:
            st.flag(p, f"one peak, negative or positive is a guess: {rule}", decision)
        n, parent_n = counts[p]
        kept += n
        pct = 100.0 * n / parent_n if parent_n else float("nan")
        if decision is not None and decision.fallback and not spec.quadrants and parent_n and (
                pct < FALLBACK_FLAG_PCT or pct > 100.0 - FALLBACK_FLAG_PCT):
            st.flag(p, f"fallback ({decision.fallback}) kept {pct:.2f}% of the parent", decision)
        if spec.expect:
            got = {"pct": pct, "pct_total": 100.0 * n / st.ev.n if st.ev.n else float("nan"), "count": n}
            for k, (lo, hi) in spec.expect.items():
                v = got[k]
                if not ((lo is None or v >= lo) and (hi is None or v <= hi)):
                    bounds = f"[{'' if lo is None else f'{lo:g}'}, {'' if hi is None else f'{hi:g}'}]"
                    why = f"{k} = {v:.4g} is outside expect {bounds}"
                    if spec.on_violation == "fail":
                        st.failed.setdefault(p, why)
                        if decision is not None:
                            decision.status = "failed"
                            decision.reasons.append(why)
                        _log.warning("%s: population %r failed: %s", st.sample_id, p, why)
                    else:
                        st.flag(p, why, decision)
    if decision is not None:
        decision.events_kept = kept
