"""
One side of a real-TCP AMP conversation, for tests/test_mixed_peers.py.

    python tests/peer.py server --impl stock|ampcore [--lifetime SECONDS]
    python tests/peer.py client --impl stock|ampcore --port PORT

Both sides share the Commands below (and L{Sum} and L{Fatal} from
tests/helpers.py) and one protocol class, built on
Twisted's own C{amp.AMP} (C{--impl stock}) or on C{ampcore.AMP}
(C{--impl ampcore}; the C extension must be in use).  Only 127.0.0.1 is used.

The server listens on an ephemeral port, prints a C{#server ...} header line
and then C{PORT <n>} on stdout, and serves until it is killed (or its
lifetime runs out).  Its responders echo their arguments back together with
values computed from them.

The client makes every call in L{runClient} and prints one line per result:
C{label<TAB>json}, where the JSON is a canonical form of the result or of the
failure (type and message), so that the transcripts of different client and
server implementations can be compared line for line.  Header lines start with
C{#}: they say which implementation each side really ran and differ between
combinations by design.  The client exits 0 once everything is printed.

Run as a script, this file's directory (tests/) is first on sys.path, not the
repository root, so C{import ampcore} finds the installed, compiled ampcore.
"""

import argparse
import datetime
import decimal
import gc
import hashlib
import json
import math
import os
import re
import sys

from twisted.internet import defer, endpoints, protocol, reactor, task
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from helpers import Fatal, Sum, answerBox, errorBox, wire

HOST = "127.0.0.1"
CALL_TIMEOUT = 10.0
CLIENT_DEADLINE = 25.0

# ---- errors ----------------------------------------------------------------


class BadInput(Exception):
    """A declared error of Divide."""


class NotDeclared(Exception):
    """Raised by a responder that did not declare it."""


# ---- commands --------------------------------------------------------------

SCALARS = [
    (b"num", amp.Integer()),
    (b"blob", amp.String()),
    (b"text", amp.Unicode()),
    (b"flag", amp.Boolean()),
    (b"real", amp.Float()),
    (b"dec", amp.Decimal()),
    (b"when", amp.DateTime()),
    (b"where", amp.Path()),
    (b"dashed-key", amp.Integer()),  # Python name: dashed_key
]


class EchoAll(amp.Command):
    """Every scalar type, required; echoed back with values computed from them."""

    arguments = SCALARS
    response = SCALARS + [
        (b"num_doubled", amp.Integer()),
        (b"blob_len", amp.Integer()),
        (b"blob_reversed", amp.String()),
        (b"text_upper", amp.Unicode()),
        (b"text_length", amp.Integer()),
        (b"flag_negated", amp.Boolean()),
        (b"real_negated", amp.Float()),
        (b"real_repr", amp.Unicode()),
        (b"dec_text", amp.Unicode()),
        (b"dec_is_nan", amp.Boolean()),
        (b"when_utc", amp.DateTime()),
        (b"when_offset_minutes", amp.Integer()),
        (b"where_basename", amp.Unicode()),
        (b"where_child", amp.Path()),
    ]


def _optional(args):
    return [(name, type(arg)(optional=True)) for name, arg in args]


OPTIONALS = _optional(SCALARS) + [
    (b"ints", amp.ListOf(amp.Integer(), optional=True)),
    (b"texts", amp.ListOf(amp.Unicode(), optional=True)),
]


class EchoOptional(amp.Command):
    """Everything optional; the response lists which arguments arrived."""

    arguments = OPTIONALS
    response = OPTIONALS + [(b"present", amp.ListOf(amp.Unicode()))]


class EchoLists(amp.Command):
    arguments = [
        (b"ints", amp.ListOf(amp.Integer())),
        (b"texts", amp.ListOf(amp.Unicode())),
        (b"reals", amp.ListOf(amp.Float())),
        (b"nested", amp.ListOf(amp.ListOf(amp.Integer()))),
    ]
    response = arguments + [
        (b"ints_sum", amp.Integer()),
        (b"ints_sorted", amp.ListOf(amp.Integer())),
        (b"texts_joined", amp.Unicode()),
        (b"count", amp.Integer()),
    ]


