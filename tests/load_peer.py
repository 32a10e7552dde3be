"""
The two sides of tests/test_load.py's load test over 127.0.0.1.

    python tests/load_peer.py server
    python tests/load_peer.py client --port PORT --connections N --calls M
        --in-flight K --warmup W

The server is always ampcore's AMP (the C extension must be in use).  It
prints C{PORT <n>} and serves until killed.  Its responders: L{Work}
(answered at once, or from a Deferred a reactor turn later for every
seventh call, so answers come back out of order), C{amp_ECHO} (for
callRemoteString) and L{Stats} (the server's resident size, after a
collection).

The client opens N connections, alternately on stock Twisted's AMP and on
ampcore's, and on each makes W calls, then (after asking the server for its
resident size) M more, keeping K in flight per connection.  Every answer is
checked against what was asked; an answer that is wrong, comes twice, or
never comes is an error.  The client prints one JSON line and exits 0.
"""

import argparse
import gc
import json
import os
import sys
import zlib

from twisted.internet import defer, endpoints, protocol, reactor
from twisted.protocols import amp

HOST = "127.0.0.1"
DEADLINE = 90.0


class Work(amp.Command):
    arguments = [(b"n", amp.Integer()), (b"payload", amp.String()), (b"label", amp.Unicode())]
    response = [
        (b"n", amp.Integer()),
        (b"doubled", amp.Integer()),
        (b"crc", amp.Integer()),
        (b"label", amp.Unicode()),
    ]


class Stats(amp.Command):
    arguments = []
    response = [(b"rss", amp.Integer())]


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def workAnswer(n, payload, label):
    return {"n": n, "doubled": n * 2, "crc": zlib.crc32(payload), "label": label[::-1]}


def payloadFor(n):
    return bytes((n * 7 + i) % 256 for i in range(n % 300))


def labelFor(n):
    return "call-\u00e9-%d" % n


# ---- server ---------------------------------------------------------------------


def runServer():
    import ampcore

    assert ampcore.HAS_C_EXTENSION, "the server must run ampcore's C extension"

    class Server(ampcore.AMP):
        @Work.responder
        def work(self, n, payload, label):
            answer = workAnswer(n, payload, label)
            if n % 7 == 0:
                d = defer.Deferred()
                reactor.callLater(0, d.callback, answer)
                return d
            return answer

        @Stats.responder
        def stats(self):
            gc.collect()
            return {"rss": rss()}

        def amp_ECHO(self, box):
            return amp.AmpBox(echoed=box[b"value"][::-1])

    factory = protocol.Factory.forProtocol(Server)
    endpoint = endpoints.TCP4ServerEndpoint(reactor, 0, interface=HOST)

    def listening(port):
        print("PORT %d" % port.getHost().port, flush=True)

    endpoint.listen(factory).addCallback(listening)
    reactor.run()


# ---- client ---------------------------------------------------------------------


class Tally:
    def __init__(self):
        self.answered = {}  # (connection, n) -> count
        self.errors = []

    def error(self, *what):
        if len(self.errors) < 20:
            self.errors.append(repr(what))


def callOne(proto, conn, n, tally):
    """One call, checked; a Deferred that fires when it is answered."""
    if n % 5 == 0:
        value = b"v%d-" % n + payloadFor(n)
        d = proto.callRemoteString(b"ECHO", value=value)

        def check(box):
            if dict(box) != {b"echoed": value[::-1], b"_answer": box.get(b"_answer")}:
                tally.error("bad echo", conn, n, dict(box))
    else:
        payload, label = payloadFor(n), labelFor(n)
        d = proto.callRemote(Work, n=n, payload=payload, label=label)

        def check(answer):
            if answer != workAnswer(n, payload, label):
                tally.error("bad answer", conn, n, answer)

    def count(result):
        key = (conn, n)
        tally.answered[key] = tally.answered.get(key, 0) + 1
        if tally.answered[key] > 1:
            tally.error("answered twice", conn, n)
        check(result)

    def failed(f):
        tally.error("failed", conn, n, str(f.value))

    return d.addCallbacks(count, failed)


def runCalls(proto, conn, first, count, inFlight, tally):
    """Make calls first .. first+count-1 on proto, inFlight at a time."""
    done = defer.Deferred()
    state = {"next": first, "outstanding": 0}
    end = first + count

    def startMore(_=None):
        while state["outstanding"] < inFlight and state["next"] < end:
            n = state["next"]
            state["next"] += 1
            state["outstanding"] += 1
            callOne(proto, conn, n, tally).addBoth(finished)
        if state["outstanding"] == 0 and state["next"] >= end and not done.called:
            done.callback(None)

    def finished(_):
        state["outstanding"] -= 1
        startMore()

    startMore()
    return done


@defer.inlineCallbacks
def client(args):
    import ampcore

    tally = Tally()
    kinds = [amp.AMP, ampcore.AMP]
    protos = []
    for i in range(args.connections):
        endpoint = endpoints.TCP4ClientEndpoint(reactor, HOST, args.port)
        proto = yield endpoints.connectProtocol(endpoint, kinds[i % 2]())
        protos.append(proto)

    def round_(first, count):
        return defer.gatherResults(
            [runCalls(p, i, first, count, args.in_flight, tally) for i, p in enumerate(protos)]
        )

    yield round_(0, args.warmup)
    before = (yield protos[0].callRemote(Stats))["rss"]
    yield round_(args.warmup, args.calls)
    after = (yield protos[1].callRemote(Stats))["rss"]
    expected = {(c, n) for c in range(args.connections) for n in range(args.warmup + args.calls)}
    missing = expected - set(tally.answered)
    if missing:
        tally.error("never answered", len(missing), sorted(missing)[:5])
    for p in protos:
        p.transport.loseConnection()
    return {
        "answers": sum(tally.answered.values()),
        "expected": len(expected),
        "errors": tally.errors,
        "rssBefore": before,
        "rssAfter": after,
        "clients": sorted({type(p).__module__ for p in protos}),
    }


def runClient(args):
    result = {}

    def done(r):
        result.update(r)
        reactor.stop()

    def failed(f):
        result["errors"] = ["client failed: %s" % f.getTraceback()]
        reactor.stop()

    def tooLate():
        result.setdefault("errors", []).append("deadline of %d s passed" % DEADLINE)
        reactor.stop()

    reactor.callWhenRunning(lambda: client(args).addCallbacks(done, failed))
    timer = reactor.callLater(DEADLINE, tooLate)
    reactor.run()
    if timer.active():
        timer.cancel()
    print(json.dumps(result), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--in-flight", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=100)
    args = parser.parse_args()
    if args.role == "server":
        runServer()
    else:
        runClient(args)


if __name__ == "__main__":
    sys.exit(main())
