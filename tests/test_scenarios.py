"""
Differential scenario tests: ampcore's AMP against Twisted's own.

Every scenario builds the same protocols on top of stock
C{twisted.protocols.amp.AMP} and on top of C{ampcore.AMP} (see
L{make_classes}), drives them identically and records an ordered trace of
what is observable: transport writes (raw and parsed), loseConnection and
producer calls, Deferred results, exceptions raised out of calls, log
events with their failures, table and connection state.  The two traces
must be equal (L{scenario_helpers.assert_same}).

Section and item references (§6.3, D12, P7, ...) are to amp-spec.md.

The one scenario that is not differential is re-entrant dataReceived (P9):
stock recurses there, ampcore queues; it is tested on ampcore alone.
"""

import random
import re

import pytest
from twisted.internet import defer
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.protocols import amp
from twisted.python.failure import Failure

import ampcore
from scenario_helpers import (
    CORE,
    Pump,
    Trace,
    assert_same,
    connect,
    namespace,
    norm,
    run_both,
    run_scenario,
)

pytestmark = pytest.mark.skipif(
    not ampcore.HAS_C_EXTENSION, reason="ampcore's C extension is not in use"
)


# ---- commands shared by both implementations -------------------------------


class Declared(Exception):
    pass


class Fatal(Exception):
    pass


class Undeclared(Exception):
    pass


class Hello(amp.Command):
    arguments = [(b"hello", amp.String())]
    response = [(b"hello", amp.String())]
    errors = {Declared: b"DECLARED"}
    fatalErrors = {Fatal: b"FATAL"}


class Sum(amp.Command):
    arguments = [(b"a", amp.Integer()), (b"b", amp.Integer())]
    response = [(b"total", amp.Integer())]


class NoAnswer(amp.Command):
    arguments = [(b"x", amp.Integer())]
    response = [(b"y", amp.Integer())]
    errors = {Declared: b"DECLARED"}
    requiresAnswer = False


class Goodbye(amp.Command):
    responseType = amp.QuitBox


class NoSuch(amp.Command):
    commandName = b"nosuch"


class SwitchIt(amp.ProtocolSwitchCommand):
    arguments = [(b"name", amp.String())]


class Inner(Protocol):
    """The protocol switched to: records what reaches it."""

    def __init__(self, trace, label, greeting=b""):
        self.trace = trace
        self.label = label
        self.greeting = greeting

    def makeConnection(self, transport):
        self.trace.add(self.label, "inner makeConnection")
        Protocol.makeConnection(self, transport)

    def connectionMade(self):
        if self.greeting:
            self.transport.write(self.greeting)

    def dataReceived(self, data):
        self.trace.add(self.label, "inner dataReceived", data)

    def connectionLost(self, reason):
        self.trace.add(self.label, "inner connectionLost", reason)


class InnerFactory(ClientFactory):
    def __init__(self, trace, label):
        self.trace = trace
        self.label = label

    def buildProtocol(self, addr):
        self.trace.add(self.label, "buildProtocol")
        return Inner(self.trace, self.label + "-inner", greeting=b"client-inner")

    def clientConnectionFailed(self, connector, reason):
        self.trace.add(self.label, "clientConnectionFailed", connector, reason)

    def clientConnectionLost(self, connector, reason):
        self.trace.add(self.label, "clientConnectionLost", connector, reason)


def make_classes(base):
    """The test protocols, built on C{base} (stock or ampcore AMP)."""

    class Peer(base):
        """
        An AMP peer whose responders record their call and then do what
        C{self.hooks[name]} says (by default: a plain synchronous answer).
        """

        def __init__(self, trace, label="P", **kw):
            base.__init__(self, **kw)
            self.trace = trace
            self.label = label
            self.hooks = {}

        def _run(self, _responder, default, **kw):
            self.trace.add(self.label, "responder", _responder, kw)
            hook = self.hooks.get(_responder)
            if hook is None:
                return default
            return hook(self, **kw)

        @Hello.responder
        def hello(self, hello):
            return self._run("Hello", {"hello": hello}, hello=hello)

        @Sum.responder
        def sum(self, a, b):
            return self._run("Sum", {"total": a + b}, a=a, b=b)

        @NoAnswer.responder
        def noAnswer(self, x):
            return self._run("NoAnswer", {"y": x}, x=x)

        @Goodbye.responder
        def goodbye(self):
            return self._run("Goodbye", {})

        @SwitchIt.responder
        def switchIt(self, name):
            return self._run(
                "SwitchIt",
                Inner(self.trace, self.label + "-inner", greeting=b"server-inner"),
                name=name,
            )

        def amp_RAW(self, box):
            # A low-level responder: gets the raw box, returns a box.
            return self._run("RAW", amp.AmpBox(echo=box.get(b"echo", b"")), box=box)

    if base is amp.AMP:
        dispatcher, binary = amp.BoxDispatcher, amp.BinaryBoxProtocol
    else:
        dispatcher, binary = ampcore.BoxDispatcher, ampcore.BinaryBoxProtocol
    return namespace(
        base=base, Peer=Peer, BoxDispatcher=dispatcher, BinaryBoxProtocol=binary
    )


def same(scenario, *args):
    return assert_same(scenario, make_classes, *args)


def both(scenario, *args):
    return run_both(scenario, make_classes, *args)


# ---- small helpers ----------------------------------------------------------


def wire(*boxes):
    """The bytes of some boxes (dicts with bytes keys and values)."""
    return b"".join(amp.AmpBox(b).serialize() for b in boxes)


def answer(tag, **kw):
    box = {b"_answer": tag}
    box.update({k.encode(): v for k, v in kw.items()})
    return box


def ask(tag, command, **kw):
    box = {b"_ask": tag, b"_command": command}
    box.update({k.encode(): v for k, v in kw.items()})
    return box


def error(tag, code, desc):
    return {b"_error": tag, b"_error_code": code, b"_error_description": desc}


def single(ns, trace, cls=None, label="P", **kw):
    """One protocol over a RecordingTransport."""
    proto = (cls or ns.Peer)(trace, label, **kw)
    transport = connect(proto, trace, label)
    return proto, transport


def feed(trace, proto, data, label="dataReceived"):
    """One dataReceived call, bracketed so synchronous effects show."""
    trace.add("feed", label, data)
    trace.call(label, proto.dataReceived, data)
    trace.add("feed done", label)


def table(trace, label, proto):
    reqs = proto._outstandingRequests
    trace.add("table", label, None if reqs is None else list(reqs))


def state(trace, label, proto):
    trace.add(
        "state",
        label,
        proto.transport is None,
        getattr(proto.transport, "disconnecting", None),
        proto._failAllReason,
        proto._counter,
    )
    table(trace, label, proto)


def writes(trace, label):
    """The raw bytes of C{label}'s transport writes, from a trace."""
    return [e[2] for e in trace if len(e) > 2 and e[0] == label and e[1] == "write"]


def lost():
    return Failure(ConnectionLost("Connection to the other side was lost."))


# ---- §6.1: a responder that calls callRemote synchronously ------------------


def scenario_responder_calls_remote(ns, trace):
    client, server = ns.Peer(trace, "C"), ns.Peer(trace, "S")
    pump = Pump(trace, client, server)

    def hello(self, hello):
        trace.watch("S Sum", self.callRemote(Sum, a=1, b=2))
        table(trace, "S inside responder", self)
        return {"hello": hello + b"!"}

    server.hooks["Hello"] = hello
    trace.watch("C Hello", client.callRemote(Hello, hello=b"hi"))
    pump.pump()
    state(trace, "C", client)
    state(trace, "S", server)


def test_responder_calls_callRemote_synchronously():
    stock = same(scenario_responder_calls_remote)
    # The server's new _ask goes out before its answer to the request.
    boxes = [amp.parseString(w)[0] for w in writes(stock, "S")]
    assert [sorted(b) for b in boxes] == [
        [b"_ask", b"_command", b"a", b"b"],
        [b"_answer", b"hello"],
    ]


