"""
Differential scenarios: what becomes of what a responder returns or raises.

Each test is a scenario run on stock C{twisted.protocols.amp.AMP} and on
C{ampcore.AMP} (L{helpers.differential}); the two traces must be equal.
A client asks, a server's responder (a C{Command.responder} or an
C{amp_NAME} method) answers as a hook of the table says, and the trace
shows what went over the wire, what the client's Deferreds got, what was
logged and whether the connection was dropped.
"""

import pytest
from twisted.internet import defer
from twisted.protocols import amp
from twisted.python.failure import Failure

from helpers import (
    Declared,
    Fatal,
    Goodbye,
    Hello,
    NoSuch,
    Pump,
    Undeclared,
    differential,
    loggedFailures,
    needsExtension,
    raising,
    recordState,
    writesOf,
)

pytestmark = needsExtension()


async def _asyncAnswer(value):
    return {"hello": value}


async def _asyncRaise(exc):
    raise exc


# ---- Command responders -----------------------------------------------------------

HELLO_OUTCOMES = {
    "plain": None,
    "declared": raising(Declared("declared failure")),
    "fatal": raising(Fatal("fatal failure")),
    "undeclared": raising(Undeclared("undeclared failure")),
    "remote-error": raising(amp.RemoteAmpError(b"CUSTOM", "custom description")),
    "remote-error-fatal": raising(amp.RemoteAmpError(b"CUSTOM", "fatal custom", fatal=True)),
    "remote-error-bytes-desc": raising(amp.RemoteAmpError(b"CUSTOM", b"raw \xff bytes")),
    "remote-error-surrogate-desc": raising(amp.RemoteAmpError(b"CUSTOM", "caf\u00e9 \ud800")),
    "bad-local-return": lambda self, hello: {},
    "extra-keys-ignored": lambda self, hello: {"hello": hello, "extra": 1},
    "deferred-success": lambda self, hello: defer.succeed({"hello": b"d"}),
    "deferred-declared": lambda self, hello: defer.fail(Declared("deferred declared")),
    "returns-failure": lambda self, hello: Failure(Declared("failure object")),
    "async": lambda self, hello: _asyncAnswer(b"async"),
    "async-raises": lambda self, hello: _asyncRaise(Undeclared("async undeclared")),
    "too-long-answer": lambda self, hello: {"hello": b"x" * 70000},
    "str-answer": lambda self, hello: {"hello": "text"},
    "keyerror": raising(KeyError("x")),
}


def commandOutcomeShows(stock, outcome):
    logged = loggedFailures(stock)
    if outcome in ("undeclared", "async-raises", "bad-local-return", "keyerror"):
        # Twisted >= 24.7 logs with a message; older releases log.err the
        # bare failure.
        message = (
            "while receiving response to command" if hasattr(amp, "_log") else "{log_text}"
        )
        assert logged and all(e[3] == message for e in logged)
    if outcome in ("plain", "declared", "remote-error", "deferred-success"):
        assert logged == []
    # The error boxes stock sends, as BoxDispatcher._commandReceived's
    # formatError makes them: a declared error's code and message, and
    # UNKNOWN for anything else.
    if outcome == "declared":
        first = amp.parseString(writesOf(stock, "S")[0])[0]
        assert first == {b"_error": b"1", b"_error_code": b"DECLARED",
                         b"_error_description": b"declared failure"}
    if outcome == "undeclared":
        first = amp.parseString(writesOf(stock, "S")[0])[0]
        assert first == {b"_error": b"1", b"_error_code": b"UNKNOWN",
                         b"_error_description": b"Unknown Error"}


