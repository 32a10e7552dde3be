"""
ampcore.arguments: Chunked, BigBytes and BigUnicode.

- Up to 65,535 bytes, Chunked(X) writes exactly the bytes X writes.
- Longer values go as name.0 .. name.N-1 and come back whole, in arguments
  and in responses, between every pairing of stock Twisted (C{amp.AMP}) and
  ampcore (C{ampcore.AMP}) in memory (TCP: test_chunked_tcp.py).
- Mismatched schemas (C{String()} on one side, C{BigBytes()} on the other)
  fail loudly, never truncate.
- Received layouts other than ours and BigString's are refused with
  MalformedChunks, before anything is joined; the C join
  (C{_ampcore._joinChunks}, when the C extension is in use) and the Python
  join give the same results and the same exceptions.

In the fallback run (AMPCORE_PUREPYTHON=1) C{ampcore.AMP} is stock's and
there is no C join: the same tests then check the Python join alone.
"""

import os
import random
import subprocess
import sys
import tracemalloc
from contextlib import contextmanager
from functools import cache

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone
from twisted.logger import globalLogPublisher
from twisted.protocols import amp
from twisted.python.failure import Failure

try:
    from twisted.internet.testing import StringTransport
except ImportError:  # Twisted < 21.2
    from twisted.test.proto_helpers import StringTransport