# ---- §6.2: a callback that drops the connection mid-chunk -------------------


def scenario_lose_connection_mid_chunk(ns, trace, how):
    client, server = ns.Peer(trace, "C"), ns.Peer(trace, "S")
    pump = Pump(trace, client, server)
    d1 = client.callRemote(Hello, hello=b"one")

    def first(result):
        trace.add("first callback", result)
        if how == "loseConnection":
            client.transport.loseConnection()
        else:  # D12: an unhandled error in a callback drops the connection
            raise ValueError("callback failed")
        return result

    d1.addCallback(first)
    client.callRemote(Hello, hello=b"two").addBoth(lambda r: trace.add("two", r))
    client.callRemote(Hello, hello=b"three").addBoth(lambda r: trace.add("three", r))
    pump.pump(disconnect=False)
    trace.watch("d1 final", d1)
    state(trace, "C", client)
    pump.pump()
    state(trace, "C", client)
    state(trace, "S", server)


@pytest.mark.parametrize("how", ["loseConnection", "raise"])
def test_callback_drops_connection_rest_of_chunk_dispatched(how):
    stock = same(scenario_lose_connection_mid_chunk, how)
    assert sum(1 for e in stock if e[0] in ("two", "three")) == 2


def scenario_sync_connection_lost_then_answer(ns, trace, later):
    proto, transport = single(ns, trace)
    reason = lost()
    ds = [proto.callRemote(Hello, hello=b"%d" % i) for i in (1, 2, 3)]

    def first(result):
        trace.add("first", result)
        proto.connectionLost(reason)
        state(trace, "after connectionLost", proto)
        return result

    ds[0].addCallback(first)
    for i, d in enumerate(ds):
        d.addBoth(lambda r, i=i: trace.add("d%d" % i, r, r is reason))
    chunk = wire(answer(b"1", hello=b"one"))
    if later == "answer":
        chunk += wire(answer(b"2", hello=b"two"), answer(b"3", hello=b"three"))
    elif later == "error":
        chunk += wire(error(b"2", b"DECLARED", b"nope"))
    elif later == "ask":
        chunk += wire(ask(b"a1", b"Hello", hello=b"asked"), ask(b"a2", b"RAW", echo=b"e"))
    elif later == "ask-undeclared":
        proto.hooks["Hello"] = lambda self, hello: 1 / 0
        chunk += wire(ask(b"a1", b"Hello", hello=b"asked"))
    feed(trace, proto, chunk)
    state(trace, "end", proto)


@pytest.mark.parametrize("later", ["answer", "error", "ask", "ask-undeclared"])
def test_sync_connectionLost_from_callback(later):
    stock = same(scenario_sync_connection_lost_then_answer, later)
    raised = [e for e in stock if e[0] == "raised"]
    if later in ("answer", "error"):
        # A later reply finds no table: AttributeError out of dataReceived.
        assert [e[2][1] for e in raised] == ["AttributeError"]
    else:
        # A later ask still runs; its answer is dropped silently.
        assert raised == []
        # Only the three asks made before the chunk were written.
        assert len(writes(stock, "P")) == 3


# ---- §6.3 / P2: answer order -------------------------------------------------


def scenario_answers_in_wire_order(ns, trace):
    proto, _ = single(ns, trace)
    for i in (1, 2, 3):
        trace.watch("d%d" % i, proto.callRemote(Hello, hello=b"%d" % i))
    table(trace, "before", proto)
    feed(trace, proto, wire(answer(b"3", hello=b"c"), answer(b"1", hello=b"a"),
                            answer(b"2", hello=b"b")))
    table(trace, "after", proto)


def test_answers_fire_in_wire_order_synchronously():
    stock = same(scenario_answers_in_wire_order)
    fired = [e[1] for e in stock if e[0] == "fired"]
    assert fired == ["d3", "d1", "d2"]
    kinds = [e[0] for e in stock]
    start, end = kinds.index("feed"), kinds.index("feed done")
    assert all(start < i < end for i, k in enumerate(kinds) if k == "fired")


def scenario_answers_in_completion_order(ns, trace, kind):
    client, server = ns.Peer(trace, "C"), ns.Peer(trace, "S")
    pump = Pump(trace, client, server)
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
    state(trace, "C", client)
    state(trace, "S", server)


@pytest.mark.parametrize("kind", ["deferred", "async", "raw"])
def test_server_answers_in_completion_order(kind):
    stock = same(scenario_answers_in_completion_order, kind)
    tags = [amp.parseString(w)[0][b"_answer"] for w in writes(stock, "S")]
    assert tags == [b"2", b"3", b"1"]


# ---- §6.4 / D12 / D13: unhandled errors in callRemote callbacks ---------------


def scenario_callback_errors(ns, trace, case):
    client, server = ns.Peer(trace, "C"), ns.Peer(trace, "S")
    pump = Pump(trace, client, server)
    if case == "errback-reraises":
        server.hooks["Hello"] = _raise(Declared("no"))
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
    state(trace, "C", client)
    pump.pump()
    state(trace, "C", client)


@pytest.mark.parametrize(
    "case", ["callback-raises", "errback-reraises", "cancel-unhandled", "cancel-handled"]
)
def test_unhandled_callback_errors_logged_and_drop(case):
    stock = same(scenario_callback_errors, case)
    logged = [e for e in stock if e[0] == "log" and e[4] is not None]
    if case == "cancel-handled":
        assert logged == []
    else:
        assert len(logged) == 1
        assert ("fired", "final", None) in stock


# ---- §6.5 / §2.4: responder outcomes -------------------------------------------


def _raise(exc):
    def hook(self, **kw):
        raise exc

    return hook


async def _async_answer(value):
    return {"hello": value}


async def _async_raise(exc):
    raise exc


HELLO_OUTCOMES = {
    "plain": None,
    "declared": _raise(Declared("declared failure")),
    "fatal": _raise(Fatal("fatal failure")),
    "undeclared": _raise(Undeclared("undeclared failure")),
    "remote-error": _raise(amp.RemoteAmpError(b"CUSTOM", "custom description")),
    "remote-error-fatal": _raise(amp.RemoteAmpError(b"CUSTOM", "fatal custom", fatal=True)),
    "remote-error-bytes-desc": _raise(amp.RemoteAmpError(b"CUSTOM", b"raw \xff bytes")),
    "remote-error-surrogate-desc": _raise(amp.RemoteAmpError(b"CUSTOM", "caf\u00e9 \ud800")),
    "bad-local-return": lambda self, hello: {},
    "extra-keys-ignored": lambda self, hello: {"hello": hello, "extra": 1},
    "deferred-success": lambda self, hello: defer.succeed({"hello": b"d"}),
    "deferred-declared": lambda self, hello: defer.fail(Declared("deferred declared")),
    "returns-failure": lambda self, hello: Failure(Declared("failure object")),
    "async": lambda self, hello: _async_answer(b"async"),
    "async-raises": lambda self, hello: _async_raise(Undeclared("async undeclared")),
    "too-long-answer": lambda self, hello: {"hello": b"x" * 70000},
    "str-answer": lambda self, hello: {"hello": "text"},
    "keyerror": _raise(KeyError("x")),
}


def scenario_hello_outcome(ns, trace, outcome):
    client, server = ns.Peer(trace, "C"), ns.Peer(trace, "S")
    pump = Pump(trace, client, server)
    hook = HELLO_OUTCOMES[outcome]
    if hook is not None:
        server.hooks["Hello"] = hook
    trace.watch("C Hello", client.callRemote(Hello, hello=b"hi"))
    # And the same request through callRemoteString: raw errors (D4).
    trace.watch("C Hello raw", client.callRemoteString(b"Hello", hello=b"raw"))
    pump.pump()
    state(trace, "C", client)
    state(trace, "S", server)