@pytest.mark.parametrize("outcome", sorted(HELLO_OUTCOMES))
@differential(expect=commandOutcomeShows)
def test_command_responder_outcomes(ns, trace, outcome):
    """
    A Command responder's answer, Deferred, coroutine, declared, fatal or
    undeclared error, or a result the Command cannot serialize: what the
    client's C{callRemote} gets, and its C{callRemoteString}, which gets
    the C{RemoteAmpError} itself where C{callRemote}'s C{_massageError}
    turns it into the Command's declared exception or
    C{UnknownRemoteError}.
    """
    client, server = ns.Peer(trace, "C"), ns.Peer(trace, "S")
    pump = Pump(client, server, trace)
    hook = HELLO_OUTCOMES[outcome]
    if hook is not None:
        server.hooks["Hello"] = hook
    trace.watch("C Hello", client.callRemote(Hello, hello=b"hi"))
    trace.watch("C Hello raw", client.callRemoteString(b"Hello", hello=b"raw"))
    pump.pump()
    recordState(trace, "C", client)
    recordState(trace, "S", server)


@differential
def test_arguments_that_do_not_parse_are_an_UNKNOWN_error(ns, trace):
    """
    An argument that fails to parse, or a missing one: UNKNOWN, logged,
    connection closed.
    """
    client, server = ns.Peer(trace, "C"), ns.Peer(trace, "S")
    pump = Pump(client, server, trace)
    trace.watch("C Sum", client.callRemoteString(b"Sum", a=b"not a number", b=b"1"))
    trace.watch("C Sum missing", client.callRemoteString(b"Sum", a=b"1"))
    pump.pump()
    recordState(trace, "S", server)


def unknownCommandAnsweredUNHANDLED(stock, via):
    if via != "no-answer":
        box = amp.parseString(writesOf(stock, "S")[0])[0]
        assert box[b"_error_code"] == b"UNHANDLED"
        assert box[b"_error_description"] == b"Unhandled Command: b'nosuch'"


@pytest.mark.parametrize("via", ["callRemote", "callRemoteString", "no-answer"])
@differential(expect=unknownCommandAnsweredUNHANDLED)
def test_unknown_command_is_answered_UNHANDLED(ns, trace, via):
    """
    A command nobody responds to gets an UNHANDLED error box; sent without
    C{_ask}, there is nothing to answer: it is logged and the connection
    dropped.
    """
    client, server = ns.Peer(trace, "C"), ns.Peer(trace, "S")
    pump = Pump(client, server, trace)
    if via == "callRemote":
        trace.watch("C NoSuch", client.callRemote(NoSuch))
    elif via == "callRemoteString":
        trace.watch("C nosuch", client.callRemoteString(b"nosuch", arg=b"x"))
    else:
        trace.watch("C nosuch", client.callRemoteString(b"nosuch", requiresAnswer=False))
    pump.pump()
    recordState(trace, "C", client)
    recordState(trace, "S", server)


@differential
def test_QuitBox_response_closes_the_connection_after_the_answer(ns, trace):
    client, server = ns.Peer(trace, "C"), ns.Peer(trace, "S")
    pump = Pump(client, server, trace)
    trace.watch("C Goodbye", client.callRemote(Goodbye))
    trace.watch("C Hello after", client.callRemote(Hello, hello=b"after"))
    pump.pump()
    recordState(trace, "C", client)
    recordState(trace, "S", server)


@differential
def test_asks_after_a_fatal_error_in_the_same_chunk_are_still_answered(ns, trace):
    """
    Several asks in one chunk; the first kills the connection with a fatal
    error: the rest are still dispatched and answered (the transport is
    only "disconnecting").
    """
    client, server = ns.Peer(trace, "C"), ns.Peer(trace, "S")
    pump = Pump(client, server, trace)

    def hello(self, hello):
        if hello == b"1":
            raise Fatal("first")
        return {"hello": hello}

    server.hooks["Hello"] = hello
    for i in (1, 2, 3):
        trace.watch("C %d" % i, client.callRemote(Hello, hello=b"%d" % i))
    pump.pump()
    recordState(trace, "C", client)


# ---- low-level (amp_NAME) responders ---------------------------------------------------


class BrokenBox(amp.AmpBox):
    def _sendTo(self, proto):
        raise RuntimeError("cannot send this box")


class BaseBoom(BaseException):
    pass


_SHARED = {}


def _laterFailure(self):
    d = defer.Deferred()
    _SHARED.setdefault("later", []).append((d, "fail"))
    return d


def _laterAnswer(self):
    d = defer.Deferred()
    _SHARED.setdefault("later", []).append((d, "answer"))
    return d


