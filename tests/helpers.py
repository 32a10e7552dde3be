"""
What the ampcore tests share: Commands, wire builders, one chunker, one fake
transport, the stock-Twisted oracles and the differential runners.

- Commands and errors: L{Hello}, L{Sum}, L{NoAnswer}, L{Goodbye}, L{NoSuch},
  L{SwitchIt}; L{Declared}, L{Fatal}, L{Undeclared}.
- Bytes on the wire: L{wire} (boxes built by hand), L{askBox},
  L{answerBox}, L{errorBox} (the boxes a peer sends).
- Chunking: L{chunked} cuts a stream; L{standardChunkings} and the
  L{chunkings} strategy pick the cuts.
- L{FakeTransport}: Twisted's StringTransport, optionally writing what it is
  asked to do into a trace.
- The codec oracle: stock C{BinaryBoxProtocol} as L{StockParser};
  L{runDifferential} and L{compareParse} put ampcore's codec beside it.
- Box classes and values: L{SubBox}, L{ItemsListsBox}, L{ItemsListsDict},
  L{TOO_LONG_KEY}, L{TOO_LONG_VALUE}.
- Traces: L{Trace}, L{connect}, L{Pump}, and L{feed}, L{recordState},
  L{recordTable}, L{writesOf}, L{loggedFailures} on top of them.
- The test protocols: L{makeClasses} builds them on one implementation's
  AMP (C{Peer}, recording its responders and run by C{hooks} such as
  L{raising}; C{EchoPeer}, recording nothing); L{connectedPeer}.
- The differential runners: L{runScenario}, L{runBoth} and the
  L{differential} decorator run a scenario on stock Twisted and on ampcore.

ampcore is imported inside the functions that use it, never at the top:
tests/peer.py imports this module for its Commands in a process that, as the
stock peer, must run without ampcore imported at all.
"""

import functools
import gc
import inspect
import random
import re
import types

import pytest
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.protocols import amp
from twisted.python.failure import Failure

try:
    from twisted.internet.testing import StringTransport
except ImportError:  # Twisted < 21.2
    from twisted.test.proto_helpers import StringTransport


def needsExtension():
    """A mark skipping a test (or, as C{pytestmark}, a module) in fallback mode."""
    import ampcore

    return pytest.mark.skipif(
        not ampcore.HAS_C_EXTENSION, reason="ampcore's C extension is not in use"
    )


# ---- commands and errors ------------------------------------------------------


class Declared(Exception):
    """An error the Commands below declare."""


class Fatal(Exception):
    """An error the Commands below declare fatal: it ends the connection."""


class Undeclared(Exception):
    """An error no Command declares."""


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
    """Nobody responds to this one."""

    commandName = b"nosuch"


class SwitchIt(amp.ProtocolSwitchCommand):
    arguments = [(b"name", amp.String())]


# ---- bytes on the wire ---------------------------------------------------------


def wire(*boxes):
    """
    The bytes of C{boxes}, back to back, built here rather than by stock
    Twisted or by ampcore.  A box is a mapping, written in sorted key order
    as C{AmpBox.serialize} writes it, or a sequence of (key, value) pairs,
    written in the order given (so repeated keys can be sent).  Keys and
    values are bytes; their lengths are not checked, so an over-long key
    (256 bytes or more) can be written too.
    """
    out = []
    for box in boxes:
        pairs = sorted(box.items()) if hasattr(box, "items") else box
        for key, value in pairs:
            out.append(len(key).to_bytes(2, "big") + key)
            out.append(len(value).to_bytes(2, "big") + value)
        out.append(b"\x00\x00")
    return b"".join(out)


def askBox(tag, command, **arguments):
    """A command box asking for an answer under C{tag}."""
    box = {b"_ask": tag, b"_command": command}
    box.update({k.encode(): v for k, v in arguments.items()})
    return box


def answerBox(tag, **values):
    box = {b"_answer": tag}
    box.update({k.encode(): v for k, v in values.items()})
    return box


