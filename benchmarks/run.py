"""
Benchmark runner for ampcore: stock Twisted AMP vs ampcore, same run.

Usage (from the repository root)::

    python benchmarks/run.py              # full run (~75 s on 2 cores)
    python benchmarks/run.py --quick      # CI smoke run (~15 s)
    python benchmarks/run.py --json out.json
    python benchmarks/run.py --case parse # only cases whose name contains "parse"
    python benchmarks/run.py --list       # list cases and exit

Running the script by path puts C{benchmarks/} (not the repository root) on
C{sys.path}, so the I{installed} ampcore, with its compiled extension, is
what gets imported.  The header shows which file was imported and whether the
C extension is in use.

Method
======

Every case is a L{Case}: a name, a workload description, how many boxes and
bytes one call handles, a zero-argument callable for each side (stock Twisted
and ampcore), an optional check and an optional target speed-up.

For each case the runner:

 1. calls both sides once and runs the check (by default: both sides return
    equal results of the same types, and equal the expected result when the
    case knows it).  A case whose check fails is reported as FAILED and is not
    timed, so a wrong result is never timed;
 2. calibrates, per side, how many calls make one repeat last at least
    C{--min-time} seconds (like C{timeit}'s autorange);
 3. runs C{--repeat} repeats of each side, interleaved (stock, ampcore,
    ampcore, stock, ...) so drifts in machine load hit both sides alike,
    with the garbage collector disabled inside the timed loops (as C{timeit}
    does) and a collection between repeats;
 4. reports the median time per call of each side, the throughput derived
    from it, and the speed-up C{median(stock) / median(ampcore)}, i.e. the
    ratio of ampcore's throughput to stock's; the min-max range of the
    speed-ups of the interleaved (stock, ampcore) repeat pairs is shown as a
    noise indicator.

Cases timed outside this process (the TCP loopback case, whose reactor
can run only once per process) have a C{timeRepeat} instead: each repeat is
one short child process per side, still interleaved, that times its own
calls; there is no calibration, and the child checks every answer.

Targets are reported (PASS / below target) but never gate: the exit status
is 0 unless a check failed (1) or the command line is wrong (2).

Cases
=====

 - codec: C{parse-*}, C{big-*} (stock C{BinaryBoxProtocol.dataReceived} or
   C{amp.parseString} vs C{ampcore.BoxParser} / C{ampcore.parse}) and
   C{serialize} (C{AmpBox.serialize} vs C{ampcore.serialize});
 - whole conversations (L{roundtrip}): the same client and server classes
   built on C{twisted.protocols.amp.AMP} and on C{ampcore.AMP}, joined in
   memory without a reactor (C{call-*}: C{callRemote(Sum)}, C{string-*}:
   C{callRemoteString} to an C{amp_ECHO} responder; C{*-seq} one call at a
   time, C{*-pipe} 100 calls issued then answered), and over TCP on
   127.0.0.1 with the reactor (C{tcp-loopback}).

Adding a case
=============

Write a function C{builder(quick=False)} returning a list of L{Case}
objects and add it to L{CASE_BUILDERS}; C{quick} is true under C{--quick}
(only cases with a fixed amount of work per repeat need it).  The callables
must do the whole unit of work on each call (e.g. build a fresh parser) and
return something the check can compare.  Workloads bigger than one function
(protocols, transports, child processes) go in their own module, as the
round trips do in L{roundtrip}.
"""

import argparse
import gc
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional

import twisted
from twisted.protocols import amp

import ampcore
import roundtrip

# ---------------------------------------------------------------------------
# Case definition and checks
# ---------------------------------------------------------------------------


