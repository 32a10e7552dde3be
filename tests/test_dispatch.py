"""
Differential scenarios: how requests, answers and tags are matched up.

Each test is a scenario run on stock C{twisted.protocols.amp.AMP} and on
C{ampcore.AMP} (L{helpers.differential}); the two traces must be equal.
"""

import pytest
from twisted.internet import defer
from twisted.protocols import amp

from helpers import (
    Declared,
    Hello,
    NoAnswer,
    Pump,
    Undeclared,
    answerBox,
    connectedPeer,
    differential,
    errorBox,
    feed,
    lostReason,
    needsExtension,
    recordState,
    raising,
    recordTable,
    wire,
    writesOf,
)

pytestmark = needsExtension()


# ---- answer order -----------------------------------------------------------------


def answersFiredInWireOrderInsideTheFeed(stock):
    fired = [e[1] for e in stock if e[0] == "fired"]
    assert fired == ["d3", "d1", "d2"]
    kinds = [e[0] for e in stock]
    start, end = kinds.index("feed"), kinds.index("feed done")
    assert all(start < i < end for i, k in enumerate(kinds) if k == "fired")


@differential(expect=answersFiredInWireOrderInsideTheFeed)
def test_answers_fire_in_wire_order_synchronously(ns, trace):
    proto, _ = connectedPeer(ns, trace)
    for i in (1, 2, 3):
        trace.watch("d%d" % i, proto.callRemote(Hello, hello=b"%d" % i))
    recordTable(trace, "before", proto)
    feed(trace, proto, wire(answerBox(b"3", hello=b"c"), answerBox(b"1", hello=b"a"),
                            answerBox(b"2", hello=b"b")))
    recordTable(trace, "after", proto)


def serverAnsweredTwoThreeOne(stock, kind):
    tags = [amp.parseString(w)[0][b"_answer"] for w in writesOf(stock, "S")]
    assert tags == [b"2", b"3", b"1"]


@pytest.mark.parametrize("kind", ["deferred", "async", "raw"])
@differential(expect=serverAnsweredTwoThreeOne)
def test_server_answers_in_completion_order(ns, trace, kind):
    client, server = ns.Peer(trace, "C"), ns.Peer(trace, "S")
    pump = Pump(client, server, trace)
    pending = {}

    def hello(self, hello):
        d = defer.Deferred()
        pending[hello] = d
        if kind == "async":
            async def respond():
                value = await d
                return {"hello": value}

            return respond()
        if kind == "raw":
            return d
        return d.addCallback(lambda v: {"hello": v})

    def raw(self, box):
        d = defer.Deferred()
        pending[box[b"echo"]] = d
        return d

    server.hooks["Hello"] = hello
    server.hooks["RAW"] = raw
    for name in (b"1", b"2", b"3"):
        if kind == "raw":
            trace.watch("C RAW " + name.decode(), client.callRemoteString(b"RAW", echo=name))
        else:
            trace.watch("C Hello " + name.decode(), client.callRemote(Hello, hello=name))
    pump.pump()
    for name in (b"2", b"3", b"1"):
        trace.add("fire", name)
        if kind == "raw":
            pending[name].callback(amp.AmpBox(echo=name + b"!"))
        else:
            pending[name].callback(name + b"!")
        pump.pump()
    recordState(trace, "C", client)
    recordState(trace, "S", server)


# ---- tags ----------------------------------------------------------------------------


def tagsCountedUpInHex(stock):
    tags = [amp.parseString(w)[0].get(b"_ask") for w in writesOf(stock, "P")]
    expected = [b"%x" % i for i in range(1, 18)] + [None, b"13"]
    assert tags == expected


