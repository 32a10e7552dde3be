"""
Differential scenarios: switching the connection to another protocol, and
the send buffer of a TLS start.

Each test is a scenario run on stock C{twisted.protocols.amp.AMP} and on
C{ampcore.AMP} (L{helpers.differential}); the two traces must be equal.
"""

import pytest
from twisted.protocols import amp

from helpers import (
    Declared,
    Hello,
    Inner,
    InnerFactory,
    NoAnswer,
    Pump,
    SwitchIt,
    answerBox,
    askBox,
    connectedPeer,
    differential,
    feed,
    lostReason,
    needsExtension,
    raising,
    recordState,
    wire,
    writesOf,
)

pytestmark = needsExtension()


# ---- ProtocolSwitchCommand ----------------------------------------------------------


@pytest.mark.parametrize("trailing", [b"", b"\x00\x00raw bytes", b"\x00\x03abc\x00\x00"])
@differential
def test_ProtocolSwitchCommand_hands_the_connection_over(ns, trace, trailing):
    """
    The client is locked as soon as the switch is sent (AMP traffic raises
    C{ProtocolSwitched}); both sides switch to their inner protocols, and
    the bytes after the switch box, in the same chunk, go to the server's
    inner protocol.
    """
    client, server = ns.Peer(trace, "C"), ns.Peer(trace, "S")
    pump = Pump(client, server, trace)
    factory = InnerFactory(trace, "C")
    trace.watch("C SwitchIt", client.callRemote(SwitchIt, factory, name=b"x"), consume=False)
    trace.call("C callRemote while locked", client.callRemote, Hello, hello=b"no")
    trace.call("C sendBox while locked", client.sendBox, amp.AmpBox(a=b"b"))
    if trailing:
        client.transport.write(trailing)
    pump.pump()
    trace.add("C inner", client.innerProtocol is not None, "S inner",
              server.innerProtocol is not None)
    client.innerProtocol.transport.write(b"from client inner")
    server.transport.write(b"from server inner")
    pump.pump()
    trace.call("S callRemote after switch", server.callRemote, Hello, hello=b"no")
    trace.call("S unlock", server._unlockFromSwitch)
    server.transport.loseConnection()
    pump.pump()


@differential
def test_failed_protocol_switch_unlocks(ns, trace):
    """The switch's responder fails: the client is unlocked and traffic works."""
    client, server = ns.Peer(trace, "C"), ns.Peer(trace, "S")
    pump = Pump(client, server, trace)
    server.hooks["SwitchIt"] = raising(Declared("undeclared for SwitchIt"))
    factory = InnerFactory(trace, "C")
    trace.watch("C SwitchIt", client.callRemote(SwitchIt, factory, name=b"x"))
    pump.pump(disconnect=False)
    trace.watch("C Hello", client.callRemote(Hello, hello=b"after"))
    pump.pump()


# ---- _lockForSwitch and _switchTo called directly -------------------------------------


def makeSwitcher(ns):
    class Switcher(ns.Peer):
        """Switches (lock + _switchTo) on a box carrying b"switch"."""

        inner = None

        def ampBoxReceived(self, box):
            self.trace.add(self.label, "ampBoxReceived", box)
            if box.get(b"switch") == b"now":
                self._lockForSwitch()
                self.inner = Inner(self.trace, self.label + "-inner")
                self.trace.add("recvd inside callback", self.recvd)
                self._switchTo(self.inner)
            elif box.get(b"switch") == b"lock":
                self._lockForSwitch()
            else:
                ns.base.ampBoxReceived(self, box)

    return Switcher


def innerGotTheRestAndLaterData(stock, trailing):
    innerData = [e[2] for e in stock if e[1:2] == ("inner dataReceived",)]
    # An empty remainder means no call; later data, even b"", is forwarded.
    assert innerData == [trailing] * bool(trailing) + [b"", b"\x00\x00later bytes"]