@pytest.mark.parametrize("outcome", sorted(HELLO_OUTCOMES))
def test_command_responder_outcomes(outcome):
    stock = same(scenario_hello_outcome, outcome)
    logged = [e for e in stock if e[0] == "log" and e[4] is not None]
    if outcome in ("undeclared", "async-raises", "bad-local-return", "keyerror"):
        # Twisted >= 24.7 logs with a message; older releases log.err the
        # bare failure.
        message = (
            "while receiving response to command" if hasattr(amp, "_log") else "{log_text}"
        )
        assert logged and all(e[3] == message for e in logged)
    if outcome in ("plain", "declared", "remote-error", "deferred-success"):
        assert logged == []


def test_command_outcome_error_boxes():
    # Pin a few of the error boxes stock sends, so the differential test
    # above is known to cover them.
    stock = both(scenario_hello_outcome, "declared")[0]
    first = amp.parseString(writes(stock, "S")[0])[0]
    assert first == {b"_error": b"1", b"_error_code": b"DECLARED",
                     b"_error_description": b"declared failure"}
    stock = both(scenario_hello_outcome, "undeclared")[0]
    first = amp.parseString(writes(stock, "S")[0])[0]
    assert first[b"_error_code"] == b"UNKNOWN"
    assert first[b"_error_description"] == b"Unknown Error"


def scenario_sum_parse_error(ns, trace):
    client, server = ns.Peer(trace, "C"), ns.Peer(trace, "S")
    pump = Pump(trace, client, server)
    # An argument that fails to parse: UNKNOWN, logged, connection closed.
    trace.watch("C Sum", client.callRemoteString(b"Sum", a=b"not a number", b=b"1"))
    trace.watch("C Sum missing", client.callRemoteString(b"Sum", a=b"1"))
    pump.pump()
    state(trace, "S", server)


def test_argument_parse_error_is_unknown():
    same(scenario_sum_parse_error)


def scenario_unknown_command(ns, trace, via):
    client, server = ns.Peer(trace, "C"), ns.Peer(trace, "S")
    pump = Pump(trace, client, server)
    if via == "callRemote":
        trace.watch("C NoSuch", client.callRemote(NoSuch))
    elif via == "callRemoteString":
        trace.watch("C nosuch", client.callRemoteString(b"nosuch", arg=b"x"))
    else:  # without _ask: nothing to answer, logged and dropped
        trace.watch("C nosuch", client.callRemoteString(b"nosuch", requiresAnswer=False))
    pump.pump()
    state(trace, "C", client)
    state(trace, "S", server)


@pytest.mark.parametrize("via", ["callRemote", "callRemoteString", "no-answer"])
def test_unknown_command(via):
    stock = same(scenario_unknown_command, via)
    if via != "no-answer":
        box = amp.parseString(writes(stock, "S")[0])[0]
        assert box[b"_error_code"] == b"UNHANDLED"
        assert box[b"_error_description"] == b"Unhandled Command: b'nosuch'"


class BrokenBox(amp.AmpBox):
    def _sendTo(self, proto):
        raise RuntimeError("cannot send this box")


class BaseBoom(BaseException):
    pass


_SHARED = {}


def _later_failure(self):
    d = defer.Deferred()
    _SHARED.setdefault("later", []).append((d, "fail"))
    return d


def _later_answer(self):
    d = defer.Deferred()
    _SHARED.setdefault("later", []).append((d, "answer"))
    return d


def _shared_box(self, box):
    shared = _SHARED.setdefault(self.label, amp.AmpBox(echo=b"shared"))
    return shared


def _drop_ask(self, box):
    del box[b"_ask"]
    return amp.AmpBox(echo=b"no ask")


def _change_ask(self, box):
    box[b"_ask"] = b"changed"
    return amp.AmpBox(echo=b"changed ask")


async def _async_box():
    return amp.AmpBox(echo=b"async")


RAW_OUTCOMES = {
    "box": None,
    "none": lambda self, box: None,
    "plain-dict": lambda self, box: {b"echo": b"dict"},
    "raises": _raise(Undeclared("raw failure")),
    "raises-remote": _raise(amp.RemoteAmpError(b"RAWERR", "raw remote")),
    "quitbox": lambda self, box: amp.QuitBox(echo=b"quit"),
    "broken-box": lambda self, box: BrokenBox(echo=b"broken"),
    "deferred": lambda self, box: defer.succeed(amp.AmpBox(echo=b"deferred")),
    "deferred-none": lambda self, box: defer.succeed(None),
    "async": lambda self, box: _async_box(),
    "failure": lambda self, box: Failure(Undeclared("raw failure object")),
    "shared-box": _shared_box,
    "drop-ask": _drop_ask,
    "change-ask": _change_ask,
    "str-value": lambda self, box: amp.AmpBox(echo="text"),
    "int": lambda self, box: 5,
    "generator": lambda self, box: (x for x in ()),
    "async-raises": lambda self, box: _async_raise(Undeclared("raw async failure")),
    "base-exception": _raise(BaseBoom("not an Exception")),
    "deferred-fails-later": lambda self, box: _later_failure(self),
    "deferred-answer-later": lambda self, box: _later_answer(self),
}


def scenario_raw_outcome(ns, trace, outcome):
    _SHARED.clear()
    client, server = ns.Peer(trace, "C"), ns.Peer(trace, "S")
    pump = Pump(trace, client, server)
    hook = RAW_OUTCOMES[outcome]
    if hook is not None:
        server.hooks["RAW"] = hook
    trace.watch("C RAW 1", client.callRemoteString(b"RAW", echo=b"1"))
    trace.watch("C RAW 2", client.callRemoteString(b"RAW", echo=b"2"))
    pump.pump()
    for d, how in _SHARED.pop("later", []):
        if how == "fail":
            d.errback(Declared("raw later failure"))
        else:
            d.callback(amp.AmpBox(echo=b"later"))
        pump.pump()
    trace.add("shared box now", _SHARED.get("S"))
    state(trace, "C", client)
    state(trace, "S", server)


@pytest.mark.parametrize("outcome", sorted(RAW_OUTCOMES))
def test_low_level_responder_outcomes(outcome):
    stock = same(scenario_raw_outcome, outcome)
    if outcome in ("none", "plain-dict", "broken-box", "int"):
        # No box sent; unhandledError logged and dropped the connection.
        assert writes(stock, "S") == []
        assert ("S", "loseConnection") in stock


def scenario_goodbye(ns, trace):
    client, server = ns.Peer(trace, "C"), ns.Peer(trace, "S")
    pump = Pump(trace, client, server)
    trace.watch("C Goodbye", client.callRemote(Goodbye))
    trace.watch("C Hello after", client.callRemote(Hello, hello=b"after"))
    pump.pump()
    state(trace, "C", client)
    state(trace, "S", server)


def test_quitbox_response_closes_after_answer():
    same(scenario_goodbye)


def scenario_requests_after_server_drop(ns, trace):
    # Several asks in one chunk; the first kills the connection with a
    # fatal error: the rest are still dispatched and answered (the transport
    # is only "disconnecting").
    client, server = ns.Peer(trace, "C"), ns.Peer(trace, "S")
    pump = Pump(trace, client, server)
    def hello(self, hello):
        if hello == b"1":
            raise Fatal("first")
        return {"hello": hello}

    server.hooks["Hello"] = hello
    for i in (1, 2, 3):
        trace.watch("C %d" % i, client.callRemote(Hello, hello=b"%d" % i))
    pump.pump()
    state(trace, "C", client)


def test_fatal_error_then_more_asks_in_same_chunk():
    same(scenario_requests_after_server_drop)


# ---- §2.5 / §6.6: requiresAnswer=False ------------------------------------------


