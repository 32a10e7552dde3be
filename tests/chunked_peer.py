"""
One side of a real-TCP conversation with ampcore.arguments values, for
tests/test_chunked_tcp.py.

    python tests/chunked_peer.py server --impl stock|ampcore [--lifetime SECONDS]
    python tests/chunked_peer.py client --impl stock|ampcore --ports S,L,P

C{--impl stock} runs Twisted's own C{amp.AMP} with AMPCORE_PUREPYTHON=1, so
ampcore.arguments runs as it would next to stock Twisted alone (no C
extension, no install()); C{--impl ampcore} runs C{ampcore.AMP}.

The server listens on three ephemeral ports of 127.0.0.1, one per schema of
tests/chunkedcommands.py (strict, loose, plain), and prints
C{PORTS <strict>,<loose>,<plain>}.  The client makes each call in
L{CASES} on a new connection and prints C{label<TAB>outcome}, where the
outcome names what came back (C{ok}, or the failure's type) and whether it
was exactly what was sent; then C{#done}.  Lines starting with C{#} say
which implementation each side ran.  Only 127.0.0.1 is used.
"""

import argparse
import os
import sys

IMPL = sys.argv[sys.argv.index("--impl") + 1] if "--impl" in sys.argv else None
if IMPL == "stock":
    os.environ["AMPCORE_PUREPYTHON"] = "1"  # before ampcore is imported

from twisted.internet import defer, endpoints, protocol, reactor  # noqa: E402
from twisted.protocols import amp  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402

import ampcore  # noqa: E402
from ampcore import arguments  # noqa: E402
from chunkedcommands import (  # noqa: E402
    SIZES,
    M,
    Echo,
    EchoList,
    EchoLoose,
    EchoPlain,
    EchoRows,
    EchoText,
    Give,
    GiveLoose,
    GivePlain,
    pattern,
    serverClass,
)

HOST = "127.0.0.1"
CALL_TIMEOUT = 20.0
CLIENT_DEADLINE = 100.0

TEXT = "a" * 3 + "😀" * (3 * 65535 // 4) + "𝄞"
TEXTS = ["ü" * 1000, "", "😀" * 5000] * 10
ROWS = [{"name": f"row {i} ☃", "data": pattern(3000 + i)} for i in range(60)]


def base():
    return amp.AMP if IMPL == "stock" else ampcore.AMP


def header(role):
    cls = base()
    return (
        f"#{role} impl={IMPL} c_extension={ampcore.HAS_C_EXTENSION and IMPL == 'ampcore'} "
        f"c_join={arguments._joinChunksC is not None} "
        f"amp_module={cls.__module__}"
    )


def cases():
    """(label, port name, command, keywords, what a correct answer is)."""
    out = []
    for n in SIZES:
        value = pattern(n)
        out.append((f"Echo/{n}", "strict", Echo, {"value": value},
                    {"value": value, "length": n}))
        out.append((f"Give/{n}", "strict", Give, {"length": n}, {"value": value}))
    big = pattern(M + 1)
    out += [
        ("EchoLoose-to-strict/M+1", "strict", EchoLoose, {"value": big}, None),
        ("Give-from-loose/M+1", "loose", Give, {"length": M + 1}, None),
        ("GiveLoose-from-loose/M+1", "loose", GiveLoose, {"length": M + 1},
         {"value": big}),
        ("EchoText", "strict", EchoText, {"text": TEXT}, {"text": TEXT}),
        ("EchoList", "strict", EchoList, {"texts": TEXTS}, {"texts": TEXTS}),
        ("EchoRows", "strict", EchoRows, {"rows": ROWS, "extra": pattern(70000)},
         {"rows": ROWS, "extra": pattern(70000)}),
        ("EchoRows/no-extra", "strict", EchoRows, {"rows": ROWS, "extra": None},
         {"rows": ROWS, "extra": None}),
        ("mismatch/EchoPlain-small-to-strict", "strict", EchoPlain,
         {"value": pattern(65535)}, {"value": pattern(65535), "length": 65535}),
        ("mismatch/Echo-small-to-plain", "plain", Echo, {"value": pattern(65535)},
         {"value": pattern(65535), "length": 65535}),
        ("mismatch/Echo-big-to-plain", "plain", Echo, {"value": pattern(65536)}, None),
        ("mismatch/GivePlain-from-strict", "strict", GivePlain, {"length": 65536}, None),
        ("mismatch/Give-from-plain", "plain", Give, {"length": 65536}, None),
        ("mismatch/EchoPlain-big", "strict", EchoPlain, {"value": pattern(65536)}, None),
    ]
    return out


def describe(result, expected):
    if expected is not None and result == expected:
        return "ok, as sent"
    return f"ok, NOT as sent: {sorted(result)}"


async def runClient(ports):
    print(header("client"), flush=True)
    for label, port, command, kw, expected in cases():
        endpoint = endpoints.TCP4ClientEndpoint(reactor, HOST, ports[port], timeout=5)
        proto = await endpoints.connectProtocol(endpoint, base()()).addTimeout(
            CALL_TIMEOUT, reactor
        )
        try:
            d = proto.callRemote(command, **kw)
        except Exception as e:
            outcome = f"raised {type(e).__qualname__}"
        else:
            d.addTimeout(CALL_TIMEOUT, reactor)
            try:
                result = await d
            except Exception as e:
                outcome = f"failed {type(e).__module__}.{type(e).__qualname__}"
            else:
                outcome = describe(result, expected)
        print(f"{label}\t{outcome}", flush=True)
        proto.transport.loseConnection()
    print("#done", flush=True)


def clientMain(ports):
    names = ("strict", "loose", "plain")
    ports = dict(zip(names, map(int, ports.split(","))))
    status = []

    def done(result):
        if isinstance(result, Failure):
            print("#CLIENT CRASHED", flush=True)
            result.printTraceback(file=sys.stdout)
            status.append(1)
        else:
            status.append(0)
        reactor.stop()

    def deadline():
        print("#TIMEOUT", flush=True)
        os._exit(3)

    reactor.callLater(CLIENT_DEADLINE, deadline)
    reactor.callWhenRunning(lambda: defer.ensureDeferred(runClient(ports)).addBoth(done))
    reactor.run()
    sys.stdout.flush()
    os._exit(status[0] if status else 2)


def serverMain(lifetime):
    print(header("server"), flush=True)
    ports = []
    for schema in ("strict", "loose", "plain"):
        factory = protocol.Factory.forProtocol(serverClass(base(), schema))
        ports.append(reactor.listenTCP(0, factory, interface=HOST).getHost().port)
    print("PORTS " + ",".join(map(str, ports)), flush=True)
    reactor.callLater(lifetime, reactor.stop)
    reactor.run()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("--impl", choices=["stock", "ampcore"], required=True)
    parser.add_argument("--ports")
    parser.add_argument("--lifetime", type=float, default=120.0)
    args = parser.parse_args()
    if args.role == "server":
        serverMain(args.lifetime)
    else:
        clientMain(args.ports)


if __name__ == "__main__":
    main()
