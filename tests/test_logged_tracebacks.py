"""
Failures that ampcore's C code logs or hands to C{unhandledError} carry the
traceback of the user code that failed, as stock's do.

The frames of Twisted's own code differ where C stands in for it (stock's
include C{maybeDeferred}, C{checkKnownErrors} and the like), so what is
compared is the part of each failure's frames that is this file's code:
function names and line numbers, from C{Failure.frames} and from
C{Failure.getTracebackObject()}, of every failure logged.
"""

import gc

import pytest
from twisted.internet.defer import maybeDeferred
from twisted.internet.error import ConnectionLost
from twisted.logger import globalLogPublisher
from twisted.protocols import amp
from twisted.python.failure import Failure

from helpers import FakeTransport, Hello, Pump, needsExtension

pytestmark = needsExtension()

HERE = __file__.rstrip("c")


class Boom(Exception):
    pass


def failingUserCode(*args, **kwargs):
    raise Boom("user code failed")


class WriteFails(FakeTransport):
    def write(self, data):
        failingUserCode()


def userFrames(failure):
    """(function, line) of this file's frames, from C{frames} and from the
    traceback object."""
    fromFrames = [(f[0], f[2]) for f in failure.frames if f[1] == HERE]
    fromTb = []
    tb = failure.getTracebackObject()
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == HERE:
            fromTb.append((code.co_name, tb.tb_lineno))
        tb = tb.tb_next
    return fromFrames, fromTb


def servedBy(base, responder=None, **methods):
    """A server class on C{base} whose Hello responder is C{responder}."""
    ns = dict(methods)
    if responder is not None:
        ns["hello"] = Hello.responder(responder)
    return type("Server", (base,), ns)


def commandResponderRaises(base):
    def hello(self, hello):
        return failingUserCode()

    c, s = base(), servedBy(base, hello)()
    pump = Pump(c, s)
    c.callRemote(Hello, hello=b"x").addErrback(lambda f: None)
    pump.pump(disconnect=False)


def commandResponderDeferredFails(base):
    def hello(self, hello):
        return maybeDeferred(failingUserCode)

    c, s = base(), servedBy(base, hello)()
    pump = Pump(c, s)
    c.callRemote(Hello, hello=b"x").addErrback(lambda f: None)
    pump.pump(disconnect=False)


def ampResponderRaises(base):
    c, s = base(), servedBy(base, amp_ECHO=lambda self, box: failingUserCode())()
    pump = Pump(c, s)
    c.callRemoteString(b"ECHO", x=b"x").addErrback(lambda f: None)
    pump.pump(disconnect=False)


def ampResponderRaisesNoAnswer(base):
    c, s = base(), servedBy(base, amp_ECHO=lambda self, box: failingUserCode())()
    pump = Pump(c, s)
    c.callRemoteString(b"ECHO", requiresAnswer=False, x=b"x")
    pump.pump(disconnect=False)


def answerWriteFails(base):
    s = servedBy(base, lambda self, hello: {"hello": hello})()
    s.makeConnection(WriteFails())
    s.dataReceived(amp.AmpBox(_command=b"Hello", _ask=b"1", hello=b"x").serialize())


def ampAnswerWriteFails(base):
    s = servedBy(base, amp_ECHO=lambda self, box: amp.AmpBox(y=b"1"))()
    s.makeConnection(WriteFails())
    s.dataReceived(amp.AmpBox(_command=b"ECHO", _ask=b"1").serialize())


def clientCallbackRaises(base):
    c, s = base(), servedBy(base, lambda self, hello: {"hello": hello})()
    pump = Pump(c, s)
    c.callRemote(Hello, hello=b"x").addCallback(failingUserCode)
    c.callRemoteString(b"Hello", hello=b"y").addCallback(failingUserCode)
    pump.pump(disconnect=False)


def clientErrbackRaises(base):
    def hello(self, hello):
        raise amp.RemoteAmpError(b"CODE", "described")

    c, s = base(), servedBy(base, hello)()
    pump = Pump(c, s)
    c.callRemoteString(b"Hello", hello=b"x").addErrback(failingUserCode)
    pump.pump(disconnect=False)


def unhandledErrorOverrideRaises(base):
    c = base()
    s = servedBy(base, amp_ECHO=lambda self, box: failingUserCode(),
                 unhandledError=lambda self, failure: failingUserCode())()
    pump = Pump(c, s)
    c.callRemoteString(b"ECHO", requiresAnswer=False, x=b"x")
    pump.pump(disconnect=False)


def connectionLostErrbackRaises(base):
    c, s = base(), servedBy(base)()
    pump = Pump(c, s)
    c.callRemoteString(b"ECHO", x=b"x")
    c.callRemoteString(b"ECHO", x=b"x").addErrback(failingUserCode)
    c.connectionLost(Failure(ConnectionLost("gone")))
    del pump


SCENARIOS = [
    commandResponderRaises,
    commandResponderDeferredFails,
    ampResponderRaises,
    ampResponderRaisesNoAnswer,
    answerWriteFails,
    ampAnswerWriteFails,
    clientCallbackRaises,
    clientErrbackRaises,
    unhandledErrorOverrideRaises,
    connectionLostErrbackRaises,
]


def loggedUserFrames(scenario, base):
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        scenario(base)
        gc.collect()
    finally:
        globalLogPublisher.removeObserver(events.append)
    out = []
    for event in events:
        failure = event.get("log_failure") or event.get("failure")
        if failure is not None:
            out.append((failure.type.__name__,) + userFrames(failure))
    return sorted(out)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_logged_failures_carry_the_user_frames(scenario):
    import ampcore

    stock = loggedUserFrames(scenario, amp.AMP)
    core = loggedUserFrames(scenario, ampcore.AMP)
    assert core == stock
    # The scenario does log a failure raised in user code, with its frame.
    assert any(
        kind == "Boom" and ("failingUserCode", failingUserCode.__code__.co_firstlineno + 1)
        in frames and frames == tb
        for kind, frames, tb in stock
    ), stock