@differential(expect=tagsCountedUpInHex)
def test_each_call_takes_the_next_tag_in_hex(ns, trace):
    """
    As C{BoxDispatcher._nextTag} counts: a call that needs no answer and a
    send that fails after its tag was taken spend a tag too.
    """
    proto, transport = connectedPeer(ns, trace)
    trace.add("initial counter", proto._counter)
    for i in range(17):
        proto.callRemoteString(b"X", n=b"%d" % i)
    trace.add("no answer", proto.callRemoteString(b"X", False))
    proto.callRemoteString(b"X")
    trace.add("counter", proto._counter)
    # A failed send still uses a tag, and leaves no table entry.
    trace.call("str value", proto.callRemoteString, b"X", v="text")
    trace.call("too long", proto.callRemote, Hello, hello=b"x" * 65536)
    trace.add("counter", proto._counter)
    trace.add("direct", proto._nextTag(), proto._counter)
    proto._counter = 254
    trace.add("after set", proto._nextTag(), proto._nextTag(), proto._counter)
    recordTable(trace, "end", proto)


# ---- callRemoteString ---------------------------------------------------------------------


@differential
def test_callRemoteString_sends_raw_arguments_and_gets_raw_answers(ns, trace):
    """
    C{callRemoteString} sends its keyword arguments as the box, and its
    Deferred fires with the answer box itself, or fails with the
    C{RemoteAmpError} (or C{UnhandledCommand}) that
    C{BoxDispatcher._errorReceived} makes of an error box.
    """
    proto, transport = connectedPeer(ns, trace)
    trace.watch("plain", proto.callRemoteString(b"Hello", hello=b"x"))
    trace.call("non-ascii kw", proto.callRemoteString, b"Hello", **{"h\u00e9llo": b"x"})
    trace.add("counter", proto._counter)
    trace.call("str value", proto.callRemoteString, b"Hello", hello="text")
    trace.add("counter", proto._counter)
    trace.call("str command", proto.callRemoteString, "Hello", hello=b"x")
    trace.add("counter", proto._counter)
    trace.watch("command kw", proto.callRemoteString(command=b"Hello", hello=b"kw"))
    trace.watch("declared", proto.callRemoteString(b"Hello", hello=b"d"))
    trace.watch("unhandled", proto.callRemoteString(b"Hello", hello=b"u"))
    trace.watch("bad utf8", proto.callRemoteString(b"Hello", hello=b"b"))
    trace.watch("unanswered", proto.callRemoteString(b"Hello", hello=b"never"))
    recordTable(trace, "before answers", proto)
    feed(trace, proto, wire(
        answerBox(b"1", hello=b"one", extra=b"kept"),
        answerBox(b"2", hello=b"two"),
        errorBox(b"3", b"DECLARED", b"declared error"),
        errorBox(b"4", b"UNHANDLED", b"Unhandled Command: b'Hello'"),
        errorBox(b"5", b"\xffCODE", b"bad \xff utf8"),
    ))
    recordState(trace, "end", proto)


# ---- requiresAnswer=False ---------------------------------------------------------------


def noAskThenTagTwo(stock, case):
    tags = [amp.parseString(w)[0].get(b"_ask") for w in writesOf(stock, "C")]
    assert tags[:2] == [None, b"2"]


@pytest.mark.parametrize(
    "case", ["ok", "declared", "bad-local-return", "deferred-failure", "asked-anyway"]
)
@differential(expect=noAskThenTagTwo)
def test_requiresAnswer_False_sends_no_ask_and_nothing_comes_back(ns, trace, case):
    """
    A command with C{requiresAnswer = False} goes out without C{_ask} (its
    tag is spent all the same), and whatever its responder does, success
    or failure, nothing is sent back: C{BoxDispatcher._commandReceived}
    answers only a box with C{_ask}, as the same command sent through
    C{callRemoteString} is.
    """
    client, server = ns.Peer(trace, "C"), ns.Peer(trace, "S")
    pump = Pump(client, server, trace)
    if case == "declared":
        server.hooks["NoAnswer"] = raising(Declared("no answer declared"))
    elif case == "bad-local-return":
        server.hooks["NoAnswer"] = lambda self, x: {}
    elif case == "deferred-failure":
        server.hooks["NoAnswer"] = lambda self, x: defer.fail(Undeclared("later"))
    trace.add("no-answer returned", client.callRemote(NoAnswer, x=1))
    trace.add("counter", client._counter)
    trace.watch("C Hello", client.callRemote(Hello, hello=b"after"))
    recordTable(trace, "C", client)
    if case == "asked-anyway":
        trace.watch("C NoAnswer asked", client.callRemoteString(b"NoAnswer", x=b"7"))
    pump.pump()
    recordState(trace, "C", client)
    recordState(trace, "S", server)


