"""
callRemote's C fast path (ampcore/client.h), against stock Twisted.

For a Command whose construction, C{_doCommand}, C{makeArguments} and
C{parseResponse} are Command's own, ampcore codes the arguments in C, sends
the box and, when the answer (or an error box, or the loss of the
connection) arrives, fires the Deferred from C with the parsed response or
with what C{Command._doCommand}'s C{_massageError} would have made of the
failure.  Each test here is a differential scenario (L{helpers.differential}):
a client calls, a fake peer's bytes are fed to it (L{feed}, L{wire}), and the
trace of what was written, what the Deferreds got, what was logged and the
dispatcher's state must be the same on stock C{amp.AMP} and C{ampcore.AMP}.

The argument coding itself is compared operation by operation in
test_command_coding.py; here it is the whole call that is compared.
"""

import decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from helpers import (
    Declared,
    Fatal,
    Hello,
    NoAnswer,
    answerBox,
    askBox,
    connectedPeer,
    differential,
    errorBox,
    feed,
    loggedFailures,
    lostReason,
    needsExtension,
    recordState,
    recordTable,
    runBoth,
    wire,
    writesOf,
)

pytestmark = needsExtension()


# ---- the Commands -------------------------------------------------------------------


def everyKind(optional=False):
    """One argument of each kind coded in C, and an optional one."""
    return [
        (b"i", amp.Integer(optional=optional)),
        (b"s", amp.String(optional=optional)),
        (b"u", amp.Unicode(optional=optional)),
        (b"b", amp.Boolean(optional=optional)),
        (b"f", amp.Float(optional=optional)),
        (b"li", amp.ListOf(amp.Integer(), optional=optional)),
        (b"lu", amp.ListOf(amp.Unicode(), optional=optional)),
        (
            b"al",
            amp.AmpList(
                [(b"x", amp.Integer()), (b"y", amp.Unicode(optional=True))],
                optional=optional,
            ),
        ),
        (b"opt", amp.String(optional=True)),
    ]


class Everything(amp.Command):
    arguments = everyKind()
    response = everyKind()
    errors = {Declared: b"DECLARED"}
    fatalErrors = {Fatal: b"FATAL"}


CODED = []  # what the user Argument below was asked to do


class Recorded(amp.Argument):
    """A user Argument, coded by its own methods: records each call."""

    def toString(self, inObject):
        CODED.append(("toString", inObject))
        return repr(inObject).encode("ascii")

    def fromString(self, inString):
        CODED.append(("fromString", inString))
        return ("parsed", inString)


class Mixed(amp.Command):
    """Arguments coded in C and arguments coded by stock's or a user's code."""

    arguments = [
        (b"a", amp.Integer()),
        (b"path", amp.Path()),
        (b"dec", amp.Decimal()),
        (b"rec", Recorded()),
        (b"z", amp.Unicode()),
        (b"rows", amp.AmpList([(b"q", amp.Integer()), (b"r", Recorded(optional=True))])),
    ]
    response = arguments
    errors = {Declared: b"DECLARED"}


# ---- wire helpers -----------------------------------------------------------------------


def listOf(*strings):
    """A ListOf value on the wire: the strings, each with a 2-byte length."""
    return b"".join(len(s).to_bytes(2, "big") + s for s in strings)


def ampList(*boxes):
    """An AmpList value on the wire: serialized boxes back to back."""
    return wire(*boxes)


GOOD_OBJECTS = {
    "i": 7,
    "s": b"bytes",
    "u": "caf\u00e9",
    "b": True,
    "f": 1.5,
    "li": [1, -2],
    "lu": ["a", "\u00e9"],
    "al": [{"x": 1, "y": "why"}, {"x": 2}],
    "opt": b"here",
}

GOOD_STRINGS = {
    "i": b"7",
    "s": b"bytes",
    "u": "caf\u00e9".encode(),
    "b": b"True",
    "f": b"1.5",
    "li": listOf(b"1", b"-2"),
    "lu": listOf(b"a", "\u00e9".encode()),
    "al": ampList({b"x": b"1", b"y": b"why"}, {b"x": b"2"}),
    "opt": b"here",
}


def call(trace, label, proto, command, **kw):
    """callRemote, recording whether it returned (and what fired) or raised."""
    return trace.call(label, proto.callRemote, command, **kw)


# ---- arguments of each kind ---------------------------------------------------------------

