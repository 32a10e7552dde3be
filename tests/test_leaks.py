"""
Reference and memory leak checks for ampcore's C code (they run against the
fallback too, where they are merely cheap).

Every operation, success and error paths alike, is run in a loop; then:

- the count of live pymalloc blocks (sys.getallocatedblocks) and, on a
  debug build, the interpreter-wide reference total (sys.gettotalrefcount)
  must not grow past a small bound after a warmup;
- nor must tracemalloc's traced total, which also sees large objects;
- the parser's own byte buffer is plain malloc, invisible to tracemalloc,
  so parsers holding a large partial box are created and dropped many times
  while the process's resident size is watched;
- and the reference counts of the specific objects the C code touches (the
  caller's values, input buffers, the heap types) must come back unchanged.
"""

import gc
import os
import resource
import sys
import tracemalloc

import pytest
from twisted.protocols import amp

import ampcore

# These checks are for the C code; against the stock-backed fallback they
# only need to run briefly (stock Twisted is far slower per call).
SCALE = 10 if ampcore.HAS_C_EXTENSION else 1

class ParserSub(ampcore.BoxParser):
    calls = 0

    def lengthLimitExceeded(self, length):
        ParserSub.calls += 1


class RaisingParser(ampcore.BoxParser):
    def lengthLimitExceeded(self, length):
        raise ValueError(length)


class SubBox(amp.AmpBox):
    __slots__ = ()


class ListItemsBox(dict):
    def items(self):
        return [[k, v] for k, v in dict.items(self)]


SMALL = amp.AmpBox({b"_ask": b"1", b"_command": b"hello", b"hello": b"x"})
MANY = amp.AmpBox({b"key%02d" % i: b"v" * i for i in range(40)})
STREAM = (ampcore.serialize(SMALL) + ampcore.serialize(MANY)) * 3
LONG_VALUE = b"v" * 0x10000
LONG_KEY = b"k" * 256
TOO_LONG_BOXES = [
    {LONG_KEY: b""},
    amp.AmpBox({b"a": LONG_VALUE}),
    dict(MANY) | {b"key20x": LONG_VALUE},
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
    ListItemsBox({b"a": b"b"}),
]
GOOD_GENERAL = [SubBox(SMALL), {b"a": bytearray(b"xy"), b"b": memoryview(b"z")}]
PARSE_ERRORS = [
    STREAM + b"\x01\x00",
    b"\x00\x01a\x00\x01b\x01\x00",
    "str",
    12,
]


def exercise():
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


def _growth(measure, iterations, body, rounds=2):
    """
    How much C{measure()} grows over C{iterations} calls of C{body}: the
    smallest growth of a few rounds, since a real leak grows in every round
    while a cache warming up (in Twisted, say) only does once.
    """
    growths = []
    for _ in range(rounds):
        gc.collect()
        before = measure()
        for _ in range(iterations):
            body()
        gc.collect()
        growths.append(measure() - before)
    return min(growths)


def test_no_leaks():
    """
    Every path, 10000 times (C extension): the count of live small-object
    blocks, and on debug builds the reference total, must not grow; a leak
    of one object per iteration would be thousands.
    """
    for _ in range(30 * SCALE):
        exercise()
    if hasattr(sys, "gettotalrefcount"):
        growth = _growth(sys.gettotalrefcount, 1000 * SCALE, exercise)
        assert growth < 500, f"reference total grew by {growth}"
    growth = _growth(sys.getallocatedblocks, 1000 * SCALE, exercise)
    assert growth < 500, f"allocated blocks grew by {growth}"


def test_no_leaks_tracemalloc():
    """
    Every path again under tracemalloc, which also sees large objects (a
    leaked 64 KB value, say); one leaked object per iteration would be at
    least 16 KB (500 iterations, C extension).
    """
    tracemalloc.start()
    try:
        for _ in range(100):
            exercise()
        growth = _growth(lambda: tracemalloc.get_traced_memory()[0], 50 * SCALE, exercise)
    finally:
        tracemalloc.stop()
    assert growth < 8 * 1024, f"traced memory grew by {growth} bytes"


def test_no_leaks_simple_ops_many_iterations():
    """The cheapest operations, 20000 times each (C extension)."""
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
            ampcore.serialize({b"a": LONG_VALUE})
        except amp.TooLong:
            pass
        p = ampcore.BoxParser()
        p.feed(data[:5])
        p.feed(data[5:])

    for _ in range(100 * SCALE):
        once()
    growth = _growth(sys.getallocatedblocks, 2000 * SCALE, once)
    assert growth < 500, f"allocated blocks grew by {growth}"


def _rss():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@pytest.mark.skipif(
    "libasan" in os.environ.get("LD_PRELOAD", ""),
    reason="AddressSanitizer quarantines freed memory, so RSS grows by design; "
    "the same test runs in the plain builds",
)
def test_parser_buffers_freed():
    """
    Parsers dropped while holding most of a 64 KB box (and parsers that saw
    an over-long prefix after buffering) must free their byte buffers.
    2000 leaked buffers would be well over 100 MB.
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

    for _ in range(50):
        once()
    gc.collect()
    before = _rss()
    for _ in range(2000):
        once()
    gc.collect()
    growth = _rss() - before
    assert growth < 40 * 1024 * 1024, f"RSS grew by {growth} bytes"


def test_refcounts_of_touched_objects():
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

    once()
    gc.collect()
    before = {name: sys.getrefcount(obj) for name, obj in watched.items()}
    for _ in range(500):
        once()
    gc.collect()
    after = {name: sys.getrefcount(obj) for name, obj in watched.items()}
    assert after == before
    # The bytearray's buffer export was released every time: it can resize.
    ba.append(0)
    ba.pop()
