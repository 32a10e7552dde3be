"""
Whole AMP conversations for L{run}: stock Twisted AMP vs ampcore.

Every protocol here is built by a factory that takes the AMP base class, so
the stock side is built on C{twisted.protocols.amp.AMP} and the ampcore side
on C{ampcore.AMP}, with the same code otherwise (no C{install()}).

In memory, no reactor
=====================

L{MemoryRoundTrips} joins a client and a server by a L{MemoryConnection}:
each peer's L{MemoryTransport} queues what the peer writes, and
L{MemoryConnection.pump} hands everything queued to the other peer's
C{dataReceived}, one chunk per direction per step (as one TCP read would),
until both directions are quiet.  Explicit pumping is what a reactor does
and keeps the stack flat however long the conversation.

Its workloads (each returns what it got, for the runner's check):

 - L{MemoryRoundTrips.callSequential}: C{callRemote(Sum, ...)} one at a time,
   pumping after each call until it is answered;
 - L{MemoryRoundTrips.callPipelined}: L{BATCH} calls issued, then one pump;
 - L{MemoryRoundTrips.stringSequential} / L{MemoryRoundTrips.stringPipelined}:
   the same with C{callRemoteString(b"ECHO", value=...)} answered by a
   low-level C{amp_ECHO(box)} responder.

Over TCP on 127.0.0.1
=====================

The classic AMP benchmark: a L{Measure} command (600-byte C{String},
C{Integer}, C{ListOf(Float)} of 10), the client keeping L{OUTSTANDING}
calls in flight for a fixed number of calls; server and client in the same
process on one reactor.  A reactor runs once per process, so the runner
starts one short child process per repeat (L{runTCPChild})::

    python benchmarks/roundtrip.py --tcp {stock,ampcore} CALLS [--check]

The child prints one JSON line: seconds for the timed calls (after a
warm-up), and, with C{--check}, every answer.  It checks every answer
itself and exits 1 on a wrong or missing one, or after C{--timeout}.

Profiling
=========

::

    python benchmarks/roundtrip.py --profile ampcore [--workload call-seq]

runs an in-memory workload under cProfile and prints the top functions by
own time (tottime).
"""

import argparse
import gc
import json
import os
import subprocess
import sys
import time
import zlib

from twisted.internet.address import IPv4Address
from twisted.protocols import amp

import ampcore

BATCH = 100
"""Calls per workload call of the in-memory cases (one at a time, or
pipelined)."""

OUTSTANDING = 15
"""Calls the TCP client keeps in flight."""

# ---------------------------------------------------------------------------
# Commands and protocols
# ---------------------------------------------------------------------------


class Sum(amp.Command):
    arguments = [
        (b"a", amp.Integer()),
        (b"b", amp.Integer()),
        (b"label", amp.Unicode()),
    ]
    response = [(b"total", amp.Integer()), (b"label", amp.Unicode())]


class Measure(amp.Command):
    """The classic AMP benchmark's command shape."""

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


_SERVERS = {}


def serverClass(base):
    """The responding protocol, built on C{base} (stock or ampcore AMP)."""
    try:
        return _SERVERS[base]
    except KeyError:
        pass

    class Server(base):
        @Sum.responder
        def sum(self, a, b, label):
            return {"total": a + b, "label": label}

        @Measure.responder
        def measure(self, payload, count, samples):
            return {
                "count": count,
                "crc": zlib.crc32(payload),
                "total": sum(samples),
            }

        def amp_ECHO(self, box):
            # Low-level (SimpleStringLocator) responder: box in, box out.
            return amp.AmpBox({b"value": box[b"value"]})

    Server.__name__ = Server.__qualname__ = "Server_" + base.__module__.split(".")[0]
    _SERVERS[base] = Server
    return Server


def clientClass(base):
    """The calling protocol: C{base} itself, nothing added."""
    return base


# ---------------------------------------------------------------------------
# Arguments and expected answers (independent of both implementations)
# ---------------------------------------------------------------------------

_LABELS = ["sum", "Summe-\u00e9t\u00e9", "\u5408\u8a08", "total \U0001f600"]