ARGUMENT_CASES = {
    "all-kinds": GOOD_OBJECTS,
    "optional-absent": {k: v for k, v in GOOD_OBJECTS.items() if k != "opt"},
    "optional-None": dict(GOOD_OBJECTS, opt=None),
    "big-and-negative-integers": dict(GOOD_OBJECTS, i=-(2**70), li=[0, 2**64, -1]),
    "bool-subclass-and-int-as-Integer": dict(GOOD_OBJECTS, i=True, li=[False, 3]),
    "empty-values": dict(GOOD_OBJECTS, s=b"", u="", li=[], lu=[], al=[]),
    "unicode-astral-and-surrogate": dict(GOOD_OBJECTS, u="\U0001f600", lu=["\ud800"]),
    "boolean-false-and-truthy": dict(GOOD_OBJECTS, b=False),
    "boolean-non-bool": dict(GOOD_OBJECTS, b=[1]),
    "float-nan-inf-negzero": dict(GOOD_OBJECTS, f=float("nan")),
    "float-given-int": dict(GOOD_OBJECTS, f=3),
    "float-negative-zero": dict(GOOD_OBJECTS, f=-0.0),
    "float-inf": dict(GOOD_OBJECTS, f=float("-inf")),
    "listof-tuple": dict(GOOD_OBJECTS, li=(4, 5), lu=("x",)),
    "amplist-extra-keys-in-rows": dict(GOOD_OBJECTS, al=[{"x": 1, "extra": 2}]),
    "string-at-the-length-limit": dict(GOOD_OBJECTS, s=b"x" * 0xFFFF),
    "string-over-the-length-limit": dict(GOOD_OBJECTS, s=b"x" * 0x10000),
    "amplist-row-missing-required": dict(GOOD_OBJECTS, al=[{"y": "no x"}]),
}


def argumentsWereSent(stock, case):
    writes = writesOf(stock, "P")
    if stock[1][0] == "raised":
        # A value its argument cannot code (which ones depends on Twisted's
        # release): raised out of callRemote, nothing written.
        assert writes == [] and case not in ("all-kinds", "optional-absent")
        return
    box = amp.parseString(writes[0])[0]
    assert box[b"_command"] == b"Everything" and box[b"_ask"] == b"1"
    if case == "all-kinds":
        expected = dict(GOOD_STRINGS)
        assert {k.decode(): v for k, v in box.items() if not k.startswith(b"_")} == expected
    if case == "optional-None":
        assert b"opt" not in box


@pytest.mark.parametrize("case", sorted(ARGUMENT_CASES))
@differential(expect=argumentsWereSent)
def test_each_argument_kind_is_sent_and_the_answer_parsed(ns, trace, case):
    """
    Every argument kind coded in C, with edge values, optional arguments
    absent and None; then a good answer (carrying every kind) comes back.
    """
    proto, transport = connectedPeer(ns, trace)
    d = call(trace, "call", proto, Everything, **ARGUMENT_CASES[case])
    recordTable(trace, "sent", proto)
    feed(trace, proto, wire(answerBox(b"1", **GOOD_STRINGS)))
    recordState(trace, "end", proto)
    trace.add("returned a Deferred", d is not None)


# ---- answers fed by a fake peer ------------------------------------------------------------


def without(key):
    return {k: v for k, v in GOOD_STRINGS.items() if k != key}


