"""
Differential tests of C{failAllOutgoing} over a request table whose
C{items()} is not a dict's: stock's C{for key, value in OR:
value.errback(reason)} unpacks whatever each item is, as Python unpacks
two targets, and fails at the item that does not unpack, with Python's
exception, after the Deferreds before it have failed and with the table
already gone.
"""

import pytest
from twisted.python.failure import Failure

from helpers import connectedPeer, differential, needsExtension, recordTable

pytestmark = needsExtension()


class Table(dict):
    """A request table whose C{items()} is made by C{shape}."""

    shape = None

    def items(self):
        return self.shape(list(dict.items(self)))


class SequenceOnly:
    """Iterable only through C{__getitem__}."""

    def __init__(self, items):
        self._items = items

    def __getitem__(self, i):
        return self._items[i]


class TupleWithOwnIter(tuple):
    """A tuple subclass: unpacking goes through its C{__iter__}."""

    def __iter__(self):
        return iter(reversed(tuple.__iter__(self)))


class IterRaises:
    class Broken(Exception):
        pass

    def __iter__(self):
        raise self.Broken("no iterating")


class NextRaises:
    class Broken(Exception):
        pass

    def __init__(self, first):
        self.first = first
        self.n = 0

    def __iter__(self):
        return self

    def __next__(self):
        self.n += 1
        if self.n == 1:
            return self.first
        raise self.Broken("no second value")


def generatorFailing(pairs):
    yield pairs[0]
    raise ValueError("the items ran dry")


SHAPES = {
    "dict items": lambda pairs: pairs,
    "lists": lambda pairs: [list(p) for p in pairs],
    "iterators": lambda pairs: [iter(p) for p in pairs],
    "generator of lists": lambda pairs: (list(p) for p in pairs),
    "sequence-only": lambda pairs: [SequenceOnly(p) for p in pairs],
    "tuple subclass": lambda pairs: [TupleWithOwnIter(reversed(p)) for p in pairs],
    "triple in the middle": lambda pairs: [pairs[0], pairs[1] + (b"x",), pairs[2]],
    "list of three": lambda pairs: [pairs[0], list(pairs[1]) + [1], pairs[2]],
    "single": lambda pairs: [pairs[0], pairs[1][:1], pairs[2]],
    "empty": lambda pairs: [pairs[0], (), pairs[2]],
    "iterator of three": lambda pairs: [pairs[0], iter(pairs[1] + (0,)), pairs[2]],
    "non-iterable": lambda pairs: [pairs[0], 7, pairs[2]],
    "None": lambda pairs: [pairs[0], None, pairs[2]],
    "two-char str": lambda pairs: [pairs[0], "ab", pairs[2]],
    "bytes": lambda pairs: [pairs[0], b"ab", pairs[2]],
    "dict of two": lambda pairs: [pairs[0], {1: 2, 3: 4}, pairs[2]],
    "iter raises": lambda pairs: [pairs[0], IterRaises(), pairs[2]],
    "next raises": lambda pairs: [pairs[0], NextRaises(pairs[1][0]), pairs[2]],
    "generator raising": generatorFailing,
    "items not iterable": lambda pairs: 5,
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_failAllOutgoing_unpacks_items_as_python(shape):
    def scenario(ns, trace):
        proto, _ = connectedPeer(ns, trace)
        for i in range(3):
            trace.watch("d%d" % i, proto.callRemoteString(b"Hello", hello=b"%d" % i))
        table = Table(proto._outstandingRequests)
        table.shape = SHAPES[shape]
        proto._outstandingRequests = table
        reason = Failure(RuntimeError("connection gone"))
        trace.call("failAllOutgoing", proto.failAllOutgoing, reason)
        recordTable(trace, "after", proto)
        trace.add("reason kept", proto._failAllReason is reason)

    from helpers import runBoth

    stock, core = runBoth(scenario)
    assert core == stock


@differential
def test_failAllOutgoing_of_a_plain_table(ns, trace):
    proto, _ = connectedPeer(ns, trace)
    for i in range(3):
        trace.watch("d%d" % i, proto.callRemoteString(b"Hello", hello=b"%d" % i))
    trace.call("failAllOutgoing", proto.failAllOutgoing, Failure(RuntimeError("gone")))
    recordTable(trace, "after", proto)
    trace.call("again", proto.failAllOutgoing, Failure(RuntimeError("gone")))
