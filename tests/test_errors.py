"""
Differential scenarios: errors on the requesting side and in what arrives.

Each test is a scenario run on stock C{twisted.protocols.amp.AMP} and on
C{ampcore.AMP} (L{helpers.differential}); the two traces must be equal.
"""

import pytest
from twisted.internet import defer
from twisted.protocols import amp
from twisted.python.failure import Failure

from helpers import (
    Declared,
    Hello,
    Pump,
    Sum,
    answerBox,
    connectedPeer,
    differential,
    errorBox,
    feed,
    loggedFailures,
    needsExtension,
    raising,
    recordState,
    wire,
    writesOf,
)

pytestmark = needsExtension()


# ---- failures in the requester's callbacks -----------------------------------------


def oneFailureLoggedUnlessHandled(stock, case):
    logged = loggedFailures(stock)
    if case == "cancel-handled":
        assert logged == []
    else:
        assert len(logged) == 1
        assert ("fired", "final", None) in stock


@pytest.mark.parametrize(
    "case", ["callback-raises", "errback-reraises", "cancel-unhandled", "cancel-handled"]
)
@differential(expect=oneFailureLoggedUnlessHandled)
def test_unhandled_errors_in_callRemote_callbacks_are_logged_and_drop_the_connection(
    ns, trace, case
):
    """
    C{BoxDispatcher._answerReceived} and C{_errorReceived} add
    C{unhandledError} as the last errback before they fire the request's
    Deferred: a failure the caller's callbacks leave unhandled is logged by
    C{BinaryBoxProtocol.unhandledError}, which drops the connection.
    """
    client, server = ns.Peer(trace, "C"), ns.Peer(trace, "S")
    pump = Pump(client, server, trace)
    if case == "errback-reraises":
        server.hooks["Hello"] = raising(Declared("no"))
    d = client.callRemote(Hello, hello=b"hi")
    if case == "callback-raises":
        def cb(result):
            trace.add("callback", result)
            raise ZeroDivisionError("in callback")

        d.addCallback(cb)
    elif case == "errback-reraises":
        def eb(failure):
            trace.add("errback", failure)
            return failure

        d.addErrback(eb)
    elif case == "cancel-unhandled":
        d.cancel()
    elif case == "cancel-handled":
        d.cancel()
        d.addErrback(lambda f: trace.add("trapped", f.trap(defer.CancelledError)))
    pump.pump(disconnect=False)
    # Callbacks added after the answer see what unhandledError left: None.
    trace.watch("final", d)
    recordState(trace, "C", client)
    pump.pump()
    recordState(trace, "C", client)


def nothingWritten(stock):
    assert writesOf(stock, "P") == []


@differential(expect=nothingWritten)
def test_callRemote_failures_before_anything_is_sent(ns, trace):
    """
    Arguments the Command refuses and a protocol not connected yet: a
    failed Deferred (C{callRemote} catches what constructing the Command
    raises) or an exception out of the call, and nothing written.
    """
    proto, transport = connectedPeer(ns, trace)
    trace.watch("missing arg", proto.callRemote(Hello))
    trace.call("extra arg", proto.callRemote, Hello, hello=b"x", nope=1)
    trace.call("bad type", proto.callRemote, Sum, a="x", b=1)
    trace.call("str value", proto.callRemote, Hello, hello="text")
    trace.call("too long", proto.callRemote, Hello, hello=b"x" * 65536)
    unconnected = ns.base()
    trace.call("before makeConnection", unconnected.callRemote, Hello, hello=b"x")
    trace.call("raw before makeConnection", unconnected.callRemoteString, b"Hello")
    recordState(trace, "end", proto)


# ---- unknown and duplicate tags, malformed error boxes ---------------------------------