CHILD = [(b"x", amp.Float()), (b"flag", amp.Boolean())]

ROW = [
    (b"name", amp.Unicode()),
    (b"count", amp.Integer()),
    (b"blob", amp.String()),
    (b"tags", amp.ListOf(amp.Unicode())),
    (b"when", amp.DateTime(optional=True)),
    (b"note", amp.Unicode(optional=True)),
    (b"children", amp.AmpList(CHILD)),
]


class EchoAmpList(amp.Command):
    arguments = [(b"rows", amp.AmpList(ROW))]
    response = [
        (b"rows", amp.AmpList(ROW)),
        (b"row_count", amp.Integer()),
        (
            b"totals",
            amp.AmpList([(b"name", amp.Unicode()), (b"total", amp.Integer())]),
        ),
    ]


class SlowSum(amp.Command):
    """Sum, answered later from a Deferred, so answers come back out of order."""

    arguments = [(b"a", amp.Integer()), (b"b", amp.Integer()), (b"delay", amp.Float())]
    response = [(b"total", amp.Integer())]


class Divide(amp.Command):
    arguments = [(b"numerator", amp.Integer()), (b"denominator", amp.Integer())]
    response = [(b"quotient", amp.Float())]
    errors = {ZeroDivisionError: b"ZERO_DIVISION", BadInput: b"BAD_INPUT"}


class Explode(amp.Command):
    """Its responder raises an error it does not declare."""

    arguments = [(b"message", amp.Unicode())]
    response = []


class FatalExplode(amp.Command):
    arguments = [(b"message", amp.Unicode())]
    response = []
    fatalErrors = {Fatal: b"FATAL"}


class BadReturn(amp.Command):
    """Its responder returns a dict missing a required response key."""

    arguments = []
    response = [(b"missing", amp.Integer())]


class Notify(amp.Command):
    arguments = [(b"note", amp.Unicode())]
    requiresAnswer = False


class GetNotes(amp.Command):
    arguments = []
    response = [(b"notes", amp.ListOf(amp.Unicode()))]


class Ping(amp.Command):
    """Answered by the client: the server calls it back."""

    arguments = [(b"value", amp.Unicode())]
    response = [(b"reply", amp.Unicode())]


class CallMeBack(amp.Command):
    arguments = [(b"value", amp.Unicode())]
    response = [(b"reply", amp.Unicode()), (b"server_said", amp.Unicode())]


class Unimplemented(amp.Command):
    """Nobody responds to this one."""

    arguments = [(b"x", amp.Integer())]
    response = []


class WhoAreYou(amp.Command):
    arguments = []
    response = [
        (b"impl", amp.Unicode()),
        (b"c_extension", amp.Boolean()),
        (b"ampcore_subclass", amp.Boolean()),
    ]


class ServerLog(amp.Command):
    """
    What the server logged (failures only) and, for every connection so far,
    why it ended as the server saw it.
    """

    arguments = []
    response = [
        (b"events", amp.ListOf(amp.Unicode())),
        (b"connections", amp.ListOf(amp.Unicode())),
    ]


# ---- implementation choice ---------------------------------------------------


def require(condition, message):
    """Like assert, but not compiled away by python -O."""
    if not condition:
        raise SystemExit(f"peer.py: {message}")


def chooseBase(impl):
    """
    The AMP class to build on for C{impl}, after checking that the choice
    really takes effect.
    """
    if impl == "ampcore":
        import ampcore

        require(ampcore.HAS_C_EXTENSION, "ampcore's C extension is not in use")
        require(ampcore.AMP is not amp.AMP, "ampcore.AMP is Twisted's amp.AMP")
        return ampcore.AMP
    require(impl == "stock", impl)
    require("ampcore" not in sys.modules, "the stock peer imported ampcore")
    require(
        amp.AMP.__module__ == "twisted.protocols.amp",
        f"twisted.protocols.amp.AMP is {amp.AMP!r}",
    )
    return amp.AMP


def facts(protocolClass):
    """Whether ampcore's C extension is loaded, and C{protocolClass} is ampcore's."""
    if "ampcore" not in sys.modules:
        return {"c_extension": False, "ampcore_subclass": False}
    import ampcore

    return {
        "c_extension": ampcore.HAS_C_EXTENSION,
        "ampcore_subclass": ampcore.HAS_C_EXTENSION
        and issubclass(protocolClass, ampcore.AMP),
    }