def errorBox(tag, code, description):
    return {b"_error": tag, b"_error_code": code, b"_error_description": description}


# ---- chunking --------------------------------------------------------------------

RANDOM_CHUNK_SIZES = (1, 2, 3, 5, 17, 300, 4096)


def chunked(data, *, size=None, at=None, seed=None):
    """
    C{data} cut into consecutive chunks that join back into it:

    - C{size=n}: every C{n} bytes;
    - C{at=offsets}: at those offsets (any order; repeats and offsets
      outside the data are ignored);
    - C{seed=s}: after sizes drawn from L{RANDOM_CHUNK_SIZES} by
      C{random.Random(s)};
    - none of these: one chunk, the whole of C{data}.

    There is always at least one chunk: empty data gives C{[b""]}.
    """
    if size is not None:
        cuts = range(size, len(data), size)
    elif seed is not None:
        rnd = random.Random(seed)
        cuts, end = [], 0
        while end < len(data):
            end += rnd.choice(RANDOM_CHUNK_SIZES)
            cuts.append(end)
    elif at is not None:
        cuts = at
    else:
        cuts = ()
    out, last = [], 0
    for cut in sorted({c for c in cuts if 0 < c < len(data)}):
        out.append(data[last:cut])
        last = cut
    out.append(data[last:])
    return out


def standardChunkings(data, extraPoints=()):
    """
    (name, chunks) pairs: whole, 1-byte, 7-byte, and cut at (and just
    after) each of C{extraPoints}.
    """
    chunkings = [
        ("whole", chunked(data)),
        ("1-byte", chunked(data, size=1)),
        ("7-byte", chunked(data, size=7)),
    ]
    for p in extraPoints:
        chunkings.append((f"split@{p}", chunked(data, at=[p])))
        chunkings.append((f"split@{p + 1}", chunked(data, at=[p + 1])))
    return chunkings


def chunkings(data):
    """A strategy: one chunking of C{data} (whole, 1, 7, n bytes or random cuts)."""
    return st.one_of(
        st.just(chunked(data)),
        st.just(chunked(data, size=1)),
        st.just(chunked(data, size=7)),
        st.integers(2, 64).map(lambda size: chunked(data, size=size)),
        st.lists(st.integers(0, len(data)), max_size=40).map(
            lambda points: chunked(data, at=points)
        ),
    )


# ---- the fake transport -------------------------------------------------------------


class FakeTransport(StringTransport):
    """
    Twisted's StringTransport (writes gather in C{value()},
    C{loseConnection} sets C{disconnecting}) that counts C{loseConnection}
    calls.  Given a L{Trace}, it also records there, under C{label}, every
    write (its bytes and the boxes they parse to), C{loseConnection} and
    producer call.
    """

    def __init__(self, trace=None, label=None):
        StringTransport.__init__(self)
        self.trace = trace
        self.label = label
        self.loseConnectionCalls = 0

    def _record(self, *event):
        if self.trace is not None:
            self.trace.add(self.label, *event)

    def write(self, data):
        if self.trace is not None:
            try:
                boxes = amp.parseString(data)
            except Exception as e:  # e.g. an over-long key written on purpose
                boxes = ("unparseable", norm(e))
            self._record("write", data, boxes)
        StringTransport.write(self, data)

    def loseConnection(self):
        self.loseConnectionCalls += 1
        self._record("loseConnection")
        StringTransport.loseConnection(self)

    def pauseProducing(self):
        self._record("transport.pauseProducing")
        StringTransport.pauseProducing(self)

    def resumeProducing(self):
        self._record("transport.resumeProducing")
        StringTransport.resumeProducing(self)

    def stopProducing(self):
        self._record("transport.stopProducing")
        StringTransport.stopProducing(self)


# ---- the codec oracle: stock BinaryBoxProtocol ------------------------------------------


