"""
ampcore's dataReceived skips stock's per-chunk checks (TLS start, a
switched protocol, a pause, an overridden stringReceived) while the
protocol's class and instance still hold stock's values, and remembers
what it saw.  Each scenario here changes one of those values after the
first chunk, in one of the ways Python allows (a class attribute,
setattr, a direct write into the instance dict), and then trickles more
boxes in a byte at a time: ampcore must frame exactly as stock
C{BinaryBoxProtocol} does (L{helpers.differential}).
"""

import pytest
from twisted.protocols import amp

from helpers import askBox, connect, differential, needsExtension, wire

pytestmark = needsExtension()

WIRE = wire(askBox(b"1", b"Hello", hello=b"world"))


class Receiver:
    """A box receiver that records each box in the trace."""

    def __init__(self, trace):
        self.trace = trace

    def startReceivingBoxes(self, sender):
        pass

    def ampBoxReceived(self, box):
        self.trace.add("box", box)

    def stopReceivingBoxes(self, reason):
        pass


class Inner:
    """A protocol switched to by hand: records what reaches it."""

    def __init__(self, trace):
        self.trace = trace

    def dataReceived(self, data):
        self.trace.add("inner", data)


def trickle(trace, proto, data):
    for i in range(len(data)):
        proto.dataReceived(data[i : i + 1])
    trace.add("fed", len(data))


CHANGES = {
    "class paused": lambda cls, proto, trace: setattr(cls, "paused", True),
    "instance dict paused": lambda cls, proto, trace: proto.__dict__.update(paused=True),
    "paused then resumed by setattr": lambda cls, proto, trace: (
        setattr(proto, "paused", True),
        setattr(proto, "paused", False),
    ),
    "instance dict stringReceived": lambda cls, proto, trace: proto.__dict__.update(
        stringReceived=lambda s: trace.add("string", s)
    ),
    "class stringReceived": lambda cls, proto, trace: setattr(
        cls, "stringReceived", lambda self, s: trace.add("string", s)
    ),
    "instance dict innerProtocol": lambda cls, proto, trace: proto.__dict__.update(
        innerProtocol=Inner(trace)
    ),
    "class innerProtocol": lambda cls, proto, trace: setattr(
        cls, "innerProtocol", Inner(trace)
    ),
    "class _justStartedTLS": lambda cls, proto, trace: setattr(cls, "_justStartedTLS", True),
    "instance dict _justStartedTLS": lambda cls, proto, trace: proto.__dict__.update(
        _justStartedTLS=True
    ),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
@differential
def test_a_change_after_the_first_chunk_is_seen(ns, trace, change):
    cls = type("Proto", (ns.BinaryBoxProtocol,), {})
    proto = cls(Receiver(trace))
    connect(proto, trace, "P")
    trickle(trace, proto, WIRE)
    CHANGES[change](cls, proto, trace)
    trace.add("changed", change)
    trickle(trace, proto, WIRE * 2)
    trace.add("state", proto.__dict__.get("_justStartedTLS"), proto.recvd)


@differential
def test_nothing_changed_every_box_arrives(ns, trace):
    proto = ns.BinaryBoxProtocol(Receiver(trace))
    connect(proto, trace, "P")
    trickle(trace, proto, WIRE * 3)
    assert len([e for e in trace if e[0] == "box"]) == 3