SUM_ARGS = [
    (i * 7919 - 350000, (i * 104729) % 1000003 - 500000, _LABELS[i % 4])
    for i in range(BATCH)
]
"""C{(a, b, label)} of the L{BATCH} calls: negative and positive integers,
non-ASCII labels."""

ECHO_VALUES = [
    b"echo-%03d:" % (i,) + bytes(range(i % 7, 64 + i % 7)) for i in range(BATCH)
]
"""The values sent to C{amp_ECHO}: 69 arbitrary bytes each."""


def expectedSums():
    return [{"total": a + b, "label": label} for a, b, label in SUM_ARGS]


def expectedEchoes():
    return list(ECHO_VALUES)


def checkEchoes(stockResult, ampcoreResult):
    """Check for the C{callRemoteString} workloads, which return the answer
    boxes: an C{AmpBox} each, with only C{_answer} (consecutive tags, as the
    calls were made) and the C{value} that was sent."""
    for label, boxes in (("stock", stockResult), ("ampcore", ampcoreResult)):
        assert len(boxes) == BATCH, "%s: %d answers, expected %d" % (
            label,
            len(boxes),
            BATCH,
        )
        tags = []
        for i, (box, value) in enumerate(zip(boxes, ECHO_VALUES)):
            assert isinstance(box, amp.AmpBox), "%s[%d]: %s is not an AmpBox" % (
                label,
                i,
                type(box).__name__,
            )
            assert set(box) == {b"_answer", b"value"}, "%s[%d]: keys %r" % (
                label,
                i,
                sorted(box),
            )
            assert box[b"value"] == value, "%s[%d]: value %.60r, expected %.60r" % (
                label,
                i,
                box[b"value"],
                value,
            )
            tags.append(int(box[b"_answer"], 16))
        assert tags == list(range(tags[0], tags[0] + BATCH)), (
            "%s: answer tags not consecutive: %r" % (label, tags[:10])
        )


# ---------------------------------------------------------------------------
# In-memory connection
# ---------------------------------------------------------------------------


class MemoryTransport:
    """The least a transport must do for AMP: C{write} queues the bytes for
    L{MemoryConnection.pump} to deliver to the peer."""

    disconnecting = False

    def __init__(self, queue, host, peer):
        self._queue = queue
        self._host = host
        self._peer = peer
        # The cheapest possible write, so the harness costs both sides as
        # little as it can: the list's own append (data is checked to be
        # bytes when pump joins it).
        self.write = queue.append

    def write(self, data):  # replaced per instance by queue.append
        self._queue.append(data)

    def writeSequence(self, data):
        self._queue.append(b"".join(data))

    def getHost(self):
        return self._host

    def getPeer(self):
        return self._peer

    def loseConnection(self):
        self.disconnecting = True


class MemoryConnection:
    """A client and a server protocol joined in memory."""

    def __init__(self, client, server):
        self.client = client
        self.server = server
        self.toServer = []
        self.toClient = []
        self.bytesDelivered = 0
        clientAddress = IPv4Address("TCP", "127.0.0.1", 40001)
        serverAddress = IPv4Address("TCP", "127.0.0.1", 7000)
        client.makeConnection(
            MemoryTransport(self.toServer, clientAddress, serverAddress)
        )
        server.makeConnection(
            MemoryTransport(self.toClient, serverAddress, clientAddress)
        )
        self.pump()

    def pump(self):
        """Deliver queued bytes, each direction's as one chunk per step,
        until neither peer has anything left to say."""
        toServer = self.toServer
        toClient = self.toClient
        while toServer or toClient:
            if toServer:
                data = b"".join(toServer)
                toServer.clear()
                self.bytesDelivered += len(data)
                self.server.dataReceived(data)
            if toClient:
                data = b"".join(toClient)
                toClient.clear()
                self.bytesDelivered += len(data)
                self.client.dataReceived(data)


