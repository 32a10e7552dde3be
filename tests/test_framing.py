"""
Differential scenarios at the framing layer, C{BinaryBoxProtocol}: bytes
into boxes however they are chunked, over-long key prefixes, unfinished
boxes, and boxes into bytes.

Each test is a scenario run on stock C{twisted.protocols.amp.AMP} (or its
C{BinaryBoxProtocol}) and on ampcore's (L{helpers.differential}); the two
traces must be equal.
"""

import pytest
from twisted.internet.error import ConnectionDone
from twisted.protocols import amp
from twisted.python.failure import Failure

import ampcore
from helpers import (
    Declared,
    Hello,
    answerBox,
    askBox,
    chunked,
    connect,
    connectedPeer,
    differential,
    errorBox,
    feed,
    lostReason,
    needsExtension,
    recordState,
    runBoth,
    runScenario,
    wire,
)

pytestmark = needsExtension()


# ---- chunking --------------------------------------------------------------------------

CONVERSATION = [
    askBox(b"1", b"Hello", hello=b"one"),
    askBox(b"2", b"Sum", a=b"3", b=b"4"),
    askBox(b"3", b"RAW", echo=b"raw"),
    askBox(b"4", b"nosuch"),
    askBox(b"5", b"Hello", hello=b"declared"),
    {b"_command": b"NoAnswer", b"x": b"9"},
    askBox(b"6", b"Hello", hello=b"v" * 5000),
    askBox(b"7", b"RAW", **{"k" * 255: b"w" * 3000}),
    answerBox(b"1", hello=b"reply"),
    errorBox(b"2", b"DECLARED", b"declared reply"),
    askBox(b"8", b"Hello", hello=b""),
]


def conversationInChunks(ns, trace, how):
    """The boxes of L{CONVERSATION} fed whole, byte by byte, or in random chunks."""
    proto, transport = connectedPeer(ns, trace)

    def hello(self, hello):
        if hello == b"declared":
            raise Declared("declared")
        return {"hello": hello[:10]}

    proto.hooks["Hello"] = hello
    trace.watch("d1", proto.callRemote(Hello, hello=b"q1"))
    trace.watch("d2", proto.callRemote(Hello, hello=b"q2"))
    data = wire(*CONVERSATION)
    if how == "whole":
        chunks = chunked(data)
    elif how == "bytes":
        chunks = chunked(data, size=1)
    else:
        chunks = chunked(data, seed=how)
    for chunk in chunks:
        try:
            proto.dataReceived(chunk)
        except Exception as e:  # pragma: no cover - recorded, not expected
            trace.add("raised", e)
    recordState(trace, "end", proto)


@pytest.mark.parametrize("how", ["whole", "bytes", 1, 2, 3])
def test_chunking_does_not_change_the_trace(how):
    stock, core = runBoth(conversationInChunks, how)
    assert core == stock
    # And the trace is that of the whole-chunk run.
    whole = runScenario(conversationInChunks, ampcore.AMP, "whole")
    assert core == whole


@differential
def test_incomplete_box_at_close_is_dropped(ns, trace):
    """
    An unfinished box at connectionLost is dropped without a word:
    C{BinaryBoxProtocol.connectionLost} does not look at the buffer.
    """
    proto, transport = connectedPeer(ns, trace)
    trace.watch("d", proto.callRemote(Hello, hello=b"x"))
    feed(trace, proto, wire(answerBox(b"1", hello=b"a"))[:-3])
    trace.call("connectionLost", proto.connectionLost, lostReason())
    recordState(trace, "end", proto)


# ---- over-long key prefixes ---------------------------------------------------------------

LONG_KEY_CASES = {
    "init-state": [wire(answerBox(b"1", hello=b"a")) + b"\x01\x00trailing"],
    "key-state": [wire(answerBox(b"1", hello=b"a")) + b"\x00\x01k\x00\x01v\x01\x00"],
    "split-prefix": [wire(answerBox(b"1", hello=b"a")) + b"\x01", b"\x00"],
    "alone": [b"\x01\x00"],
    "255-ok": [b"\x00\xff" + b"k" * 255 + b"\xff\xff" + b"v" * 65535 + b"\x00\x00"],
}


def droppedWithTooLong(stock, case):
    if case != "255-ok":
        assert ("P", "loseConnection") in stock
        assert ("d2 failed", "TooLong", True, False, None, None) in stock


@pytest.mark.parametrize("case", sorted(LONG_KEY_CASES))
@differential(expect=droppedWithTooLong)
def test_key_length_prefix_over_255_drops_the_connection(ns, trace, case):
    """
    C{BinaryBoxProtocol.lengthLimitExceeded} drops the connection, and
    C{connectionLost} then fails the outstanding requests with
    C{TooLong(True, False, None, None)}; a 255-byte key is fine.
    """
    proto, transport = connectedPeer(ns, trace)
    trace.watch("d1", proto.callRemote(Hello, hello=b"1"))
    d2 = proto.callRemote(Hello, hello=b"2")
    d2.addErrback(lambda f: trace.add("d2 failed", f.type.__name__, f.value.isKey,
                                      f.value.isLocal, f.value.value, f.value.keyName))
    for chunk in LONG_KEY_CASES[case]:
        feed(trace, proto, chunk)
    trace.add("flag", proto._keyLengthLimitExceeded)
    trace.call("connectionLost", proto.connectionLost, Failure(ConnectionDone()))
    recordState(trace, "end", proto)


