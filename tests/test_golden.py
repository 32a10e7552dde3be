"""
Golden byte vectors, written out by hand, checked for ampcore.serialize,
ampcore.parse and ampcore.BoxParser, and against stock Twisted as well so a
drift of the oracle itself shows up here.  One probes the key order:
C{AmpBox.serialize} writes C{sorted(self.items())}, so keys go out in
bytewise order (b"B" < b"_ask" < b"a" < b"b").
"""

import pytest
from twisted.protocols import amp

import ampcore

GOLDEN = [
    (
        "foo-bar",
        amp.AmpBox({b"foo": b"bar"}),
        b"\x00\x03foo\x00\x03bar\x00\x00",
    ),
    (
        "first-callRemote-Hello",
        amp.AmpBox({b"_ask": b"1", b"_command": b"hello", b"hello": b"x"}),
        b"\x00\x04_ask\x00\x011"
        b"\x00\x08_command\x00\x05hello"
        b"\x00\x05hello\x00\x01x"
        b"\x00\x00",
    ),
    (
        "empty-box",
        amp.AmpBox(),
        b"\x00\x00",
    ),
    (
        "sort-order",
        amp.AmpBox({b"b": b"1", b"a": b"2", b"B": b"3", b"_ask": b"4"}),
        b"\x00\x01B\x00\x013"
        b"\x00\x04_ask\x00\x014"
        b"\x00\x01a\x00\x012"
        b"\x00\x01b\x00\x011"
        b"\x00\x00",
    ),
]
IDS = [name for name, _, _ in GOLDEN]
WIRE = {name: wire for name, _, wire in GOLDEN}


@pytest.mark.parametrize("name, box, wire", GOLDEN, ids=IDS)
def test_serialize_golden(name, box, wire):
    assert amp.AmpBox.serialize(box) == wire  # the oracle agrees with the vector
    assert ampcore.serialize(box) == wire
    assert ampcore.serialize(dict(box)) == wire


@pytest.mark.parametrize("name, box, wire", GOLDEN, ids=IDS)
def test_parse_golden(name, box, wire):
    for parsed in (amp.parseString(wire), ampcore.parse(wire)):
        assert parsed == [box]
        assert type(parsed[0]) is amp.AmpBox
        # Items come back in wire order, which is the sorted order.
        assert list(parsed[0].items()) == sorted(box.items())


@pytest.mark.parametrize("name, box, wire", GOLDEN, ids=IDS)
def test_boxparser_golden(name, box, wire):
    parser = ampcore.BoxParser()
    got = []
    for i in range(len(wire)):
        got += parser.feed(wire[i : i + 1])
    assert got == [box]
    partial = b"\x00\x03fo"
    assert parser.feed(wire + partial) == [box]
    assert parser.unprocessed == partial


def test_W1_order_with_keyword_constructed_box():
    """AmpBox(**kw) turns str keys into bytes; the order is still bytewise."""
    box = amp.AmpBox(b=b"1", a=b"2", B=b"3", _ask=b"4")
    wire = WIRE["sort-order"]
    assert ampcore.serialize(box) == wire == amp.AmpBox.serialize(box)


def test_empty_key_golden():
    """An empty key is not rejected on send: C{AmpBox.serialize} checks no minimum."""
    box = amp.AmpBox({b"": b"v"})
    wire = b"\x00\x00\x00\x01\x76\x00\x00"
    assert amp.AmpBox.serialize(box) == wire
    assert ampcore.serialize(box) == wire
    # The peer reads an empty box, then a key b"v" whose value is the
    # terminator's b"" and a box that never ends.
    assert amp.parseString(wire) == [amp.AmpBox()]
    assert ampcore.parse(wire) == [amp.AmpBox()]
    parser = ampcore.BoxParser()
    assert parser.feed(wire) == [amp.AmpBox()]
    assert parser.unprocessed == b"\x00\x01v\x00\x00"
