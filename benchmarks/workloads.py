"""
The benchmark workloads: the same unit of work done by stock Twisted AMP and
by ampcore.

A L{Case} names a unit of work.  C{case.setup(side)}, C{side} being
C{"stock"} (C{twisted.protocols.amp}) or C{"ampcore"}, returns a
L{Workload}: C{run()} does the unit once and returns what it got,
C{time(loops)} returns the seconds C{loops} units took, C{close()} lets go.
Both sides run the same code; only the names in L{Side} differ.

 - run.py times both sides with pyperf;
 - tests/test_benchmark_workloads.py checks that both sides give the same
   results, and those their inputs call for;
 - under PyPy, run.py --pypy runs C{workloads.py CASE}, which times the stock
   side with the simple loop of L{measure}: so this module keeps to Python
   3.9 and imports ampcore only for the ampcore side.
"""

import argparse
import functools
import gc
import itertools
import json
import platform
import random
import sys
import types
import zlib
from time import perf_counter

from twisted.protocols import amp

SIDES = ("stock", "ampcore")


class _Collector:
    """Box receiver and transport for a stock L{amp.BinaryBoxProtocol}."""

    def __init__(self):
        self.boxes = []
        self.ampBoxReceived = self.boxes.append

    def startReceivingBoxes(self, sender):
        pass

    stopReceivingBoxes = loseConnection = startReceivingBoxes


def stockFeed(chunks):
    """Feed C{chunks} to a fresh stock BinaryBoxProtocol; return its boxes."""
    collector = _Collector()
    protocol = amp.BinaryBoxProtocol(collector)
    protocol.makeConnection(collector)
    dataReceived = protocol.dataReceived
    for chunk in chunks:
        dataReceived(chunk)
    return collector.boxes


def Side(name):
    """The names a side's workloads use: C{AMP}, C{parse}, C{serialize}, and
    C{feed} (a fresh incremental parser fed a list of chunks)."""
    if name == "stock":
        return types.SimpleNamespace(
            AMP=amp.AMP, parse=amp.parseString, serialize=amp.AmpBox.serialize,
            feed=stockFeed, name=name,
        )  # fmt: skip
    if name != "ampcore":
        raise ValueError("side must be one of %s, not %r" % (SIDES, name))
    import ampcore

    def ampcoreFeed(chunks):
        feed = ampcore.BoxParser().feed
        boxes = []
        extend = boxes.extend
        for chunk in chunks:
            extend(feed(chunk))
        return boxes

    return types.SimpleNamespace(
        AMP=ampcore.AMP, parse=ampcore.parse, serialize=ampcore.serialize,
        feed=ampcoreFeed, name=name,
    )  # fmt: skip


def timed(function, *args):
    """Seconds C{function(*args)} took, with the garbage collector off as
    C{timeit} does (the same for both sides)."""
    gcWasEnabled = gc.isenabled()
    gc.disable()
    try:
        start = perf_counter()
        function(*args)
        return perf_counter() - start
    finally:
        if gcWasEnabled:
            gc.enable()


class Workload:
    def __init__(self, run):
        self.run = run

    def _repeat(self, loops):
        run = self.run
        for _ in range(loops):
            run()

    def time(self, loops):
        return timed(self._repeat, loops)

    def close(self):
        pass


class Case:
    """C{make(side)} returns a L{Workload} that handles C{items} boxes or
    calls (C{unit}) per C{run()}; C{size}, if given, the bytes of payload a
    run moves (run.py reports MB/s for those cases)."""

    def __init__(self, name, title, items, unit, make, size=None):
        self.name, self.title, self.items, self.unit = name, title, items, unit
        self.make, self.size = make, size

    def setup(self, side):
        return self.make(Side(side))


# --- The codec ---

BOX_SIZE = 680  # serialized bytes of a record box
STREAM_BOXES = 1000  # boxes in the 4 KiB-chunk and one-shot streams
BYTEWISE_BOXES = 100  # boxes in the 1-byte-chunk stream
BIG_VALUE = 60000  # bytes of the large value
SERIALIZE_SIZE = 512  # serialized bytes of a 4-key box
SERIALIZE_BOXES = 1000
CHUNK = 4096