@dataclass
class Case:
    """One benchmark: the same unit of work done by stock Twisted and by
    ampcore."""

    name: str
    """Short identifier, e.g. C{"parse-4k"}."""

    workload: str
    """Human-readable description of one call's work."""

    items: int
    """Boxes handled by one call (for boxes/s)."""

    nbytes: int
    """Wire bytes handled by one call (for MB/s)."""

    stock: Callable[[], Any]
    """Does one call's work with stock Twisted; returns a checkable result."""

    ampcore: Callable[[], Any]
    """Does one call's work with ampcore; returns a checkable result."""

    check: Optional[Callable[[Any, Any], None]] = None
    """C{check(stockResult, ampcoreResult)} raises AssertionError on a
    mismatch; None means L{checkSame}C{()}."""

    target: Optional[float] = None
    """Speed-up the issue asks for, or None."""

    itemUnit: str = "boxes"

    showItemTime: bool = False
    """Report the median time per item (e.g. per round trip) instead of
    bytes/s."""

    timeRepeat: Optional[Callable[[str], float]] = None
    """For a case timed outside this process: C{timeRepeat(side)}, with
    C{side} C{"stock"} or C{"ampcore"}, does one repeat and returns its
    seconds per call.  Such a case is not calibrated."""


def _describe(value, limit=120):
    text = repr(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return text


def _assertSameList(label, got, want):
    assert isinstance(got, list), "%s: expected a list, got %s" % (
        label,
        type(got).__name__,
    )
    assert len(got) == len(want), "%s: %d items, expected %d" % (
        label,
        len(got),
        len(want),
    )
    for i, (g, w) in enumerate(zip(got, want)):
        assert type(g) is type(w), "%s[%d]: type %s, expected %s" % (
            label,
            i,
            type(g).__name__,
            type(w).__name__,
        )
        assert g == w, "%s[%d]: %s != %s" % (
            label,
            i,
            _describe(g),
            _describe(w),
        )


def checkSame(expected=None):
    """A check that both sides' results are lists of equal items of the same
    types, and, if C{expected} is given, equal to it."""

    def check(stockResult, ampcoreResult):
        if expected is not None:
            _assertSameList("stock vs expected", stockResult, expected)
            _assertSameList("ampcore vs expected", ampcoreResult, expected)
        _assertSameList("ampcore vs stock", ampcoreResult, stockResult)

    return check


# ---------------------------------------------------------------------------
# Workload helpers
# ---------------------------------------------------------------------------


class _Collector:
    """Box receiver (and transport) for a stock L{amp.BinaryBoxProtocol}."""

    def __init__(self):
        self.boxes = []

    def startReceivingBoxes(self, sender):
        pass

    def ampBoxReceived(self, box):
        self.boxes.append(box)

    def stopReceivingBoxes(self, reason):
        pass

    def loseConnection(self):
        pass


def stockFeed(chunks):
    """Feed C{chunks} to a fresh stock BinaryBoxProtocol; return its boxes."""
    collector = _Collector()
    protocol = amp.BinaryBoxProtocol(collector)
    protocol.makeConnection(collector)
    dataReceived = protocol.dataReceived
    for chunk in chunks:
        dataReceived(chunk)
    return collector.boxes


def ampcoreFeed(chunks):
    """Feed C{chunks} to a fresh ampcore.BoxParser; return its boxes."""
    feed = ampcore.BoxParser().feed
    boxes = []
    extend = boxes.extend
    for chunk in chunks:
        extend(feed(chunk))
    return boxes


def splitChunks(data, size):
    return [data[i : i + size] for i in range(0, len(data), size)]


def serializedSize(box):
    """Wire size of C{box}, computed from the AMP framing rules."""
    return 2 + sum(4 + len(k) + len(v) for k, v in box.items())


_FILLER_RANDOM = random.Random(0x616D70)
_FILLER = bytes(
    _FILLER_RANDOM.choice(b"abcdefghijklmnopqrstuvwxyz0123456789 ,:{}\"")
    for _ in range(1 << 17)
)


def filler(length, offset):
    """Deterministic printable bytes (JSON-ish text) of C{length}."""
    offset %= len(_FILLER) - length
    return _FILLER[offset : offset + length]


def recordBox(index, size):
    """A realistic 5-key command box (C{_ask}, C{_command} and three
    arguments) whose serialization is exactly C{size} bytes."""
    box = amp.AmpBox()
    box[b"_ask"] = b"%x" % (index + 1)
    box[b"_command"] = b"StoreRecord"
    box[b"record_id"] = b"%08x-%04x-4%03x-8%03x-%012x" % (
        index * 2654435761 & 0xFFFFFFFF,
        index & 0xFFFF,
        index & 0xFFF,
        (index * 7) & 0xFFF,
        index * 11400714819323198485 & 0xFFFFFFFFFFFF,
    )
    box[b"owner"] = b"user-%06d@example.com" % (index % 1000003,)
    box[b"payload"] = b""
    box[b"payload"] = filler(size - serializedSize(box), index * 613)
    assert serializedSize(box) == size
    return box


def answerBox(index, size):
    """A realistic 4-key box (C{_ask}, C{_command}, two arguments) whose
    serialization is exactly C{size} bytes."""
    box = amp.AmpBox()
    box[b"_ask"] = b"%x" % (index + 1)
    box[b"_command"] = b"PutObject"
    box[b"key"] = b"objects/%08d/%s" % (index, filler(16, index * 31))
    box[b"data"] = b""
    box[b"data"] = filler(size - serializedSize(box), index * 997)
    assert serializedSize(box) == size
    return box


def stockSerialize(box):
    return box.serialize()


# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------

BOX_SIZE = 680  # serialized bytes of the realistic 5-key box
STREAM_BOXES = 1000  # boxes in the 4 KiB-chunk / one-shot stream
BYTEWISE_BOXES = 100  # boxes in the 1-byte-chunk stream
BIG_VALUE = 60000  # bytes of the large value
SERIALIZE_SIZE = 512  # serialized bytes of the 4-key box
SERIALIZE_BOXES = 1000  # boxes serialized per call
CHUNK = 4096

PARSE_TARGET = 30.0
SERIALIZE_TARGET = 10.0


def parseCases(quick=False):
    boxes = [recordBox(i, BOX_SIZE) for i in range(STREAM_BOXES)]
    stream = b"".join(box.serialize() for box in boxes)
    assert len(stream) == STREAM_BOXES * BOX_SIZE
    chunks = splitChunks(stream, CHUNK)

    few = boxes[:BYTEWISE_BOXES]
    fewStream = stream[: BYTEWISE_BOXES * BOX_SIZE]
    bytewise = splitChunks(fewStream, 1)

    return [
        Case(
            name="parse-4k",
            workload="%d boxes x %d B, 4 KiB chunks" % (STREAM_BOXES, BOX_SIZE),
            items=STREAM_BOXES,
            nbytes=len(stream),
            stock=lambda: stockFeed(chunks),
            ampcore=lambda: ampcoreFeed(chunks),
            check=checkSame(boxes),
            target=PARSE_TARGET,
        ),
        Case(
            name="parse-1b",
            workload="%d boxes x %d B, 1-byte chunks" % (BYTEWISE_BOXES, BOX_SIZE),
            items=BYTEWISE_BOXES,
            nbytes=len(fewStream),
            stock=lambda: stockFeed(bytewise),
            ampcore=lambda: ampcoreFeed(bytewise),
            check=checkSame(few),
        ),
        Case(
            name="parse-oneshot",
            workload="%d boxes x %d B, parse()/parseString()"
            % (STREAM_BOXES, BOX_SIZE),
            items=STREAM_BOXES,
            nbytes=len(stream),
            stock=lambda: amp.parseString(stream),
            ampcore=lambda: ampcore.parse(stream),
            check=checkSame(boxes),
        ),
    ]


def bigValueCases(quick=False):
    box = amp.AmpBox()
    box[b"_ask"] = b"1"
    box[b"_command"] = b"Upload"
    box[b"data"] = filler(BIG_VALUE, 12345)
    data = box.serialize()
    chunks = splitChunks(data, CHUNK)
    bytewise = splitChunks(data, 1)
    kb = BIG_VALUE // 1000
    return [
        Case(
            name="big-4k",
            workload="1 box, %d KB value, 4 KiB chunks" % (kb,),
            items=1,
            nbytes=len(data),
            stock=lambda: stockFeed(chunks),
            ampcore=lambda: ampcoreFeed(chunks),
            check=checkSame([box]),
        ),
        Case(
            name="big-1b",
            workload="1 box, %d KB value, 1-byte chunks" % (kb,),
            items=1,
            nbytes=len(data),
            stock=lambda: stockFeed(bytewise),
            ampcore=lambda: ampcoreFeed(bytewise),
            check=checkSame([box]),
        ),
    ]


def serializeCases(quick=False):
    boxes = [answerBox(i, SERIALIZE_SIZE) for i in range(SERIALIZE_BOXES)]
    # Independent of both implementations: AMP's framing, keys in sorted
    # order as AmpBox.serialize emits them.
    expected = [
        b"".join(
            len(k).to_bytes(2, "big") + k + len(v).to_bytes(2, "big") + v
            for k, v in sorted(box.items())
        )
        + b"\x00\x00"
        for box in boxes
    ]
    serialize = ampcore.serialize
    # map() keeps per-box loop overhead identical and minimal on both sides;
    # stockSerialize is box.serialize().
    return [
        Case(
            name="serialize",
            workload="%d boxes x 4 keys x %d B" % (SERIALIZE_BOXES, SERIALIZE_SIZE),
            items=SERIALIZE_BOXES,
            nbytes=SERIALIZE_BOXES * SERIALIZE_SIZE,
            stock=lambda: list(map(stockSerialize, boxes)),
            ampcore=lambda: list(map(serialize, boxes)),
            check=checkSame(expected),
            target=SERIALIZE_TARGET,
        ),
    ]


CALLREMOTE_TARGET = 1.5
CALLSTRING_TARGET = 3.0
TCP_CALLS = 6000  # timed calls per TCP repeat (--quick: TCP_CALLS_QUICK)
TCP_CALLS_QUICK = 1500
TCP_WARMUP = 200  # calls answered before the clock starts
TCP_CHECK_CALLS = 60  # calls whose answers the TCP check compares
TCP_TIMEOUT = 60.0  # seconds a TCP child may run


def memoryRoundTripCases(quick=False):
    """callRemote / callRemoteString round trips between two AMP peers in
    memory (no reactor), one at a time and pipelined."""
    stock = roundtrip.MemoryRoundTrips(amp.AMP)
    core = roundtrip.MemoryRoundTrips(ampcore.AMP)
    n = roundtrip.BATCH
    work = roundtrip.MEMORY_WORKLOADS
    sums = roundtrip.expectedSums()

    def case(name, workload, check, target=None):
        method = work[name]
        return Case(
            name=name,
            workload=workload,
            items=n,
            nbytes=stock.wireBytes(method),
            stock=getattr(stock, method),
            ampcore=getattr(core, method),
            check=check,
            target=target,
            itemUnit="calls",
            showItemTime=True,
        )

    return [
        case(
            "call-seq",
            "%d x callRemote(Sum: 3 args), one at a time" % (n,),
            checkSame(sums),
            CALLREMOTE_TARGET,
        ),
        case(
            "call-pipe",
            "%d x callRemote(Sum), pipelined" % (n,),
            checkSame(sums),
        ),
        case(
            "string-seq",
            "%d x callRemoteString(ECHO), one at a time" % (n,),
            roundtrip.checkEchoes,
            CALLSTRING_TARGET,
        ),
        case(
            "string-pipe",
            "%d x callRemoteString(ECHO), pipelined" % (n,),
            roundtrip.checkEchoes,
        ),
    ]


def tcpCases(quick=False):
    """The classic AMP benchmark over TCP on 127.0.0.1, one child process
    per repeat and side."""
    calls = TCP_CALLS_QUICK if quick else TCP_CALLS

    def checkRun(side):
        report = roundtrip.runTCPChild(
            side, TCP_CHECK_CALLS, warmup=0, check=True, timeout=TCP_TIMEOUT
        )
        return report["results"]

    def timeRepeat(side):
        report = roundtrip.runTCPChild(
            side, calls, warmup=TCP_WARMUP, timeout=TCP_TIMEOUT
        )
        return report["seconds"]

    return [
        Case(
            name="tcp-loopback",
            workload="%d x callRemote(600 B String, Int, 10 Floats), "
            "%d in flight" % (calls, roundtrip.OUTSTANDING),
            items=calls,
            nbytes=sum(roundtrip.measureWireBytes(i) for i in range(calls)),
            stock=lambda: checkRun("stock"),
            ampcore=lambda: checkRun("ampcore"),
            check=checkSame(roundtrip.expectedTCPResults(TCP_CHECK_CALLS)),
            itemUnit="calls",
            showItemTime=True,
            timeRepeat=timeRepeat,
        )
    ]


CASE_BUILDERS = [
    parseCases,
    bigValueCases,
    serializeCases,
    memoryRoundTripCases,
    tcpCases,
]
"""Functions C{builder(quick=False)} returning lists of L{Case}s, in report
order."""


def buildCases(quick=False):
    cases = []
    for builder in CASE_BUILDERS:
        cases.extend(builder(quick=quick))
    names = [case.name for case in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    return cases


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------


def timeCalls(function, number):
    """Seconds taken by C{number} calls of C{function}, GC disabled."""
    gcWasEnabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(number):
            function()
        return time.perf_counter() - start
    finally:
        if gcWasEnabled:
            gc.enable()


def calibrate(function, minTime):
    """How many calls of C{function} take at least C{minTime} seconds."""
    number = 1
    while True:
        elapsed = timeCalls(function, number)
        if elapsed >= minTime / 10 or number >= 10**7:
            break
        number *= 10
    return max(1, math.ceil(number * minTime / max(elapsed, 1e-9)))


@dataclass
class Result:
    case: Case
    error: Optional[str] = None
    stockNumber: int = 0
    ampcoreNumber: int = 0
    stockTimes: List[float] = field(default_factory=list)
    """Seconds per call, one per repeat."""
    ampcoreTimes: List[float] = field(default_factory=list)

    @property
    def ok(self):
        return self.error is None

    @property
    def stockMedian(self):
        return statistics.median(self.stockTimes)

    @property
    def ampcoreMedian(self):
        return statistics.median(self.ampcoreTimes)

    @property
    def speedup(self):
        return self.stockMedian / self.ampcoreMedian

    @property
    def pairSpeedups(self):
        return [s / a for s, a in zip(self.stockTimes, self.ampcoreTimes)]

    @property
    def meetsTarget(self):
        if self.case.target is None:
            return None
        return self.speedup >= self.case.target

    def toJSON(self):
        case = self.case
        out = {
            "name": case.name,
            "workload": case.workload,
            "items_per_call": case.items,
            "item_unit": case.itemUnit,
            "bytes_per_call": case.nbytes,
            "target_speedup": case.target,
            "ok": self.ok,
        }
        if not self.ok:
            out["error"] = self.error
            return out
        out.update(
            {
                "stock": {
                    "calls_per_repeat": self.stockNumber,
                    "seconds_per_call": self.stockTimes,
                    "median_seconds_per_call": self.stockMedian,
                    "items_per_second": case.items / self.stockMedian,
                    "median_seconds_per_item": self.stockMedian / case.items,
                    "mb_per_second": case.nbytes / self.stockMedian / 1e6,
                },
                "ampcore": {
                    "calls_per_repeat": self.ampcoreNumber,
                    "seconds_per_call": self.ampcoreTimes,
                    "median_seconds_per_call": self.ampcoreMedian,
                    "items_per_second": case.items / self.ampcoreMedian,
                    "median_seconds_per_item": self.ampcoreMedian / case.items,
                    "mb_per_second": case.nbytes / self.ampcoreMedian / 1e6,
                },
                "speedup": self.speedup,
                "pair_speedups": self.pairSpeedups,
                "meets_target": self.meetsTarget,
            }
        )
        return out


def runCase(case, repeat, minTime, log):
    result = Result(case)
    log("%-14s checking" % (case.name,))
    try:
        stockResult = case.stock()
        ampcoreResult = case.ampcore()
        (case.check or checkSame())(stockResult, ampcoreResult)
    except Exception as e:
        result.error = "%s: %s" % (type(e).__name__, e)
        log("%-14s FAILED: %s" % (case.name, result.error))
        return result
    del stockResult, ampcoreResult

    if case.timeRepeat is not None:
        return timeOutside(case, result, repeat, log)

    result.stockNumber = calibrate(case.stock, minTime)
    result.ampcoreNumber = calibrate(case.ampcore, minTime)
    log(
        "%-14s timing: %d repeats x (%d stock, %d ampcore) calls"
        % (case.name, repeat, result.stockNumber, result.ampcoreNumber)
    )
    sides = [
        (case.stock, result.stockNumber, result.stockTimes),
        (case.ampcore, result.ampcoreNumber, result.ampcoreTimes),
    ]
    for i in range(repeat):
        # Alternate which side goes first so neither always follows the other.
        for function, number, times in sides if i % 2 == 0 else sides[::-1]:
            gc.collect()
            times.append(timeCalls(function, number) / number)
    return result


def timeOutside(case, result, repeat, log):
    """Time a case whose repeats run outside this process, interleaved as in
    L{runCase}."""
    result.stockNumber = result.ampcoreNumber = 1
    log("%-14s timing: %d repeats x 1 run per side" % (case.name, repeat))
    sides = [("stock", result.stockTimes), ("ampcore", result.ampcoreTimes)]
    try:
        for i in range(repeat):
            for side, times in sides if i % 2 == 0 else sides[::-1]:
                times.append(case.timeRepeat(side))
    except Exception as e:
        result.error = "%s: %s" % (type(e).__name__, e)
        log("%-14s FAILED: %s" % (case.name, result.error))
    return result


# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------


def si(value):
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return "%.3g %s" % (value / factor, prefix)
    return "%.3g " % (value,)


def header(args):
    lines = [
        "ampcore benchmark: stock Twisted AMP vs ampcore (codec and round trips)",
        "  Python      %s (%s) on %s, %s CPUs"
        % (
            platform.python_version(),
            platform.python_implementation(),
            platform.platform(),
            os.cpu_count(),
        ),
        "  Twisted     %s" % (twisted.__version__,),
        "  ampcore     %s from %s"
        % (getattr(ampcore, "__version__", "?"), os.path.dirname(ampcore.__file__)),
        "  HAS_C_EXTENSION = %s" % (ampcore.HAS_C_EXTENSION,),
        "  mode        %s: %d repeats/case/side, >= %.2f s per repeat, "
        "interleaved; medians reported"
        % ("quick" if args.quick else "default", args.repeat, args.min_time),
    ]
    return "\n".join(lines)


NO_C_WARNING = """\
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!!  WARNING: the ampcore C extension is NOT in use (HAS_C_EXTENSION is    !!
!!  False): ampcore is running on its stock-Twisted fallback, so these    !!
!!  figures do not measure the C codec.                                   !!
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"""


def table(results):
    columns = [
        ("case", "<"),
        ("workload", "<"),
        ("stock (median)", ">"),
        ("ampcore (median)", ">"),
        ("speed-up", ">"),
        ("pairs min-max", ">"),
        ("target", ">"),
        ("status", "<"),
    ]
    rows = []
    for r in results:
        case = r.case
        if not r.ok:
            rows.append([case.name, case.workload, "-", "-", "-", "-", "-", "FAILED"])
            continue
        unit = case.itemUnit
        cells = [case.name, case.workload]
        for median in (r.stockMedian, r.ampcoreMedian):
            if case.showItemTime:
                second = "%.1f us" % (median / case.items * 1e6,)
            else:
                second = "%sB/s" % (si(case.nbytes / median),)
            cells.append("%s%s/s %s" % (si(case.items / median), unit, second))
        pairs = r.pairSpeedups
        cells.append("%.1fx" % (r.speedup,))
        cells.append("%.1f-%.1fx" % (min(pairs), max(pairs)))
        if case.target is None:
            cells += ["-", ""]
        else:
            cells.append(">= %gx" % (case.target,))
            cells.append("PASS" if r.meetsTarget else "below target")
        rows.append(cells)
    widths = [
        max(len(columns[i][0]), *(len(row[i]) for row in rows)) if rows else 0
        for i in range(len(columns))
    ]

    def fmt(cells):
        out = []
        for (_, align), width, cell in zip(columns, widths, cells):
            out.append(cell.ljust(width) if align == "<" else cell.rjust(width))
        return "  ".join(out).rstrip()

    lines = [fmt([c[0] for c in columns])]
    lines.append("  ".join("-" * w for w in widths if w).rstrip())
    lines += [fmt(row) for row in rows]
    return "\n".join(lines)


FOOTNOTE = """\
Throughput = boxes (or bytes, MB = 10^6 B) per call / median seconds per call.
speed-up = median stock time / median ampcore time (ampcore/stock throughput);
"pairs min-max" is the range of the speed-ups of the interleaved repeat pairs.
Codec cases: stock BinaryBoxProtocol.dataReceived, amp.parseString,
AmpBox.serialize; ampcore BoxParser.feed, ampcore.parse, ampcore.serialize.
Round-trip cases (calls/s, us = median microseconds per call): client and
server classes built on amp.AMP (stock) or ampcore.AMP; call-*/string-* in
memory without a reactor (*-seq: each call answered before the next, *-pipe:
100 calls issued, then answered); tcp-loopback: both peers in one child
process per repeat on one reactor, 127.0.0.1, timed after a warm-up.
Targets are reported, not enforced."""


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def parseArgs(argv):
    parser = argparse.ArgumentParser(
        description="Benchmark stock Twisted AMP against ampcore."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer, shorter repeats (CI smoke run)",
    )
    parser.add_argument("--json", metavar="PATH", help="write results as JSON")
    parser.add_argument(
        "--repeat",
        type=int,
        help="repeats per side per case (default 9, --quick 5)",
    )
    parser.add_argument(
        "--min-time",
        type=float,
        help="minimum seconds per repeat (default 0.25, --quick 0.05)",
    )
    parser.add_argument(
        "--case",
        action="append",
        metavar="SUBSTRING",
        help="run only cases whose name contains SUBSTRING (repeatable)",
    )
    parser.add_argument("--list", action="store_true", help="list cases and exit")
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 5 if args.quick else 9
    if args.min_time is None:
        args.min_time = 0.05 if args.quick else 0.25
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.min_time <= 0:
        parser.error("--min-time must be positive")
    return args


def main(argv=None):
    args = parseArgs(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    cases = buildCases(quick=args.quick)
    if args.list:
        for case in cases:
            target = "" if case.target is None else "  (target >= %gx)" % case.target
            print("%-14s %s%s" % (case.name, case.workload, target))
        return 0
    if args.case:
        cases = [c for c in cases if any(s in c.name for s in args.case)]
        if not cases:
            print("no case matches %s" % (", ".join(args.case),), file=sys.stderr)
            return 2

    print(header(args))
    if not ampcore.HAS_C_EXTENSION:
        print(NO_C_WARNING)
    print(flush=True)

    def log(message):
        print("  .. " + message, file=sys.stderr, flush=True)

    results = [runCase(case, args.repeat, args.min_time, log) for case in cases]
    elapsed = time.perf_counter() - started

    print(table(results))
    print()
    print(FOOTNOTE)
    if not ampcore.HAS_C_EXTENSION:
        print()
        print(NO_C_WARNING)
    failed = [r.case.name for r in results if not r.ok]
    if failed:
        print()
        print("CHECK FAILED (not timed): %s" % (", ".join(failed),))
        for r in results:
            if not r.ok:
                print("  %s: %s" % (r.case.name, r.error))
    print("\nTotal runtime %.1f s" % (elapsed,))

    if args.json:
        document = {
            "python": platform.python_version(),
            "python_implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "twisted": twisted.__version__,
            "ampcore": getattr(ampcore, "__version__", None),
            "ampcore_path": os.path.dirname(ampcore.__file__),
            "has_c_extension": ampcore.HAS_C_EXTENSION,
            "quick": args.quick,
            "repeat": args.repeat,
            "min_time": args.min_time,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "runtime_seconds": elapsed,
            "cases": [r.toJSON() for r in results],
        }
        with open(args.json, "w") as f:
            json.dump(document, f, indent=2)
            f.write("\n")
        print("Results written to %s" % (args.json,))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
