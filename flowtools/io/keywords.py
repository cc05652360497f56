"""Which FCS keywords are structural, and which may hold personal or free text.

FCS TEXT segments carry keywords such as ``$SRC`` (specimen source), ``$OP``
(operator), ``$FIL`` (original file name, often a patient code), ``$COM``,
``$INST`` and vendor fields like ``&10PATIENT ID``. flowtools never copies
those into outputs unless asked. The rule is an allow-list: only the
keywords below, which describe how the data are laid out and what was
measured, are shown by default. Anything else, including every vendor
keyword, counts as possibly personal.

A value may also hold binary data (a vendor blob, or bytes a broken writer
left in TEXT); :func:`shown_value` replaces such a value by ``<n bytes>`` so
that it is never printed to a terminal.
"""

from __future__ import annotations

import re

__all__ = ["has_binary_content", "is_safe_keyword", "safe_keywords", "shown_value"]

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


def has_binary_content(value: str) -> bool:
    """Return True when a keyword value holds non-printable characters (binary data, not text).

    Non-printable: C0 control characters other than tab, CR and LF, DEL, C1 control characters
    (U+0080-U+009F) and bytes that were neither UTF-8 nor text (surrogate escapes).

    Parameters
    ----------
    value : str
        A keyword value as stored by :func:`flowtools.io.read_fcs`.
    """
    for ch in value:
        o = ord(ch)
        if (o < 0x20 and ch not in "\t\n\r") or 0x7F <= o <= 0x9F or 0xD800 <= o <= 0xDFFF:
            return True
    return False


def shown_value(value: str) -> str:
    r"""Return a keyword value fit to show: the value itself, or ``"<n bytes>"`` when it is binary.

    Parameters
    ----------
    value : str
        A keyword value as stored by :func:`flowtools.io.read_fcs`.

    Returns
    -------
    str
        ``value`` unchanged when it is text; otherwise ``"<n bytes>"`` with ``n`` its length in
        bytes as stored (Latin-1 when every character fits one byte, else UTF-8).

    Examples
    --------
    >>> shown_value("FACSCanto II"), shown_value("PK\x03\x04\x00\x00")
    ('FACSCanto II', '<6 bytes>')
    """
    if not has_binary_content(value):
        return value
    try:
        n = len(value.encode("latin-1"))
    except UnicodeEncodeError:
        n = len(value.encode("utf-8", "surrogateescape"))
    return f"<{n} bytes>"
