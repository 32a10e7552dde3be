"""
An AMP client for examples/server.py: makes a few calls, prints the
results and exits.

    python examples/client.py [port]

Connects to 127.0.0.1, port 7878 unless given.
"""

import sys
from typing import Any

import ampcore
from twisted.internet import defer, endpoints, task

from commands import Divide, Sum

DEFAULT_PORT = 7878


async def run(reactor: Any, port: int) -> None:
    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
    # AMP is symmetric: the client side is an AMP protocol too, and can be
    # ampcore's.  (Or call ampcore.install() first and use amp.AMP.)
    protocol = await endpoints.connectProtocol(endpoint, ampcore.AMP())

    answer = await protocol.callRemote(Sum, a=13, b=81)
    print(f"13 + 81 = {answer['total']}")

    # Several calls at once: AMP matches each answer to its question.
    answers = await defer.gatherResults(
        [protocol.callRemote(Sum, a=i, b=i) for i in range(5)]
    )
    print("doubles:", [a["total"] for a in answers])

    answer = await protocol.callRemote(Divide, numerator=10, denominator=4)
    print(f"10 / 4 = {answer['result']}")

    try:
        await protocol.callRemote(Divide, numerator=1, denominator=0)
    except ZeroDivisionError as e:
        print(f"1 / 0 failed on the server: ZeroDivisionError: {e}")

    protocol.transport.loseConnection()


def main(argv: list[str]) -> None:
    port = int(argv[1]) if len(argv) > 1 else DEFAULT_PORT
    def start(reactor: Any) -> defer.Deferred[None]:
        return defer.ensureDeferred(run(reactor, port))

    task.react(start)


if __name__ == "__main__":
    main(sys.argv)