ANSWERS = {
    "good": answerBox(b"1", **GOOD_STRINGS),
    "missing-required-key": answerBox(b"1", **without("i")),
    "missing-optional-key": answerBox(b"1", **without("opt")),
    "missing-amplist": answerBox(b"1", **without("al")),
    "extra-keys": answerBox(b"1", extra=b"x", _other=b"y", **GOOD_STRINGS),
    "only-the-tag": answerBox(b"1"),
    "integer-not-numeric": answerBox(b"1", **dict(GOOD_STRINGS, i=b"12x")),
    "integer-with-spaces": answerBox(b"1", **dict(GOOD_STRINGS, i=b" 12 ")),
    "integer-underscore": answerBox(b"1", **dict(GOOD_STRINGS, i=b"1_0")),
    "unicode-invalid-utf8": answerBox(b"1", **dict(GOOD_STRINGS, u=b"\xff")),
    "unicode-surrogate-utf8": answerBox(b"1", **dict(GOOD_STRINGS, u=b"\xed\xa0\x80")),
    "boolean-neither": answerBox(b"1", **dict(GOOD_STRINGS, b=b"true")),
    "boolean-empty": answerBox(b"1", **dict(GOOD_STRINGS, b=b"")),
    "float-not-numeric": answerBox(b"1", **dict(GOOD_STRINGS, f=b"one")),
    "float-overflows-to-inf": answerBox(b"1", **dict(GOOD_STRINGS, f=b"1e400")),
    "listof-truncated": answerBox(b"1", **dict(GOOD_STRINGS, li=b"\x00\x05ab")),
    "listof-bad-element": answerBox(b"1", **dict(GOOD_STRINGS, li=listOf(b"1", b"x"))),
    "listof-odd-byte": answerBox(b"1", **dict(GOOD_STRINGS, lu=b"\x00")),
    "listof-bad-utf8-element": answerBox(b"1", **dict(GOOD_STRINGS, lu=listOf(b"\xc3"))),
    "amplist-truncated": answerBox(b"1", **dict(GOOD_STRINGS, al=b"\x00\x01x\x00\x011")),
    "amplist-bad-element": answerBox(
        b"1", **dict(GOOD_STRINGS, al=ampList({b"x": b"not int"}))
    ),
    "amplist-missing-element-key": answerBox(
        b"1", **dict(GOOD_STRINGS, al=ampList({b"y": b"no x"}))
    ),
    "amplist-overlong-key": answerBox(
        b"1", **dict(GOOD_STRINGS, al=b"\x01\x00" + b"k" * 300)
    ),
    "error-declared": errorBox(b"1", b"DECLARED", b"it was declared"),
    "error-fatal-declared": errorBox(b"1", b"FATAL", b"it was fatal"),
    "error-unknown-code": errorBox(b"1", b"WHAT", b"nobody declared this"),
    "error-UNHANDLED": errorBox(b"1", b"UNHANDLED", b"Unhandled Command: b'Everything'"),
    "error-UNKNOWN": errorBox(b"1", b"UNKNOWN", b"Unknown Error"),
    "error-description-not-utf8": errorBox(b"1", b"DECLARED", b"caf\xe9 \xff"),
    "error-without-code": {b"_error": b"1", b"_error_description": b"no code"},
    "error-without-description": {b"_error": b"1", b"_error_code": b"DECLARED"},
    "answer-and-error-keys": {**errorBox(b"1", b"DECLARED", b"x"), b"_answer": b"1"},
    "answer-for-an-unknown-tag": answerBox(b"99", **GOOD_STRINGS),
    "error-for-an-unknown-tag": errorBox(b"99", b"DECLARED", b"x"),
}


def answerShows(stock, answer):
    fired = [e for e in stock if e[0] == "fired"]
    if answer == "good":
        assert fired[0][2][0] == "dict"
    if answer == "error-declared":
        assert fired[0][2] == ("Failure", ("exc", "Declared", "it was declared",
                                           ("it was declared",), ()))
    if answer in ("error-unknown-code", "error-UNKNOWN"):
        assert fired[0][2][1][1] == "UnknownRemoteError"
    if answer == "error-UNHANDLED":
        # A protocol error, UnhandledCommand, is no RemoteAmpError: it
        # passes _massageError's trap as it is.
        assert fired[0][2][1][1] == "UnhandledCommand"
    if answer == "integer-not-numeric":
        assert fired[0][2][1][1] == "ValueError"
    if answer == "answer-for-an-unknown-tag":
        assert any(e[0] == "raised" and e[2][1] == "KeyError" for e in stock)


@pytest.mark.parametrize("answer", sorted(ANSWERS))
@differential(expect=answerShows)
def test_answer_boxes_from_the_peer(ns, trace, answer):
    """
    A good answer, answers with missing, extra or undecodable values, error
    boxes with declared, fatal, unknown and protocol codes, and replies for
    a tag nobody asked with: what callRemote's Deferred fires with (the
    parsed response, parseResponse's error, or the declared exception /
    UnknownRemoteError of C{_massageError}), what is logged, and the table
    of outstanding requests afterwards.  A second call, answered well, shows
    the connection still works.
    """
    proto, transport = connectedPeer(ns, trace)
    call(trace, "call", proto, Everything, **GOOD_OBJECTS)
    call(trace, "second", proto, Everything, **GOOD_OBJECTS)
    feed(trace, proto, wire(ANSWERS[answer]))
    recordState(trace, "after", proto)
    if answer.endswith("unknown-tag") or answer in (
        "error-without-code", "error-without-description"
    ):
        # The failing delivery above left stock's Int16StringReceiver mid-way.
        return
    feed(trace, proto, wire(answerBox(b"2", **GOOD_STRINGS)))
    recordState(trace, "end", proto)