class _RecordingBinaryBoxProtocol(amp.BinaryBoxProtocol):
    def __init__(self, recorder):
        amp.BinaryBoxProtocol.__init__(self, recorder)
        self._recorder = recorder

    def stringReceived(self, string):
        self._recorder.consumed += 2 + len(string)
        amp.BinaryBoxProtocol.stringReceived(self, string)

    def lengthLimitExceeded(self, length):
        self._recorder.limitLengths.append(length)
        self._recorder.limitOffsets.append(self._recorder.consumed)
        amp.BinaryBoxProtocol.lengthLimitExceeded(self, length)


class StockParser:
    """
    Stock C{BinaryBoxProtocol}, driven as a connection drives it
    (C{makeConnection}, then C{dataReceived} per chunk), and the box receiver
    it delivers to.  Recorded besides the boxes: C{boundaries[i]}, the stream
    offset where box C{i} ended (counted from the strings stock hands to
    C{stringReceived}), and what C{lengthLimitExceeded} was called with
    (C{limitLengths}) where in the stream (C{limitOffsets}).  Offsets are
    only meaningful up to the first over-long key prefix: after one, stock's
    C{Int16StringReceiver.dataReceived} keeps its whole buffer and parses it
    again on the next call.
    """

    def __init__(self):
        self.boxes = []
        self.boundaries = []
        self.consumed = 0
        self.limitLengths = []
        self.limitOffsets = []
        self.transport = FakeTransport()
        self.protocol = _RecordingBinaryBoxProtocol(self)
        self.protocol.makeConnection(self.transport)

    # box receiver
    def startReceivingBoxes(self, sender):
        self.sender = sender

    def ampBoxReceived(self, box):
        self.boxes.append(box)
        self.boundaries.append(self.consumed)

    def stopReceivingBoxes(self, reason):
        pass

    def feed(self, data):
        """The boxes that C{dataReceived(data)} delivered."""
        before = len(self.boxes)
        self.protocol.dataReceived(data)
        return self.boxes[before:]

    @property
    def loseConnectionCalls(self):
        return self.transport.loseConnectionCalls

    @property
    def keyLengthLimitExceeded(self):
        return self.protocol._keyLengthLimitExceeded

    @property
    def lastBoundary(self):
        return self.boundaries[-1] if self.boundaries else 0


@functools.cache
def _recordingBoxParserClass():
    import ampcore

    class RecordingBoxParser(ampcore.BoxParser):
        """An ampcore.BoxParser recording its lengthLimitExceeded calls."""

        def __init__(self):
            super().__init__()
            self.limitCalls = []

        def lengthLimitExceeded(self, length):
            self.limitCalls.append(length)

    return RecordingBoxParser


def recordingBoxParser():
    """
    A new ampcore.BoxParser that records the lengths it reports to
    C{lengthLimitExceeded} in C{limitCalls}.
    """
    return _recordingBoxParserClass()()


def assertSameBoxes(got, expected):
    """
    C{got} (from ampcore) and C{expected} (from stock) are the same boxes in
    the same order, with the same items in the same (wire) order, and every
    box ampcore produced is a real AmpBox of bytes.
    """
    assert type(got) is list
    assert len(got) == len(expected), (got, expected)
    for g, e in zip(got, expected):
        assert type(g) is amp.AmpBox, type(g)
        assert list(g.items()) == list(e.items()), (g, e)
        for k, v in g.items():
            assert type(k) is bytes and type(v) is bytes, (k, v)


class DifferentialRun:
    """What one chunked run of L{runDifferential} observed."""

    boxes = None
    limitLength = None  # the over-long key prefix, if one arrived
    limitChunk = None  # index of the chunk that completed it
    unprocessed = None  # ampcore's, after the last chunk


