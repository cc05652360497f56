"""Gating-ML reading errors and safety: malformed XML, entity bombs, unsupported elements."""

from __future__ import annotations

import pytest

from flowtools.errors import GatingMLError
from flowtools.gating.formats.gatingml import read_gatingml, to_gatingml_string, write_gatingml

HEAD = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<gating:Gating-ML '
    b'xmlns:gating="http://www.isac-net.org/std/Gating-ML/v2.0/gating" '
    b'xmlns:transforms="http://www.isac-net.org/std/Gating-ML/v2.0/transformations" '
    b'xmlns:data-type="http://www.isac-net.org/std/Gating-ML/v2.0/datatypes">'
)
TAIL = b"</gating:Gating-ML>"
RANGE = (
    b'<gating:RectangleGate gating:id="R"><gating:dimension gating:compensation-ref="uncompensated" '
    b'gating:min="1"><data-type:fcs-dimension data-type:name="FSC-H"/></gating:dimension>'
    b"</gating:RectangleGate>"
)


def test_minimal_document():
    s = read_gatingml(HEAD + RANGE + TAIL)
    assert list(s.populations) == ["R"]


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"<gating:FooGate gating:id='x'/>", "unsupported gate element"),
        (b"<other/>", "not a Gating-ML 2.0"),
        (RANGE.replace(b'gating:min="1"', b'gating:min="abc"'), "min='abc' is not a number"),
        (RANGE.replace(b' gating:id="R"', b""), "without gating:id"),
        (RANGE.replace(b'gating:min="1"', b""), "neither min nor max"),
        (
            b"<transforms:transformation transforms:id='t'>"
            b"<transforms:flog transforms:T='0' transforms:M='1'/>"
            b"</transforms:transformation>",
            "invalid parameters",
        ),
        (RANGE.replace(b'gating:id="R"', b'gating:id="R" gating:parent_id="Q"'), "parent 'Q'"),
    ],
)
def test_bad_documents_name_the_element(body, match):
    with pytest.raises(GatingMLError, match=match):
        read_gatingml(HEAD + body + TAIL)


def test_not_xml_and_wrong_root(tmp_path):
    p = tmp_path / "x.xml"
    p.write_text("<a><b></a>")
    with pytest.raises(GatingMLError, match="x.xml: not well-formed"):
        read_gatingml(p)
    with pytest.raises(GatingMLError, match="root element"):
        read_gatingml(b"<root/>")


def test_entity_bomb_and_external_entities_refused():
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
        b"<lolz>&lol2;</lolz>"
    )
    with pytest.raises(GatingMLError, match="unsafe XML"):
        read_gatingml(bomb)
    xxe = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>'
    with pytest.raises(GatingMLError, match="unsafe XML"):
        read_gatingml(xxe)


def test_write_round_trip(tmp_path):
    s = read_gatingml(HEAD + RANGE + TAIL)
    p = write_gatingml(s, tmp_path / "out.xml")
    assert read_gatingml(p) == s
    assert b"gating:RectangleGate" in to_gatingml_string(s)


def test_singular_inverted_matrix_and_duplicate_ids_refused():
    spec = (b'<transforms:spectrumMatrix transforms:id="M" transforms:matrix-inverted-already="true">'
            b'<transforms:fluorochromes><data-type:fcs-dimension data-type:name="A"/>'
            b'<data-type:fcs-dimension data-type:name="B"/></transforms:fluorochromes>'
            b'<transforms:detectors><data-type:fcs-dimension data-type:name="A"/>'
            b'<data-type:fcs-dimension data-type:name="B"/></transforms:detectors>'
            b'<transforms:spectrum><transforms:coefficient transforms:value="1"/>'
            b'<transforms:coefficient transforms:value="1"/></transforms:spectrum>'
            b'<transforms:spectrum><transforms:coefficient transforms:value="1"/>'
            b'<transforms:coefficient transforms:value="1"/></transforms:spectrum>'
            b"</transforms:spectrumMatrix>")
    with pytest.raises(GatingMLError, match="singular"):
        read_gatingml(HEAD + spec + TAIL)
    ok = spec.replace(b'transforms:matrix-inverted-already="true"', b"").replace(
        b'<transforms:coefficient transforms:value="1"/></transforms:spectrum></transforms:spectrumMatrix>',
        b'<transforms:coefficient transforms:value="2"/></transforms:spectrum></transforms:spectrumMatrix>')
    with pytest.raises(GatingMLError, match="defined twice"):
        read_gatingml(HEAD + ok + ok + TAIL)
