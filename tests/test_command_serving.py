"""
Commands served from C: when AMP's own locator finds a Command responder,
ampcore parses the arguments, calls the responder and makes the response
itself, where stock goes through C{CommandLocator._wrapWithSerialization}
and C{maybeDeferred}.  These differential scenarios (L{helpers.differential})
cover what that shortcut must still do as stock does, and every name it
depends on, overridden.
"""

import pytest
from twisted.protocols import amp

from helpers import Hello, Pump, differential, needsExtension, recordState

pytestmark = needsExtension()


class WithF(amp.Command):
    """A Command with an argument named f, as maybeDeferred's own."""

    arguments = [(b"f", amp.Integer()), (b"g", amp.Integer())]
    response = [(b"total", amp.Integer())]


class RaisingResponseType(amp.AmpBox):
    def __init__(self):
        raise amp.RemoteAmpError(b"NO_BOX", "no response box today")


class BadResponseType(amp.Command):
    arguments = [(b"a", amp.Integer())]
    response = [(b"a", amp.Integer())]
    responseType = RaisingResponseType


class OwnParse(amp.Command):
    """A Command that parses its arguments itself: served by stock's doit."""

    arguments = [(b"a", amp.Integer())]
    response = [(b"a", amp.Integer())]

    @classmethod
    def parseArguments(cls, box, protocol):
        return {"a": int(box[b"a"]) * 10}


def servers(ns):
    class Server(ns.base):
        @WithF.responder
        def withF(self, f, g):
            return {"total": f + g}

        @BadResponseType.responder
        def bad(self, a):
            return {"a": a}

        @OwnParse.responder
        def ownParse(self, a):
            return {"a": a}

        @Hello.responder
        def hello(self, hello):
            return {"hello": hello}

    return Server


def exchange(ns, trace, server, calls):
    client = ns.base()
    pump = Pump(client, server, trace)
    for label, command, kw in calls:
        trace.watch(label, client.callRemote(command, **kw))
    pump.pump()
    recordState(trace, "S", server)


@differential
def test_an_argument_named_f_fails_in_maybeDeferred(ns, trace):
    """
    Stock's doit calls maybeDeferred(aCallable, **kw): an argument named f
    collides with maybeDeferred's own parameter, a TypeError that ends as
    an UNKNOWN error.
    """
    exchange(ns, trace, servers(ns)(), [("WithF", WithF, {"f": 1, "g": 2})])


@differential
def test_a_responseType_that_raises_fails_the_answer(ns, trace):
    """makeResponse's fail() for a responseType() that raises."""
    exchange(ns, trace, servers(ns)(), [("Bad", BadResponseType, {"a": 1})])


@differential
def test_a_Command_with_its_own_parseArguments_is_served_by_it(ns, trace):
    exchange(ns, trace, servers(ns)(), [("OwnParse", OwnParse, {"a": 4})])


OVERRIDES = {
    "instance-locateResponder": lambda server: setattr(
        server, "locateResponder", lambda name: None
    ),
    "instance-wrapWithSerialization": lambda server: setattr(
        server,
        "_wrapWithSerialization",
        lambda aCallable, command: lambda box: {"hello": b"wrapped"},
    ),
    "locator-elsewhere": lambda server: setattr(server, "locator", _OtherLocator()),
    "instance-commandDispatch": lambda server: setattr(server, "_commandDispatch", {}),
    "class-dispatch-grows": lambda server: type(server)._commandDispatch.__setitem__(
        b"Grown", (Hello, lambda self, hello: {"hello": b"grown " + hello})
    ),
}


class _OtherLocator:
    def locateResponder(self, name):
        return lambda box: amp.AmpBox(hello=b"from elsewhere")


@pytest.mark.parametrize("override", sorted(OVERRIDES))
@differential
def test_what_the_lookup_depends_on_overridden(ns, trace, override):
    server = servers(ns)()
    OVERRIDES[override](server)
    client = ns.base()
    pump = Pump(client, server, trace)
    trace.watch("Hello", client.callRemote(Hello, hello=b"hi"))
    trace.watch("Grown", client.callRemoteString(b"Grown", hello=b"g"))
    pump.pump()
    recordState(trace, "S", server)


@pytest.mark.parametrize("cls", ["CommandLocator", "SimpleStringLocator"])
@differential
def test_stock_locator_classes_patched(ns, trace, cls):
    """AMP.locateResponder calls CommandLocator's and SimpleStringLocator's
    methods through their classes: a patch there is honoured."""
    owner = getattr(amp, cls)
    original = owner.__dict__["locateResponder"]
    owner.locateResponder = lambda self, name: (lambda box: amp.AmpBox(patched=b"1"))
    try:
        server = servers(ns)()
        client = ns.base()
        pump = Pump(client, server, trace)
        trace.watch("Hello", client.callRemoteString(b"Hello", hello=b"hi"))
        pump.pump()
    finally:
        owner.locateResponder = original
