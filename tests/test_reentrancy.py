"""
Code run from inside dataReceived (responders, answer callbacks) calling
back into the protocol: callRemote, loseConnection, connectionLost,
pauseProducing, and dataReceived itself.

The differential tests run a scenario on stock C{twisted.protocols.amp.AMP}
and on C{ampcore.AMP} (L{helpers.differential}); the two traces must be
equal.  Re-entrant dataReceived is the exception, tested on ampcore alone:
stock's C{Int16StringReceiver.dataReceived} stores its whole buffer in
C{_unprocessed} before its loop and trims it only after, so a nested call
from a callback starts again at that buffer's first byte, delivers the same
boxes again and recurses until RecursionError.  Twisted gives that no
meaning; ampcore must not crash, and parses the re-entrant bytes after the
current chunk.
"""

import pytest
from twisted.protocols import amp

import ampcore
from helpers import (
    Hello,
    Pump,
    Sum,
    Trace,
    answerBox,
    askBox,
    connect,
    connectedPeer,
    differential,
    errorBox,
    feed,
    lostReason,
    makeClasses,
    needsExtension,
    recordState,
    recordTable,
    wire,
    writesOf,
)

pytestmark = needsExtension()


# ---- calling out from inside a responder or a callback -----------------------------


def serverAskedBeforeItAnswered(stock):
    boxes = [amp.parseString(w)[0] for w in writesOf(stock, "S")]
    assert [sorted(b) for b in boxes] == [
        [b"_ask", b"_command", b"a", b"b"],
        [b"_answer", b"hello"],
    ]


@differential(expect=serverAskedBeforeItAnswered)
def test_responder_calls_callRemote_synchronously(ns, trace):
    """The server's new _ask goes out before its answer to the request."""
    client, server = ns.Peer(trace, "C"), ns.Peer(trace, "S")
    pump = Pump(client, server, trace)

    def hello(self, hello):
        trace.watch("S Sum", self.callRemote(Sum, a=1, b=2))
        recordTable(trace, "S inside responder", self)
        return {"hello": hello + b"!"}

    server.hooks["Hello"] = hello
    trace.watch("C Hello", client.callRemote(Hello, hello=b"hi"))
    pump.pump()
    recordState(trace, "C", client)
    recordState(trace, "S", server)


def laterAnswersDelivered(stock, how):
    assert sum(1 for e in stock if e[0] in ("two", "three")) == 2


@pytest.mark.parametrize("how", ["loseConnection", "raise"])
@differential(expect=laterAnswersDelivered)
def test_callback_drops_connection_rest_of_chunk_dispatched(ns, trace, how):
    """
    An answer callback drops the connection, by calling loseConnection or
    by raising (C{BoxDispatcher._answerReceived} adds C{unhandledError} as
    the errback, which drops it): the answers after it in the same chunk
    are still delivered.
    """
    client, server = ns.Peer(trace, "C"), ns.Peer(trace, "S")
    pump = Pump(client, server, trace)
    d1 = client.callRemote(Hello, hello=b"one")

    def first(result):
        trace.add("first callback", result)
        if how == "loseConnection":
            client.transport.loseConnection()
        else:
            raise ValueError("callback failed")
        return result

    d1.addCallback(first)
    client.callRemote(Hello, hello=b"two").addBoth(lambda r: trace.add("two", r))
    client.callRemote(Hello, hello=b"three").addBoth(lambda r: trace.add("three", r))
    pump.pump(disconnect=False)
    trace.watch("d1 final", d1)
    recordState(trace, "C", client)
    pump.pump()
    recordState(trace, "C", client)
    recordState(trace, "S", server)


def laterRepliesFindNoTable(stock, later):
    raised = [e for e in stock if e[0] == "raised"]
    if later in ("answer", "error"):
        # A later reply finds no table: AttributeError out of dataReceived.
        assert [e[2][1] for e in raised] == ["AttributeError"]
    else:
        # A later ask still runs; its answer is dropped silently.
        assert raised == []
        # Only the three asks made before the chunk were written.
        assert len(writesOf(stock, "P")) == 3


