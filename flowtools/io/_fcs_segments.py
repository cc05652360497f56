"""FCS byte sources and the HEADER and TEXT segments: offsets, keyword pairs, data-set chains.

Private to :mod:`flowtools.io.fcs` (the reading rules are documented there).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from flowtools.errors import FCSError

_HEADER_LEN = 58
_VERSIONS = ("2.0", "3.0", "3.1", "3.2")
_MAX_DATASETS = 1000
_PAD = "\x00 \r\n\t"



# ---------------------------------------------------------------------------------------------
# Byte sources: a file on disk, or bytes in memory.


class _FileSource:
    def __init__(self, fh: BinaryIO, size: int, path: Path | None) -> None:
        self.fh = fh
        self.size = size
        self.path = path

    def read(self, offset: int, n: int) -> bytes:
        self.fh.seek(offset)
        return self.fh.read(n)

    def array(self, offset: int, dtype: np.dtype[Any], count: int) -> np.ndarray:
        self.fh.seek(offset)
        if isinstance(self.fh, io.BufferedReader | io.FileIO):
            arr = np.fromfile(self.fh, dtype=dtype, count=count)
        else:
            arr = np.frombuffer(self.fh.read(count * dtype.itemsize), dtype=dtype)
        if arr.shape[0] != count:
            raise FCSError(self.path, f"file ended while reading DATA ({arr.shape[0]} of {count} values)")
        return arr


class _BytesSource:
    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.buf = memoryview(data).cast("B")
        self.size = len(self.buf)
        self.path = None

    def read(self, offset: int, n: int) -> bytes:
        return bytes(self.buf[offset : offset + n])

    def array(self, offset: int, dtype: np.dtype[Any], count: int) -> np.ndarray:
        n = count * dtype.itemsize
        if offset + n > self.size:
            raise FCSError(None, "data ended while reading DATA")
        return np.frombuffer(self.buf, dtype=dtype, count=count, offset=offset).copy()



# ---------------------------------------------------------------------------------------------
# HEADER and TEXT


@dataclass
class _Header:
    version: str
    text: tuple[int, int]
    data: tuple[int | None, int | None]


def _parse_header(src: _FileSource | _BytesSource, base: int) -> _Header:
    raw = src.read(base, _HEADER_LEN)
    if len(raw) < _HEADER_LEN:
        what = "file" if base == 0 else f"data set at byte {base}"
        raise FCSError(
            src.path, f"not an FCS file: {what} has {len(raw)} bytes, a HEADER needs {_HEADER_LEN}"
        )
    if raw[:3] != b"FCS":
        raise FCSError(src.path, "not an FCS file: it does not start with 'FCS'")
    version = raw[3:6].decode("ascii", "replace")
    if version not in _VERSIONS:
        raise FCSError(src.path, f"unsupported FCS version {version!r} (supported: {', '.join(_VERSIONS)})")

    def offset(lo: int, name: str) -> int | None:
        field_ = raw[lo : lo + 8].strip()
        if not field_:
            return None
        if not field_.isdigit():
            raise FCSError(src.path, f"HEADER {name} offset is not a number: {field_[:8]!r}")
        return int(field_)

    t0, t1 = offset(10, "TEXT start"), offset(18, "TEXT end")
    if t0 is None or t1 is None:
        raise FCSError(src.path, "HEADER has no TEXT segment offsets")
    return _Header(version, (t0, t1), (offset(26, "DATA start"), offset(34, "DATA end")))


def _read_text_segment(src: _FileSource | _BytesSource, base: int, start: int, end: int, what: str) -> bytes:
    if start < _HEADER_LEN and what == "TEXT":
        raise FCSError(src.path, f"{what} segment starts at byte {start}, inside the HEADER")
    if end < start + 1:
        raise FCSError(src.path, f"{what} segment offsets are impossible ({start}..{end})")
    if base + end >= src.size:
        raise FCSError(
            src.path, f"{what} segment ends at byte {base + end}, past the end of the file ({src.size} bytes)"
        )
    return src.read(base + start, end - start + 1)


def _split_text(text: str, notes: list[str], what: str) -> list[str]:
    """Split a TEXT segment into fields; a doubled delimiter is a literal delimiter."""
    delim = text[:1]
    body = text[1:]
    if delim + delim not in body:
        fields = body.split(delim)
        tail = fields.pop()  # what follows the final delimiter
    else:
        fields = []
        cur: list[str] = []
        i, n = 0, len(body)
        while True:
            j = body.find(delim, i)
            if j == -1:
                tail = "".join(cur) + body[i:]
                break
            if j + 1 < n and body[j + 1] == delim:
                if not body[j + 2 :].strip(_PAD):
                    # A doubled delimiter closing the segment: an (illegal but common in
                    # FCS 2.0) empty last value, not an escaped delimiter.
                    cur.append(body[i:j])
                    fields.extend(("".join(cur), ""))
                    tail = ""
                    break
                cur.append(body[i : j + 1])
                i = j + 2
                continue
            cur.append(body[i:j])
            fields.append("".join(cur))
            cur.clear()
            i = j + 1
    if tail.strip(_PAD):
        if len(fields) % 2 == 1:
            fields.append(tail)
            notes.append(f"{what} segment does not end with its delimiter; last value read up to segment end")
        else:
            notes.append(
                f"{what} segment has {len(tail)} stray characters after its last delimiter (ignored)"
            )
    return fields


def _latin1_fallback(field_: str) -> str:
    """Undo a surrogate-escaped UTF-8 decode of a field that is not UTF-8: read it as Latin-1."""
    try:
        field_.encode("utf-8")
    except UnicodeEncodeError:
        return field_.encode("utf-8", "surrogateescape").decode("latin-1")
    return field_


def _parse_pairs(text: bytes, notes: list[str], what: str) -> dict[str, str]:
    if len(text) < 2:
        raise FCSError(None, f"{what} segment is empty")
    # Decode once (the common case); fields that are not UTF-8 are re-read as Latin-1.
    try:
        decoded = text.decode("utf-8")
        mixed = False
    except UnicodeDecodeError:
        decoded = text.decode("utf-8", "surrogateescape")
        mixed = True
    fields = _split_text(decoded, notes, what)
    if mixed:
        fields = [_latin1_fallback(f) for f in fields]
    if len(fields) % 2 == 1:
        # The dropped field is not echoed: after a misalignment it may be a (personal) value.
        notes.append(f"{what} segment has an odd number of fields; the last one was dropped")
        fields.pop()
    keys = [k.strip().upper() for k in fields[0::2]]
    out = dict(zip(keys, fields[1::2], strict=True))
    if len(out) == len(keys) and "" not in out:
        return out
    # Duplicates or empty keys: the first value wins.
    out = {}
    dupes = set()
    for key, value in zip(keys, fields[1::2], strict=True):
        if not key:
            continue
        if key in out:
            dupes.add(key)
            continue
        out[key] = value
    if dupes:
        notes.append(f"keyword(s) given more than once, first value kept: {', '.join(sorted(dupes))}")
    return out


# Signatures of binary formats a writer may put where supplemental TEXT should be.
_BINARY_MAGIC = (
    (b"PK\x03\x04", "a ZIP archive"),
    (b"PK\x05\x06", "an empty ZIP archive"),
    (b"\x1f\x8b", "gzip data"),
    (b"BZh", "bzip2 data"),
    (b"\xfd7zXZ\x00", "xz data"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
)
#: Above this share of control characters a segment is binary (keyword text has next to none).
_MAX_CONTROL_SHARE = 0.10


def _control_chars(text: str, allowed: str = "\t\n\r") -> int:
    """Count the characters of ``text`` that are not printable text (C0/C1 controls, DEL, stray bytes).

    ``text`` is decoded UTF-8 with ``surrogateescape``: a byte that is not UTF-8 counts only when it
    is a control character in Latin-1 too (0x80-0x9F), so Latin-1 text counts as text.
    """
    n = 0
    for ch in text:
        o = ord(ch)
        if o < 0x20 or 0x7F <= o <= 0x9F:
            n += ch not in allowed
        elif 0xDC80 <= o <= 0xDC9F:  # surrogate-escaped byte 0x80..0x9F
            n += 1
    return n


def _not_keyword_text(segment: bytes) -> str | None:
    """Why a supplemental TEXT segment is not FCS keyword text, or None when it may be.

    Some writers put an archive or other binary data there; split on its first byte it would
    give dozens of binary "keywords". A segment is binary when it starts with a known binary
    signature, when its first byte cannot be a delimiter (FCS: ASCII 1-126), when it holds no
    keyword/value pair, or when more than 10% of its characters are control characters (the
    delimiter itself, tab, CR and LF excepted).
    """
    for magic, what in _BINARY_MAGIC:
        if segment.startswith(magic):
            return what
    first = segment[0]
    if not 1 <= first <= 126:
        return f"its first byte 0x{first:02x} cannot be a delimiter"
    body = segment[1:].rstrip(_PAD.encode().replace(segment[:1], b""))
    if body.count(segment[:1]) < 2:
        return "no delimited keyword/value pairs"
    text = body.decode("utf-8", "surrogateescape")
    bad = _control_chars(text, "\t\n\r" + chr(first))
    if bad > _MAX_CONTROL_SHARE * len(text):
        return f"binary data: {bad:,} of {len(text):,} characters are control characters"
    return None


def _int_kw(kw: dict[str, str], key: str) -> int | None:
    raw = kw.get(key)
    if raw is None:
        return None
    raw = raw.strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        try:
            f = float(raw)
        except ValueError:
            return None
        return int(f) if f.is_integer() else None


def _read_keywords(
    src: _FileSource | _BytesSource, base: int, header: _Header, notes: list[str]
) -> dict[str, str]:
    text = _read_text_segment(src, base, header.text[0], header.text[1], "TEXT")
    try:
        kw = _parse_pairs(text, notes, "TEXT")
    except FCSError as exc:
        raise FCSError(src.path, exc.reason) from None
    s0, s1 = _int_kw(kw, "$BEGINSTEXT"), _int_kw(kw, "$ENDSTEXT")
    if s0 and s1 and s1 > s0:
        extra: dict[str, str] = {}
        try:
            stext = _read_text_segment(src, base, s0, s1, "supplemental TEXT")
            why = _not_keyword_text(stext)
            if why is None:
                extra = _parse_pairs(stext, notes, "supplemental TEXT")
            else:
                notes.append(
                    f"supplemental TEXT segment (bytes {s0}..{s1}, {len(stext):,} bytes) is not keyword "
                    f"text ({why}); skipped, none of it read as keywords"
                )
        except FCSError as exc:
            notes.append(f"supplemental TEXT ignored: {exc.reason}")
        for k, v in extra.items():
            kw.setdefault(k, v)
    return kw


def _walk_datasets(
    src: _FileSource | _BytesSource, stop_at: int | None = None
) -> tuple[list[tuple[int, _Header, dict[str, str], list[str]]], list[str]]:
    """Parse each data set's HEADER and TEXT, following $NEXTDATA with strictly increasing offsets.

    Returns the data sets as (base offset, header, keywords, notes) and the notes
    about the chain itself. Stops after data set ``stop_at`` when given.
    """
    found: list[tuple[int, _Header, dict[str, str], list[str]]] = []
    chain_notes: list[str] = []
    base = 0
    while len(found) < _MAX_DATASETS:
        notes: list[str] = []
        try:
            header = _parse_header(src, base)
            kw = _read_keywords(src, base, header, notes)
        except FCSError as exc:
            if not found:
                raise
            chain_notes.append(f"data set {len(found) + 1} cannot be read ({exc.reason}); ignored")
            break
        found.append((base, header, kw, notes))
        nxt = _int_kw(kw, "$NEXTDATA")
        if not nxt or (stop_at is not None and len(found) > stop_at):
            break
        new_base = base + nxt
        if nxt < 0 or new_base + _HEADER_LEN > src.size:
            chain_notes.append(
                f"$NEXTDATA of data set {len(found)} points outside the file; later data sets ignored"
            )
            break
        try:
            _parse_header(src, new_base)
        except FCSError as exc:
            chain_notes.append(
                f"$NEXTDATA of data set {len(found)} is not a readable data set ({exc.reason}); ignored"
            )
            break
        base = new_base
    return found, chain_notes