def scenario_no_answer(ns, trace, case):
    client, server = ns.Peer(trace, "C"), ns.Peer(trace, "S")
    pump = Pump(trace, client, server)
    if case == "declared":
        server.hooks["NoAnswer"] = _raise(Declared("no answer declared"))
    elif case == "bad-local-return":
        server.hooks["NoAnswer"] = lambda self, x: {}
    elif case == "deferred-failure":
        server.hooks["NoAnswer"] = lambda self, x: defer.fail(Undeclared("later"))
    trace.add("no-answer returned", client.callRemote(NoAnswer, x=1))
    trace.add("counter", client._counter)
    trace.watch("C Hello", client.callRemote(Hello, hello=b"after"))
    table(trace, "C", client)
    if case == "asked-anyway":
        trace.watch("C NoAnswer asked", client.callRemoteString(b"NoAnswer", x=b"7"))
    pump.pump()
    state(trace, "C", client)
    state(trace, "S", server)


@pytest.mark.parametrize(
    "case", ["ok", "declared", "bad-local-return", "deferred-failure", "asked-anyway"]
)
def test_requires_answer_false(case):
    stock = same(scenario_no_answer, case)
    tags = [amp.parseString(w)[0].get(b"_ask") for w in writes(stock, "C")]
    assert tags[:2] == [None, b"2"]


def scenario_no_answer_after_loss(ns, trace):
    proto, _ = single(ns, trace)
    reason = lost()
    proto.connectionLost(reason)
    trace.add("NoAnswer", proto.callRemote(NoAnswer, x=1))
    trace.add("NoAnswer raw", proto.callRemoteString(b"NoAnswer", False, x=b"1"))
    d = proto.callRemote(Hello, hello=b"x")
    d.addErrback(lambda f: trace.add("Hello failed", f, f is reason))
    # Construction errors still come back as failed Deferreds.
    trace.watch("NoAnswer missing arg", proto.callRemote(NoAnswer))
    state(trace, "P", proto)


def test_requires_answer_false_after_connection_loss():
    same(scenario_no_answer_after_loss)


# ---- §6.7: connection loss with requests outstanding -------------------------------


REASONS = {
    "done": lambda: Failure(ConnectionDone("Connection was closed cleanly.")),
    "lost": lost,
    "keyerror": lambda: Failure(KeyError(b"ffff")),
}


def scenario_connection_lost_outstanding(ns, trace, which):
    proto, transport = single(ns, trace)
    reason = REASONS[which]()
    ds = [proto.callRemote(Hello, hello=b"%d" % i) for i in range(1, 4)]
    ds.append(proto.callRemoteString(b"RAW", echo=b"x"))
    for i, d in enumerate(ds):
        def eb(f, i=i):
            trace.add("errback", i, f, f is reason, f.value is reason.value,
                      proto.transport is not None, proto._outstandingRequests is None)

        d.addErrback(eb)
    table(trace, "before", proto)
    trace.call("connectionLost", proto.connectionLost, reason)
    state(trace, "after", proto)
    trace.add("failAllReason is reason", proto._failAllReason is reason)
    later = proto.callRemote(Hello, hello=b"later")
    later.addErrback(lambda f: trace.add("later", f, f.value is reason.value))
    later = proto.callRemoteString(b"RAW", echo=b"later")
    later.addErrback(lambda f: trace.add("later raw", f, f is reason))
    trace.call("sendBox", proto.sendBox, amp.AmpBox(a=b"b"))
    trace.call("callRemote missing arg", proto.callRemote, Hello)
    # Data arriving after the loss is still parsed: a late answer now fails.
    feed(trace, proto, wire(answer(b"1", hello=b"late")))
    state(trace, "end", proto)


@pytest.mark.parametrize("which", sorted(REASONS))
def test_connection_lost_fails_outstanding_in_tag_order(which):
    stock = same(scenario_connection_lost_outstanding, which)
    assert [e[1] for e in stock if e[0] == "errback"] == [0, 1, 2, 3]
    # callRemote's _massageError re-wraps the failure (trap re-raises);
    # callRemoteString's Deferred gets the reason object itself.
    assert [e[3] for e in stock if e[0] == "errback"] == [False, False, False, True]
    assert all(e[4] and e[5] and e[6] for e in stock if e[0] == "errback")


def scenario_connection_lost_over_pump(ns, trace):
    client, server = ns.Peer(trace, "C"), ns.Peer(trace, "S")
    pump = Pump(trace, client, server)
    pending = []
    server.hooks["Hello"] = lambda self, hello: pending.append(defer.Deferred()) or pending[-1]
    for i in (1, 2):
        trace.watch("C %d" % i, client.callRemote(Hello, hello=b"%d" % i))
    pump.pump()
    server.transport.loseConnection()
    pump.pump()
    # A late answer from the server: swallowed (transport is None).
    pending[0].callback({"hello": b"late"})
    pending[1].errback(Declared("late error"))
    state(trace, "S", server)
    state(trace, "C", client)


def test_connection_lost_then_late_answers_swallowed():
    same(scenario_connection_lost_over_pump)


# ---- §1.7 / §6.8: protocol switching -----------------------------------------------


def scenario_switch_command(ns, trace, trailing):
    client, server = ns.Peer(trace, "C"), ns.Peer(trace, "S")
    pump = Pump(trace, client, server)
    factory = InnerFactory(trace, "C")
    trace.watch("C SwitchIt", client.callRemote(SwitchIt, factory, name=b"x"), consume=False)
    # Locked right after sending: AMP traffic raises synchronously.
    trace.call("C callRemote while locked", client.callRemote, Hello, hello=b"no")
    trace.call("C sendBox while locked", client.sendBox, amp.AmpBox(a=b"b"))
    if trailing:
        # Raw bytes after the switch box, in the same chunk the server gets.
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


@pytest.mark.parametrize("trailing", [b"", b"\x00\x00raw bytes", b"\x00\x03abc\x00\x00"])
def test_protocol_switch_command(trailing):
    same(scenario_switch_command, trailing)


def scenario_switch_failure(ns, trace):
    client, server = ns.Peer(trace, "C"), ns.Peer(trace, "S")
    pump = Pump(trace, client, server)
    server.hooks["SwitchIt"] = _raise(Declared("undeclared for SwitchIt"))
    factory = InnerFactory(trace, "C")
    trace.watch("C SwitchIt", client.callRemote(SwitchIt, factory, name=b"x"))
    pump.pump(disconnect=False)
    # Unlocked again after the failure: traffic works.
    trace.watch("C Hello", client.callRemote(Hello, hello=b"after"))
    pump.pump()


def test_protocol_switch_failure_unlocks():
    same(scenario_switch_failure)


def make_switcher(ns):
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


def scenario_switch_in_ampBoxReceived(ns, trace, trailing):
    proto, transport = single(ns, trace, make_switcher(ns))
    d = proto.callRemote(Hello, hello=b"pending")
    trace.watch("pending", d)
    chunk = wire(ask(b"1", b"Hello", hello=b"before"), {b"switch": b"now"}) + trailing
    feed(trace, proto, chunk)
    trace.add("innerProtocol set", proto.innerProtocol is proto.inner)
    feed(trace, proto, b"")
    feed(trace, proto, b"\x00\x00later bytes")
    trace.call("sendBox", proto.sendBox, amp.AmpBox(a=b"b"))
    trace.call("callRemote", proto.callRemote, Hello, hello=b"x")
    trace.call("callRemote no answer", proto.callRemote, NoAnswer, x=1)
    trace.call("unlock", proto._unlockFromSwitch)
    trace.call("connectionLost", proto.connectionLost, lost())
    state(trace, "end", proto)