@pytest.mark.parametrize("later", ["answer", "error", "ask", "ask-undeclared"])
@differential(expect=laterRepliesFindNoTable)
def test_connectionLost_from_an_answer_callback_mid_chunk(ns, trace, later):
    """
    An answer callback calls connectionLost itself while the rest of its
    chunk is still to be parsed: the requests still outstanding fail with
    the reason at once, and what follows in the chunk meets a dispatcher
    whose table is gone (C{failAllOutgoing} sets it to None).
    """
    proto, transport = connectedPeer(ns, trace)
    reason = lostReason()
    ds = [proto.callRemote(Hello, hello=b"%d" % i) for i in (1, 2, 3)]

    def first(result):
        trace.add("first", result)
        proto.connectionLost(reason)
        recordState(trace, "after connectionLost", proto)
        return result

    ds[0].addCallback(first)
    for i, d in enumerate(ds):
        d.addBoth(lambda r, i=i: trace.add("d%d" % i, r, r is reason))
    chunk = wire(answerBox(b"1", hello=b"one"))
    if later == "answer":
        chunk += wire(answerBox(b"2", hello=b"two"), answerBox(b"3", hello=b"three"))
    elif later == "error":
        chunk += wire(errorBox(b"2", b"DECLARED", b"nope"))
    elif later == "ask":
        chunk += wire(askBox(b"a1", b"Hello", hello=b"asked"), askBox(b"a2", b"RAW", echo=b"e"))
    elif later == "ask-undeclared":
        proto.hooks["Hello"] = lambda self, hello: 1 / 0
        chunk += wire(askBox(b"a1", b"Hello", hello=b"asked"))
    feed(trace, proto, chunk)
    recordState(trace, "end", proto)


# ---- pause and resume --------------------------------------------------------------------


def pausedAfterTheCurrentBox(stock, where, extra):
    echoes = [e[1] for e in stock if e[0] == "raw"]
    assert echoes == [b"pause", b"two", b"three", b"four", b"five", b"six"]
    kinds = [e[0] for e in stock]
    secondRaw = kinds.index("raw", kinds.index("raw") + 1)
    assert secondRaw > kinds.index("resuming")


@pytest.mark.parametrize("extra", [False, True], ids=["resume", "data-while-paused"])
@pytest.mark.parametrize("where", ["pause", "stop"])
@differential(expect=pausedAfterTheCurrentBox)
def test_pause_in_handler_stops_after_current_box(ns, trace, where, extra):
    """
    pauseProducing (or stopProducing) from a responder: the boxes after
    the current one, in the same chunk or in later ones, wait for
    resumeProducing.  Stock's C{Int16StringReceiver.dataReceived} checks
    C{paused} before every string, so data that arrives while paused is
    only buffered.
    """
    proto, transport = connectedPeer(ns, trace)

    def raw(self, box):
        trace.add("raw", box[b"echo"])
        if box[b"echo"] == b"pause":
            if where == "stop":
                self.stopProducing()
            else:
                self.pauseProducing()
        return amp.AmpBox(echo=box[b"echo"])

    proto.hooks["RAW"] = raw
    fourth = wire(askBox(b"4", b"RAW", echo=b"four"))
    chunk = wire(askBox(b"1", b"RAW", echo=b"pause"), askBox(b"2", b"RAW", echo=b"two"),
                 askBox(b"3", b"RAW", echo=b"three"))
    feed(trace, proto, chunk + fourth[:6])
    trace.add("paused", proto.paused)
    if extra:
        feed(trace, proto, fourth[6:] + wire(askBox(b"5", b"RAW", echo=b"five")))
    trace.add("resuming")
    trace.call("resumeProducing", proto.resumeProducing)
    trace.add("paused", proto.paused)
    if not extra:
        feed(trace, proto, fourth[6:] + wire(askBox(b"5", b"RAW", echo=b"five")))
    feed(trace, proto, wire(askBox(b"6", b"RAW", echo=b"six")))


def secondAnswerFiredOnResume(stock):
    fired = [i for i, e in enumerate(stock) if e[:2] == ("fired", "d2")]
    resumed = stock.index(("returned", "resumeProducing", None))
    assert len(fired) == 1 and fired[0] < resumed
    assert stock.index(("table", "paused", (b"2",))) < fired[0]


@differential(expect=secondAnswerFiredOnResume)
def test_pause_from_answer_callback_holds_the_next_answer_until_resume(ns, trace):
    proto, transport = connectedPeer(ns, trace)
    d1 = proto.callRemote(Hello, hello=b"1")
    d1.addCallback(lambda r: (trace.add("pause in callback"), proto.pauseProducing(), r)[2])
    trace.watch("d1", d1)
    trace.watch("d2", proto.callRemote(Hello, hello=b"2"))
    feed(trace, proto, wire(answerBox(b"1", hello=b"a"), answerBox(b"2", hello=b"b")))
    recordTable(trace, "paused", proto)
    trace.call("resumeProducing", proto.resumeProducing)
    recordTable(trace, "resumed", proto)


