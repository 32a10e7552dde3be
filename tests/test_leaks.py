"""
Reference and memory leak checks for ampcore's C code: the codec (serialize,
parse, BoxParser) and the dispatcher and protocol cores.

Each test runs one step, success and error paths alike, many times over
with L{assertNoLeaks}, which measures every window of iterations the same
way: the interpreter's reference total on a debug CPython
(C{sys.gettotalrefcount}, which CI's python3.11-dbg run has), the count of
live pymalloc blocks, and where a test asks, tracemalloc's traced total
(which also sees large objects), the resident size (which also sees the
plain-malloc byte buffers of the C parser) and the reference counts of
the objects the C code is handed.

The codec checks run against the fallback too, where they are merely
cheap; the protocol checks need the C extension.
"""

import gc
import os
import resource
import sys
import tracemalloc

import pytest
from twisted.internet.error import ConnectionDone
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python import failure, log

import ampcore
from helpers import (
    TOO_LONG_KEY,
    TOO_LONG_VALUE,
    Hello,
    ItemsListsBox,
    ItemsListsDict,
    Pump,
    SubBox,
    makeClasses,
    needsExtension,
)

# The codec checks are for the C code; against the stock-backed fallback
# they only need to run briefly (stock Twisted is far slower per call).
SCALE = 10 if ampcore.HAS_C_EXTENSION else 1

# Growth tolerated per window, whatever its length: a leak of one object or
# reference per iteration would be at least 500 (most windows are far
# longer).
MAX_REFS = 500
MAX_BLOCKS = 500


def _rss():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def assertNoLeaks(step, iterations, *, warmup, maxBytes=None, maxRss=None, watched=None,
                  windows=3):
    """
    Call C{step()} C{warmup} times, then C{windows} times C{iterations}
    times.  Across each window (after C{gc.collect()} at both ends) these
    are measured:

    - the interpreter's reference total (C{sys.gettotalrefcount}, debug
      CPython only), which must grow by less than L{MAX_REFS};
    - the count of live pymalloc blocks (C{sys.getallocatedblocks}), by less
      than L{MAX_BLOCKS};
    - with C{maxBytes}, the memory tracemalloc traces, by less than that
      (tracing starts before the warm-up, so caches that fill then do not
      count);
    - with C{maxRss}, the process's resident size, by less than that;
    - with C{watched} (name -> object), the reference count of each object,
      not at all.

    A leak grows in every window; a cache, a free list or garbage from
    earlier tests collected at an odd moment grows in one.  So a measure
    fails when it grows past its limit in every window.
    """
    measures = {"allocated blocks": (sys.getallocatedblocks, MAX_BLOCKS)}
    if hasattr(sys, "gettotalrefcount"):
        measures["reference total"] = (sys.gettotalrefcount, MAX_REFS)
    if maxBytes is not None:
        measures["traced memory"] = (lambda: tracemalloc.get_traced_memory()[0], maxBytes)
    if maxRss is not None:
        measures["resident size"] = (_rss, maxRss)
    watched = watched or {}

    def snapshot():
        gc.collect()
        values = {name: measure() for name, (measure, _) in measures.items()}
        refcounts = {name: sys.getrefcount(obj) for name, obj in watched.items()}
        return values, refcounts

    growths = {name: [] for name in measures}
    refGrowths = {name: [] for name in watched}
    if maxBytes is not None:
        tracemalloc.start()
    try:
        for _ in range(warmup):
            step()
        for window in range(windows):
            before, refsBefore = snapshot()
            for _ in range(iterations):
                step()
            after, refsAfter = snapshot()
            for name in measures:
                growths[name].append(after[name] - before[name])
            for name in watched:
                refGrowths[name].append(refsAfter[name] - refsBefore[name])
    finally:
        if maxBytes is not None:
            tracemalloc.stop()
    for name, (_, limit) in measures.items():
        assert min(growths[name]) < limit, (
            f"{name} grew past {limit} in every window of {iterations} "
            f"iterations: {growths[name]}"
        )
    for name, grew in refGrowths.items():
        assert min(grew) == 0, f"references to {name} grew in every window: {grew}"


# ---- the codec ------------------------------------------------------------------------