@differential
def test_several_answers_in_one_chunk_out_of_order(ns, trace):
    proto, transport = connectedPeer(ns, trace)
    for label in ("one", "two", "three", "four"):
        call(trace, label, proto, Everything, **GOOD_OBJECTS)
    feed(trace, proto, wire(
        errorBox(b"3", b"DECLARED", b"third"),
        answerBox(b"2", **dict(GOOD_STRINGS, i=b"2")),
        answerBox(b"4", **dict(GOOD_STRINGS, u=b"\xff")),
        answerBox(b"1", **GOOD_STRINGS),
    ))
    recordState(trace, "end", proto)


@differential
def test_a_second_answer_for_the_same_tag(ns, trace):
    """The first answer fires the Deferred; the second is a KeyError."""
    proto, transport = connectedPeer(ns, trace)
    call(trace, "call", proto, Everything, **GOOD_OBJECTS)
    feed(trace, proto, wire(answerBox(b"1", **GOOD_STRINGS)))
    feed(trace, proto, wire(errorBox(b"1", b"DECLARED", b"late")))
    recordState(trace, "end", proto)


# ---- generated answers ----------------------------------------------------------------

JUNK = st.sampled_from([
    b"", b"12x", b"-0", b"007", b"\xff", b"True", b"False", b"nan", b"-inf",
    b"1e500", b"\x00\x01", b"\x00\x05ab", b"\x00\x00\x00", b"\x00\x01x\x00\x01",
    b"\xc3", b"\x01\x00" + b"k" * 40, listOf(b"1", b"2"), ampList({b"x": b"1"}),
])


@st.composite
def answerBoxes(draw):
    """An answer (or error) box for tag 1: good values, some dropped or spoiled."""
    if draw(st.integers(0, 5)) == 0:
        code = draw(st.sampled_from([b"DECLARED", b"FATAL", b"UNKNOWN", b"UNHANDLED", b"X"]))
        return errorBox(b"1", code, draw(st.binary(max_size=8)))
    values = {}
    for key, good in GOOD_STRINGS.items():
        action = draw(st.sampled_from(["good", "good", "good", "drop", "junk"]))
        if action == "good":
            values[key] = good
        elif action == "junk":
            values[key] = draw(JUNK | st.binary(max_size=6))
    if draw(st.booleans()):
        values[draw(st.sampled_from(["extra", "I", "al2"]))] = draw(st.binary(max_size=4))
    return answerBox(b"1", **values)


def answeredScenario(ns, trace, box):
    proto, transport = connectedPeer(ns, trace)
    call(trace, "call", proto, Everything, **GOOD_OBJECTS)
    feed(trace, proto, wire(box))
    recordState(trace, "end", proto)


@given(answerBoxes())
@example(answerBox(b"1", **dict(GOOD_STRINGS, li=b"\x00\x01x\x00\x01")))
@example(errorBox(b"1", b"FATAL", b"\xff"))
def test_generated_answers(box):
    stock, core = runBoth(answeredScenario, box)
    assert core == stock


def objectsFor(arglist):
    """A strategy: keyword arguments for callRemote, good or not."""
    values = {
        amp.Integer: st.integers() | st.sampled_from([True, "12", 1.5, None, b"1"]),
        amp.String: st.binary(max_size=8) | st.sampled_from(["text", 5]),
        amp.Unicode: st.text(max_size=8) | st.sampled_from([b"bytes", 5]),
        amp.Boolean: st.booleans() | st.sampled_from([0, "", [1], None]),
        amp.Float: st.floats() | st.sampled_from([1, "1.5", None]),
    }

    def valueOf(arg):
        if isinstance(arg, amp.ListOf):
            return st.lists(valueOf(arg.elementType), max_size=3)
        if isinstance(arg, amp.AmpList):
            return st.lists(objectsFor(arg.subargs), max_size=2)
        return values[type(arg)]

    @st.composite
    def objects(draw):
        kw = {}
        for name, arg in arglist:
            if draw(st.integers(0, 9)) > 0:
                kw[amp._wireNameToPythonIdentifier(name)] = draw(valueOf(arg))
        if draw(st.integers(0, 9)) == 0:
            kw["unexpected"] = 1
        return kw

    return objects()