class MemoryRoundTrips:
    """A connected client/server pair built on C{base}, and the in-memory
    workloads.  Each workload does L{BATCH} calls and returns what they
    answered, raising AssertionError if a call fails or goes unanswered."""

    def __init__(self, base):
        self.base = base
        self.client = clientClass(base)()
        self.server = serverClass(base)()
        assert isinstance(self.client, base) and isinstance(self.server, base)
        self.connection = MemoryConnection(self.client, self.server)

    def _done(self, results, errors, expected):
        if errors or len(results) != expected:
            raise AssertionError(
                "%d of %d calls answered, %d failed%s"
                % (
                    len(results),
                    expected,
                    len(errors),
                    ": %s" % (errors[0].getErrorMessage(),) if errors else "",
                )
            )
        return results

    def callSequential(self):
        callRemote = self.client.callRemote
        pump = self.connection.pump
        results = []
        errors = []
        ok = results.append
        bad = errors.append
        n = 0
        for a, b, label in SUM_ARGS:
            callRemote(Sum, a=a, b=b, label=label).addCallbacks(ok, bad)
            pump()
            n += 1
            if len(results) != n:
                self._done(results, errors, n)
        return results

    def callPipelined(self):
        callRemote = self.client.callRemote
        results = []
        errors = []
        ok = results.append
        bad = errors.append
        for a, b, label in SUM_ARGS:
            callRemote(Sum, a=a, b=b, label=label).addCallbacks(ok, bad)
        self.connection.pump()
        return self._done(results, errors, BATCH)

    def stringSequential(self):
        callRemoteString = self.client.callRemoteString
        pump = self.connection.pump
        results = []
        errors = []
        ok = results.append
        bad = errors.append
        n = 0
        for value in ECHO_VALUES:
            callRemoteString(b"ECHO", value=value).addCallbacks(ok, bad)
            pump()
            n += 1
            if len(results) != n:
                self._done(results, errors, n)
        return results

    def stringPipelined(self):
        callRemoteString = self.client.callRemoteString
        results = []
        errors = []
        ok = results.append
        bad = errors.append
        for value in ECHO_VALUES:
            callRemoteString(b"ECHO", value=value).addCallbacks(ok, bad)
        self.connection.pump()
        return self._done(results, errors, BATCH)

    def wireBytes(self, workload):
        """Bytes on the wire (both directions) of one call of C{workload}."""
        before = self.connection.bytesDelivered
        getattr(self, workload)()
        return self.connection.bytesDelivered - before


MEMORY_WORKLOADS = {
    "call-seq": "callSequential",
    "call-pipe": "callPipelined",
    "string-seq": "stringSequential",
    "string-pipe": "stringPipelined",
}
"""Case name -> L{MemoryRoundTrips} method, for L{run} and C{--profile}."""


# ---------------------------------------------------------------------------
# TCP loopback (child process side)
# ---------------------------------------------------------------------------

MEASURE_PAYLOADS = [
    bytes((i * 37 + j * 11) % 251 for j in range(600)) for i in range(4)
]
MEASURE_SAMPLES = [[(i + 1) * 0.1 + j * 1.25 for j in range(10)] for i in range(8)]


def measureArguments(i):
    return {
        "payload": MEASURE_PAYLOADS[i % 4],
        "count": i,
        "samples": MEASURE_SAMPLES[i % 8],
    }


def measureExpected(i):
    return {
        "count": i,
        "crc": zlib.crc32(MEASURE_PAYLOADS[i % 4]),
        "total": sum(MEASURE_SAMPLES[i % 8]),
    }


def measureWireBytes(i):
    """Approximate wire bytes of call C{i}: request plus answer box."""
    tag = b"%x" % (i + 1,)
    ask = Measure.makeArguments(measureArguments(i), None)
    ask[b"_command"] = Measure.commandName
    ask[b"_ask"] = tag
    answer = Measure.makeResponse(measureExpected(i), None)
    answer[b"_answer"] = tag
    return len(ask.serialize()) + len(answer.serialize())


