"""
Subclasses and instances that override what Twisted lets them: methods,
class attributes, box classes, and a constructor that never calls up.

The differential tests run a scenario on stock C{twisted.protocols.amp.AMP}
and on C{ampcore.AMP} (L{helpers.differential}); the two traces must be
equal.
"""

import re

import pytest
from twisted.internet import defer
from twisted.internet.protocol import Protocol
from twisted.protocols import amp

import ampcore
from helpers import (
    Hello,
    NoAnswer,
    Sum,
    answerBox,
    askBox,
    connect,
    connectedPeer,
    differential,
    errorBox,
    feed,
    lostReason,
    needsExtension,
    recordState,
    recordTable,
    wire,
    writesOf,
)

pytestmark = needsExtension()


# ---- the tag counter -------------------------------------------------------------


@differential
def test_counter_class_attribute_in_subclass(ns, trace):
    """
    C{BoxDispatcher._counter = 0} is a class attribute in Twisted: a
    subclass can start its tags elsewhere by overriding it.
    """

    class Counted(ns.Peer):
        _counter = 0x100

    proto, transport = connectedPeer(ns, trace, Counted)
    trace.add("counter", proto._counter)
    trace.watch("d", proto.callRemote(Hello, hello=b"x"))
    trace.add("counter", proto._counter)


@differential
def test_overridden_nextTag_makes_the_tags(ns, trace):
    """_nextTag, overridden in a subclass or set on an instance, makes the tags."""

    class Tagged(ns.Peer):
        n = 0

        def _nextTag(self):
            self.n += 1
            return b"tag-%d" % self.n

    proto, transport = connectedPeer(ns, trace, Tagged)
    trace.watch("d1", proto.callRemote(Hello, hello=b"x"))
    trace.watch("d2", proto.callRemoteString(b"Hello", hello=b"y"))
    trace.add("no answer", proto.callRemote(NoAnswer, x=1))
    trace.add("counter", proto._counter)
    feed(trace, proto, wire(answerBox(b"tag-2", hello=b"b"), answerBox(b"tag-1", hello=b"a")))
    proto._nextTag = lambda: b"instance"
    trace.watch("d4", proto.callRemote(Hello, hello=b"z"))
    recordTable(trace, "end", proto)


# ---- sending -------------------------------------------------------------------------


def nothingWritten(stock, *params):
    assert writesOf(stock, "P") == []


@pytest.mark.parametrize("level", ["class", "instance"])
@differential(expect=nothingWritten)
def test_overridden_sendBoxCommand_sends_every_request(ns, trace, level):
    """
    callRemote and callRemoteString go through C{_sendBoxCommand},
    overridden in a subclass or set on an instance, with or without an
    answer required, and what it returns is what they return.
    """

    def fake(command, box, requiresAnswer=True):
        trace.add("_sendBoxCommand", command, box, requiresAnswer)
        if requiresAnswer:
            return defer.succeed(amp.AmpBox(hello=b"fake", total=b"3"))
        return None

    class NoNetwork(ns.Peer):
        def _sendBoxCommand(self, command, box, requiresAnswer=True):
            return fake(command, box, requiresAnswer)

    if level == "class":
        proto, transport = connectedPeer(ns, trace, NoNetwork)
    else:
        proto, transport = connectedPeer(ns, trace)
        proto._sendBoxCommand = fake
    trace.watch("Hello", proto.callRemote(Hello, hello=b"x"))
    trace.watch("Sum", proto.callRemote(Sum, a=1, b=2))
    trace.add("NoAnswer", proto.callRemote(NoAnswer, x=1))
    trace.watch("raw", proto.callRemoteString(b"Raw", arg=b"v"))
    trace.add("raw no answer", proto.callRemoteString(b"Raw", False, arg=b"v"))
    trace.add("raw kw no answer", proto.callRemoteString(b"Raw", requiresAnswer=0, arg=b"v"))
    recordState(trace, "end", proto)


@differential(expect=nothingWritten)
def test_sendBox_set_on_the_instance_sends_every_answer(ns, trace):
    proto, transport = connectedPeer(ns, trace)
    sent = []
    proto.sendBox = sent.append
    trace.watch("d", proto.callRemote(Hello, hello=b"x"))
    feed(trace, proto, wire(askBox(b"1", b"Hello", hello=b"b"), askBox(b"2", b"RAW", echo=b"r"),
                            askBox(b"3", b"nosuch")))
    trace.add("sent", sent)
    recordState(trace, "end", proto)


class RecordingBox(amp.AmpBox):
    def _sendTo(self, proto):
        self.trace.add("RecordingBox._sendTo", self)
        return amp.AmpBox._sendTo(self, proto)


class SerializingBox(amp.AmpBox):
    def serialize(self):
        # Not what AmpBox would write: shows this method was used.
        return b"\x00\x01!\x00\x01!\x00\x00"