_ALPHABET = b'abcdefghijklmnopqrstuvwxyz0123456789 ,:{}"'
_FILLER = (
    random.Random(0x616D70)
    .randbytes(1 << 17)
    .translate(bytes(_ALPHABET[i % len(_ALPHABET)] for i in range(256)))
)


def filler(length, offset):
    """Deterministic printable bytes (JSON-ish text)."""
    offset %= len(_FILLER) - length
    return _FILLER[offset : offset + length]


def padded(box, key, size, offset):
    """C{box} with C{key} set to filler that makes it C{size} bytes long on
    the wire."""
    box[key] = b""
    box[key] = filler(size - len(encodeBox(box)), offset)
    return box


def recordBox(i):
    """A 5-key command box of L{BOX_SIZE} bytes."""
    box = amp.AmpBox({b"_ask": b"%x" % (i + 1), b"_command": b"StoreRecord"})
    box[b"record_id"] = b"%08x-%012x" % (i * 2654435761 & 0xFFFFFFFF, i * 7919)
    box[b"owner"] = b"user-%06d@example.com" % i
    return padded(box, b"payload", BOX_SIZE, i * 613)


def putBox(i):
    """A 4-key command box of L{SERIALIZE_SIZE} bytes."""
    box = amp.AmpBox({b"_ask": b"%x" % (i + 1), b"_command": b"PutObject"})
    box[b"key"] = b"objects/%08d/%s" % (i, filler(16, i * 31))
    return padded(box, b"data", SERIALIZE_SIZE, i * 997)


def bigBox():
    return amp.AmpBox(
        {b"_ask": b"1", b"_command": b"Upload", b"data": filler(BIG_VALUE, 12345)}
    )


def encodeBox(box):
    """AMP's wire form of C{box}, from the framing rules (keys sorted, as
    C{AmpBox.serialize} writes them)."""
    return (
        b"".join(
            len(k).to_bytes(2, "big") + k + len(v).to_bytes(2, "big") + v
            for k, v in sorted(box.items())
        )
        + b"\x00\x00"
    )


@functools.lru_cache(maxsize=None)
def recordBoxes():
    return [recordBox(i) for i in range(STREAM_BOXES)]


@functools.lru_cache(maxsize=None)
def putBoxes():
    return [putBox(i) for i in range(SERIALIZE_BOXES)]


def feedWorkload(side, boxes, size):
    data = b"".join(map(encodeBox, boxes))
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    feed = side.feed
    return Workload(lambda: feed(chunks))


def parseWorkload(side):
    data = b"".join(map(encodeBox, recordBoxes()))
    parse = side.parse
    return Workload(lambda: parse(data))


def serializeWorkload(side):
    boxes, serialize = putBoxes(), side.serialize
    # map() keeps the per-box loop cost equal and small on both sides.
    return Workload(lambda: list(map(serialize, boxes)))


# --- Commands and peers ---

BATCH = 100  # calls per run() of the round-trip workloads


class Sum(amp.Command):
    arguments = [
        (b"a", amp.Integer()),
        (b"b", amp.Integer()),
        (b"label", amp.Unicode()),
    ]
    response = [(b"total", amp.Integer()), (b"label", amp.Unicode())]


_LINES = amp.AmpList(
    [(b"sku", amp.String()), (b"quantity", amp.Integer()), (b"price", amp.Float())]
)


class Order(amp.Command):
    """A command with every common argument type, C{AmpList} included."""

    arguments = [
        (b"order", amp.Integer()), (b"customer", amp.Unicode()),
        (b"token", amp.String()), (b"express", amp.Boolean()),
        (b"discount", amp.Float()), (b"tags", amp.ListOf(amp.Unicode())),
        (b"lines", _LINES),
    ]  # fmt: skip
    response = [
        (b"order", amp.Integer()), (b"customer", amp.Unicode()),
        (b"express", amp.Boolean()), (b"quantity", amp.Integer()),
        (b"total", amp.Float()), (b"tags", amp.ListOf(amp.Unicode())),
    ]  # fmt: skip