def runDifferential(stream, chunkList, laterFeeds=(b"", b"\x00\x00", b"\x00\x01a")):
    """
    Feed C{chunkList} (which must make up C{stream}) to ampcore.BoxParser
    and to stock BinaryBoxProtocol, checking after every chunk that ampcore
    returned exactly the boxes stock delivered during that chunk, that the
    over-long key report matches, and that C{unprocessed} is the stream's
    bytes after the last complete box.  Once the limit is hit, each later
    chunk (and then each of C{laterFeeds}) must return [] and report the
    same length again.  Returns a L{DifferentialRun}.
    """
    chunkList = list(chunkList)
    assert b"".join(chunkList) == stream
    stock = StockParser()
    core = recordingBoxParser()
    run = DifferentialRun()
    delivered = []
    fed = 0
    frozen = None

    def checkAfterLimit(chunk):
        out = core.feed(chunk)
        assert out == []
        assert type(out) is list
        assert core.keyLengthLimitExceeded is True
        assert core.limitCalls == [run.limitLength] * len(core.limitCalls)
        assert core.unprocessed == frozen

    for index, chunk in enumerate(chunkList):
        fed += len(chunk)
        if run.limitLength is not None:
            before = len(core.limitCalls)
            checkAfterLimit(chunk)
            assert len(core.limitCalls) == before + 1
            continue
        expected = stock.feed(chunk)
        out = core.feed(chunk)
        assertSameBoxes(out, expected)
        delivered.extend(out)
        if stock.limitLengths:
            # This chunk completed an over-long key prefix.
            assert stock.keyLengthLimitExceeded is True
            assert stock.loseConnectionCalls == 1
            assert stock.limitLengths == [stock.limitLengths[0]]
            run.limitLength = stock.limitLengths[0]
            run.limitChunk = index
            assert core.keyLengthLimitExceeded is True
            assert core.limitCalls == [run.limitLength]
            frozen = stream[stock.lastBoundary:fed]
            assert core.unprocessed == frozen
        else:
            assert stock.loseConnectionCalls == 0
            assert core.keyLengthLimitExceeded is False
            assert core.limitCalls == []
            assert type(core.unprocessed) is bytes
            assert core.unprocessed == stream[stock.lastBoundary:fed]
    if run.limitLength is not None:
        for extra in laterFeeds:
            before = len(core.limitCalls)
            checkAfterLimit(extra)
            assert len(core.limitCalls) == before + 1
    else:
        assert stock.limitLengths == [] and stock.loseConnectionCalls == 0
    assertSameBoxes(delivered, stock.boxes)
    run.boxes = delivered
    run.unprocessed = core.unprocessed
    return run


def compareParse(data):
    """
    ampcore.parse(data) against amp.parseString(data): the same boxes, or,
    where stock fails on an over-long key (an AttributeError, because the
    C{_ParserHelper} that C{parseString} uses as transport has no
    C{loseConnection}), KeyTooLongError with the length and offset stock
    saw.  Returns the boxes, or the KeyTooLongError.
    """
    import ampcore

    try:
        expected = amp.parseString(data)
    except AttributeError as e:
        assert "loseConnection" in str(e)
        stockError = e
    else:
        stockError = None
    try:
        got = ampcore.parse(data)
    except AttributeError as e:
        assert stockError is not None, (data, e)
        assert type(e) is ampcore.KeyTooLongError
        assert isinstance(e, amp.TooLong)
        assert e.isKey is True and e.isLocal is False
        oracle = StockParser()
        oracle.feed(bytes(data))
        assert [e.length] == oracle.limitLengths
        assert [e.offset] == oracle.limitOffsets
        return e
    assert stockError is None, (data, got)
    assertSameBoxes(got, expected)
    return got


# ---- box classes and values ------------------------------------------------------------------

TOO_LONG_KEY = b"k" * 256  # one byte over the 255 a key may have
TOO_LONG_VALUE = b"v" * 0x10000  # one byte over the 65535 a value may have



class SubBox(amp.AmpBox):
    """An AmpBox subclass, with no instance dict."""

    __slots__ = ()


class _ItemsAsLists:
    def items(self):
        return [[k, v] for k, v in dict.items(self)]