TAG_CASES = {
    "unknown-answer": wire(answerBox(b"ffff", hello=b"x")),
    "unknown-error": wire(errorBox(b"ffff", b"DECLARED", b"d")),
    "duplicate-answer": wire(answerBox(b"1", hello=b"x"), answerBox(b"1", hello=b"y")),
    "answer-then-unknown": wire(answerBox(b"2", hello=b"ok"), answerBox(b"9", hello=b"no"),
                                answerBox(b"1", hello=b"never")),
    "error-missing-code": wire({b"_error": b"1", b"_error_description": b"d"}),
    "error-missing-description": wire({b"_error": b"1", b"_error_code": b"DECLARED"}),
    "error-unknown-code": wire(errorBox(b"1", b"WHATEVER", b"d\xffesc")),
    "error-unhandled": wire(errorBox(b"1", b"UNHANDLED", b"not here")),
    "answer-and-command": wire({b"_answer": b"1", b"_command": b"Hello", b"hello": b"a"}),
    "error-and-command": wire({b"_error": b"2", b"_error_code": b"DECLARED",
                               b"_error_description": b"x", b"_command": b"Hello"}),
}


def unmatchedTagsRaiseKeyError(stock, case):
    raised = [e for e in stock if e[0] == "raised" and e[1] == "dataReceived"]
    if case.startswith(("unknown", "duplicate", "answer-then", "error-missing")):
        assert [e[2][1] for e in raised] == ["KeyError"]


@pytest.mark.parametrize("case", sorted(TAG_CASES))
@differential(expect=unmatchedTagsRaiseKeyError)
def test_unknown_duplicate_and_malformed_answers(ns, trace, case):
    """
    An answer or error box whose tag matches no request, or an error box
    without its code or description, raises KeyError out of dataReceived
    (C{_outstandingRequests.pop} and the box lookups in
    C{BoxDispatcher._answerReceived} and C{_errorReceived}); C{_answer}
    and C{_error} win over C{_command}.
    """
    proto, transport = connectedPeer(ns, trace)
    ds = [proto.callRemote(Hello, hello=b"1"), proto.callRemoteString(b"Hello", hello=b"2")]
    trace.watch("d1", ds[0])
    trace.watch("d2", ds[1])
    feed(trace, proto, TAG_CASES[case])
    recordState(trace, "after", proto)
    # What a reactor does next when dataReceived raised: connectionLost,
    # with a failure of what was raised.
    trace.call("connectionLost", proto.connectionLost, Failure(KeyError(b"ffff")))
    recordState(trace, "end", proto)


# ---- boxes that are neither command, answer nor error -------------------------------------


def noEmptyBoxesRaised(stock, case):
    assert any(e[0] == "raised" and e[2][1] == "NoEmptyBoxes" for e in stock)


@pytest.mark.parametrize("case", ["direct", "wire", "ask-without-command", "unconnected"])
@differential(expect=noEmptyBoxesRaised)
def test_empty_boxes_raise_NoEmptyBoxes(ns, trace, case):
    """
    C{BoxDispatcher.ampBoxReceived} raises NoEmptyBoxes for a box without
    C{_answer}, C{_error} or C{_command}, however it arrives.
    """
    proto, transport = connectedPeer(ns, trace)
    trace.watch("d1", proto.callRemote(Hello, hello=b"1"))
    if case == "direct":
        trace.call("ampBoxReceived", proto.ampBoxReceived, amp.AmpBox())
        trace.call("ampBoxReceived dict", proto.ampBoxReceived, {b"x": b"y"})
    elif case == "wire":
        feed(trace, proto, wire(answerBox(b"1", hello=b"a")) + b"\x00\x00")
    elif case == "ask-without-command":
        feed(trace, proto, wire({b"_ask": b"1", b"hello": b"x"}))
    elif case == "unconnected":
        unconnected = ns.base()
        trace.call("unconnected ampBoxReceived", unconnected.ampBoxReceived, amp.AmpBox())
        trace.call("unconnected dataReceived", unconnected.dataReceived, b"\x00\x00")
    recordState(trace, "end", proto)