class Measure(amp.Command):
    """The shape of the classic AMP benchmark's command."""

    arguments = [
        (b"payload", amp.String()),
        (b"count", amp.Integer()),
        (b"samples", amp.ListOf(amp.Float())),
    ]
    response = [
        (b"count", amp.Integer()),
        (b"crc", amp.Integer()),
        (b"total", amp.Float()),
    ]


_LABELS = ["sum", "Summe-\u00e9t\u00e9", "\u5408\u8a08", "total \U0001f600"]
SUM_ARGS = [
    dict(a=i * 7919 - 350000, b=(i * 104729) % 1000003 - 500000, label=_LABELS[i % 4])
    for i in range(BATCH)
]
ORDER_ARGS = [
    dict(
        order=i * 7919 - 350000,
        customer=_LABELS[i % 4] + " #%d" % i,
        token=bytes(range(i % 7, 40 + i % 7)),
        express=i % 3 == 0,
        discount=(i % 10) / 40.0,
        tags=_LABELS[: i % 5],
        lines=[
            dict(sku=b"SKU-%05d" % (i * 31 + j), quantity=j + 1, price=i / 4 + j + 1.99)
            for j in range(1 + i % 4)
        ],
    )
    for i in range(BATCH)
]
ECHO_ARGS = [
    dict(value=b"echo-%03d:" % i + bytes(range(i % 7, 64 + i % 7)))
    for i in range(BATCH)
]
_PAYLOADS = [bytes((i * 37 + j * 11) % 251 for j in range(600)) for i in range(4)]
MEASURE_ARGS = [
    dict(payload=_PAYLOADS[i % 4], count=i, samples=[i + j * 1.25 for j in range(10)])
    for i in range(BATCH)
]


def orderAnswer(order, customer, token, express, discount, tags, lines):
    total = sum(line["quantity"] * line["price"] for line in lines)
    return dict(
        order=order, customer=customer, express=express, tags=tags[::-1],
        quantity=sum(line["quantity"] for line in lines), total=total * (1 - discount),
    )  # fmt: skip


def measureAnswer(payload, count, samples):
    return {"count": count, "crc": zlib.crc32(payload), "total": sum(samples)}


@functools.lru_cache(maxsize=None)
def peerClasses(base):
    """The client and server classes on C{base}, stock or ampcore AMP."""

    class Server(base):
        @Sum.responder
        def sum(self, a, b, label):
            return {"total": a + b, "label": label}

        @Order.responder
        def order(self, **arguments):
            return orderAnswer(**arguments)

        @Measure.responder
        def measure(self, payload, count, samples):
            return {"count": count, "crc": zlib.crc32(payload), "total": sum(samples)}

        def amp_ECHO(self, box):  # a low-level responder: box in, box out
            return amp.AmpBox({b"value": box[b"value"]})

        def connectionLost(self, reason):
            self.lost = True
            base.connectionLost(self, reason)

    class Client(base):
        connectionLost = Server.connectionLost

    return Client, Server


# --- Round trips ---


class MemoryTransport:
    """The least AMP needs of a transport; C{write} queues the bytes."""

    disconnecting = False

    def __init__(self, queue):
        from twisted.internet.address import IPv4Address

        self.write = queue.append  # the cheapest write, for both sides
        self.address = IPv4Address("TCP", "127.0.0.1", 7000)

    def writeSequence(self, data):
        self.write(b"".join(data))

    def getHost(self):
        return self.address

    getPeer = getHost

    def loseConnection(self):
        self.disconnecting = True


def memoryPump(client, server, toServer, toClient):
    """A function that hands each direction's queued bytes (the lists the
    peers' L{MemoryTransport}s write to) to the other peer as one chunk per
    step, as one TCP read would, until both are quiet."""

    def pump():
        while toServer or toClient:
            if toServer:
                data = b"".join(toServer)
                toServer.clear()
                server.dataReceived(data)
            if toClient:
                data = b"".join(toClient)
                toClient.clear()
                client.dataReceived(data)

    return pump


