"""What each parameter of an FCS file measures: time, scatter, fluorescence (or mass) or other.

Instruments name their parameters differently, and a parameter taken for the wrong kind gets
the wrong transform silently (a time channel on the fluorescence logicle, a scatter channel in
the MFI table). :func:`classify_channels` decides each parameter's kind from, in order:

1. an explicit choice (a template's ``time: CHANNEL``);
2. ``$PnTYPE`` (FCS 3.2: ``Time``, ``Forward_Scatter``, ``Side_Scatter``, ``Raw_Fluorescence``,
   ``Unmixed_Fluorescence``, ``Mass``, ``Electronic_Volume``, ``Classification``, ``Index``);
3. the vendors' names, on ``$PnN`` and then ``$PnS``: time as ``Time``/``TIME``/``Time (10.24
   sec.)`` (BD, Beckman Coulter, Cytek, Sony, Sysmex/Partec, Thermo Attune, CyTOF), ``Time LSW`` /
   ``Time MSW`` (Beckman MoFlo/CyAn), ``HDR-T`` (Miltenyi MACSQuant), ``Clock``; scatter as
   ``FSC``/``SSC`` with any suffix (``FSC-A``, ``SSC-B-A``, ``FSC LinH``, ``405SSC``), ``FS``/``SS``
   (Beckman ``FS Lin``, ``SS INT LIN``), ``BSC`` (CytoFLEX back scatter), ``Width`` (BD), and
   CyTOF's ``Event_length``; other (instrument bookkeeping, never a marker) as CyTOF's
   ``Center``/``Offset``/``Residual``/``Width``/``beadDist``, Miltenyi's ``HDR-CE``/``HDR-SE``/``HDR-V``,
   ``Event #``, ``Index``, ``SampleID``;
4. when ``$TIMESTEP`` is set but no parameter is named as time: the one parameter whose values
   never decrease (only when events are given).

Every decision says why (:attr:`ChannelKinds.reasons`), so a run can record it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

__all__ = ["KINDS", "ChannelKinds", "classify_channels", "kind_of_name"]

Kind = Literal["time", "scatter", "fluorescence", "other"]
KINDS: tuple[str, ...] = ("time", "scatter", "fluorescence", "other")

_PNTYPE = {
    "time": "time",
    "forward_scatter": "scatter",
    "side_scatter": "scatter",
    "electronic_volume": "scatter",
    "raw_fluorescence": "fluorescence",
    "unmixed_fluorescence": "fluorescence",
    "mass": "fluorescence",
    "classification": "other",
    "index": "other",
}

_TIME = re.compile(r"^(time|hdr-t|clock)(\b|_|$)", re.IGNORECASE)
# a token of the name: FSC, SSC, BSC (with a leading laser number: 405SSC), or FS/SS first
_SCATTER_TOKEN = re.compile(r"^\d*(fsc|ssc|bsc|lsc)$", re.IGNORECASE)
_SCATTER_FIRST = re.compile(r"^(fs|ss|fsc|ssc|bsc)$", re.IGNORECASE)
_SCATTER_WORDS = re.compile(r"(forward|side|back)[ _-]?scatter", re.IGNORECASE)
_SCATTER_EXACT = {"width", "event_length", "event length"}
_OTHER_EXACT = {"center", "offset", "residual", "beaddist", "hdr-ce", "hdr-se", "hdr-v", "event #",
                "event#", "event", "index", "sampleid", "sample id", "event_count", "eventcount"}
_CYTOF_SHAPE = {"center", "offset", "residual", "width"}
_TOKENS = re.compile(r"[^0-9a-z]+", re.IGNORECASE)


def kind_of_name(name: str) -> Kind | None:
    """The kind a parameter name alone implies (None: nothing in the name says, so fluorescence).

    Examples
    --------
    >>> kind_of_name("HDR-T"), kind_of_name("SSC-B-A"), kind_of_name("CD3")
    ('time', 'scatter', None)
    """
    n = name.strip()
    low = n.lower()
    if not low:
        return None
    if _TIME.match(low):
        return "time"
    if low in _OTHER_EXACT:
        return "other"
    if low in _SCATTER_EXACT or _SCATTER_WORDS.search(low):
        return "scatter"
    tokens = [t for t in _TOKENS.split(low) if t]
    if tokens and _SCATTER_FIRST.match(tokens[0]):
        return "scatter"
    if any(_SCATTER_TOKEN.match(t) for t in tokens[:3]):
        return "scatter"
    return None


@dataclass(frozen=True)
class ChannelKinds:
    """Each parameter's kind, the time parameter, and why.

    Attributes
    ----------
    kinds : dict of str to str
        ``$PnN`` -> ``"time"``, ``"scatter"``, ``"fluorescence"`` or ``"other"``.
    time : str or None
        The ``$PnN`` of the time parameter (the first when a file splits time in two words).
    reasons : dict of str to str
        ``$PnN`` -> how its kind was decided (for the run's decision record).
    """

    kinds: dict[str, str]
    time: str | None
    reasons: dict[str, str] = field(default_factory=dict)

    def of(self, pnn: str) -> str:
        """The kind of one parameter (``"fluorescence"`` for one not classified)."""
        return self.kinds.get(pnn, "fluorescence")

    def names(self, kind: str) -> list[str]:
        """The ``$PnN`` of every parameter of one kind, in file order."""
        return [p for p, k in self.kinds.items() if k == kind]


def classify_channels(
    pnn: Sequence[str],
    pns: Sequence[str] | None = None,
    keywords: Mapping[str, str] | None = None,
    *,
    time: str | None = None,
    events: np.ndarray | None = None,
) -> ChannelKinds:
    """Decide every parameter's kind (see the module docstring for the rules and their order).

    Parameters
    ----------
    pnn, pns : sequences of str
        ``$PnN`` and ``$PnS`` of the parameters, in file order (``pns`` may be empty strings).
    keywords : mapping, optional
        The file's TEXT keywords (upper-case keys): ``$PnTYPE`` and ``$TIMESTEP`` are read.
    time : str, optional
        The time parameter as the user names it (``$PnN`` or ``$PnS``); overrides every rule.
    events : ndarray, optional
        The events (n, n_parameters); lets ``$TIMESTEP`` find an unnamed time parameter.

    Raises
    ------
    KeyError
        ``time`` names no parameter.
    """
    kw = keywords or {}
    pns = list(pns) if pns is not None else [""] * len(pnn)
    kinds: dict[str, str] = {}
    reasons: dict[str, str] = {}
    chosen: str | None = None
    if time is not None:
        hits = [p for p, s in zip(pnn, pns, strict=True) if time in (p, s)]
        if not hits:
            hits = [p for p, s in zip(pnn, pns, strict=True) if time.lower() in (p.lower(), s.lower())]
        if len(hits) != 1:
            msg = f"time channel {time!r} is not one of the file's parameters {list(pnn)}"
            raise KeyError(msg)
        chosen = hits[0]
    cytof = any(re.fullmatch(r"[A-Z][a-z]?\d{2,3}Di", p) for p in pnn)
    for i, (p, s) in enumerate(zip(pnn, pns, strict=True), start=1):
        if p == chosen:
            kinds[p], reasons[p] = "time", f"time: {time} (set by the template)"
            continue
        ptype = kw.get(f"$P{i}TYPE", "").strip().lower()
        if ptype in _PNTYPE:
            kinds[p], reasons[p] = _PNTYPE[ptype], f"$P{i}TYPE={kw[f'$P{i}TYPE'].strip()}"
            continue
        k = kind_of_name(p)
        why = f"$P{i}N={p!r}"
        if k is None and s:
            k = kind_of_name(s)
            why = f"$P{i}S={s!r}"
        if k == "scatter" and p.lower() in _CYTOF_SHAPE and cytof:
            k = "other"  # CyTOF's Gaussian pulse parameters are bookkeeping, not scatter
        if k is None:
            kinds[p], reasons[p] = "fluorescence", "no time/scatter name: a detector"
        else:
            kinds[p], reasons[p] = k, why
    times = [p for p in pnn if kinds[p] == "time"]
    if chosen is not None:
        for p in times:  # a user's choice: any other "time" by name is just another parameter
            if p != chosen:
                kinds[p], reasons[p] = "other", f"{reasons[p]}, but the template names {chosen!r} as time"
        times = [chosen]
    if not times and "$TIMESTEP" in kw and events is not None and events.shape[0] > 1:
        rising = []
        for j, p in enumerate(pnn):
            if kinds[p] in ("fluorescence", "other"):
                col = np.asarray(events[:, j], dtype=np.float64)
                d = np.diff(col)
                if (d >= 0).all() and (d > 0).any():
                    rising.append(p)
        if len(rising) == 1:
            p = rising[0]
            kinds[p], reasons[p] = "time", "$TIMESTEP is set and its values never decrease"
            times = [p]
    return ChannelKinds(kinds, times[0] if times else None, reasons)