class TCPDriver:
    """Keeps C{outstanding} L{Measure} calls in flight until C{warmup +
    calls} are answered; times the last C{calls}."""

    def __init__(self, reactor, calls, warmup, outstanding, record):
        self.reactor = reactor
        self.total = warmup + calls
        self.warmup = warmup
        self.outstanding = outstanding
        self.arguments = [measureArguments(i) for i in range(self.total)]
        self.expected = [measureExpected(i) for i in range(self.total)]
        self.record = record
        self.results = []
        self.issued = 0
        self.answered = 0
        self.started = None
        self.seconds = None
        self.error = None
        self.protocol = None

    def connected(self, protocol):
        self.protocol = protocol
        if self.warmup == 0:
            self._startClock()
        for _ in range(min(self.outstanding, self.total)):
            self._issue()

    def _startClock(self):
        gc.collect()
        gc.disable()
        self.started = time.perf_counter()

    def _issue(self):
        i = self.issued
        self.issued = i + 1
        self.protocol.callRemote(Measure, **self.arguments[i]).addCallbacks(
            self._answer, self.fail, callbackArgs=(i,)
        )

    def _answer(self, response, i):
        expected = self.expected[i]
        if response != expected:
            message = "call %d answered %r, expected %r" % (i, response, expected)
            self.fail(AssertionError(message))
            return
        if self.record:
            self.results.append(
                [i, response["count"], response["crc"], response["total"]]
            )
        self.answered += 1
        if self.answered == self.warmup:
            self._startClock()
        if self.issued < self.total:
            self._issue()
        elif self.answered == self.total:
            self.seconds = time.perf_counter() - self.started
            gc.enable()
            self.reactor.stop()

    def fail(self, reason):
        if self.error is None:
            self.error = getattr(reason, "getTraceback", lambda: repr(reason))()
        gc.enable()
        if self.reactor.running:
            self.reactor.stop()


