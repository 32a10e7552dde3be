"""
Differential tests of C{_counter}, the number behind the C{_ask} tags.

Stock C{BoxDispatcher} has C{_counter = 0} as a class attribute and
C{_nextTag} does C{self._counter += 1; return b"%x" % (self._counter,)}: an
instance takes any value, past 2**64 and below zero, of any type, and what
cannot be counted or formatted fails at the next call, in C{+=} or in
C{%x}, with Python's own exception.  ampcore counts in C while the value is
a small non-negative int and must not let anyone tell: the same tags on the
wire, the same values read back (type included), the same exceptions at
the same calls, the same C{del} behaviour.
"""

import decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from twisted.protocols import amp

from helpers import (
    Hello,
    connectedPeer,
    differential,
    needsExtension,
    recordTable,
    runBoth,
    writesOf,
)

pytestmark = needsExtension()


# ---- the values stock's _counter can hold ---------------------------------------------


class TracedInt(int):
    """An int whose C{+} is its own (C{+=} falls back to C{__add__}), and
    says so in the trace: stock calls it once per tag."""

    trace = None

    def __add__(self, other):
        if self.trace is not None:
            self.trace.add("__add__", int(self), other)
        result = TracedInt(int(self) + other + 0x100)
        result.trace = self.trace
        return result


class PlainIntSubclass(int):
    """An int subclass without an C{__add__} of its own: C{+= 1} gives a
    plain int."""


class Indexable:
    """Not an int, but C{%x} takes it through C{__index__}."""

    def __init__(self, n):
        self.n = n

    def __index__(self):
        return self.n

    def __add__(self, other):
        return Indexable(self.n + other)

    def __repr__(self):
        return "Indexable(%d)" % self.n


class IndexOnly:
    """Has C{__index__} but no C{+}: C{+= 1} raises TypeError."""

    def __init__(self, n):
        self.n = n

    def __index__(self):
        return self.n

    def __repr__(self):
        return "IndexOnly(%d)" % self.n


class AddRaises:
    """Whose C{+} raises an error of its own."""

    class Boom(Exception):
        pass

    def __add__(self, other):
        raise self.Boom("no adding")

    def __repr__(self):
        return "AddRaises()"


class InPlace:
    """With C{__iadd__}, which C{+=} prefers, counting in place."""

    def __init__(self, n):
        self.n = n

    def __iadd__(self, other):
        self.n += other * 2
        return self

    def __index__(self):
        return self.n

    def __repr__(self):
        return "InPlace(%d)" % self.n


class AddGivesStr:
    """Whose C{+} gives a str: C{%x} then refuses it."""

    def __add__(self, other):
        return "not a number"

    def __repr__(self):
        return "AddGivesStr()"


def make(spec, trace):
    """A fresh value of the kind C{spec} names."""
    kind, arg = spec
    if kind == "traced":
        v = TracedInt(arg)
        v.trace = trace
        return v
    return {
        "int": int,
        "bool": bool,
        "plain subclass": PlainIntSubclass,
        "float": float,
        "str": str,
        "bytes": bytes,
        "None": lambda arg: None,
        "Decimal": decimal.Decimal,
        "indexable": Indexable,
        "index only": IndexOnly,
        "add raises": lambda arg: AddRaises(),
        "in place": InPlace,
        "add gives str": lambda arg: AddGivesStr(),
        "tuple": tuple,
    }[kind](arg)


BOUNDARIES = [0, 1, 2, 2**31, 2**32 - 1, 2**63 - 2, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1,
              2**64, 2**65, 10**40, -1, -2, -5, -(2**63), -(2**63) - 1, -(2**64), -(10**40)]

SPECS = st.one_of(
    st.tuples(st.just("int"), st.sampled_from(BOUNDARIES) | st.integers()),
    st.tuples(st.just("bool"), st.booleans()),
    st.tuples(st.sampled_from(["traced", "plain subclass", "indexable", "index only",
                               "in place", "Decimal"]),
              st.sampled_from(BOUNDARIES) | st.integers(-(2**70), 2**70)),
    st.tuples(st.just("float"), st.floats(allow_nan=False)),
    st.tuples(st.just("str"), st.text(max_size=3)),
    st.tuples(st.just("bytes"), st.binary(max_size=3)),
    st.tuples(st.sampled_from(["None", "add raises", "add gives str"]), st.none()),
    st.tuples(st.just("tuple"), st.lists(st.integers(0, 3), max_size=2).map(tuple)),
)


def recordCounter(trace, label, proto):
    """What reading C{_counter} gives: its type and a rendering of it."""
    v = proto._counter
    shown = int(v) if isinstance(v, int) else repr(v)
    trace.add("counter", label, type(v).__name__, shown)


def counterScenario(ns, trace, spec):
    """Give C{_counter} a value, then take tags every way there is."""
    proto, transport = connectedPeer(ns, trace)
    recordCounter(trace, "fresh", proto)
    proto._counter = make(spec, trace)
    recordCounter(trace, "set", proto)
    for i in range(2):
        trace.call("callRemoteString", proto.callRemoteString, b"Hello", hello=b"%d" % i)
        recordCounter(trace, "after callRemoteString", proto)
    trace.call("callRemote", proto.callRemote, Hello, hello=b"c")
    recordCounter(trace, "after callRemote", proto)
    trace.call("no answer", proto.callRemoteString, b"Hello", False, hello=b"n")
    recordCounter(trace, "after no answer", proto)
    trace.call("_nextTag", proto._nextTag)
    recordCounter(trace, "after _nextTag", proto)
    recordTable(trace, "end", proto)


