"""
Memory per connection, and the cap on one box (maxBoxSize).

What a peer can make a protocol hold with one box that never ends: ampcore
keeps the box's keys and values as objects and only the bytes after the
last complete one raw, so it holds what stock holds.  Measured as peak RSS
growth in a fresh process per side (the C reader's buffer is malloc'd, out
of tracemalloc's sight), for small distinct keys, 65,535-byte values and one
repeated key.

maxBoxSize (ampcore only, beyond stock): a box that would cost more drops
the connection with an ampcore.BoxTooLong as the reason; memory stays under
the cap plus one value.
"""

import os
import subprocess
import sys
import textwrap
import tracemalloc

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.protocols import amp
from twisted.python.failure import Failure

import ampcore
from helpers import Hello, needsExtension

pytestmark = needsExtension()


def pair(key, value):
    return len(key).to_bytes(2, "big") + key + len(value).to_bytes(2, "big") + value


def endlessPairs(kind, total):
    """The pairs of a box that never ends, about C{total} bytes of them."""
    if kind == "small-keys":
        return (pair(b"%d" % i, b"v") for i in range(total // 10))
    if kind == "large-values":
        return (pair(b"%d" % i, b"x" * 65535) for i in range(total // 65541))
    if kind == "repeated-key":
        return (pair(b"k", b"x" * 65535) for i in range(total // 65540))
    raise ValueError(kind)


def endlessBox(kind, total):
    return b"".join(endlessPairs(kind, total))


def chunksOf(pairs, size=65536):
    """Bytes of C{pairs}, in chunks of C{size}, made as they are fed."""
    pending = b""
    for p in pairs:
        pending += p
        while len(pending) >= size:
            yield pending[:size]
            pending = pending[size:]
    if pending:
        yield pending


_MEASURE = textwrap.dedent(
    """
    import sys
    from twisted.internet.testing import StringTransport
    from twisted.protocols import amp
    sys.path.insert(0, {tests!r})
    from test_box_memory import chunksOf, endlessPairs
    import ampcore

    def rssKiB():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4

    base = ampcore.AMP if sys.argv[1] == "ampcore" else amp.AMP
    proto = base()
    proto.maxBoxSize = None
    proto.makeConnection(StringTransport())
    chunks = chunksOf(endlessPairs(sys.argv[2], int(sys.argv[3])))
    for chunk in chunks:  # a first chunk, so that both sides start warm
        proto.dataReceived(chunk)
        break
    before = rssKiB()
    for chunk in chunks:
        proto.dataReceived(chunk)
    assert not proto.transport.disconnecting
    print(rssKiB() - before)
    """
)


def growthKiB(impl, kind, total):
    script = _MEASURE.format(tests=os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-c", script, impl, kind, str(total)],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(
    os.environ.get("AMPCORE_HYPOTHESIS_PROFILE") == "sanitizer",
    reason="under AddressSanitizer RSS measures the sanitizer's shadow and quarantine",
)
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="RSS read from /proc")
@pytest.mark.parametrize(
    "kind, total",
    [("small-keys", 2 << 20), ("large-values", 24 << 20), ("repeated-key", 48 << 20)],
)
def test_one_endless_box_costs_what_it_costs_stock(kind, total):
    stock = growthKiB("stock", kind, total)
    core = growthKiB("ampcore", kind, total)
    # RSS moves by allocator noise: allow 10 % and 4 MiB over stock.
    assert core <= stock * 1.10 + 4096, (kind, stock, core)
    if kind == "repeated-key":
        assert core < 8192, core  # flat: only the last value is held


# ---- maxBoxSize on a protocol -------------------------------------------------------


def connected(maxBoxSize="default"):
    proto = ampcore.AMP()
    if maxBoxSize != "default":
        proto.maxBoxSize = maxBoxSize
    proto.makeConnection(StringTransport())
    return proto


def test_default_cap_is_64_MiB():
    assert ampcore.AMP.maxBoxSize == ampcore.BinaryBoxProtocol.maxBoxSize
    assert ampcore.AMP.maxBoxSize == 64 * 1024 * 1024 == ampcore.DEFAULT_MAX_BOX_SIZE
    assert ampcore.BoxParser().maxBoxSize == ampcore.DEFAULT_MAX_BOX_SIZE
    assert issubclass(ampcore.BoxTooLong, amp.TooLong)


def test_each_key_and_value_costs_its_length_plus_BOX_STRING_COST():
    """The cost the C reader counts is the one ampcore.BOX_STRING_COST
    documents (the two are written in C and in Python)."""
    box = amp.AmpBox({b"k": b"v" * 10}).serialize()
    exact = 1 + 10 + 2 * ampcore.BOX_STRING_COST
    assert ampcore.parse(box, exact) == [{b"k": b"v" * 10}]
    with pytest.raises(ampcore.BoxTooLong) as caught:
        ampcore.parse(box, exact - 1)
    assert (caught.value.maxBoxSize, caught.value.size) == (exact - 1, exact)


def test_a_box_past_the_cap_drops_the_connection_with_BoxTooLong():
    proto = connected(10_000)
    d = proto.callRemote(Hello, hello=b"x")
    proto.dataReceived(pair(b"a", b"x" * 5000))
    assert not proto.transport.disconnecting
    proto.dataReceived(pair(b"b", b"x" * 5000))
    assert proto.transport.disconnecting
    # What arrives later is not even read.
    proto.dataReceived(b"\x00\x01c" * 100_000)
    proto.connectionLost(Failure(ConnectionDone()))
    failures = []
    d.addErrback(failures.append)
    [failure] = failures
    error = failure.value
    assert isinstance(error, ampcore.BoxTooLong) and isinstance(error, amp.TooLong)
    assert (error.isKey, error.isLocal) == (False, False)
    assert error.maxBoxSize == 10_000
    assert error.size == 2 * (1 + 64 + 5000 + 64)
    assert "maxBoxSize (10000 bytes)" in str(error)


def test_cap_counts_before_the_value_arrives():
    """The prefix of a value that would break the cap is enough."""
    proto = connected(1000)
    proto.dataReceived(pair(b"a", b"x" * 100) + b"\x00\x01b" + b"\x03\xe8")
    assert proto.transport.disconnecting


def test_a_box_within_the_cap_is_delivered():
    seen = []

    class Receiver(ampcore.AMP):
        def ampBoxReceived(self, box):
            seen.append(box)

    proto = Receiver()
    proto.maxBoxSize = (1 + 64) + (100 + 64) + (1 + 64) + (1 + 64)
    proto.makeConnection(StringTransport())
    data = amp.AmpBox({b"a": b"x" * 100, b"b": b"y"}).serialize()
    for i in range(len(data)):
        proto.dataReceived(data[i : i + 1])
    assert seen == [{b"a": b"x" * 100, b"b": b"y"}]
    assert not proto.transport.disconnecting
    proto.maxBoxSize -= 1
    proto.dataReceived(data)
    assert proto.transport.disconnecting
    assert len(seen) == 1


def test_no_cap_with_None_and_on_a_subclass():
    class Uncapped(ampcore.AMP):
        maxBoxSize = None

    proto = Uncapped()
    proto.makeConnection(StringTransport())
    proto.dataReceived(endlessBox("large-values", 4 << 20))
    assert not proto.transport.disconnecting

    class Small(ampcore.AMP):
        maxBoxSize = 100

    proto = Small()
    proto.makeConnection(StringTransport())
    proto.dataReceived(pair(b"a", b"x" * 100))
    assert proto.transport.disconnecting


@pytest.mark.parametrize(
    "value, error", [(-1, ValueError), ("64", TypeError), (1.5, TypeError)]
)
def test_a_bad_cap_is_an_error_of_dataReceived(value, error):
    proto = connected(value)
    with pytest.raises(error, match="maxBoxSize"):
        proto.dataReceived(pair(b"a", b"b"))


def test_memory_stays_under_the_cap_plus_one_value():
    """Python-heap peak while an endless box of tiny pairs is refused."""
    cap = 1 << 20
    proto = connected(cap)
    data = endlessBox("small-keys", 4 << 20)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(0, len(data), 4096):
            proto.dataReceived(data[i : i + 4096])
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert proto.transport.disconnecting
    assert peak <= cap + 65535 + 4096, peak


# ---- maxBoxSize on BoxParser and parse: the C reader against the fallback -----------

from hypothesis import given, strategies as st  # noqa: E402

from ampcore import _fallback  # noqa: E402

_boxes = st.lists(
    st.dictionaries(
        st.binary(min_size=1, max_size=8), st.binary(max_size=300), max_size=6
    ),
    min_size=1,
    max_size=5,
)


def outcome(call):
    try:
        return ("ok", [dict(b) for b in call()])
    except Exception as e:
        return ("raised", type(e).__name__, str(e))


@given(_boxes, st.one_of(st.none(), st.integers(0, 3000)), st.data())
def test_cap_on_parse_and_BoxParser_as_the_fallback(boxes, cap, data):
    stream = b"".join(amp.AmpBox(b).serialize() for b in boxes)
    stream += data.draw(st.binary(max_size=10))  # a box left unfinished
    assert outcome(lambda: ampcore.parse(stream, cap)) == outcome(
        lambda: _fallback.parse(stream, maxBoxSize=cap)
    )
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    chunks = [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)])]
    chunks += [b"", b"\x00\x01a"]
    traces = []
    for parser in (ampcore.BoxParser(maxBoxSize=cap), _fallback.BoxParser(cap)):
        trace = []
        for chunk in chunks:
            trace.append(outcome(lambda: parser.feed(chunk)))
            trace.append(parser.unprocessed)
        traces.append(trace)
    assert traces[0] == traces[1]


def test_BoxParser_keeps_the_boxes_of_a_feed_that_failed():
    """The boxes a failed feed completed come out of the next feed."""
    parser = ampcore.BoxParser(maxBoxSize=200)
    first = amp.AmpBox({b"a": b"1"}).serialize()
    with pytest.raises(ampcore.BoxTooLong):
        parser.feed(first + pair(b"b", b"x" * 200))
    assert parser.feed(b"more") == [{b"a": b"1"}]
    with pytest.raises(ampcore.BoxTooLong):
        parser.feed(b"more")


def test_BoxParser_keeps_the_boxes_of_a_feed_out_of_memory():
    """
    Memory runs out at each allocation in turn: a feed that raises either
    took none of its bytes (nothing parsed, nothing buffered: the caller
    feeds them again) or keeps what it completed for the next feed, and
    the rest of the stream buffered.  No box is lost or repeated.
    """
    _testcapi = pytest.importorskip("_testcapi")
    stream = b"".join(amp.AmpBox({b"n": b"%d" % i}).serialize() for i in range(20))
    for start in range(1, 200):
        parser = ampcore.BoxParser()
        got = []
        _testcapi.set_nomemory(start, start + 1)
        try:
            try:
                got += parser.feed(stream)
            except MemoryError:
                pass
        finally:
            _testcapi.remove_mem_hooks()
        got += parser.feed(b"")
        if not got and parser.unprocessed == b"":
            got += parser.feed(stream)  # the failed feed took nothing
        assert [b[b"n"] for b in got] == [b"%d" % i for i in range(20)], start
