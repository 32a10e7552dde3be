"""
An AMP calculator server built on ampcore.

    python examples/server.py [port]

Listens on 127.0.0.1, port 7878 unless given (0 picks a free one), and
prints the address it serves on.  Stop it with Ctrl-C.  Then run
examples/client.py in another terminal.
"""

import sys
from typing import Any

import ampcore
from twisted.internet import endpoints
from twisted.internet import reactor as _reactor
from twisted.internet.tcp import Port
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from commands import Divide, Sum

DEFAULT_PORT = 7878

# The global reactor: Twisted declares it as a module, not as the reactor
# interfaces it provides (IReactorTCP, IReactorCore).
reactor: Any = _reactor

# There are two ways to use ampcore.  This file shows the first: subclass
# ampcore.AMP instead of twisted.protocols.amp.AMP.
#
# The second: call ampcore.install() once, at start-up, before any module
# that subclasses amp.AMP is imported.  From then on
# twisted.protocols.amp.AMP *is* ampcore's class, so unchanged code such as
#
#     class Calculator(amp.AMP): ...
#
# runs on ampcore too.  (Classes defined before install() keep Twisted's.)


class Calculator(ampcore.AMP):
    @Sum.responder
    def sum(self, a: int, b: int) -> dict[str, int]:
        return {"total": a + b}

    @Divide.responder
    def divide(self, numerator: int, denominator: int) -> dict[str, float]:
        # A ZeroDivisionError raised here goes back to the client as the
        # error Divide declares.
        return {"result": numerator / denominator}


def main(argv: list[str]) -> None:
    port = int(argv[1]) if len(argv) > 1 else DEFAULT_PORT
    endpoint = endpoints.TCP4ServerEndpoint(reactor, port, interface="127.0.0.1")
    d = endpoint.listen(Factory.forProtocol(Calculator))

    def listening(listeningPort: Port) -> None:
        address = listeningPort.getHost()
        print(f"Serving on {address.host}:{address.port}", flush=True)
        print(f"ampcore C extension in use: {ampcore.HAS_C_EXTENSION}", flush=True)

    def failed(reason: Failure) -> None:
        print(f"Cannot listen: {reason.getErrorMessage()}", file=sys.stderr)
        reactor.stop()

    d.addCallbacks(listening, failed)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv)
