"""
Python code that runs inside the C parse loop without being a box callback:
finalizers of what a box held when the reader drops it, finalizers the
cyclic GC runs when the reader allocates, and what those call on the same
protocol (dataReceived, the recvd setter, pauseProducing).  The reader's
buffer must not move under the scan: such bytes are queued and parsed after
the current chunk, every box delivered once, in order.

The recvd hand-over from a finalizer is compared with stock: stock's
C{Int16StringReceiver} checks C{recvd} after every string, and a box's
values die when stock drops the box, inside the terminator's string.
"""

import gc

import pytest
from twisted.internet.testing import StringTransport
from twisted.protocols import amp

import ampcore
from helpers import needsExtension

pytestmark = needsExtension()


def box(n, size=3000):
    """A box numbered C{n}: every box of one size has the same length."""
    return amp.AmpBox({b"n": b"%04d" % n, b"v": b"x" * size}).serialize()


def numbered(*ns):
    return [b"%04d" % n for n in ns]


def boxes(first, last, size=3000):
    return b"".join(box(n, size) for n in range(first, last))


class OnDelete:
    """Calls C{action} once, when it dies."""

    def __init__(self, action):
        self.action = action

    def __del__(self):
        action, self.action = self.action, None
        if action is not None:
            action()


def protocolClass(base, onBox):
    class Recorder(base):
        """A protocol that is its own box receiver, recording box numbers."""

        def __init__(self):
            base.__init__(self, self)
            self.seen = []

        def startReceivingBoxes(self, sender):
            pass

        def stopReceivingBoxes(self, reason):
            pass

        def ampBoxReceived(self, received):
            self.seen.append(received.get(b"n"))
            onBox(self, received)

    return Recorder


def connected(cls):
    proto = cls()
    proto.makeConnection(StringTransport())
    return proto


def feedChunks(proto, data, size):
    for i in range(0, len(data), size):
        # Where bytes fed from inside this call go in the stream: after it.
        proto.fedAt = min(len(data), i + size)
        proto.dataReceived(data[i : i + size])


def chunkEnding(data, size, position):
    """Where the chunk of C{data} cut every C{size} bytes that holds byte
    C{position - 1} ends."""
    return min(len(data), -(-position // size) * size)


def stockSees(data):
    """The boxes a stock protocol fed C{data} at once delivers."""
    proto = connected(protocolClass(amp.BinaryBoxProtocol, lambda p, b: None))
    proto.dataReceived(data)
    return proto.seen


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 20])
def test_dataReceived_from_a_dropped_box_finalizer(chunk):
    """
    A box callback stores an object with C{__del__} in the box it was
    given; the reader drops the box after the callback, and that finalizer
    feeds the protocol more bytes.  (This crashed ampcore: the nested call
    parsed on the buffer the outer scan was reading.)  The bytes fed go into
    the stream after the chunk being parsed: the boxes are those stock
    delivers from that stream (garbled alike where a chunk ends inside a
    box).
    """
    outer, later = boxes(0, 40), boxes(100, 130)

    def onBox(proto, received):
        if received.get(b"n") == b"0003":
            received[b"zz"] = OnDelete(lambda: proto.dataReceived(later))

    proto = connected(protocolClass(ampcore.BinaryBoxProtocol, onBox))
    feedChunks(proto, outer, chunk)
    cut = chunkEnding(outer, chunk, len(boxes(0, 4)))
    assert proto.seen == stockSees(outer[:cut] + later + outer[cut:])
    if chunk in (1, 1 << 20):
        # Chunks that end on a box boundary there: nothing is garbled.
        assert sorted(proto.seen) == numbered(*range(40), *range(100, 130))


class Cycle:
    """Garbage that only the cyclic GC frees, feeding a protocol when it is."""

    def __init__(self, proto, data, fed):
        self.me = self
        self.proto, self.data, self.fed = proto, data, fed

    def __del__(self):
        data, self.data = self.data, None
        if data is not None:
            self.fed.append((getattr(self.proto, "fedAt", None), data))
            self.proto.dataReceived(data)


@pytest.fixture
def eagerGC():
    before = gc.get_threshold()
    gc.collect()
    gc.set_threshold(1, 1, 1)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.collect()


