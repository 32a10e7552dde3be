"""
The Commands and protocols the ampcore.arguments tests share: in-memory in
tests/test_chunked.py and over TCP in tests/chunked_peer.py (which runs the
stock side without ampcore's C extension, as a stock peer would be).

Commands with the same C{commandName} are the two sides of one command with
different schemas: C{Echo} (BigBytes at the default maxLength) beside
C{EchoLoose} (one byte more allowed) and C{EchoPlain} (C{amp.String()}).
"""

import random

from twisted.protocols import amp

from ampcore.arguments import DEFAULT_MAX_LENGTH, BigBytes, BigUnicode, Chunked

M = DEFAULT_MAX_LENGTH

# The lengths every round trip is made at: around one and two chunks, and
# at and just over the limit.
SIZES = (0, 1, 65534, 65535, 65536, 131070, 131071, M, M + 1)


def pattern(n):
    """n bytes, different for every n and every chunk of them."""
    return random.Random(n).randbytes(n)


class Echo(amp.Command):
    arguments = [(b"value", BigBytes())]
    response = [(b"value", BigBytes()), (b"length", amp.Integer())]


class EchoLoose(amp.Command):
    commandName = b"Echo"
    arguments = [(b"value", BigBytes(maxLength=M + 1))]
    response = [(b"value", BigBytes(maxLength=M + 1)), (b"length", amp.Integer())]


class EchoPlain(amp.Command):
    commandName = b"Echo"
    arguments = [(b"value", amp.String())]
    response = [(b"value", amp.String()), (b"length", amp.Integer())]


class Give(amp.Command):
    """Only the response is big: C{length} bytes of L{pattern}."""

    arguments = [(b"length", amp.Integer())]
    response = [(b"value", BigBytes())]


class GiveLoose(amp.Command):
    commandName = b"Give"
    arguments = [(b"length", amp.Integer())]
    response = [(b"value", BigBytes(maxLength=M + 1))]


class GivePlain(amp.Command):
    commandName = b"Give"
    arguments = [(b"length", amp.Integer())]
    response = [(b"value", amp.String())]


class EchoText(amp.Command):
    arguments = [(b"text", BigUnicode())]
    response = [(b"text", BigUnicode())]


class EchoList(amp.Command):
    arguments = [(b"texts", Chunked(amp.ListOf(amp.Unicode())))]
    response = [(b"texts", Chunked(amp.ListOf(amp.Unicode())))]


ROW = amp.AmpList([(b"name", amp.Unicode()), (b"data", amp.String())])


class EchoRows(amp.Command):
    arguments = [(b"rows", Chunked(ROW)), (b"extra", BigBytes(optional=True))]
    response = [(b"rows", Chunked(ROW)), (b"extra", BigBytes(optional=True))]


def serverClass(base, schema="strict"):
    """
    An AMP server on C{base} (C{amp.AMP} or C{ampcore.AMP}) answering
    Echo, Give and the echo commands with the schema named: C{"strict"}
    (Echo, Give), C{"loose"} (EchoLoose, GiveLoose) or C{"plain"}
    (EchoPlain, GivePlain).
    """
    echoCommand, giveCommand = {
        "strict": (Echo, Give),
        "loose": (EchoLoose, GiveLoose),
        "plain": (EchoPlain, GivePlain),
    }[schema]

    class Server(base):
        @echoCommand.responder
        def echo(self, value):
            return {"value": value, "length": len(value)}

        @giveCommand.responder
        def give(self, length):
            return {"value": pattern(length)}

        @EchoText.responder
        def echoText(self, text):
            return {"text": text}

        @EchoList.responder
        def echoList(self, texts):
            return {"texts": texts}

        @EchoRows.responder
        def echoRows(self, rows, extra):
            return {"rows": rows, "extra": extra}

    Server.__name__ = f"Server_{schema}_{base.__module__.replace('.', '_')}"
    return Server