@differential
def test_overlong_key_prefix_without_transport(ns, trace):
    proto = ns.base()
    trace.call("dataReceived", proto.dataReceived, b"\x01\x00")
    trace.add("flag", proto._keyLengthLimitExceeded)


# ---- BinaryBoxProtocol on its own --------------------------------------------------------

BINARY_STREAMS = {
    "boxes": [wire({b"a": b"1"}, {b"b": b""}) + b"\x00\x00"],
    "repeated-key": [b"\x00\x01k\x00\x01a\x00\x01k\x00\x01b\x00\x00"],
    "truncated": [wire({b"a": b"1"}) + b"\x00\x01k\x00\x05ab"],
    "long-key": [wire({b"a": b"1"}) + b"\x01\x00"],
}


@pytest.mark.parametrize("stream", sorted(BINARY_STREAMS))
@differential
def test_BinaryBoxProtocol_works_without_AMP(ns, trace, stream):
    """
    A C{BinaryBoxProtocol} with a box receiver of its own: the boxes it
    delivers, C{recvd} between calls, sendBox, unhandledError and
    connectionLost.
    """

    class Receiver:
        def startReceivingBoxes(self, sender):
            trace.add("startReceivingBoxes", sender is proto)

        def ampBoxReceived(self, box):
            trace.add("box", box)

        def stopReceivingBoxes(self, reason):
            trace.add("stopReceivingBoxes", reason)

    proto = ns.BinaryBoxProtocol(Receiver())
    transport = connect(proto, trace, "B")
    trace.add("connected", proto.connected)
    for chunk in BINARY_STREAMS[stream]:
        feed(trace, proto, chunk)
    # Between calls recvd is the unconsumed buffer: for stock, the bytes
    # after the last complete string, which Int16StringReceiver.dataReceived
    # keeps in _unprocessed.
    trace.add("recvd", proto.recvd)
    trace.call("sendBox", proto.sendBox, amp.AmpBox(x=b"y"))
    trace.call("unhandledError", proto.unhandledError, Failure(ValueError("v")))
    trace.call("connectionLost", proto.connectionLost, lostReason())
    # Stock's BinaryBoxProtocol.connectionLost leaves the transport set
    # (AMP.connectionLost is what sets it to None).
    trace.add("transport kept", proto.transport is transport)


@differential
def test_stringReceived_drives_the_state_machine(ns, trace):
    """
    Strings handed to C{stringReceived} directly alternate key and value,
    an empty key ending the box, as C{proto_key} and C{proto_value} do.
    """

    class Receiver:
        def startReceivingBoxes(self, sender):
            pass

        def ampBoxReceived(self, box):
            trace.add("box", box)

    proto = ns.BinaryBoxProtocol(Receiver())
    proto.makeConnection(None)
    for s in (b"hello", b"world", b"how", b"are you", b""):
        proto.stringReceived(s)


# ---- sending --------------------------------------------------------------------------------


@differential
def test_sendBox_writes_or_raises_for_odd_boxes(ns, trace):
    """
    sendBox writes what C{AmpBox.serialize} gives (keys sorted bytewise),
    or raises its error: empty boxes and keys, bytes-like values, str keys
    and values, too-long keys and values, plain dicts; and
    C{QuitBox._sendTo}, which drops the connection after writing.
    """
    proto, transport = connectedPeer(ns, trace)
    for label, box in [
        ("empty", amp.AmpBox()),
        ("empty key", amp.AmpBox({b"": b"v"})),
        ("sorted", amp.AmpBox({b"b": b"1", b"a": b"2", b"B": b"3", b"_ask": b"4"})),
        ("bytearray", amp.AmpBox({b"k": bytearray(b"ba")})),
        ("memoryview", amp.AmpBox({b"k": memoryview(b"mv")})),
        ("str value", amp.AmpBox({b"k": "v"})),
        ("str key", {"k": b"v"}),
        ("int value", amp.AmpBox({b"k": 1})),
        ("long key", amp.AmpBox({b"k" * 256: b"v"})),
        ("long value", amp.AmpBox({b"k": b"v" * 65536})),
        ("max", amp.AmpBox({b"k" * 255: b"v" * 65535})),
        ("plain dict", {b"a": b"b"}),
    ]:
        trace.call("sendBox " + label, proto.sendBox, box)
    trace.call("QuitBox._sendTo", amp.QuitBox(q=b"1")._sendTo, proto)