@pytest.mark.parametrize(
    "trailing",
    [b"", b"x", b"\x00\x00", wire(askBox(b"2", b"Hello", hello=b"after")), b"\x00\x05he"],
)
@differential(expect=innerGotTheRestAndLaterData)
def test_switch_inside_ampBoxReceived(ns, trace, trailing):
    """
    C{_switchTo} from inside C{ampBoxReceived} hands the rest of the chunk
    to the inner protocol (what C{BinaryBoxProtocol._switchTo} reads from
    C{recvd}) and every later dataReceived too.
    """
    proto, transport = connectedPeer(ns, trace, makeSwitcher(ns))
    d = proto.callRemote(Hello, hello=b"pending")
    trace.watch("pending", d)
    chunk = wire(askBox(b"1", b"Hello", hello=b"before"), {b"switch": b"now"}) + trailing
    feed(trace, proto, chunk)
    trace.add("innerProtocol set", proto.innerProtocol is proto.inner)
    feed(trace, proto, b"")
    feed(trace, proto, b"\x00\x00later bytes")
    trace.call("sendBox", proto.sendBox, amp.AmpBox(a=b"b"))
    trace.call("callRemote", proto.callRemote, Hello, hello=b"x")
    trace.call("callRemote no answer", proto.callRemote, NoAnswer, x=1)
    trace.call("unlock", proto._unlockFromSwitch)
    trace.call("connectionLost", proto.connectionLost, lostReason())
    recordState(trace, "end", proto)


def onlyTheUnlockedAskAnswered(stock):
    assert len(writesOf(stock, "P")) == 1


@differential(expect=onlyTheUnlockedAskAnswered)
def test_answers_while_locked_are_dropped(ns, trace):
    """
    Asks that arrive while the protocol is locked are dispatched, and their
    answers dropped: C{BoxDispatcher._safeEmit} ignores C{ProtocolSwitched}.
    """
    proto, transport = connectedPeer(ns, trace, makeSwitcher(ns))
    chunk = wire({b"switch": b"lock"}, askBox(b"1", b"Hello", hello=b"locked"),
                 askBox(b"2", b"RAW", echo=b"locked"))
    feed(trace, proto, chunk)
    trace.call("unlock", proto._unlockFromSwitch)
    feed(trace, proto, wire(askBox(b"3", b"Hello", hello=b"unlocked")))
    recordState(trace, "end", proto)


@pytest.mark.parametrize("rest", [b"", b"\x00", b"\x00\x05he", b"\x00\x01k\x00\x02v"])
@differential
def test_switch_outside_parse_loop_gets_buffered_remainder(ns, trace, rest):
    """
    C{_switchTo} outside dataReceived (say, when a responder's Deferred
    fires later) hands over C{recvd}: the bytes stock's
    C{Int16StringReceiver} kept after the last complete length-prefixed
    I{string} (the complete keys and values of a box are already in
    C{_currentBox}).
    """
    proto, transport = connectedPeer(ns, trace)
    feed(trace, proto, wire(askBox(b"1", b"Hello", hello=b"x")) + rest)
    trace.add("recvd outside", proto.recvd)
    proto._lockForSwitch()
    inner = Inner(trace, "P-inner")
    trace.call("_switchTo", proto._switchTo, inner)
    feed(trace, proto, b"more")
    trace.add("repr has inner", " inner " in repr(proto))


# ---- StartTLS's send buffer -------------------------------------------------------------


@differential
def test_sendBox_while_TLS_starts_keeps_the_box_objects(ns, trace):
    """
    While C{_startingTLSBuffer} is a list (as C{BinaryBoxProtocol._prepareTLS}
    sets it), C{sendBox} appends the box objects themselves to it, and
    writes nothing; later changes to a buffered box show when it is sent.
    """
    proto, transport = connectedPeer(ns, trace)
    proto._startingTLSBuffer = []
    trace.watch("d", proto.callRemote(Hello, hello=b"buffered"))
    feed(trace, proto, wire(askBox(b"1", b"Hello", hello=b"h"), askBox(b"2", b"RAW", echo=b"r")))
    buffered = proto._startingTLSBuffer
    trace.add("buffered", buffered)
    buffered[0][b"mutated"] = b"later"
    proto._startingTLSBuffer = None
    for box in buffered:
        trace.call("resend", proto.sendBox, box)
    feed(trace, proto, wire(answerBox(b"1", hello=b"a")))
    recordState(trace, "end", proto)