def describe(role, impl, protocolClass):
    """The header line for this side, after checking it is what was asked for."""
    found = facts(protocolClass)
    isAmpcore = impl == "ampcore"
    require(
        found == {"c_extension": isAmpcore, "ampcore_subclass": isAmpcore},
        f"--impl {impl}, but {protocolClass!r} gives {found}",
    )
    return (
        f"#{role} impl={impl} c_extension={found['c_extension']} "
        f"ampcore_subclass={found['ampcore_subclass']}"
    )


def buildProtocol(Base):
    """The one protocol class both sides use, on the chosen base."""

    class PeerProtocol(Base):
        def __init__(self, *a, **kw):
            Base.__init__(self, *a, **kw)
            self.notes = []
            self.lost = defer.Deferred()
            self.record = {"lost": None, "stopReceivingBoxes": None}

        def connectionMade(self):
            Base.connectionMade(self)
            CONNECTIONS.append(self.record)
            self.record["number"] = len(CONNECTIONS)

        def stopReceivingBoxes(self, reason):
            # BinaryBoxProtocol.connectionLost says why through this
            # (e.g. TooLong after an over-long key from the peer).
            self.record["stopReceivingBoxes"] = qualname(reason.type)
            Base.stopReceivingBoxes(self, reason)

        def connectionLost(self, reason):
            Base.connectionLost(self, reason)
            self.record["lost"] = qualname(reason.type)
            if not self.lost.called:
                # (the type: a Failure passed to callback() would errback)
                self.lost.callback(reason.type)

        @WhoAreYou.responder
        def whoAreYou(self):
            return dict(facts(type(self)), impl=IMPL)

        @EchoAll.responder
        def echoAll(self, num, blob, text, flag, real, dec, when, where, dashed_key):
            offset = when.utcoffset()
            return {
                "num": num,
                "blob": blob,
                "text": text,
                "flag": flag,
                "real": real,
                "dec": dec,
                "when": when,
                "where": where,
                "dashed_key": dashed_key,
                "num_doubled": num * 2,
                "blob_len": len(blob),
                "blob_reversed": blob[::-1],
                "text_upper": text.upper(),
                "text_length": len(text),
                "flag_negated": not flag,
                "real_negated": -real,
                "real_repr": repr(real),
                "dec_text": str(dec),
                "dec_is_nan": dec.is_nan(),
                "when_utc": when.astimezone(amp.utc),
                "when_offset_minutes": int(offset.total_seconds()) // 60,
                "where_basename": where.basename(),
                "where_child": where.child("child"),
            }

        @EchoOptional.responder
        def echoOptional(self, **kw):
            result = {k: v for k, v in kw.items() if v is not None}
            result["present"] = sorted(result)
            return result

        @EchoLists.responder
        def echoLists(self, ints, texts, reals, nested):
            return {
                "ints": ints,
                "texts": texts,
                "reals": reals,
                "nested": nested,
                "ints_sum": sum(ints),
                "ints_sorted": sorted(ints),
                "texts_joined": "|".join(texts),
                "count": len(ints) + len(texts) + len(reals) + len(nested),
            }

        @EchoAmpList.responder
        def echoAmpList(self, rows):
            return {
                "rows": rows,
                "row_count": len(rows),
                "totals": [
                    {"name": row["name"], "total": row["count"] + len(row["children"])}
                    for row in rows
                ],
            }

        @Sum.responder
        def sum_(self, a, b):
            return {"total": a + b}

        @SlowSum.responder
        def slowSum(self, a, b, delay):
            return task.deferLater(reactor, delay, lambda: {"total": a + b})

        @Divide.responder
        def divide(self, numerator, denominator):
            if numerator < 0:
                raise BadInput(f"négatif: {numerator} ☹")
            return {"quotient": numerator / denominator}

        @Explode.responder
        def explode(self, message):
            raise NotDeclared(message)

        @FatalExplode.responder
        def fatalExplode(self, message):
            raise Fatal(message)

        @BadReturn.responder
        def badReturn(self):
            return {}

        @Notify.responder
        def notify(self, note):
            self.notes.append(note)
            return {}

        @GetNotes.responder
        def getNotes(self):
            return {"notes": list(self.notes)}

        @Ping.responder
        def ping(self, value):
            return {"reply": "pong:" + value[::-1]}

        @CallMeBack.responder
        def callMeBack(self, value):
            d = self.callRemote(Ping, value=value)
            d.addCallback(
                lambda answer: {"reply": answer["reply"], "server_said": "called back"}
            )
            return d

        @ServerLog.responder
        def serverLog(self):
            return {
                "events": [json.dumps(e, sort_keys=True) for e in LOGGED],
                "connections": [json.dumps(c, sort_keys=True) for c in CONNECTIONS],
            }

    return PeerProtocol


