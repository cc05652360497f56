"""The template data model: a validated template, its populations and transforms.

Built by :func:`flowtools.gating.templates.yaml.load_template` (which validates every field);
turned into plain gates per sample by :func:`flowtools.gating.templates.resolve.resolve`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flowtools.errors import ChannelError
from flowtools.io.fcs import FCSSample

__all__ = ["ROLES", "PopulationSpec", "Template", "TransformSpec"]

#: Methods that resolve against other populations of the template instead of the data.
_RESOLVER_METHODS = ("ref", "bool")
#: The values a population's ``role`` may take. ``qc``: an acquisition or clean-up gate
#: (time/QC, margin, boundary, singlets, live, debris removal), not a biological population.
#: ``counting_beads``: the counting-bead population of a single-platform absolute count
#: (e.g. BD Trucount); with the sheet's ``beads_per_test`` and ``sample_volume_ul`` every
#: population gets cells/µL. Neither role is biology: both are left out of the statistics.
ROLES = ("qc", "counting_beads")


@dataclass(frozen=True)
class TransformSpec:
    """How one class of channels is transformed: a kind and its parameters (or ``"estimate"``)."""

    kind: str
    params: Mapping[str, float] | str = field(default_factory=dict)

    def build(self, values: np.ndarray | None = None) -> Any:
        """The transform object (``None`` for ``kind == "none"``); ``values`` feed ``estimate``."""
        from flowtools import transforms as tr

        if self.kind == "none":
            return None
        if self.params == "estimate":
            p = {"T": 262144.0, "M": 4.5, "A": 0.0}
            data = np.asarray(values if values is not None else np.zeros(0))
            est = tr.estimate_logicle(data[np.isfinite(data)], T=p["T"], M=p["M"], A=p["A"])
            return est
        cls = {"logicle": tr.LogicleTransform, "hyperlog": tr.HyperlogTransform, "asinh": tr.AsinhTransform,
               "log": tr.LogTransform, "linear": tr.LinearTransform}[self.kind]
        return cls(**dict(self.params))  # type: ignore[arg-type]


@dataclass(frozen=True)
class PopulationSpec:
    """One entry of a template's population list (validated).

    ``role`` is ``"qc"`` for an acquisition or clean-up gate (see :data:`ROLES`), else None.
    """

    name: str
    path: str
    parent: str  # full path of the parent ("" for the root)
    dims: tuple[str, ...]
    gate: Mapping[str, Any] | None
    method: str | None
    args: Mapping[str, Any]
    quadrants: Mapping[str, str] | None
    group_by: str | None
    line: int
    role: str | None = None
    #: What a sane sample looks like: ``pct`` (% of parent), ``pct_total`` or ``count`` -> (lo, hi),
    #: either end None (open). A population outside it is flagged, or failed when
    #: ``on_violation == "fail"`` (its subtree then has no numbers).
    expect: Mapping[str, tuple[float | None, float | None]] | None = None
    on_violation: str = "flag"

    @property
    def outputs(self) -> tuple[str, ...]:
        """Population paths this entry defines (one, or one per quadrant)."""
        if self.quadrants is not None:
            base = f"{self.parent}/" if self.parent else ""
            return tuple(base + q for q in self.quadrants)
        return (self.path,)


@dataclass(frozen=True)
class Template:
    """A validated gating template."""

    name: str
    tube: str | None
    compensation: str
    transforms: Mapping[str, TransformSpec]  # "fluorescence", "scatter", "time", and per channel/marker
    populations: tuple[PopulationSpec, ...]
    source: str
    sha256: str
    description: str = ""
    #: The time parameter (``$PnN`` or ``$PnS``) when the file's own naming does not say it.
    time: str | None = None

    @property
    def population_paths(self) -> list[str]:
        """Every population path, in resolution order."""
        return [p for spec in self.populations for p in spec.outputs]

    @property
    def roles(self) -> dict[str, str]:
        """Population path -> role, for the populations that have one (each quadrant of a quad entry)."""
        return {p: spec.role for spec in self.populations if spec.role for p in spec.outputs}

    def dimensions(self) -> set[str]:
        """Every marker or channel the template reads."""
        out = {d for p in self.populations for d in p.dims}
        if self.time is not None:
            out.add(self.time)
        out |= {k for k in self.transforms if k not in ("fluorescence", "scatter", "time")}
        return out

    def check_sample(self, sample: FCSSample) -> dict[str, str]:
        """Map every dimension to this sample's ``$PnN``; raise ChannelError naming what is missing."""
        return _channel_map(self, sample)

    def tree(self) -> list[tuple[int, str, str]]:
        """(depth, path, description) for display."""
        out = []
        for spec in self.populations:
            if spec.method:
                how = f"{spec.method}({', '.join(f'{k}={v}' for k, v in spec.args.items())})"
            else:
                how = f"static {next(iter(spec.gate))}" if spec.gate else ""
            for path in spec.outputs:
                out.append((path.count("/"), path, f"[{', '.join(spec.dims)}] {how}".strip()))
        return out


def _channel_map(t: Template, sample: FCSSample) -> dict[str, str]:
    """Template dimension (marker ``$PnS`` or channel ``$PnN``) -> the sample's ``$PnN``."""
    by_pnn = {c.pnn: c.pnn for c in sample.channels}
    try:
        time_pnn = sample.channel_kinds(t.time).time
    except KeyError as exc:
        where = sample.path.name if sample.path is not None else "sample"
        msg = f"{where}: template {t.name!r}: {exc.args[0]}"
        avail = tuple(c.pnn for c in sample.channels)
        raise ChannelError(msg, channel=str(t.time), available=avail) from None
    by_pns: dict[str, list[str]] = {}
    for c in sample.channels:
        if c.pns:
            by_pns.setdefault(c.pns, []).append(c.pnn)
    out, missing = {}, []
    for d in sorted(t.dimensions()):
        if d in by_pnn:
            out[d] = d
        elif len(by_pns.get(d, [])) == 1:
            out[d] = by_pns[d][0]
        else:
            folded = [c.pnn for c in sample.channels if d.lower() in (c.pnn.lower(), c.pns.lower())]
            if len(folded) == 1:
                out[d] = folded[0]
            elif d.lower() == "time" and time_pnn is not None:
                out[d] = time_pnn  # "Time" in a template is the file's time parameter, however named
            else:
                missing.append(d)
    if missing:
        where = sample.path.name if sample.path is not None else "sample"
        markers = [c.pns for c in sample.channels if c.pns]
        msg = (f"{where}: template {t.name!r} needs {missing}, which the file does not have; "
               f"its markers are {markers} and its channels {[c.pnn for c in sample.channels]}")
        raise ChannelError(msg, channel=missing[0], available=tuple(c.pnn for c in sample.channels))
    return out