def calledScenario(ns, trace, kw):
    proto, transport = connectedPeer(ns, trace)
    call(trace, "call", proto, Everything, **kw)
    recordState(trace, "sent", proto)
    feed(trace, proto, wire(answerBox(b"1", **GOOD_STRINGS)))
    recordState(trace, "end", proto)


@given(objectsFor(Everything.arguments))
def test_generated_arguments(kw):
    """Generated keyword arguments, some missing, wrongly typed or unexpected."""
    stock, core = runBoth(calledScenario, kw)
    assert core == stock


# ---- connection loss and failAllOutgoing ---------------------------------------------------

REASONS = {
    "connection-lost": lostReason,
    "connection-done": lambda: Failure(ConnectionDone("done")),
    "remote-declared": lambda: Failure(amp.RemoteAmpError(b"DECLARED", "declared reason")),
    "remote-fatal": lambda: Failure(amp.RemoteAmpError(b"FATAL", "fatal reason", fatal=True)),
    "remote-unknown-code": lambda: Failure(amp.RemoteAmpError(b"NOPE", "unknown code")),
    "remote-protocol-error": lambda: Failure(amp.UnhandledCommand(b"UNHANDLED", "protocol")),
}

# failAllOutgoing is also called with what is no Failure (Deferred.errback
# wraps it); connectionLost needs a Failure before it gets that far.
DIRECT_REASONS = dict(
    REASONS,
    **{
        "bare-remote-error": lambda: amp.RemoteAmpError(b"DECLARED", "not a Failure"),
        "bare-other-exception": lambda: ValueError("not a Failure either"),
    },
)


def outstandingFailed(stock, reason):
    fired = [e for e in stock if e[0] == "fired"]
    assert len(fired) >= 4
    if reason == "remote-declared":
        # _massageError turns the RemoteAmpError into the declared exception.
        assert fired[0][2][1][1] == "Declared"
    if reason == "connection-lost":
        assert fired[0][2][1][1] == "ConnectionLost"


@pytest.mark.parametrize("reason", sorted(REASONS))
@differential(expect=outstandingFailed)
def test_connection_lost_with_calls_outstanding(ns, trace, reason):
    """
    Several calls outstanding (of Commands coded in C and not, and a raw
    callRemoteString) when the connection goes: each Deferred fails with
    what C{_massageError} makes of the reason, in tag order; calls made
    afterwards fail the same way without sending anything, and errors of
    the call itself still come first.
    """
    proto, transport = connectedPeer(ns, trace)
    call(trace, "Everything", proto, Everything, **GOOD_OBJECTS)
    call(trace, "Hello", proto, Hello, hello=b"x")
    call(trace, "Mixed", proto, Mixed, **MIXED_OBJECTS)
    trace.watch("raw", proto.callRemoteString(b"Hello", hello=b"raw"))
    call(trace, "NoAnswer", proto, NoAnswer, x=1)
    recordTable(trace, "before", proto)
    trace.call("connectionLost", proto.connectionLost, REASONS[reason]())
    recordState(trace, "after", proto)
    call(trace, "after: Everything", proto, Everything, **GOOD_OBJECTS)
    call(trace, "after: NoAnswer", proto, NoAnswer, x=2)
    call(trace, "after: missing argument", proto, Everything, i=1)
    call(trace, "after: unknown argument", proto, Everything, nope=1, **GOOD_OBJECTS)
    call(trace, "after: bad value", proto, Everything, **dict(GOOD_OBJECTS, i="x"))
    feed(trace, proto, wire(answerBox(b"1", **GOOD_STRINGS)))
    recordState(trace, "end", proto)


def directFailed(stock, reason):
    fired = [e for e in stock if e[0] == "fired"]
    assert [e[1] for e in fired] == ["one", "two", "three"]
    if reason == "bare-remote-error":
        assert fired[0][2][1][1] == "Declared"


@pytest.mark.parametrize("reason", sorted(DIRECT_REASONS))
@differential(expect=directFailed)
def test_failAllOutgoing_called_directly(ns, trace, reason):
    """failAllOutgoing without a connection loss: the transport stays."""
    proto, transport = connectedPeer(ns, trace)
    call(trace, "one", proto, Everything, **GOOD_OBJECTS)
    call(trace, "two", proto, Everything, **GOOD_OBJECTS)
    trace.call("failAllOutgoing", proto.failAllOutgoing, DIRECT_REASONS[reason]())
    call(trace, "three", proto, Everything, **GOOD_OBJECTS)
    feed(trace, proto, wire(askBox(b"1", b"Hello", hello=b"still served")))
    recordState(trace, "end", proto)


