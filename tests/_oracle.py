"""
The stock-Twisted oracle and shared helpers for the ampcore tests.

Stock L{amp.BinaryBoxProtocol} is driven exactly as a connection drives it
(C{makeConnection} then C{dataReceived} per chunk).  The only additions are
recording hooks: which boxes arrived, where in the stream each one ended
(counted from the strings stock hands to C{stringReceived}), and what
C{lengthLimitExceeded} was called with.
"""

import os

from hypothesis import strategies as st
from twisted.protocols import amp

import ampcore

PUREPYTHON = os.environ.get("AMPCORE_PUREPYTHON", "") not in ("", "0")


# ---- stock side -----------------------------------------------------------


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
    A stock BinaryBoxProtocol plus the box receiver and transport it talks
    to.  C{boundaries[i]} is the stream offset where box C{i} ended and
    C{limitOffsets} where an over-long key prefix started; both are only
    meaningful up to the first over-long prefix (stock re-parses its whole
    buffer after one).
    """

    def __init__(self):
        self.boxes = []
        self.boundaries = []
        self.consumed = 0
        self.loseConnectionCalls = 0
        self.limitLengths = []
        self.limitOffsets = []
        self.protocol = _RecordingBinaryBoxProtocol(self)
        self.protocol.makeConnection(self)

    # box receiver
    def startReceivingBoxes(self, sender):
        self.sender = sender

    def ampBoxReceived(self, box):
        self.boxes.append(box)
        self.boundaries.append(self.consumed)

    def stopReceivingBoxes(self, reason):
        pass

    # transport
    def loseConnection(self):
        self.loseConnectionCalls += 1

    def feed(self, data):
        before = len(self.boxes)
        self.protocol.dataReceived(data)
        return self.boxes[before:]

    @property
    def keyLengthLimitExceeded(self):
        return self.protocol._keyLengthLimitExceeded

    @property
    def lastBoundary(self):
        return self.boundaries[-1] if self.boundaries else 0


# ---- ampcore side ---------------------------------------------------------


class RecordingBoxParser(ampcore.BoxParser):
    """An ampcore.BoxParser subclass recording lengthLimitExceeded calls."""

    def __init__(self):
        super().__init__()
        self.limitCalls = []

    def lengthLimitExceeded(self, length):
        self.limitCalls.append(length)


# ---- comparisons ----------------------------------------------------------


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


class Run:
    """What one chunked differential run observed."""

    boxes = None
    limitLength = None  # the over-long key prefix, if one arrived
    limitChunk = None  # index of the chunk that completed it
    unprocessed = None  # ampcore's, after the last chunk


def runDifferential(stream, chunks, laterFeeds=(b"", b"\x00\x00", b"\x00\x01a")):
    """
    Feed C{chunks} (which must make up C{stream}) to ampcore.BoxParser and to
    stock BinaryBoxProtocol, checking after every chunk that ampcore returned
    exactly the boxes stock delivered during that chunk, that the over-long
    key report matches, and that C{unprocessed} is the stream's bytes after
    the last complete box.  Once the limit is hit, each later chunk (and then
    each of C{laterFeeds}) must return [] and report the same length again.
    """
    chunks = list(chunks)
    assert b"".join(chunks) == stream
    stock = StockParser()
    core = RecordingBoxParser()
    run = Run()
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

    for index, chunk in enumerate(chunks):
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
    where stock fails on an over-long key (AttributeError from its helper's
    missing loseConnection), KeyTooLongError with the length and offset stock
    saw.  Returns the boxes, or the KeyTooLongError.
    """
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


# ---- building streams -----------------------------------------------------


def split(data, points):
    """Split C{data} at the given offsets (any order, duplicates allowed)."""
    cuts = sorted({p for p in points if 0 < p < len(data)})
    out, last = [], 0
    for p in cuts:
        out.append(data[last:p])
        last = p
    out.append(data[last:])
    return out


def fixedChunks(data, size):
    if not data:
        return [b""]
    return [data[i : i + size] for i in range(0, len(data), size)]


def standardChunkings(data, extraPoints=()):
    """Whole, 1-byte, 7-byte, and splits at (and just after) given points."""
    chunkings = [
        ("whole", [data]),
        ("1-byte", fixedChunks(data, 1)),
        ("7-byte", fixedChunks(data, 7)),
    ]
    for p in extraPoints:
        chunkings.append((f"split@{p}", split(data, [p])))
        chunkings.append((f"split@{p + 1}", split(data, [p + 1])))
    return chunkings


def chunkings(data):
    """A strategy: one chunking of C{data} (whole, 1, 7 or random points)."""
    n = len(data)
    return st.one_of(
        st.just([data]),
        st.just(fixedChunks(data, 1)),
        st.just(fixedChunks(data, 7)),
        st.integers(2, 64).map(lambda size: fixedChunks(data, size)),
        st.lists(st.integers(0, n), max_size=40).map(lambda ps: split(data, ps)),
    )


def wireString(s):
    return len(s).to_bytes(2, "big") + s


def wireBox(pairs):
    """Hand-built box bytes from (key, value) pairs, in the order given."""
    return b"".join(wireString(k) + wireString(v) for k, v in pairs) + b"\x00\x00"


def keyPositions(stream):
    """
    Offsets of every key-position length prefix in a well-formed stream:
    the first string of each box, every later key and every terminator.
    Returns (offset, boxesCompleteBefore) pairs.
    """
    positions = []
    pos = 0
    done = 0
    while pos < len(stream):
        positions.append((pos, done))
        n = int.from_bytes(stream[pos : pos + 2], "big")
        pos += 2 + n
        if n == 0:
            done += 1
            continue
        n = int.from_bytes(stream[pos : pos + 2], "big")
        pos += 2 + n
    positions.append((pos, done))  # where the next box would start
    return positions


# ---- hypothesis strategies ------------------------------------------------

keys = st.binary(min_size=1, max_size=255)
# Mostly small values, some with a length prefix whose high byte is set
# (legal for values, would be over-long for keys), a few of any legal size.
values = st.one_of(
    st.binary(max_size=24),
    st.binary(min_size=256, max_size=300),
    st.binary(max_size=0xFFFF),
)
boxes = st.dictionaries(keys, values, max_size=6).map(amp.AmpBox)
smallBoxes = st.dictionaries(
    st.binary(min_size=1, max_size=8), st.binary(max_size=8), max_size=4
).map(amp.AmpBox)
streams = st.lists(boxes, max_size=6)


def serializeAll(boxList):
    return b"".join(amp.AmpBox.serialize(b) for b in boxList)


badKeyLengths = st.one_of(
    st.sampled_from([0x100, 0x101, 0x1FF, 0x200, 0x8000, 0xFF00, 0xFFFF]),
    st.integers(0x100, 0xFFFF),
)
