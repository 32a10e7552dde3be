"""
Reference-leak checks for the C dispatcher and protocol cores.

A release build of CPython has no sys.gettotalrefcount, so these loops watch
memory instead: every object the C code creates is allocated through
Python's allocator, which tracemalloc sees, so a missing decref on any path
shows up as growth proportional to the iteration count.  Each scenario runs
a warm-up and two measured windows; the second window must stay flat.  (The
first may still grow while interpreter caches fill: the type attribute
cache keeps the names amp_X lookups build, for stock Twisted as for us.)
"""

import gc
import sys
import tracemalloc

import pytest
from twisted.internet.error import ConnectionDone
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python import failure, log

import ampcore

pytestmark = pytest.mark.skipif(
    not ampcore.HAS_C_EXTENSION, reason="nothing of ours to leak"
)

ROUNDS = 2000
WARMUP = 300
# Bytes of growth tolerated over ROUNDS iterations: one leaked object per
# iteration would be ~100 KB or more.
SLACK = 24 * 1024


class Declared(Exception):
    pass


class Hello(amp.Command):
    arguments = [(b"hello", amp.String())]
    response = [(b"hello", amp.String())]
    errors = {Declared: b"DECLARED"}


class Transport:
    disconnecting = False

    def __init__(self):
        self.written = []

    def write(self, data):
        self.written.append(data)

    def writeSequence(self, seq):
        self.written.extend(seq)

    def getPeer(self):
        return "peer"

    def getHost(self):
        return "host"

    def loseConnection(self):
        self.disconnecting = True


class Peer(ampcore.AMP):
    @Hello.responder
    def hello(self, hello):
        if hello == b"declared":
            raise Declared("no")
        if hello == b"undeclared":
            raise ValueError("boom")
        return {"hello": hello}

    def amp_ECHO(self, box):
        return amp.AmpBox(value=box[b"value"])

    def amp_NONE(self, box):
        return None


@pytest.fixture(autouse=True)
def quiet_logs(monkeypatch):
    """Logged failures must not pile up in a log buffer during the loops."""
    monkeypatch.setattr(amp, "_log", Logger(observer=lambda event: None), raising=False)
    monkeypatch.setattr(log, "err", lambda *a, **k: None)


def connected():
    client, server = Peer(), Peer()
    ct, st = Transport(), Transport()
    client.makeConnection(ct)
    server.makeConnection(st)

    def pump():
        while ct.written or st.written:
            if ct.written:
                data = b"".join(ct.written)
                ct.written.clear()
                server.dataReceived(data)
            if st.written:
                data = b"".join(st.written)
                st.written.clear()
                client.dataReceived(data)

    return client, server, pump


def assert_flat(step):
    for _ in range(WARMUP):
        step()
    gc.collect()
    refs = getattr(sys, "gettotalrefcount", lambda: 0)
    tracemalloc.start()
    try:
        for _ in range(ROUNDS):
            step()
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        refsBefore = refs()
        for _ in range(ROUNDS):
            step()
        gc.collect()
        growth = tracemalloc.get_traced_memory()[0] - before
        refGrowth = refs() - refsBefore
    finally:
        tracemalloc.stop()
    assert growth < SLACK, f"memory grew by {growth} bytes over {ROUNDS} rounds"
    # On a debug build, the interpreter's count of all references: one
    # leaked reference per round would add ROUNDS.
    assert refGrowth < ROUNDS // 4, f"{refGrowth} references leaked over {ROUNDS} rounds"


def swallow(f):
    return None


def test_round_trips_do_not_leak():
    client, server, pump = connected()

    def step():
        results = []
        client.callRemote(Hello, hello=b"x").addCallback(results.append)
        client.callRemoteString(b"echo", value=b"v").addCallback(results.append)
        client.callRemote(Hello, hello=b"declared").addErrback(results.append)
        client.callRemoteString(b"nosuch").addErrback(results.append)
        pump()
        assert len(results) == 4

    assert_flat(step)


def test_failing_responders_do_not_leak():
    def step():
        client, server, pump = connected()
        client.callRemote(Hello, hello=b"undeclared").addErrback(swallow)
        client.callRemoteString(b"none").addErrback(swallow)
        pump()
        client.connectionLost(failure.Failure(ConnectionDone()))
        server.connectionLost(failure.Failure(ConnectionDone()))

    assert_flat(step)


def test_bad_input_does_not_leak():
    def step():
        client, server, pump = connected()
        for data in (
            b"\x00\x00",  # empty box: NoEmptyBoxes
            amp.AmpBox({b"_answer": b"ffff"}).serialize(),  # unknown tag
            amp.AmpBox({b"_ask": b"1"}).serialize(),  # ask without command
        ):
            with pytest.raises((amp.NoEmptyBoxes, KeyError)):
                server.dataReceived(data)
            server.recvd = b""
        d = client.callRemote(Hello, hello=b"x")
        d.addErrback(swallow)
        # An error box without a description: KeyError, request dropped.
        with pytest.raises(KeyError):
            client.dataReceived(amp.AmpBox({b"_error": b"1", b"_error_code": b"X"}).serialize())
        with pytest.raises(amp.TooLong):
            client.callRemoteString(b"echo", value=b"x" * 65536)
        with pytest.raises(TypeError):
            client.callRemoteString(b"echo", value="str")
        with pytest.raises(UnicodeEncodeError):
            client.callRemoteString(b"echo", **{"\u00e9": b"x"})
        d = client.callRemote(Hello, hello=b"y")
        d.addErrback(swallow)
        server.dataReceived(b"\x00\x05hello\x01\x00")  # over-long key prefix
        server.dataReceived(b"more")
        client.connectionLost(failure.Failure(ConnectionDone()))
        server.connectionLost(failure.Failure(ConnectionDone()))
        with pytest.raises(amp.ProtocolSwitched):
            server._locked = True
            server.sendBox(amp.AmpBox(a=b"b"))

    assert_flat(step)


def test_partial_boxes_do_not_leak():
    payload = amp.AmpBox(_command=b"echo", _ask=b"1", value=b"v" * 300).serialize()

    def step():
        client, server, pump = connected()
        for i in range(0, len(payload), 7):
            server.dataReceived(payload[i : i + 7])
        server.dataReceived(payload[:100])  # left half-received
        server.connectionLost(failure.Failure(ConnectionDone()))

    assert_flat(step)