# ---- requiresAnswer = False ------------------------------------------------------------------


class Quiet(amp.Command):
    arguments = everyKind()
    response = [(b"never", amp.Integer())]
    errors = {Declared: b"DECLARED"}
    requiresAnswer = False


@differential
def test_commands_that_require_no_answer(ns, trace):
    """
    No _ask, None returned, a tag used all the same; an answer or error for
    that tag is a KeyError; argument errors are raised or returned as for
    any Command.
    """
    proto, transport = connectedPeer(ns, trace)
    call(trace, "quiet", proto, Quiet, **GOOD_OBJECTS)
    call(trace, "NoAnswer", proto, NoAnswer, x=3)
    call(trace, "quiet missing", proto, Quiet, i=1)
    call(trace, "quiet unknown", proto, Quiet, bad=1, **GOOD_OBJECTS)
    call(trace, "quiet bad value", proto, Quiet, **dict(GOOD_OBJECTS, u=b"bytes"))
    call(trace, "asks", proto, Everything, **GOOD_OBJECTS)
    recordState(trace, "sent", proto)
    feed(trace, proto, wire(answerBox(b"3", **GOOD_STRINGS)))
    recordState(trace, "answered", proto)
    trace.call("connectionLost", proto.connectionLost, lostReason())
    call(trace, "quiet after loss", proto, Quiet, **GOOD_OBJECTS)
    recordState(trace, "end", proto)


# ---- callbacks, before and after the answer ---------------------------------------------------


def chainOrder(trace, label):
    """Callbacks that record, in order, what each sees, and pass on a mark."""

    def seen(name):
        def callback(result):
            trace.add("saw", label, name, result)
            if isinstance(result, Failure):
                return ("handled", name)
            return (name, result)

        return callback

    return seen


@pytest.mark.parametrize("reply", ["answer", "declared", "undecodable", "connection-lost"])
@differential
def test_callbacks_added_before_and_after_the_reply(ns, trace, reply):
    """
    Callbacks and errbacks added before the reply arrives and after: each
    sees, in the order added, the parsed response (or the massaged
    failure) and then what the previous one returned.
    """
    proto, transport = connectedPeer(ns, trace)
    d = proto.callRemote(Everything, **GOOD_OBJECTS)
    seen = chainOrder(trace, "d")
    d.addCallback(seen("callback before"))
    d.addErrback(seen("errback before"))
    d.addBoth(seen("both before"))
    trace.add("fed")
    if reply == "answer":
        feed(trace, proto, wire(answerBox(b"1", **GOOD_STRINGS)))
    elif reply == "declared":
        feed(trace, proto, wire(errorBox(b"1", b"DECLARED", b"no")))
    elif reply == "undecodable":
        feed(trace, proto, wire(answerBox(b"1", **dict(GOOD_STRINGS, b=b"maybe"))))
    else:
        trace.call("connectionLost", proto.connectionLost, lostReason())
    d.addBoth(seen("both after"))
    d.addCallback(seen("callback after"))
    recordState(trace, "end", proto)


def raisedWhere(stock, when):
    collected = stock[-1][1]
    if when == "before":
        assert loggedFailures(stock) and ("P", "loseConnection") in stock
    else:
        assert not loggedFailures(stock) and collected


@pytest.mark.parametrize("when", ["before", "after"])
@differential(expect=raisedWhere)
def test_a_callback_that_raises(ns, trace, when):
    """
    A callback added before the answer that raises goes to unhandledError
    (logged, connection dropped); one added after the answer leaves the
    Deferred failed (reported when collected).
    """
    proto, transport = connectedPeer(ns, trace)
    d = proto.callRemote(Everything, **GOOD_OBJECTS)

    def boom(result):
        trace.add("boom saw", result)
        raise ZeroDivisionError("boom")

    if when == "before":
        d.addCallback(boom)
    feed(trace, proto, wire(answerBox(b"1", **GOOD_STRINGS)))
    if when == "after":
        d.addCallback(boom)
    del d
    recordState(trace, "end", proto)