@pytest.mark.parametrize("perChunk", [1, 3, 30])
def test_dataReceived_from_a_cyclic_gc_finalizer(eagerGC, perChunk):
    """
    Each box callback leaves a garbage cycle whose finalizer feeds the
    protocol; with the GC collecting at every allocation, those finalizers
    run wherever the reader allocates a box or a value (CPython 3.11) or at
    the next bytecode boundary (3.12 and later).  Chunks end on box
    boundaries, so wherever the fed bytes are queued, every box is delivered
    once, each stream in order.
    """
    fed = []
    counter = iter(range(1000, 2000))

    def onBox(proto, received):
        if int(received[b"n"]) < 1000:
            n = next(counter)
            Cycle(proto, box(n, 10), fed)

    proto = connected(protocolClass(ampcore.BinaryBoxProtocol, onBox))
    feedChunks(proto, boxes(0, 30, 40), perChunk * len(box(0, 40)))
    gc.collect()
    assert len(fed) == 30
    # Every box once; the outer ones in order, and the fed ones too.
    assert sorted(proto.seen) == numbered(*range(30), *range(1000, 1030))
    assert [n for n in proto.seen if int(n) < 1000] == numbered(*range(30))
    assert [n for n in proto.seen if int(n) >= 1000] == numbered(*range(1000, 1030))


@pytest.mark.parametrize("base", [amp.BinaryBoxProtocol, ampcore.BinaryBoxProtocol])
@pytest.mark.parametrize("chunk", [1, 9, 1 << 20])
def test_recvd_set_by_a_dropped_box_finalizer(base, chunk):
    """
    A finalizer run as the reader drops box 3 assigns C{recvd}: the rest of
    the stream is replaced by what it assigned, right after that box, as
    stock does (stock drops a box inside its terminator's string and checks
    C{recvd} after each string).
    """
    replacement = boxes(200, 203)

    def onBox(proto, received):
        if received.get(b"n") == b"0003":

            def handOver():
                proto.recvd = replacement

            received[b"zz"] = OnDelete(handOver)

    proto = connected(protocolClass(base, onBox))
    feedChunks(proto, boxes(0, 10), chunk)
    expected = numbered(0, 1, 2, 3, 200, 201, 202)
    if chunk == 1:
        # Fed byte by byte, each chunk ends inside a string: the hand-over
        # happens as box 3's chunk ends, and later chunks go on from the
        # replacement's (complete) bytes.
        assert proto.seen[:7] == expected
    else:
        assert proto.seen == expected


def test_pause_and_dataReceived_from_a_dropped_box_finalizer():
    """
    A finalizer pauses the protocol and feeds it: the bytes are kept, in
    order, for resumeProducing, whose dataReceived parses them.  (The paused
    branch appended to the buffer the outer scan was reading.)
    """
    later = boxes(100, 105)

    def onBox(proto, received):
        if received[b"n"] == b"0002":

            def pauseAndFeed():
                proto.pauseProducing()
                proto.dataReceived(later)

            received[b"zz"] = OnDelete(pauseAndFeed)

    proto = connected(protocolClass(ampcore.BinaryBoxProtocol, onBox))
    feedChunks(proto, boxes(0, 6), 1 << 20)
    assert proto.seen == numbered(0, 1, 2)
    proto.resumeProducing()
    assert proto.seen == numbered(*range(6), *range(100, 105))


def test_reentrant_dataReceived_from_gc_inside_a_large_value(eagerGC):
    """
    The reader's buffer holds a large value being assembled chunk by chunk
    when a finalizer feeds the protocol: nothing it reads moves, and the
    fed bytes go into the stream after the chunk being parsed (here inside
    box 1's value, so the boxes after are garbled, as stock garbles them
    fed that stream).
    """
    fed = []

    def onBox(proto, received):
        if received.get(b"n") == b"0000":
            Cycle(proto, boxes(100, 103), fed)

    proto = connected(protocolClass(ampcore.BinaryBoxProtocol, onBox))
    data = box(0, 10) + box(1, 60000) + box(2, 10)
    feedChunks(proto, data, 1000)
    gc.collect()
    [(cut, later)] = fed
    assert cut is not None
    assert proto.seen == stockSees(data[:cut] + later + data[cut:])