class ItemsListsBox(_ItemsAsLists, amp.AmpBox):
    """
    An AmpBox whose items() gives [key, value] lists: C{AmpBox.serialize}
    works from C{self.items()} and unpacks them all the same.
    """


class ItemsListsDict(_ItemsAsLists, dict):
    """The same items() on a plain dict subclass."""


# ---- traces --------------------------------------------------------------------------------

_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")

# Lines of a Failure's brief traceback ("path:line:function"), which
# RemoteAmpError puts into its message when it carries a local failure.
# They name the frames the failure saw, and where ampcore's C code stands in
# for Twisted's Python functions there are fewer of them (older Twisted
# records the stack above the catching frame too), so they are dropped; the
# exception type and message around them are compared.
_FRAME_LINE = re.compile(
    r"^[^\n:]+\.py:\d+:\w+\n|^--- <exception caught here> ---\n", re.MULTILINE
)

# Exception attributes worth comparing besides type, str() and args.
_EXC_ATTRS = ("isKey", "isLocal", "value", "keyName", "errorCode", "description", "fatal")


def unaddress(text):
    """Object addresses and traceback frames differ between runs: drop them."""
    return _ADDRESS.sub("0xADDR", _FRAME_LINE.sub("", text))


def norm(x):
    """
    A comparable, implementation-independent rendering of C{x}: boxes by
    type and contents, failures and exceptions by type, message, args and
    AMP-specific attributes, other objects by type only (their reprs carry
    addresses).
    """
    if isinstance(x, str):
        return unaddress(x)
    if x is None or isinstance(x, (bool, int, float, bytes)):
        return x
    if isinstance(x, Failure):
        return ("Failure", norm(x.value))
    if isinstance(x, BaseException):
        attrs = []
        for name in _EXC_ATTRS:
            if name in getattr(x, "__dict__", {}):
                attrs.append((name, norm(getattr(x, name))))
        return ("exc", type(x).__qualname__, unaddress(str(x)), norm(x.args), tuple(attrs))
    if isinstance(x, dict):
        items = sorted(((norm(k), norm(v)) for k, v in x.items()), key=repr)
        return (type(x).__name__, tuple(items))
    if isinstance(x, (list, tuple)):
        return tuple(norm(i) for i in x)
    if isinstance(x, Deferred):
        return ("Deferred",)
    return ("object", type(x).__name__)


class Trace(list):
    """
    An ordered list of everything observable that happens in a scenario;
    every event is stored normalized (L{norm}).
    """

    def add(self, *event):
        self.append(norm(event))

    def call(self, label, fn, *args, **kw):
        """
        Call C{fn}; record what it returned or raised (the exception is
        swallowed, so a scenario can go on and show what happens next).
        """
        try:
            result = fn(*args, **kw)
        except Exception as e:
            self.add("raised", label, e)
            return None
        self.add("returned", label, result)
        if isinstance(result, Deferred):
            self.watch(label, result)
        return result

    def watch(self, label, d, consume=True):
        """
        Record the outcome of C{d} (a Deferred, or whatever callRemote
        returned).  With C{consume}, the chain ends with None afterwards so
        nothing is reported when it is collected.
        """
        if not isinstance(d, Deferred):
            self.add("not a Deferred", label, d)
            return d

        def record(result):
            self.add("fired", label, result)
            return None if consume else result

        d.addBoth(record)
        return d


class LogRecorder:
    """
    A twisted.logger observer writing log events into the trace, with
    their failures.  "Unhandled error in Deferred" events are emitted when
    a failed Deferred is garbage-collected, which depends on collection
    timing; they are kept apart and compared as a sorted list.
    """

    def __init__(self, trace):
        self.trace = trace
        self.collected = []

    def __call__(self, event):
        fmt = event.get("log_format") or ""
        failure = event.get("log_failure") or event.get("failure")
        level = event.get("log_level")
        if failure is None:
            text = unaddress(formatEvent(event))
        else:
            # Not the formatted text: for legacy log.err events (Twisted
            # < 24.7) it holds the traceback, whose frames differ where
            # ampcore's C code stands in for Twisted's Python code.  The
            # message and the failure itself are compared.
            text = event.get("why") or fmt
        entry = (
            level.name if isinstance(level, type(LogLevel.info)) else repr(level),
            event.get("log_namespace"),
            text,
            None if failure is None else norm(failure),
        )
        if event.get("log_namespace") == "twisted.internet.defer":
            self.collected.append(entry)
        else:
            self.trace.add("log", *entry)