def checkTags(stock, spec):
    """Where the value counts as an int, the tags are stock's b"%x"."""
    kind, arg = spec
    if kind in ("int", "bool", "plain subclass"):
        asked = [amp.parseString(w)[0].get(b"_ask") for w in writesOf(stock, "P")]
        assert asked[:2] == [b"%x" % (int(arg) + 1), b"%x" % (int(arg) + 2)]


@given(SPECS)
@example(("int", 2**64 - 1))
@example(("int", 2**63 - 1))
@example(("int", -5))
@example(("bool", True))
@example(("traced", 3))
@example(("float", 1.0))
@example(("str", "a"))
@example(("None", None))
@example(("Decimal", 7))
@example(("indexable", 2**64 - 2))
@example(("in place", -3))
def test_counter_values(spec):
    stock, core = runBoth(counterScenario, spec)
    assert core == stock
    checkTags(stock, spec)


@pytest.mark.parametrize(
    "value, tags",
    [
        (2**64 - 1, [b"10000000000000000", b"10000000000000001"]),
        (2**63 - 1, [b"8000000000000000", b"8000000000000001"]),
        (-5, [b"-4", b"-3"]),
        (-1, [b"0", b"1"]),
        (True, [b"2", b"3"]),
    ],
)
def test_tags_past_the_c_range(value, tags):
    """The tags the issue names, on ampcore alone (the differential test
    above says stock gives the same)."""
    import ampcore

    proto = ampcore.AMP()
    proto._counter = value
    assert [proto._nextTag(), proto._nextTag()] == tags
    assert type(proto._counter) is int


@differential
def test_del_counter(ns, trace):
    """
    C{_counter} is a class attribute in stock: C{del} on an instance that
    has none of its own raises AttributeError; after one, the class's 0
    shows again, whatever the instance held.
    """
    proto, _ = connectedPeer(ns, trace)
    trace.call("del fresh", delattr, proto, "_counter")
    recordCounter(trace, "after failed del", proto)
    proto.callRemoteString(b"Hello", hello=b"x")
    recordCounter(trace, "after a call", proto)
    trace.call("del after a call", delattr, proto, "_counter")
    recordCounter(trace, "after del", proto)
    trace.call("del again", delattr, proto, "_counter")
    for value in (2**70, -3, 2.5, "s", 5):
        proto._counter = value
        trace.call("del", delattr, proto, "_counter")
        recordCounter(trace, "after del", proto)
        trace.call("_nextTag", proto._nextTag)
        recordCounter(trace, "after _nextTag", proto)
    proto._counter = 2**64 - 1
    trace.call("_nextTag", proto._nextTag)
    trace.call("del past 2**64", delattr, proto, "_counter")
    trace.call("_nextTag", proto._nextTag)
    recordCounter(trace, "end", proto)


@differential
def test_counter_back_from_python_objects_to_small_ints(ns, trace):
    """From a negative, a bool or a big value back to small ints and past
    the 64-bit boundaries again."""
    proto, _ = connectedPeer(ns, trace)
    proto._counter = -3
    for _ in range(5):
        trace.call("_nextTag", proto._nextTag)
        recordCounter(trace, "counter", proto)
    proto._counter = False
    trace.call("_nextTag", proto._nextTag)
    recordCounter(trace, "counter", proto)
    proto._counter = 2**63 - 3
    for _ in range(4):
        trace.call("_nextTag", proto._nextTag)
        recordCounter(trace, "counter", proto)
    proto._counter = 2**64 - 2
    for _ in range(3):
        trace.call("callRemoteString", proto.callRemoteString, b"Hello", hello=b"x")
        recordCounter(trace, "counter", proto)
    recordTable(trace, "end", proto)


@pytest.mark.parametrize("value", [2**64 + 5, -7, True, 1.5, "x", None])
def test_counter_as_a_subclass_class_attribute(value):
    """A subclass that sets C{_counter} as its own class attribute counts
    from it, the instance shadowing it as in stock."""

    def scenario(ns, trace):
        class P(ns.Peer):
            _counter = value

        proto, _ = connectedPeer(ns, trace, cls=P)
        recordCounter(trace, "class value", proto)
        for _ in range(2):
            trace.call("_nextTag", proto._nextTag)
            recordCounter(trace, "counter", proto)
        trace.call("del", delattr, proto, "_counter")
        trace.call("del again", delattr, proto, "_counter")
        recordCounter(trace, "after del", proto)

    stock, core = runBoth(scenario)
    assert core == stock


def test_counter_reentered_from_add():
    """C{+=} that sets or deletes C{_counter} itself: stock's assignment of
    the sum wins, and ampcore's C state stays consistent (no crash, no leak
    of the replaced object)."""

    def scenario(ns, trace):
        proto, _ = connectedPeer(ns, trace)

        class Meddling:
            def __init__(self, n):
                self.n = n

            def __add__(self, other):
                trace.call("del inside +", delattr, proto, "_counter")
                proto._counter = 2**80
                recordCounter(trace, "inside +", proto)
                return self.n + other

        proto._counter = Meddling(2**64 + 1)
        trace.call("_nextTag", proto._nextTag)
        recordCounter(trace, "after", proto)
        proto._counter = Meddling(-9)
        trace.call("_nextTag", proto._nextTag)
        recordCounter(trace, "after", proto)

    stock, core = runBoth(scenario)
    assert core == stock