@pytest.mark.parametrize(
    "trailing",
    [b"", b"x", b"\x00\x00", wire(ask(b"2", b"Hello", hello=b"after")), b"\x00\x05he"],
)
def test_switch_inside_ampBoxReceived(trailing):
    stock = same(scenario_switch_in_ampBoxReceived, trailing)
    inner_data = [e[2] for e in stock if e[1:2] == ("inner dataReceived",)]
    # An empty remainder means no call; later data, even b"", is forwarded.
    assert inner_data == [trailing] * bool(trailing) + [b"", b"\x00\x00later bytes"]


def scenario_lock_then_ask(ns, trace):
    proto, transport = single(ns, trace, make_switcher(ns))
    chunk = wire({b"switch": b"lock"}, ask(b"1", b"Hello", hello=b"locked"),
                 ask(b"2", b"RAW", echo=b"locked"))
    feed(trace, proto, chunk)
    trace.call("unlock", proto._unlockFromSwitch)
    feed(trace, proto, wire(ask(b"3", b"Hello", hello=b"unlocked")))
    state(trace, "end", proto)


def test_answers_while_locked_are_dropped():
    stock = same(scenario_lock_then_ask)
    assert len(writes(stock, "P")) == 1


def scenario_switch_outside_parse_loop(ns, trace, rest):
    # _switchTo outside dataReceived (e.g. a responder's Deferred fired
    # later) hands over C{recvd}: stock's buffered leftover, i.e. the bytes
    # after the last complete length-prefixed *string* (a box's complete
    # keys and values are already consumed into _currentBox).
    proto, transport = single(ns, trace)
    feed(trace, proto, wire(ask(b"1", b"Hello", hello=b"x")) + rest)
    trace.add("recvd outside", proto.recvd)
    proto._lockForSwitch()
    inner = Inner(trace, "P-inner")
    trace.call("_switchTo", proto._switchTo, inner)
    feed(trace, proto, b"more")
    trace.add("repr has inner", " inner " in repr(proto))


@pytest.mark.parametrize("rest", [b"", b"\x00", b"\x00\x05he", b"\x00\x01k\x00\x02v"])
def test_switch_outside_parse_loop_gets_buffered_remainder(rest):
    same(scenario_switch_outside_parse_loop, rest)


# ---- P10 / §6.11: pause and resume -------------------------------------------------


def scenario_pause_resume(ns, trace, where, extra):
    proto, transport = single(ns, trace)

    def raw(self, box):
        trace.add("raw", box[b"echo"])
        if box[b"echo"] == b"pause":
            if where == "stop":
                self.stopProducing()
            else:
                self.pauseProducing()
        return amp.AmpBox(echo=box[b"echo"])

    proto.hooks["RAW"] = raw
    fourth = wire(ask(b"4", b"RAW", echo=b"four"))
    chunk = wire(ask(b"1", b"RAW", echo=b"pause"), ask(b"2", b"RAW", echo=b"two"),
                 ask(b"3", b"RAW", echo=b"three"))
    feed(trace, proto, chunk + fourth[:6])
    trace.add("paused", proto.paused)
    if extra:
        # More data while paused.  Stock's framing loop checks C{paused}
        # before every string, so it only buffers: nothing is dispatched
        # until resumeProducing.
        feed(trace, proto, fourth[6:] + wire(ask(b"5", b"RAW", echo=b"five")))
    trace.add("resuming")
    trace.call("resumeProducing", proto.resumeProducing)
    trace.add("paused", proto.paused)
    if not extra:
        feed(trace, proto, fourth[6:] + wire(ask(b"5", b"RAW", echo=b"five")))
    feed(trace, proto, wire(ask(b"6", b"RAW", echo=b"six")))


@pytest.mark.parametrize("extra", [False, True], ids=["resume", "data-while-paused"])
@pytest.mark.parametrize("where", ["pause", "stop"])
def test_pause_in_handler_stops_after_current_box(where, extra):
    stock = same(scenario_pause_resume, where, extra)
    echoes = [e[1] for e in stock if e[0] == "raw"]
    assert echoes == [b"pause", b"two", b"three", b"four", b"five", b"six"]
    kinds = [e[0] for e in stock]
    second_raw = kinds.index("raw", kinds.index("raw") + 1)
    assert second_raw > kinds.index("resuming")


def scenario_pause_from_answer_callback(ns, trace):
    proto, transport = single(ns, trace)
    d1 = proto.callRemote(Hello, hello=b"1")
    d1.addCallback(lambda r: (trace.add("pause in callback"), proto.pauseProducing(), r)[2])
    trace.watch("d1", d1)
    trace.watch("d2", proto.callRemote(Hello, hello=b"2"))
    feed(trace, proto, wire(answer(b"1", hello=b"a"), answer(b"2", hello=b"b")))
    table(trace, "paused", proto)
    trace.call("resumeProducing", proto.resumeProducing)
    table(trace, "resumed", proto)


def test_pause_from_answer_callback():
    same(scenario_pause_from_answer_callback)


# ---- §6.13 / D7: unknown and duplicate tags, malformed error boxes --------------


TAG_CASES = {
    "unknown-answer": wire(answer(b"ffff", hello=b"x")),
    "unknown-error": wire(error(b"ffff", b"DECLARED", b"d")),
    "duplicate-answer": wire(answer(b"1", hello=b"x"), answer(b"1", hello=b"y")),
    "answer-then-unknown": wire(answer(b"2", hello=b"ok"), answer(b"9", hello=b"no"),
                                answer(b"1", hello=b"never")),
    "error-missing-code": wire({b"_error": b"1", b"_error_description": b"d"}),
    "error-missing-description": wire({b"_error": b"1", b"_error_code": b"DECLARED"}),
    "error-unknown-code": wire(error(b"1", b"WHATEVER", b"d\xffesc")),
    "error-unhandled": wire(error(b"1", b"UNHANDLED", b"not here")),
    "answer-and-command": wire({b"_answer": b"1", b"_command": b"Hello", b"hello": b"a"}),
    "error-and-command": wire({b"_error": b"2", b"_error_code": b"DECLARED",
                               b"_error_description": b"x", b"_command": b"Hello"}),
}


def scenario_tags(ns, trace, case):
    proto, transport = single(ns, trace)
    ds = [proto.callRemote(Hello, hello=b"1"), proto.callRemoteString(b"Hello", hello=b"2")]
    trace.watch("d1", ds[0])
    trace.watch("d2", ds[1])
    feed(trace, proto, TAG_CASES[case])
    state(trace, "after", proto)
    # What a reactor does next (P8): connectionLost with what was raised.
    trace.call("connectionLost", proto.connectionLost, Failure(KeyError(b"ffff")))
    state(trace, "end", proto)


@pytest.mark.parametrize("case", sorted(TAG_CASES))
def test_answer_tags(case):
    stock = same(scenario_tags, case)
    raised = [e for e in stock if e[0] == "raised" and e[1] == "dataReceived"]
    if case.startswith(("unknown", "duplicate", "answer-then", "error-missing")):
        assert [e[2][1] for e in raised] == ["KeyError"]


# ---- D9 / P5: empty boxes ----------------------------------------------------------


def scenario_empty_boxes(ns, trace, case):
    proto, transport = single(ns, trace)
    trace.watch("d1", proto.callRemote(Hello, hello=b"1"))
    if case == "direct":
        trace.call("ampBoxReceived", proto.ampBoxReceived, amp.AmpBox())
        trace.call("ampBoxReceived dict", proto.ampBoxReceived, {b"x": b"y"})
    elif case == "wire":
        feed(trace, proto, wire(answer(b"1", hello=b"a")) + b"\x00\x00")
    elif case == "ask-without-command":
        feed(trace, proto, wire({b"_ask": b"1", b"hello": b"x"}))
    elif case == "unconnected":
        unconnected = ns.base()
        trace.call("unconnected ampBoxReceived", unconnected.ampBoxReceived, amp.AmpBox())
        trace.call("unconnected dataReceived", unconnected.dataReceived, b"\x00\x00")
    state(trace, "end", proto)