class CustomBoxCommand(amp.Command):
    arguments = [(b"v", amp.String())]
    commandType = RecordingBox


@differential
def test_box_subclass_serialize_and_sendTo_are_used(ns, trace):
    """
    A Command's C{commandType} box class, and a box class overriding
    C{serialize} or C{_sendTo}, whether sent by sendBox, as a request or
    as an answer.
    """
    RecordingBox.trace = trace
    proto, transport = connectedPeer(ns, trace)
    trace.watch("custom commandType", proto.callRemote(CustomBoxCommand, v=b"1"))
    trace.call("sendBox serialize override", proto.sendBox, SerializingBox(a=b"b"))
    proto.hooks["RAW"] = lambda self, box: SerializingBox(echo=b"s")
    feed(trace, proto, wire(askBox(b"1", b"RAW", echo=b"x")))
    proto.hooks["RAW"] = lambda self, box: RecordingBox(echo=b"r")
    feed(trace, proto, wire(askBox(b"2", b"RAW", echo=b"x")))
    recordState(trace, "end", proto)


# ---- receiving and dispatching ------------------------------------------------------------


@pytest.mark.parametrize("level", ["class", "instance"])
@differential
def test_overridden_ampBoxReceived_gets_every_box(ns, trace, level):
    seen = []

    class Receiver(ns.Peer):
        def ampBoxReceived(self, box):
            trace.add("override", box)
            ns.base.ampBoxReceived(self, box)

    if level == "class":
        proto, transport = connectedPeer(ns, trace, Receiver)
    else:
        proto, transport = connectedPeer(ns, trace)
        proto.ampBoxReceived = seen.append
    trace.watch("d", proto.callRemote(Hello, hello=b"x"))
    feed(trace, proto, wire(answerBox(b"1", hello=b"a"), askBox(b"1", b"Hello", hello=b"b")))
    trace.add("seen", seen)
    recordState(trace, "end", proto)


@pytest.mark.parametrize("raises", [False, True], ids=["returns", "raises"])
@pytest.mark.parametrize("level", ["class", "instance"])
@differential
def test_overridden_unhandledError_gets_unhandled_failures(ns, trace, level, raises):
    """
    A failure in an answer callback, a responder's non-box result and a
    command box without C{_ask}, overridden in a subclass or set on an
    instance; also when the override raises in turn.
    """

    def handler(failure):
        trace.add("unhandledError", failure)
        if raises:
            raise RuntimeError("unhandledError failed too")

    class Handled(ns.Peer):
        def unhandledError(self, failure):
            handler(failure)

    if level == "class":
        proto, transport = connectedPeer(ns, trace, Handled)
    else:
        proto, transport = connectedPeer(ns, trace)
        proto.unhandledError = handler
    proto.hooks["RAW"] = lambda self, box: None
    d = proto.callRemote(Hello, hello=b"x")
    d.addCallback(lambda r: 1 / 0)
    feed(trace, proto, wire(answerBox(b"1", hello=b"a"), askBox(b"1", b"RAW", echo=b"e"),
                            {b"_command": b"nosuch"}))
    trace.watch("d final", d)
    recordState(trace, "end", proto)


@pytest.mark.parametrize("what", ["class", "instance-locate", "instance-dispatch"])
@differential
def test_overridden_locateResponder_and_dispatchCommand_route_commands(ns, trace, what):
    class Custom(ns.Peer):
        def locateResponder(self, name):
            trace.add("locateResponder", name)
            if name == b"custom":
                return lambda box: amp.AmpBox(custom=b"yes")
            if name == b"locatorfails":
                raise LookupError("locator failed")
            if name == b"notcallable":
                return 42
            return ns.base.locateResponder(self, name)

        def dispatchCommand(self, box):
            trace.add("dispatchCommand", box)
            if box[b"_command"] == b"dispatched":
                return defer.succeed(amp.AmpBox(dispatched=b"yes"))
            if box[b"_command"] == b"dispatchnone":
                return None
            return ns.base.dispatchCommand(self, box)

    def make():
        if what == "class":
            proto, transport = connectedPeer(ns, trace, Custom)
        else:
            proto, transport = connectedPeer(ns, trace)
            c = Custom(trace, "L")
            if what == "instance-locate":
                proto.locateResponder = c.locateResponder
            else:
                proto.dispatchCommand = c.dispatchCommand
        return proto

    proto = make()
    feed(trace, proto, wire(askBox(b"1", b"custom"), askBox(b"2", b"dispatched"),
                            askBox(b"3", b"Hello", hello=b"h"), askBox(b"4", b"nosuch")))
    feed(trace, proto, wire(askBox(b"5", b"notcallable"), askBox(b"6", b"RAW", echo=b"r")))
    recordState(trace, "end", proto)
    # Each of these raises out of dataReceived, after which stock's
    # Int16StringReceiver would deliver the same strings again: each gets
    # a fresh protocol.
    for chunk in (wire(askBox(b"7", b"dispatchnone")), wire(askBox(b"8", b"locatorfails"))):
        proto = make()
        feed(trace, proto, chunk)
        recordState(trace, "end", proto)