class ParserSub(ampcore.BoxParser):
    calls = 0

    def lengthLimitExceeded(self, length):
        ParserSub.calls += 1


class RaisingParser(ampcore.BoxParser):
    def lengthLimitExceeded(self, length):
        raise ValueError(length)


SMALL = amp.AmpBox({b"_ask": b"1", b"_command": b"hello", b"hello": b"x"})
MANY = amp.AmpBox({b"key%02d" % i: b"v" * i for i in range(40)})
STREAM = (ampcore.serialize(SMALL) + ampcore.serialize(MANY)) * 3
TOO_LONG_BOXES = [
    {TOO_LONG_KEY: b""},
    amp.AmpBox({b"a": TOO_LONG_VALUE}),
    dict(MANY) | {b"key20x": TOO_LONG_VALUE},
    SubBox({b"a": bytearray(0x10000)}),
]
ERROR_BOXES = [
    {"str": b"x"},
    {b"a": "str"},
    {b"a": 1},
    {b"a": None},
    {b"a": b"", "b": b""},
    {b"a": [1]},
    None,
]
GOOD_GENERAL = [
    SubBox(SMALL),
    {b"a": bytearray(b"xy"), b"b": memoryview(b"z")},
    ItemsListsBox({b"a": b"b"}),
    ItemsListsDict({b"a": b"b"}),
]
PARSE_ERRORS = [
    STREAM + b"\x01\x00",
    b"\x00\x01a\x00\x01b\x01\x00",
    "str",
    12,
]


def exerciseCodec():
    # serialize: fast path, heap path, general path, error paths
    ampcore.serialize(SMALL)
    ampcore.serialize(MANY)
    for box in GOOD_GENERAL:
        ampcore.serialize(box)
    for box in TOO_LONG_BOXES + ERROR_BOXES:
        try:
            ampcore.serialize(box)
        except Exception:
            pass
    # parse: boxes, truncation, over-long prefix, bad input
    ampcore.parse(STREAM)
    ampcore.parse(bytearray(STREAM[:-5]))
    ampcore.parse(None)
    for data in PARSE_ERRORS:
        try:
            ampcore.parse(data)
        except (AttributeError, TypeError):
            pass
    # BoxParser: resumption across chunks, the in-place path, errors
    parser = ParserSub()
    parser.feed(STREAM[:13])
    parser.feed(memoryview(STREAM)[13:200])
    parser.feed(STREAM[200:])
    parser.unprocessed
    try:
        parser.feed("str")
    except TypeError:
        pass
    parser.feed(b"\x00\x01k\x00\x02vv\x00\x01q")  # dropped mid-box, key pending
    parser2 = ParserSub()
    parser2.feed(STREAM + b"\x00\x00\x02\x00")
    parser2.feed(b"more")
    parser2.keyLengthLimitExceeded
    parser3 = RaisingParser()
    try:
        parser3.feed(STREAM[:50] + b"\x01\x00")
    except ValueError:
        pass


def test_codec_paths_do_not_leak():
    """Every codec path, 1000 times a window (10 with the fallback)."""
    assertNoLeaks(exerciseCodec, 1000 * SCALE, warmup=30 * SCALE)


def test_codec_paths_do_not_leak_traced_memory():
    """
    Every codec path again under tracemalloc, which also sees large objects
    (a leaked 64 KB value, say); one leaked object per iteration would be at
    least 16 KB a window (C extension).
    """
    assertNoLeaks(exerciseCodec, 50 * SCALE, warmup=100, maxBytes=8 * 1024)


def test_simple_codec_operations_do_not_leak_over_many_iterations():
    """The cheapest operations, 20000 times a window (C extension)."""
    data = ampcore.serialize(SMALL)
    bad = b"\x01\x00"

    def once():
        ampcore.serialize(SMALL)
        ampcore.parse(data)
        try:
            ampcore.parse(bad)
        except AttributeError:
            pass
        try:
            ampcore.serialize({b"a": TOO_LONG_VALUE})
        except amp.TooLong:
            pass
        p = ampcore.BoxParser()
        p.feed(data[:5])
        p.feed(data[5:])

    assertNoLeaks(once, 2000 * SCALE, warmup=100 * SCALE)