def tcpChild(side, calls, warmup, outstanding, timeout, record):
    """Run the TCP benchmark in this process; return a JSON-able report."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
    from twisted.internet.protocol import Factory

    base = {"stock": amp.AMP, "ampcore": ampcore.AMP}[side]
    driver = TCPDriver(reactor, calls, warmup, outstanding, record)
    port = reactor.listenTCP(
        0, Factory.forProtocol(serverClass(base)), interface="127.0.0.1"
    )
    endpoint = TCP4ClientEndpoint(
        reactor, "127.0.0.1", port.getHost().port, timeout=timeout
    )

    def start():
        d = connectProtocol(endpoint, clientClass(base)())
        d.addCallbacks(driver.connected, driver.fail)
        d.addErrback(driver.fail)

    def expire():
        driver.fail(
            RuntimeError(
                "timed out after %g s with %d of %d calls answered"
                % (timeout, driver.answered, driver.total)
            )
        )

    reactor.callWhenRunning(start)
    timer = reactor.callLater(timeout, expire)
    reactor.run(installSignalHandlers=True)
    if timer.active():
        timer.cancel()
    report = {
        "side": side,
        "base": "%s.%s" % (base.__module__, base.__qualname__),
        "reactor": type(reactor).__name__,
        "ampcore_path": os.path.dirname(ampcore.__file__),
        "has_c_extension": ampcore.HAS_C_EXTENSION,
        "calls": calls,
        "warmup": warmup,
        "outstanding": outstanding,
        "answered": driver.answered,
        "seconds": driver.seconds,
        "error": driver.error,
    }
    if driver.error is None and driver.answered != driver.total:
        report["error"] = "%d of %d calls answered" % (driver.answered, driver.total)
    if record:
        report["results"] = driver.results
    return report


# ---------------------------------------------------------------------------
# TCP loopback (runner side)
# ---------------------------------------------------------------------------


def runTCPChild(side, calls, warmup, check=False, timeout=60.0):
    """Run one TCP child for C{side}; return its report.  The child is killed
    if it outlives C{timeout} (plus start-up slack)."""
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--tcp",
        side,
        str(calls),
        "--warmup",
        str(warmup),
        "--timeout",
        str(timeout),
    ]
    if check:
        command.append("--check")
    # subprocess.run kills the child on timeout and on any exception here
    # (KeyboardInterrupt included) before returning or raising.
    proc = subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout + 30,
    )
    lines = proc.stdout.strip().splitlines()
    report = None
    if lines:
        try:
            report = json.loads(lines[-1])
        except ValueError:
            pass
    if proc.returncode != 0 or report is None or report.get("error"):
        detail = (report or {}).get("error") or proc.stderr.strip()[-800:]
        raise RuntimeError(
            "TCP child (%s) exited %d: %s" % (side, proc.returncode, detail)
        )
    here = os.path.dirname(ampcore.__file__)
    if report["ampcore_path"] != here:
        raise RuntimeError(
            "TCP child imported ampcore from %s, not %s"
            % (report["ampcore_path"], here)
        )
    if report["has_c_extension"] != ampcore.HAS_C_EXTENSION:
        raise RuntimeError("TCP child's HAS_C_EXTENSION differs from the runner's")
    return report


def expectedTCPResults(calls):
    return [
        [i, e["count"], e["crc"], e["total"]]
        for i, e in ((i, measureExpected(i)) for i in range(calls))
    ]


# ---------------------------------------------------------------------------
# Profiling and command line
# ---------------------------------------------------------------------------


def profile(side, workload, seconds, top):
    import cProfile
    import pstats

    base = {"stock": amp.AMP, "ampcore": ampcore.AMP}[side]
    trips = MemoryRoundTrips(base)
    function = getattr(trips, MEMORY_WORKLOADS[workload])
    function()
    calls = 0
    profiler = cProfile.Profile()
    deadline = time.perf_counter() + seconds
    profiler.enable()
    while time.perf_counter() < deadline:
        function()
        calls += 1
    profiler.disable()
    print(
        "%s %s: %d workload calls (%d round trips), HAS_C_EXTENSION=%s"
        % (side, workload, calls, calls * BATCH, ampcore.HAS_C_EXTENSION)
    )
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(top)

    # Own time by where the code lives: which layer to move into C next.
    groups = {}
    total = 0.0
    for (filename, _, name), (_, _, tottime, _, _) in stats.stats.items():
        if filename == "~":
            group = "C: ampcore" if "ampcore." in name else "C: builtins/other"
        elif filename == os.path.abspath(__file__):
            group = "benchmark harness (%s)" % (os.path.basename(filename),)
        else:
            parts = filename.replace(os.sep, "/").split("/")
            group = "/".join(parts[-3:]) if "twisted" in parts else filename
        groups[group] = groups.get(group, 0.0) + tottime
        total += tottime
    print("Own time (tottime) by source, %.3f s in all:" % (total,))
    for group, tottime in sorted(groups.items(), key=lambda kv: -kv[1]):
        print("  %6.1f%%  %7.3f s  %s" % (100 * tottime / total, tottime, group))


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="AMP round-trip workloads (used by benchmarks/run.py)."
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--tcp",
        nargs=2,
        metavar=("SIDE", "CALLS"),
        help="run the TCP loopback benchmark for SIDE (stock or ampcore)",
    )
    mode.add_argument(
        "--profile",
        metavar="SIDE",
        choices=["stock", "ampcore"],
        help="cProfile an in-memory workload for SIDE",
    )
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--outstanding", type=int, default=OUTSTANDING)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--check", action="store_true", help="report every answer")
    parser.add_argument(
        "--workload", choices=sorted(MEMORY_WORKLOADS), default="call-seq"
    )
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)

    if args.profile:
        profile(args.profile, args.workload, args.seconds, args.top)
        return 0

    side, calls = args.tcp
    if side not in ("stock", "ampcore"):
        parser.error("SIDE must be stock or ampcore")
    try:
        calls = int(calls)
    except ValueError:
        parser.error("CALLS must be an integer")
    if not 1 <= calls <= 10**6 or args.warmup < 0 or args.outstanding < 1:
        parser.error("need 1 <= CALLS <= 10**6, --warmup >= 0, --outstanding >= 1")
    report = tcpChild(
        side, calls, args.warmup, args.outstanding, args.timeout, args.check
    )
    print(json.dumps(report))
    return 1 if report["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