@differential
def test_unhandled_error_answer_is_logged_and_drops_the_connection(ns, trace):
    """An error nobody handles reaches unhandledError: logged, connection dropped."""
    proto, transport = connectedPeer(ns, trace)
    proto.callRemote(Everything, **GOOD_OBJECTS)
    proto.callRemote(Everything, **GOOD_OBJECTS)
    feed(trace, proto, wire(errorBox(b"1", b"DECLARED", b"unhandled"),
                            answerBox(b"2", **dict(GOOD_STRINGS, i=b"bad"))))
    recordState(trace, "end", proto)


# ---- the call's own errors --------------------------------------------------------------------

CALL_ERRORS = {
    "missing-required": {"i": 1},
    "missing-everything": {},
    "unknown-argument": dict(GOOD_OBJECTS, unknown=1),
    "missing-and-unknown": {"unknown": 1},
    "wire-name-not-python-name": dict(GOOD_OBJECTS, **{"Opt": b"x"}),
    "integer-given-text": dict(GOOD_OBJECTS, i="seven"),
    "integer-given-numeric-text": dict(GOOD_OBJECTS, i="12"),
    "integer-given-float": dict(GOOD_OBJECTS, i=2.9),
    "integer-given-None": dict(GOOD_OBJECTS, i=None),
    "string-given-str": dict(GOOD_OBJECTS, s="text"),
    "string-given-int": dict(GOOD_OBJECTS, s=5),
    "unicode-given-bytes": dict(GOOD_OBJECTS, u=b"bytes"),
    "float-given-text": dict(GOOD_OBJECTS, f="1.5"),
    "float-given-None": dict(GOOD_OBJECTS, f=None),
    "listof-given-int": dict(GOOD_OBJECTS, li=5),
    "listof-bad-element": dict(GOOD_OBJECTS, li=[1, "x"]),
    "amplist-given-dict": dict(GOOD_OBJECTS, al={"x": 1}),
    "amplist-row-not-a-dict": dict(GOOD_OBJECTS, al=[5]),
    "amplist-row-bad-value": dict(GOOD_OBJECTS, al=[{"x": "nope"}]),
    "required-given-None": dict(GOOD_OBJECTS, s=None),
}


def callErrorShows(stock, case):
    first = next(e for e in stock if e[1] == "call")
    if case.startswith("missing"):
        # Command.__init__ failed: callRemote's `except BaseException: fail()`.
        assert first[0] == "returned"
        fired = next(e for e in stock if e[0] == "fired")
        assert fired[2][1][1] == "InvalidSignature"
    if case == "unknown-argument":
        # makeArguments failed inside _doCommand: raised out of callRemote.
        assert first[0] == "raised" and first[2][1] == "InvalidSignature"


@pytest.mark.parametrize("case", sorted(CALL_ERRORS))
@differential(expect=callErrorShows)
def test_arguments_wrong_at_call_time(ns, trace, case):
    """
    Stock turns an error of C{cmd(**kw)} (a forgotten argument) into a
    failed Deferred, and raises errors of C{makeArguments} (an unknown
    argument, a value its argument cannot code) out of callRemote; in
    neither case is anything sent or a tag used, except where the value
    only fails when the box is serialized.
    """
    proto, transport = connectedPeer(ns, trace)
    call(trace, "call", proto, Everything, **CALL_ERRORS[case])
    recordState(trace, "end", proto)
    call(trace, "next", proto, Hello, hello=b"next")
    recordState(trace, "after next", proto)


class NotACommand:
    def __init__(self, **kw):
        self.kw = kw


ODD_TARGETS = {
    "positional-argument": (Everything, b"positional"),
    "not-a-class": (Everything.makeArguments,),
    "plain-class-without-_doCommand": (NotACommand,),
    "an-instance": (42,),
}


@pytest.mark.parametrize("target", sorted(ODD_TARGETS))
@differential
def test_callRemote_with_odd_targets(ns, trace, target):
    """Positional extras and things that are no Command: stock's own errors."""
    proto, transport = connectedPeer(ns, trace)
    trace.call("call", proto.callRemote, *ODD_TARGETS[target], i=1)
    recordState(trace, "end", proto)


# ---- arguments not coded in C, mixed with ones that are -----------------------------------------

MIXED_OBJECTS = {
    "a": 1,
    "path": FilePath("/nonexistent/ampcore-mixed"),
    "dec": decimal.Decimal("-1.50"),
    "rec": ["any", "object"],
    "z": "zed",
    "rows": [{"q": 1, "r": 2.5}, {"q": 2}],
}
MIXED_ANSWER = {
    "a": b"2",
    "path": b"/tmp/answer",
    "dec": b"3.25",
    "rec": b"r",
    "z": b"\xc3\xa9",
    "rows": ampList({b"q": b"5", b"r": b"x"}, {b"q": b"6"}),
}