@pytest.mark.parametrize("case", ["direct", "wire", "ask-without-command", "unconnected"])
def test_empty_boxes_raise_NoEmptyBoxes(case):
    stock = same(scenario_empty_boxes, case)
    assert any(e[0] == "raised" and e[2][1] == "NoEmptyBoxes" for e in stock)


def scenario_send_odd_boxes(ns, trace):
    proto, transport = single(ns, trace)
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


def test_sendBox_serialization():
    same(scenario_send_odd_boxes)


# ---- P3 / §6.7: over-long key prefix -------------------------------------------------


LONG_KEY_CASES = {
    "init-state": [wire(answer(b"1", hello=b"a")) + b"\x01\x00trailing"],
    "key-state": [wire(answer(b"1", hello=b"a")) + b"\x00\x01k\x00\x01v\x01\x00"],
    "split-prefix": [wire(answer(b"1", hello=b"a")) + b"\x01", b"\x00"],
    "alone": [b"\x01\x00"],
    "255-ok": [b"\x00\xff" + b"k" * 255 + b"\xff\xff" + b"v" * 65535 + b"\x00\x00"],
}


def scenario_long_key(ns, trace, case):
    proto, transport = single(ns, trace)
    trace.watch("d1", proto.callRemote(Hello, hello=b"1"))
    d2 = proto.callRemote(Hello, hello=b"2")
    d2.addErrback(lambda f: trace.add("d2 failed", f.type.__name__, f.value.isKey,
                                      f.value.isLocal, f.value.value, f.value.keyName))
    for chunk in LONG_KEY_CASES[case]:
        feed(trace, proto, chunk)
    trace.add("flag", proto._keyLengthLimitExceeded)
    trace.call("connectionLost", proto.connectionLost, Failure(ConnectionDone()))
    state(trace, "end", proto)


@pytest.mark.parametrize("case", sorted(LONG_KEY_CASES))
def test_overlong_key_prefix(case):
    stock = same(scenario_long_key, case)
    if case != "255-ok":
        assert ("P", "loseConnection") in stock
        assert ("d2 failed", "TooLong", True, False, None, None) in stock


def scenario_long_key_unconnected(ns, trace):
    proto = ns.base()
    trace.call("dataReceived", proto.dataReceived, b"\x01\x00")
    trace.add("flag", proto._keyLengthLimitExceeded)


def test_overlong_key_prefix_without_transport():
    same(scenario_long_key_unconnected)


# ---- D2 / §6.13: tags and overrides --------------------------------------------------


def scenario_tag_sequence(ns, trace):
    proto, transport = single(ns, trace)
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
    table(trace, "end", proto)


def test_tag_sequence():
    stock = same(scenario_tag_sequence)
    tags = [amp.parseString(w)[0].get(b"_ask") for w in writes(stock, "P")]
    expected = [b"%x" % i for i in range(1, 18)] + [None, b"13"]
    assert tags == expected


def scenario_counter_class_default(ns, trace):
    class Counted(ns.Peer):
        _counter = 0x100

    proto, transport = single(ns, trace, Counted)
    trace.add("counter", proto._counter)
    trace.watch("d", proto.callRemote(Hello, hello=b"x"))
    trace.add("counter", proto._counter)


def test_counter_class_attribute_in_subclass():
    # BoxDispatcher._counter is a documented class default (§2.1); a
    # subclass that starts its tags elsewhere by overriding it.
    same(scenario_counter_class_default)


def scenario_nextTag_override(ns, trace):
    class Tagged(ns.Peer):
        n = 0

        def _nextTag(self):
            self.n += 1
            return b"tag-%d" % self.n

    proto, transport = single(ns, trace, Tagged)
    trace.watch("d1", proto.callRemote(Hello, hello=b"x"))
    trace.watch("d2", proto.callRemoteString(b"Hello", hello=b"y"))
    trace.add("no answer", proto.callRemote(NoAnswer, x=1))
    trace.add("counter", proto._counter)
    feed(trace, proto, wire(answer(b"tag-2", hello=b"b"), answer(b"tag-1", hello=b"a")))
    # And as an instance attribute.
    proto._nextTag = lambda: b"instance"
    trace.watch("d4", proto.callRemote(Hello, hello=b"z"))
    table(trace, "end", proto)


def test_nextTag_override():
    same(scenario_nextTag_override)


def scenario_sendBoxCommand_override(ns, trace, level):
    def fake(command, box, requiresAnswer=True):
        trace.add("_sendBoxCommand", command, box, requiresAnswer)
        if requiresAnswer:
            return defer.succeed(amp.AmpBox(hello=b"fake", total=b"3"))
        return None

    class NoNetwork(ns.Peer):
        def _sendBoxCommand(self, command, box, requiresAnswer=True):
            return fake(command, box, requiresAnswer)

    if level == "class":
        proto, transport = single(ns, trace, NoNetwork)
    else:
        proto, transport = single(ns, trace)
        proto._sendBoxCommand = fake
    trace.watch("Hello", proto.callRemote(Hello, hello=b"x"))
    trace.watch("Sum", proto.callRemote(Sum, a=1, b=2))
    trace.add("NoAnswer", proto.callRemote(NoAnswer, x=1))
    trace.watch("raw", proto.callRemoteString(b"Raw", arg=b"v"))
    trace.add("raw no answer", proto.callRemoteString(b"Raw", False, arg=b"v"))
    trace.add("raw kw no answer", proto.callRemoteString(b"Raw", requiresAnswer=0, arg=b"v"))
    state(trace, "end", proto)


@pytest.mark.parametrize("level", ["class", "instance"])
def test_sendBoxCommand_override(level):
    stock = same(scenario_sendBoxCommand_override, level)
    assert writes(stock, "P") == []


def scenario_ampBoxReceived_override(ns, trace, level):
    seen = []

    class Receiver(ns.Peer):
        def ampBoxReceived(self, box):
            trace.add("override", box)
            ns.base.ampBoxReceived(self, box)

    if level == "class":
        proto, transport = single(ns, trace, Receiver)
    else:
        proto, transport = single(ns, trace)
        proto.ampBoxReceived = seen.append
    trace.watch("d", proto.callRemote(Hello, hello=b"x"))
    feed(trace, proto, wire(answer(b"1", hello=b"a"), ask(b"1", b"Hello", hello=b"b")))
    trace.add("seen", seen)
    state(trace, "end", proto)


@pytest.mark.parametrize("level", ["class", "instance"])
def test_ampBoxReceived_override(level):
    same(scenario_ampBoxReceived_override, level)


def scenario_sendBox_instance_override(ns, trace):
    proto, transport = single(ns, trace)
    sent = []
    proto.sendBox = sent.append
    trace.watch("d", proto.callRemote(Hello, hello=b"x"))
    feed(trace, proto, wire(ask(b"1", b"Hello", hello=b"b"), ask(b"2", b"RAW", echo=b"r"),
                            ask(b"3", b"nosuch")))
    trace.add("sent", sent)
    state(trace, "end", proto)


def test_sendBox_instance_override():
    stock = same(scenario_sendBox_instance_override)
    assert writes(stock, "P") == []


def scenario_unhandledError_override(ns, trace, level, raises):
    def handler(failure):
        trace.add("unhandledError", failure)
        if raises:
            raise RuntimeError("unhandledError failed too")

    class Handled(ns.Peer):
        def unhandledError(self, failure):
            handler(failure)

    if level == "class":
        proto, transport = single(ns, trace, Handled)
    else:
        proto, transport = single(ns, trace)
        proto.unhandledError = handler
    proto.hooks["RAW"] = lambda self, box: None
    d = proto.callRemote(Hello, hello=b"x")
    d.addCallback(lambda r: 1 / 0)
    feed(trace, proto, wire(answer(b"1", hello=b"a"), ask(b"1", b"RAW", echo=b"e"),
                            {b"_command": b"nosuch"}))
    trace.watch("d final", d)
    state(trace, "end", proto)