def connect(proto, trace=None, label=None):
    """C{proto.makeConnection} over a new L{FakeTransport}; returns the transport."""
    transport = FakeTransport(trace, label)
    proto.makeConnection(transport)
    return transport


class Pump:
    """
    Two connected protocols.  L{pump} moves everything each side has
    written so far to the other as one chunk (as iosim does), repeating
    until nothing moves; then, if either side called loseConnection, both
    get connectionLost(ConnectionDone).  Given a L{Trace}, every delivery
    is recorded there and what a delivery raises is recorded and
    swallowed; without one, exceptions propagate.
    """

    def __init__(self, client, server, trace=None):
        self.trace = trace
        self.client = client
        self.server = server
        # Server first, as iosim.connectedServerAndClient does.
        self.serverTransport = connect(server, trace, "S")
        self.clientTransport = connect(client, trace, "C")
        self.lost = False

    def _deliver(self, label, method, *args):
        if self.trace is None:
            method(*args)
        else:
            self.trace.call(label, method, *args)

    def pump(self, disconnect=True):
        moved = True
        while moved:
            moved = False
            for src, dst, label in (
                (self.clientTransport, self.server, "C->S"),
                (self.serverTransport, self.client, "S->C"),
            ):
                data = src.value()
                if data and not self.lost:
                    src.clear()
                    if self.trace is not None:
                        self.trace.add("deliver", label, len(data))
                    self._deliver(label + " dataReceived", dst.dataReceived, data)
                    moved = True
        if disconnect and not self.lost and (
            self.clientTransport.disconnecting or self.serverTransport.disconnecting
        ):
            self.lost = True
            for label, proto in (("S", self.server), ("C", self.client)):
                if self.trace is not None:
                    self.trace.add("deliver connectionLost", label)
                self._deliver(
                    label + " connectionLost",
                    proto.connectionLost,
                    Failure(ConnectionDone("Connection was closed cleanly.")),
                )


def lostReason():
    """The Failure a reactor gives connectionLost when the peer went away."""
    return Failure(ConnectionLost("Connection to the other side was lost."))


def feed(trace, proto, data, label="dataReceived"):
    """One dataReceived call, bracketed so that synchronous effects show."""
    trace.add("feed", label, data)
    trace.call(label, proto.dataReceived, data)
    trace.add("feed done", label)


def recordTable(trace, label, proto):
    """Record the tags of the outstanding requests (or None: no table)."""
    requests = proto._outstandingRequests
    trace.add("table", label, None if requests is None else list(requests))


def recordState(trace, label, proto):
    """Record the connection and dispatcher state of C{proto}."""
    trace.add(
        "state",
        label,
        proto.transport is None,
        getattr(proto.transport, "disconnecting", None),
        proto._failAllReason,
        proto._counter,
    )
    recordTable(trace, label, proto)


def writesOf(trace, label):
    """The raw bytes of C{label}'s transport writes, from a trace."""
    return [e[2] for e in trace if len(e) > 2 and e[0] == label and e[1] == "write"]


def loggedFailures(trace):
    """The log events of a trace that carry a failure."""
    return [e for e in trace if e[0] == "log" and e[4] is not None]


# ---- the test protocols --------------------------------------------------------------------


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
    """What a client passes to L{SwitchIt}: records what it is told."""

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