@pytest.mark.skipif(
    "libasan" in os.environ.get("LD_PRELOAD", ""),
    reason="AddressSanitizer quarantines freed memory, so RSS grows by design; "
    "the same test runs in the plain builds",
)
def test_parser_buffers_are_freed():
    """
    Parsers dropped while holding most of a 64 KB box (and parsers that saw
    an over-long prefix after buffering) must free their byte buffers,
    which are plain malloc, invisible to tracemalloc.  2000 leaked buffers
    would be well over 100 MB.
    """
    big = ampcore.serialize(amp.AmpBox({b"k": b"x" * 0xFFFF}))

    def once():
        p = ampcore.BoxParser()
        p.feed(big[:100])
        p.feed(big[100:-1])
        q = ampcore.BoxParser()
        q.feed(big[:-1] + b"")
        q.feed(big[-1:] + b"\x00\x01k" + b"\x00" * 3)
        q.feed(b"\x01\x00")
        q.feed(b"z" * 1000)

    assertNoLeaks(once, 2000, warmup=50, maxRss=40 * 1024 * 1024)


def test_reference_counts_of_touched_objects_come_back():
    """
    The caller's values, the input buffers and the types the C code uses
    have the same reference counts after 500 more operations; and the
    bytearray's buffer export was released every time.
    """
    value = b"w" * 0x10000
    key = b"the-key"
    inputs = bytes(STREAM)
    ba = bytearray(STREAM)
    watched = {
        "value": value,
        "key": key,
        "input bytes": inputs,
        "input bytearray": ba,
        "BoxParser": ampcore.BoxParser,
        "ParserSub": ParserSub,
        "AmpBox": amp.AmpBox,
        "TooLong": amp.TooLong,
        "KeyTooLongError": ampcore.KeyTooLongError,
    }
    boxWithValue = {key: value}

    def once():
        try:
            ampcore.serialize(boxWithValue)
        except amp.TooLong as e:
            assert e.value is value
        try:
            ampcore.serialize(SubBox(boxWithValue))
        except amp.TooLong:
            pass
        ampcore.parse(inputs)
        ampcore.parse(ba)
        try:
            ampcore.parse(inputs + b"\x01\x00")
        except AttributeError:
            pass
        for cls in (ampcore.BoxParser, ParserSub):
            p = cls()
            p.feed(memoryview(ba)[:7])
            p.feed(inputs[7:])
            p.feed(b"\xff\xff")
            p.feed(ba)

    assertNoLeaks(once, 500, warmup=1, watched=watched)
    # The bytearray's buffer export was released every time: it can resize.
    ba.append(0)
    ba.pop()


# ---- the dispatcher and protocol cores -------------------------------------------------------

# One leaked object per iteration of a window (2000) would be ~100 KB or more.
PROTOCOL_ITERATIONS = 2000
# Long enough for CPython's free lists to fill before the first measured
# window (it keeps up to 2,000 spare tuples of each small size).
PROTOCOL_WARMUP = 2000
PROTOCOL_MAX_BYTES = 24 * 1024

EchoPeer = makeClasses(ampcore.AMP).EchoPeer


@pytest.fixture
def quietLogs(monkeypatch):
    """Logged failures must not pile up in a log buffer during the loops."""
    monkeypatch.setattr(amp, "_log", Logger(observer=lambda event: None), raising=False)
    monkeypatch.setattr(log, "err", lambda *a, **k: None)


def connected():
    """Two connected EchoPeers, and the Pump between them."""
    client, server = EchoPeer(), EchoPeer()
    return client, server, Pump(client, server)


def assertProtocolStepDoesNotLeak(step):
    assertNoLeaks(step, PROTOCOL_ITERATIONS, warmup=PROTOCOL_WARMUP,
                  maxBytes=PROTOCOL_MAX_BYTES)


def swallow(f):
    return None


@needsExtension()
def test_round_trips_do_not_leak(quietLogs):
    client, server, pump = connected()

    def step():
        results = []
        client.callRemote(Hello, hello=b"x").addCallback(results.append)
        client.callRemoteString(b"echo", value=b"v").addCallback(results.append)
        client.callRemote(Hello, hello=b"declared").addErrback(results.append)
        client.callRemoteString(b"nosuch").addErrback(results.append)
        pump.pump(disconnect=False)
        assert len(results) == 4

    assertProtocolStepDoesNotLeak(step)