# ---- BoxDispatcher on its own -----------------------------------------------------------------


@differential
def test_BoxDispatcher_works_without_AMP(ns, trace):
    """
    A C{BoxDispatcher} with a locator of its own and a box sender that is
    not a protocol: requests, answers, errors, commands and
    C{stopReceivingBoxes}.
    """

    class FakeSender:
        def __init__(self):
            self.sent = []

        def sendBox(self, box):
            trace.add("sendBox", box)
            self.sent.append(box)

        def unhandledError(self, failure):
            trace.add("sender unhandledError", failure)

    class FakeLocator:
        def locateResponder(self, name):
            if name == b"known":
                return lambda box: amp.AmpBox(ok=b"1")
            if name == b"fails":
                return lambda box: 1 / 0
            raise KeyError(name)

    d = ns.BoxDispatcher(FakeLocator())
    sender = FakeSender()
    d.startReceivingBoxes(sender)
    trace.watch("callRemote", d.callRemote(Hello, hello=b"x"))
    trace.watch("raw", d.callRemoteString(b"raw", v=b"1"))
    trace.add("tags", [b.get(b"_ask") for b in sender.sent])
    trace.call("answer", d.ampBoxReceived, amp.AmpBox(_answer=b"1", hello=b"y"))
    trace.call("error", d.ampBoxReceived, amp.AmpBox(_error=b"2", _error_code=b"X",
                                                      _error_description=b"d"))
    trace.call("known", d.ampBoxReceived, amp.AmpBox(_command=b"known", _ask=b"a"))
    trace.call("fails", d.ampBoxReceived, amp.AmpBox(_command=b"fails", _ask=b"b"))
    trace.call("unknown", d.ampBoxReceived, amp.AmpBox(_command=b"unknown", _ask=b"c"))
    trace.call("empty", d.ampBoxReceived, amp.AmpBox())
    trace.watch("pending", d.callRemoteString(b"raw"))
    trace.call("stop", d.stopReceivingBoxes, lostReason())
    trace.watch("after stop", d.callRemoteString(b"raw"))
    trace.add("table", d._outstandingRequests, d._counter)


# ---- boxes of a dict class of the caller's own ------------------------------------------


def _boxClass(kind, trace):
    """A dict class that overrides how a key is looked for, recording it."""

    class Box(dict):
        if kind == "contains":

            def __contains__(self, key):
                trace.add("in", key)
                return dict.__contains__(self, key) and key != b"_answer"

        elif kind == "getitem":

            def __getitem__(self, key):
                trace.add("getitem", key)
                return b"1" if key == b"_answer" else dict.__getitem__(self, key)

        elif kind == "missing":

            def __missing__(self, key):
                trace.add("missing", key)
                return b"2"

    return Box


@pytest.mark.parametrize("kind", ["contains", "getitem", "missing", "plain"])
@differential
def test_boxes_that_look_keys_up_their_own_way(ns, trace, kind):
    """
    ampBoxReceived called with a dict whose class has its own
    C{__contains__}, C{__getitem__} or C{__missing__}: every test of a key
    and every lookup goes through them, as in stock (ampcore asks a box as
    a dict only when its class keeps dict's own).
    """
    Box = _boxClass(kind, trace)
    proto, transport = connectedPeer(ns, trace)
    trace.watch("first", proto.callRemoteString(b"Hello", hello=b"x"))
    trace.watch("second", proto.callRemoteString(b"Hello", hello=b"y"))
    answer = Box({b"_answer": b"2", b"hello": b"there"})
    trace.call("answer", proto.ampBoxReceived, answer)
    trace.call("answer without a tag", proto.ampBoxReceived, Box({b"_answer": b"9"}))
    trace.call("command", proto.ampBoxReceived, Box({b"_command": b"Hello", b"hello": b"z"}))
    recordState(trace, "end", proto)
