"""
ampcore's dataReceived skips stock's per-chunk checks (TLS start, switched
protocol, pause, an overridden stringReceived) while the protocol's class
and instance still hold stock's values, remembering what it saw.  These
tests change those values after the first chunk, in every way Python
allows, and check that ampcore then frames exactly as stock
BinaryBoxProtocol does.
"""

import pytest
from twisted.internet.testing import StringTransport
from twisted.protocols import amp

import ampcore

pytestmark = pytest.mark.skipif(
    not ampcore.HAS_C_EXTENSION, reason="the gate is part of the C extension"
)

BOX = amp.AmpBox({b"_command": b"Hello", b"_ask": b"1", b"hello": b"world"})
WIRE = BOX.serialize()


class Receiver:
    def __init__(self):
        self.boxes = []

    def startReceivingBoxes(self, sender):
        pass

    def ampBoxReceived(self, box):
        self.boxes.append(dict(box))

    def stopReceivingBoxes(self, reason):
        pass


def runBoth(change):
    """
    Feed each protocol (stock and ampcore, a fresh subclass of each) one box
    a byte at a time, call C{change(protocolClass, protocol)}, then feed two
    more boxes the same way; return what each received, and its strings if
    the change routed them elsewhere.
    """
    results = []
    for base in (amp.BinaryBoxProtocol, ampcore.BinaryBoxProtocol):
        cls = type("Proto", (base,), {})
        receiver = Receiver()
        proto = cls(receiver)
        proto.makeConnection(StringTransport())
        for i in range(len(WIRE)):
            proto.dataReceived(WIRE[i : i + 1])
        change(cls, proto)
        for i in range(len(WIRE) * 2):
            proto.dataReceived((WIRE * 2)[i : i + 1])
        results.append(receiver.boxes)
    return results


def test_classPausedAfterFirstChunk():
    stock, ours = runBoth(lambda cls, proto: setattr(cls, "paused", True))
    assert ours == stock
    assert len(stock) == 1


def test_instanceDictPausedWrittenDirectly():
    stock, ours = runBoth(lambda cls, proto: proto.__dict__.update(paused=True))
    assert ours == stock
    assert len(stock) == 1


def test_instancePausedThenResumedByAttribute():
    def change(cls, proto):
        proto.paused = True
        proto.paused = False

    stock, ours = runBoth(change)
    assert ours == stock
    assert len(stock) == 3


def test_instanceStringReceivedWrittenDirectly():
    strings = {}

    def change(cls, proto):
        mine = strings.setdefault(cls.__mro__[1], [])
        proto.__dict__["stringReceived"] = mine.append

    stock, ours = runBoth(change)
    assert ours == stock
    got = list(strings.values())
    assert got[0] == got[1] and len(got[0]) > 0


def test_classStringReceivedReplaced():
    strings = {}

    def change(cls, proto):
        mine = strings.setdefault(cls.__mro__[1], [])
        cls.stringReceived = lambda self, s: mine.append(s)

    stock, ours = runBoth(change)
    assert ours == stock
    got = list(strings.values())
    assert got[0] == got[1] and len(got[0]) > 0


def test_instanceInnerProtocolWrittenDirectly():
    relayed = {}

    class Inner:
        def __init__(self, sink):
            self.dataReceived = sink.append

    def change(cls, proto):
        sink = relayed.setdefault(cls.__mro__[1], [])
        proto.__dict__["innerProtocol"] = Inner(sink)

    stock, ours = runBoth(change)
    assert ours == stock
    got = [b"".join(chunks) for chunks in relayed.values()]
    assert got[0] == got[1] == WIRE * 2


def test_classJustStartedTLSSetTrue():
    def change(cls, proto):
        cls._justStartedTLS = True

    stock, ours = runBoth(change)
    assert ours == stock