@needsExtension()
def test_failing_responders_do_not_leak(quietLogs):
    def step():
        client, server, pump = connected()
        client.callRemote(Hello, hello=b"undeclared").addErrback(swallow)
        client.callRemoteString(b"none").addErrback(swallow)
        pump.pump(disconnect=False)
        client.connectionLost(failure.Failure(ConnectionDone()))
        server.connectionLost(failure.Failure(ConnectionDone()))

    assertProtocolStepDoesNotLeak(step)


@needsExtension()
def test_bad_input_does_not_leak(quietLogs):
    def step():
        client, server, pump = connected()
        for data in (
            b"\x00\x00",  # empty box: NoEmptyBoxes
            amp.AmpBox({b"_answer": b"ffff"}).serialize(),  # unknown tag
            amp.AmpBox({b"_ask": b"1"}).serialize(),  # ask without command
        ):
            with pytest.raises((amp.NoEmptyBoxes, KeyError)):
                server.dataReceived(data)
            server.recvd = b""
        d = client.callRemote(Hello, hello=b"x")
        d.addErrback(swallow)
        # An error box without a description: KeyError, request dropped.
        with pytest.raises(KeyError):
            client.dataReceived(amp.AmpBox({b"_error": b"1", b"_error_code": b"X"}).serialize())
        with pytest.raises(amp.TooLong):
            client.callRemoteString(b"echo", value=b"x" * 65536)
        with pytest.raises(TypeError):
            client.callRemoteString(b"echo", value="str")
        with pytest.raises(UnicodeEncodeError):
            client.callRemoteString(b"echo", **{"\u00e9": b"x"})
        d = client.callRemote(Hello, hello=b"y")
        d.addErrback(swallow)
        server.dataReceived(b"\x00\x05hello\x01\x00")  # over-long key prefix
        server.dataReceived(b"more")
        client.connectionLost(failure.Failure(ConnectionDone()))
        server.connectionLost(failure.Failure(ConnectionDone()))
        with pytest.raises(amp.ProtocolSwitched):
            server._locked = True
            server.sendBox(amp.AmpBox(a=b"b"))

    assertProtocolStepDoesNotLeak(step)


@needsExtension()
def test_partial_boxes_do_not_leak(quietLogs):
    payload = amp.AmpBox(_command=b"echo", _ask=b"1", value=b"v" * 300).serialize()

    def step():
        client, server, pump = connected()
        for i in range(0, len(payload), 7):
            server.dataReceived(payload[i : i + 7])
        server.dataReceived(payload[:100])  # left half-received
        server.connectionLost(failure.Failure(ConnectionDone()))

    assertProtocolStepDoesNotLeak(step)


class CountingIndex:
    """A _counter that is no int: counted by its __add__, formatted
    through its __index__."""

    def __init__(self, n):
        self.n = n

    def __add__(self, other):
        return CountingIndex(self.n + other)

    def __index__(self):
        return self.n


@needsExtension()
def test_counter_slow_paths_do_not_leak(quietLogs):
    """_counter held as a Python object (past 2**63, negative, a bool, a
    non-int), every way in and out of it: set, counted, read, deleted,
    replaced from inside its own __add__, failing at += and at %x, and
    dropped with the protocol in a reference cycle."""

    def step():
        client, server, pump = connected()
        for value in (2**63 - 1, 2**64 + 3, -4, True, CountingIndex(9)):
            client._counter = value
            client.callRemoteString(b"echo", value=b"v").addErrback(swallow)
            client._nextTag()
            client._counter
        del client._counter
        for value in ("s", 1.5, None):
            client._counter = value
            with pytest.raises(TypeError):
                client._nextTag()
        client._counter = 2**70
        client._nextTag()
        pump.pump(disconnect=False)
        cycle = CountingIndex(-3)
        cycle.proto = client  # a cycle through the C field: the GC's to break
        client._counter = cycle
        client.connectionLost(failure.Failure(ConnectionDone()))
        server.connectionLost(failure.Failure(ConnectionDone()))

    assertProtocolStepDoesNotLeak(step)
