"""Binary data where TEXT should be: a supplemental TEXT segment holding a ZIP archive, binary values.

Regression: ``flowtools info --all-keywords`` printed 97 KB of garbage for a file whose supplemental
TEXT segment held a ZIP archive, split on its first byte into ~90 binary "keywords".
"""

from __future__ import annotations

import io
import json
import struct
import warnings
import zipfile

import numpy as np
import pytest
from _fcsbuild import basic_keywords, build_fcs
from typer.testing import CliRunner

from flowtools.cli import app
from flowtools.errors import FCSWarning
from flowtools.io import read_fcs
from flowtools.io.keywords import has_binary_content, shown_value

runner = CliRunner()
N_EVENTS = 4


def _zip_bytes() -> bytes:
    """A real ZIP archive whose members are full of '/' (the TEXT delimiter used here)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for k in range(30):
            zf.writestr(f"exp/layout/plate/{k}.xml", f"<a href='/x/y/{k}'/>" * 50)
        zf.writestr("exp/raw.bin", np.random.default_rng(0).bytes(4000))
    return buf.getvalue()


def _fcs_with_stext(stext: bytes, extra: dict[str, str] | None = None) -> bytes:
    """A 2-parameter FCS 3.1 file whose supplemental TEXT segment is ``stext``, placed after DATA."""
    kw = basic_keywords(2, N_EVENTS)
    kw.update(extra or {})
    data = struct.pack("<" + "H" * 2 * N_EVENTS, *range(2 * N_EVENTS))
    kw["$BEGINSTEXT"] = kw["$ENDSTEXT"] = "0" * 10  # fixed width: the real offsets keep the length
    start = len(build_fcs(kw, data))
    kw["$BEGINSTEXT"], kw["$ENDSTEXT"] = f"{start:010d}", f"{start + len(stext) - 1:010d}"
    raw = build_fcs(kw, data, trailer=stext)
    assert len(raw) == start + len(stext)
    assert raw[start:] == stext
    return raw


def _write(tmp_path, raw: bytes, name: str = "zipped.fcs"):
    path = tmp_path / name
    path.write_bytes(raw)
    return path


def test_zip_in_supplemental_text_is_skipped_with_a_warning_naming_the_file(tmp_path):
    path = _write(tmp_path, _fcs_with_stext(_zip_bytes()))
    with pytest.warns(FCSWarning, match="supplemental TEXT") as rec:
        s = read_fcs(path)
    (msg,) = [str(w.message) for w in rec if "supplemental TEXT" in str(w.message)]
    assert str(path) in msg and "a ZIP archive" in msg and "skipped" in msg
    primary = set(basic_keywords(2, N_EVENTS)) | {"$BEGINDATA", "$ENDDATA", "$BEGINSTEXT", "$ENDSTEXT"}
    assert set(s.keywords) == primary  # nothing from the archive became a keyword
    assert not any(has_binary_content(k) or has_binary_content(v) for k, v in s.keywords.items())
    np.testing.assert_array_equal(s.events.ravel(), np.arange(2 * N_EVENTS))
    assert any("a ZIP archive" in w for w in s.warnings)


@pytest.mark.parametrize(
    ("stext", "why"),
    [
        (b"/" + np.random.default_rng(1).bytes(3000), "binary data"),  # looks delimited, is noise
        (b"\x00\x01\x02KEY\x00value\x00", "cannot be a delimiter"),
        (b"\x1f\x8b\x08\x00" + bytes(200), "gzip data"),
        (b"/just one field without pairs", "no delimited keyword/value pairs"),
    ],
    ids=["noise", "nul-delimiter", "gzip", "no-pairs"],
)
def test_other_binary_supplemental_text_is_skipped(tmp_path, stext, why):
    path = _write(tmp_path, _fcs_with_stext(stext))
    with pytest.warns(FCSWarning, match=why):
        s = read_fcs(path)
    assert "$BEGINSTEXT" in s.keywords and len(s.keywords) == len(basic_keywords(2, N_EVENTS)) + 4


@pytest.mark.parametrize("delim", [b"/", b"\t", b"\x0c", b"\x1e"])
def test_keyword_supplemental_text_is_still_merged(tmp_path, delim):
    d = delim.decode()
    stext = d.join(["", "@MB_PANEL", "T cells", "@MB_GAIN", "1.5", "$TOT", "999", ""]).encode() + b"\x00" * 3
    path = _write(tmp_path, _fcs_with_stext(stext))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = read_fcs(path)
    assert s.keywords["@MB_PANEL"] == "T cells" and s.keywords["@MB_GAIN"] == "1.5"
    assert s.keywords["$TOT"] == str(N_EVENTS)  # the primary TEXT wins


def test_latin1_supplemental_text_is_text(tmp_path):
    stext = "/@OPERATOR/Müller-Lüdenscheid/@SITE/Créteil, Hôpital/".encode("latin-1")
    path = _write(tmp_path, _fcs_with_stext(stext))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = read_fcs(path)
    assert s.keywords["@SITE"] == "Créteil, Hôpital"


def test_shown_value():
    assert shown_value("FACSCanto II") == "FACSCanto II"
    assert shown_value("tab\tand\nnewline") == "tab\tand\nnewline"
    assert shown_value("Müller") == "Müller"
    assert shown_value("PK\x03\x04\x14\x00") == "<6 bytes>"
    assert shown_value("ab\x85") == "<3 bytes>"  # a C1 control character
    assert shown_value("\u20ac\x00") == "<4 bytes>"  # not Latin-1: counted as UTF-8
    assert not has_binary_content("") and has_binary_content("\x7f")


def test_info_all_keywords_shows_binary_values_as_byte_counts(tmp_path):
    blob = "".join(chr(b) for b in range(1, 40) if b != ord("/")) * 20
    raw = _fcs_with_stext(_zip_bytes(), extra={"VENDORBLOB": blob, "$CYT": "LSRFortessa"})
    path = _write(tmp_path, raw)
    r = runner.invoke(app, ["info", "--all-keywords", str(path)])
    assert r.exit_code == 0, r.output
    assert "LSRFortessa" in r.output
    assert f"<{len(blob)} bytes>" in r.output
    assert "not keyword text (a ZIP archive)" in r.output.replace("\n", " ")
    assert not has_binary_content(r.output)
    assert len(r.output) < 6000, len(r.output)  # was ~97 KB of binary "keywords"
    r = runner.invoke(app, ["info", "--json", "--all-keywords", str(path)])
    assert r.exit_code == 0, r.output
    (rec,) = json.loads(r.stdout)
    assert rec["keywords"]["VENDORBLOB"] == f"<{len(blob)} bytes>"
    assert rec["keywords"]["$CYT"] == "LSRFortessa"
    assert not any(has_binary_content(k) or has_binary_content(v) for k, v in rec["keywords"].items())
    assert any("a ZIP archive" in w for w in rec["warnings"])
