"""
Differential scenarios: the connection goes away with requests outstanding.

Each test is a scenario run on stock C{twisted.protocols.amp.AMP} and on
C{ampcore.AMP} (L{helpers.differential}); the two traces must be equal.
"""

import pytest
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.protocols import amp
from twisted.python.failure import Failure

from helpers import (
    Declared,
    Hello,
    NoAnswer,
    Pump,
    answerBox,
    connectedPeer,
    differential,
    feed,
    lostReason,
    needsExtension,
    recordState,
    recordTable,
    wire,
)

pytestmark = needsExtension()

REASONS = {
    "done": lambda: Failure(ConnectionDone("Connection was closed cleanly.")),
    "lost": lostReason,
    "keyerror": lambda: Failure(KeyError(b"ffff")),
}


def failedInTagOrder(stock, which):
    assert [e[1] for e in stock if e[0] == "errback"] == [0, 1, 2, 3]
    # callRemote's _massageError re-wraps the failure (trap re-raises);
    # callRemoteString's Deferred gets the reason object itself.
    assert [e[3] for e in stock if e[0] == "errback"] == [False, False, False, True]
    assert all(e[4] and e[5] and e[6] for e in stock if e[0] == "errback")


@pytest.mark.parametrize("which", sorted(REASONS))
@differential(expect=failedInTagOrder)
def test_connection_lost_fails_outstanding_in_tag_order(ns, trace, which):
    """
    C{BoxDispatcher.failAllOutgoing} errbacks every outstanding request
    with the reason, in the order they were made, while the transport is
    still set and the table already gone; later requests fail with the
    same reason, and data that still arrives is parsed.
    """
    proto, transport = connectedPeer(ns, trace)
    reason = REASONS[which]()
    ds = [proto.callRemote(Hello, hello=b"%d" % i) for i in range(1, 4)]
    ds.append(proto.callRemoteString(b"RAW", echo=b"x"))
    for i, d in enumerate(ds):
        def eb(f, i=i):
            trace.add("errback", i, f, f is reason, f.value is reason.value,
                      proto.transport is not None, proto._outstandingRequests is None)

        d.addErrback(eb)
    recordTable(trace, "before", proto)
    trace.call("connectionLost", proto.connectionLost, reason)
    recordState(trace, "after", proto)
    trace.add("failAllReason is reason", proto._failAllReason is reason)
    later = proto.callRemote(Hello, hello=b"later")
    later.addErrback(lambda f: trace.add("later", f, f.value is reason.value))
    later = proto.callRemoteString(b"RAW", echo=b"later")
    later.addErrback(lambda f: trace.add("later raw", f, f is reason))
    trace.call("sendBox", proto.sendBox, amp.AmpBox(a=b"b"))
    trace.call("callRemote missing arg", proto.callRemote, Hello)
    # Data arriving after the loss is still parsed: a late answer now fails.
    feed(trace, proto, wire(answerBox(b"1", hello=b"late")))
    recordState(trace, "end", proto)


@differential
def test_late_answers_after_connection_loss_are_swallowed(ns, trace):
    """
    A responder's answer or error that comes after the connection was lost
    is dropped without a word: C{BoxDispatcher._safeEmit} ignores the
    C{ConnectionLost} that C{sendBox} raises once the transport is None.
    """
    client, server = ns.Peer(trace, "C"), ns.Peer(trace, "S")
    pump = Pump(client, server, trace)
    pending = []
    server.hooks["Hello"] = lambda self, hello: pending.append(defer.Deferred()) or pending[-1]
    for i in (1, 2):
        trace.watch("C %d" % i, client.callRemote(Hello, hello=b"%d" % i))
    pump.pump()
    server.transport.loseConnection()
    pump.pump()
    pending[0].callback({"hello": b"late"})
    pending[1].errback(Declared("late error"))
    recordState(trace, "S", server)
    recordState(trace, "C", client)


@differential
def test_requests_from_errbacks_fail_and_a_second_loss_is_harmless(ns, trace):
    """
    Inside the errback of a request failed by the loss, the table is gone
    and the reason stored: new requests fail at once.  A second
    connectionLost or failAllOutgoing after that changes nothing.
    """
    proto, transport = connectedPeer(ns, trace)
    reason = lostReason()

    def eb(failure):
        trace.add("errback", failure)
        trace.call("callRemote in errback", proto.callRemote, Hello, hello=b"new")
        trace.call("no answer in errback", proto.callRemote, NoAnswer, x=1)
        trace.call("sendBox in errback", proto.sendBox, amp.AmpBox(in_errback=b"1"))

    proto.callRemote(Hello, hello=b"x").addErrback(eb)
    trace.call("connectionLost", proto.connectionLost, reason)
    trace.call("connectionLost again", proto.connectionLost, reason)
    trace.call("failAllOutgoing again", proto.failAllOutgoing, reason)
    recordState(trace, "end", proto)


@differential
def test_requiresAnswer_False_after_connection_loss_returns_None(ns, trace):
    """
    After the loss, C{_sendBoxCommand} returns None for a command that
    needs no answer and a failed Deferred with the reason for one that
    does; errors building the Command still come back as failed Deferreds.
    """
    proto, _ = connectedPeer(ns, trace)
    reason = lostReason()
    proto.connectionLost(reason)
    trace.add("NoAnswer", proto.callRemote(NoAnswer, x=1))
    trace.add("NoAnswer raw", proto.callRemoteString(b"NoAnswer", False, x=b"1"))
    d = proto.callRemote(Hello, hello=b"x")
    d.addErrback(lambda f: trace.add("Hello failed", f, f is reason))
    trace.watch("NoAnswer missing arg", proto.callRemote(NoAnswer))
    recordState(trace, "P", proto)