# ---- logging: keep failures, print everything to stderr ------------------------

LOGGED = []
CONNECTIONS = []
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _collect(event):
    # (failures logged through twisted.python.log.err carry "failure")
    failure = event.get("log_failure", event.get("failure"))
    if failure is None:
        return
    LOGGED.append(
        {
            "failure": qualname(failure.type),
            "value": _ADDRESS.sub("", str(failure.value)).splitlines()[0:1],
            "format": event.get("log_format"),
        }
    )


def startLogging():
    globalLogBeginner.beginLoggingTo(
        [_collect, textFileLogObserver(sys.stderr)], redirectStandardIO=False
    )


# ---- canonical forms ---------------------------------------------------------


def qualname(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


def canon(value):
    """A JSON-able form of a value, exact and independent of identity."""
    if value is None:
        return None
    if isinstance(value, bool):
        return {"bool": value}
    if isinstance(value, int):
        return {"int": str(value)}
    if isinstance(value, float):
        return {"float": repr(value)}
    if isinstance(value, decimal.Decimal):
        return {"decimal": str(value)}
    if isinstance(value, datetime.datetime):
        return {
            "datetime": value.isoformat(),
            "utcoffset": str(value.utcoffset()),
            "tzname": value.tzname(),
        }
    if isinstance(value, bytes):
        if len(value) > 64:
            return {
                "bytes_len": len(value),
                "sha256": hashlib.sha256(value).hexdigest(),
            }
        return {"bytes": repr(value)}
    if isinstance(value, str):
        if len(value) > 256:
            return {
                "str_len": len(value),
                "sha256": hashlib.sha256(value.encode("utf-8")).hexdigest(),
            }
        return {"str": value}
    if isinstance(value, FilePath):
        return {"path": value.path}
    if isinstance(value, (list, tuple)):
        return [canon(v) for v in value]
    if isinstance(value, dict):
        return {
            "type": type(value).__name__,
            "items": sorted(
                [k if isinstance(k, str) else repr(k), canon(v)]
                for k, v in value.items()
            ),
        }
    if isinstance(value, BaseException):
        return canonError(value)
    return {"repr": repr(value)}


def canonError(exc):
    result = {
        "error": qualname(type(exc)),
        "mro": [qualname(c) for c in type(exc).__mro__],
        "args": canon(list(exc.args)),
        "str": _ADDRESS.sub("", str(exc)),
    }
    if isinstance(exc, amp.RemoteAmpError):
        result["errorCode"] = repr(exc.errorCode)
        result["description"] = exc.description
        result["fatal"] = exc.fatal
    if isinstance(exc, amp.TooLong):
        result["tooLong"] = {
            "isKey": exc.isKey,
            "isLocal": exc.isLocal,
            "keyName": canon(exc.keyName),
            "value": canon(exc.value),
            "repr": repr(exc),
        }
    return result


# ---- server ----------------------------------------------------------------


def runServer(args):
    Proto = buildProtocol(BASE)
    print(describe("server", IMPL, Proto), flush=True)
    startLogging()
    endpoint = endpoints.TCP4ServerEndpoint(reactor, 0, interface=HOST)
    d = endpoint.listen(protocol.Factory.forProtocol(Proto))

    def listening(port):
        host = port.getHost()
        require(host.host == HOST, f"listening on {host}")
        print(f"PORT {host.port}", flush=True)

    def failed(reason):
        print(f"LISTEN FAILED {reason.getErrorMessage()}", flush=True)
        reactor.stop()

    d.addCallbacks(listening, failed)
    reactor.callLater(args.lifetime, reactor.stop)
    reactor.run()


# ---- client ----------------------------------------------------------------


def emit(label, payload):
    line = json.dumps(payload, sort_keys=True, ensure_ascii=True, allow_nan=False)
    print(f"{label}\t{line}", flush=True)


async def record(label, makeCall):
    """Make one call and print what became of it."""
    try:
        d = makeCall()
    except Exception as e:
        emit(label, {"raised": canonError(e)})
        return
    if not isinstance(d, defer.Deferred):
        emit(label, {"returned": canon(d)})
        return
    d.addTimeout(CALL_TIMEOUT, reactor)
    try:
        result = await d
    except Exception as e:
        emit(label, {"failed": canonError(e)})
    else:
        emit(label, {"ok": canon(result)})


async def connect(Proto):
    endpoint = endpoints.TCP4ClientEndpoint(reactor, HOST, PORT, timeout=5)
    d = endpoints.connectProtocol(endpoint, Proto())
    d.addTimeout(CALL_TIMEOUT, reactor)
    return await d


async def closed(label, proto, close=False):
    """Wait for the connection to go away and print why it did."""
    if close:
        proto.transport.loseConnection()
    d = proto.lost
    d.addTimeout(CALL_TIMEOUT, reactor)
    try:
        reasonType = await d
    except defer.TimeoutError:
        emit(label, {"connection": "still open"})
        proto.transport.abortConnection()
    else:
        emit(label, {"connection": "lost", "reason": qualname(reasonType)})


UTC = amp.utc
IST = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
PST = datetime.timezone(datetime.timedelta(hours=-8))

BASE_SCALARS = {
    "num": 42,
    "blob": b"bytes\x00\xff",
    "text": "héllo wörld ☃",
    "flag": True,
    "real": 1.5,
    "dec": decimal.Decimal("3.14"),
    "when": datetime.datetime(2024, 2, 29, 12, 34, 56, 789012, tzinfo=UTC),
    "where": FilePath("/nonexistent/ampcore-peer/file.txt"),
    "dashed_key": -7,
}

SCALAR_CASES = [
    ("num", 0),
    ("num", -1),
    ("num", 2**63),
    ("num", -(2**200) + 1),
    ("blob", b""),
    ("blob", bytes(range(256))),
    ("blob", b"x" * 65535),
    ("blob", bytes(range(256)) * 255 + b"abcdefghijklmno"),  # 65295 bytes
    ("text", ""),
    ("text", "日本語テキスト 𝄞 émoji 🎉 \u0000 \u200d"),
    ("text", "ü" * 32767),  # 65534 bytes as UTF-8
    ("flag", False),
    ("real", 0.0),
    ("real", -0.0),
    ("real", math.inf),
    ("real", -math.inf),
    ("real", math.nan),
    ("real", 0.1),
    ("real", 1e-320),
    ("real", 1.7976931348623157e308),
    ("real", -2.5e-10),
    ("dec", decimal.Decimal("0")),
    ("dec", decimal.Decimal("-0")),
    ("dec", decimal.Decimal("1.50")),
    ("dec", decimal.Decimal("1E+2")),
    ("dec", decimal.Decimal("-1.5E-7")),
    ("dec", decimal.Decimal("123456789012345678901234567890.000000000001")),
    ("dec", decimal.Decimal("NaN")),
    ("dec", decimal.Decimal("-NaN")),
    ("dec", decimal.Decimal("sNaN")),
    ("dec", decimal.Decimal("-sNaN")),
    ("dec", decimal.Decimal("Infinity")),
    ("dec", decimal.Decimal("-Infinity")),
    ("when", datetime.datetime(2000, 1, 1, tzinfo=UTC)),
    ("when", datetime.datetime(2021, 6, 30, 23, 59, 59, 999999, tzinfo=IST)),
    ("when", datetime.datetime(1999, 12, 31, 16, 0, 0, 1, tzinfo=PST)),
    ("when", datetime.datetime(1, 1, 1, tzinfo=UTC)),
    ("when", datetime.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=IST)),
    ("where", FilePath("/")),
    ("where", FilePath("/tmp/ünïcödé/ℝ/dir with spaces")),
    ("where", FilePath("relative/path")),
    ("dashed_key", 123456789),
]