@pytest.mark.parametrize("raises", [False, True], ids=["returns", "raises"])
@pytest.mark.parametrize("level", ["class", "instance"])
def test_unhandledError_override(level, raises):
    same(scenario_unhandledError_override, level, raises)


def scenario_locator_overrides(ns, trace, what):
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
            proto, transport = single(ns, trace, Custom)
        else:
            proto, transport = single(ns, trace)
            c = Custom(trace, "L")
            if what == "instance-locate":
                proto.locateResponder = c.locateResponder
            else:
                proto.dispatchCommand = c.dispatchCommand
        return proto

    proto = make()
    feed(trace, proto, wire(ask(b"1", b"custom"), ask(b"2", b"dispatched"),
                            ask(b"3", b"Hello", hello=b"h"), ask(b"4", b"nosuch")))
    feed(trace, proto, wire(ask(b"5", b"notcallable"), ask(b"6", b"RAW", echo=b"r")))
    state(trace, "end", proto)
    # Each of these raises out of dataReceived; a parser is not resumable
    # after that (P7), so each gets a fresh protocol.
    for chunk in (wire(ask(b"7", b"dispatchnone")), wire(ask(b"8", b"locatorfails"))):
        proto = make()
        feed(trace, proto, chunk)
        state(trace, "end", proto)


@pytest.mark.parametrize("what", ["class", "instance-locate", "instance-dispatch"])
def test_locateResponder_and_dispatchCommand_overrides(what):
    same(scenario_locator_overrides, what)


def scenario_dispatch_hooks_override(ns, trace):
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

    proto, transport = single(ns, trace, Hooked)
    trace.watch("d1", proto.callRemote(Hello, hello=b"x"))
    trace.watch("d2", proto.callRemote(Hello, hello=b"y"))
    feed(trace, proto, wire(answer(b"1", hello=b"a"), error(b"2", b"DECLARED", b"no"),
                            ask(b"1", b"Hello", hello=b"h"), ask(b"2", b"RAW", echo=b"r")))
    state(trace, "end", proto)


def test_dispatch_method_overrides():
    same(scenario_dispatch_hooks_override)


def scenario_separate_receiver_and_locator(ns, trace):
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
    feed(trace, proto, wire(ask(b"1", b"Hello", hello=b"h")))
    proto = ns.Peer(trace, "R", boxReceiver=Receiver())
    connect(proto, trace, "R")
    feed(trace, proto, wire(ask(b"1", b"Hello", hello=b"h")))
    # Its own dispatcher half never got startReceivingBoxes.
    trace.call("callRemote", proto.callRemote, Hello, hello=b"x")
    trace.call("connectionLost", proto.connectionLost, lost())


def test_separate_box_receiver_and_locator():
    same(scenario_separate_receiver_and_locator)


# ---- D4 / §6.9: callRemoteString -------------------------------------------------------


def scenario_callRemoteString(ns, trace):
    proto, transport = single(ns, trace)
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
    table(trace, "before answers", proto)
    feed(trace, proto, wire(
        answer(b"1", hello=b"one", extra=b"kept"),
        answer(b"2", hello=b"two"),
        error(b"3", b"DECLARED", b"declared error"),
        error(b"4", b"UNHANDLED", b"Unhandled Command: b'Hello'"),
        error(b"5", b"\xffCODE", b"bad \xff utf8"),
    ))
    state(trace, "end", proto)


def test_callRemoteString():
    same(scenario_callRemoteString)


def scenario_callRemote_sync_failures(ns, trace):
    proto, transport = single(ns, trace)
    trace.watch("missing arg", proto.callRemote(Hello))
    trace.call("extra arg", proto.callRemote, Hello, hello=b"x", nope=1)
    trace.call("bad type", proto.callRemote, Sum, a="x", b=1)
    trace.call("str value", proto.callRemote, Hello, hello="text")
    trace.call("too long", proto.callRemote, Hello, hello=b"x" * 65536)
    unconnected = ns.base()
    trace.call("before makeConnection", unconnected.callRemote, Hello, hello=b"x")
    trace.call("raw before makeConnection", unconnected.callRemoteString, b"Hello")
    state(trace, "end", proto)


def test_callRemote_synchronous_failures():
    same(scenario_callRemote_sync_failures)


# ---- P1 / P2 / §6.10-11: chunking -----------------------------------------------------


CONVERSATION = [
    ask(b"1", b"Hello", hello=b"one"),
    ask(b"2", b"Sum", a=b"3", b=b"4"),
    ask(b"3", b"RAW", echo=b"raw"),
    ask(b"4", b"nosuch"),
    ask(b"5", b"Hello", hello=b"declared"),
    {b"_command": b"NoAnswer", b"x": b"9"},
    ask(b"6", b"Hello", hello=b"v" * 5000),
    ask(b"7", b"RAW", **{"k" * 255: b"w" * 3000}),
    answer(b"1", hello=b"reply"),
    error(b"2", b"DECLARED", b"declared reply"),
    ask(b"8", b"Hello", hello=b""),
]


def _chunks(data, how):
    if how == "whole":
        return [data]
    if how == "bytes":
        return [data[i:i + 1] for i in range(len(data))]
    rnd = random.Random(how)
    out, i = [], 0
    while i < len(data):
        n = rnd.choice([1, 2, 3, 5, 17, 300, 4096])
        out.append(data[i:i + n])
        i += n
    return out


def scenario_chunking(ns, trace, how):
    proto, transport = single(ns, trace)

    def hello(self, hello):
        if hello == b"declared":
            raise Declared("declared")
        return {"hello": hello[:10]}

    proto.hooks["Hello"] = hello
    trace.watch("d1", proto.callRemote(Hello, hello=b"q1"))
    trace.watch("d2", proto.callRemote(Hello, hello=b"q2"))
    for chunk in _chunks(wire(*CONVERSATION), how):
        try:
            proto.dataReceived(chunk)
        except Exception as e:  # pragma: no cover - recorded, not expected
            trace.add("raised", e)
    state(trace, "end", proto)


@pytest.mark.parametrize("how", ["whole", "bytes", 1, 2, 3])
def test_chunking_does_not_change_the_trace(how):
    stock, core = both(scenario_chunking, how)
    assert core == stock
    # And the trace is that of the whole-chunk run.
    whole = run_scenario(scenario_chunking, CORE, make_classes, "whole")
    assert core == whole


# ---- A1 / A2 / §4.4: lazy init, name, repr ------------------------------------------------


def scenario_lazy_init(ns, trace):
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
    feed(trace, proto, wire(ask(b"1", b"RAW", echo=b"y"), answer(b"1", echo=b"x")))
    # Made by __new__ alone.
    bare = ns.base.__new__(ns.base)
    trace.add("bare initialized", bare._ampInitialized)
    connect(bare, trace, "B")
    trace.watch("bare d", bare.callRemoteString(b"RAW", echo=b"z"))
    feed(trace, bare, wire(answer(b"1", echo=b"z")))
    state(trace, "end", proto)


def test_lazy_init_subclass():
    same(scenario_lazy_init)


def _repr_shape(obj):
    return re.sub(r"0x[0-9a-f]+", "0xADDR", repr(obj))


def test_name_and_repr():
    assert ampcore.AMP.__name__ == "AMP"
    assert ampcore.BoxDispatcher.__name__ == "BoxDispatcher"
    assert ampcore.BinaryBoxProtocol.__name__ == "BinaryBoxProtocol"
    core, stock = ampcore.AMP(), amp.AMP()
    assert re.fullmatch(r"<AMP at 0x[0-9a-f]+>", repr(core))
    assert repr(core) == "<AMP at 0x%x>" % id(core)
    assert _repr_shape(core) == _repr_shape(stock)
    core.innerProtocol = stock.innerProtocol = Protocol()
    assert _repr_shape(core) == _repr_shape(stock)
    assert " inner <twisted.internet.protocol.Protocol object at 0x" in repr(core)
    assert isinstance(core, amp.AMP)
    assert type(core).__mro__.index(amp.AMP) > 0


