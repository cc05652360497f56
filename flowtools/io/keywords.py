"""Which FCS keywords are structural, and which may hold personal or free text.

FCS TEXT segments carry keywords such as ``$SRC`` (specimen source), ``$OP``
(operator), ``$FIL`` (original file name, often a patient code), ``$COM``,
``$INST`` and vendor fields like ``&10PATIENT ID``. flowtools never copies
those into outputs unless asked. The rule is an allow-list: only the
keywords below, which describe how the data are laid out and what was
measured, are shown by default. Anything else, including every vendor
keyword, counts as possibly personal.
"""

from __future__ import annotations

import re

__all__ = ["is_safe_keyword", "safe_keywords"]

_SAFE_FIXED = frozenset(
    {
        "$BEGINANALYSIS",
        "$BEGINDATA",
        "$BEGINSTEXT",
        "$ENDANALYSIS",
        "$ENDDATA",
        "$ENDSTEXT",
        "$BYTEORD",
        "$DATATYPE",
        "$MODE",
        "$NEXTDATA",
        "$PAR",
        "$TOT",
        "$TIMESTEP",
        "$SPILLOVER",
        "$SPILL",
        "SPILL",
        "$COMP",
        "$CYT",
        "$VOL",
        "$ABRT",
        "$LOST",
        "$CSMODE",
        "$CSVBITS",
        "$UNICODE",
        "$FLOWRATE",
        "$ORIGINALITY",
        "$LAST_MODIFIED",
    }
)
# Per-parameter layout/measurement keywords ($PnN, $PnS, $PnR, ..., FCS 3.2 $PnDATATYPE etc.).
_SAFE_PARAM = re.compile(
    r"^\$P\d+(?:N|S|R|B|E|G|V|L|O|P|T|D|F|DATATYPE|TYPE|FEATURE|ANALYTE|TAG|DET|CALIBRATION)$"
)


def is_safe_keyword(key: str) -> bool:
    """Return True when a keyword is structural and holds no free text.

    Parameters
    ----------
    key : str
        Keyword name as stored by :func:`flowtools.io.read_fcs` (upper case).
    """
    k = key.upper()
    return k in _SAFE_FIXED or bool(_SAFE_PARAM.match(k))


def safe_keywords(keywords: dict[str, str]) -> dict[str, str]:
    """Return only the structural keywords of a keyword dict (see module docs)."""
    return {k: v for k, v in keywords.items() if is_safe_keyword(k)}