RAW_CASES = [
    ("empty-box", b"\x00\x00"),
    ("key-too-long", b"\x01\x00" + b"k" * 256 + b"\x00\x01v\x00\x00"),
    ("unknown-answer-tag", wire(answerBox(b"nope", x=b"1"))),
    ("unknown-error-tag", wire(errorBox(b"nope", b"OOPS", b"described"))),
]


class Trickler:
    """
    Replaces C{transport.write}: queues what is written and hands it to the
    real C{write} one byte per reactor iteration.
    """

    def __init__(self, transport):
        self.realWrite = transport.write
        self.pending = bytearray()
        self.written = 0
        self.loop = task.LoopingCall(self.tick)
        transport.write = self.write

    def write(self, data):
        self.pending += data
        if not self.loop.running:
            self.loop.start(0, now=False)

    def tick(self):
        if not self.pending:
            self.loop.stop()
            return
        byte = bytes(self.pending[:1])
        del self.pending[:1]
        self.realWrite(byte)
        self.written += 1


async def runClient(args):
    Proto = buildProtocol(BASE)
    print(describe("client", IMPL, Proto), flush=True)

    main = await connect(Proto)
    who = await main.callRemote(WhoAreYou).addTimeout(CALL_TIMEOUT, reactor)
    print(
        f"#server-seen-by-client impl={who['impl']} c_extension={who['c_extension']} "
        f"ampcore_subclass={who['ampcore_subclass']}",
        flush=True,
    )

    # -- every scalar type, required
    await record("EchoAll/base", lambda: main.callRemote(EchoAll, **BASE_SCALARS))
    for i, (name, value) in enumerate(SCALAR_CASES):
        kw = dict(BASE_SCALARS, **{name: value})
        await record(f"EchoAll/{i:02d}/{name}", lambda kw=kw: main.callRemote(EchoAll, **kw))

    # -- optional arguments, omitted and present
    await record("EchoOptional/none", lambda: main.callRemote(EchoOptional))
    await record(
        "EchoOptional/some",
        lambda: main.callRemote(
            EchoOptional, num=5, text="sömé", ints=[], dec=decimal.Decimal("NaN")
        ),
    )
    await record(
        "EchoOptional/all",
        lambda: main.callRemote(
            EchoOptional, **BASE_SCALARS, ints=[1, -2, 3], texts=["a", "", "ß"]
        ),
    )
    await record(
        "EchoOptional/falsy",
        lambda: main.callRemote(
            EchoOptional, num=0, blob=b"", text="", flag=False, real=-0.0, texts=[""]
        ),
    )

    # -- ListOf
    listCases = [
        ([], [], [], []),
        ([1, 2, 3], ["a"], [0.5], [[1], [], [2, 3]]),
        ([-(2**70), 0, 2**70], ["", "ünï", "日本", "x" * 300], [math.inf, -0.0, math.nan], [[]]),
        (list(range(2000)), ["t%d" % i for i in range(500)], [i / 7 for i in range(100)], [list(range(50))] * 20),
    ]
    for i, (ints, texts, reals, nested) in enumerate(listCases):
        await record(
            f"EchoLists/{i}",
            lambda ints=ints, texts=texts, reals=reals, nested=nested: main.callRemote(
                EchoLists, ints=ints, texts=texts, reals=reals, nested=nested
            ),
        )

    # -- AmpList, with optional and nested AmpList arguments
    row1 = {
        "name": "first",
        "count": 3,
        "blob": b"\x00\x01",
        "tags": ["a", "b"],
        "when": datetime.datetime(2020, 5, 17, 1, 2, 3, tzinfo=IST),
        "note": "nöte",
        "children": [{"x": 1.0, "flag": True}, {"x": math.inf, "flag": False}],
    }
    row2 = {
        "name": "ßecond",
        "count": -1,
        "blob": b"",
        "tags": [],
        "children": [],
    }
    row3 = dict(row2, name="third", note="", children=[{"x": -0.0, "flag": False}] * 30)
    for label, rows in [("empty", []), ("one", [row1]), ("three", [row1, row2, row3])]:
        await record(
            f"EchoAmpList/{label}", lambda rows=rows: main.callRemote(EchoAmpList, rows=rows)
        )

    # -- declared errors
    await record("Divide/ok", lambda: main.callRemote(Divide, numerator=7, denominator=2))
    await record("Divide/zero", lambda: main.callRemote(Divide, numerator=1, denominator=0))
    await record("Divide/bad", lambda: main.callRemote(Divide, numerator=-3, denominator=1))

    # -- requiresAnswer=False
    await record("Notify/1", lambda: main.callRemote(Notify, note="first"))
    await record("Notify/2", lambda: main.callRemote(Notify, note="sécond ☃"))
    await record(
        "Notify/raw",
        lambda: main.callRemoteString(b"Notify", requiresAnswer=False, note="raw".encode()),
    )
    await record("GetNotes", lambda: main.callRemote(GetNotes))

    # -- callRemoteString round trips (the raw answer box, _answer tag included)
    await record("raw/Sum", lambda: main.callRemoteString(b"Sum", a=b"3", b=b"4"))
    await record(
        "raw/Ping-as-server-command",
        lambda: main.callRemoteString(b"Ping", value="ü".encode("utf-8")),
    )

    await record(
        "raw/Sum-with-longest-key-and-value",
        lambda: main.callRemoteString(
            b"Sum", a=b"5", b=b"6", **{"k" * 255: b"v" * 65535}
        ),
    )

    # -- unknown commands
    await record("unknown/callRemote", lambda: main.callRemote(Unimplemented, x=1))
    await record("unknown/callRemoteString", lambda: main.callRemoteString(b"NoSuchCommand", k=b"v"))

    # -- errors raised locally, before anything is sent
    await record(
        "local/value-too-long",
        lambda: main.callRemote(EchoAll, **dict(BASE_SCALARS, blob=b"y" * 65536)),
    )
    await record(
        "local/key-too-long", lambda: main.callRemoteString(b"Sum", **{"k" * 256: b"v"})
    )
    await record("local/missing-argument", lambda: main.callRemote(Sum, a=1))
    await record(
        "local/naive-datetime",
        lambda: main.callRemote(
            EchoAll, **dict(BASE_SCALARS, when=datetime.datetime(2020, 1, 1))
        ),
    )
    await record("after-local-errors/raw", lambda: main.callRemoteString(b"Sum", a=b"1", b=b"1"))

    # -- the server calls the client back
    await record("CallMeBack", lambda: main.callRemote(CallMeBack, value="ábc"))

    # -- many calls in flight at once, some answered late and out of order
    calls = []
    for i in range(300):
        if i % 10 == 0:
            calls.append(main.callRemote(SlowSum, a=i, b=1, delay=(i % 30) / 300))
        else:
            calls.append(main.callRemote(Sum, a=i, b=i * i))
    gathered = defer.gatherResults(calls, consumeErrors=True)
    await record("pipelined/300", lambda: gathered)

    await record("final/raw", lambda: main.callRemoteString(b"Sum", a=b"20", b=b"22"))
    await closed("main/close", main, close=True)
    await record("after-close/callRemote", lambda: main.callRemote(Sum, a=1, b=2))

    # -- an undeclared error: UnknownRemoteError, then the server hangs up
    conn = await connect(Proto)
    await record("Explode", lambda: conn.callRemote(Explode, message="bööm"))
    await closed("Explode/connection", conn)

    # -- a declared fatal error: the error, then the server hangs up
    conn = await connect(Proto)
    await record("FatalExplode", lambda: conn.callRemote(FatalExplode, message="fätal"))
    await closed("FatalExplode/connection", conn)

    # -- a responder whose result cannot be serialized
    conn = await connect(Proto)
    await record("BadReturn", lambda: conn.callRemote(BadReturn))
    await closed("BadReturn/connection", conn)

    # -- an unknown command that asks for no answer: the server's
    # unhandledError drops the connection
    conn = await connect(Proto)
    await record(
        "unknown/callRemoteString-noanswer",
        lambda: conn.callRemoteString(b"NoSuchCommand", requiresAnswer=False),
    )
    await closed("unknown/callRemoteString-noanswer/connection", conn)

    # -- an unknown command whose name is not ASCII: stock's locateResponder
    # fails on it while the box is being received, and the connection drops
    conn = await connect(Proto)
    await record("unknown/non-ascii-name", lambda: conn.callRemoteString(b"\xff\xfe\x00cmd"))
    await closed("unknown/non-ascii-name/connection", conn)

    # -- a raw command box missing a required argument
    conn = await connect(Proto)
    await record("raw/missing-argument", lambda: conn.callRemoteString(b"Sum", a=b"1"))
    await closed("raw/missing-argument/connection", conn)

    # -- bytes no AMP implementation would send, written straight to the
    # socket; the server drops each of these connections
    for label, raw in RAW_CASES:
        conn = await connect(Proto)
        conn.transport.write(raw)
        await closed(f"raw/{label}/connection", conn)

    # -- a box cut short by the end of the connection
    conn = await connect(Proto)
    conn.transport.write(b"\x00\x08_command\x00\x03Sum\x00\x01a")
    await task.deferLater(reactor, 0.05, lambda: None)
    await closed("raw/truncated/connection", conn, close=True)

    # -- boxes trickled one byte per write, so the peer parses them from
    # one-byte reads
    conn = await connect(Proto)
    conn.transport.setTcpNoDelay(True)
    trickler = Trickler(conn.transport)
    await record(
        "trickle/EchoAll",
        lambda: conn.callRemote(EchoAll, **dict(BASE_SCALARS, blob=bytes(range(256)))),
    )
    await record("trickle/Notify", lambda: conn.callRemote(Notify, note="trickled ☃"))
    await record("trickle/GetNotes", lambda: conn.callRemote(GetNotes))
    # (the same bytes from stock and ampcore, all through the replaced write)
    emit("trickle/bytes-written-one-at-a-time", trickler.written)
    await closed("trickle/close", conn, close=True)

    # -- what the server logged through all that, and how it saw each
    # connection end (waiting until it has seen all but this one end)
    conn = await connect(Proto)
    for attempt in range(100):
        try:
            serverLog = await conn.callRemote(ServerLog).addTimeout(CALL_TIMEOUT, reactor)
        except Exception as e:
            emit("ServerLog", {"failed": canonError(e)})
            break
        connections = [json.loads(c) for c in serverLog["connections"]]
        if all(c["lost"] for c in connections[:-1]):
            break
        await task.deferLater(reactor, 0.05, lambda: None)
    else:
        emit("ServerLog", {"failed": "connections still open", "connections": connections})
    emit("ServerLog/events", [json.loads(e) for e in serverLog["events"]])
    emit("ServerLog/connections", connections)
    await closed("ServerLog/close", conn, close=True)

    gc.collect()
    emit("ClientLog", {"events": LOGGED})
    print("#done", flush=True)


def clientMain(args):
    startLogging()

    def deadline():
        print("#TIMEOUT: the client did not finish in time", flush=True)
        os._exit(3)

    watchdog = reactor.callLater(CLIENT_DEADLINE, deadline)
    status = []

    def done(result):
        if watchdog.active():
            watchdog.cancel()
        if isinstance(result, Failure):
            print("#CLIENT CRASHED", flush=True)
            result.printTraceback(file=sys.stdout)
            status.append(1)
        else:
            status.append(0)
        reactor.stop()

    reactor.callWhenRunning(
        lambda: defer.ensureDeferred(runClient(args)).addBoth(done)
    )
    reactor.run()
    sys.stdout.flush()
    sys.exit(status[0] if status else 2)


def main():
    global IMPL, BASE, PORT
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("--impl", choices=["stock", "ampcore"], required=True)
    parser.add_argument("--port", type=int)
    parser.add_argument("--lifetime", type=float, default=60.0)
    args = parser.parse_args()
    IMPL = args.impl
    BASE = chooseBase(args.impl)
    if args.role == "server":
        runServer(args)
    else:
        if args.port is None:
            parser.error("client needs --port")
        PORT = args.port
        clientMain(args)


if __name__ == "__main__":
    main()
