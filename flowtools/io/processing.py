"""Recognise FCS files that were compensated or transformed before flowtools read them.

Files exported after analysis (FlowJo exports, flowCore/FlowSOM/CATALYST/Spectre output, FlowKit
exports) can hold events that are already compensated and/or on a transformed scale. Compensating or
transforming them again gives wrong populations without any error, so the resolver warns first.
:func:`processing_state` looks for the marks the tools leave behind; it never changes the data.

API
---
``processing_state(keywords, channels, *, events=None) -> ProcessingState``

``keywords`` and ``channels`` are :attr:`FCSSample.keywords <flowtools.io.FCSSample>` and
:attr:`FCSSample.channels`; ``events`` (the sample's raw events, as read) is optional and only
enables the data hint below. :class:`ProcessingState` has ``compensated`` and ``transformed``: None
when nothing says so, else one sentence naming the evidence (the keyword and its value, or the
parameter name); ``flagged`` is True when either is set and :meth:`ProcessingState.describe` gives
one line for a warning. ``hints`` lists observations that do *not* flag the file (e.g. a keyword that
looks relevant but is not evidence), for a run's decision record. Evidence and hints quote only
``$PnN`` names, numbers and fixed keyword values (``custom``, ``applied``, ``TRUE``), never free text
from vendor keywords (see :mod:`flowtools.io.keywords`). Typical use in the resolver::

    state = processing_state(sample.keywords, sample.channels)
    if state.flagged:
        warnings.warn(f"{sample.path.name}: {state.describe()}", SomeWarning, stacklevel=2)

Evidence, keyword first (each rule cites where the tool writes it)
------------------------------------------------------------------
Compensated:

* ``$PnN`` starting with ``Comp-`` / ``FJComp-`` / ``comp-`` (case-insensitive). FlowJo names the
  parameters it derives with a matrix by the matrix's ``prefix`` (``Comp-`` by default) and records
  them as ``$PnN`` keywords (SofieVG/FlowSOM ``inst/extdata/gating.wsp``: ``$P19N = Comp-FITC-A``
  beside the raw ``$P5N``; the FlowKit 8-colour workspaces in ``shared/data/flowjo``:
  ``$P16N = Comp-TNFa FITC FLR-A``); an FCS file FlowJo exports with those parameters keeps the
  names. Analysis scripts reading FlowJo 10 exports use ``FJComp-`` names (seen in public code
  search, e.g. ``FJComp-APC-A``; no FlowJo source to cite). CytoPipeline's ``runCompensation``
  prefixes compensated channels with ``comp-`` "as in FlowJo" (UCLouvain-CBIO/CytoPipeline
  ``R/utils.R``).

Transformed:

* ``transformation = custom`` with ``flowCore_$PnRmax`` on a transformed scale. flowCore's
  ``transform()`` / ``%on%`` call ``updateTransformKeywords``, which sets ``transformation`` to
  ``"custom"`` and writes each parameter's new ``flowCore_$PnRmin``/``flowCore_$PnRmax``, the
  *transformed* range, while ``$PnR`` keeps the raw range (RGLab/flowCore
  ``R/flowFrame-accessors.R`` ``updateTransformKeywords``, ``R/on-methods.R``; ``write.FCS`` in
  ``R/IO.R`` copies ``$PnR`` from the original keywords). The FlowSOM protocol's pre-processed files
  are written this way (``flowCore::compensate``, ``flowCore::transform``, ``write.FCS``;
  saeyslab/FlowSOM_protocol ``R/FlowSOM_protocol.R`` step 13). CATALYST's
  ``sce2fcs`` writes ``transformation = custom`` for *every* export, also of raw counts, with
  ``flowCore_$PnRmax = $PnR - 1 = 2^ceil(log2(max)) - 1`` (HelenaLC/CATALYST ``R/sce2fcs.R``), so
  the keyword alone is not evidence: the file is flagged only when a fluorescence parameter's
  ``flowCore_$PnRmax`` is at most :data:`TRANSFORMED_SCALE_MAX` while its ``$PnR`` is at least
  twice as large (flowCore's pattern), or when at least half of the fluorescence parameters'
  ``flowCore_$PnRmax`` are that small (e.g. CATALYST's asinh ``exprs`` assay written out).
* ``$PnN`` ending in ``_asinh`` or ``_asinh_cf<cofactor>``: Spectre's ``do.asinh`` adds the
  transformed columns under those names and ``write.files(write.fcs = TRUE)`` writes them as
  parameters (ImmuneDynamics/Spectre ``R/do.asinh.R``, ``R/write.files.R``).

Not evidence (kept as hints or ignored), so ordinary files are not flagged:

* ``transformation = applied``: flowCore's ``read.FCS`` sets it after decoding log-amplified
  ``$PnE`` channels to linear values and resetting ``$PnE`` to ``0,0`` (RGLab/flowCore ``R/IO.R``);
  the data are linear intensities, as in the CytoNorm blood files in ``shared/data`` (written with
  ``CREATOR = PengQiu FCS writer``).
* ``APPLY COMPENSATION = TRUE`` (BD FACSDiva, Aria): a display setting of the acquisition software;
  the stored events are uncompensated and ``SPILL`` holds the matrix (every Diva file in
  ``shared/data``).
* ``FJ_COMPMATRIXNAME`` (FlowJo's keyword naming the sample's matrix; ``shared/data`` FlowKit
  ``100715.fcs`` carries it blank): names a matrix, not which parameters were exported compensated.
* Tools that leave no mark: ``flowCore::compensate`` (no keyword), FlowKit ``Sample.export``
  (``source='comp'``/``'xform'`` write ``$PnE 0,0``, ``$PnG 1``, ``$PnR 262144`` whatever the source;
  whitews/FlowKit ``src/flowkit/_models/sample.py`` ``_get_metadata_for_export``, FlowIO
  ``src/flowio/create_fcs.py``), FlowSOM's ``SaveClustersToFCS`` and cytofkit's
  ``cytof_addToFCS`` (raw events plus cluster/t-SNE columns; SofieVG/FlowSOM ``R/2_buildSOM.R``,
  JinmiaoChenLab/cytofkit ``R/cytof_postProcess.R``). No Cytobank or OMIQ export keyword was found.

Data hint (only with ``events``, only when no keyword says so, labelled ``"data hint: ..."``): float
data (``$DATATYPE`` F or D) whose fluorescence parameters with ``$PnR >= 1024`` *all* lie within
±:data:`TRANSFORMED_SCALE_MAX` (logicle 0..4.5, FlowKit/Gating-ML logicle 0..1, arcsinh below ~20,
log10 below ~10) while not all constant. Raw intensities on a 1024..2^32 range never do; this is
what a FlowKit ``export(source='xform')`` file looks like (``$PnR 262144``, values 0..1).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from flowtools.io.channels import classify_channels

if TYPE_CHECKING:
    from flowtools.io.fcs import Channel

__all__ = ["TRANSFORMED_SCALE_MAX", "ProcessingState", "processing_state"]

TRANSFORMED_SCALE_MAX = 25.0
"""Largest absolute value on a transformed scale (arcsinh of 2^32 with cofactor 5 is 21.3)."""

_RAW_RANGE_MIN = 1024.0  # $PnR of the smallest raw (10-bit) scales
_MIN_EVENTS = 10

_FLAG_VALUES = frozenset({"TRUE", "FALSE", "T", "F", "YES", "NO", "1", "0"})
_COMP_NAME = re.compile(r"^(?:fj)?comp-", re.IGNORECASE)
_SPECTRE_ASINH = re.compile(r"_asinh(?:_cf[0-9.]+)?$", re.IGNORECASE)


@dataclass(frozen=True)
class ProcessingState:
    """What an FCS file says about processing done before flowtools read it.

    Attributes
    ----------
    compensated : str or None
        The evidence that the events are already compensated (None: nothing says so).
    transformed : str or None
        The evidence that the events are already on a transformed scale; starts with
        ``"data hint: "`` when it comes from the values rather than from a keyword.
    hints : tuple of str
        Observations that do not flag the file (e.g. ``transformation = applied``).
    """

    compensated: str | None = None
    transformed: str | None = None
    hints: tuple[str, ...] = ()

    @property
    def flagged(self) -> bool:
        """True when the file looks compensated or transformed already."""
        return self.compensated is not None or self.transformed is not None

    def describe(self) -> str:
        """One line for a warning (empty when nothing is flagged).

        Examples
        --------
        >>> ProcessingState(compensated="$P3N='Comp-FITC-A' (FlowJo's prefix)").describe()
        "looks already compensated: $P3N='Comp-FITC-A' (FlowJo's prefix)"
        """
        parts = []
        if self.compensated is not None:
            parts.append(f"looks already compensated: {self.compensated}")
        if self.transformed is not None:
            parts.append(f"looks already transformed: {self.transformed}")
        return "; ".join(parts)


def processing_state(
    keywords: Mapping[str, str],
    channels: Sequence[Channel],
    *,
    events: np.ndarray | None = None,
) -> ProcessingState:
    """Recognise files exported after compensation and/or transformation (see the module docstring).

    Parameters
    ----------
    keywords : mapping of str to str
        The file's TEXT keywords (:attr:`FCSSample.keywords`; keys are matched case-insensitively).
    channels : sequence of Channel
        Its parameters (:attr:`FCSSample.channels`), in file order.
    events : ndarray, shape (n_events, n_channels), optional
        The raw events as read (:attr:`FCSSample.events`); enables the data hint.

    Returns
    -------
    ProcessingState
        ``compensated`` / ``transformed`` name the evidence, or are None.

    Examples
    --------
    >>> from flowtools.io.fcs import Channel
    >>> ch = [Channel(0, "FSC-A", "", 262144.0, 32, (0.0, 0.0), 1.0, "F"),
    ...       Channel(1, "FJComp-PE-A", "CD4", 262144.0, 32, (0.0, 0.0), 1.0, "F")]
    >>> processing_state({"$DATATYPE": "F"}, ch).compensated
    "$P2N='FJComp-PE-A' (FlowJo's compensated-parameter prefix)"
    """
    kw = {k.upper(): v for k, v in keywords.items()}
    pnn = [c.pnn for c in channels]
    kinds = classify_channels(pnn, [c.pns for c in channels], kw)
    fluor = [c for c in channels if kinds.of(c.pnn) == "fluorescence"]
    hints: list[str] = []

    compensated = _name_evidence(channels, _COMP_NAME, "FlowJo's compensated-parameter prefix")
    transformed = _flowcore_evidence(kw, fluor, hints)
    if transformed is None:
        transformed = _name_evidence(channels, _SPECTRE_ASINH, "Spectre's do.asinh output name")
    if transformed is None and events is not None:
        transformed = _data_hint(fluor, events)

    if kw.get("TRANSFORMATION", "").strip().lower() == "applied":
        hints.append(
            "transformation=applied: flowCore decoded $PnE log scales to linear when it read the file "
            "(not a display transform)"
        )
    for key in ("APPLY COMPENSATION", "APPLY_COMPENSATION"):
        if key in kw:
            value = kw[key].strip().upper()
            shown = f"={value}" if value in _FLAG_VALUES else " is set"  # never echo free text
            hints.append(f"{key}{shown}: an acquisition display setting; the events stay raw")
    matrix_name = kw.get("FJ_COMPMATRIXNAME", "").strip()
    if matrix_name and compensated is None:
        hints.append("FJ_COMPMATRIXNAME is set (FlowJo names a matrix) but no parameter is named compensated")
    return ProcessingState(compensated, transformed, tuple(hints))


def _name_evidence(channels: Sequence[Channel], pattern: re.Pattern[str], why: str) -> str | None:
    hits = [c for c in channels if pattern.search(c.pnn)]
    if not hits:
        return None
    first = hits[0]
    more = f" and {len(hits) - 1} more" if len(hits) > 1 else ""
    return f"$P{first.index + 1}N={first.pnn!r}{more} ({why})"


def _float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        x = float(value.strip())
    except ValueError:
        return None
    return x if np.isfinite(x) else None


def _flowcore_evidence(kw: Mapping[str, str], fluor: Sequence[Channel], hints: list[str]) -> str | None:
    """``transformation=custom`` confirmed by transformed-scale ``flowCore_$PnRmax`` values."""
    if kw.get("TRANSFORMATION", "").strip().lower() != "custom":
        return None
    rmax = {}
    for c in fluor:
        v = _float(kw.get(f"FLOWCORE_$P{c.index + 1}RMAX"))
        if v is not None:
            rmax[c.index] = (c, v)
    small = [(c, v) for c, v in rmax.values() if abs(v) <= TRANSFORMED_SCALE_MAX]
    shrunk = [(c, v) for c, v in small if c.pnr is not None and c.pnr >= 2 * (abs(v) + 1)]
    picked = shrunk or (small if rmax and 2 * len(small) >= len(rmax) else [])
    if picked:
        c, v = picked[0]
        pnr = f", $P{c.index + 1}R={c.pnr:g}" if c.pnr is not None else ""
        more = f" (and {len(picked) - 1} more parameters)" if len(picked) > 1 else ""
        return (
            f"transformation=custom with flowCore_$P{c.index + 1}Rmax={v:g}{pnr} for {c.pnn!r}{more} "
            "(flowCore transform() records the transformed range)"
        )
    if rmax:
        hints.append(
            "transformation=custom but the fluorescence flowCore_$PnRmax are raw-scale ranges "
            "(CATALYST's sce2fcs writes the keyword for every export)"
        )
    else:
        hints.append("transformation=custom without flowCore_$PnRmax keywords to confirm it")
    return None


def _data_hint(fluor: Sequence[Channel], events: np.ndarray) -> str | None:
    """Float data whose every large-range fluorescence parameter lies on a transformed scale."""
    x = np.asarray(events)
    if x.ndim != 2 or x.shape[0] < _MIN_EVENTS:
        return None
    cols = [
        c
        for c in fluor
        if c.pnr is not None and c.pnr >= _RAW_RANGE_MIN and c.datatype in ("F", "D") and c.index < x.shape[1]
    ]
    if not cols:
        return None
    lo, hi = np.inf, -np.inf
    spread = False
    for c in cols:
        col = x[:, c.index]
        col = col[np.isfinite(col)]
        if col.size == 0:
            return None
        cmin, cmax = float(col.min()), float(col.max())
        if max(abs(cmin), abs(cmax)) > TRANSFORMED_SCALE_MAX:
            return None
        spread = spread or cmax > cmin
        lo, hi = min(lo, cmin), max(hi, cmax)
    if not spread:
        return None
    ranges = sorted({f"{c.pnr:g}" for c in cols})
    return (
        f"data hint: all {len(cols)} fluorescence parameters lie within [{lo:.3g}, {hi:.3g}] "
        f"while $PnR is {'/'.join(ranges)} (float data on a transformed scale; no keyword says so)"
    )
