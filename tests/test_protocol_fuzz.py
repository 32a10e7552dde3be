"""
Differential fuzzing of whole AMP connections: random streams of command,
answer and error boxes (well-formed or not), with garbage and over-long key
prefixes mixed in, fed in random chunks to a connected stock AMP and to a
connected ampcore AMP.  Everything observable must match, chunk by chunk:
what each dataReceived call raised, the bytes written back, which
Deferreds of earlier callRemoteString calls fired and how, the failures
logged, and whether the connection was dropped.

The comparison stops at the first exception out of dataReceived: stock's
C{Int16StringReceiver.dataReceived} stores its whole buffer in
C{_unprocessed} before its loop and the offset it reached only after it, so
a later call would deliver the same strings again; and a reactor would close
the connection.  It also stops after the
chunk that brought an over-long key prefix: stock keeps its whole buffer
then and parses it again on the next chunk, delivering boxes a second time,
where ampcore reads nothing more (README).
"""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.logger import globalLogPublisher
from twisted.protocols import amp

import ampcore
from helpers import FakeTransport, chunked, makeClasses, needsExtension

pytestmark = needsExtension()

PEERS = {
    "stock": makeClasses(amp.AMP).EchoPeer,
    "ampcore": makeClasses(ampcore.AMP).EchoPeer,
}

tags = st.sampled_from([b"1", b"2", b"3", b"9", b""])
values = st.sampled_from([b"", b"x", b"declared", b"undeclared", b"\xff"])
boxes = st.fixed_dictionaries(
    {},
    optional={
        b"_ask": tags,
        b"_answer": tags,
        b"_error": tags,
        b"_error_code": st.sampled_from([b"UNHANDLED", b"UNKNOWN", b"DECLARED", b"X"]),
        b"_error_description": values,
        b"_command": st.sampled_from([b"hello", b"Hello", b"echo", b"none", b"nosuch"]),
        b"hello": values,
        b"value": values,
    },
).map(lambda d: amp.AmpBox(d).serialize())
pieces = st.one_of(
    boxes,
    boxes,
    boxes,
    st.binary(max_size=12),  # garbage
    st.just(b"\x01\x00"),  # an over-long key prefix
)
streams = st.lists(pieces, min_size=1, max_size=8).map(b"".join)


def describe(x):
    if isinstance(x, BaseException):
        return (type(x).__name__, repr(x.args))
    if hasattr(x, "value") and isinstance(getattr(x, "value"), BaseException):
        return ("Failure", type(x.value).__name__, str(x.value))
    return ("result", repr(x))


def run(impl, stream, points):
    """One connection's trace over the chunked stream."""
    trace = []
    events = []

    def observe(event):
        failure = event.get("log_failure") or event.get("failure")
        if failure is not None:
            events.append(("logged", type(failure.value).__name__))

    globalLogPublisher.addObserver(observe)
    try:
        proto = PEERS[impl]()
        transport = FakeTransport()
        proto.makeConnection(transport)
        fired = []
        for i in range(2):
            d = proto.callRemoteString(b"echo", value=b"%d" % i)
            d.addBoth(lambda r, i=i: fired.append((i, describe(r))))
        transport.clear()
        for chunk in chunked(stream, at=points):
            try:
                proto.dataReceived(chunk)
                raised = None
            except Exception as e:
                raised = describe(e)
            trace.append(
                (
                    raised,
                    transport.value(),
                    list(fired),
                    list(events),
                    transport.disconnecting,
                )
            )
            transport.clear()
            if raised is not None or proto._keyLengthLimitExceeded:
                break
    finally:
        globalLogPublisher.removeObserver(observe)
    return trace


@given(streams, st.data())
@settings(max_examples=300)
def test_connections_behave_alike(stream, data):
    points = data.draw(
        st.lists(st.integers(0, len(stream)), max_size=6, unique=True).map(sorted),
        label="split points",
    )
    assert run("ampcore", stream, points) == run("stock", stream, points)
