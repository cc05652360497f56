"""Build arbitrary (also broken) FCS bytes for tests, independently of flowtools' writer."""

from __future__ import annotations


def build_fcs(
    keywords: dict[str, str],
    data: bytes,
    *,
    version: str = "3.1",
    delim: bytes = b"/",
    header_data: tuple[str, str] | None = None,
    text_offsets: bool = True,
    text_start: int = 58,
    trailer: bytes = b"",
) -> bytes:
    """Return FCS bytes: HEADER + TEXT (with given keywords) + data.

    $BEGINDATA/$ENDDATA are added when ``text_offsets``; ``header_data`` overrides
    the HEADER's DATA offset fields (8-character strings).
    """

    def text_for(begin: int, end: int) -> bytes:
        kw = dict(keywords)
        if text_offsets:
            kw["$BEGINDATA"] = str(begin)
            kw["$ENDDATA"] = str(end)
        body = b""
        for k, v in kw.items():
            kb = k.encode("latin-1").replace(delim, delim * 2)
            vb = v.encode("latin-1").replace(delim, delim * 2)
            body += kb + delim + vb + delim
        return delim + body

    begin = end = 0
    for _ in range(6):
        text = text_for(begin, end)
        nb = text_start + len(text)
        ne = nb + len(data) - 1
        if (nb, ne) == (begin, end):
            break
        begin, end = nb, ne
    text = text_for(begin, end)
    pad = b" " * (text_start - 58)
    hd = header_data if header_data is not None else (f"{begin:>8}", f"{end:>8}")
    header = (
        f"FCS{version}    {text_start:>8}{text_start + len(text) - 1:>8}".encode()
        + hd[0].encode().rjust(8)
        + hd[1].encode().rjust(8)
        + b"       0       0"
    )
    assert len(header) == 58
    return header + pad + text + data + trailer


def basic_keywords(
    n_par: int,
    n_tot: int,
    *,
    datatype: str = "I",
    bits: int = 16,
    byteord: str = "1,2,3,4",
    pnr: str = "1024",
) -> dict[str, str]:
    kw = {
        "$BYTEORD": byteord,
        "$DATATYPE": datatype,
        "$MODE": "L",
        "$NEXTDATA": "0",
        "$PAR": str(n_par),
        "$TOT": str(n_tot),
    }
    for i in range(1, n_par + 1):
        kw[f"$P{i}N"] = f"CH{i}"
        kw[f"$P{i}B"] = str(bits)
        kw[f"$P{i}R"] = pnr
        kw[f"$P{i}E"] = "0,0"
    return kw