@differential
def test_overridden_dispatch_methods_are_called(ns, trace):
    """_answerReceived, _errorReceived, _commandReceived and _safeEmit."""

    class Hooked(ns.Peer):
        def _answerReceived(self, box):
            trace.add("_answerReceived", box)
            ns.base._answerReceived(self, box)

        def _errorReceived(self, box):
            trace.add("_errorReceived", box)
            ns.base._errorReceived(self, box)

        def _commandReceived(self, box):
            trace.add("_commandReceived", box)
            ns.base._commandReceived(self, box)

        def _safeEmit(self, box):
            trace.add("_safeEmit", box)
            ns.base._safeEmit(self, box)

    proto, transport = connectedPeer(ns, trace, Hooked)
    trace.watch("d1", proto.callRemote(Hello, hello=b"x"))
    trace.watch("d2", proto.callRemote(Hello, hello=b"y"))
    feed(trace, proto, wire(answerBox(b"1", hello=b"a"), errorBox(b"2", b"DECLARED", b"no"),
                            askBox(b"1", b"Hello", hello=b"h"), askBox(b"2", b"RAW", echo=b"r")))
    recordState(trace, "end", proto)


@differential
def test_separate_boxReceiver_and_locator_are_used(ns, trace):
    """
    AMP(locator=...) finds responders there; AMP(boxReceiver=...) hands it
    every box, and its own dispatcher half never gets startReceivingBoxes.
    """

    class Locator(amp.CommandLocator):
        @Hello.responder
        def hello(self, hello):
            trace.add("locator hello", hello)
            return {"hello": hello + b" from locator"}

    class Receiver:
        def startReceivingBoxes(self, sender):
            trace.add("startReceivingBoxes", sender is proto)

        def ampBoxReceived(self, box):
            trace.add("receiver got", box)

        def stopReceivingBoxes(self, reason):
            trace.add("stopReceivingBoxes", reason)

    proto = ns.Peer(trace, "L", locator=Locator())
    connect(proto, trace, "L")
    feed(trace, proto, wire(askBox(b"1", b"Hello", hello=b"h")))
    proto = ns.Peer(trace, "R", boxReceiver=Receiver())
    connect(proto, trace, "R")
    feed(trace, proto, wire(askBox(b"1", b"Hello", hello=b"h")))
    trace.call("callRemote", proto.callRemote, Hello, hello=b"x")
    trace.call("connectionLost", proto.connectionLost, lostReason())


# ---- construction, name and repr ----------------------------------------------------------


@differential
def test_subclass_that_never_calls_init_is_initialized_on_makeConnection(ns, trace):
    """
    As C{AMP.makeConnection} does for old subclasses whose constructor
    does not call up (C{_ampInitialized} is False), and for an instance
    made by C{__new__} alone.
    """

    class Lazy(ns.base):
        def __init__(self, trace):
            self.trace = trace  # never calls up

        def amp_RAW(self, box):
            self.trace.add("lazy responder", box)
            return amp.AmpBox(echo=box[b"echo"])

    proto = Lazy(trace)
    trace.add("initialized", proto._ampInitialized)
    connect(proto, trace, "P")
    trace.add("initialized", proto._ampInitialized)
    trace.watch("d", proto.callRemoteString(b"RAW", echo=b"x"))
    feed(trace, proto, wire(askBox(b"1", b"RAW", echo=b"y"), answerBox(b"1", echo=b"x")))
    bare = ns.base.__new__(ns.base)
    trace.add("bare initialized", bare._ampInitialized)
    connect(bare, trace, "B")
    trace.watch("bare d", bare.callRemoteString(b"RAW", echo=b"z"))
    feed(trace, bare, wire(answerBox(b"1", echo=b"z")))
    recordState(trace, "end", proto)


def _reprShape(obj):
    return re.sub(r"0x[0-9a-f]+", "0xADDR", repr(obj))


def test_class_names_and_repr_are_stocks():
    assert ampcore.AMP.__name__ == "AMP"
    assert ampcore.BoxDispatcher.__name__ == "BoxDispatcher"
    assert ampcore.BinaryBoxProtocol.__name__ == "BinaryBoxProtocol"
    core, stock = ampcore.AMP(), amp.AMP()
    assert re.fullmatch(r"<AMP at 0x[0-9a-f]+>", repr(core))
    assert repr(core) == "<AMP at 0x%x>" % id(core)
    assert _reprShape(core) == _reprShape(stock)
    core.innerProtocol = stock.innerProtocol = Protocol()
    assert _reprShape(core) == _reprShape(stock)
    assert " inner <twisted.internet.protocol.Protocol object at 0x" in repr(core)
    assert isinstance(core, amp.AMP)
    assert type(core).__mro__.index(amp.AMP) > 0