def callWorkload(side, method, command, argumentsList, pipelined):
    """C{client.method(command, **arguments)} for each of C{argumentsList},
    C{method} being C{"callRemote"} or C{"callRemoteString"}; one at a time
    (each answered before the next), or all issued, then answered.  Client
    and server are joined in memory, without a reactor: C{pump} hands each
    direction's queued bytes to the peer as one chunk per step, as one TCP
    read would, until both are quiet."""
    Client, Server = peerClasses(side.AMP)
    client, server, toServer, toClient = Client(), Server(), [], []
    client.makeConnection(MemoryTransport(toServer))
    server.makeConnection(MemoryTransport(toClient))
    call = getattr(client, method)

    pump = memoryPump(client, server, toServer, toClient)

    def run():
        results, errors = [], []
        ok, bad = results.append, errors.append
        for arguments in argumentsList:
            call(command, **arguments).addCallbacks(ok, bad)
            if not pipelined:
                pump()
        pump()
        if errors or len(results) != len(argumentsList):
            raise AssertionError(
                "%d of %d calls answered, %d failed %s"
                % (len(results), len(argumentsList), len(errors), errors[:1])
            )
        return results

    return Workload(run)


TCP_TIMEOUT = 60.0  # seconds a connection, a close or one timing may take


class TCPWorkload(Workload):
    """Client and server on C{side}'s AMP in this process, joined by TCP on
    127.0.0.1.  The client keeps C{inFlight} L{Measure} calls outstanding,
    issuing one as each is answered, L{BATCH} calls per unit.

    C{reactor.iterate()} drives the reactor, not C{reactor.run()}: a reactor
    runs only once per process, and one connection serves all the runs."""

    def __init__(self, side, inFlight):
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
        from twisted.internet.protocol import Factory

        self.reactor, self.inFlight, self.servers = reactor, inFlight, []
        self.expected = [measureAnswer(**arguments) for arguments in MEASURE_ARGS]
        Client, Server = peerClasses(side.AMP)
        factory = Factory()

        def buildProtocol(address):
            self.servers.append(Server())
            return self.servers[-1]

        factory.buildProtocol = buildProtocol
        self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port)
        connected = []
        connectProtocol(endpoint, Client()).addBoth(connected.append)
        self._spin(lambda: connected and self.servers, "connecting")
        if not isinstance(connected[0], Client):
            connected[0].raiseException()
        self.client = connected[0]

    def _spin(self, done, what):
        deadline = perf_counter() + TCP_TIMEOUT
        while not done():
            if perf_counter() > deadline:
                raise RuntimeError("TCP: timed out %s" % (what,))
            self.reactor.iterate(0.1)

    def calls(self, total, record):
        """Make C{total} calls; return their answers, in order, if C{record}."""
        expected, callRemote = self.expected, self.client.callRemote
        answers, errors = [], []
        count = [0, 0]  # issued, answered

        def issue():
            i = count[0]
            count[0] = i + 1
            callRemote(Measure, **MEASURE_ARGS[i % BATCH]).addCallbacks(
                answered, errors.append, callbackArgs=(i,)
            )

        def answered(response, i):
            if response != expected[i % BATCH]:
                errors.append("call %d answered %r" % (i, response))
            if record:
                answers.append(response)
            count[1] += 1
            if count[0] < total:
                issue()

        for _ in range(min(self.inFlight, total)):
            issue()
        self._spin(lambda: count[1] == total or errors, "waiting for answers")
        if errors:
            raise AssertionError("TCP: %s" % (errors[0],))
        return answers

    def run(self):
        return self.calls(BATCH, True)

    def time(self, loops):
        return timed(self.calls, loops * BATCH, False)

    def close(self):
        """Close the connection and the port, and wait until the reactor
        holds nothing of this workload."""
        stopped = []
        self.client.transport.loseConnection()
        self.port.stopListening().addBoth(stopped.append)
        peers = [self.client] + self.servers
        self._spin(
            lambda: stopped and all(getattr(p, "lost", 0) for p in peers), "closing"
        )


# --- Values over 64 KiB: ampcore.arguments.BigBytes against stock ---

MIB = 1 << 20