def makeClasses(base):
    """
    The test protocols, built on C{base} (stock C{amp.AMP} or
    C{ampcore.AMP}), with the matching C{BoxDispatcher} and
    C{BinaryBoxProtocol}, as a namespace.
    """

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

    class EchoPeer(base):
        """
        An AMP peer that records nothing: it answers Hello with its
        argument, or raises L{Declared} for C{b"declared"} and L{Undeclared}
        for C{b"undeclared"}; ECHO with the box's value, NONE with None
        (which is no box).
        """

        @Hello.responder
        def hello(self, hello):
            if hello == b"declared":
                raise Declared(hello)
            if hello == b"undeclared":
                raise Undeclared(hello)
            return {"hello": hello}

        def amp_ECHO(self, box):
            return amp.AmpBox(value=box.get(b"value", b""))

        def amp_NONE(self, box):
            return None

    if base is amp.AMP:
        dispatcher, binary = amp.BoxDispatcher, amp.BinaryBoxProtocol
    else:
        import ampcore

        dispatcher, binary = ampcore.BoxDispatcher, ampcore.BinaryBoxProtocol
    return types.SimpleNamespace(
        base=base,
        Peer=Peer,
        EchoPeer=EchoPeer,
        BoxDispatcher=dispatcher,
        BinaryBoxProtocol=binary,
    )


def raising(exc):
    """A responder hook for C{Peer.hooks}: it raises C{exc}."""

    def hook(self, **kw):
        raise exc

    return hook


def connectedPeer(ns, trace, cls=None, label="P", **kw):
    """A C{ns.Peer} (or C{cls}) connected to a recording L{FakeTransport}."""
    proto = (cls or ns.Peer)(trace, label, **kw)
    transport = connect(proto, trace, label)
    return proto, transport


# ---- differential runners ---------------------------------------------------------------


def runScenario(scenario, base, *params):
    """
    Run C{scenario(ns, trace, *params)} with the test protocols built on
    C{base}; return its trace, with the log events it caused.
    """
    ns = makeClasses(base)
    trace = Trace()
    recorder = LogRecorder(trace)
    globalLogPublisher.addObserver(recorder)
    try:
        scenario(ns, trace, *params)
        # Failed Deferreds dropped by the scenario report when collected.
        gc.collect()
    finally:
        globalLogPublisher.removeObserver(recorder)
    trace.add("collected", tuple(sorted(recorder.collected, key=repr)))
    return list(trace)


def runBoth(scenario, *params):
    """The traces of a scenario on stock amp.AMP and on ampcore.AMP, in that order."""
    import ampcore

    assert ampcore.HAS_C_EXTENSION, "the C extension is not in use"
    assert ampcore.AMP is not amp.AMP
    return runScenario(scenario, amp.AMP, *params), runScenario(scenario, ampcore.AMP, *params)


def differential(scenario=None, *, expect=None):
    """
    Declare a differential scenario as a test.

    The decorated function, named C{test_...} after the behaviour it shows,
    is the scenario: C{scenario(ns, trace, *params)} builds its protocols
    from C{ns} (L{makeClasses}), drives them and records in C{trace} what
    happens.  The test made of it runs the scenario on stock Twisted and on
    ampcore, asserts that the two traces are equal, and then calls
    C{expect(stockTrace, *params)}, if given, to check that the trace shows
    the behaviour the test is named after.  Parameters after C{ns} and
    C{trace} are the test's, for C{pytest.mark.parametrize}.
    """
    if scenario is None:
        return functools.partial(differential, expect=expect)
    params = list(inspect.signature(scenario).parameters.values())[2:]

    def test(**kw):
        args = [kw[p.name] for p in params]
        stock, core = runBoth(scenario, *args)
        assert core == stock
        if expect is not None:
            expect(stock, *args)

    test.__name__ = scenario.__name__
    test.__qualname__ = scenario.__qualname__
    test.__module__ = scenario.__module__
    test.__doc__ = scenario.__doc__
    test.__signature__ = inspect.Signature(params)
    test.__wrapped__ = scenario  # (pytest reports the scenario's file and line)
    return test
