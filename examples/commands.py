"""
The AMP commands that examples/server.py answers and examples/client.py
sends.  Commands are plain Twisted: ampcore changes how boxes are parsed,
serialized and dispatched, not how commands are declared.
"""

from twisted.protocols import amp


class Sum(amp.Command):
    """Add two integers."""

    arguments = [(b"a", amp.Integer()), (b"b", amp.Integer())]
    response = [(b"total", amp.Integer())]


class Divide(amp.Command):
    """
    Divide two integers.  Dividing by zero is a declared error: the client
    gets a ZeroDivisionError, and the connection stays open.
    """

    arguments = [(b"numerator", amp.Integer()), (b"denominator", amp.Integer())]
    response = [(b"result", amp.Float())]
    errors = {ZeroDivisionError: b"ZERO_DIVISION"}