import ampcore
from ampcore import arguments
from ampcore.arguments import (
    DEFAULT_MAX_LENGTH,
    BigBytes,
    BigUnicode,
    Chunked,
    MalformedChunks,
)
from chunkedcommands import (
    M,
    ROW,
    SIZES,
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
from helpers import Pump, answerBox, askBox, norm, wire

C = 65535
IMPLS = {"stock": amp.AMP, "ampcore": ampcore.AMP}
PAIRINGS = [
    pytest.param(IMPLS[c], IMPLS[s], id=f"{c}-client-{s}-server")
    for c in IMPLS
    for s in IMPLS
]


def test_the_implementations_are_the_ones_expected():
    """The C join is there exactly when the C extension is in use."""
    assert (arguments._joinChunksC is not None) == ampcore.HAS_C_EXTENSION
    assert (ampcore.AMP is not amp.AMP) == ampcore.HAS_C_EXTENSION
    assert DEFAULT_MAX_LENGTH == 16 * 1024 * 1024


# ---- running calls -----------------------------------------------------------------


@cache
def server(base, schema="strict"):
    return serverClass(base, schema)


@contextmanager
def capturedLog():
    """The failures logged meanwhile, as a list of exceptions."""
    failures = []

    def observe(event):
        # Twisted before 24.7 logs these with the legacy log.err, whose
        # events carry the failure as "failure", not "log_failure".
        f = event.get("log_failure") or event.get("failure")
        if f is not None:
            failures.append(f.value)

    globalLogPublisher.addObserver(observe)
    try:
        yield failures
    finally:
        globalLogPublisher.removeObserver(observe)


def call(clientBase, serverBase, command, schema="strict", **kw):
    """
    One call from a C{clientBase} client to a new C{serverBase} server over
    an in-memory connection: ("ok", response), ("failed", exception) or
    ("raised", exception) for what callRemote raised; and what the server
    logged.
    """
    client, srv = clientBase(), server(serverBase, schema)()
    pump = Pump(client, srv)
    with capturedLog() as logged:
        try:
            d = client.callRemote(command, **kw)
        except Exception as e:
            return ("raised", e), logged
        out = []
        d.addBoth(out.append)
        pump.pump()
    assert len(out) == 1, out
    if isinstance(out[0], Failure):
        return ("failed", out[0].value), logged
    return ("ok", out[0]), logged


def sentBytes(base, command, **kw):
    """What a client on C{base} writes for callRemote(command, **kw)."""
    proto = base()
    transport = StringTransport()
    proto.makeConnection(transport)
    proto.callRemote(command, **kw).addErrback(lambda f: None)
    return transport.value()


def answerBytes(base, schema, command, **kw):
    """What a server on C{base} with C{schema} writes to answer C{command}."""
    proto = server(base, schema)()
    transport = StringTransport()
    proto.makeConnection(transport)
    args = command.makeArguments(kw, None)
    proto.dataReceived(wire(askBox(b"1", command.commandName, **{k.decode(): v for k, v in args.items()})))
    return transport.value()


# ---- byte for byte what the inner argument writes, up to 65,535 bytes ----------------


def boxOf(argument, value):
    """The serialized box C{argument} makes of C{value} under the name b"v"."""
    box = amp._objectsToStrings({"v": value}, [(b"v", argument)], amp.AmpBox(), None)
    return box.serialize()


def textOfUtf8Length(n, seed):
    """A str whose UTF-8 encoding is n bytes, of 1- to 4-byte characters."""
    rnd = random.Random(seed)
    pieces, left = [], n
    while left:
        width = rnd.randint(1, min(4, left))
        pieces.append({1: "a", 2: "é", 3: "€", 4: "😀"}[width])
        left -= width
    return "".join(pieces)


@given(length=st.integers(0, C), seed=st.integers(0, 2**32 - 1))
@example(length=0, seed=0)
@example(length=1, seed=0)
@example(length=C - 1, seed=0)
@example(length=C, seed=0)
@settings(max_examples=40)
def test_up_to_65535_bytes_chunked_writes_what_inner_writes(length, seed):
    value = random.Random(seed).randbytes(length)
    text = textOfUtf8Length(length, seed)
    # A ListOf and an AmpList whose encodings are `length` bytes (or as
    # close as two bytes of framing per element allow).
    items = ["x" * (length - 2)] if length >= 2 else []
    rows = [{"name": "n", "data": b"d" * (length - 19)}] if length >= 19 else []
    for inner, obj in [
        (amp.String(), value),
        (amp.Unicode(), text),
        (amp.ListOf(amp.Unicode()), items),
        (ROW, rows),
    ]:
        expected = boxOf(inner, obj)
        assert boxOf(Chunked(inner), obj) == expected
        assert boxOf(Chunked(inner, optional=True), obj) == expected
    assert boxOf(BigBytes(), value) == boxOf(amp.String(), value)
    assert boxOf(BigUnicode(), text) == boxOf(amp.Unicode(), text)
    # On the wire, from callRemote and in answers, stock and ampcore alike.
    for base in IMPLS.values():
        assert sentBytes(base, Echo, value=value) == sentBytes(base, EchoPlain, value=value)
        assert answerBytes(base, "strict", Give, length=length) == answerBytes(
            base, "plain", Give, length=length
        )


def test_the_encoding_is_what_is_measured():
    """The limit is on the inner argument's encoding, not on the object."""
    ok = "😀" * (C // 4)  # 65532 bytes
    over = ok + "é"  # 65534 bytes: still one value
    much = over + "é"  # 65536 bytes: chunked, though only 16385 characters
    assert b"v.0" not in boxOf(BigUnicode(), over)
    assert len(much) == 16385 and b"v.0" in boxOf(BigUnicode(), much)
    with pytest.raises(amp.TooLong):
        boxOf(amp.Unicode(), much)


# ---- the layout ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "length, chunks",
    [
        (C + 1, [C, 1]),
        (2 * C, [C, C]),
        (2 * C + 1, [C, C, 1]),
        (M, [C] * 256 + [M - 256 * C]),
    ],
)
def test_longer_values_are_cut_into_full_chunks_and_the_rest(length, chunks):
    value = pattern(length)
    strings = amp.AmpBox()
    BigBytes().toBox(b"v", strings, {"v": value}, None)
    assert list(strings) == [b"v.%d" % i for i in range(len(chunks))]
    assert [len(strings[b"v.%d" % i]) for i in range(len(chunks))] == chunks
    assert b"".join(strings[b"v.%d" % i] for i in range(len(chunks))) == value
    # Both serializers write the chunks as they are (views of the value).
    expected = wire({k: bytes(v) for k, v in strings.items()})
    assert amp.AmpBox.serialize(strings) == expected
    assert ampcore.serialize(strings) == expected


def test_a_sender_over_maxLength_fails_locally_as_serialize_does():
    for limit, value in [(M, b"x" * (M + 1)), (10, b"y" * 11), (C + 5, b"z" * (C + 6))]:
        with pytest.raises(amp.TooLong) as info:
            boxOf(BigBytes(maxLength=limit), value)
        e = info.value
        assert (e.isKey, e.isLocal, e.value, e.keyName) == (False, True, value, b"v")
    # ... before anything is written, from callRemote, on either side.
    for base in IMPLS.values():
        proto = base()
        transport = StringTransport()
        proto.makeConnection(transport)
        with pytest.raises(amp.TooLong):
            proto.callRemote(Echo, value=b"x" * (M + 1))
        assert transport.value() == b""


@pytest.mark.parametrize(
    "nameLength, length, badKeySuffix",
    [
        (253, C + 1, None),  # b".0", b".1": 255 bytes
        (254, C + 1, b".0"),
        (254, 5, None),  # not cut: the bare name is 254 bytes
        (251, M, None),  # up to b".256": 255 bytes
        (252, 11 * C, None),  # up to b".10": 255 bytes
        (252, 100 * C + 1, b".100"),
    ],
)
def test_chunk_keys_over_255_bytes_fail_locally_as_serialize_does(
    nameLength, length, badKeySuffix
):
    name = b"n" * nameLength
    value = b"v" * length
    strings = amp.AmpBox()
    argument = BigBytes()
    if badKeySuffix is None:
        argument.toBox(name, strings, {name.decode(): value}, None)
        assert len(amp.AmpBox(strings).serialize()) > length
        return
    with pytest.raises(amp.TooLong) as info:
        argument.toBox(name, strings, {name.decode(): value}, None)
    e = info.value
    assert (e.isKey, e.isLocal, e.value, e.keyName) == (True, True, name + badKeySuffix, None)
    # What AmpBox.serialize raises for that key.
    with pytest.raises(amp.TooLong) as stock:
        amp.AmpBox({name + badKeySuffix: b"v"}).serialize()
    assert norm(stock.value) == norm(e)


def test_absent_values_are_as_stock():
    """Required: stock's KeyError; optional: None."""
    for name in (b"v", b"dashed-name"):
        outcomes = []
        for argument in (amp.String(), BigBytes()):
            try:
                argument.fromBox(name, amp.AmpBox(other=b"x"), {}, None)
            except KeyError as e:
                outcomes.append(norm(e))
        assert len(outcomes) == 2 and outcomes[0] == outcomes[1]
        for argument in (amp.String(optional=True), BigBytes(optional=True)):
            objects = {}
            argument.fromBox(name, amp.AmpBox(other=b"x"), objects, None)
            assert objects == {name.decode().replace("-", "_"): None}
            strings = amp.AmpBox()
            argument.toBox(name, strings, {}, None)
            assert strings == {}


def test_constructor_checks_its_arguments():
    for bad in [amp.String, BigBytes(), object()]:
        with pytest.raises(TypeError):
            Chunked(bad)
    for bad in [-1, 1.5, True, "10"]:
        with pytest.raises(ValueError):
            Chunked(amp.String(), maxLength=bad)
    assert repr(BigBytes(maxLength=5, optional=True)).startswith("BigBytes(")


# ---- round trips between every pairing -----------------------------------------------


@pytest.mark.parametrize("clientBase, serverBase", PAIRINGS)
@pytest.mark.parametrize("length", SIZES)
def test_round_trip_in_arguments_and_response(clientBase, serverBase, length):
    value = pattern(length)
    outcome, logged = call(clientBase, serverBase, Echo, value=value)
    if length <= M:
        assert outcome[0] == "ok"
        assert outcome[1]["length"] == length
        assert outcome[1]["value"] == value
        assert logged == []
    else:
        # Over maxLength: the sender fails locally, nothing is sent.
        assert outcome[0] == "raised" and type(outcome[1]) is amp.TooLong


@pytest.mark.parametrize("clientBase, serverBase", PAIRINGS)
@pytest.mark.parametrize("length", SIZES)
def test_round_trip_in_response_only(clientBase, serverBase, length):
    outcome, logged = call(clientBase, serverBase, Give, length=length)
    if length <= M:
        assert outcome == ("ok", {"value": pattern(length)})
    else:
        # The responder's value is over maxLength: coding the answer fails
        # on the server (TooLong, which stock's makeResponseFor reports as
        # BadLocalReturn), which answers with an unknown error.
        assert outcome[0] == "failed" and type(outcome[1]) is amp.UnknownRemoteError
        assert [type(e) for e in logged] == [amp.BadLocalReturn]
        assert logged[0].enclosed.check(amp.TooLong)


@pytest.mark.parametrize("clientBase, serverBase", PAIRINGS)
def test_a_receiver_refuses_more_than_its_maxLength(clientBase, serverBase):
    """maxLength + 1 bytes from a peer whose schema allows them."""
    value = pattern(M + 1)
    # In arguments: the server refuses them; the caller learns it failed.
    outcome, logged = call(clientBase, serverBase, EchoLoose, value=value)
    assert outcome[0] == "failed" and type(outcome[1]) is amp.UnknownRemoteError
    assert [type(e) for e in logged] == [MalformedChunks]
    assert "over maxLength 16777216" in str(logged[0])
    # In a response: the caller refuses them.
    outcome, logged = call(clientBase, serverBase, Give, schema="loose", length=M + 1)
    assert outcome[0] == "failed" and type(outcome[1]) is MalformedChunks
    assert str(outcome[1]) == (
        "malformed chunked value b'value': 16777217 bytes in chunks, "
        "over maxLength 16777216"
    )
    # ... and take them when their own schema allows them.
    outcome, _ = call(clientBase, serverBase, GiveLoose, schema="loose", length=M + 1)
    assert outcome == ("ok", {"value": pattern(M + 1)})


@pytest.mark.parametrize("clientBase, serverBase", PAIRINGS)
@pytest.mark.parametrize("prefix", [0, 1, 2, 3])
def test_big_unicode_with_4_byte_characters_across_chunk_boundaries(
    clientBase, serverBase, prefix
):
    text = "a" * prefix + "😀" * (3 * C // 4) + "𝄞"
    strings = amp.AmpBox()
    BigUnicode().toBox(b"text", strings, {"text": text}, None)
    first = bytes(strings[b"text.0"])
    if (C - prefix) % 4:
        # The cut is inside a character: the first chunk alone is not UTF-8.
        with pytest.raises(UnicodeDecodeError):
            first.decode("utf-8")
    outcome, _ = call(clientBase, serverBase, EchoText, text=text)
    assert outcome == ("ok", {"text": text})


@pytest.mark.parametrize("clientBase, serverBase", PAIRINGS)
def test_chunked_listof_and_amplist(clientBase, serverBase):
    texts = ["ü" * 1000, "", "😀" * 5000] * 10  # 220,060 bytes encoded
    outcome, _ = call(clientBase, serverBase, EchoList, texts=texts)
    assert outcome == ("ok", {"texts": texts})
    assert len(boxOf(Chunked(amp.ListOf(amp.Unicode())), texts)) > 3 * C
    rows = [{"name": f"row {i} ☃", "data": pattern(3000 + i)} for i in range(60)]
    for extra in (None, b"", pattern(C + 3)):
        outcome, _ = call(clientBase, serverBase, EchoRows, rows=rows, extra=extra)
        assert outcome == ("ok", {"rows": rows, "extra": extra})
    assert len(boxOf(Chunked(ROW), rows)) > 2 * C


# ---- mismatched schemas fail loudly ---------------------------------------------------


@pytest.mark.parametrize("clientBase, serverBase", PAIRINGS)
def test_schema_mismatch_works_while_small_and_fails_loudly_when_big(clientBase, serverBase):
    small, big = pattern(C), pattern(C + 1)
    # Up to 65,535 bytes the two schemas are the same on the wire.
    assert call(clientBase, serverBase, EchoPlain, value=small)[0] == (
        "ok", {"value": small, "length": C}
    )
    assert call(clientBase, serverBase, Echo, schema="plain", value=small)[0] == (
        "ok", {"value": small, "length": C}
    )
    assert call(clientBase, serverBase, GivePlain, length=C)[0] == ("ok", {"value": small})
    assert call(clientBase, serverBase, Give, schema="plain", length=C)[0] == (
        "ok", {"value": small}
    )
    # String() sending too much: stock's local TooLong.
    outcome, _ = call(clientBase, serverBase, EchoPlain, value=big)
    assert outcome[0] == "raised" and type(outcome[1]) is amp.TooLong
    # BigBytes() sending to String(): the server misses b"value".
    outcome, logged = call(clientBase, serverBase, Echo, schema="plain", value=big)
    assert outcome[0] == "failed" and type(outcome[1]) is amp.UnknownRemoteError
    assert [norm(e) for e in logged] == [norm(KeyError(b"value"))]
    # BigBytes() answering String(): the caller misses b"value".
    outcome, _ = call(clientBase, serverBase, GivePlain, length=C + 1)
    assert outcome[0] == "failed" and norm(outcome[1]) == norm(KeyError(b"value"))
    # String() answering BigBytes() with too much: stock's AmpBox.serialize
    # refuses the answer and the server drops the connection.
    outcome, logged = call(clientBase, serverBase, Give, schema="plain", length=C + 1)
    assert outcome[0] == "failed" and type(outcome[1]) is ConnectionDone
    assert [type(e) for e in logged] == [amp.TooLong]


# ---- hostile layouts -----------------------------------------------------------------

F = b"f" * C  # a full chunk
NOT_CANONICAL = "the index is not canonical decimal"

# (id, box items, maxLength, the reason MalformedChunks gives)
HOSTILE = [
    ("gap", [(b"v.0", F), (b"v.2", b"x")], M, "2 chunks not numbered .0 to .1"),
    ("no-chunk-0", [(b"v.1", F), (b"v.2", b"x")], M, "2 chunks not numbered .0 to .1"),
    ("extra", [(b"v.0", F), (b"v.1", F), (b"v.3", b"x")], M, "3 chunks not numbered .0 to .2"),
    ("lone-chunk-0", [(b"v.0", b"abc")], M, "a lone chunk .0"),
    ("bare-and-0", [(b"v", F), (b"v.0", b"x")], M, "both the bare key and chunk .0"),
    ("bare-and-1", [(b"v", F), (b"v.1", b"x")], M, "the bare key with chunk .1"),
    ("bigstring-gap", [(b"v", F), (b"v.3", b"x")], M,
     "1 chunks after the bare key not numbered .2 to .2"),
    ("short-middle", [(b"v.0", F[1:]), (b"v.1", b"x")], M,
     "a chunk before the last is not 65535 bytes"),
    ("short-first-of-3", [(b"v.0", b"x"), (b"v.1", F), (b"v.2", F)], M,
     "a chunk before the last is not 65535 bytes"),
    ("short-bare", [(b"v", b"x" * 100), (b"v.2", b"x")], M,
     "a chunk before the last is not 65535 bytes"),
    ("empty-last", [(b"v.0", F), (b"v.1", b"")], M, "the last chunk is empty"),
    ("empty-last-bigstring", [(b"v", F), (b"v.2", b"")], M, "the last chunk is empty"),
    ("over-max", [(b"v.0", F), (b"v.1", F), (b"v.2", b"x")], 2 * C,
     "131071 bytes in chunks, over maxLength 131070"),
    ("over-max-bigstring", [(b"v", F), (b"v.2", b"xy")], C + 1,
     "65537 bytes in chunks, over maxLength 65536"),
    ("over-max-bare", [(b"v", b"x" * 100)], 99, "100 bytes, over maxLength 99"),
    ("huge-index", [(b"v.0", F), (b"v.99999999999999999999", b"x")], M,
     "2 chunks not numbered .0 to .1"),
    # Around 2**63 - 1, where a 64-bit index would overflow.
    ("index-2**63-1", [(b"v.0", F), (b"v.9223372036854775807", b"x")], M,
     "2 chunks not numbered .0 to .1"),
    ("index-2**63", [(b"v.0", F), (b"v.9223372036854775808", b"x")], M,
     "2 chunks not numbered .0 to .1"),
    ("index-2**64+1", [(b"v.0", F), (b"v.18446744073709551617", b"x")], M,
     "2 chunks not numbered .0 to .1"),
    ("only-huge-indexes", [(b"v.123456789012345678901", b"x"),
                           (b"v.123456789012345678902", b"x")], M,
     "2 chunks not numbered .0 to .1"),
] + [
    (f"index-{suffix!r}", [(b"v.0", F), (b"v." + suffix, b"x")], M, NOT_CANONICAL)
    for suffix in [b"01", b"00", b"+1", b"-1", b"1 ", b" 1", b"1_0", b"0x1", b"",
                   "１".encode(), "٣".encode(), b"1.0", b"1e0", b"\x00"]
]

# What is accepted, with what it joins to.
ACCEPTED = [
    ("bare", [(b"v", b"abc")], b"abc"),
    ("bare-empty", [(b"v", b"")], b""),
    ("bare-full", [(b"v", F)], F),
    ("ours-2", [(b"v.1", b"z"), (b"v.0", F)], F + b"z"),
    ("ours-3", [(b"v.2", b"q"), (b"v.0", F), (b"v.1", F[:-1] + b"g")], F + F[:-1] + b"g" + b"q"),
    ("bigstring-2", [(b"v", F), (b"v.2", b"z")], F + b"z"),
    ("bigstring-3", [(b"v.3", b"q"), (b"v", F), (b"v.2", F)], F + F + b"q"),
    ("others-kept", [(b"v.0", F), (b"v.1", b"z"), (b"w.0", b"k"), (b"v0", b"k"),
                     (b"u", b"k"), (b"v-1", b"k")], F + b"z"),
]


def joins():
    """(label, join function) for each implementation of the join there is."""
    out = [("python", arguments._joinChunksPython)]
    if arguments._joinChunksC is not None:
        out.append(
            ("c", lambda box, name, limit: arguments._joinChunksC(box, name, limit, MalformedChunks))
        )
    out.append(("dispatch", arguments._joinChunks))
    return out


def outcomeOf(join, box, name, limit):
    try:
        return ("ok", join(box, name, limit)), dict(box)
    except Exception as e:
        return ("raised", type(e), str(e), getattr(e, "keyName", None)), dict(box)


@pytest.mark.parametrize("case", HOSTILE, ids=[c[0] for c in HOSTILE])
@pytest.mark.parametrize("boxType", [dict, amp.AmpBox])
def test_hostile_layouts_are_refused(case, boxType):
    _, items, limit, reason = case
    messages = set()
    for label, join in joins():
        box = boxType(items + [(b"other", b"kept")])
        with pytest.raises(MalformedChunks) as info:
            join(box, b"v", limit)
        e = info.value
        messages.add(str(e))
        assert len(messages) == 1, messages  # the same from every join
        assert isinstance(e, amp.MalformedAmpBox)
        assert e.keyName == b"v"
        assert reason in e.reason, (label, e.reason)
        assert str(e) == f"malformed chunked value b'v': {e.reason}"
        assert box == dict(items + [(b"other", b"kept")]), "nothing is removed on error"


@pytest.mark.parametrize("case", ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_accepted_layouts_join(case):
    _, items, expected = case
    for label, join in joins():
        box = amp.AmpBox(items)
        assert join(box, b"v", M) == expected, label
        assert set(box) == {k for k, _ in items} - {k for k, _ in items if k == b"v" or k.startswith(b"v.")}
    objects = {}
    BigBytes().fromBox(b"v", amp.AmpBox(items), objects, None)
    assert objects == {"v": expected}


def test_values_that_are_not_bytes_are_type_errors():
    for items in ([(b"v", "text")], [(b"v.0", F), (b"v.1", "text")], [(b"v.0", F), (b"v.1", None)]):
        results = {label: outcomeOf(join, dict(items), b"v", M) for label, join in joins()}
        assert len({repr(r) for r in results.values()}) == 1, results
        assert results["python"][0][1] is TypeError
    for label, join in joins():
        with pytest.raises(TypeError):
            join({}, "v", M)


def test_an_over_long_box_is_refused_before_anything_is_joined():
    """300 full chunks (19.7 MB) against a 1 MiB limit: little is allocated."""
    box = {b"v.%d" % i: F for i in range(300)}
    for label, join in joins():
        tracemalloc.start()
        try:
            with pytest.raises(MalformedChunks):
                join(dict(box), b"v", 1 << 20)
            _, refusedPeak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            assert len(join(dict(box), b"v", 300 * C)) == 300 * C
            _, joinedPeak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert refusedPeak < 200_000, (label, refusedPeak)
        assert joinedPeak > 300 * C, (label, joinedPeak)  # (the measure sees joins)


WIRE_HOSTILE = [c for c in HOSTILE if c[2] == M] + [
    ("over-default-max", [(b"v.%d" % i, F) for i in range(256)] + [(b"v.256", b"x" * 257)], M,
     "16777217 bytes in chunks, over maxLength 16777216"),
]


@pytest.mark.parametrize("base", IMPLS.values(), ids=IMPLS.keys())
@pytest.mark.parametrize("case", WIRE_HOSTILE, ids=[c[0] for c in WIRE_HOSTILE])
def test_hostile_layouts_from_the_wire(base, case):
    """As raw bytes: in a command (the server answers UNKNOWN) and in an answer."""
    _, items, _, reason = case
    items = [(b"value" + k[1:], v) for k, v in items]
    # In a command: the server logs MalformedChunks and answers UNKNOWN.
    proto = server(base)()
    transport = StringTransport()
    proto.makeConnection(transport)
    with capturedLog() as logged:
        proto.dataReceived(wire([(b"_ask", b"1"), (b"_command", b"Echo")] + items))
    [answer] = amp.parseString(transport.value())
    assert answer[b"_error"] == b"1" and answer[b"_error_code"] == b"UNKNOWN"
    assert [type(e) for e in logged] == [MalformedChunks]
    assert reason in logged[0].reason
    # In an answer: the caller's Deferred fails with MalformedChunks.
    proto = base()
    proto.makeConnection(StringTransport())
    out = []
    proto.callRemote(Give, length=1).addBoth(out.append)
    proto.dataReceived(wire([(b"_answer", b"1")] + items))
    assert len(out) == 1 and isinstance(out[0], Failure), out
    assert type(out[0].value) is MalformedChunks and reason in out[0].value.reason


# ---- the C join against the Python join -----------------------------------------------

NAME = b"v"
KEYS = [NAME] + [NAME + b".%d" % i for i in range(6)] + [
    b"v.01", b"v.+1", b"v.1 ", b"v.", b"v.99999999999999999999", b"v.x",
    b"v0", b"w.0", b"u", b"v.0.1", b"vv.1",
]
_VALUES = {n: b"%c" % (97 + n % 26) * n for n in (0, 1, 2, 3, C - 1, C)}
VALUES = st.one_of(
    st.sampled_from(sorted(_VALUES)).map(_VALUES.get),
    st.sampled_from(["text", None, bytearray(b"ba")]),
)
LIMITS = st.sampled_from([0, 1, 2, C - 1, C, C + 1, 2 * C, 2 * C + 1, 3 * C, M])


@given(
    items=st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=9),
    limit=LIMITS,
    boxType=st.sampled_from([dict, amp.AmpBox]),
)
@settings(max_examples=300)
def test_c_and_python_joins_agree(items, limit, boxType):
    results = [(label, outcomeOf(join, boxType(items), NAME, limit)) for label, join in joins()]
    assert len({repr(r) for _, r in results}) == 1, results


@given(
    length=st.integers(0, 5 * C + 3),
    bigString=st.booleans(),
    limit=LIMITS,
    order=st.randoms(use_true_random=False),
)
@settings(max_examples=60)
def test_joins_take_back_what_was_cut(length, bigString, limit, order):
    value = bytes(range(256)) * (length // 256) + b"x" * (length % 256)
    chunks = [value[i : i + C] for i in range(0, len(value), C)] or [b""]
    if len(chunks) == 1:
        items = [(NAME, chunks[0])]
    elif bigString:
        items = [(NAME, chunks[0])] + [(NAME + b".%d" % (i + 2), c) for i, c in enumerate(chunks[1:])]
    else:
        items = [(NAME + b".%d" % i, c) for i, c in enumerate(chunks)]
    items.append((b"other", b"kept"))
    order.shuffle(items)
    results = [(label, outcomeOf(join, amp.AmpBox(items), NAME, limit)) for label, join in joins()]
    assert len({repr(r) for _, r in results}) == 1, results
    if length <= limit:
        assert results[0][1] == (("ok", value), {b"other": b"kept"})
    else:
        assert results[0][1][0][1] is MalformedChunks


def test_other_mappings_are_read_through_their_methods():
    """A box type other than dict and AmpBox goes to the Python join."""

    class Box(dict):
        def items(self):
            return [(k, v.upper()) for k, v in dict.items(self)]

    box = Box({b"v.0": b"a" * C, b"v.1": b"b"})
    assert arguments._joinChunks(box, b"v", M) == b"A" * C + b"B"


# ---- stock Twisted alone --------------------------------------------------------------


def test_works_with_stock_twisted_alone():
    """Without the C extension (as a stock peer runs it), round trips work."""
    code = """
import ampcore, sys
from twisted.protocols import amp
from ampcore import arguments
assert not ampcore.HAS_C_EXTENSION and arguments._joinChunksC is None
assert amp.AMP.__module__ == "twisted.protocols.amp"
sys.path.insert(0, sys.argv[1])
from test_chunked import call, pattern, Echo, SIZES
for n in SIZES[:-1]:
    outcome, _ = call(amp.AMP, amp.AMP, Echo, value=pattern(n))
    assert outcome == ("ok", {"value": pattern(n), "length": n}), n
print("ok")
"""
    env = dict(os.environ, AMPCORE_PUREPYTHON="1")
    env.pop("AMPCORE_INSTALL", None)
    here = os.path.dirname(os.path.abspath(__file__))
    result = subprocess.run(
        [sys.executable, "-c", code, here], env=env, capture_output=True, text=True,
        timeout=120, cwd=here,
    )
    assert result.returncode == 0 and result.stdout == "ok\n", result.stderr[-3000:]


class _Encoded(amp.Argument):
    """An inner argument whose encoding is whatever C{toStringProto} is given."""

    def toStringProto(self, inObject, proto):
        return inObject

    def fromStringProto(self, inString, proto):
        return inString


def test_bytes_like_encodings_are_cut_from_a_snapshot():
    value = bytearray(pattern(C + 10))
    for encoded in (value, memoryview(value)):
        strings = amp.AmpBox()
        Chunked(_Encoded()).toBox(b"v", strings, {"v": encoded}, None)
        data = amp.AmpBox.serialize(strings)
        value[0] ^= 0xFF  # changed after the box was made: not seen
        objects = {}
        Chunked(_Encoded()).fromBox(b"v", amp.parseString(data)[0], objects, None)
        value[0] ^= 0xFF
        assert objects == {"v": bytes(value)}
    with pytest.raises(TypeError, match="encoded b'v' as str"):
        Chunked(_Encoded()).toBox(b"v", amp.AmpBox(), {"v": "x" * (C + 1)}, None)
    # Up to 65,535 bytes the encoding is left as it is, as stock leaves it.
    strings = amp.AmpBox()
    Chunked(_Encoded()).toBox(b"v", strings, {"v": "text"}, None)
    assert strings == {b"v": "text"}


# ---- no leaks ---------------------------------------------------------------------------


def test_joins_do_not_leak():
    """
    Every path of the join, accepted and refused, many times over: no
    reference, block or traced byte is left behind, and the objects it is
    handed come back to their reference counts (on a debug CPython the
    reference total is checked too; see test_leaks.py).
    """
    from test_leaks import assertNoLeaks

    full, last, name = F, b"last", b"v"
    layouts = [items for _, items, _ in ACCEPTED] + [items for _, items, _, _ in HOSTILE]
    layouts += [[(b"v", "text")], [(b"v.0", F), (b"v.1", None)], []]
    boxes = [(amp.AmpBox if i % 2 else dict)(items) for i, items in enumerate(layouts)]

    def step():
        for box in boxes:
            try:
                arguments._joinChunks(box.copy(), name, 3 * C)
            except (MalformedChunks, TypeError):
                pass
        try:
            BigBytes().fromBox(name, amp.AmpBox({b"v.0": full, b"v.1": last}), {}, None)
            BigBytes().toBox(name, {}, {"v": full + last}, None)
        except Exception as e:  # pragma: no cover - reported by the assert
            raise AssertionError(e)

    assertNoLeaks(
        step,
        200,
        warmup=20,
        maxBytes=100_000,
        watched={"full": full, "last": last, "name": name, "error": MalformedChunks},
    )