# ---- BoxDispatcher and BinaryBoxProtocol on their own ---------------------------------------


def scenario_standalone_dispatcher(ns, trace):
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
    trace.call("stop", d.stopReceivingBoxes, lost())
    trace.watch("after stop", d.callRemoteString(b"raw"))
    trace.add("table", d._outstandingRequests, d._counter)


def test_standalone_BoxDispatcher():
    same(scenario_standalone_dispatcher)


def scenario_standalone_binary(ns, trace, chunks):
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
    for chunk in chunks:
        feed(trace, proto, chunk)
    # Between calls recvd is the unconsumed buffer: for stock, the bytes
    # after the last complete string (§1.3 step 4).
    trace.add("recvd", proto.recvd)
    trace.call("sendBox", proto.sendBox, amp.AmpBox(x=b"y"))
    trace.call("unhandledError", proto.unhandledError, Failure(ValueError("v")))
    trace.call("connectionLost", proto.connectionLost, lost())
    # BinaryBoxProtocol.connectionLost leaves the transport set (§6.19).
    trace.add("transport kept", proto.transport is transport)


BINARY_STREAMS = {
    "boxes": [wire({b"a": b"1"}, {b"b": b""}) + b"\x00\x00"],
    "repeated-key": [b"\x00\x01k\x00\x01a\x00\x01k\x00\x01b\x00\x00"],
    "truncated": [wire({b"a": b"1"}) + b"\x00\x01k\x00\x05ab"],
    "long-key": [wire({b"a": b"1"}) + b"\x01\x00"],
}


@pytest.mark.parametrize("stream", sorted(BINARY_STREAMS))
def test_standalone_BinaryBoxProtocol(stream):
    same(scenario_standalone_binary, BINARY_STREAMS[stream])


def scenario_stringReceived_direct(ns, trace):
    class Receiver:
        def startReceivingBoxes(self, sender):
            pass

        def ampBoxReceived(self, box):
            trace.add("box", box)

    proto = ns.BinaryBoxProtocol(Receiver())
    proto.makeConnection(None)
    for s in (b"hello", b"world", b"how", b"are you", b""):
        proto.stringReceived(s)


def test_stringReceived_drives_the_state_machine():
    same(scenario_stringReceived_direct)


# ---- more state-machine corners -----------------------------------------------------


def scenario_requests_from_errbacks_and_double_loss(ns, trace):
    proto, transport = single(ns, trace)
    reason = lost()

    def eb(failure):
        trace.add("errback", failure)
        # The table is gone and the reason stored: new requests fail at once.
        trace.call("callRemote in errback", proto.callRemote, Hello, hello=b"new")
        trace.call("no answer in errback", proto.callRemote, NoAnswer, x=1)
        trace.call("sendBox in errback", proto.sendBox, amp.AmpBox(in_errback=b"1"))

    proto.callRemote(Hello, hello=b"x").addErrback(eb)
    trace.call("connectionLost", proto.connectionLost, reason)
    trace.call("connectionLost again", proto.connectionLost, reason)
    trace.call("failAllOutgoing again", proto.failAllOutgoing, reason)
    state(trace, "end", proto)


def test_requests_from_errbacks_and_double_connection_loss():
    same(scenario_requests_from_errbacks_and_double_loss)


def scenario_tls_buffer(ns, trace):
    # sendBox while TLS is starting keeps the box objects (§1.4).
    proto, transport = single(ns, trace)
    proto._startingTLSBuffer = []
    trace.watch("d", proto.callRemote(Hello, hello=b"buffered"))
    feed(trace, proto, wire(ask(b"1", b"Hello", hello=b"h"), ask(b"2", b"RAW", echo=b"r")))
    buffered = proto._startingTLSBuffer
    trace.add("buffered", buffered)
    buffered[0][b"mutated"] = b"later"
    proto._startingTLSBuffer = None
    for box in buffered:
        trace.call("resend", proto.sendBox, box)
    feed(trace, proto, wire(answer(b"1", hello=b"a")))
    state(trace, "end", proto)


def test_tls_start_buffer():
    same(scenario_tls_buffer)


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


def scenario_box_subclasses(ns, trace):
    RecordingBox.trace = trace
    proto, transport = single(ns, trace)
    trace.watch("custom commandType", proto.callRemote(CustomBoxCommand, v=b"1"))
    trace.call("sendBox serialize override", proto.sendBox, SerializingBox(a=b"b"))
    proto.hooks["RAW"] = lambda self, box: SerializingBox(echo=b"s")
    feed(trace, proto, wire(ask(b"1", b"RAW", echo=b"x")))
    proto.hooks["RAW"] = lambda self, box: RecordingBox(echo=b"r")
    feed(trace, proto, wire(ask(b"2", b"RAW", echo=b"x")))
    state(trace, "end", proto)


def test_box_subclass_hooks_honoured():
    same(scenario_box_subclasses)


def scenario_incomplete_at_close(ns, trace):
    # P6: an unfinished box at connection close is dropped silently.
    proto, transport = single(ns, trace)
    trace.watch("d", proto.callRemote(Hello, hello=b"x"))
    feed(trace, proto, wire(answer(b"1", hello=b"a"))[:-3])
    trace.call("connectionLost", proto.connectionLost, lost())
    state(trace, "end", proto)


def test_incomplete_box_at_close_dropped():
    same(scenario_incomplete_at_close)


# ---- P9: re-entrant dataReceived (ampcore only) ------------------------------------------
#
# Not differential: stock re-parses its whole unconsumed buffer when
# dataReceived is re-entered from a callback and recurses until
# RecursionError (amp-spec P9 calls this undefined).  ampcore must simply
# not crash and must parse the re-entrant bytes after the current chunk.


def test_reentrant_dataReceived_is_queued_after_current_chunk():
    trace = Trace()
    ns = make_classes(ampcore.AMP)
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
    ns = make_classes(ampcore.AMP)

    class Reentrant(ns.Peer):
        depth = 0

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
    # A responder feeding the protocol the answer to a request it just
    # made: the answer is dispatched after the current chunk.
    trace = Trace()
    ns = make_classes(ampcore.AMP)
    proto, transport = single(ns, trace)

    def raw(self, box):
        d = self.callRemote(Hello, hello=b"inner")
        trace.watch("inner d", d)
        self.dataReceived(wire(answer(b"1", hello=b"inner answer")))
        trace.add("after re-entrant feed", list(self._outstandingRequests))
        return amp.AmpBox(echo=b"done")

    proto.hooks["RAW"] = raw
    proto.dataReceived(wire(ask(b"a", b"RAW", echo=b"go"), ask(b"b", b"Hello", hello=b"h")))
    events = [e for e in trace if e[0] in ("fired", "after re-entrant feed")
              or e[1:3] == ("responder", "Hello")]
    assert events == [
        ("after re-entrant feed", (b"1",)),
        ("P", "responder", "Hello", ("dict", (("hello", b"h"),))),
        ("fired", "inner d", ("dict", (("hello", b"inner answer"),))),
    ]
    assert proto._outstandingRequests == {}


def test_reentrant_then_exception_does_not_reorder_the_stream():
    # A handler feeds bytes re-entrantly and then raises out of
    # dataReceived.  Stock's parser is not resumable after an exception
    # (P7), so there is no reference; but ampcore must not reorder the byte
    # stream: the queued bytes arrived before any later chunk, so they may
    # be parsed before it or dropped, never parsed after it.
    trace = Trace()
    ns = make_classes(ampcore.AMP)

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
