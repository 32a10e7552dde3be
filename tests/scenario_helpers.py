"""
Trace recording for the differential AMP scenario tests (test_scenarios.py).

A scenario is a function C{scenario(ns, trace)}: C{ns} holds the protocol
classes built on one implementation (stock C{twisted.protocols.amp.AMP} or
C{ampcore.AMP}) and C{trace} collects, in order, everything observable that
happens: transport writes (raw bytes and the boxes they parse to),
C{loseConnection} and producer calls, Deferred results, exceptions raised
out of calls, log events (with their failures) and explicit state
snapshots.  L{run_both} runs a scenario once per implementation;
L{assert_same} asserts the two traces are equal.
"""

import gc
import re
import types

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.protocols import amp
from twisted.python.failure import Failure

try:
    from twisted.internet.testing import StringTransport
except ImportError:  # Twisted < 21.2
    from twisted.test.proto_helpers import StringTransport

import ampcore

# The two implementations every scenario runs against, stock first.
STOCK = ("stock", amp.AMP)
CORE = ("ampcore", ampcore.AMP)
IMPLEMENTATIONS = (STOCK, CORE)

_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")


def unaddress(text):
    """Object addresses differ between runs: blank them out."""
    return _ADDRESS.sub("0xADDR", _FRAME_LINE.sub("", text))


# Lines of a Failure's brief traceback ("path:line:function"), which
# RemoteAmpError puts into its message when it carries a local failure.
# They name the frames the failure saw, and where ampcore's C code stands in
# for Twisted's Python functions there are fewer of them (older Twisted
# records the stack above the catching frame too), so they are dropped; the
# exception type and message around them are compared.
_FRAME_LINE = re.compile(r"^[^\n:]+\.py:\d+:\w+\n|^--- <exception caught here> ---\n",
                         re.MULTILINE)


# Exception attributes worth comparing besides type, str() and args.
_EXC_ATTRS = ("isKey", "isLocal", "value", "keyName", "errorCode",
              "description", "fatal")


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
        return ("exc", type(x).__qualname__, unaddress(str(x)), norm(x.args),
                tuple(attrs))
    if isinstance(x, dict):
        items = sorted(((norm(k), norm(v)) for k, v in x.items()), key=repr)
        return (type(x).__name__, tuple(items))
    if isinstance(x, (list, tuple)):
        return tuple(norm(i) for i in x)
    if isinstance(x, Deferred):
        return ("Deferred",)
    return ("object", type(x).__name__)


class Trace(list):
    """An ordered event list; every event is stored normalized."""

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


class RecordingTransport(StringTransport):
    """A StringTransport that records writes and connection control calls."""

    def __init__(self, trace, label):
        StringTransport.__init__(self)
        self.trace = trace
        self.label = label

    def write(self, data):
        try:
            boxes = amp.parseString(data)
        except Exception as e:  # e.g. an over-long key written on purpose
            boxes = ("unparseable", norm(e))
        self.trace.add(self.label, "write", data, boxes)
        StringTransport.write(self, data)

    def loseConnection(self):
        self.trace.add(self.label, "loseConnection")
        StringTransport.loseConnection(self)

    def pauseProducing(self):
        self.trace.add(self.label, "transport.pauseProducing")
        StringTransport.pauseProducing(self)

    def resumeProducing(self):
        self.trace.add(self.label, "transport.resumeProducing")
        StringTransport.resumeProducing(self)

    def stopProducing(self):
        self.trace.add(self.label, "transport.stopProducing")
        StringTransport.stopProducing(self)


def connect(proto, trace, label):
    """makeConnection over a new RecordingTransport; returns the transport."""
    transport = RecordingTransport(trace, label)
    proto.makeConnection(transport)
    return transport


class Pump:
    """
    Two connected protocols.  L{pump} moves everything each side has
    written so far to the other as one chunk (as iosim does), repeating
    until nothing moves; then, if either side called loseConnection, both
    get connectionLost(ConnectionDone).
    """

    def __init__(self, trace, client, server):
        self.trace = trace
        self.client = client
        self.server = server
        # Server first, as iosim.connectedServerAndClient does.
        self.serverTransport = connect(server, trace, "S")
        self.clientTransport = connect(client, trace, "C")
        self.lost = False

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
                    self.trace.add("deliver", label, len(data))
                    self.trace.call(label + " dataReceived", dst.dataReceived, data)
                    moved = True
        if disconnect and not self.lost and (
            self.clientTransport.disconnecting or self.serverTransport.disconnecting
        ):
            self.lost = True
            for label, proto in (("S", self.server), ("C", self.client)):
                self.trace.add("deliver connectionLost", label)
                self.trace.call(
                    label + " connectionLost",
                    proto.connectionLost,
                    Failure(ConnectionDone("Connection was closed cleanly.")),
                )


def run_scenario(scenario, impl, build, *args):
    """Run one scenario on one implementation; return its trace."""
    name, base = impl
    ns = build(base)
    trace = Trace()
    recorder = LogRecorder(trace)
    globalLogPublisher.addObserver(recorder)
    try:
        scenario(ns, trace, *args)
        # Failed Deferreds dropped by the scenario report when collected.
        gc.collect()
    finally:
        globalLogPublisher.removeObserver(recorder)
    trace.add("collected", tuple(sorted(recorder.collected, key=repr)))
    return list(trace)


def run_both(scenario, build, *args):
    """The (stock, ampcore) traces of a scenario."""
    assert ampcore.HAS_C_EXTENSION, "the C extension is not in use"
    assert ampcore.AMP is not amp.AMP
    return tuple(run_scenario(scenario, impl, build, *args) for impl in IMPLEMENTATIONS)


def assert_same(scenario, build, *args):
    """Run a scenario on both implementations; the traces must be equal."""
    stock, core = run_both(scenario, build, *args)
    assert core == stock
    return stock


def namespace(**kw):
    return types.SimpleNamespace(**kw)