def _sharedBox(self, box):
    shared = _SHARED.setdefault(self.label, amp.AmpBox(echo=b"shared"))
    return shared


def _dropAsk(self, box):
    del box[b"_ask"]
    return amp.AmpBox(echo=b"no ask")


def _changeAsk(self, box):
    box[b"_ask"] = b"changed"
    return amp.AmpBox(echo=b"changed ask")


async def _asyncBox():
    return amp.AmpBox(echo=b"async")


RAW_OUTCOMES = {
    "box": None,
    "none": lambda self, box: None,
    "plain-dict": lambda self, box: {b"echo": b"dict"},
    "raises": raising(Undeclared("raw failure")),
    "raises-remote": raising(amp.RemoteAmpError(b"RAWERR", "raw remote")),
    "quitbox": lambda self, box: amp.QuitBox(echo=b"quit"),
    "broken-box": lambda self, box: BrokenBox(echo=b"broken"),
    "deferred": lambda self, box: defer.succeed(amp.AmpBox(echo=b"deferred")),
    "deferred-none": lambda self, box: defer.succeed(None),
    "async": lambda self, box: _asyncBox(),
    "failure": lambda self, box: Failure(Undeclared("raw failure object")),
    "shared-box": _sharedBox,
    "drop-ask": _dropAsk,
    "change-ask": _changeAsk,
    "str-value": lambda self, box: amp.AmpBox(echo="text"),
    "int": lambda self, box: 5,
    "generator": lambda self, box: (x for x in ()),
    "async-raises": lambda self, box: _asyncRaise(Undeclared("raw async failure")),
    "base-exception": raising(BaseBoom("not an Exception")),
    "deferred-fails-later": lambda self, box: _laterFailure(self),
    "deferred-answer-later": lambda self, box: _laterAnswer(self),
}


def nonBoxResultsDropTheConnection(stock, outcome):
    if outcome in ("none", "plain-dict", "broken-box", "int"):
        # No box sent; unhandledError logged and dropped the connection.
        assert writesOf(stock, "S") == []
        assert ("S", "loseConnection") in stock


@pytest.mark.parametrize("outcome", sorted(RAW_OUTCOMES))
@differential(expect=nonBoxResultsDropTheConnection)
def test_low_level_responder_outcomes(ns, trace, outcome):
    """
    An C{amp_NAME} responder's box, Deferred, coroutine, error, or a result
    that is no box: the box it answers with is the very object it returned,
    with C{_answer} set on it.
    """
    _SHARED.clear()
    client, server = ns.Peer(trace, "C"), ns.Peer(trace, "S")
    pump = Pump(client, server, trace)
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
    recordState(trace, "C", client)
    recordState(trace, "S", server)


# ---- how an amp_NAME responder is found ------------------------------------------------


@pytest.mark.parametrize(
    "prefix", [b"amp_", b"AMP\x7f_", b"\xffamp_", "amp_", None], ids=repr
)
@differential
def test_amp_name_lookup_by_command_name(ns, trace, prefix):
    """
    SimpleStringLocator.locateResponder: getattr(self,
    nativeString(baseDispatchPrefix + name.upper()), None), for command
    names in any case, with digits and punctuation, non-ASCII bytes (a
    UnicodeDecodeError, an unknown error to the caller), and prefixes that
    are not ASCII, not bytes or not there.
    """
    server = ns.Peer(trace, "S")
    if prefix is not None:
        server.baseDispatchPrefix = prefix
    for attribute in ("amp_ECHO2", "amp_E_CHO", "AMP\x7f_ECHO", "amp_ÉCHO", "amp_9"):
        setattr(server, attribute, lambda box, n=attribute: amp.AmpBox(found=n.encode("utf-8")))
    client = ns.Peer(trace, "C")
    pump = Pump(client, server, trace)
    for name in (b"echo2", b"Echo2", b"e_cho", b"ECHO", b"9", b"\xc3\xa9cho", b"ech\xffo", b""):
        trace.watch(name, client.callRemoteString(name, x=b"1"))
    pump.pump(disconnect=False)
    recordState(trace, "end", server)