def reprs(trace, label, d):
    """Record the parsed values by repr (FilePath, Decimal compare by value)."""

    def record(result):
        if isinstance(result, dict):
            trace.add("values", label, sorted((k, repr(v)) for k, v in result.items()))
        return result

    if d is not None:
        d.addCallback(record)
        trace.watch(label, d)


MIXED_ANSWERS = {
    "good": answerBox(b"1", **MIXED_ANSWER),
    "bad-decimal": answerBox(b"1", **dict(MIXED_ANSWER, dec=b"one")),
    "bad-integer-beside-user-argument": answerBox(b"1", **dict(MIXED_ANSWER, a=b"x")),
    "user-argument-missing": answerBox(b"1", **{k: v for k, v in MIXED_ANSWER.items()
                                                if k != "rec"}),
    "declared-error": errorBox(b"1", b"DECLARED", b"mixed"),
}


def userArgumentWasUsed(stock, answer):
    assert any(e[0] == "coded" and e[1] for e in stock)


@pytest.mark.parametrize("answer", sorted(MIXED_ANSWERS))
@differential(expect=userArgumentWasUsed)
def test_arguments_not_coded_in_C_mixed_in(ns, trace, answer):
    """
    amp.Path, amp.Decimal and a user Argument beside C-coded ones, at
    the top level and inside an AmpList: their own methods are called, in
    stock's order, both ways.
    """
    del CODED[:]
    proto, transport = connectedPeer(ns, trace)
    d = trace.call("call", proto.callRemote, Mixed, **MIXED_OBJECTS)
    reprs(trace, "Mixed", d)
    trace.add("coded", list(CODED))
    del CODED[:]
    feed(trace, proto, wire(MIXED_ANSWERS[answer]))
    trace.add("coded", list(CODED))
    call(trace, "wrong user value", proto, Mixed, **dict(MIXED_OBJECTS, dec="nope"))
    call(trace, "missing user value", proto, Mixed,
         **{k: v for k, v in MIXED_OBJECTS.items() if k != "rec"})
    trace.add("coded", list(CODED))
    recordState(trace, "end", proto)


# ---- known differences: the C path's Deferred has no parseResponse in its chain ----------------

# ampcore's callRemote returns a bare Deferred and parses the answer before
# firing it, where stock's _doCommand chains parseResponse and _massageError
# on it.  Whoever fires that Deferred other than through _answerReceived /
# _errorReceived / failAllOutgoing with its own table entry (by hand, or
# after moving the entry) sees the difference, and so does whoever looks at
# the result of a paused Deferred.


def _firedByHand(proto, trace, d):
    d.callback(amp.AmpBox(hello=b"by hand"))


def _erredByHand(proto, trace, d):
    d.errback(Failure(amp.RemoteAmpError(b"DECLARED", "by hand")))


def _entryMoved(proto, trace, d):
    proto._outstandingRequests[b"moved"] = proto._outstandingRequests.pop(b"1")
    feed(trace, proto, wire(answerBox(b"moved", hello=b"to the moved tag")))


def _entryTakenAndFired(proto, trace, d):
    proto._outstandingRequests.pop(b"1").callback(amp.AmpBox(hello=b"taken"))


def _pausedAnswer(proto, trace, d):
    d.pause()
    feed(trace, proto, wire(answerBox(b"1", hello=b"while paused")))
    trace.add("paused result", d.result)
    d.unpause()


FIRED_ELSEWHERE = {
    "callback-by-hand": _firedByHand,
    "errback-by-hand": _erredByHand,
    "table-entry-moved": _entryMoved,
    "table-entry-taken-and-fired": _entryTakenAndFired,
    "paused-while-answered": _pausedAnswer,
}


@pytest.mark.parametrize("how", sorted(FIRED_ELSEWHERE))
@differential
def test_callRemote_Deferred_fired_other_than_by_its_answer(ns, trace, how):
    proto, transport = connectedPeer(ns, trace)
    d = proto.callRemote(Hello, hello=b"x")
    FIRED_ELSEWHERE[how](proto, trace, d)
    trace.watch("d", d)
    recordState(trace, "end", proto)