@functools.lru_cache(maxsize=None)
def bigValue(size):
    """C{size} deterministic bytes."""
    return (_FILLER * (size // len(_FILLER) + 1))[:size]


class StockBigString(amp.Argument):
    """
    What stock Twisted offers for values over 65,535 bytes: nothing built in
    (C{ListOf(String())} cannot help, its whole encoding is one value and
    so limited to 65,535 bytes too), so users write an Argument like this
    one, the "BigString" recipe: the first 65,535 bytes under C{name}, the
    rest in 65,535-byte chunks under C{name.2}, C{name.3}, ...  Written
    here as efficiently as plain Python allows (slices, one join).
    """

    def toBox(self, name, strings, objects, proto):
        value = self.retrieve(objects, amp._wireNameToPythonIdentifier(name), proto)
        size = amp.MAX_VALUE_LENGTH
        strings[name] = value[:size]
        for index, start in enumerate(range(size, len(value), size), 2):
            strings[name + b".%d" % index] = value[start : start + size]

    def fromBox(self, name, strings, objects, proto):
        parts = [self.retrieve(strings, name, proto)]
        for index in itertools.count(2):
            part = strings.pop(name + b".%d" % index, None)
            if part is None:
                break
            parts.append(part)
        objects[amp._wireNameToPythonIdentifier(name)] = b"".join(parts)


@functools.lru_cache(maxsize=None)
def bigCommands(sideName):
    """(Upload, Download) with the side's big-value argument: stock's
    L{StockBigString}, ampcore's C{ampcore.arguments.BigBytes}."""
    if sideName == "stock":
        Big = StockBigString
    else:
        from ampcore.arguments import BigBytes as Big

    class Upload(amp.Command):
        arguments = [(b"data", Big())]
        response = [(b"length", amp.Integer())]

    class Download(amp.Command):
        arguments = [(b"length", amp.Integer())]
        response = [(b"data", Big())]

    return Upload, Download


@functools.lru_cache(maxsize=None)
def bigServer(base, sideName):
    Upload, Download = bigCommands(sideName)

    class BigServer(base):
        received = None

        @Upload.responder
        def receive(self, data):
            self.received = data
            return {"length": len(data)}

        @Download.responder
        def send(self, length):
            return {"data": bigValue(length)}

    return BigServer


def bigWorkload(side, direction, size):
    """One call moving a C{size}-byte value: sent as its argument
    (C{direction="up"}) or received as its response (C{"down"}), client and
    server joined in memory as in L{callWorkload}.  C{run()} returns
    C{[the value as the receiving side got it]}."""
    Upload, Download = bigCommands(side.name)
    client, server = side.AMP(), bigServer(side.AMP, side.name)()
    toServer, toClient = [], []
    client.makeConnection(MemoryTransport(toServer))
    server.makeConnection(MemoryTransport(toClient))
    value = bigValue(size)

    pump = memoryPump(client, server, toServer, toClient)

    def run():
        results, errors = [], []
        if direction == "up":
            d = client.callRemote(Upload, data=value)
        else:
            d = client.callRemote(Download, length=size)
        d.addCallbacks(results.append, errors.append)
        pump()
        if errors or len(results) != 1:
            raise AssertionError("the %d-byte call failed: %s" % (size, errors[:1]))
        if direction == "up":
            if results[0] != {"length": size}:
                raise AssertionError("answered %r" % (results[0],))
            got, server.received = server.received, None
            return [got]
        return [results[0]["data"]]

    return Workload(run)


# --- The cases, in report order ---


def fed(boxes, size):
    return lambda side: feedWorkload(side, boxes(), size)


def calls(method, command, argumentsList, pipelined):
    return lambda side: callWorkload(side, method, command, argumentsList, pipelined)


def tcp(inFlight):
    return lambda side: TCPWorkload(side, inFlight)


def big(direction, size):
    return lambda side: bigWorkload(side, direction, size)


KB = BIG_VALUE // 1000
# fmt: off
CASES = [
    Case("parse-4k", "%d boxes of %d B, fed in 4 KiB chunks" % (STREAM_BOXES, BOX_SIZE),
         STREAM_BOXES, "box", fed(recordBoxes, CHUNK)),
    Case("parse-1b", "%d of them, fed 1 byte at a time" % BYTEWISE_BOXES,
         BYTEWISE_BOXES, "box", fed(lambda: recordBoxes()[:BYTEWISE_BOXES], 1)),
    Case("parse-oneshot", "%d boxes, parse() against parseString()" % STREAM_BOXES,
         STREAM_BOXES, "box", parseWorkload),
    Case("big-4k", "one box with a %d KB value, 4 KiB chunks" % KB,
         1, "box", fed(lambda: [bigBox()], CHUNK)),
    Case("big-1b", "one box with a %d KB value, 1 byte at a time" % KB,
         1, "box", fed(lambda: [bigBox()], 1)),
    Case("serialize", "%d boxes of 4 keys, %d B" % (SERIALIZE_BOXES, SERIALIZE_SIZE),
         SERIALIZE_BOXES, "box", serializeWorkload),
    Case("call-seq", "callRemote(Sum: Integer, Integer, Unicode), one at a time",
         BATCH, "call", calls("callRemote", Sum, SUM_ARGS, False)),
    Case("call-pipe", "callRemote(Sum), %d pipelined" % BATCH,
         BATCH, "call", calls("callRemote", Sum, SUM_ARGS, True)),
    Case("mixed-seq", "callRemote(Order: Integer, String, Unicode, Boolean, Float, "
         "ListOf, AmpList), one at a time",
         BATCH, "call", calls("callRemote", Order, ORDER_ARGS, False)),
    Case("mixed-pipe", "callRemote(Order), %d pipelined" % BATCH,
         BATCH, "call", calls("callRemote", Order, ORDER_ARGS, True)),
    Case("string-seq", "callRemoteString to an amp_ECHO responder, one at a time",
         BATCH, "call", calls("callRemoteString", b"ECHO", ECHO_ARGS, False)),
    Case("string-pipe", "callRemoteString to amp_ECHO, %d pipelined" % BATCH,
         BATCH, "call", calls("callRemoteString", b"ECHO", ECHO_ARGS, True)),
    Case("tcp-15", "TCP on 127.0.0.1, callRemote(Measure: 600 B String, Integer, "
         "ListOf(Float)), 15 in flight", BATCH, "call", tcp(15)),
    Case("tcp-100", "TCP on 127.0.0.1, callRemote(Measure), 100 in flight",
         BATCH, "call", tcp(100)),
    Case("chunked-up-1m", "a 1 MiB value as a call's argument: BigBytes against "
         "a stock BigString-style Argument", 1, "value", big("up", MIB), size=MIB),
    Case("chunked-down-1m", "a 1 MiB value as a call's response",
         1, "value", big("down", MIB), size=MIB),
    Case("chunked-up-16m", "a 16 MiB value as a call's argument",
         1, "value", big("up", 16 * MIB), size=16 * MIB),
    Case("chunked-down-16m", "a 16 MiB value as a call's response",
         1, "value", big("down", 16 * MIB), size=16 * MIB),
]
# fmt: on
CASES_BY_NAME = {case.name: case for case in CASES}


# --- A simple timing loop, for interpreters without pyperf (PyPy) ---


def measure(case, side, warmup, values, minTime):
    """C{values} timings of C{case} on C{side}, in seconds per C{run()},
    each of at least C{minTime} seconds, after C{warmup} seconds of runs
    (which PyPy's JIT needs) that also find the loop count."""
    work = case.setup(side)
    try:
        loops, deadline = 1, perf_counter() + warmup
        while True:
            seconds = work.time(loops)
            if seconds < minTime:
                loops = max(loops * 2, int(loops * minTime / max(seconds, 1e-9)))
            elif perf_counter() >= deadline:
                break
        return [work.time(loops) / loops for _ in range(values)], loops
    finally:
        work.close()


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Time one case with a simple loop; print JSON (run.py --pypy)."
    )
    parser.add_argument("case", nargs="?", choices=sorted(CASES_BY_NAME))
    parser.add_argument("--side", choices=SIDES, default="stock")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--values", type=int, default=7)
    parser.add_argument("--min-time", type=float, default=0.1)
    parser.add_argument("--info", action="store_true", help="describe the interpreter")
    args = parser.parse_args(argv)
    import twisted

    report = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "twisted": twisted.__version__,
    }
    if not args.info:
        if args.case is None:
            parser.error("a case is needed")
        report["case"], report["side"] = args.case, args.side
        report["seconds"], report["loops"] = measure(
            CASES_BY_NAME[args.case], args.side, args.warmup, args.values, args.min_time
        )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