# ---- re-entrant dataReceived (ampcore only) -------------------------------------------------


def test_reentrant_dataReceived_is_queued_after_current_chunk():
    trace = Trace()
    ns = makeClasses(ampcore.AMP)
    fed = []

    class Reentrant(ns.Peer):
        def ampBoxReceived(self, box):
            trace.add("box", box)
            if box.get(b"reenter") and not fed:
                fed.append(True)
                # The rest of box 2 and a whole box 4, re-entrantly.
                self.dataReceived(second[5:] + wire({b"n": b"4"}))
                trace.add("re-entrant call returned")

    second = wire({b"n": b"2"})
    proto = Reentrant(trace, "R")
    connect(proto, trace, "R")
    proto.dataReceived(wire({b"n": b"1", b"reenter": b"1"}) + second[:5])
    assert [e[1][1] for e in trace if e[0] == "box"] == [
        ((b"n", b"1"), (b"reenter", b"1")),
        ((b"n", b"2"),),
        ((b"n", b"4"),),
    ]
    assert trace.index(("re-entrant call returned",)) == 1
    # Later parsing is intact.
    proto.dataReceived(wire({b"n": b"5"})[:3])
    proto.dataReceived(wire({b"n": b"5"})[3:])
    assert trace[-1] == ("box", ("AmpBox", ((b"n", b"5"),)))


def test_reentrant_dataReceived_whole_boxes_in_order():
    trace = Trace()
    ns = makeClasses(ampcore.AMP)

    class Reentrant(ns.Peer):
        def ampBoxReceived(self, box):
            trace.add("box", box[b"n"])
            if box[b"n"] == b"1":
                self.dataReceived(wire({b"n": b"x1"}))
                self.dataReceived(wire({b"n": b"x2"}))
            elif box[b"n"] == b"x1":
                self.dataReceived(wire({b"n": b"y"}))

    proto = Reentrant(trace, "R")
    connect(proto, trace, "R")
    proto.dataReceived(wire({b"n": b"1"}, {b"n": b"2"}))
    assert [e[1] for e in trace if e[0] == "box"] == [b"1", b"2", b"x1", b"x2", b"y"]


def test_reentrant_dataReceived_with_dispatch():
    """
    A responder feeding the protocol the answer to a request it just
    made: the answer is dispatched after the current chunk.
    """
    trace = Trace()
    ns = makeClasses(ampcore.AMP)
    proto, transport = connectedPeer(ns, trace)

    def raw(self, box):
        d = self.callRemote(Hello, hello=b"inner")
        trace.watch("inner d", d)
        self.dataReceived(wire(answerBox(b"1", hello=b"inner answer")))
        trace.add("after re-entrant feed", list(self._outstandingRequests))
        return amp.AmpBox(echo=b"done")

    proto.hooks["RAW"] = raw
    proto.dataReceived(wire(askBox(b"a", b"RAW", echo=b"go"), askBox(b"b", b"Hello", hello=b"h")))
    events = [e for e in trace if e[0] in ("fired", "after re-entrant feed")
              or e[1:3] == ("responder", "Hello")]
    assert events == [
        ("after re-entrant feed", (b"1",)),
        ("P", "responder", "Hello", ("dict", (("hello", b"h"),))),
        ("fired", "inner d", ("dict", (("hello", b"inner answer"),))),
    ]
    assert proto._outstandingRequests == {}


def test_reentrant_then_exception_does_not_reorder_the_stream():
    """
    A handler feeds bytes re-entrantly and then raises out of
    dataReceived.  Stock cannot go on after an exception out of its
    framing loop (it would deliver the same strings again), so there is no
    reference; but ampcore must not reorder the byte stream: the queued
    bytes arrived before any later chunk, so they may be parsed before it
    or dropped, never parsed after it.
    """
    trace = Trace()
    ns = makeClasses(ampcore.AMP)

    class Reentrant(ns.Peer):
        def ampBoxReceived(self, box):
            trace.add("box", box[b"n"])
            if box[b"n"] == b"1":
                self.dataReceived(wire({b"n": b"queued"}))
                raise ValueError("handler failed")

    proto = Reentrant(trace, "R")
    connect(proto, trace, "R")
    with pytest.raises(ValueError):
        proto.dataReceived(wire({b"n": b"1"}))
    proto.dataReceived(wire({b"n": b"2"}))
    names = [e[1] for e in trace if e[0] == "box"]
    assert names[0] == b"1"
    assert names.count(b"2") == 1
    if b"queued" in names:
        assert names.index(b"queued") < names.index(b"2"), names
